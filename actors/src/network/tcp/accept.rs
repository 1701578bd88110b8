//! The accepting side: the listener loop and one reader task per inbound connection.
//!
//! A connection must open (after the TLS handshake, when TLS is on) with a valid `Hello` from a
//! peer, whose certificate names it when TLS is on, then carry only envelopes from that peer to
//! this node; or with a `ClientHello`, then carry a client session. Anything else closes that
//! connection, and only that one, before any frame of it reaches the rules.

use super::{Counters, EndpointConfig, PeerLink, Wakers};
use crate::network::answer_budget::NodeAnswerBudget;
use crate::network::codec::{Frame, FrameCodec, MAX_HELLO_BYTES, PROTOCOL_VERSION};
use crate::network::stream::{split_plain, split_tls, ReadHalf, WriteHalf};
use crate::network::tls;
use crate::network::{client, keepalive};
use crate::transport::Inbound;
use actix::Recipient;
use futures::StreamExt;
use raftor_core::NodeId;
use rustls_pki_types::CertificateDer;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

/// How long a new connection may take to finish its TLS handshake and send its `Hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause after a failed `accept` (e.g. out of file descriptors), to avoid a hot loop.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The connections accepted that have not said hello yet, oldest first, each with the token that
/// closes it. Past `max_opening_connections` the oldest is closed to make room, so connections
/// that never say hello shut out neither a peer redialling nor a client connecting, unless they
/// come faster than a hello takes (before, they were not counted, and enough of them took every
/// descriptor the node had).
#[derive(Default)]
struct Opening {
    /// The id given to the last place.
    next: u64,
    /// Invariant: at most `max_opening_connections` entries, ids increasing.
    waiting: VecDeque<(u64, CancellationToken)>,
}

/// One connection's place among those that have not said hello yet, given up when dropped.
struct Place {
    id: u64,
    /// Cancelled when the place is taken for a newer connection.
    closed: CancellationToken,
    opening: Arc<Mutex<Opening>>,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut opening = self
            .opening
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(at) = opening.waiting.iter().position(|(id, _)| *id == self.id) {
            opening.waiting.remove(at);
        }
    }
}

/// What every inbound connection needs: who we are, whom we accept, where envelopes go.
#[derive(Clone)]
pub(super) struct Acceptor {
    config: Arc<EndpointConfig>,
    inbound: Recipient<Inbound>,
    counters: Arc<Counters>,
    wakers: Wakers,
    /// A permit per client session being served (`config.max_client_sessions` in all).
    client_sessions: Arc<Semaphore>,
    /// The connections accepted that have not said hello yet (`config.max_opening_connections`
    /// at most).
    opening: Arc<Mutex<Opening>>,
    /// What all client sessions together may hold (`config.max_unwritten_answer_bytes`).
    answer_budget: Arc<NodeAnswerBudget>,
}

impl Acceptor {
    pub(super) fn new(
        config: Arc<EndpointConfig>,
        inbound: Recipient<Inbound>,
        counters: Arc<Counters>,
        wakers: Wakers,
    ) -> Self {
        // (A semaphore holds at most `MAX_PERMITS`: past that, as good as no limit.)
        let sessions = config.max_client_sessions.min(Semaphore::MAX_PERMITS);
        let client_sessions = Arc::new(Semaphore::new(sessions));
        let opening = Arc::default();
        let answer_budget = NodeAnswerBudget::new(config.max_unwritten_answer_bytes);
        Acceptor {
            config,
            inbound,
            counters,
            wakers,
            client_sessions,
            opening,
            answer_budget,
        }
    }

    fn node(&self) -> NodeId {
        self.config.node_id
    }

    /// A place for a connection just accepted among those that have not said hello yet; with
    /// none free, the oldest of them is closed to make room.
    fn place(&self) -> Place {
        let mut opening = self
            .opening
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while opening.waiting.len() >= self.config.max_opening_connections.max(1) {
            match opening.waiting.pop_front() {
                Some((_, oldest)) => oldest.cancel(),
                None => break,
            }
        }
        opening.next += 1;
        let id = opening.next;
        let closed = CancellationToken::new();
        opening.waiting.push_back((id, closed.clone()));
        Place {
            id,
            closed,
            opening: self.opening.clone(),
        }
    }

