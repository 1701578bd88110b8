//! The wire format between two TCP endpoints.
//!
//! A connection carries a sequence of frames; each frame is a 4-byte big-endian length followed by
//! that many bytes of a bincode-encoded [`Frame`]. The first frame on every connection is a
//! [`Frame::Hello`]; all later frames are [`Frame::Raft`]. Connections are one-way: the dialling
//! node writes, the accepting node reads.
//!
//! Both the length prefix and the bincode decoder are bounded by the same `max_frame_bytes`, so a
//! hostile length (of the frame, or of a vector inside it) can never make a reader allocate more.

use bincode::Options;
use bytes::{BufMut, Bytes, BytesMut};
use raftor_core::{Envelope, NodeId};
use serde::{Deserialize, Serialize};
use std::io;
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec, LengthDelimitedCodecError};

/// The version of this wire format. Bumped on any incompatible change; peers with another version
/// are refused at [`Frame::Hello`].
pub const PROTOCOL_VERSION: u32 = 7;

/// The largest frame (excluding its 4-byte length prefix) a [`FrameCodec::default`] accepts.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

/// One unit on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// The first frame of every connection: who is dialling, in which cluster, speaking which
    /// version. Sent exactly once; a second `Hello` is a protocol violation.
    Hello {
        protocol_version: u32,
        cluster_id: String,
        node_id: NodeId,
    },
    /// A Raft message; `from` must be the node named in the connection's `Hello`.
    Raft(Envelope),
    /// The first frame of a client session (see [`super::client`]), with the client's bearer
    /// token if it has one (the service decides what the token allows).
    ClientHello {
        protocol_version: u32,
        token: Option<Credential>,
    },
    /// A client's request; `id` is echoed in the answer.
    ClientRequest { id: u64, body: Bytes },
    /// The node's answer to the request with the same `id`.
    ClientResponse { id: u64, body: Bytes },
}

/// A secret a client presents (a bearer token): kept out of `Debug` output, so no log line or
/// panic message can show it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Credential(pub String);

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential(<redacted>)")
    }
}

/// The largest first frame (`Hello` or `ClientHello`) a connection may open with: until a peer or
/// client has said who it is, it cannot make the node buffer more than this.
pub const MAX_HELLO_BYTES: usize = 64 * 1024;

