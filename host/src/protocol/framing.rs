//! Splitting the byte stream of a connection into records ended by `0x1E`.
//!
//! A WebSocket message may carry several records, and (from clients other than the official
//! ones) a record may span WebSocket messages, so the remainder is kept for the next message.

use bytes::{Buf, BytesMut};

use super::{ProtocolError, RECORD_SEPARATOR};

/// Accumulates received bytes and yields complete records.
#[derive(Debug)]
pub struct RecordReader {
    buffer: BytesMut,
    max_record: usize,
}

impl RecordReader {
    /// `max_record` is the largest record accepted (the separator not counted).
    pub fn new(max_record: usize) -> Self {
        Self {
            buffer: BytesMut::new(),
            max_record,
        }
    }

    /// Adds received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buffer.extend_from_slice(data);
    }

    /// The next complete record, without its separator, or `None` until more bytes arrive.
    /// Fails when a record is, or a partial one has grown, over the limit.
    pub fn next_record(&mut self) -> Result<Option<BytesMut>, ProtocolError> {
        match self.buffer.iter().position(|&b| b == RECORD_SEPARATOR) {
            Some(end) if end > self.max_record => Err(ProtocolError::MessageTooLarge {
                limit: self.max_record,
            }),
            Some(end) => {
                let record = self.buffer.split_to(end);
                self.buffer.advance(1);
                Ok(Some(record))
            }
            None if self.buffer.len() > self.max_record => Err(ProtocolError::MessageTooLarge {
                limit: self.max_record,
            }),
            None => Ok(None),
        }
    }

    /// Whether bytes of an unfinished record are waiting.
    pub fn has_partial(&self) -> bool {
        !self.buffer.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(reader: &mut RecordReader) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(r) = reader.next_record().expect("valid records") {
            out.push(String::from_utf8(r.to_vec()).expect("utf8"));
        }
        out
    }

    #[test]
    fn splits_several_records_in_one_message() {
        let mut reader = RecordReader::new(100);
        reader.push(b"{\"type\":6}\x1e{\"type\":6}\x1e");
        assert_eq!(records(&mut reader), ["{\"type\":6}", "{\"type\":6}"]);
        assert!(!reader.has_partial());
    }

    #[test]
    fn keeps_a_partial_record_for_the_next_message() {
        let mut reader = RecordReader::new(100);
        reader.push(b"{\"type\":6}\x1e{\"ty");
        assert_eq!(records(&mut reader), ["{\"type\":6}"]);
        assert!(reader.has_partial());
        reader.push(b"pe\":6}\x1e");
        assert_eq!(records(&mut reader), ["{\"type\":6}"]);
    }

    #[test]
    fn a_record_of_exactly_the_limit_passes() {
        let mut reader = RecordReader::new(4);
        reader.push(b"abcd\x1e");
        assert_eq!(records(&mut reader), ["abcd"]);
    }

    #[test]
    fn a_record_over_the_limit_fails() {
        let mut reader = RecordReader::new(4);
        reader.push(b"abcde\x1e");
        assert_eq!(
            reader.next_record(),
            Err(ProtocolError::MessageTooLarge { limit: 4 })
        );
    }

    #[test]
    fn a_partial_record_over_the_limit_fails_before_its_end_arrives() {
        let mut reader = RecordReader::new(4);
        reader.push(b"abcde");
        assert!(reader.next_record().is_err());
    }

    #[test]
    fn empty_records_are_yielded_as_empty() {
        let mut reader = RecordReader::new(4);
        reader.push(b"\x1e");
        assert_eq!(records(&mut reader), [""]);
    }
}
