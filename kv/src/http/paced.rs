//! HTTP/1 connections read at the pace their requests are answered.
//!
//! actix-http decodes every request in a connection's read buffer at once (up to 32 KiB of them)
//! and keeps each, about 6.5 KiB, until its turn; it reads the next requests while one is being
//! answered. A client that pipelined 32 KiB of GETs of a large value and never read the answers
//! so held about 6.7 MiB of the node's memory per connection (300 such connections: 2 GiB,
//! BENCHMARKS.md, issue 22), until the kernel closed them, 30–40 s later. Served on the node's
//! thread (the default), each HTTP/1 connection's stream is wrapped in [`Paced`], which lets
//! bytes through only
//! - while no request is being answered (between answers, or before the first), at most
//!   [`IDLE_READ_BYTES`] before a request begins (a larger head gets another allowance once the
//!   connection has tried to decode what it has), and
//! - while a request's handler waits for its body, at most the bytes it still waits for
//!   ([`wait_for_body`]),
//!
//! so a connection holds at most that allowance's worth of decoded requests, and pipelined
//! requests are read as the ones before them are answered. (A client that closes its connection
//! while a request is answered is still noticed at once: its end is let through.) A request is being answered from when
//! its handler starts until its answer has been given to the connection whole
//! ([`answer_at_pace`]). HTTP/2 (over TLS) multiplexes its streams and bounds them itself: its
//! connections are not paced.
//!
//! A paced connection also gives back its answers' room ([`super::answer_room`]) as it writes
//! their bytes, and fails its writes, closing itself, once it has written none of what it holds
//! for [`STALLED_ANSWER_LIMIT`] while other requests wait for room.

use super::answer_room::{self, Unwritten};
use super::early::HoldUntilSent;
use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::HttpRequest;
use raftor_actors::network::client::STALLED_ANSWER_LIMIT;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a connection may read, while no request is being answered, before a request begins.
pub const IDLE_READ_BYTES: usize = 512;

/// The most read at once of a body a handler waits for.
const BODY_READ_BYTES: usize = 64 << 10;

/// How often a connection whose writes wait while it holds answers' room looks whether it has
/// stalled ([`Unwritten::stalled`]).
const STALL_CHECK: std::time::Duration = STALLED_ANSWER_LIMIT.checked_div(5).expect("nonzero");

/// One connection's pace, shared by its stream and its requests' handlers.
#[derive(Default, Debug)]
pub struct Pace {
    /// Requests whose handler has started and whose answer is not yet the connection's whole.
    answering: Cell<usize>,
    /// Bytes a handler waits for, of the body it reads (0: none waits).
    wanted: Cell<usize>,
    /// Bytes let through since a request last began or the allowance was renewed.
    idle_read: Cell<usize>,
    /// The allowance ran out and the connection was woken to decode what it has: if no request
    /// has begun by its next read, the head is longer than the allowance, and it is renewed.
    renewing: Cell<bool>,
    /// The connection's reader, while it is held back.
    reader: RefCell<Option<Waker>>,
    /// Bytes may wait to be read while the reader is held back: it is woken when the answer
    /// ends (else the stream's own readiness wakes it when bytes come, and waking it at every
    /// answer's end would cost each request a turn of its connection for nothing).
    bytes_wait: Cell<bool>,
    /// The answers' room the connection holds until it has written them.
    unwritten: Unwritten,
}

impl Pace {
    fn wake_reader(&self) {
        if let Some(reader) = self.reader.borrow_mut().take() {
            reader.wake();
        }
    }

    fn begin(&self) {
        self.answering.set(self.answering.get() + 1);
        self.idle_read.set(0);
        self.renewing.set(false);
    }

    fn end(&self) {
        self.answering.set(self.answering.get().saturating_sub(1));
        if self.answering.get() == 0 && self.bytes_wait.replace(false) {
            self.wake_reader();
        }
    }

