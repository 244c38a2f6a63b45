//! The MessagePack hub protocol: each message is a varint length (7 bits a byte, low bits
//! first, at most 5 bytes) followed by one MessagePack array. Several may share a transport
//! message; frames are binary.
//!
//! Hubs work in JSON: arguments are transcoded from MessagePack on the way in ([`read`]) and to
//! MessagePack on the way out ([`write`]), once per fan-out like any encoding.

mod read;
mod write;

use bytes::{Buf, BytesMut};
use serde_json::value::RawValue;

use super::{
    ClientMessage, Completion, Frame, HubProtocol, ProtocolError, ServerMessage, TransferFormat,
};
use read::Reader;
use write::{Out, length_prefix};

/// The MessagePack hub protocol.
#[derive(Debug, Clone, Copy, Default)]
pub struct MessagePackProtocol;

/// The one instance sessions share.
pub static MESSAGEPACK: MessagePackProtocol = MessagePackProtocol;

/// A varint of 5 bytes holds at most 35 bits; lengths past 2 GiB are refused, as ASP.NET does.
const MAX_LENGTH_BYTES: usize = 5;
const MAX_LENGTH: u64 = i32::MAX as u64;

/// The keep-alive frame: length 2, then `[6]`.
const PING: &[u8] = &[0x02, 0x91, 0x06];

impl HubProtocol for MessagePackProtocol {
    fn name(&self) -> &'static str {
        "messagepack"
    }

    fn transfer_format(&self) -> TransferFormat {
        TransferFormat::Binary
    }

    fn decode(
        &self,
        buffer: &mut BytesMut,
        max_message_size: usize,
    ) -> Result<Option<ClientMessage>, ProtocolError> {
        let Some((prefix, len)) = read_length(buffer)? else {
            return Ok(None);
        };
        if len > max_message_size {
            return Err(ProtocolError::MessageTooLarge {
                limit: max_message_size,
            });
        }
        if buffer.len() < prefix + len {
            return Ok(None);
        }
        buffer.advance(prefix);
        let message = buffer.split_to(len);
        decode(&message).map(Some)
    }

    fn encode(&self, message: &ServerMessage<'_>) -> Frame {
        if let ServerMessage::Ping = message {
            return Frame::binary(bytes::Bytes::from_static(PING));
        }
        let body = encode(message);
        let mut framed = Vec::with_capacity(body.len() + MAX_LENGTH_BYTES);
        length_prefix(body.len(), &mut framed);
        framed.extend_from_slice(&body);
        Frame::binary(framed)
    }
}

/// The length prefix at the start of `buffer`: `(prefix bytes, message length)`, or `None`
/// until it is complete.
fn read_length(buffer: &[u8]) -> Result<Option<(usize, usize)>, ProtocolError> {
    let mut length = 0u64;
    for (i, &byte) in buffer.iter().take(MAX_LENGTH_BYTES).enumerate() {
        length |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if length > MAX_LENGTH {
                return Err(ProtocolError::InvalidData(
                    "Messages over 2GB in size are not supported.".into(),
                ));
            }
            return Ok(Some((i + 1, length as usize)));
        }
    }
    if buffer.len() >= MAX_LENGTH_BYTES {
        return Err(ProtocolError::InvalidData(
            "Messages over 2GB in size are not supported.".into(),
        ));
    }
    Ok(None)
}

/// Decodes one message (without its length prefix), reading the fields in ASP.NET's order
/// with its texts: a message with fewer elements than its type needs fails on the first one
/// missing, since the message ends there.
fn decode(message: &[u8]) -> Result<ClientMessage, ProtocolError> {
    let mut r = Reader::new(message);
    let count = r.message_len()?;
    let kind = r.int("messageType")?;
    let id = |r: &mut Reader<'_>, message: &str| {
        r.required_string(
            "invocationId",
            &format!("invocation ID for {message} message"),
        )
    };
    let message = match kind {
        1 => {
            r.headers()?;
            // An empty id is no id, as ASP.NET reads it.
            let invocation_id = r
                .optional_string("invocationId")?
                .filter(|id| !id.is_empty());
            let target = r.required_string("target", "target for Invocation message")?;
            let (arguments, stream_ids) = match invocation_tail(&mut r, count)? {
                Ok(tail) => tail,
                Err(error) => {
                    return Ok(ClientMessage::BindingFailure {
                        invocation_id,
                        target,
                        error,
                    });
                }
            };
            ClientMessage::Invocation {
                invocation_id,
                target,
                arguments,
                stream_ids,
            }
        }
        2 => {
            r.headers()?;
            let invocation_id = id(&mut r, "StreamItem")?;
            let mut json = String::new();
            let item = match r.json(&mut json, 0) {
                Ok(()) => RawValue::from_string(json).map_err(|e| e.to_string()),
                Err(error) => Err(error.to_string()),
            };
            ClientMessage::StreamItem {
                invocation_id,
                item,
            }
        }
        3 => {
            r.headers()?;
            let invocation_id = id(&mut r, "Completion")?;
            let (error, result) = match r.int("resultKind")? {
                1 => (r.optional_string("error")?, None),
                2 => (None, None),
                3 => {
                    let mut json = String::new();
                    r.json(&mut json, 0)?;
                    let result = RawValue::from_string(json)
                        .map_err(|e| ProtocolError::InvalidData(e.to_string()))?;
                    (None, Some(result))
                }
                _ => {
                    return Err(ProtocolError::InvalidData(
                        "Invalid invocation result kind.".into(),
                    ));
                }
            };
            ClientMessage::Completion {
                invocation_id,
                error,
                result,
            }
        }
        4 => {
            r.headers()?;
            let invocation_id = id(&mut r, "StreamInvocation")?;
            let target = r.required_string("target", "target for StreamInvocation message")?;
            let (arguments, stream_ids) = match invocation_tail(&mut r, count)? {
                Ok(tail) => tail,
                Err(error) => {
                    return Ok(ClientMessage::BindingFailure {
                        invocation_id: Some(invocation_id),
                        target,
                        error,
                    });
                }
            };
            ClientMessage::StreamInvocation {
                invocation_id,
                target,
                arguments,
                stream_ids,
            }
        }
        5 => {
            r.headers()?;
            ClientMessage::CancelInvocation {
                invocation_id: id(&mut r, "CancelInvocation")?,
            }
        }
        6 => ClientMessage::Ping,
        7 => {
            let error = r.optional_string("error")?;
            if count > 2 {
                r.bool("allowReconnect")?;
            }
            ClientMessage::Close { error }
        }
        8 | 9 => {
            // .NET reads a long; a negative id names nothing sent, like 0.
            let sequence_id = u64::try_from(r.long("sequenceId")?).unwrap_or(0);
            if kind == 8 {
                ClientMessage::Ack { sequence_id }
            } else {
                ClientMessage::Sequence { sequence_id }
            }
        }
        // Future message types: ignored, as the protocol asks.
        other => ClientMessage::Unknown(other.unsigned_abs()),
    };
    Ok(message)
}

