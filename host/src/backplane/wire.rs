//! What servers tell each other through Redis: one tagged enum ([`WireMessage`]), encoded
//! compactly with postcard behind a version byte and a header naming the sending server and the
//! packet's sequence number.
//!
//! The header makes delivery exactly-once: a server ignores its own packets (it delivered to its
//! own clients when it published), and a packet whose sequence number is not above the last one
//! seen from its sender is a duplicate (a publish retried after a partial failure) and is
//! dropped. Packets of the previous format (version 1, no header) are still read.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::types::{Answered, Claim, Envelope, GroupChange, Handover, HubName, Offer, Question};

/// The format version written first in every payload.
const VERSION: u8 = 2;
/// The format without a header, written by earlier hosts.
const VERSION_1: u8 = 1;

/// A message between servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireMessage {
    /// A send to deliver to local recipients.
    Send(Envelope),
    /// A group change for a connection that lives on whichever server holds it; that server
    /// acknowledges on `reply_to`'s ack channel.
    GroupCommand {
        id: u64,
        reply_to: String,
        change: GroupChange,
    },
    /// A group command was carried out.
    Ack { id: u64 },
    /// A hub asks a connection for a result; on that connection's channel. (Variants are
    /// appended: postcard numbers them, and older hosts ignore what they cannot read.)
    Ask(Question),
    /// The answer to an [`WireMessage::Ask`], on the asking server's return channel.
    Answer(Answered),
    /// A server asks for a connection to move to it (stateful reconnect); on the internal
    /// channel every server reads. See [`crate::types::Claim`].
    Claim(Claim),
    /// The holder's answer to a claim, on the claimant's return channel.
    Offer(Offer),
    /// Cuts the backplane's order in two for a moving connection; on its channel.
    Marker {
        hub: HubName,
        connection: String,
        claim: u64,
    },
    /// What the client has not acknowledged, on the claimant's return channel.
    Handover(Handover),
    /// A connection about to move takes its server's own sends from the backplane from here
    /// on; on its channel, read only by that server.
    Switched { hub: HubName, connection: String },
    /// A server holds the connection a claim asks for (its offer follows); on the claimant's
    /// return channel.
    Held { claim: u64 },
}

/// Who sent a packet, and its place in that sender's sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The sending server's random id.
    pub origin: u64,
    /// Increases by one with every packet the sender publishes, in publish order.
    pub seq: u64,
}

/// Why a payload could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("empty payload")]
    Empty,
    #[error("unknown format version {0}")]
    Version(u8),
    #[error("malformed payload: {0}")]
    Malformed(#[from] postcard::Error),
}

impl WireMessage {
    /// The hub whose log keeps this message under durable reconnect: what can make a frame for
    /// a connection (a send, a client result's question) and the markers that cut the log.
    pub fn logged_hub(&self) -> Option<&HubName> {
        match self {
            Self::Send(envelope) => Some(&envelope.hub),
            Self::Ask(question) => Some(&question.hub),
            Self::Marker { hub, .. } => Some(hub),
            _ => None,
        }
    }

    /// The message without version and header: what [`packet`] wraps.
    pub fn encode_body(&self) -> Result<Bytes, WireError> {
        Ok(Bytes::from(postcard::to_stdvec(self)?))
    }
}

/// A payload: the version, the header, then a body from [`WireMessage::encode_body`].
pub fn packet(header: Header, body: &[u8]) -> Result<Bytes, WireError> {
    let mut out = Vec::with_capacity(1 + 20 + body.len());
    out.push(VERSION);
    let mut out = postcard::to_extend(&header, out)?;
    out.extend_from_slice(body);
    Ok(Bytes::from(out))
}

