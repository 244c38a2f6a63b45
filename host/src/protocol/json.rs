//! The JSON hub protocol: decoding client records and encoding server frames.
//!
//! Decoding borrows from the record and keeps `arguments` as raw JSON, so a call's arguments
//! reach the hub without being parsed into a tree and printed again. Encoding writes frames
//! directly as strings (with the record separator) so one frame can be shared by every recipient.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::{ClientMessage, ProtocolError};

/// The keep-alive frame.
pub const PING: &str = "{\"type\":6}\u{1e}";

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
            let arguments = fields
                .arguments
                .ok_or(ProtocolError::MissingProperty("arguments"))?;
            if !arguments.get().starts_with('[') {
                return Err(ProtocolError::WrongType {
                    property: "arguments",
                    expected: "Array",
                });
            }
            ClientMessage::Invocation {
                invocation_id: typed(fields.invocation_id, "invocationId", "String")?,
                target: required(fields.target, "target", "String")?,
                arguments: arguments.to_owned(),
                stream_ids: typed(fields.stream_ids, "streamIds", "Array of String")?
                    .unwrap_or_default(),
            }
        }
        2 => ClientMessage::StreamItem {
            invocation_id: id(&fields)?,
        },
        3 => ClientMessage::Completion {
            invocation_id: id(&fields)?,
        },
        4 => ClientMessage::StreamInvocation {
            invocation_id: id(&fields)?,
            target: required(fields.target, "target", "String")?,
        },
        5 => ClientMessage::CancelInvocation {
            invocation_id: id(&fields)?,
        },
        6 => ClientMessage::Ping,
        7 => ClientMessage::Close {
            error: typed(fields.error, "error", "String")?,
        },
        8 | 9 => ClientMessage::AckOrSequence,
        other => ClientMessage::Unknown(other),
    })
}

fn quoted(text: &str) -> String {
    // Serializing a &str cannot fail.
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned())
}

/// An Invocation frame (type 1, no id: the server expects no answer). `arguments` must be a
/// JSON array; the runtime checked that when the hub produced it.
pub fn invocation(target: &str, arguments: &str) -> String {
    let target = quoted(target);
    let mut out = String::with_capacity(36 + target.len() + arguments.len());
    out.push_str("{\"type\":1,\"target\":");
    out.push_str(&target);
    out.push_str(",\"arguments\":");
    out.push_str(arguments);
    out.push_str("}\u{1e}");
    out
}

/// A Completion with a result (`result` is JSON).
pub fn completion_result(invocation_id: &str, result: &str) -> String {
    format!(
        "{{\"type\":3,\"invocationId\":{},\"result\":{result}}}\u{1e}",
        quoted(invocation_id)
    )
}

/// A Completion of a void method.
pub fn completion_void(invocation_id: &str) -> String {
    format!(
        "{{\"type\":3,\"invocationId\":{}}}\u{1e}",
        quoted(invocation_id)
    )
}

/// A Completion with an error text.
pub fn completion_error(invocation_id: &str, error: &str) -> String {
    format!(
        "{{\"type\":3,\"invocationId\":{},\"error\":{}}}\u{1e}",
        quoted(invocation_id),
        quoted(error)
    )
}

/// A Close message; `allow_reconnect` lets the client's automatic reconnect run.
pub fn close(error: Option<&str>, allow_reconnect: bool) -> String {
    let mut out = String::from("{\"type\":7");
    if let Some(error) = error {
        out.push_str(",\"error\":");
        out.push_str(&quoted(error));
    }
    if allow_reconnect {
        out.push_str(",\"allowReconnect\":true");
    }
    out.push_str("}\u{1e}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
            invocation("broadcastMessage", r#"["a","b\"c"]"#),
            "{\"type\":1,\"target\":\"broadcastMessage\",\"arguments\":[\"a\",\"b\\\"c\"]}\u{1e}"
        );
        assert_eq!(
            completion_result("7", "42"),
            "{\"type\":3,\"invocationId\":\"7\",\"result\":42}\u{1e}"
        );
        assert_eq!(
            completion_void("7"),
            "{\"type\":3,\"invocationId\":\"7\"}\u{1e}"
        );
        assert_eq!(
            completion_error("7", "bad \"thing\""),
            "{\"type\":3,\"invocationId\":\"7\",\"error\":\"bad \\\"thing\\\"\"}\u{1e}"
        );
        assert_eq!(close(None, false), "{\"type\":7}\u{1e}");
        assert_eq!(
            close(Some("bye"), true),
            "{\"type\":7,\"error\":\"bye\",\"allowReconnect\":true}\u{1e}"
        );
    }

    #[test]
    fn encoded_frames_are_valid_json() {
        for frame in [
            invocation("x", "[1,2]"),
            completion_result("1", "{\"a\":[1]}"),
            completion_error("1", "e"),
            close(Some("e"), true),
            PING.to_owned(),
        ] {
            let body = frame.strip_suffix('\u{1e}').expect("separator");
            serde_json::from_str::<serde_json::Value>(body).expect("valid JSON");
        }
    }
}
