//! The JSON hub protocol: records of JSON text, each ended by the record separator `0x1E`.
//!
//! Decoding borrows from the record and keeps `arguments` as raw JSON, so a call's arguments
//! reach the hub without being parsed into a tree and printed again. Encoding writes frames
//! directly as text so one frame can be shared by every recipient.

use bytes::{Buf, BytesMut};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::{
    ClientMessage, Completion, Frame, HubProtocol, ProtocolError, ServerMessage, TransferFormat,
};

/// Ends every message of the JSON protocol (and the handshake).
pub const RECORD_SEPARATOR: u8 = 0x1e;

/// The JSON hub protocol.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonProtocol;

/// The one instance sessions share.
pub static JSON: JsonProtocol = JsonProtocol;

impl HubProtocol for JsonProtocol {
    fn name(&self) -> &'static str {
        "json"
    }

    fn transfer_format(&self) -> TransferFormat {
        TransferFormat::Text
    }

    fn decode(
        &self,
        buffer: &mut BytesMut,
        max_message_size: usize,
    ) -> Result<Option<ClientMessage>, ProtocolError> {
        match next_record(buffer, max_message_size)? {
            Some(record) => decode(&record).map(Some),
            None => Ok(None),
        }
    }

    fn encode(&self, message: &ServerMessage<'_>) -> Frame {
        if let ServerMessage::Ping = message {
            return Frame::static_text(PING);
        }
        Frame::text(encode(message))
    }
}

/// The next complete record of `buffer`, without its separator, or `None` until more bytes
/// arrive. Fails when a record is, or a partial one has grown, over `max_record` bytes.
pub fn next_record(
    buffer: &mut BytesMut,
    max_record: usize,
) -> Result<Option<BytesMut>, ProtocolError> {
    match buffer.iter().position(|&b| b == RECORD_SEPARATOR) {
        Some(end) if end > max_record => Err(ProtocolError::MessageTooLarge { limit: max_record }),
        Some(end) => {
            let record = buffer.split_to(end);
            buffer.advance(1);
            Ok(Some(record))
        }
        None if buffer.len() > max_record => {
            Err(ProtocolError::MessageTooLarge { limit: max_record })
        }
        None => Ok(None),
    }
}

/// The keep-alive frame.
const PING: &str = "{\"type\":6}\u{1e}";

/// The fields of any message; which are required depends on `type`.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a RawValue>,
    #[serde(rename = "invocationId", borrow)]
    invocation_id: Option<&'a RawValue>,
    #[serde(borrow)]
    target: Option<&'a RawValue>,
    #[serde(borrow)]
    arguments: Option<&'a RawValue>,
    #[serde(rename = "streamIds", borrow)]
    stream_ids: Option<&'a RawValue>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
    #[serde(borrow)]
    item: Option<&'a RawValue>,
    #[serde(borrow)]
    result: Option<&'a RawValue>,
    #[serde(rename = "sequenceId", borrow)]
    sequence_id: Option<&'a RawValue>,
}

fn typed<T: DeserializeOwned>(
    raw: Option<&RawValue>,
    property: &'static str,
    expected: &'static str,
) -> Result<Option<T>, ProtocolError> {
    raw.map(|raw| {
        serde_json::from_str(raw.get()).map_err(|_| ProtocolError::WrongType { property, expected })
    })
    .transpose()
}

fn required<T: DeserializeOwned>(
    raw: Option<&RawValue>,
    property: &'static str,
    expected: &'static str,
) -> Result<T, ProtocolError> {
    typed(raw, property, expected)?.ok_or(ProtocolError::MissingProperty(property))
}

fn null() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).unwrap_or_else(|_| unreachable!("null is JSON"))
}

/// The `arguments` of an invocation: required, and an array.
fn arguments(fields: &Fields<'_>) -> Result<Box<RawValue>, ProtocolError> {
    let arguments = fields
        .arguments
        .ok_or(ProtocolError::MissingProperty("arguments"))?;
    if !arguments.get().starts_with('[') {
        return Err(ProtocolError::WrongType {
            property: "arguments",
            expected: "Array",
        });
    }
    Ok(arguments.to_owned())
}