/// A received payload's header (`None` for version 1, which had none) and the rest of it, to be
/// read with [`decode_body`] once the header says it is wanted.
pub fn split(payload: &[u8]) -> Result<(Option<Header>, &[u8]), WireError> {
    match payload.split_first() {
        None => Err(WireError::Empty),
        Some((&VERSION, rest)) => {
            let (header, body) = postcard::take_from_bytes::<Header>(rest)?;
            Ok((Some(header), body))
        }
        Some((&VERSION_1, rest)) => Ok((None, rest)),
        Some((&other, _)) => Err(WireError::Version(other)),
    }
}

/// The message of a payload's body.
pub fn decode_body(body: &[u8]) -> Result<WireMessage, WireError> {
    Ok(postcard::from_bytes(body)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{HubName, Target};

    fn decode(payload: &[u8]) -> (Option<Header>, WireMessage) {
        let (header, body) = split(payload).expect("header");
        (header, decode_body(body).expect("body"))
    }

    #[test]
    fn round_trips_every_kind() {
        let messages = [
            WireMessage::Send(Envelope {
                hub: HubName::new("chat"),
                target: Target::GroupExcept {
                    group: "g".into(),
                    excluded: vec!["c1".into()],
                },
                method: "broadcastMessage".into(),
                arguments: r#"["ana","hi"]"#.into(),
            }),
            WireMessage::GroupCommand {
                id: 7,
                reply_to: "server-1".into(),
                change: GroupChange::Add {
                    hub: HubName::new("chat"),
                    connection: "c2".into(),
                    group: "g".into(),
                },
            },
            WireMessage::Ack { id: 7 },
            WireMessage::Claim(Claim {
                hub: HubName::new("chat"),
                token: "t".into(),
                id: 9,
                claimant: "server-2".into(),
                user: Some("ana".into()),
            }),
            WireMessage::Offer(Offer {
                claim: 9,
                connection: "c1".into(),
                user: Some("ana".into()),
                protocol: "json".into(),
                groups: vec!["g".into()],
                received: 4,
            }),
            WireMessage::Marker {
                hub: HubName::new("chat"),
                connection: "c1".into(),
                claim: 9,
            },
            WireMessage::Handover(Handover {
                claim: 9,
                first: 3,
                frames: vec![b"{}\x1e".to_vec()],
                groups: vec![],
                questions: vec!["s.1".into()],
            }),
            WireMessage::Switched {
                hub: HubName::new("chat"),
                connection: "c1".into(),
            },
            WireMessage::Held { claim: 9 },
        ];
        let header = Header {
            origin: u64::MAX - 3,
            seq: 42,
        };
        for message in messages {
            let body = message.encode_body().expect("encodes");
            let payload = packet(header, &body).expect("packet");
            assert_eq!(decode(&payload), (Some(header), message));
        }
    }

    #[test]
    fn reads_the_previous_format() {
        let message = WireMessage::Ack { id: 3 };
        let mut v1 = vec![VERSION_1];
        v1.extend(postcard::to_stdvec(&message).expect("encodes"));
        assert_eq!(decode(&v1), (None, message));
    }

    #[test]
    fn envelopes_are_compact() {
        let body = WireMessage::Send(Envelope {
            hub: HubName::new("chat"),
            target: Target::All,
            method: "m".into(),
            arguments: "[1]".into(),
        })
        .encode_body()
        .expect("encodes");
        let payload = packet(
            Header {
                origin: u64::MAX,
                seq: 1,
            },
            &body,
        )
        .expect("packet");
        // version, origin (10 bytes at most), seq, then tag, hub, target, method, arguments.
        assert!(payload.len() <= 28, "{} bytes", payload.len());
    }

    #[test]
    fn rejects_other_versions_and_garbage() {
        assert!(matches!(split(&[]), Err(WireError::Empty)));
        assert!(matches!(split(&[9, 1, 2]), Err(WireError::Version(9))));
        assert!(matches!(
            split(&[VERSION, 0xff]),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(
            decode_body(&[200, 200, 200]),
            Err(WireError::Malformed(_))
        ));
    }
}
