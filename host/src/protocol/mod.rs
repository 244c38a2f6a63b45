//! The SignalR hub protocol: JSON messages separated by the record separator `0x1E`.
//!
//! [`framing`] splits bytes into records, [`handshake`] reads the first record, and [`json`]
//! turns records into [`ClientMessage`]s and builds the server's frames.
//! The wire format is specified in dotnet/aspnetcore's `src/SignalR/docs/specs/HubProtocol.md`.

pub mod framing;
pub mod handshake;
pub mod json;

use serde_json::value::RawValue;

/// Ends every message of the JSON protocol (and the handshake).
pub const RECORD_SEPARATOR: u8 = 0x1e;

/// A message from a client, decoded from one record. Fields the server does not use are dropped.
#[derive(Debug)]
pub enum ClientMessage {
    /// Type 1: call a hub method; without an id the caller wants no completion.
    Invocation {
        invocation_id: Option<String>,
        target: String,
        /// The JSON array of arguments, passed to the hub as it came.
        arguments: Box<RawValue>,
        /// Client-to-server streams; not supported by hubs yet.
        stream_ids: Vec<String>,
    },
    /// Type 4: call a streaming hub method.
    StreamInvocation {
        invocation_id: String,
        target: String,
    },
    /// Type 2: an item of a client-to-server stream.
    StreamItem { invocation_id: String },
    /// Type 3: the result of a server-to-client invocation.
    Completion { invocation_id: String },
    /// Type 5: the client gives up on a stream invocation.
    CancelInvocation { invocation_id: String },
    /// Type 6: keep-alive.
    Ping,
    /// Type 7: the client is closing.
    Close { error: Option<String> },
    /// Types 8 and 9: stateful reconnect bookkeeping (not negotiated by this server).
    AckOrSequence,
    /// A type this server does not know; ignored, as the protocol asks for forward compatibility.
    Unknown(u64),
}

/// Why the bytes a client sent are not a valid message. The text is what ASP.NET Core puts in
/// its `InvalidDataException`, and the client receives it in the `Close` message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error(
        "The maximum message size of {limit}B was exceeded. The message size can be configured with --max-message-size."
    )]
    MessageTooLarge { limit: usize },
    #[error("Error reading JSON: {0}")]
    InvalidJson(String),
    #[error("Missing required property '{0}'.")]
    MissingProperty(&'static str),
    #[error("Expected '{property}' to be of type {expected}.")]
    WrongType {
        property: &'static str,
        expected: &'static str,
    },
    #[error("Messages must be UTF-8 text.")]
    NotUtf8,
}
