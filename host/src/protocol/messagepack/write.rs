//! Writing MessagePack: the values of JSON text (what hubs produce), and the pieces of hub
//! messages.

use std::fmt;

use rmp::encode;
use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};

/// A MessagePack buffer. Writes into a `Vec` cannot fail, so their results are dropped.
pub(super) struct Out(Vec<u8>);

impl Out {
    pub(super) fn new() -> Self {
        Self(Vec::with_capacity(64))
    }

    pub(super) fn into_vec(self) -> Vec<u8> {
        self.0
    }

    pub(super) fn array(&mut self, len: u32) {
        let _ = encode::write_array_len(&mut self.0, len);
    }

    pub(super) fn map(&mut self, len: u32) {
        let _ = encode::write_map_len(&mut self.0, len);
    }

    pub(super) fn nil(&mut self) {
        let _ = encode::write_nil(&mut self.0);
    }

    pub(super) fn bool(&mut self, value: bool) {
        let _ = encode::write_bool(&mut self.0, value);
    }

    pub(super) fn uint(&mut self, value: u64) {
        let _ = encode::write_uint(&mut self.0, value);
    }

    pub(super) fn int(&mut self, value: i64) {
        let _ = encode::write_sint(&mut self.0, value);
    }

    pub(super) fn str(&mut self, value: &str) {
        let _ = encode::write_str(&mut self.0, value);
    }

    fn f64(&mut self, value: f64) {
        let _ = encode::write_f64(&mut self.0, value);
    }

    /// Puts an array or map header for `len` elements at `at`, before what was written since.
    fn splice_header(&mut self, at: usize, len: usize, map: bool) {
        let mut header = Vec::with_capacity(5);
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        let _ = if map {
            encode::write_map_len(&mut header, len)
        } else {
            encode::write_array_len(&mut header, len)
        };
        self.0.splice(at..at, header);
    }

    /// JSON text (already known to be valid: the runtime checks what hubs produce) as
    /// MessagePack, without building a tree: integers as the smallest integer type (64-bit ones
    /// exact), other numbers as float64, objects as maps with their keys in order. Text that
    /// does not parse is written as nil.
    pub(super) fn json_text(&mut self, text: &str) {
        let mark = self.0.len();
        let mut json = serde_json::Deserializer::from_str(text);
        if Transcode(self).deserialize(&mut json).is_err() || json.end().is_err() {
            self.0.truncate(mark);
            self.nil();
        }
    }
}

/// Writes what a JSON deserializer visits as MessagePack.
struct Transcode<'a>(&'a mut Out);

impl<'de> DeserializeSeed<'de> for Transcode<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Transcode<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.nil();
        Ok(())
    }

    fn visit_bool<E>(self, value: bool) -> Result<(), E> {
        self.0.bool(value);
        Ok(())
    }

    fn visit_u64<E>(self, value: u64) -> Result<(), E> {
        self.0.uint(value);
        Ok(())
    }

    fn visit_i64<E>(self, value: i64) -> Result<(), E> {
        self.0.int(value);
        Ok(())
    }

    fn visit_f64<E>(self, value: f64) -> Result<(), E> {
        self.0.f64(value);
        Ok(())
    }

    fn visit_str<E>(self, value: &str) -> Result<(), E> {
        self.0.str(value);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        let at = self.0.0.len();
        let mut count = 0;
        while items.next_element_seed(Transcode(self.0))?.is_some() {
            count += 1;
        }
        self.0.splice_header(at, count, false);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut fields: A) -> Result<(), A::Error> {
        let at = self.0.0.len();
        let mut count = 0;
        while fields.next_key_seed(Transcode(self.0))?.is_some() {
            fields.next_value_seed(Transcode(self.0))?;
            count += 1;
        }
        self.0.splice_header(at, count, true);
        Ok(())
    }
}

/// The varint length prefix of a message: 7 bits a byte, low bits first.
pub(super) fn length_prefix(mut len: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(json: &str) -> Vec<u8> {
        let mut out = Out::new();
        out.json_text(json);
        out.into_vec()
    }

    #[test]
    fn json_values_become_compact_messagepack() {
        assert_eq!(bytes("null"), [0xc0]);
        assert_eq!(bytes("[true,false]"), [0x92, 0xc3, 0xc2]);
        assert_eq!(bytes("5"), [0x05]);
        assert_eq!(bytes("-1"), [0xff]);
        assert_eq!(bytes("300"), [0xcd, 0x01, 0x2c]);
        assert_eq!(
            bytes("18446744073709551615"),
            [0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            "64-bit integers stay exact"
        );
        assert_eq!(bytes("-9223372036854775808")[0], 0xd3);
        assert_eq!(bytes("1.5"), [0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]);
        assert_eq!(bytes("\"hi\""), [0xa2, b'h', b'i']);
        assert_eq!(bytes("{\"a\":1}"), [0x81, 0xa1, b'a', 0x01]);
    }

    #[test]
    fn length_prefixes_are_varints() {
        let prefix = |len| {
            let mut out = Vec::new();
            length_prefix(len, &mut out);
            out
        };
        assert_eq!(prefix(0), [0x00]);
        assert_eq!(prefix(0x7f), [0x7f]);
        assert_eq!(prefix(0x80), [0x80, 0x01]);
        assert_eq!(prefix(0x3fff), [0xff, 0x7f]);
        assert_eq!(prefix(0x4000), [0x80, 0x80, 0x01]);
    }
}
