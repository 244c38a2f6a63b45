//! SignalR 2 as a [`HubProtocol`], so the registry encodes a fan-out for 2.x connections once
//! and shares the bytes, as it does for Core's protocols.
//!
//! A 2.x client method call names its hub (`{"H":"ChatHub",…}`), so there is one protocol
//! value per hub, made once per legacy name and kept for the life of the process (hubs are
//! few, and the registry holds protocols as `&'static`).

use std::collections::HashMap;
use std::sync::OnceLock;

use bytes::BytesMut;
use parking_lot::Mutex;

use super::message::{self, HubRequest, Outcome};
use crate::protocol::{
    ClientMessage, Completion, Frame, HubProtocol, ProtocolError, ServerMessage, TransferFormat,
};

/// The SignalR 2 encoding of one hub's messages.
#[derive(Debug)]
pub struct Signalr2Protocol {
    /// The hub's legacy name (`ChatHub`).
    hub: String,
}

impl Signalr2Protocol {
    /// The protocol of the hub with this legacy name.
    pub fn for_hub(legacy: &str) -> &'static Self {
        static PROTOCOLS: OnceLock<Mutex<HashMap<String, &'static Signalr2Protocol>>> =
            OnceLock::new();
        let mut protocols = PROTOCOLS.get_or_init(Default::default).lock();
        protocols.entry(legacy.to_owned()).or_insert_with(|| {
            Box::leak(Box::new(Self {
                hub: legacy.to_owned(),
            }))
        })
    }
}

impl HubProtocol for Signalr2Protocol {
    fn name(&self) -> &'static str {
        "signalr2"
    }

    fn transfer_format(&self) -> TransferFormat {
        TransferFormat::Text
    }

    /// One hub invocation per message (the transport delimits them: a WebSocket message, a
    /// `/send` form's `data`): the whole buffer is the message.
    fn decode(
        &self,
        buffer: &mut BytesMut,
        max_message_size: usize,
    ) -> Result<Option<ClientMessage>, ProtocolError> {
        if buffer.is_empty() {
            return Ok(None);
        }
        if buffer.len() > max_message_size {
            return Err(ProtocolError::MessageTooLarge {
                limit: max_message_size,
            });
        }
        let bytes = buffer.split();
        let text = std::str::from_utf8(&bytes).map_err(|_| ProtocolError::NotUtf8)?;
        let request = HubRequest::parse(text).map_err(|e| ProtocolError::InvalidData(e.0))?;
        Ok(Some(ClientMessage::Invocation {
            invocation_id: Some(request.id),
            target: request.method,
            arguments: request.arguments,
            stream_ids: Vec::new(),
        }))
    }

    fn encode(&self, message: &ServerMessage<'_>) -> Frame {
        Frame::text(match *message {
            // A 2.x client cannot answer a client-result question: it runs the handler and
            // the hub's wait times out, as it would for a Core client that never answers.
            ServerMessage::Invocation {
                target, arguments, ..
            } => message::client_invocation(&self.hub, target, arguments),
            // Streams and stateful reconnect are Core's; a 2.x connection never has them, and
            // `{}` is a harmless keep-alive to its client.
            ServerMessage::StreamItem { .. }
            | ServerMessage::Ack { .. }
            | ServerMessage::Sequence { .. } => "{}".to_owned(),
            ServerMessage::Completion {
                invocation_id,
                completion,
            } => message::hub_response(
                invocation_id,
                &match completion {
                    Completion::Void => Outcome::Void,
                    Completion::Result(value) => Outcome::Value(value.to_owned()),
                    Completion::Error(text) => Outcome::Error {
                        text: text.to_owned(),
                        hub_exception: false,
                    },
                },
            ),
            // Keep-alive is the empty object; a close has no message in 2.x (the connection
            // ends instead), so it is written as the fatal-error response.
            ServerMessage::Ping => "{}".to_owned(),
            ServerMessage::Close { error, .. } => format!(
                "{{\"E\":{}}}",
                serde_json::Value::String(error.unwrap_or("The connection was closed.").to_owned())
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_protocol_per_hub_names_the_hub_in_client_calls() {
        let chat = Signalr2Protocol::for_hub("ChatHub");
        assert!(std::ptr::eq(chat, Signalr2Protocol::for_hub("ChatHub")));
        let frame = chat.encode(&ServerMessage::Invocation {
            invocation_id: None,
            target: "broadcastMessage",
            arguments: r#"["a","b"]"#,
        });
        assert_eq!(
            frame.as_bytes(),
            br#"{"H":"ChatHub","M":"broadcastMessage","A":["a","b"]}"#
        );
        let mut buffer = BytesMut::from(&br#"{"H":"chathub","M":"Send","A":[1],"I":3}"#[..]);
        match chat.decode(&mut buffer, 1024) {
            Ok(Some(ClientMessage::Invocation {
                invocation_id,
                target,
                ..
            })) => {
                assert_eq!(invocation_id.as_deref(), Some("3"));
                assert_eq!(target, "Send");
            }
            other => panic!("{other:?}"),
        }
    }
}
