//! Who a hub call is for.

use super::{ConnectionId, HubName};

/// The connection a call is made for: its hub, id and who it belongs to.
#[derive(Debug, Clone)]
pub struct Caller {
    pub hub: HubName,
    pub connection_id: ConnectionId,
    /// The authenticated user, if any.
    pub user_id: Option<String>,
    /// The bearer token's claims as (type, value) pairs; empty when anonymous.
    pub claims: Vec<(String, String)>,
}
