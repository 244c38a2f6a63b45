//! The hub protocols as loadgen speaks them: invocations out, events in. Besides ASP.NET
//! Core's two, `signalr2` is the ASP.NET SignalR 2.x protocol of `/signalr` (over WebSockets:
//! one JSON message per WebSocket message, client calls inside persistent responses).
//!
//! Only what the scenarios use: invocations with string arguments, and of what arrives, client
//! method calls (with their last argument, where senders put their clock) and completions.

use rmpv::Value;

pub(crate) const RS: u8 = 0x1e;

/// A hub protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Protocol {
    Json,
    Messagepack,
    Signalr2,
}

/// Something that arrived.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// A client method call, with its last argument when it is a string.
    Invocation {
        target: String,
        last: Option<String>,
    },
    /// The end of an invocation; `error` when it failed.
    Completion { id: String, error: Option<String> },
    /// An item of a stream the client asked for.
    StreamItem,
    /// Pings, closes, anything else.
    Other,
}

impl Protocol {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Messagepack => "messagepack",
            Self::Signalr2 => "signalr2",
        }
    }

    pub(crate) fn is_binary(self) -> bool {
        self == Self::Messagepack
    }

    /// The handshake request (JSON whatever the protocol); version 2 asks for stateful
    /// reconnect.
    pub(crate) fn handshake(self, version: u8) -> Vec<u8> {
        format!(
            "{{\"protocol\":\"{}\",\"version\":{version}}}\u{1e}",
            self.name()
        )
        .into_bytes()
    }

    /// A Ping (Core protocols).
    pub(crate) fn ping(self) -> Vec<u8> {
        match self {
            Self::Messagepack => framed(&Value::Array(vec![Value::from(6)])),
            Self::Json | Self::Signalr2 => b"{\"type\":6}\x1e".to_vec(),
        }
    }

    /// An Ack (stateful reconnect, Core protocols): the client has the host's numbered messages
    /// up to `sequence_id`.
    pub(crate) fn ack(self, sequence_id: u64) -> Vec<u8> {
        match self {
            Self::Messagepack => framed(&Value::Array(vec![
                Value::from(8),
                Value::from(sequence_id),
            ])),
            Self::Json | Self::Signalr2 => {
                format!("{{\"type\":8,\"sequenceId\":{sequence_id}}}\u{1e}").into_bytes()
            }
        }
    }

    /// A stream invocation of `target` with integer arguments.
    pub(crate) fn stream_invocation(self, id: &str, target: &str, args: &[u64]) -> Vec<u8> {
        match self {
            Self::Json => {
                let args = serde_json::to_string(args).unwrap_or_else(|_| "[]".into());
                format!(
                    "{{\"type\":4,\"invocationId\":\"{id}\",\"target\":\"{target}\",\"arguments\":{args}}}\u{1e}"
                )
                .into_bytes()
            }
            // SignalR 2 has no streams; the scenario does not run it.
            Self::Signalr2 => Vec::new(),
            Self::Messagepack => framed(&Value::Array(vec![
                Value::from(4),
                Value::Map(Vec::new()),
                Value::from(id),
                Value::from(target),
                Value::Array(args.iter().map(|a| Value::from(*a)).collect()),
            ])),
        }
    }

    /// An invocation of `target` with string arguments; without `id`, no completion comes.
    pub(crate) fn invocation(self, id: Option<&str>, target: &str, args: &[&str]) -> Vec<u8> {
        match self {
            Self::Json => {
                let args = serde_json::to_string(args).unwrap_or_else(|_| "[]".into());
                let id = id
                    .map(|id| format!("\"invocationId\":\"{id}\","))
                    .unwrap_or_default();
                format!("{{\"type\":1,{id}\"target\":\"{target}\",\"arguments\":{args}}}\u{1e}")
                    .into_bytes()
            }
            // Every 2.x invocation has an id (a number); the chat hub is the one scenarios call.
            Self::Signalr2 => {
                let args = serde_json::to_string(args).unwrap_or_else(|_| "[]".into());
                let id = id.and_then(|id| id.parse::<u64>().ok()).unwrap_or(0);
                format!("{{\"H\":\"chathub\",\"M\":\"{target}\",\"A\":{args},\"I\":{id}}}")
                    .into_bytes()
            }
            Self::Messagepack => {
                let message = Value::Array(vec![
                    Value::from(1),
                    Value::Map(Vec::new()),
                    id.map_or(Value::Nil, Value::from),
                    Value::from(target),
                    Value::Array(args.iter().map(|a| Value::from(*a)).collect()),
                ]);
                framed(&message)
            }
        }
    }
}

