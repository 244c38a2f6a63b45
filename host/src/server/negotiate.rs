//! `POST /{hub}/negotiate`, and the negotiated connections waiting for their transport.
//!
//! Negotiating costs the server an entry until the client connects (or the entry expires), so
//! the entries not yet connected are capped: a flood of negotiations without connections is
//! answered with 503 once the cap is reached, instead of growing memory without bound.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use rand::Rng;
use serde_json::json;

use super::{AppState, authorize, text, unauthorized};
use crate::types::{ConnectionId, HubName, random_id};

/// How long a negotiated connection waits for its transport before it is forgotten.
const NEGOTIATED_TTL: Duration = Duration::from_secs(60);
/// Least time between sweeps of a full table, and between log lines about refusals.
const FULL_SWEEP_EVERY: Duration = Duration::from_secs(1);
const REFUSALS_LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Pending {
    hub: HubName,
    connection_id: ConnectionId,
    created: Instant,
    connected: bool,
}

#[derive(Debug)]
struct Table {
    by_token: HashMap<String, Pending>,
    /// Entries whose transport has not come yet (the ones the cap counts).
    waiting: usize,
    /// When the table was last swept because it was full: a flood must not make every refused
    /// request walk the whole table.
    swept: Instant,
    /// Negotiations refused since that was last logged, and when it was.
    refused_unlogged: u64,
    logged: Option<Instant>,
}

impl Table {
    fn remove(&mut self, token: &str) {
        if let Some(pending) = self.by_token.remove(token)
            && !pending.connected
        {
            self.waiting -= 1;
        }
    }

    fn sweep(&mut self, now: Instant) {
        self.swept = now;
        let before = self.by_token.len();
        self.by_token
            .retain(|_, p| p.connected || now.duration_since(p.created) < NEGOTIATED_TTL);
        self.waiting -= before - self.by_token.len();
    }
}

/// Why a transport cannot take a negotiated connection.
#[derive(Debug, PartialEq, Eq)]
pub enum ClaimError {
    /// No connection with that token (or it expired): 404.
    Unknown,
    /// The connection already has its transport: 409.
    InUse,
}

/// Too many negotiations wait for their transport.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

/// Negotiated connections by secret token.
#[derive(Debug)]
pub struct Negotiated {
    table: Mutex<Table>,
    /// Most entries waiting for their transport.
    max_waiting: usize,
    /// Negotiations refused because the table was full (for `/metrics`).
    refused: std::sync::atomic::AtomicU64,
}

/// A connection's claim on its negotiated entry: dropping it forgets the entry (the connection
/// ended, or its transport never started).
pub struct Lease {
    negotiated: Arc<Negotiated>,
    token: String,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.negotiated.table.lock().remove(&self.token);
    }
}

