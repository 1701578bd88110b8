//! Decoding a snapshot from a stream without trusting the lengths written in it.
//!
//! bincode's own stream reader makes room for a string or byte buffer of the length it reads
//! before reading a byte of it: one damaged length in a snapshot file whose checksum still matches
//! (another build's file, a buggy writer) would ask the allocator for terabytes, and a failed
//! allocation aborts the process instead of failing the restore. [`GrowingReader`] reads such a
//! buffer as its bytes arrive, so memory follows the bytes that exist and a length that runs past
//! the end is the clean error "unexpected end of file".
//!
//! Sequences and maps are the decoded types' business: serde's own collections reserve at most
//! about 1 MiB from a length they are told, and a state machine whose snapshot holds a collection
//! that reserves all of it (as `imbl`'s do) should decode it with a bounded reservation, as
//! raftor's key-value store does.

use serde::de::Visitor;
use std::io::{self, Read};

/// Up to this many bytes a buffer is made room for before it is read; past it, it grows as its
/// bytes arrive.
const TRUSTED_LENGTH: usize = 64 * 1024;

/// A [`bincode::BincodeRead`] over a stream whose buffers grow with the bytes read, never ahead of
/// them from a length in the data.
pub(crate) struct GrowingReader<R> {
    reader: R,
    /// The last string or byte buffer read; reused for the next one.
    buffer: Vec<u8>,
}

impl<R: Read> GrowingReader<R> {
    pub(crate) fn new(reader: R) -> GrowingReader<R> {
        GrowingReader {
            reader,
            buffer: Vec::new(),
        }
    }

    /// Reads the next `length` bytes into `buffer`; fails if the stream ends first.
    fn fill(&mut self, length: usize) -> bincode::Result<()> {
        if length <= TRUSTED_LENGTH {
            // Small enough to make room for at once, as bincode does (the common case, fast).
            self.buffer.resize(length, 0);
            return Ok(self.reader.read_exact(&mut self.buffer)?);
        }
        self.buffer.clear();
        let wanted = length as u64;
        let read = (&mut self.reader)
            .take(wanted)
            .read_to_end(&mut self.buffer)?;
        if (read as u64) < wanted {
            return Err(Box::new(bincode::ErrorKind::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("a field of {length} bytes, but the snapshot ends after {read}"),
            ))));
        }
        Ok(())
    }
}

impl<R: Read> Read for GrowingReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.reader.read(out)
    }
}

impl<'de, R: Read> bincode::BincodeRead<'de> for GrowingReader<R> {
    fn forward_read_str<V: Visitor<'de>>(
        &mut self,
        length: usize,
        visitor: V,
    ) -> bincode::Result<V::Value> {
        self.fill(length)?;
        match std::str::from_utf8(&self.buffer) {
            Ok(text) => visitor.visit_str(text),
            Err(error) => Err(Box::new(bincode::ErrorKind::InvalidUtf8Encoding(error))),
        }
    }

    fn get_byte_buffer(&mut self, length: usize) -> bincode::Result<Vec<u8>> {
        self.fill(length)?;
        Ok(std::mem::take(&mut self.buffer))
    }

    fn forward_read_bytes<V: Visitor<'de>>(
        &mut self,
        length: usize,
        visitor: V,
    ) -> bincode::Result<V::Value> {
        self.fill(length)?;
        visitor.visit_bytes(&self.buffer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> bincode::Result<T> {
        bincode::deserialize_from_custom(GrowingReader::new(bytes))
    }

    #[test]
    fn decodes_what_bincode_writes() {
        // Small fields and one over `TRUSTED_LENGTH`, read as it arrives.
        let value = (
            vec!["one".to_string(), String::new(), "three".repeat(20_000)],
            every_byte_value(),
            7u64,
        );
        let bytes = bincode::serialize(&value).expect("encodes");
        let read: (Vec<String>, Vec<u8>, u64) = decode(&bytes).expect("decodes");
        assert_eq!(read, value);
    }

    fn every_byte_value() -> Vec<u8> {
        (0..=255).collect()
    }

    /// A string whose length says a terabyte, in a stream of a few bytes: an error, and no
    /// terabyte asked of the allocator (bincode's own reader would abort the process here).
    #[test]
    fn a_length_past_the_end_is_an_error_not_an_allocation() {
        let mut bytes = bincode::serialize(&"short".to_string()).expect("encodes");
        bytes[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let error = decode::<String>(&bytes).expect_err("runs past the end");
        assert!(error.to_string().contains("ends after 5"), "{error}");

        let mut bytes = bincode::serialize(&vec![1u8, 2, 3]).expect("encodes");
        bytes[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let error = decode::<bytes::Bytes>(&bytes).expect_err("runs past the end");
        assert!(error.to_string().contains("ends after 3"), "{error}");
    }

    #[test]
    fn a_string_that_is_not_utf8_is_an_error() {
        let bytes = bincode::serialize(&vec![0xffu8, 0xfe]).expect("encodes");
        assert!(decode::<String>(&bytes).is_err());
    }
}