/// An invocation's arguments, as the JSON array hubs receive; or, when they cannot be read,
/// ASP.NET's text for the binding failure.
/// An invocation's arguments (as JSON) and stream ids, or why the arguments cannot be read.
type Tail = Result<(Box<RawValue>, Vec<String>), String>;

/// The arguments and stream ids that end an invocation (plain or streaming); `Ok(Err(text))` when
/// the arguments cannot be read, which ASP.NET answers as a binding failure.
fn invocation_tail(r: &mut Reader<'_>, count: usize) -> Result<Tail, ProtocolError> {
    let arguments = match arguments(r) {
        Ok(arguments) => arguments,
        Err(error) => return Ok(Err(error)),
    };
    let stream_ids = if count > 5 {
        r.stream_ids()?
    } else {
        Vec::new()
    };
    Ok(Ok((arguments, stream_ids)))
}

fn arguments(r: &mut Reader<'_>) -> Result<Box<RawValue>, String> {
    let count = r.array_len("arguments").map_err(|e| e.to_string())?;
    let mut json = String::from("[");
    for i in 0..count {
        if i > 0 {
            json.push(',');
        }
        r.json(&mut json, 1).map_err(|_| {
            format!(
                "Error binding argument {}. Make sure that the types of the provided values match the types of the hub method being invoked.",
                i + 1
            )
        })?;
    }
    json.push(']');
    RawValue::from_string(json).map_err(|e| e.to_string())
}

/// One message as MessagePack, without its length prefix.
fn encode(message: &ServerMessage<'_>) -> Vec<u8> {
    let mut out = Out::new();
    match *message {
        ServerMessage::Invocation {
            invocation_id,
            target,
            arguments,
        } => {
            // Six elements, the last the (empty) stream ids, as ASP.NET writes it.
            out.array(6);
            out.uint(1);
            out.map(0);
            match invocation_id {
                Some(id) => out.str(id),
                None => out.nil(),
            }
            out.str(target);
            out.json_text(arguments);
            out.array(0);
        }
        ServerMessage::StreamItem {
            invocation_id,
            item,
        } => {
            out.array(4);
            out.uint(2);
            out.map(0);
            out.str(invocation_id);
            out.json_text(item);
        }
        ServerMessage::Completion {
            invocation_id,
            completion,
        } => {
            let has_value = !matches!(completion, Completion::Void);
            out.array(if has_value { 5 } else { 4 });
            out.uint(3);
            out.map(0);
            out.str(invocation_id);
            match completion {
                Completion::Error(error) => {
                    out.uint(1);
                    out.str(error);
                }
                Completion::Void => out.uint(2),
                Completion::Result(result) => {
                    out.uint(3);
                    out.json_text(result);
                }
            }
        }
        ServerMessage::Ping => {
            out.array(1);
            out.uint(6);
        }
        ServerMessage::Close {
            error,
            allow_reconnect,
        } => {
            out.array(3);
            out.uint(7);
            match error.filter(|e| !e.is_empty()) {
                Some(error) => out.str(error),
                None => out.nil(),
            }
            out.bool(allow_reconnect);
        }
        ServerMessage::Ack { sequence_id } => {
            out.array(2);
            out.uint(8);
            out.uint(sequence_id);
        }
        ServerMessage::Sequence { sequence_id } => {
            out.array(2);
            out.uint(9);
            out.uint(sequence_id);
        }
    }
    out.into_vec()
}

#[cfg(test)]
mod tests;
