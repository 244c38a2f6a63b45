//! Connection ids and tokens, and the negotiated connections waiting for their WebSocket.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::Rng;

use crate::router::{ConnectionId, HubName};

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A random URL-safe id of 22 characters (132 bits), like ASP.NET Core's.
pub fn random_id() -> String {
    let mut rng = rand::rng();
    (0..22)
        .map(|_| ALPHABET[rng.random_range(0..64)] as char)
        .collect()
}

/// How long a negotiated connection waits for its WebSocket before it is forgotten.
const NEGOTIATED_TTL: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Pending {
    hub: HubName,
    connection_id: ConnectionId,
    created: Instant,
    connected: bool,
}

/// Why a WebSocket cannot take a negotiated connection.
#[derive(Debug, PartialEq, Eq)]
pub enum ClaimError {
    /// No connection with that token (or it expired): 404.
    Unknown,
    /// The connection already has its WebSocket: 409.
    InUse,
}

/// Negotiated connections by secret token.
#[derive(Debug, Default)]
pub struct Negotiated {
    by_token: Mutex<HashMap<String, Pending>>,
}

impl Negotiated {
    /// Records a negotiation and returns the (connection id, token) pair. With negotiate
    /// version 0 the token is the connection id.
    pub fn create(&self, hub: HubName, version: u32) -> (ConnectionId, String) {
        let connection_id = ConnectionId::new(random_id());
        let token = if version >= 1 {
            random_id()
        } else {
            connection_id.to_string()
        };
        self.by_token.lock().insert(
            token.clone(),
            Pending {
                hub,
                connection_id: connection_id.clone(),
                created: Instant::now(),
                connected: false,
            },
        );
        (connection_id, token)
    }

    /// Takes a negotiated connection for a WebSocket on `hub`.
    pub fn claim(&self, hub: &HubName, token: &str) -> Result<ConnectionId, ClaimError> {
        let mut map = self.by_token.lock();
        let pending = map.get_mut(token).ok_or(ClaimError::Unknown)?;
        if &pending.hub != hub {
            return Err(ClaimError::Unknown);
        }
        if pending.connected {
            return Err(ClaimError::InUse);
        }
        pending.connected = true;
        Ok(pending.connection_id.clone())
    }

    /// Whether a negotiation with this token exists for `hub` (claimed or not).
    pub fn exists(&self, hub: &HubName, token: &str) -> bool {
        self.by_token
            .lock()
            .get(token)
            .is_some_and(|p| &p.hub == hub)
    }

    /// Forgets a connection that ended.
    pub fn release(&self, token: &str) {
        self.by_token.lock().remove(token);
    }

    /// Forgets negotiations whose WebSocket never came.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.by_token
            .lock()
            .retain(|_, p| p.connected || now.duration_since(p.created) < NEGOTIATED_TTL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_url_safe_and_distinct() {
        let a = random_id();
        assert_eq!(a.len(), 22);
        assert!(a.bytes().all(|b| ALPHABET.contains(&b)));
        assert_ne!(a, random_id());
    }

    #[test]
    fn a_token_is_claimed_once() {
        let n = Negotiated::default();
        let hub = HubName::new("chat");
        let (id, token) = n.create(hub.clone(), 1);
        assert_ne!(id.as_str(), token, "version 1 has a separate secret token");
        assert_eq!(n.claim(&hub, &token), Ok(id));
        assert_eq!(n.claim(&hub, &token), Err(ClaimError::InUse));
        n.release(&token);
        assert_eq!(n.claim(&hub, &token), Err(ClaimError::Unknown));
    }

    #[test]
    fn version_0_uses_the_connection_id_as_token() {
        let n = Negotiated::default();
        let hub = HubName::new("chat");
        let (id, token) = n.create(hub.clone(), 0);
        assert_eq!(id.as_str(), token);
        assert_eq!(
            n.claim(&HubName::new("other"), &token),
            Err(ClaimError::Unknown)
        );
    }
}
