//! Wire codec cost: encoding and decoding one `Frame::Raft(Envelope)` carrying an AppendEntries.
//!
//! Every entry a leader replicates is encoded once per follower and decoded once by each of them,
//! on the actor threads that also run the Raft rules, so the codec's cost per entry bounds how many
//! entries per second a leader can push before the network even matters.
//!
//! Measured, for AppendEntries of 1, 64 and 1,024 entries with 256-byte command payloads
//! (throughput in entries per second):
//! - `encode`: bincode-serialise the frame, then append the 4-byte big-endian length prefix and the
//!   payload to a reused `BytesMut` — what `FrameCodec::encode` does.
//! - `decode`: check and strip the length prefix, split the payload off, bincode-deserialise the
//!   frame — what `FrameCodec::decode` does.
//!
//! Mirrors `actors/src/network/codec.rs` (`FrameCodec::options`, `Encoder<&Frame>` and `Decoder`):
//! `bincode::DefaultOptions::new().with_limit(max_frame_bytes)` with the default maximum of
//! `DEFAULT_MAX_FRAME_BYTES`. The length-delimited framing is `tokio_util`'s `LengthDelimitedCodec`
//! there (tokio-util is not a dependency of this package), reproduced here by hand: one copy of the
//! payload on encode, an O(1) split on decode. Keep both in step if the wire format changes.
//!
//! Run: `cargo bench --bench codec` (add `-- --quick` for a short run).

use bincode::Options;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use raftor_actors::network::codec::{Frame, DEFAULT_MAX_FRAME_BYTES};
use raftor_core::{
    AppendEntries, Entry, EntryPayload, Envelope, LogId, LogIndex, Message, NodeId, Term,
};
use std::hint::black_box;

/// The number of entries per AppendEntries: a single proposal, a typical batch, a large catch-up.
const BATCH_SIZES: [u64; 3] = [1, 64, 1_024];
/// The size of each entry's command.
const PAYLOAD_BYTES: usize = 256;
/// The length prefix of a frame (`length_field_length(4)`, big-endian).
const LENGTH_PREFIX_BYTES: usize = 4;

/// The bincode options of the wire codec: `FrameCodec::options` with `FrameCodec::default()`'s limit.
fn wire_options() -> impl Options {
    bincode::DefaultOptions::new().with_limit(DEFAULT_MAX_FRAME_BYTES as u64)
}

/// A leader's AppendEntries of `entries` consecutive entries after index 1,000 of term 7.
fn append_entries_frame(entries: u64) -> Frame {
    let payload = Bytes::from(vec![0xa5; PAYLOAD_BYTES]);
    let first = 1_001;
    let entries = (first..first + entries)
        .map(|index| Entry {
            term: Term(7),
            index: LogIndex(index),
            payload: EntryPayload::Command(payload.clone()),
        })
        .collect();
    Frame::Raft(Envelope {
        from: NodeId(1),
        to: NodeId(2),
        message: Message::AppendEntries(AppendEntries {
            term: Term(7),
            prev_log_id: LogId::new(Term(7), LogIndex(first - 1)),
            entries,
            leader_commit: LogIndex(first - 1),
            sync_may_wait: false,
            request_id: 42,
        }),
    })
}

/// `FrameCodec::encode`: serialise, then write the length-prefixed payload into `dst`.
fn encode(frame: &Frame, dst: &mut BytesMut) {
    let payload = wire_options().serialize(frame).expect("frame encodes");
    assert!(payload.len() <= DEFAULT_MAX_FRAME_BYTES, "frame too large");
    dst.reserve(LENGTH_PREFIX_BYTES + payload.len());
    dst.put_u32(payload.len() as u32);
    dst.extend_from_slice(&payload);
}

/// `FrameCodec::decode` on a buffer holding exactly one whole frame.
fn decode(src: &mut BytesMut) -> Frame {
    let length = (&src[..LENGTH_PREFIX_BYTES]).get_u32() as usize;
    assert!(length <= DEFAULT_MAX_FRAME_BYTES, "frame too large");
    assert!(src.len() >= LENGTH_PREFIX_BYTES + length, "partial frame");
    src.advance(LENGTH_PREFIX_BYTES);
    let payload = src.split_to(length).freeze();
    wire_options().deserialize(&payload).expect("frame decodes")
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec/append_entries");
    for entries in BATCH_SIZES {
        let frame = append_entries_frame(entries);
        let mut encoded = BytesMut::new();
        encode(&frame, &mut encoded);
        eprintln!(
            "AppendEntries of {entries} x {PAYLOAD_BYTES} B entries: {} bytes on the wire",
            encoded.len()
        );
        // The hand-written mirror must round-trip, or the numbers below measure the wrong thing.
        assert_eq!(decode(&mut encoded.clone()), frame, "round trip");

        group.throughput(Throughput::Elements(entries));
        group.bench_with_input(BenchmarkId::new("encode", entries), &frame, |b, frame| {
            let mut dst = BytesMut::new();
            b.iter(|| {
                dst.clear();
                encode(black_box(frame), &mut dst);
                black_box(dst.len())
            })
        });
        group.bench_with_input(
            BenchmarkId::new("decode", entries),
            &encoded,
            |b, encoded| {
                // Decoding consumes its buffer: each iteration gets a fresh copy, made untimed.
                b.iter_batched(
                    || encoded.clone(),
                    |mut src| decode(black_box(&mut src)),
                    BatchSize::SmallInput,
                )
            },
        );
    }
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