/// Why a frame could not be encoded or decoded. Every variant ends the connection it came from.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The length prefix (or an encoded frame) exceeds the configured maximum.
    #[error("frame larger than the maximum of {max} bytes")]
    FrameTooLarge { max: usize },
    /// The frame's bytes are not a valid bincode [`Frame`] (or nest a length beyond the maximum).
    #[error("malformed frame: {0}")]
    Decode(#[source] bincode::Error),
    /// The frame could not be serialised (e.g. it exceeds the maximum size).
    #[error("cannot encode frame: {0}")]
    Encode(#[source] bincode::Error),
    /// The underlying socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

/// The length prefix of every frame: a big-endian `u32` (decoded by `LengthDelimitedCodec`,
/// written by `encode` itself with `put_u32`).
pub(crate) const LENGTH_PREFIX_BYTES: usize = 4;

/// Length-delimited bincode framing of [`Frame`]s.
///
/// Invariant: a frame accepted by `encode` is at most `max_frame_bytes` long, and `decode` accepts
/// exactly the frames of at most `max_frame_bytes`; both sides use the same bincode options.
#[derive(Debug)]
pub struct FrameCodec {
    framing: LengthDelimitedCodec,
    max_frame_bytes: usize,
}

impl FrameCodec {
    /// A codec that refuses frames longer than `max_frame_bytes` (clamped to `u32::MAX`, the
    /// largest length the 4-byte prefix can carry).
    pub fn new(max_frame_bytes: usize) -> Self {
        let max_frame_bytes = max_frame_bytes.min(u32::MAX as usize);
        let framing = LengthDelimitedCodec::builder()
            .length_field_length(LENGTH_PREFIX_BYTES)
            .big_endian()
            .max_frame_length(max_frame_bytes)
            .new_codec();
        FrameCodec {
            framing,
            max_frame_bytes,
        }
    }

    /// The largest frame this codec encodes or decodes, in bytes.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// The payload length the frame at the front of `src` declares, once its length prefix is
    /// there (`None` before): read before the payload, so a reader can make room for it first.
    /// An error for a length over the maximum, as [`Decoder::decode`] gives.
    pub fn declared_length(&self, src: &[u8]) -> Result<Option<usize>, CodecError> {
        let Some(prefix) = src.first_chunk::<LENGTH_PREFIX_BYTES>() else {
            return Ok(None);
        };
        let length = u32::from_be_bytes(*prefix) as usize;
        if length > self.max_frame_bytes {
            return Err(CodecError::FrameTooLarge {
                max: self.max_frame_bytes,
            });
        }
        Ok(Some(length))
    }

    fn options(&self) -> impl Options {
        bincode::DefaultOptions::new().with_limit(self.max_frame_bytes as u64)
    }

    fn map_framing_error(&self, error: io::Error) -> CodecError {
        let too_large = error
            .get_ref()
            .is_some_and(|inner| inner.is::<LengthDelimitedCodecError>());
        if too_large {
            CodecError::FrameTooLarge {
                max: self.max_frame_bytes,
            }
        } else {
            CodecError::Io(error)
        }
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl Encoder<&Frame> for FrameCodec {
    type Error = CodecError;

    /// The frame is encoded in place, behind its length prefix: each byte is copied once (encoded
    /// apart and then copied behind the prefix, the entries of a 1 MiB write were copied twice on
    /// the way to each follower; BENCHMARKS.md, issue 23).
    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        let max = self.max_frame_bytes;
        let refused = |error: bincode::Error| {
            if matches!(*error, bincode::ErrorKind::SizeLimit) {
                CodecError::FrameTooLarge { max }
            } else {
                CodecError::Encode(error)
            }
        };
        // The limit makes this fail for a frame over `max_frame_bytes`, itself at most u32::MAX.
        let length = self.options().serialized_size(frame).map_err(refused)?;
        let length = u32::try_from(length).map_err(|_| CodecError::FrameTooLarge { max })?;
        let start = dst.len();
        dst.reserve(LENGTH_PREFIX_BYTES + length as usize);
        dst.put_u32(length);
        if let Err(error) = self
            .options()
            .serialize_into(BufMut::writer(&mut *dst), frame)
        {
            dst.truncate(start);
            return Err(refused(error));
        }
        debug_assert_eq!(dst.len() - start, LENGTH_PREFIX_BYTES + length as usize);
        Ok(())
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode(&frame, dst)
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = CodecError;

    /// `Ok(None)` while the buffer holds less than one whole frame; an error (never a panic) for an
    /// oversized length prefix or a payload that is not a [`Frame`].
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        let Some(payload) = self
            .framing
            .decode(src)
            .map_err(|error| self.map_framing_error(error))?
        else {
            return Ok(None);
        };
        self.options()
            .deserialize(&payload)
            .map(Some)
            .map_err(CodecError::Decode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftor_core::{
        AppendEntries, AppendEntriesResponse, AppendOutcome, ConflictHint, Entry, EntryPayload,
        LogId, LogIndex, Message, RequestVote, Term,
    };

    fn envelope(message: Message) -> Envelope {
        Envelope {
            from: NodeId(1),
            to: NodeId(2),
            message,
        }
    }

    fn round_trip(frame: Frame) {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        codec.encode(&frame, &mut buf).expect("encode");
        let decoded = codec
            .decode(&mut buf)
            .expect("decode")
            .expect("a whole frame");
        assert_eq!(decoded, frame);
        assert!(buf.is_empty(), "the frame was consumed entirely");
        assert!(codec.decode(&mut buf).expect("empty buffer").is_none());
    }

    fn big_append(entries: u64) -> Frame {
        let entries = (1..=entries)
            .map(|i| Entry {
                term: Term(3),
                index: LogIndex(i),
                payload: if i % 7 == 0 {
                    EntryPayload::Blank
                } else {
                    EntryPayload::Command(Bytes::from(format!("command number {i}")))
                },
            })
            .collect();
        Frame::Raft(envelope(Message::AppendEntries(AppendEntries {
            term: Term(3),
            prev_log_id: LogId::ZERO,
            entries,
            leader_commit: LogIndex(17),
            sync_may_wait: false,
            request_id: 0,
        })))
    }

    #[test]
    fn hello_round_trips() {
        round_trip(Frame::Hello {
            protocol_version: PROTOCOL_VERSION,
            cluster_id: "test-cluster".into(),
            node_id: NodeId(42),
        });
    }

    #[test]
    fn raft_messages_round_trip() {
        round_trip(Frame::Raft(envelope(Message::RequestVote(RequestVote {
            term: Term(5),
            last_log_id: LogId::new(Term(4), LogIndex(9)),
            pre_vote: true,
            leadership_transfer: false,
        }))));
        round_trip(Frame::Raft(envelope(Message::TimeoutNow(
            raftor_core::TimeoutNow { term: Term(6) },
        ))));
        round_trip(Frame::Raft(envelope(Message::AppendEntriesResponse(
            AppendEntriesResponse {
                term: Term(5),
                request_id: 0,
                outcome: AppendOutcome::Reject {
                    rejected_prev_index: LogIndex(8),
                    hint: ConflictHint {
                        conflict_term: Some(Term(2)),
                        first_index: LogIndex(3),
                    },
                },
            },
        ))));
        round_trip(big_append(1_000));
    }

    #[test]
    fn several_frames_in_one_buffer_decode_in_order() {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        let frames = [big_append(2), big_append(3), big_append(0)];
        for frame in &frames {
            codec.encode(frame, &mut buf).expect("encode");
        }
        for frame in frames {
            assert_eq!(codec.decode(&mut buf).expect("decode"), Some(frame));
        }
        assert_eq!(codec.decode(&mut buf).expect("decode"), None);
    }

    #[test]
    fn oversized_length_prefix_is_rejected() {
        let mut codec = FrameCodec::new(1024);
        let mut buf = BytesMut::from(&[0x00, 0x00, 0x04, 0x01][..]); // 1025 bytes announced
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::FrameTooLarge { max: 1024 })
        ));
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3][..]);
        assert!(matches!(
            FrameCodec::default().decode(&mut buf),
            Err(CodecError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn oversized_frame_is_not_encoded() {
        let mut codec = FrameCodec::new(1024);
        let mut buf = BytesMut::new();
        assert!(matches!(
            codec.encode(&big_append(1_000), &mut buf),
            Err(CodecError::FrameTooLarge { max: 1024 })
        ));
        assert!(buf.is_empty());
    }

    #[test]
    fn client_hello_round_trips_and_hides_its_token() {
        let hello = Frame::ClientHello {
            protocol_version: PROTOCOL_VERSION,
            token: Some(Credential("rft_abc_secret".into())),
        };
        round_trip(hello.clone());
        assert!(!format!("{hello:?}").contains("secret"));
    }

    #[test]
    fn garbage_is_an_error() {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::from(&[0, 0, 0, 5, 0xfe, 0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(codec.decode(&mut buf), Err(CodecError::Decode(_))));
    }

    #[test]
    fn trailing_bytes_inside_a_frame_are_an_error() {
        let mut codec = FrameCodec::default();
        let mut encoded = BytesMut::new();
        codec
            .encode(
                &Frame::Hello {
                    protocol_version: PROTOCOL_VERSION,
                    cluster_id: "c".into(),
                    node_id: NodeId(1),
                },
                &mut encoded,
            )
            .expect("encode");
        let payload_len = encoded.len() - 4 + 1;
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&(payload_len as u32).to_be_bytes());
        buf.extend_from_slice(&encoded[4..]);
        buf.extend_from_slice(&[0]);
        assert!(matches!(codec.decode(&mut buf), Err(CodecError::Decode(_))));
    }

    #[test]
    fn hostile_inner_length_cannot_allocate() {
        // A `Raft(AppendEntries)` claiming 2^60 entries inside a tiny frame.
        let mut codec = FrameCodec::new(4096);
        let options = bincode::DefaultOptions::new();
        let mut payload = options.serialize(&1u32).expect("variant tag"); // Frame::Raft
        payload.extend(options.serialize(&1u64).expect("from"));
        payload.extend(options.serialize(&2u64).expect("to"));
        payload.extend(options.serialize(&2u32).expect("variant tag")); // AppendEntries
        payload.extend(options.serialize(&3u64).expect("term"));
        payload.extend(options.serialize(&LogId::ZERO).expect("prev_log_id"));
        payload.extend(options.serialize(&(1u64 << 60)).expect("entries length"));
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        buf.extend_from_slice(&payload);
        assert!(matches!(codec.decode(&mut buf), Err(CodecError::Decode(_))));
    }

    #[test]
    fn truncated_frame_needs_more_bytes() {
        let mut codec = FrameCodec::default();
        let mut whole = BytesMut::new();
        let frame = big_append(10);
        codec.encode(&frame, &mut whole).expect("encode");
        for cut in [0, 1, 3, 4, 5, whole.len() - 1] {
            let mut partial = BytesMut::from(&whole[..cut]);
            assert!(
                codec.decode(&mut partial).expect("no error").is_none(),
                "cut at {cut}"
            );
            partial.extend_from_slice(&whole[cut..]);
            assert_eq!(
                codec.decode(&mut partial).expect("decode").as_ref(),
                Some(&frame)
            );
        }
    }
}
