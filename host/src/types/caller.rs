//! Who a hub call is for.

use std::sync::Arc;

use super::{ConnectionId, HubName, Request};

/// The connection a call is made for: its hub, id and who it belongs to.
#[derive(Debug, Clone)]
pub struct Caller {
    pub hub: HubName,
    pub connection_id: ConnectionId,
    /// The authenticated user, if any.
    pub user_id: Option<String>,
    /// The bearer token's claims as (type, value) pairs; empty when anonymous.
    pub claims: Vec<(String, String)>,
    /// The request that opened the connection (`None` for connections made without one, as in
    /// tests and benchmarks).
    pub request: Option<Arc<Request>>,
}
