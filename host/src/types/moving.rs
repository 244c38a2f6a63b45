//! What servers tell each other when a connection moves from one to another: a client of
//! stateful reconnect came back through a load balancer to a server that does not hold its
//! connection.
//!
//! The new server (the claimant) publishes a [`Claim`] for the connection token to every
//! server. The holder stops the connection and answers with an [`Offer`]: who the connection
//! is, its groups, how many of the client's messages it handled. The claimant registers the
//! connection (taking nothing yet), subscribes to its channels, and publishes a marker on the
//! connection's channel. Both servers see every send in the backplane's one order, and the
//! marker cuts it: what came before is the old server's to keep for the client, what comes after
//! is the new one's. At the marker the old server hands the client's unacknowledged messages
//! over ([`Handover`]) and lets the connection go; the new one replays them, then what came
//! after the marker.

use serde::{Deserialize, Serialize};

use super::HubName;

/// A server asks for the connection holding `token`, to take it over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub hub: HubName,
    pub token: String,
    /// Random; names the claim in every later message.
    pub id: u64,
    /// The claiming server (whose return channel gets the answers).
    pub claimant: String,
    /// Who presented the token: a connection moves only to its own user.
    pub user: Option<String>,
}

/// The holder's answer to a [`Claim`]: the connection, stopped and waiting for the marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    pub claim: u64,
    pub connection: String,
    pub user: Option<String>,
    /// The hub protocol's name (`json`, `messagepack`).
    pub protocol: String,
    pub groups: Vec<String>,
    /// The newest of the client's numbered messages that the holder handled.
    pub received: u64,
}

/// The holder reached the marker: the messages the client has not acknowledged (encoded in
/// its protocol, numbered from `first`), its groups at the marker, and the client results it
/// was asked for and has not answered (their invocation ids), which it may answer on its new
/// server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handover {
    pub claim: u64,
    pub first: u64,
    pub frames: Vec<Vec<u8>>,
    pub groups: Vec<String>,
    pub questions: Vec<String>,
}

/// What a server holding a connection is asked by a [`Claim`]: stop it, and answer the
/// claimant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveOrder {
    pub claim: u64,
    pub claimant: String,
    /// Who presented the token (the connection stays put for anyone but its user).
    pub user: Option<String>,
}

/// A place in a hub's log (durable reconnect): every packet published on a hub's channels is
/// also appended to the hub's log, in the order subscribers receive them, so a place in it is a
/// place in what every server delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogPos {
    /// The marker of a claim (a connection's start on a server).
    Marker(u64),
    /// The packet a server numbered `seq` (its `origin` names the server's run).
    Entry { origin: u64, seq: u64 },
}

impl std::fmt::Display for LogPos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Marker(claim) => write!(f, "m:{claim}"),
            Self::Entry { origin, seq } => write!(f, "e:{origin}:{seq}"),
        }
    }
}

impl std::str::FromStr for LogPos {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let number = |part: Option<&str>| part.and_then(|p| p.parse::<u64>().ok());
        let mut parts = text.split(':');
        let parsed = match parts.next() {
            Some("m") => number(parts.next()).map(Self::Marker),
            Some("e") => number(parts.next())
                .zip(number(parts.next()))
                .map(|(origin, seq)| Self::Entry { origin, seq }),
            _ => None,
        };
        match (parsed, parts.next()) {
            (Some(pos), None) => Ok(pos),
            _ => Err(format!("not a log position: {text:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_positions_round_trip_as_text() {
        for pos in [
            LogPos::Marker(7),
            LogPos::Entry {
                origin: u64::MAX,
                seq: 3,
            },
        ] {
            assert_eq!(pos.to_string().parse::<LogPos>(), Ok(pos));
        }
        for bad in ["", "m", "m:x", "e:1", "e:1:2:3", "x:1"] {
            assert!(bad.parse::<LogPos>().is_err(), "{bad}");
        }
    }
}
