//! The hub protocol: what the bytes of a connection mean, in both directions.
//!
//! A [`HubProtocol`] is one encoding of SignalR's hub messages ([`json`], [`messagepack`]). The
//! session reads the client's [`handshake`], holds the protocol it chose, decodes what the client
//! sends into [`ClientMessage`]s with it, and has it encode [`ServerMessage`]s into [`Frame`]s. A
//! fan-out is encoded once per protocol its recipients use, and the frame is shared.
//!
//! The wire formats are specified in dotnet/aspnetcore's `src/SignalR/docs/specs/HubProtocol.md`.

mod frame;
pub mod handshake;
pub mod json;
mod message;
pub mod messagepack;

use bytes::BytesMut;

pub use frame::{Frame, TransferFormat};
pub use message::{ClientMessage, Completion, ServerMessage};

/// One encoding of the hub protocol. Stateless: a connection's undecoded bytes live in the
/// session's buffer, so one protocol value serves every connection.
pub trait HubProtocol: Send + Sync + 'static {
    /// The name clients ask for in the handshake (`json`).
    fn name(&self) -> &'static str;

    /// Whether frames are text or binary.
    fn transfer_format(&self) -> TransferFormat;

    /// Takes the next complete message from `buffer`, or `None` until more bytes arrive. A
    /// message (or an unfinished one) longer than `max_message_size` is an error.
    fn decode(
        &self,
        buffer: &mut BytesMut,
        max_message_size: usize,
    ) -> Result<Option<ClientMessage>, ProtocolError>;

    /// Encodes one message as a frame (ending as the protocol ends messages, so frames can be
    /// joined into one transport message).
    fn encode(&self, message: &ServerMessage<'_>) -> Frame;
}

impl std::fmt::Debug for dyn HubProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
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
    /// Malformed input of a binary protocol; the text says what, as ASP.NET's does.
    #[error("{0}")]
    InvalidData(String),
    /// A binary message that ends before the values it announces (MessagePack-CSharp's
    /// `EndOfStreamException`, which ASP.NET passes on unwrapped).
    #[error("Attempted to read past the end of the stream.")]
    EndOfStream,
    /// A MessagePack value of the wrong kind where ASP.NET does not wrap the library's
    /// `MessagePackSerializationException` (the message's array, stream ids).
    #[error("{0}")]
    MessagePack(String),
}

impl ProtocolError {
    /// The .NET exception ASP.NET Core reports this error as, in `Close` messages.
    pub fn exception(&self) -> &'static str {
        match self {
            Self::EndOfStream => "EndOfStreamException",
            Self::MessagePack(_) => "MessagePackSerializationException",
            _ => "InvalidDataException",
        }
    }
}
