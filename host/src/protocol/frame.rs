//! Encoded messages, ready for any transport.

use bytes::Bytes;

/// Whether a protocol's frames are text (JSON) or binary; WebSockets send them as Text or
/// Binary messages, and some transports carry only text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferFormat {
    Text,
    Binary,
}

/// One or more encoded messages. Cheap to clone: one fan-out's frame is shared by every
/// recipient that uses the same protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    bytes: Bytes,
    format: TransferFormat,
}

impl Frame {
    /// A text frame; `String` guarantees it is UTF-8, which transports that send text rely on.
    pub fn text(text: String) -> Self {
        Self {
            bytes: Bytes::from(text),
            format: TransferFormat::Text,
        }
    }

    /// A text frame from static text.
    pub fn static_text(text: &'static str) -> Self {
        Self {
            bytes: Bytes::from_static(text.as_bytes()),
            format: TransferFormat::Text,
        }
    }

    /// A binary frame.
    pub fn binary(bytes: impl Into<Bytes>) -> Self {
        Self {
            bytes: bytes.into(),
            format: TransferFormat::Binary,
        }
    }

    pub fn format(&self) -> TransferFormat {
        self.format
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes, sharing the frame's buffer.
    pub fn bytes(&self) -> Bytes {
        self.bytes.clone()
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Frames of one format joined into one (both hub protocols allow several messages per
    /// transport message). `None` when `frames` is empty or mixes formats.
    pub fn join(frames: &[Frame]) -> Option<Frame> {
        let first = frames.first()?;
        if frames.iter().any(|f| f.format != first.format) {
            return None;
        }
        if frames.len() == 1 {
            return Some(first.clone());
        }
        let mut joined = Vec::with_capacity(frames.iter().map(Frame::len).sum());
        for frame in frames {
            joined.extend_from_slice(&frame.bytes);
        }
        Some(Frame {
            bytes: Bytes::from(joined),
            format: first.format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_frames_of_one_format() {
        let a = Frame::static_text("a\u{1e}");
        let b = Frame::static_text("b\u{1e}");
        let joined = Frame::join(&[a.clone(), b]).expect("joined");
        assert_eq!(joined.as_bytes(), b"a\x1eb\x1e");
        assert_eq!(joined.format(), TransferFormat::Text);
        assert_eq!(Frame::join(std::slice::from_ref(&a)), Some(a.clone()));
        assert_eq!(Frame::join(&[a, Frame::binary(vec![1])]), None);
        assert_eq!(Frame::join(&[]), None);
    }
}
