//! What servers tell each other through Redis: one tagged enum, encoded compactly with postcard
//! behind a version byte so a future format can be told apart.

use serde::{Deserialize, Serialize};

use super::GroupChange;
use crate::router::Envelope;

/// The format version written first in every payload.
const VERSION: u8 = 1;

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
}

/// Why a payload could not be read.
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
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let mut out = vec![VERSION];
        out.extend(postcard::to_stdvec(self)?);
        Ok(out)
    }

    pub fn decode(payload: &[u8]) -> Result<Self, WireError> {
        match payload.split_first() {
            None => Err(WireError::Empty),
            Some((&VERSION, rest)) => Ok(postcard::from_bytes(rest)?),
            Some((&other, _)) => Err(WireError::Version(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::{HubName, Target};

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
        ];
        for message in messages {
            let bytes = message.encode().expect("encodes");
            assert_eq!(WireMessage::decode(&bytes).expect("decodes"), message);
        }
    }

    #[test]
    fn envelopes_are_compact() {
        let bytes = WireMessage::Send(Envelope {
            hub: HubName::new("chat"),
            target: Target::All,
            method: "m".into(),
            arguments: "[1]".into(),
        })
        .encode()
        .expect("encodes");
        // version, tag, hub, target, method, arguments: a handful of bytes of framing.
        assert!(bytes.len() <= 16, "{} bytes", bytes.len());
    }

    #[test]
    fn rejects_other_versions_and_garbage() {
        assert!(matches!(WireMessage::decode(&[]), Err(WireError::Empty)));
        assert!(matches!(
            WireMessage::decode(&[9, 1, 2]),
            Err(WireError::Version(9))
        ));
        assert!(matches!(
            WireMessage::decode(&[VERSION, 200, 200, 200]),
            Err(WireError::Malformed(_))
        ));
    }
}