    /// Logs why the connection from `remote` is being closed and counts it.
    fn reject(&self, remote: SocketAddr, reason: &str) {
        tracing::warn!(node = %self.node(), %remote, reason, "closing inbound connection");
        Counters::bump(&self.counters.rejected_connections);
    }

    /// Checks a `Hello` (and, with TLS, that the peer's certificate names the node it claims to
    /// be); the peer's id if it is acceptable, else the reason it is not.
    fn check_hello(
        &self,
        frame: Frame,
        certificate: Option<&CertificateDer<'static>>,
    ) -> Result<NodeId, String> {
        match frame {
            Frame::Hello {
                protocol_version,
                cluster_id,
                node_id,
            } => {
                if protocol_version != PROTOCOL_VERSION {
                    Err(format!(
                        "protocol version {protocol_version}, expected {PROTOCOL_VERSION}"
                    ))
                } else if cluster_id != self.config.cluster_id {
                    Err(format!(
                        "cluster id {cluster_id:?}, expected {:?}",
                        self.config.cluster_id
                    ))
                } else if node_id == self.config.node_id {
                    Err(format!("node {node_id} is this node's own id"))
                } else if self.config.tls.is_none() {
                    Ok(node_id)
                } else {
                    match certificate {
                        None => Err(format!(
                            "a hello from node {node_id} without a certificate"
                        )),
                        Some(certificate) if !tls::certificate_names_node(certificate, node_id) => {
                            Err(format!(
                                "a hello from node {node_id} with a certificate that does not name it (it names {:?})",
                                tls::member_named_by(certificate)
                            ))
                        }
                        Some(_) => Ok(node_id),
                    }
                }
            }
            _ => Err("a frame other than hello came first".to_owned()),
        }
    }

    /// The connection's halves after the TLS handshake (when TLS is on), with the certificate
    /// the other side presented (verified against the cluster's CA by the handshake); `Err`
    /// with the reason the connection is refused.
    async fn handshake(
        &self,
        stream: TcpStream,
    ) -> Result<(ReadHalf, WriteHalf, Vec<CertificateDer<'static>>), String> {
        let Some(tls) = &self.config.tls else {
            let (read, write) = split_plain(stream);
            return Ok((read, write, Vec::new()));
        };
        let stream = tls
            .acceptor()
            .accept(stream)
            .await
            .map_err(|error| format!("TLS handshake failed: {error}"))?;
        let chain = tls::presented_chain(stream.get_ref().1);
        let (read, write) = split_tls(stream);
        Ok((read, write, chain))
    }

