//! Transports: how a connection's messages travel. Each turns its wire into the session's
//! stream of incoming messages and sink of outgoing frames, and hands both to
//! [`session::serve`](crate::session::serve).
//!
//! - [`websocket`]: one WebSocket per connection, a SignalR message per WebSocket message
//!   (several, when frames were queued together).
//! - [`sse`]: Server-Sent Events down (a streamed response of `data:` lines), POSTs up.
//! - [`long_polling`]: polls down (each answered with what was queued, or after the poll
//!   timeout), POSTs up, DELETE to end.
//!
//! [`connections`] keeps the negotiated connections by token and which transport each took;
//! [`inbox`] carries POSTed messages to a session.

pub mod connections;
pub mod inbox;
pub mod long_polling;
mod pipe;
pub mod sse;
pub mod websocket;

pub use pipe::Abandoned;

use std::fmt;
use std::str::FromStr;

use crate::session::TransportFeatures;

/// One of the transports of SignalR's HTTP connection protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    WebSockets,
    ServerSentEvents,
    LongPolling,
}

impl Transport {
    /// Every transport, in the order negotiate lists them (the client tries them in it).
    pub const ALL: [Transport; 3] = [
        Transport::WebSockets,
        Transport::ServerSentEvents,
        Transport::LongPolling,
    ];

    /// The name in negotiate and in ASP.NET's texts.
    pub fn name(self) -> &'static str {
        match self {
            Transport::WebSockets => "WebSockets",
            Transport::ServerSentEvents => "ServerSentEvents",
            Transport::LongPolling => "LongPolling",
        }
    }

    /// The transfer formats negotiate advertises: Server-Sent Events carry text only.
    pub fn transfer_formats(self) -> &'static [&'static str] {
        match self {
            Transport::ServerSentEvents => &["Text"],
            Transport::WebSockets | Transport::LongPolling => &["Text", "Binary"],
        }
    }

    /// What the session needs to know of it.
    pub fn features(self) -> TransportFeatures {
        match self {
            Transport::WebSockets => TransportFeatures::WEBSOCKETS,
            Transport::ServerSentEvents => TransportFeatures::SERVER_SENT_EVENTS,
            Transport::LongPolling => TransportFeatures::LONG_POLLING,
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `websockets`, `sse` or `longpolling` (the names of `--transports`; ASP.NET's names and
/// `ws`, `serversentevents`, `long-polling`, `lp` are read too).
impl FromStr for Transport {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let name = text.trim().to_ascii_lowercase().replace(['-', '_'], "");
        match name.as_str() {
            "websockets" | "websocket" | "ws" => Ok(Transport::WebSockets),
            "sse" | "serversentevents" => Ok(Transport::ServerSentEvents),
            "longpolling" | "lp" => Ok(Transport::LongPolling),
            _ => Err(format!(
                "'{text}' is not a transport (websockets, sse, longpolling)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports_are_read_by_any_usual_name() {
        for (text, transport) in [
            ("websockets", Transport::WebSockets),
            ("WebSockets", Transport::WebSockets),
            ("sse", Transport::ServerSentEvents),
            ("ServerSentEvents", Transport::ServerSentEvents),
            ("long-polling", Transport::LongPolling),
            ("LongPolling", Transport::LongPolling),
        ] {
            assert_eq!(text.parse::<Transport>(), Ok(transport));
        }
        assert!("carrier-pigeon".parse::<Transport>().is_err());
    }
}
