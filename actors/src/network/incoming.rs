//! A client session's requests as they arrive, read so that requests cannot hold the node's
//! memory without room for it: the session learns a frame's length from its header and, for a
//! request larger than [`SMALL_REQUEST_BYTES`], reserves that much
//! ([`SessionBudget::reserve_arriving`](super::answer_budget::SessionBudget)) before it reads the
//! rest. Every request must then arrive within [`arrival_limit`], and without a pause of
//! [`STALLED_REQUEST_LIMIT`] while other sessions wait for room. A client that sends the start of
//! a large request and stops loses its session after that long; meanwhile other sessions' large
//! requests wait for room instead of adding to memory, and small ones are not held up at all.
//! (Before, a session read frames of up to `max_frame_bytes` with no bound on their sum and no
//! limit on how long one may take: a hundred sessions each holding all but the last byte of a
//! 60 MiB request took 6 GiB of a node's memory, and kept it.)

use super::codec::{Frame, FrameCodec, LENGTH_PREFIX_BYTES};
use super::stream::ReadHalf;
use bytes::BytesMut;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio_util::codec::{Decoder, FramedRead};

/// A request of at most this many bytes is read without room in the node's budget: a session
/// reads one request at a time, so such requests take at most this much a session, and they are
/// never held up behind large ones waiting for room.
pub const SMALL_REQUEST_BYTES: usize = 64 << 10;

/// How long a request may go without a byte arriving while other sessions wait for room in the
/// node's budget (as [`super::client::STALLED_ANSWER_LIMIT`] for answers).
pub const STALLED_REQUEST_LIMIT: Duration = Duration::from_secs(5);

/// How long any frame may take to arrive once the session has room for it.
pub const FRAME_ARRIVAL_GRACE: Duration = Duration::from_secs(10);

/// The slowest a large frame may arrive, in bytes a second, beyond [`FRAME_ARRIVAL_GRACE`].
pub const SLOWEST_FRAME_BYTES_PER_SECOND: u64 = 1 << 20;

/// How much is read at once while no frame is known to be longer (a frame's header, and whatever
/// small frames follow it).
const READ_AHEAD_BYTES: usize = 8 << 10;

/// How long a frame of `length` bytes may take to arrive: [`FRAME_ARRIVAL_GRACE`], and a second
/// more for every [`SLOWEST_FRAME_BYTES_PER_SECOND`] (a 64 MiB frame: 74 s).
pub fn arrival_limit(length: usize) -> Duration {
    FRAME_ARRIVAL_GRACE
        + Duration::from_secs((length as u64).div_ceil(SLOWEST_FRAME_BYTES_PER_SECOND))
}

/// Why a session stopped reading requests.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IncomingError {
    #[error(transparent)]
    Codec(#[from] super::codec::CodecError),
    #[error("the connection closed in the middle of a frame")]
    Truncated,
    #[error("a frame of {length} bytes did not arrive within {} s of the node making room for it", limit.as_secs())]
    TooSlow { length: usize, limit: Duration },
    #[error(
        "no byte of a frame of {length} bytes came for {} s while the node was short of room for requests",
        STALLED_REQUEST_LIMIT.as_secs()
    )]
    Stalled { length: usize },
}

/// The frames of one session's connection, read a frame's header first.
pub(crate) struct IncomingFrames {
    read: ReadHalf,
    /// Bytes read and not yet decoded: never more than [`READ_AHEAD_BYTES`] (and what the hello's
    /// reader read ahead) beyond the end of the frame being read, once its length is known.
    buffer: BytesMut,
    codec: FrameCodec,
}

impl IncomingFrames {
    /// The rest of `frames` (what it has read and not decoded, its connection and its codec).
    pub(crate) fn new(frames: FramedRead<ReadHalf, FrameCodec>) -> Self {
        let parts = frames.into_parts();
        IncomingFrames {
            read: parts.io,
            buffer: parts.read_buf,
            codec: parts.codec,
        }
    }

    /// The payload length of the next frame, once its header has come (however long that takes:
    /// a session may be idle); `None` once the client has closed the connection between frames.
    /// Cancel-safe: what was read stays in the buffer.
    pub(crate) async fn next_length(&mut self) -> Result<Option<usize>, IncomingError> {
        loop {
            if let Some(length) = self.codec.declared_length(&self.buffer)? {
                return Ok(Some(length));
            }
            if self.read_some(READ_AHEAD_BYTES).await? == 0 {
                return match self.buffer.is_empty() {
                    true => Ok(None),
                    false => Err(IncomingError::Truncated),
                };
            }
        }
    }

    /// The frame whose payload [`Self::next_length`] said is `length` bytes, once all of it has
    /// come: within [`arrival_limit`] of this call, and with no pause of [`STALLED_REQUEST_LIMIT`]
    /// or more while `others_wait` says other sessions wait for room; else an error.
    pub(crate) async fn frame(
        &mut self,
        length: usize,
        others_wait: impl Fn() -> bool,
    ) -> Result<Frame, IncomingError> {
        let whole = LENGTH_PREFIX_BYTES + length;
        if self.buffer.len() < whole {
            let limit = arrival_limit(length);
            let deadline = tokio::time::Instant::now() + limit;
            let mut moved = tokio::time::Instant::now();
            while self.buffer.len() < whole {
                let wanted = whole - self.buffer.len();
                tokio::select! {
                    biased;
                    read = self.read_some(wanted) => {
                        if read? == 0 {
                            return Err(IncomingError::Truncated);
                        }
                        moved = tokio::time::Instant::now();
                    }
                    _ = tokio::time::sleep_until(deadline) => {
                        return Err(IncomingError::TooSlow { length, limit });
                    }
                    _ = tokio::time::sleep(STALLED_REQUEST_LIMIT / 5) => {
                        if moved.elapsed() >= STALLED_REQUEST_LIMIT && others_wait() {
                            return Err(IncomingError::Stalled { length });
                        }
                    }
                }
            }
        }
        match self.codec.decode(&mut self.buffer)? {
            Some(frame) => Ok(frame),
            // The buffer holds the whole frame its header declared.
            None => Err(IncomingError::Truncated),
        }
    }