/// Decodes one record (without its separator).
pub fn decode(record: &[u8]) -> Result<ClientMessage, ProtocolError> {
    let text = std::str::from_utf8(record).map_err(|_| ProtocolError::NotUtf8)?;
    // A serde struct would also accept a JSON array positionally; messages are objects.
    if !text.trim_start().starts_with('{') {
        return Err(ProtocolError::InvalidJson(
            "expected a JSON object".to_owned(),
        ));
    }
    let fields: Fields<'_> =
        serde_json::from_str(text).map_err(|e| ProtocolError::InvalidJson(e.to_string()))?;
    let kind: u64 = required(fields.kind, "type", "Integer")?;
    let id =
        |fields: &Fields<'_>| required::<String>(fields.invocation_id, "invocationId", "String");
    Ok(match kind {
        1 => {
            let arguments = arguments(&fields)?;
            ClientMessage::Invocation {
                invocation_id: typed(fields.invocation_id, "invocationId", "String")?,
                target: required(fields.target, "target", "String")?,
                arguments,
                stream_ids: typed(fields.stream_ids, "streamIds", "Array of String")?
                    .unwrap_or_default(),
            }
        }
        2 => ClientMessage::StreamItem {
            invocation_id: id(&fields)?,
            // A missing item is null, as ASP.NET binds it.
            item: Ok(fields.item.map_or_else(null, ToOwned::to_owned)),
        },
        3 => ClientMessage::Completion {
            invocation_id: id(&fields)?,
            error: typed(fields.error, "error", "String")?,
            result: fields.result.map(ToOwned::to_owned),
        },
        4 => ClientMessage::StreamInvocation {
            invocation_id: id(&fields)?,
            target: required(fields.target, "target", "String")?,
            arguments: arguments(&fields)?,
            stream_ids: typed(fields.stream_ids, "streamIds", "Array of String")?
                .unwrap_or_default(),
        },
        5 => ClientMessage::CancelInvocation {
            invocation_id: id(&fields)?,
        },
        6 => ClientMessage::Ping,
        7 => ClientMessage::Close {
            error: typed(fields.error, "error", "String")?,
        },
        8 => ClientMessage::Ack {
            sequence_id: required(fields.sequence_id, "sequenceId", "Integer")?,
        },
        9 => ClientMessage::Sequence {
            sequence_id: required(fields.sequence_id, "sequenceId", "Integer")?,
        },
        other => ClientMessage::Unknown(other),
    })
}

/// Appends `text` as a JSON string literal.
fn push_quoted(out: &mut String, text: &str) {
    // Serializing a &str cannot fail.
    out.push_str(&serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned()));
}