/// A MessagePack message with its varint length prefix.
fn framed(message: &Value) -> Vec<u8> {
    let mut body = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut body, message);
    let mut out = Vec::with_capacity(body.len() + 5);
    let mut length = body.len();
    loop {
        let byte = (length & 0x7f) as u8;
        length >>= 7;
        if length == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(&body);
    out
}

/// Splits what arrives into events; keeps a message that is not complete yet.
pub(crate) struct Decoder {
    protocol: Protocol,
    pending: Vec<u8>,
}

impl Decoder {
    pub(crate) fn new(protocol: Protocol) -> Self {
        Self {
            protocol,
            pending: Vec::new(),
        }
    }

    /// Feeds bytes; calls `event` for each complete message.
    pub(crate) fn feed(&mut self, bytes: &[u8], mut event: impl FnMut(Event)) {
        self.pending.extend_from_slice(bytes);
        let mut used = 0;
        match self.protocol {
            Protocol::Json => {
                while let Some(end) = self.pending[used..].iter().position(|&b| b == RS) {
                    event(json_event(&self.pending[used..used + end]));
                    used += end + 1;
                }
            }
            // One persistent response per WebSocket message.
            Protocol::Signalr2 => {
                signalr2_events(&self.pending, &mut event);
                used = self.pending.len();
            }
            Protocol::Messagepack => {
                while let Some((prefix, len)) = varint(&self.pending[used..]) {
                    let start = used + prefix;
                    if self.pending.len() < start + len {
                        break;
                    }
                    event(messagepack_event(&self.pending[start..start + len]));
                    used = start + len;
                }
            }
        }
        self.pending.drain(..used);
    }
}

fn varint(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut length = 0usize;
    for (i, &byte) in bytes.iter().take(5).enumerate() {
        length |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((i + 1, length));
        }
    }
    None
}

/// Reads a JSON record by looking for its fields' text: cheap, so the load generator's own CPU
/// stays small next to the host's.
fn json_event(record: &[u8]) -> Event {
    let Ok(text) = std::str::from_utf8(record) else {
        return Event::Other;
    };
    let field = |name: &str| {
        let key = format!("\"{name}\":\"");
        let start = text.find(&key)? + key.len();
        let end = text[start..].find('"')?;
        Some(text[start..start + end].to_owned())
    };
    if text.starts_with("{\"type\":1,") {
        Event::Invocation {
            target: field("target").unwrap_or_default(),
            // The last string argument: {"...","arguments":[…,"<last>"]}
            last: text.rsplit('"').nth(1).map(str::to_owned),
        }
    } else if text.starts_with("{\"type\":2,") {
        Event::StreamItem
    } else if text.starts_with("{\"type\":3,") {
        Event::Completion {
            id: field("invocationId").unwrap_or_default(),
            error: field("error"),
        }
    } else {
        Event::Other
    }
}

