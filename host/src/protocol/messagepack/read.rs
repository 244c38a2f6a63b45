//! Reading MessagePack: the pieces of hub messages, with the errors ASP.NET gives for input that
//! does not fit, and values transcoded to JSON text (what hubs receive).
//!
//! What has no JSON form becomes what System.Text.Json would make of the .NET value ASP.NET
//! reads: a `bin` value is a base64 string, a timestamp (extension −1) an ISO 8601 UTC string
//! (`2025-01-15T13:05:09.123Z`). Integer map keys become their decimal text. 64-bit integers
//! stay exact.

use std::fmt::Write as _;

use base64::Engine as _;

use crate::protocol::ProtocolError;
use crate::units::civil_time;

/// Deepest nesting of arrays and maps read from a client.
const MAX_DEPTH: usize = 64;

/// A cursor over one message.
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

fn invalid(text: impl Into<String>) -> ProtocolError {
    ProtocolError::InvalidData(text.into())
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let slice = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(slice)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn be(&mut self, n: usize) -> Option<u64> {
        self.take(n)
            .map(|b| b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
    }

    /// Whether the whole message was read.
    #[cfg(test)]
    fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    /// The header of the message's array, read as MessagePack-CSharp reads it (ASP.NET does not
    /// wrap this read, so its errors are the library's): an array, whose announced elements
    /// could each fit in the bytes that are left.
    pub(super) fn message_len(&mut self) -> Result<usize, ProtocolError> {
        let marker = self.peek().ok_or(ProtocolError::EndOfStream)?;
        if !matches!(marker, 0x90..=0x9f | 0xdc | 0xdd) {
            return Err(unexpected_code(marker));
        }
        let count = self
            .array_len("message")
            .map_err(|_| ProtocolError::EndOfStream)?;
        if self.bytes.len() - self.pos < count {
            return Err(ProtocolError::EndOfStream);
        }
        Ok(count)
    }

    /// A string read as ASP.NET reads stream ids: with the library's errors, unwrapped.
    pub(super) fn bare_string(&mut self) -> Result<Option<String>, ProtocolError> {
        if self.nil() {
            return Ok(None);
        }
        let marker = self.peek().ok_or(ProtocolError::EndOfStream)?;
        if !matches!(marker, 0xa0..=0xbf | 0xd9..=0xdb) {
            return Err(unexpected_code(marker));
        }
        self.string("streamIds")
            .map(Some)
            .map_err(|_| ProtocolError::EndOfStream)
    }

    /// The length of an array, for `field`.
    pub(super) fn array_len(&mut self, field: &str) -> Result<usize, ProtocolError> {
        let failed = || invalid(format!("Reading array length for '{field}' failed."));
        let marker = self.byte().ok_or_else(failed)?;
        let len = match marker {
            0x90..=0x9f => u64::from(marker & 0x0f),
            0xdc => self.be(2).ok_or_else(failed)?,
            0xdd => self.be(4).ok_or_else(failed)?,
            _ => return Err(failed()),
        };
        usize::try_from(len).map_err(|_| failed())
    }

    /// The length of a map, for `field`.
    fn map_len(&mut self, field: &str) -> Result<usize, ProtocolError> {
        let failed = || invalid(format!("Reading map length for '{field}' failed."));
        let marker = self.byte().ok_or_else(failed)?;
        let len = match marker {
            0x80..=0x8f => u64::from(marker & 0x0f),
            0xde => self.be(2).ok_or_else(failed)?,
            0xdf => self.be(4).ok_or_else(failed)?,
            _ => return Err(failed()),
        };
        usize::try_from(len).map_err(|_| failed())
    }

    /// An integer, for `field` (ASP.NET reads these as `Int32`).
    pub(super) fn int(&mut self, field: &str) -> Result<i64, ProtocolError> {
        let start = self.pos;
        let value = self.integer();
        match value {
            Some(Integer::Signed(n)) if i32::try_from(n).is_ok() => Ok(n),
            Some(Integer::Unsigned(n)) if i32::try_from(n).is_ok() => Ok(n as i64),
            _ => {
                self.pos = start;
                Err(invalid(format!("Reading '{field}' as Int32 failed.")))
            }
        }
    }

    /// A 64-bit sequence number, for `field`.
    pub(super) fn long(&mut self, field: &str) -> Result<i64, ProtocolError> {
        match self.integer() {
            Some(Integer::Signed(n)) => Ok(n),
            Some(Integer::Unsigned(n)) => {
                i64::try_from(n).map_err(|_| invalid(format!("Reading '{field}' as Int64 failed.")))
            }
            None => Err(invalid(format!("Reading '{field}' as Int64 failed."))),
        }
    }

    fn integer(&mut self) -> Option<Integer> {
        let marker = self.byte()?;
        Some(match marker {
            0x00..=0x7f => Integer::Unsigned(u64::from(marker)),
            0xe0..=0xff => Integer::Signed(i64::from(marker as i8)),
            0xcc => Integer::Unsigned(self.be(1)?),
            0xcd => Integer::Unsigned(self.be(2)?),
            0xce => Integer::Unsigned(self.be(4)?),
            0xcf => Integer::Unsigned(self.be(8)?),
            0xd0 => Integer::Signed(i64::from(self.be(1)? as u8 as i8)),
            0xd1 => Integer::Signed(i64::from(self.be(2)? as u16 as i16)),
            0xd2 => Integer::Signed(i64::from(self.be(4)? as u32 as i32)),
            0xd3 => Integer::Signed(self.be(8)? as i64),
            _ => return None,
        })
    }

    /// Whether the next value is nil (and takes it if so).
    pub(super) fn nil(&mut self) -> bool {
        if self.peek() == Some(0xc0) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// A boolean, for `field`.
    pub(super) fn bool(&mut self, field: &str) -> Result<bool, ProtocolError> {
        match self.byte() {
            Some(0xc3) => Ok(true),
            Some(0xc2) => Ok(false),
            _ => Err(invalid(format!("Reading '{field}' as Boolean failed."))),
        }
    }

    /// The length of a string whose marker was just read, if it is one.
    fn str_len(&mut self, marker: u8) -> Option<usize> {
        let len = match marker {
            0xa0..=0xbf => u64::from(marker & 0x1f),
            0xd9 => self.be(1)?,
            0xda => self.be(2)?,
            0xdb => self.be(4)?,
            _ => return None,
        };
        usize::try_from(len).ok()
    }

    /// A string, for `field` (nil is not one).
    fn string(&mut self, field: &str) -> Result<String, ProtocolError> {
        let failed = || invalid(format!("Reading '{field}' as String failed."));
        let marker = self.byte().ok_or_else(failed)?;
        let len = self.str_len(marker).ok_or_else(failed)?;
        let bytes = self.take(len).ok_or_else(failed)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| failed())
    }

    /// A string or nil, for `field`.
    pub(super) fn optional_string(&mut self, field: &str) -> Result<Option<String>, ProtocolError> {
        if self.nil() {
            return Ok(None);
        }
        self.string(field).map(Some)
    }

    /// A string that must not be nil or empty, for `field`; `what` names it in the error, as
    /// ASP.NET does ("Null or empty {what}.").
    pub(super) fn required_string(
        &mut self,
        field: &str,
        what: &str,
    ) -> Result<String, ProtocolError> {
        match self.optional_string(field)? {
            Some(text) if !text.is_empty() => Ok(text),
            _ => Err(invalid(format!("Null or empty {what}."))),
        }
    }

    /// The headers map (string to string); hubhost reads and drops them.
    pub(super) fn headers(&mut self) -> Result<(), ProtocolError> {
        let count = self.map_len("headers")?;
        for i in 0..count {
            self.required_string(&format!("headers[{i}].Key"), "key in header")?;
            self.required_string(&format!("headers[{i}].Value"), "value in header")?;
        }
        Ok(())
    }

    /// An invocation's stream ids.
    pub(super) fn stream_ids(&mut self) -> Result<Vec<String>, ProtocolError> {
        let count = self.array_len("streamIds")?;
        let mut out = Vec::with_capacity(count.min(16));
        for _ in 0..count {
            match self.bare_string()? {
                Some(id) if !id.is_empty() => out.push(id),
                _ => {
                    return Err(invalid("Null or empty value in streamIds received."));
                }
            }
        }
        Ok(out)
    }

    /// Skips one value.
    #[cfg(test)]
    pub(super) fn skip(&mut self) -> Result<(), ProtocolError> {
        let mut sink = String::new();
        self.json(&mut sink, 0)
    }

    /// One value, appended to `out` as JSON.
    pub(super) fn json(&mut self, out: &mut String, depth: usize) -> Result<(), ProtocolError> {
        if depth > MAX_DEPTH {
            return Err(invalid(format!(
                "Values are nested more than {MAX_DEPTH} levels deep."
            )));
        }
        let truncated = || ProtocolError::EndOfStream;
        let start = self.pos;
        let marker = self.peek().ok_or_else(truncated)?;
        match marker {
            0xc0 => {
                self.pos += 1;
                out.push_str("null");
            }
            0xc2 | 0xc3 => {
                self.pos += 1;
                out.push_str(if marker == 0xc3 { "true" } else { "false" });
            }
            0x00..=0x7f | 0xe0..=0xff | 0xcc..=0xcf | 0xd0..=0xd3 => {
                match self.integer().ok_or_else(truncated)? {
                    Integer::Signed(n) => write!(out, "{n}"),
                    Integer::Unsigned(n) => write!(out, "{n}"),
                }
                .map_err(|_| truncated())?;
            }
            0xca => {
                self.pos += 1;
                let bits = self.be(4).ok_or_else(truncated)? as u32;
                push_float(out, f64::from(f32::from_bits(bits)));
            }
            0xcb => {
                self.pos += 1;
                let bits = self.be(8).ok_or_else(truncated)?;
                push_float(out, f64::from_bits(bits));
            }
            0xa0..=0xbf | 0xd9..=0xdb => {
                self.pos += 1;
                let len = self.str_len(marker).ok_or_else(truncated)?;
                let bytes = self.take(len).ok_or_else(truncated)?;
                let text = std::str::from_utf8(bytes)
                    .map_err(|_| invalid("A string is not valid UTF-8."))?;
                push_json_string(out, text);
            }
            0xc4..=0xc6 => {
                self.pos += 1;
                let len = self.be(1 << (marker - 0xc4)).ok_or_else(truncated)?;
                let len = usize::try_from(len).map_err(|_| truncated())?;
                let bytes = self.take(len).ok_or_else(truncated)?;
                out.push('"');
                out.push_str(&base64::engine::general_purpose::STANDARD.encode(bytes));
                out.push('"');
            }
            0x90..=0x9f | 0xdc | 0xdd => {
                let len = self.array_len("value")?;
                out.push('[');
                for i in 0..len {
                    if i > 0 {
                        out.push(',');
                    }
                    self.json(out, depth + 1)?;
                }
                out.push(']');
            }
            0x80..=0x8f | 0xde | 0xdf => {
                let len = self.map_len("value")?;
                out.push('{');
                for i in 0..len {
                    if i > 0 {
                        out.push(',');
                    }
                    self.key(out)?;
                    out.push(':');
                    self.json(out, depth + 1)?;
                }
                out.push('}');
            }
            0xd4..=0xd8 | 0xc7..=0xc9 => {
                self.pos += 1;
                let len = match marker {
                    0xd4..=0xd8 => 1usize << (marker - 0xd4),
                    _ => {
                        let n = self.be(1 << (marker - 0xc7)).ok_or_else(truncated)?;
                        usize::try_from(n).map_err(|_| truncated())?
                    }
                };
                let kind = self.byte().ok_or_else(truncated)? as i8;
                let data = self.take(len).ok_or_else(truncated)?;
                if kind != -1 {
                    self.pos = start;
                    return Err(invalid(format!(
                        "MessagePack extension type {kind} is not supported."
                    )));
                }
                let (seconds, nanos) =
                    timestamp(data).ok_or_else(|| invalid("A timestamp is malformed."))?;
                push_timestamp(out, seconds, nanos);
            }
            0xc1 => return Err(invalid("Unexpected MessagePack code 0xc1 (never used).")),
        }
        Ok(())
    }

    /// A map key as a JSON string: text, or an integer's decimal text.
    fn key(&mut self, out: &mut String) -> Result<(), ProtocolError> {
        let marker = self.peek().ok_or(ProtocolError::EndOfStream)?;
        match marker {
            0xa0..=0xbf | 0xd9..=0xdb => self.json(out, 0),
            0x00..=0x7f | 0xe0..=0xff | 0xcc..=0xcf | 0xd0..=0xd3 => {
                let mut number = String::new();
                self.json(&mut number, 0)?;
                push_json_string(out, &number);
                Ok(())
            }
            _ => Err(invalid("Map keys must be strings or integers.")),
        }
    }
}

/// MessagePack-CSharp's error for a value of the wrong kind.
fn unexpected_code(code: u8) -> ProtocolError {
    ProtocolError::MessagePack(format!(
        "Unexpected msgpack code {code} ({}) encountered.",
        format_name(code)
    ))
}

/// MessagePack-CSharp's name of a format code, as in its error texts.
fn format_name(code: u8) -> &'static str {
    match code {
        0x00..=0x7f => "positive fixint",
        0x80..=0x8f => "fixmap",
        0x90..=0x9f => "fixarray",
        0xa0..=0xbf => "fixstr",
        0xc0 => "nil",
        0xc1 => "(never used)",
        0xc2 => "false",
        0xc3 => "true",
        0xc4 => "bin 8",
        0xc5 => "bin 16",
        0xc6 => "bin 32",
        0xc7 => "ext 8",
        0xc8 => "ext 16",
        0xc9 => "ext 32",
        0xca => "float 32",
        0xcb => "float 64",
        0xcc => "uint 8",
        0xcd => "uint 16",
        0xce => "uint 32",
        0xcf => "uint 64",
        0xd0 => "int 8",
        0xd1 => "int 16",
        0xd2 => "int 32",
        0xd3 => "int 64",
        0xd4 => "fixext 1",
        0xd5 => "fixext 2",
        0xd6 => "fixext 4",
        0xd7 => "fixext 8",
        0xd8 => "fixext 16",
        0xd9 => "str 8",
        0xda => "str 16",
        0xdb => "str 32",
        0xdc => "array 16",
        0xdd => "array 32",
        0xde => "map 16",
        0xdf => "map 32",
        0xe0..=0xff => "negative fixint",
    }
}