    /// How much a read may take now, or `None` to hold the reader back (its waker kept, or
    /// woken at once to decode what it has). `waiting`: what the stream has to read.
    fn allowance(
        &self,
        cx: &mut Context<'_>,
        waiting: impl FnOnce(&mut Context<'_>) -> Waiting,
    ) -> Option<usize> {
        if self.answering.get() > 0 {
            return match self.wanted.get() {
                0 => {
                    *self.reader.borrow_mut() = Some(cx.waker().clone());
                    match waiting(cx) {
                        // The client has gone: let the connection find out now, as unpaced.
                        Waiting::End => return Some(1),
                        Waiting::Bytes => self.bytes_wait.set(true),
                        Waiting::Nothing => {}
                    }
                    None
                }
                wanted => Some(wanted.min(BODY_READ_BYTES)),
            };
        }
        if self.idle_read.get() >= IDLE_READ_BYTES {
            if !self.renewing.replace(true) {
                cx.waker().wake_by_ref();
                return None;
            }
            self.renewing.set(false);
            self.idle_read.set(0);
        }
        Some(IDLE_READ_BYTES - self.idle_read.get())
    }

    fn read(&self, bytes: usize) {
        if self.answering.get() == 0 {
            self.idle_read.set(self.idle_read.get() + bytes);
        } else {
            self.wanted.set(self.wanted.get().saturating_sub(bytes));
        }
    }
}

/// A connection's stream, read at its requests' pace (`pace: None`: as it comes).
pub struct Paced<S> {
    stream: S,
    pace: Option<Rc<Pace>>,
    /// Wakes the connection now and then while its writes wait and it holds answers' room, to
    /// look whether it has stalled.
    stall_check: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> Paced<S> {
    /// `stream`, paced.
    pub fn new(stream: S) -> Self {
        Paced {
            stream,
            pace: Some(Rc::default()),
            stall_check: None,
        }
    }

    /// `stream`, not paced (an HTTP/2 connection).
    pub fn unpaced(stream: S) -> Self {
        Paced {
            stream,
            pace: None,
            stall_check: None,
        }
    }

    /// What a write `polled` means for the answers' room the connection holds: written bytes
    /// give it back; a write that waits while the connection has stalled fails instead, and one
    /// that waits otherwise has the connection woken again to look.
    fn wrote(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        let Some(pace) = &self.pace else {
            return polled;
        };
        match &polled {
            Poll::Ready(Ok(bytes)) => {
                pace.unwritten.wrote(*bytes);
                self.stall_check = None;
            }
            Poll::Pending if pace.unwritten.holds_room() => {
                if pace.unwritten.stalled() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the client took no answer for {} s while others waited for room",
                            STALLED_ANSWER_LIMIT.as_secs()
                        ),
                    )));
                }
                let check = self
                    .stall_check
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(STALL_CHECK)));
                while check.as_mut().poll(cx).is_ready() {
                    check
                        .as_mut()
                        .reset(tokio::time::Instant::now() + STALL_CHECK);
                }
            }
            _ => {}
        }
        polled
    }

    /// The pace, for the connection's requests to find ([`actix_http::HttpServiceBuilder::on_connect_ext`]).
    pub fn pace(&self) -> Option<&Rc<Pace>> {
        self.pace.as_ref()
    }
}

/// What a stream has to read, told without reading it.
pub enum Waiting {
    /// Nothing yet (its reader is woken when something comes).
    Nothing,
    /// Bytes.
    Bytes,
    /// Its end, or an error: the client has gone.
    End,
}