/// The events of a SignalR 2 message: `{"C":…,"M":[{"H":…,"M":"target","A":[…]}, {"I":"1"}]}`,
/// or a hub response on its own. Read by looking for the fields' text, as [`json_event`] does,
/// so the load generator's CPU stays small next to the host's.
fn signalr2_events(message: &[u8], event: &mut impl FnMut(Event)) {
    let Ok(text) = std::str::from_utf8(message) else {
        return event(Event::Other);
    };
    let field = |text: &str, key: &str| {
        let start = text.find(key)? + key.len();
        let end = text[start..].find('"')?;
        Some(text[start..start + end].to_owned())
    };
    let mut any = false;
    // Client calls: {"H":"ChatHub","M":"target","A":[…,"<last>"]}
    for call in text.split("{\"H\":").skip(1) {
        any = true;
        let arguments = call.find("\"A\":[").map_or("", |a| {
            let rest = &call[a..];
            &rest[..rest.find("]}").unwrap_or(rest.len())]
        });
        event(Event::Invocation {
            target: field(call, "\"M\":\"").unwrap_or_default(),
            last: arguments
                .ends_with('"')
                .then(|| arguments.rsplit('"').nth(1).map(str::to_owned))
                .flatten(),
        });
    }
    // Hub responses: {"I":"7"} or {"I":"7","E":"…"}
    for response in text.split("{\"I\":\"").skip(1) {
        any = true;
        event(Event::Completion {
            id: response[..response.find('"').unwrap_or(0)].to_owned(),
            error: field(response, "\"E\":\""),
        });
    }
    if !any {
        event(Event::Other);
    }
}

fn messagepack_event(message: &[u8]) -> Event {
    let Ok(Value::Array(items)) = rmpv::decode::read_value(&mut &message[..]) else {
        return Event::Other;
    };
    let text = |i: usize| items.get(i).and_then(Value::as_str).map(str::to_owned);
    match items.first().and_then(Value::as_i64) {
        Some(1) => Event::Invocation {
            target: text(3).unwrap_or_default(),
            last: items
                .get(4)
                .and_then(Value::as_array)
                .and_then(|args| args.last())
                .and_then(Value::as_str)
                .map(str::to_owned),
        },
        Some(2) => Event::StreamItem,
        Some(3) => Event::Completion {
            id: text(2).unwrap_or_default(),
            error: (items.get(3).and_then(Value::as_i64) == Some(1))
                .then(|| text(4))
                .flatten(),
        },
        _ => Event::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(protocol: Protocol) {
        // What the server writes for a call of `m("a", "b")`, as each protocol encodes it.
        let server = match protocol {
            Protocol::Json => br#"{"type":1,"target":"m","arguments":["a","b"]}"#.to_vec(),
            Protocol::Messagepack => {
                let mut v = vec![0x0c, 0x96, 0x01, 0x80, 0xc0, 0xa1, b'm', 0x92];
                v.extend_from_slice(&[0xa1, b'a', 0xa1, b'b', 0x90]);
                v
            }
            Protocol::Signalr2 => {
                br#"{"C":"x:1","M":[{"H":"ChatHub","M":"m","A":["a","b"]}]}"#.to_vec()
            }
        };
        let mut bytes = server.clone();
        if protocol == Protocol::Json {
            bytes.push(RS);
        }
        let mut decoder = Decoder::new(protocol);
        let mut events = Vec::new();
        if protocol == Protocol::Signalr2 {
            // WebSocket messages arrive whole.
            decoder.feed(&bytes, |e| events.push(e));
        } else {
            // Byte by byte: messages split anywhere still decode once complete.
            for byte in &bytes {
                decoder.feed(&[*byte], |e| events.push(e));
            }
        }
        assert_eq!(
            events,
            [Event::Invocation {
                target: "m".into(),
                last: Some("b".into())
            }]
        );
        let invocation = protocol.invocation(Some("1"), "Echo", &["x"]);
        assert!(!invocation.is_empty());
    }

    #[test]
    fn decodes_every_protocol() {
        round_trip(Protocol::Json);
        round_trip(Protocol::Messagepack);
        round_trip(Protocol::Signalr2);
        let mut events = Vec::new();
        Decoder::new(Protocol::Signalr2).feed(br#"{"C":"x:2","M":[{"I":"7","E":"no"}]}"#, |e| {
            events.push(e)
        });
        assert_eq!(
            events,
            [Event::Completion {
                id: "7".into(),
                error: Some("no".into())
            }]
        );
    }
}