enum Integer {
    Signed(i64),
    Unsigned(u64),
}

/// NaN and infinities have no JSON form: they become null.
fn push_float(out: &mut String, value: f64) {
    if value.is_finite() {
        let _ = write!(
            out,
            "{}",
            serde_json::Number::from_f64(value)
                .map_or_else(|| "null".to_owned(), |n| n.to_string())
        );
    } else {
        out.push_str("null");
    }
}

fn push_json_string(out: &mut String, text: &str) {
    // Serializing a &str cannot fail.
    out.push_str(&serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned()));
}

/// The (seconds, nanoseconds) of a timestamp extension's data.
fn timestamp(data: &[u8]) -> Option<(i64, u32)> {
    let be = |b: &[u8]| b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x));
    match data.len() {
        4 => Some((be(data) as i64, 0)),
        8 => {
            let value = be(data);
            let nanos = (value >> 34) as u32;
            Some(((value & 0x3_ffff_ffff) as i64, nanos))
        }
        12 => Some((be(&data[4..]) as i64, be(&data[..4]) as u32)),
        _ => None,
    }
    .filter(|(_, nanos)| *nanos < 1_000_000_000)
}

/// `2025-01-15T13:05:09.123Z`: as many fraction digits as needed, none for whole seconds.
fn push_timestamp(out: &mut String, seconds: i64, nanos: u32) {
    let t = civil_time(seconds);
    let _ = write!(
        out,
        "\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    );
    if nanos > 0 {
        let fraction = format!("{nanos:09}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    out.push_str("Z\"");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(bytes: &[u8]) -> Result<String, ProtocolError> {
        let mut out = String::new();
        let mut reader = Reader::new(bytes);
        reader.json(&mut out, 0)?;
        assert!(reader.at_end(), "read to the end");
        Ok(out)
    }

    #[test]
    fn values_become_json() {
        assert_eq!(json(&[0xc0]).unwrap(), "null");
        assert_eq!(json(&[0x93, 0xc3, 0x05, 0xff]).unwrap(), "[true,5,-1]");
        assert_eq!(
            json(&[0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).unwrap(),
            "18446744073709551615",
            "64-bit integers stay exact"
        );
        assert_eq!(
            json(&[0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0]).unwrap(),
            "-9223372036854775808"
        );
        assert_eq!(json(&[0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]).unwrap(), "1.5");
        assert_eq!(json(&[0xca, 0x7f, 0xc0, 0, 0]).unwrap(), "null", "NaN");
        assert_eq!(json(&[0xa3, b'a', b'"', b'c']).unwrap(), "\"a\\\"c\"");
        assert_eq!(
            json(&[0x82, 0xa1, b'a', 0x01, 0x07, 0xc0]).unwrap(),
            "{\"a\":1,\"7\":null}"
        );
    }

    #[test]
    fn binary_becomes_base64_and_timestamps_iso_8601() {
        assert_eq!(json(&[0xc4, 0x03, 1, 2, 3]).unwrap(), "\"AQID\"");
        // 2025-01-15T13:05:09Z as timestamp 32.
        assert_eq!(
            json(&[0xd6, 0xff, 0x67, 0x87, 0xb2, 0x85]).unwrap(),
            "\"2025-01-15T13:05:09Z\""
        );
        // The same with 123 ms, as timestamp 64 (nanoseconds in the upper 30 bits).
        let value = (123_000_000u64 << 34) | 1_736_946_309;
        let mut bytes = vec![0xd7, 0xff];
        bytes.extend(value.to_be_bytes());
        assert_eq!(json(&bytes).unwrap(), "\"2025-01-15T13:05:09.123Z\"");
        // Timestamp 96, before 1970.
        let mut bytes = vec![0xc7, 12, 0xff];
        bytes.extend(500u32.to_be_bytes());
        bytes.extend((-1i64).to_be_bytes());
        assert_eq!(json(&bytes).unwrap(), "\"1969-12-31T23:59:59.0000005Z\"");
    }

    #[test]
    fn refuses_what_has_no_json_form() {
        assert!(json(&[0xd4, 0x05, 0x00]).is_err(), "other extension types");
        assert!(json(&[0x81, 0xc3, 0x01]).is_err(), "boolean map keys");
        assert!(json(&[0xa2, 0xff, 0xfe]).is_err(), "invalid UTF-8");
        assert!(json(&[0x92, 0x01]).is_err(), "truncated");
        let deep = vec![0x91; MAX_DEPTH + 2];
        assert!(json(&deep).is_err(), "nesting past the limit");
    }

    #[test]
    fn fields_are_read_with_aspnet_texts() {
        let mut r = Reader::new(&[0xa1, b'x']);
        assert_eq!(
            r.int("type").unwrap_err().to_string(),
            "Reading 'type' as Int32 failed."
        );
        let mut r = Reader::new(&[0x05]);
        assert_eq!(
            r.string("target").unwrap_err().to_string(),
            "Reading 'target' as String failed."
        );
        let mut r = Reader::new(&[0x80]);
        assert_eq!(
            r.array_len("elementCount").unwrap_err().to_string(),
            "Reading array length for 'elementCount' failed."
        );
    }
}