/// A stream that can tell what it has to read without reading it.
pub trait ReadReady {
    fn poll_waiting(&self, cx: &mut Context<'_>) -> Waiting;
}

impl ReadReady for tokio::net::TcpStream {
    fn poll_waiting(&self, cx: &mut Context<'_>) -> Waiting {
        let mut first = [0u8; 1];
        match self.poll_peek(cx, &mut ReadBuf::new(&mut first)) {
            Poll::Pending => Waiting::Nothing,
            Poll::Ready(Ok(0) | Err(_)) => Waiting::End,
            Poll::Ready(Ok(_)) => Waiting::Bytes,
        }
    }
}

/// TLS may hold decrypted bytes the socket does not show, and its end is a record to decrypt:
/// taken to have bytes always.
impl ReadReady for TlsStream {
    fn poll_waiting(&self, _: &mut Context<'_>) -> Waiting {
        Waiting::Bytes
    }
}

impl<S: AsyncRead + ReadReady + Unpin> AsyncRead for Paced<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(pace) = &this.pace else {
            return Pin::new(&mut this.stream).poll_read(cx, buf);
        };
        let stream = &this.stream;
        let Some(allowed) = pace.allowance(cx, |cx| stream.poll_waiting(cx)) else {
            return Poll::Pending;
        };
        let most = allowed.min(buf.remaining());
        let mut part = ReadBuf::new(buf.initialize_unfilled_to(most));
        let polled = Pin::new(&mut this.stream).poll_read(cx, &mut part);
        let got = part.filled().len();
        buf.advance(got);
        pace.read(got);
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Paced<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.wrote(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.wrote(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// HTTPS connections for the node's thread: the TLS handshake (offering HTTP/2 and HTTP/1.1, as
/// actix-http's own acceptor does), then the stream paced for HTTP/1, not for HTTP/2.
pub(super) fn https_paced(
    mut config: rustls::ServerConfig,
) -> impl actix_service::ServiceFactory<
    tokio::net::TcpStream,
    Config = (),
    Response = (
        Paced<TlsStream>,
        actix_http::Protocol,
        Option<std::net::SocketAddr>,
    ),
    Error = actix_http::error::DispatchError,
    InitError = (),
> {
    use actix_service::ServiceFactoryExt;
    use actix_tls::accept::TlsError;
    let mut protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    protocols.append(&mut config.alpn_protocols);
    config.alpn_protocols = protocols;
    actix_tls::accept::rustls_0_23::Acceptor::new(config)
        .map_init_err(|_| ())
        .map_err(|error| {
            actix_http::error::DispatchError::Io(match error {
                TlsError::Timeout => io::Error::from(io::ErrorKind::TimedOut),
                TlsError::Tls(error) => error,
                TlsError::Service(never) => match never {},
            })
        })
        .and_then(actix_service::fn_service(|io: TlsStream| async move {
            let peer = io.get_ref().0.peer_addr().ok();
            let h2 = io
                .get_ref()
                .1
                .alpn_protocol()
                .is_some_and(|protocol| protocol == b"h2");
            Ok(if h2 {
                (Paced::unpaced(io), actix_http::Protocol::Http2, peer)
            } else {
                (Paced::new(io), actix_http::Protocol::Http1, peer)
            })
        }))
}

/// A TLS connection accepted by actix-tls.
type TlsStream = actix_tls::accept::rustls_0_23::TlsStream<tokio::net::TcpStream>;

/// A request being answered, until dropped.
struct Answering(Rc<Pace>);

impl Answering {
    fn begin(pace: Rc<Pace>) -> Self {
        pace.begin();
        Answering(pace)
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// Middleware: a request on a paced connection is being answered from when it starts until its
/// answer's body has been given to the connection whole (dropped by it). The room its answer
/// holds ([`answer_room`]) is given back as the connection writes the answer's bytes (on a
/// paced connection, for an answer of known size), else once the body has been given whole.
pub(super) async fn answer_at_pace(
    request: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(pace) = request.conn_data::<Rc<Pace>>().cloned() else {
        let response = next.call(request).await?;
        return Ok(match answer_room::taken_from(response.request()) {
            Some(room) => response.map_body(|_, body| HoldUntilSent::boxed(body, room)),
            None => response,
        });
    };
    let answering = Answering::begin(pace.clone());
    let response = next.call(request).await?;
    let room = answer_room::taken_from(response.request());
    let room = match (room, response.response().body().size()) {
        (Some(room), BodySize::Sized(bytes)) => {
            let bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
            pace.unwritten.hold(room.fit(bytes), bytes);
            None
        }
        (room, _) => room,
    };
    // Counted as being answered until its body has all been given to the connection.
    Ok(response.map_body(|_, body| HoldUntilSent::boxed(body, (answering, room))))
}

/// Lets `request`'s connection read up to `bytes` more of its body while it lives: a handler
/// that is about to wait for its body holds one.
pub(super) struct WaitingForBody(Option<Rc<Pace>>);

/// The handler of `request` waits for `bytes` more of its body (on a paced connection, that
/// much may be read, and no more).
pub(super) fn wait_for_body(request: &HttpRequest, bytes: usize) -> WaitingForBody {
    let pace = request.conn_data::<Rc<Pace>>().cloned();
    if let Some(pace) = &pace {
        pace.wanted.set(bytes);
        pace.wake_reader();
    }
    WaitingForBody(pace)
}

impl Drop for WaitingForBody {
    fn drop(&mut self) {
        if let Some(pace) = &self.0 {
            pace.wanted.set(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    impl ReadReady for tokio::io::DuplexStream {
        fn poll_waiting(&self, _: &mut Context<'_>) -> Waiting {
            Waiting::Bytes
        }
    }

    /// A paced stream over a pipe the test writes `sent` to.
    async fn paced(sent: &[u8]) -> (Paced<tokio::io::DuplexStream>, tokio::io::DuplexStream) {
        let (ours, mut theirs) = tokio::io::duplex(1 << 20);
        theirs.write_all(sent).await.expect("write");
        (Paced::new(ours), theirs)
    }

    fn pace(stream: &Paced<tokio::io::DuplexStream>) -> Rc<Pace> {
        stream.pace().expect("paced").clone()
    }

    /// Reads what the stream lets through now (without waiting).
    async fn read_now<S: AsyncRead + ReadReady + Unpin>(stream: &mut Paced<S>) -> usize {
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0;
        loop {
            match futures::poll!(std::pin::pin!(stream.read(&mut buf))) {
                Poll::Ready(Ok(0)) | Poll::Pending => return total,
                Poll::Ready(Ok(n)) => total += n,
                Poll::Ready(Err(error)) => panic!("{error}"),
            }
        }
    }

    #[tokio::test]
    async fn between_answers_a_connection_reads_a_small_allowance_and_renews_it_only_for_a_long_head(
    ) {
        let (mut stream, _client) = paced(&[b'g'; 10_000]).await;
        assert_eq!(read_now(&mut stream).await, IDLE_READ_BYTES);
        // No request began (the head is longer): the next turn gets another allowance.
        assert_eq!(read_now(&mut stream).await, IDLE_READ_BYTES);
        let pace = pace(&stream);
        let answering = Answering::begin(pace.clone());
        assert_eq!(
            read_now(&mut stream).await,
            0,
            "nothing while a request is answered"
        );
        {
            let _body = {
                pace.wanted.set(1_000);
                WaitingForBody(Some(pace.clone()))
            };
            assert_eq!(
                read_now(&mut stream).await,
                1_000,
                "exactly the body waited for"
            );
        }
        assert_eq!(read_now(&mut stream).await, 0);
        drop(answering);
        assert_eq!(
            read_now(&mut stream).await,
            IDLE_READ_BYTES,
            "read again once answered"
        );
    }

    #[tokio::test]
    async fn an_unpaced_stream_reads_as_it_comes() {
        let (ours, mut theirs) = tokio::io::duplex(1 << 20);
        theirs.write_all(&[1u8; 10_000]).await.expect("write");
        let mut stream = Paced::unpaced(ours);
        let mut buf = vec![0u8; 20_000];
        assert_eq!(stream.read(&mut buf).await.expect("read"), 10_000);
    }

    /// A client that closes its connection while its request is answered is noticed at once
    /// (the connection reads its end), not at the answer's next write; one that sends more is
    /// held back.
    #[tokio::test]
    async fn a_client_gone_while_answered_is_noticed_and_one_that_sends_more_is_held_back() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        for closes in [true, false] {
            let mut client = tokio::net::TcpStream::connect(address)
                .await
                .expect("connect");
            let (accepted, _) = listener.accept().await.expect("accept");
            let mut stream = Paced::new(accepted);
            let _answering = Answering::begin(stream.pace().expect("paced").clone());
            if closes {
                drop(client);
                let mut buf = [0u8; 16];
                let read =
                    tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buf))
                        .await
                        .expect("the end is read, not held back");
                assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
            } else {
                client
                    .write_all(b"GET / HTTP/1.1\r\n\r\n")
                    .await
                    .expect("write");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                assert_eq!(read_now(&mut stream).await, 0, "held back while answered");
                assert!(stream.pace().expect("paced").bytes_wait.get());
            }
        }
    }
}