/// One message as JSON text with its separator. `arguments` and results must be JSON (the
/// runtime checks what hubs produce).
fn encode(message: &ServerMessage<'_>) -> String {
    match *message {
        ServerMessage::Invocation {
            invocation_id,
            target,
            arguments,
        } => {
            let mut out = String::with_capacity(40 + target.len() + arguments.len());
            out.push_str("{\"type\":1,");
            if let Some(id) = invocation_id {
                out.push_str("\"invocationId\":");
                push_quoted(&mut out, id);
                out.push(',');
            }
            out.push_str("\"target\":");
            push_quoted(&mut out, target);
            out.push_str(",\"arguments\":");
            out.push_str(arguments);
            out.push_str("}\u{1e}");
            out
        }
        ServerMessage::StreamItem {
            invocation_id,
            item,
        } => {
            let mut out = String::with_capacity(40 + invocation_id.len() + item.len());
            out.push_str("{\"type\":2,\"invocationId\":");
            push_quoted(&mut out, invocation_id);
            out.push_str(",\"item\":");
            out.push_str(item);
            out.push_str("}\u{1e}");
            out
        }
        ServerMessage::Completion {
            invocation_id,
            completion,
        } => {
            let mut out = String::with_capacity(48 + invocation_id.len());
            out.push_str("{\"type\":3,\"invocationId\":");
            push_quoted(&mut out, invocation_id);
            match completion {
                Completion::Void => {}
                Completion::Result(result) => {
                    out.push_str(",\"result\":");
                    out.push_str(result);
                }
                Completion::Error(error) => {
                    out.push_str(",\"error\":");
                    push_quoted(&mut out, error);
                }
            }
            out.push_str("}\u{1e}");
            out
        }
        ServerMessage::Ping => PING.to_owned(),
        ServerMessage::Close {
            error,
            allow_reconnect,
        } => {
            let mut out = String::from("{\"type\":7");
            if let Some(error) = error {
                out.push_str(",\"error\":");
                push_quoted(&mut out, error);
            }
            if allow_reconnect {
                out.push_str(",\"allowReconnect\":true");
            }
            out.push_str("}\u{1e}");
            out
        }
        ServerMessage::Ack { sequence_id } => {
            format!("{{\"type\":8,\"sequenceId\":{sequence_id}}}\u{1e}")
        }
        ServerMessage::Sequence { sequence_id } => {
            format!("{{\"type\":9,\"sequenceId\":{sequence_id}}}\u{1e}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(message: ServerMessage<'_>) -> String {
        let frame = JSON.encode(&message);
        assert_eq!(frame.format(), TransferFormat::Text);
        String::from_utf8(frame.as_bytes().to_vec()).expect("utf8")
    }

    fn records(buffer: &mut BytesMut, max: usize) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(r) = next_record(buffer, max).expect("valid records") {
            out.push(String::from_utf8(r.to_vec()).expect("utf8"));
        }
        out
    }

    #[test]
    fn splits_several_records_and_keeps_a_partial_one() {
        let mut buffer = BytesMut::from(&b"{\"type\":6}\x1e{\"type\":6}\x1e{\"ty"[..]);
        assert_eq!(records(&mut buffer, 100), ["{\"type\":6}", "{\"type\":6}"]);
        buffer.extend_from_slice(b"pe\":6}\x1e");
        assert_eq!(records(&mut buffer, 100), ["{\"type\":6}"]);
        assert!(buffer.is_empty());
    }

    #[test]
    fn enforces_the_size_limit_on_whole_and_partial_records() {
        let mut exact = BytesMut::from(&b"abcd\x1e"[..]);
        assert_eq!(records(&mut exact, 4), ["abcd"]);
        let mut over = BytesMut::from(&b"abcde\x1e"[..]);
        assert_eq!(
            next_record(&mut over, 4),
            Err(ProtocolError::MessageTooLarge { limit: 4 })
        );
        let mut partial = BytesMut::from(&b"abcde"[..]);
        assert!(next_record(&mut partial, 4).is_err());
        let mut empty = BytesMut::from(&b"\x1e"[..]);
        assert_eq!(records(&mut empty, 4), [""]);
    }

    #[test]
    fn decodes_an_invocation_keeping_raw_arguments() {
        let msg = decode(
            br#"{"type":1,"invocationId":"0","target":"Send","arguments":["ana", {"a": 1}],"headers":{}}"#,
        )
        .expect("valid");
        match msg {
            ClientMessage::Invocation {
                invocation_id,
                target,
                arguments,
                stream_ids,
            } => {
                assert_eq!(invocation_id.as_deref(), Some("0"));
                assert_eq!(target, "Send");
                assert_eq!(arguments.get(), r#"["ana", {"a": 1}]"#);
                assert!(stream_ids.is_empty());
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn an_invocation_without_id_is_fire_and_forget() {
        let msg = decode(br#"{"type":1,"target":"Send","arguments":[]}"#).expect("valid");
        assert!(matches!(
            msg,
            ClientMessage::Invocation {
                invocation_id: None,
                ..
            }
        ));
    }

    #[test]
    fn decodes_ping_close_and_unknown_types() {
        assert!(matches!(decode(br#"{"type":6}"#), Ok(ClientMessage::Ping)));
        assert!(matches!(
            decode(br#"{"type":7,"error":"bye"}"#),
            Ok(ClientMessage::Close { error: Some(e) }) if e == "bye"
        ));
        assert!(matches!(
            decode(br#"{"type":42}"#),
            Ok(ClientMessage::Unknown(42))
        ));
    }

    #[test]
    fn reports_missing_and_mistyped_properties_like_aspnet() {
        assert_eq!(
            decode(br#"{"target":"x"}"#).unwrap_err().to_string(),
            "Missing required property 'type'."
        );
        assert_eq!(
            decode(br#"{"type":1,"arguments":[]}"#)
                .unwrap_err()
                .to_string(),
            "Missing required property 'target'."
        );
        assert_eq!(
            decode(br#"{"type":1,"target":5,"arguments":[]}"#)
                .unwrap_err()
                .to_string(),
            "Expected 'target' to be of type String."
        );
        assert_eq!(
            decode(br#"{"type":1,"target":"x","arguments":{}}"#)
                .unwrap_err()
                .to_string(),
            "Expected 'arguments' to be of type Array."
        );
    }

    #[test]
    fn rejects_malformed_json_and_non_objects() {
        assert!(matches!(
            decode(b"{not json"),
            Err(ProtocolError::InvalidJson(_))
        ));
        assert!(matches!(
            decode(br#"[1,"x"]"#),
            Err(ProtocolError::InvalidJson(_))
        ));
        assert_eq!(decode(&[0xff, 0xfe]).unwrap_err(), ProtocolError::NotUtf8);
    }

    #[test]
    fn encodes_frames() {
        assert_eq!(
            text(ServerMessage::Invocation {
                invocation_id: None,
                target: "broadcastMessage",
                arguments: r#"["a","b\"c"]"#
            }),
            "{\"type\":1,\"target\":\"broadcastMessage\",\"arguments\":[\"a\",\"b\\\"c\"]}\u{1e}"
        );
        assert_eq!(
            text(ServerMessage::Invocation {
                invocation_id: Some("a.1"),
                target: "Answer",
                arguments: "[1]"
            }),
            "{\"type\":1,\"invocationId\":\"a.1\",\"target\":\"Answer\",\"arguments\":[1]}\u{1e}"
        );
        let completion = |completion| ServerMessage::Completion {
            invocation_id: "7",
            completion,
        };
        assert_eq!(
            text(completion(Completion::Result("42"))),
            "{\"type\":3,\"invocationId\":\"7\",\"result\":42}\u{1e}"
        );
        assert_eq!(
            text(completion(Completion::Void)),
            "{\"type\":3,\"invocationId\":\"7\"}\u{1e}"
        );
        assert_eq!(
            text(completion(Completion::Error("bad \"thing\""))),
            "{\"type\":3,\"invocationId\":\"7\",\"error\":\"bad \\\"thing\\\"\"}\u{1e}"
        );
        let close = |error, allow_reconnect| ServerMessage::Close {
            error,
            allow_reconnect,
        };
        assert_eq!(text(close(None, false)), "{\"type\":7}\u{1e}");
        assert_eq!(
            text(close(Some("bye"), true)),
            "{\"type\":7,\"error\":\"bye\",\"allowReconnect\":true}\u{1e}"
        );
        assert_eq!(text(ServerMessage::Ping), "{\"type\":6}\u{1e}");
        assert_eq!(
            text(ServerMessage::StreamItem {
                invocation_id: "3",
                item: "{\"n\":1}"
            }),
            "{\"type\":2,\"invocationId\":\"3\",\"item\":{\"n\":1}}\u{1e}"
        );
    }

    #[test]
    fn encoded_frames_are_valid_json() {
        for message in [
            ServerMessage::Invocation {
                invocation_id: None,
                target: "x\u{2028}",
                arguments: "[1,2]",
            },
            ServerMessage::Completion {
                invocation_id: "1",
                completion: Completion::Result("{\"a\":[1]}"),
            },
            ServerMessage::Completion {
                invocation_id: "1",
                completion: Completion::Error("e"),
            },
            ServerMessage::Close {
                error: Some("e"),
                allow_reconnect: true,
            },
            ServerMessage::Ping,
        ] {
            let frame = text(message);
            let body = frame.strip_suffix('\u{1e}').expect("separator");
            serde_json::from_str::<serde_json::Value>(body).expect("valid JSON");
        }
    }
}
