//! Hostile clients for `scripts/bench-slow-readers`: native sessions that pipeline GETs of one key
//! and never read their answers, held open for SECONDS (the script counts, with `ss`, how many
//! the node has closed meanwhile).
//!
//!     slow_readers ADDR SESSIONS REQUESTS-PER-SESSION KEY SECONDS

use bytes::BytesMut;
use raftor_actors::network::codec::{Frame, FrameCodec, PROTOCOL_VERSION};
use raftor_kv::protocol::{encode, Consistency, KvRequest, RequestEnvelope};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::Encoder;

fn usage() -> ! {
    eprintln!("usage: slow_readers ADDR SESSIONS REQUESTS-PER-SESSION KEY SECONDS");
    std::process::exit(2)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, sessions, requests, key, seconds] = args.as_slice() else {
        usage()
    };
    let (Ok(sessions), Ok(requests), Ok(seconds)) = (
        sessions.parse::<usize>(),
        requests.parse::<u64>(),
        seconds.parse::<u64>(),
    ) else {
        usage()
    };
    let body = encode(&RequestEnvelope {
        forwarded_by: None,
        request: KvRequest::Get {
            key: key.clone(),
            consistency: Consistency::Local,
        },
    });
    let mut wire = BytesMut::new();
    let mut codec = FrameCodec::default();
    let hello = Frame::ClientHello {
        protocol_version: PROTOCOL_VERSION,
        token: None,
    };
    codec.encode(hello, &mut wire).expect("a hello encodes");
    for id in 0..requests {
        let body = body.clone();
        let request = Frame::ClientRequest { id, body };
        codec.encode(request, &mut wire).expect("a request encodes");
    }
    let wire = wire.freeze();
    let mut sockets = Vec::new();
    for _ in 0..sessions {
        let stream = match TcpStream::connect(addr.as_str()).await {
            Ok(stream) => stream,
            Err(error) => {
                eprintln!("slow_readers: cannot connect to {addr}: {error}");
                std::process::exit(1)
            }
        };
        let (read, mut write) = stream.into_split();
        let wire = wire.clone();
        // The node stops reading once the session's budget is held: the rest waits in a task.
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