    /// Reads one inbound connection until it closes, breaks the protocol or the endpoint stops;
    /// `place` is its place among the connections that have not said hello yet.
    async fn serve(
        self,
        stream: TcpStream,
        remote: SocketAddr,
        place: Place,
        cancel: CancellationToken,
    ) {
        let node = self.node();
        keepalive::configure_accepted(&stream);
        // The TLS handshake and the hello together must come within HELLO_TIMEOUT, and the hello
        // is read with a small frame limit: until it has said who it is, a connection cannot
        // make this node buffer more than MAX_HELLO_BYTES.
        let opening = async {
            let (read_half, write_half, chain) = self.handshake(stream).await?;
            let max_hello = MAX_HELLO_BYTES.min(self.config.max_frame_bytes);
            let mut frames = FramedRead::new(read_half, FrameCodec::new(max_hello));
            let first = frames.next().await;
            Ok::<_, String>((frames, write_half, chain, first))
        };
        let opened = tokio::select! {
            _ = cancel.cancelled() => return,
            _ = place.closed.cancelled() => {
                let max = self.config.max_opening_connections;
                let reason = format!(
                    "closed for a newer connection: {max} wait to say hello (max_opening_connections)"
                );
                return self.reject(remote, &reason);
            }
            opened = tokio::time::timeout(HELLO_TIMEOUT, opening) => opened,
        };
        drop(place);
        let (mut frames, write_half, chain, first) = match opened {
            Err(_elapsed) => return self.reject(remote, "no hello in time"),
            Ok(Err(reason)) => return self.reject(remote, &reason),
            Ok(Ok(opened)) => opened,
        };
        let certificate = chain.first().cloned();
        let presented = (!chain.is_empty()).then_some(tls::Presented::Client(chain));
        let distrusted = tls::until_distrusted(self.config.tls.clone(), presented);
        tokio::pin!(distrusted);
        *frames.decoder_mut() = FrameCodec::new(self.config.max_frame_bytes);
        let peer = match first {
            None => {
                tracing::debug!(node = %node, %remote, "connection closed before hello");
                return;
            }
            Some(Err(error)) => return self.reject(remote, &error.to_string()),
            Some(Ok(Frame::ClientHello {
                protocol_version,
                token,
            })) => {
                if protocol_version != PROTOCOL_VERSION {
                    let reason = format!("client protocol version {protocol_version}");
                    return self.reject(remote, &reason);
                }
                let identity = client::ClientIdentity {
                    member: certificate.as_ref().and_then(tls::member_named_by),
                    token,
                };
                let Some(handler) = self.config.client_handler.open(&identity) else {
                    return self.reject(remote, "client before the service is ready");
                };
                let Ok(_session) = self.client_sessions.clone().try_acquire_owned() else {
                    let max = self.config.max_client_sessions;
                    let reason = format!("{max} client sessions already (max_client_sessions)");
                    return self.reject(remote, &reason);
                };
                let max = self.config.max_frame_bytes;
                let budget = self.answer_budget.clone();
                let (session, abort) = (cancel.child_token(), CancellationToken::new());
                let serving = client::serve_session(
                    frames,
                    write_half,
                    handler,
                    max,
                    budget,
                    session.clone(),
                    abort.clone(),
                );
                tokio::pin!(serving);
                let served = tokio::select! {
                    served = &mut serving => served,
                    () = &mut distrusted => {
                        session.cancel();
                        abort.cancel();
                        let _ = serving.await;
                        Err(tls::DISTRUSTED.to_owned())
                    }
                };
                if let Err(reason) = served {
                    self.reject(remote, &reason);
                }
                return;
            }
            Some(Ok(frame)) => match self.check_hello(frame, certificate.as_ref()) {
                Ok(peer) => peer,
                Err(reason) => return self.reject(remote, &reason),
            },
        };
        tracing::debug!(node = %node, %peer, %remote, "inbound connection from peer");
        let mut link = self.wakers.link(peer);
        self.heard_from(peer, &mut link);
        loop {
            let next = tokio::select! {
                _ = cancel.cancelled() => return,
                () = &mut distrusted => return self.reject(remote, tls::DISTRUSTED),
                next = frames.next() => next,
            };
            match next {
                None => {
                    tracing::debug!(node = %node, %peer, %remote, "peer closed its connection");
                    return;
                }
                Some(Err(error)) => return self.reject(remote, &error.to_string()),
                Some(Ok(Frame::Hello { .. })) => return self.reject(remote, "second hello"),
                Some(Ok(
                    Frame::ClientHello { .. }
                    | Frame::ClientRequest { .. }
                    | Frame::ClientResponse { .. },
                )) => return self.reject(remote, "client frame on a peer connection"),
                Some(Ok(Frame::Raft(envelope))) => {
                    if envelope.from != peer {
                        let reason =
                            format!("envelope from {} on {peer}'s connection", envelope.from);
                        return self.reject(remote, &reason);
                    }
                    if envelope.to != node {
                        let reason = format!("envelope for {}", envelope.to);
                        return self.reject(remote, &reason);
                    }
                    self.inbound.do_send(Inbound(envelope));
                    Counters::bump(&self.counters.delivered);
                    self.heard_from(peer, &mut link);
                }
            }
        }
    }

    /// `peer` reached us: if our writer to it is not connected, it redials now. `link` caches our
    /// writer's link between frames; it is looked up afresh only while that writer is not
    /// connected (or there is none), since a peer whose address changed gets a new writer.
    fn heard_from(&self, peer: NodeId, link: &mut Option<Arc<PeerLink>>) {
        if link.as_ref().is_some_and(|link| link.is_connected()) {
            return;
        }
        *link = self.wakers.link(peer);
        if let Some(link) = link {
            link.heard_from();
        }
    }
}

/// Accepts connections until `cancel` fires, then drops the listener (freeing the port).
pub(super) async fn run(listener: TcpListener, acceptor: Acceptor, cancel: CancellationToken) {
    let node = acceptor.node();
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, remote)) => {
                let place = acceptor.place();
                let serving = acceptor
                    .clone()
                    .serve(stream, remote, place, cancel.clone());
                actix_rt::spawn(serving);
            }
            Err(error) => {
                tracing::warn!(node = %node, %error, "accept failed");
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                }
            }
        }
    }
    drop(listener);
    tracing::debug!(node = %node, "listener closed");
}
