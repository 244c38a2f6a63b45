//! Just enough of RESP2, Redis's wire protocol, for the backplane's own sockets: commands out,
//! and the replies and pub/sub pushes that come back ([`parse`]).
//!
//! The `redis` crate runs each connection through a driver task of its own, so every publish
//! and every message received took one more hop between tasks (often between threads) than the
//! work needs. The backplane's hot sockets speak RESP themselves instead: see
//! [`direct`](super::direct).

use std::ops::Range;

use bytes::{BufMut, BytesMut};

/// One reply or push. Strings are ranges into the buffer they were parsed from, so a message's
/// payload is handed on without a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Frame {
    /// `+OK`, `+PONG`.
    Simple(Range<usize>),
    /// `-ERR …`: the text after the dash.
    Error(Range<usize>),
    Integer(i64),
    /// `$-1`: `None`.
    Bulk(Option<Range<usize>>),
    /// `*-1`: `None`.
    Array(Option<Vec<Frame>>),
}

/// Why bytes from Redis are not RESP.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub(super) enum RespError {
    #[error("Redis sent {0:?} where a reply starts")]
    UnknownType(u8),
    #[error("Redis sent a malformed length or integer")]
    BadNumber,
    #[error("Redis sent a string without its CRLF")]
    MissingCrlf,
    #[error("Redis sent arrays nested deeper than {MAX_DEPTH}")]
    TooDeep,
}

/// Arrays within arrays, at most (pub/sub needs one level; `EXEC` and `CLUSTER` replies more).
const MAX_DEPTH: usize = 4;

/// Parses one frame at the start of `buf`: `Ok(None)` when more bytes are needed, else the
/// frame and how many bytes it took.
pub(super) fn parse(buf: &[u8]) -> Result<Option<(Frame, usize)>, RespError> {
    let mut at = 0;
    match frame(buf, &mut at, 0)? {
        Some(frame) => Ok(Some((frame, at))),
        None => Ok(None),
    }
}

fn frame(buf: &[u8], at: &mut usize, depth: usize) -> Result<Option<Frame>, RespError> {
    let Some(&kind) = buf.get(*at) else {
        return Ok(None);
    };
    let Some(line) = line(buf, *at + 1) else {
        return Ok(None);
    };
    let next = line.end + 2;
    let parsed = match kind {
        b'+' => {
            *at = next;
            Frame::Simple(line)
        }
        b'-' => {
            *at = next;
            Frame::Error(line)
        }
        b':' => {
            *at = next;
            Frame::Integer(number(&buf[line])?)
        }
        b'$' => {
            let len = number(&buf[line])?;
            if len < 0 {
                *at = next;
                return Ok(Some(Frame::Bulk(None)));
            }
            let len = usize::try_from(len).map_err(|_| RespError::BadNumber)?;
            let end = next.checked_add(len).ok_or(RespError::BadNumber)?;
            let Some(crlf) = end.checked_add(2).and_then(|after| buf.get(end..after)) else {
                return Ok(None);
            };
            if crlf != b"\r\n" {
                return Err(RespError::MissingCrlf);
            }
            *at = end + 2;
            Frame::Bulk(Some(next..end))
        }
        b'*' => {
            let len = number(&buf[line])?;
            if len < 0 {
                *at = next;
                return Ok(Some(Frame::Array(None)));
            }
            if depth == MAX_DEPTH {
                return Err(RespError::TooDeep);
            }
            let len = usize::try_from(len).map_err(|_| RespError::BadNumber)?;
            // Each element takes at least 3 bytes: a length claimed beyond the buffer waits for
            // more bytes without reserving room for it.
            let mut items = Vec::with_capacity(len.min(buf.len() / 3 + 1));
            let mut cursor = next;
            for _ in 0..len {
                match frame(buf, &mut cursor, depth + 1)? {
                    Some(item) => items.push(item),
                    None => return Ok(None),
                }
            }
            *at = cursor;
            Frame::Array(Some(items))
        }
        other => return Err(RespError::UnknownType(other)),
    };
    Ok(Some(parsed))
}

