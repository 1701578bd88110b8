//! Hostile clients for `scripts/bench-slow-readers`, held open for SECONDS and reading nothing
//! (the script counts, with `ss`, how many the node has closed meanwhile): native sessions that
//! pipeline GETs of one key, or (`--partial`) that send all but the last byte of one request of
//! BYTES.
//!
//!     slow_readers ADDR SESSIONS REQUESTS-PER-SESSION KEY SECONDS
//!     slow_readers --partial ADDR SESSIONS BYTES SECONDS

use bytes::{Bytes, BytesMut};
use raftor_actors::network::codec::{Frame, FrameCodec, PROTOCOL_VERSION};
use raftor_kv::protocol::{encode, Consistency, KvRequest, RequestEnvelope};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::Encoder;

fn usage() -> ! {
    eprintln!(
        "usage: slow_readers ADDR SESSIONS REQUESTS-PER-SESSION KEY SECONDS\n       \
         slow_readers --partial ADDR SESSIONS BYTES SECONDS"
    );
    std::process::exit(2)
}

/// What each session sends after its hello: its requests as `(id, body)`, and how many bytes of
/// the whole to leave out at the end.
fn requests(args: &[String]) -> (&str, usize, Vec<(u64, Bytes)>, usize, u64) {
    match args {
        [partial, addr, sessions, bytes, seconds] if partial == "--partial" => {
            let (Ok(sessions), Ok(bytes), Ok(seconds)) =
                (sessions.parse(), bytes.parse::<usize>(), seconds.parse())
            else {
                usage()
            };
            (
                addr,
                sessions,
                vec![(1, Bytes::from(vec![7u8; bytes]))],
                1,
                seconds,
            )
        }
        [addr, sessions, requests, key, seconds] => {
            let (Ok(sessions), Ok(requests), Ok(seconds)) =
                (sessions.parse(), requests.parse::<u64>(), seconds.parse())
            else {
                usage()
            };
            let body = encode(&RequestEnvelope {
                forwarded_by: None,
                request: KvRequest::Get {
                    key: key.clone(),
                    consistency: Consistency::Local,
                },
            });
            let requests = (0..requests).map(|id| (id, body.clone())).collect();
            (addr, sessions, requests, 0, seconds)
        }
        _ => usage(),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (addr, sessions, requests, left_out, seconds) = requests(&args);
    let mut wire = BytesMut::new();
    let mut codec = FrameCodec::default();
    let hello = Frame::ClientHello {
        protocol_version: PROTOCOL_VERSION,
        token: None,
    };
    codec.encode(hello, &mut wire).expect("a hello encodes");
    for (id, body) in requests {
        let request = Frame::ClientRequest { id, body };
        codec.encode(request, &mut wire).expect("a request encodes");
    }
    let wire = wire.split_to(wire.len() - left_out).freeze();
    let mut sockets = Vec::new();
    for _ in 0..sessions {
        let stream = match TcpStream::connect(addr).await {
            Ok(stream) => stream,
            Err(error) => {
                eprintln!("slow_readers: cannot connect to {addr}: {error}");
                std::process::exit(1)
            }
        };
        let (read, mut write) = stream.into_split();
        let wire = wire.clone();
        // The node stops reading once the session's budget is held (or, for the rest of a large
        // request, until it has room): the rest waits in a task.
        tokio::spawn(async move {
            let _ = write.write_all(&wire).await;
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            drop(write);
        });
        sockets.push(read);
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    drop(sockets);
}