impl Negotiated {
    pub fn new(max_waiting: usize) -> Self {
        Self {
            table: Mutex::new(Table {
                by_token: HashMap::new(),
                waiting: 0,
                swept: Instant::now(),
                refused_unlogged: 0,
                logged: None,
            }),
            max_waiting,
            refused: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Records a negotiation and returns the (connection id, token) pair. With negotiate
    /// version 0 the token is the connection id.
    pub fn create(&self, hub: HubName, version: u32) -> Result<(ConnectionId, String), Full> {
        let mut table = self.table.lock();
        if table.waiting >= self.max_waiting {
            let now = Instant::now();
            if now.duration_since(table.swept) >= FULL_SWEEP_EVERY {
                table.sweep(now);
            }
            if table.waiting >= self.max_waiting {
                self.refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                table.refused_unlogged += 1;
                // One line per period, with the count: a flood must not flood the log too.
                if table
                    .logged
                    .is_none_or(|at| now.duration_since(at) >= REFUSALS_LOG_EVERY)
                {
                    tracing::warn!(
                        limit = self.max_waiting,
                        refused = table.refused_unlogged,
                        "negotiate refused: too many negotiated connections wait for their transport (--max-pending-negotiations)"
                    );
                    table.refused_unlogged = 0;
                    table.logged = Some(now);
                }
                return Err(Full);
            }
        }
        let connection_id = ConnectionId::random();
        let token = if version >= 1 {
            random_id()
        } else {
            connection_id.to_string()
        };
        table.by_token.insert(
            token.clone(),
            Pending {
                hub,
                connection_id: connection_id.clone(),
                created: Instant::now(),
                connected: false,
            },
        );
        table.waiting += 1;
        Ok((connection_id, token))
    }

    /// Takes a negotiated connection for a transport on `hub`.
    pub fn claim(
        self: &Arc<Self>,
        hub: &HubName,
        token: &str,
    ) -> Result<(ConnectionId, Lease), ClaimError> {
        let mut table = self.table.lock();
        let pending = table.by_token.get_mut(token).ok_or(ClaimError::Unknown)?;
        if &pending.hub != hub {
            return Err(ClaimError::Unknown);
        }
        if pending.connected {
            return Err(ClaimError::InUse);
        }
        pending.connected = true;
        let id = pending.connection_id.clone();
        table.waiting -= 1;
        let lease = Lease {
            negotiated: self.clone(),
            token: token.to_owned(),
        };
        Ok((id, lease))
    }

    /// Whether a negotiation with this token exists for `hub` (claimed or not).
    pub fn exists(&self, hub: &HubName, token: &str) -> bool {
        self.table
            .lock()
            .by_token
            .get(token)
            .is_some_and(|p| &p.hub == hub)
    }

    /// Forgets negotiations whose transport never came.
    pub fn sweep(&self) {
        self.table.lock().sweep(Instant::now());
    }

    /// Entries waiting for their transport.
    pub fn waiting(&self) -> usize {
        self.table.lock().waiting
    }

    /// Negotiations refused so far because too many were waiting.
    pub fn refused(&self) -> u64 {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// `POST /{hub}/negotiate`.
pub(super) async fn negotiate(
    State(app): State<Arc<AppState>>,
    Path(hub): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let Some(hub) = app.runtime.hub(&hub) else {
        return text(StatusCode::NOT_FOUND, "Hub not found");
    };
    if let Err(e) = authorize(&app, &hub, &headers, &query) {
        return unauthorized(&e);
    }
    let version = match query.get("negotiateVersion") {
        None => 0,
        Some(v) => match v.parse::<u32>() {
            Ok(v) => v.min(1),
            Err(_) => {
                return axum::Json(json!({
                    "error": "The client requested a non-integer protocol version."
                }))
                .into_response();
            }
        },
    };
    let Ok((connection_id, token)) = app.negotiated.create(hub.name().clone(), version) else {
        // Retry after a moment, spread so refused clients do not come back together.
        let retry = rand::rng().random_range(1..=5).to_string();
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("text/plain")),
                (
                    header::RETRY_AFTER,
                    HeaderValue::from_str(&retry).unwrap_or(HeaderValue::from_static("1")),
                ),
            ],
            "Too many connections are being negotiated; try again shortly.",
        )
            .into_response();
    };
    let transports = json!([{ "transport": "WebSockets", "transferFormats": ["Text", "Binary"] }]);
    let body = if version >= 1 {
        json!({
            "negotiateVersion": version,
            "connectionId": connection_id.as_str(),
            "connectionToken": token,
            "availableTransports": transports,
        })
    } else {
        json!({
            "negotiateVersion": 0,
            "connectionId": connection_id.as_str(),
            "availableTransports": transports,
        })
    };
    axum::Json(body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_claimed_once_and_released_with_its_lease() {
        let n = Arc::new(Negotiated::new(10));
        let hub = HubName::new("chat");
        let (id, token) = n.create(hub.clone(), 1).expect("room");
        assert_ne!(id.as_str(), token, "version 1 has a separate secret token");
        let (claimed, lease) = n.claim(&hub, &token).expect("claimed");
        assert_eq!(claimed, id);
        assert_eq!(n.claim(&hub, &token).err(), Some(ClaimError::InUse));
        drop(lease);
        assert_eq!(n.claim(&hub, &token).err(), Some(ClaimError::Unknown));
    }

    #[test]
    fn version_0_uses_the_connection_id_as_token() {
        let n = Arc::new(Negotiated::new(10));
        let hub = HubName::new("chat");
        let (id, token) = n.create(hub.clone(), 0).expect("room");
        assert_eq!(id.as_str(), token);
        assert_eq!(
            n.claim(&HubName::new("other"), &token).err(),
            Some(ClaimError::Unknown)
        );
    }

    #[test]
    fn only_connections_waiting_for_their_transport_count_against_the_cap() {
        let n = Arc::new(Negotiated::new(2));
        let hub = HubName::new("chat");
        let (_, first) = n.create(hub.clone(), 1).expect("room");
        n.create(hub.clone(), 1).expect("room");
        assert_eq!(n.create(hub.clone(), 1), Err(Full));
        assert_eq!(n.refused(), 1);
        // A connection that got its transport no longer waits.
        let (_, lease) = n.claim(&hub, &first).expect("claimed");
        assert_eq!(n.waiting(), 1);
        n.create(hub.clone(), 1).expect("room again");
        drop(lease);
        assert_eq!(n.waiting(), 2);
    }
}
