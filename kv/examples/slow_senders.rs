//! Hostile clients for `scripts/bench-slow-readers --senders`: native sessions that each send a
//! hello and the first BYTES − 1 bytes of a request declared BYTES long, then nothing, held open
//! for SECONDS (the script counts, with `ss`, how many the node has closed meanwhile).
//!
//!     slow_senders ADDR SESSIONS BYTES SECONDS

use bytes::{Bytes, BytesMut};
use raftor_actors::network::codec::{Frame, FrameCodec, PROTOCOL_VERSION};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::Encoder;

fn usage() -> ! {
    eprintln!("usage: slow_senders ADDR SESSIONS BYTES SECONDS");
    std::process::exit(2)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, sessions, bytes, seconds] = args.as_slice() else {
        usage()
    };
    let (Ok(sessions), Ok(bytes), Ok(seconds)) = (
        sessions.parse::<usize>(),
        bytes.parse::<usize>(),
        seconds.parse::<u64>(),
    ) else {
        usage()
    };
    let mut wire = BytesMut::new();
    let mut codec = FrameCodec::default();
    let hello = Frame::ClientHello {
        protocol_version: PROTOCOL_VERSION,
        token: None,
    };
    codec.encode(hello, &mut wire).expect("a hello encodes");
    let request = Frame::ClientRequest {
        id: 1,
        body: Bytes::from(vec![7u8; bytes]),
    };
    codec.encode(request, &mut wire).expect("a request encodes");
    // All but its last byte: the node waits for the rest.
    let wire = wire.split_to(wire.len() - 1).freeze();
    let mut tasks = Vec::new();
    for _ in 0..sessions {
        let mut stream = match TcpStream::connect(addr.as_str()).await {
            Ok(stream) => stream,
            Err(error) => {
                eprintln!("slow_senders: cannot connect to {addr}: {error}");
                std::process::exit(1)
            }
        };
        let wire = wire.clone();
        // The node may stop reading (waiting for room): the rest waits in a task.
        tasks.push(tokio::spawn(async move {
            let _ = stream.write_all(&wire).await;
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            drop(stream);
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
}