/// The line starting at `from`, up to (without) its CRLF, if it is all there.
fn line(buf: &[u8], from: usize) -> Option<Range<usize>> {
    let rest = buf.get(from..)?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    Some(from..from + end)
}

fn number(digits: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(RespError::BadNumber)
}

/// Appends a command (an array of bulk strings) to `out`.
pub(super) fn command(out: &mut BytesMut, args: &[&[u8]]) {
    out.put_u8(b'*');
    put_len(out, args.len());
    for arg in args {
        out.put_u8(b'$');
        put_len(out, arg.len());
        out.put_slice(arg);
        out.put_slice(b"\r\n");
    }
}

fn put_len(out: &mut BytesMut, len: usize) {
    let mut digits = itoa::Buffer::new();
    out.put_slice(digits.format(len).as_bytes());
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(bytes: &[u8]) -> Frame {
        let (frame, used) = parse(bytes).expect("valid").expect("complete");
        assert_eq!(used, bytes.len());
        frame
    }

    #[test]
    fn parses_each_kind() {
        assert_eq!(whole(b"+OK\r\n"), Frame::Simple(1..3));
        assert_eq!(whole(b"-ERR no\r\n"), Frame::Error(1..7));
        assert_eq!(whole(b":-42\r\n"), Frame::Integer(-42));
        assert_eq!(whole(b"$3\r\na\r\n\r\n"), Frame::Bulk(Some(4..7)));
        assert_eq!(whole(b"$0\r\n\r\n"), Frame::Bulk(Some(4..4)));
        assert_eq!(whole(b"$-1\r\n"), Frame::Bulk(None));
        assert_eq!(whole(b"*-1\r\n"), Frame::Array(None));
        assert_eq!(whole(b"*0\r\n"), Frame::Array(Some(vec![])));
    }

    #[test]
    fn parses_a_message_push_and_finds_its_payload() {
        let push = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n";
        let Frame::Array(Some(items)) = whole(push) else {
            panic!("not an array")
        };
        let Frame::Bulk(Some(payload)) = &items[2] else {
            panic!("no payload")
        };
        assert_eq!(&push[payload.clone()], b"hello");
    }

    #[test]
    fn waits_for_the_rest_of_a_frame_cut_anywhere() {
        let push = b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n";
        for cut in 0..push.len() {
            assert_eq!(parse(&push[..cut]), Ok(None), "cut at {cut}");
        }
        assert!(matches!(parse(push), Ok(Some((_, n))) if n == push.len()));
    }

    #[test]
    fn leaves_what_follows_a_frame() {
        let (frame, used) = parse(b":1\r\n:2\r\n").unwrap().unwrap();
        assert_eq!((frame, used), (Frame::Integer(1), 4));
    }

    #[test]
    fn payloads_may_hold_crlf_and_any_byte() {
        let bulk = b"$4\r\n\r\n\x00\xff\r\n";
        assert_eq!(whole(bulk), Frame::Bulk(Some(4..8)));
    }

    #[test]
    fn rejects_what_is_not_resp() {
        assert_eq!(parse(b"hello\r\n"), Err(RespError::UnknownType(b'h')));
        assert_eq!(parse(b":x\r\n"), Err(RespError::BadNumber));
        assert_eq!(parse(b"$2\r\nabcd\r\n"), Err(RespError::MissingCrlf));
        assert_eq!(
            parse(b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n"),
            Err(RespError::TooDeep)
        );
    }

    #[test]
    fn a_huge_claimed_array_waits_without_reserving_for_it() {
        assert_eq!(parse(b"*1000000000\r\n:1\r\n"), Ok(None));
    }

    #[test]
    fn encodes_commands_as_arrays_of_bulk_strings() {
        let mut out = BytesMut::new();
        command(&mut out, &[b"PUBLISH", b"ch", b""]);
        assert_eq!(&out[..], b"*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$0\r\n\r\n");
    }
}