    /// Read what has come, at most `most` bytes (none past what the session has room for).
    async fn read_some(&mut self, most: usize) -> Result<usize, IncomingError> {
        self.buffer.reserve(most);
        (&mut self.read)
            .take(most as u64)
            .read_buf(&mut self.buffer)
            .await
            .map_err(|error| IncomingError::Codec(error.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::codec::CodecError;
    use bytes::Bytes;
    use tokio::io::AsyncWriteExt;

    fn request(id: u64, body: usize) -> Frame {
        Frame::ClientRequest {
            id,
            body: Bytes::from(vec![3; body]),
        }
    }

    fn encoded(frames: &[Frame]) -> BytesMut {
        let mut codec = FrameCodec::new(1 << 20);
        let mut bytes = BytesMut::new();
        for frame in frames {
            tokio_util::codec::Encoder::encode(&mut codec, frame.clone(), &mut bytes)
                .expect("encodes");
        }
        bytes
    }

    /// The reading end of a pipe the test writes to, as a session's `IncomingFrames`, with
    /// `already` read ahead by the hello's reader.
    fn reading(already: &[u8]) -> (IncomingFrames, tokio::io::DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let read: ReadHalf = Box::new(ours);
        let mut frames = FramedRead::new(read, FrameCodec::new(1 << 20));
        frames.read_buffer_mut().extend_from_slice(already);
        (IncomingFrames::new(frames), theirs)
    }

    #[tokio::test(start_paused = true)]
    async fn frames_are_read_whole_after_their_length_with_what_was_read_ahead() {
        let frames = [request(1, 10), request(2, 100_000), request(3, 0)];
        let bytes = encoded(&frames);
        let (mut incoming, mut client) = reading(&bytes[..3]);
        client.write_all(&bytes[3..]).await.expect("write");
        drop(client);
        for frame in &frames {
            let length = incoming.next_length().await.expect("a header");
            let Frame::ClientRequest { body, .. } = frame else {
                unreachable!()
            };
            assert!(length.is_some_and(|length| length > body.len()));
            let read = incoming
                .frame(length.expect("length"), || false)
                .await
                .expect("frame");
            assert_eq!(&read, frame);
        }
        assert!(matches!(incoming.next_length().await, Ok(None)));
    }

    /// A session reading a request of 500,000 bytes of which 300,000 came: its reader, the
    /// client's end (keep it, or the rest is cut short) and the frame's length.
    async fn stopped_part_way() -> (IncomingFrames, tokio::io::DuplexStream, usize) {
        let bytes = encoded(&[request(1, 500_000)]);
        let (mut incoming, mut client) = reading(&[]);
        client.write_all(&bytes[..300_000]).await.expect("write");
        let length = incoming
            .next_length()
            .await
            .expect("header")
            .expect("length");
        (incoming, client, length)
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_that_stops_arriving_is_an_error_once_its_time_is_up() {
        let (mut incoming, client, length) = stopped_part_way().await;
        let started = tokio::time::Instant::now();
        let error = incoming
            .frame(length, || false)
            .await
            .expect_err("the rest never comes");
        assert!(matches!(error, IncomingError::TooSlow { .. }), "{error}");
        let waited = started.elapsed();
        let limit = arrival_limit(length);
        assert!(
            waited >= limit && waited <= limit + Duration::from_millis(10),
            "{waited:?}"
        );
        assert_eq!(
            arrival_limit(length),
            FRAME_ARRIVAL_GRACE + Duration::from_secs(1)
        );
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_that_pauses_while_others_wait_for_room_is_an_error_after_the_stall_limit() {
        let (mut incoming, client, length) = stopped_part_way().await;
        let started = tokio::time::Instant::now();
        let error = incoming
            .frame(length, || true)
            .await
            .expect_err("others wait");
        assert!(matches!(error, IncomingError::Stalled { .. }), "{error}");
        let waited = started.elapsed();
        assert!(
            waited >= STALLED_REQUEST_LIMIT && waited <= STALLED_REQUEST_LIMIT * 6 / 5,
            "{waited:?}"
        );
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_cut_short_or_too_long_is_an_error() {
        let bytes = encoded(&[request(1, 1_000)]);
        let (mut incoming, mut client) = reading(&[]);
        client.write_all(&bytes[..500]).await.expect("write");
        drop(client);
        let length = incoming
            .next_length()
            .await
            .expect("header")
            .expect("length");
        assert!(matches!(
            incoming.frame(length, || false).await,
            Err(IncomingError::Truncated)
        ));

        let (mut incoming, _client) = reading(&(2u32 << 20).to_be_bytes());
        assert!(matches!(
            incoming.next_length().await,
            Err(IncomingError::Codec(CodecError::FrameTooLarge { .. }))
        ));
    }
}
