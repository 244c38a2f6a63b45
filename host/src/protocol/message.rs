//! Hub messages, independent of their encoding.

use serde_json::value::RawValue;

/// A message from a client. Fields the server does not use are dropped.
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
    /// Type 1 whose arguments could not be read (MessagePack): answered with an error
    /// completion, as ASP.NET answers a binding failure; the connection stays open.
    BindingFailure {
        invocation_id: Option<String>,
        target: String,
        /// What was wrong, ASP.NET's text.
        error: String,
    },
    /// Type 4: call a streaming hub method.
    StreamInvocation {
        invocation_id: String,
        target: String,
        /// The JSON array of arguments.
        arguments: Box<RawValue>,
        /// Client-to-server streams.
        stream_ids: Vec<String>,
    },
    /// Type 2: an item of a client-to-server stream (`invocation_id` is the stream's id).
    StreamItem {
        invocation_id: String,
        /// The item as JSON, or why it could not be read (MessagePack that has no JSON form).
        item: Result<Box<RawValue>, String>,
    },
    /// Type 3: the end of a client-to-server stream, or the result of a server-to-client
    /// invocation.
    Completion {
        invocation_id: String,
        /// The client's error text, if it failed.
        error: Option<String>,
        /// Its result as JSON, if it has one.
        result: Option<Box<RawValue>>,
    },
    /// Type 5: the client gives up on a stream invocation.
    CancelInvocation { invocation_id: String },
    /// Type 6: keep-alive.
    Ping,
    /// Type 7: the client is closing.
    Close { error: Option<String> },
    /// Type 8 (stateful reconnect): the client received every numbered message up to
    /// `sequence_id`, so the server may forget them.
    Ack { sequence_id: u64 },
    /// Type 9 (stateful reconnect): after a resume, the id of the first numbered message the
    /// client sends (again) from here on.
    Sequence { sequence_id: u64 },
    /// A type this server does not know; ignored, as the protocol asks for forward compatibility.
    Unknown(u64),
}

/// A message to a client. Borrowed: the caller keeps the data, the protocol encodes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerMessage<'a> {
    /// Type 1: call a client method; with an invocation id the client answers with a
    /// Completion (a client result). `arguments` is a JSON array.
    Invocation {
        invocation_id: Option<&'a str>,
        target: &'a str,
        arguments: &'a str,
    },
    /// Type 2: an item of a stream the client asked for; `item` is one JSON value.
    StreamItem {
        invocation_id: &'a str,
        item: &'a str,
    },
    /// Type 3: the end of a client's invocation.
    Completion {
        invocation_id: &'a str,
        completion: Completion<'a>,
    },
    /// Type 6: keep-alive.
    Ping,
    /// Type 7: the server is closing the connection; `allow_reconnect` lets the client's
    /// automatic reconnect run.
    Close {
        error: Option<&'a str>,
        allow_reconnect: bool,
    },
    /// Type 8 (stateful reconnect): the server received every numbered message up to
    /// `sequence_id`.
    Ack { sequence_id: u64 },
    /// Type 9 (stateful reconnect): on a resume, the id of the first numbered message the
    /// server sends (again) from here on.
    Sequence { sequence_id: u64 },
}

impl ClientMessage {
    /// Whether the message is numbered by stateful reconnect (types 1 to 5).
    pub fn is_sequenced(&self) -> bool {
        matches!(
            self,
            Self::Invocation { .. }
                | Self::BindingFailure { .. }
                | Self::StreamItem { .. }
                | Self::Completion { .. }
                | Self::StreamInvocation { .. }
                | Self::CancelInvocation { .. }
        )
    }
}

/// How an invocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion<'a> {
    /// A void method returned.
    Void,
    /// A method returned this JSON value.
    Result(&'a str),
    /// The invocation failed with this text.
    Error(&'a str),
}
