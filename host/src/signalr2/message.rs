//! SignalR 2's messages: hub invocations from the client, hub responses, and the persistent
//! responses everything else travels in.

use serde::Deserialize;
use serde_json::value::RawValue;

/// A hub invocation: `{"H":"chathub","M":"Send","A":["bob","hi"],"I":0,"S":{…}}`.
#[derive(Debug)]
pub struct HubRequest {
    /// The hub as the client named it (lowercased by the client).
    pub hub: String,
    pub method: String,
    /// The JSON array of arguments.
    pub arguments: Box<RawValue>,
    /// The invocation's id, as the client sent it (a number), as text.
    pub id: String,
}

/// Why a message is not a hub invocation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid hub request: {0}")]
pub struct BadRequest(pub String);

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(rename = "H")]
    hub: Option<String>,
    #[serde(rename = "M")]
    method: Option<String>,
    #[serde(rename = "A", borrow)]
    arguments: Option<&'a RawValue>,
    #[serde(rename = "I", borrow)]
    id: Option<&'a RawValue>,
}

impl HubRequest {
    /// Reads a hub invocation. `A` may be missing (no arguments); `H`, `M` and `I` may not.
    pub fn parse(text: &str) -> Result<Self, BadRequest> {
        let wire: Wire<'_> = serde_json::from_str(text).map_err(|e| BadRequest(e.to_string()))?;
        let hub = wire.hub.ok_or_else(|| BadRequest("missing 'H'".into()))?;
        let method = wire
            .method
            .ok_or_else(|| BadRequest("missing 'M'".into()))?;
        let id = match wire.id.map(RawValue::get) {
            Some(raw) if raw.starts_with('"') => {
                serde_json::from_str::<String>(raw).map_err(|e| BadRequest(format!("'I': {e}")))?
            }
            Some(raw) if raw.bytes().all(|b| b.is_ascii_digit() || b == b'-') => raw.to_owned(),
            Some(_) => return Err(BadRequest("'I' must be a number".into())),
            None => return Err(BadRequest("missing 'I'".into())),
        };
        let arguments = match wire.arguments {
            Some(raw) if raw.get().starts_with('[') => raw.to_owned(),
            None => RawValue::from_string("[]".into()).map_err(|e| BadRequest(e.to_string()))?,
            Some(raw) if raw.get() == "null" => {
                RawValue::from_string("[]".into()).map_err(|e| BadRequest(e.to_string()))?
            }
            Some(_) => return Err(BadRequest("'A' must be an array".into())),
        };
        Ok(Self {
            hub,
            method,
            arguments,
            id,
        })
    }
}

/// How an invocation ended, for its hub response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A void method returned.
    Void,
    /// A method returned this JSON value.
    Value(String),
    /// It failed; `hub_exception` marks the hub's own refusal (SignalR's `HubException`),
    /// which the client reports with `source: "HubException"`.
    Error { text: String, hub_exception: bool },
}

/// A hub response: `{"I":"0","R":42}`, `{"I":"0"}` or `{"I":"0","E":"…","H":true}`.
pub fn hub_response(id: &str, outcome: &Outcome) -> String {
    let id = json_string(id);
    match outcome {
        Outcome::Void => format!("{{\"I\":{id}}}"),
        Outcome::Value(value) => format!("{{\"I\":{id},\"R\":{value}}}"),
        Outcome::Error {
            text,
            hub_exception: false,
        } => format!("{{\"I\":{id},\"E\":{}}}", json_string(text)),
        Outcome::Error {
            text,
            hub_exception: true,
        } => format!("{{\"I\":{id},\"E\":{},\"H\":true}}", json_string(text)),
    }
}

/// A client method call: `{"H":"ChatHub","M":"broadcastMessage","A":[…]}`.
pub fn client_invocation(hub: &str, method: &str, arguments: &str) -> String {
    format!(
        "{{\"H\":{},\"M\":{},\"A\":{arguments}}}",
        json_string(hub),
        json_string(method)
    )
}

/// What a persistent response says besides its messages.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flags<'a> {
    /// The connection's first response (`S:1`).
    pub initialized: bool,
    /// The server is going away: a long-polling client reconnects (`T:1`).
    pub reconnect: bool,
    /// The connection's groups changed: its new groups token (`G`), which the client sends
    /// back when it reconnects.
    pub groups: Option<&'a str>,
}

/// A persistent response: `{"C":"<cursor>","M":[…]}`, with `S`/`T` when `flags` say so.
/// `M` is always present: the client reads the rest only when it is.
pub fn persistent_response<'a>(
    cursor: &str,
    messages: impl IntoIterator<Item = &'a [u8]>,
    flags: Flags<'_>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"{\"C\":");
    out.extend_from_slice(json_string(cursor).as_bytes());
    if flags.initialized {
        out.extend_from_slice(b",\"S\":1");
    }
    if flags.reconnect {
        out.extend_from_slice(b",\"T\":1");
    }
    if let Some(groups) = flags.groups {
        out.extend_from_slice(b",\"G\":");
        out.extend_from_slice(json_string(groups).as_bytes());
    }
    out.extend_from_slice(b",\"M\":[");
    for (i, message) in messages.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(message);
    }
    out.extend_from_slice(b"]}");
    out
}

/// `text` as a JSON string.
pub fn json_string(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_hub_invocation_as_the_jquery_client_sends_it() {
        let request =
            HubRequest::parse(r#"{"H":"chathub","M":"Send","A":["bob","hi"],"I":0}"#).unwrap();
        assert_eq!(request.hub, "chathub");
        assert_eq!(request.method, "Send");
        assert_eq!(request.arguments.get(), r#"["bob","hi"]"#);
        assert_eq!(request.id, "0");
        let no_args = HubRequest::parse(r#"{"H":"chathub","M":"Online","I":12}"#).unwrap();
        assert_eq!(no_args.arguments.get(), "[]");
        assert_eq!(no_args.id, "12");
    }

    #[test]
    fn refuses_what_is_not_an_invocation() {
        for bad in [
            "",
            "not json",
            "[]",
            r#"{"M":"Send","I":0}"#,
            r#"{"H":"chathub","I":0}"#,
            r#"{"H":"chathub","M":"Send"}"#,
            r#"{"H":"chathub","M":"Send","A":{},"I":0}"#,
            r#"{"H":"chathub","M":"Send","A":[],"I":{}}"#,
        ] {
            assert!(HubRequest::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn writes_responses_and_persistent_responses() {
        assert_eq!(hub_response("0", &Outcome::Void), r#"{"I":"0"}"#);
        assert_eq!(
            hub_response("1", &Outcome::Value("42".into())),
            r#"{"I":"1","R":42}"#
        );
        assert_eq!(
            hub_response(
                "2",
                &Outcome::Error {
                    text: "no \"way\"".into(),
                    hub_exception: true
                }
            ),
            r#"{"I":"2","E":"no \"way\"","H":true}"#
        );
        assert_eq!(
            client_invocation("ChatHub", "broadcastMessage", r#"["a","b"]"#),
            r#"{"H":"ChatHub","M":"broadcastMessage","A":["a","b"]}"#
        );
        let init = persistent_response(
            "x:0",
            std::iter::empty(),
            Flags {
                initialized: true,
                ..Flags::default()
            },
        );
        assert_eq!(init, br#"{"C":"x:0","S":1,"M":[]}"#);
        let two = persistent_response("x:2", [&b"{}"[..], b"[1]"], Flags::default());
        assert_eq!(two, br#"{"C":"x:2","M":[{},[1]]}"#);
    }
}
