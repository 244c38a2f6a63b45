//! Who receives what: the [`Target`] selector, the [`Envelope`] every fan-out travels in, and
//! the [`LocalRegistry`] of this server's connections, groups and users.
//!
//! The router hands every send to the backplane, never straight to local sockets, so one server
//! and many behave alike; the backplane hands what it receives to the local registry.

mod registry;
mod target;

use std::sync::Arc;

pub use registry::{ConnectionHandle, DeliveryStats, LocalRegistry, Outbound};
pub use target::{ConnectionId, Envelope, HubName, Target};

use crate::backplane::{Backplane, BackplaneError, GroupChange};

/// The one way hub effects leave the runtime: sends and group changes.
#[derive(Clone)]
pub struct Router {
    backplane: Arc<dyn Backplane>,
    registry: Arc<LocalRegistry>,
}

impl Router {
    pub fn new(backplane: Arc<dyn Backplane>, registry: Arc<LocalRegistry>) -> Self {
        Self {
            backplane,
            registry,
        }
    }

    /// Fans a message out through the backplane.
    pub fn send(&self, envelope: Envelope) -> Result<(), BackplaneError> {
        self.backplane.publish(envelope)
    }

    /// Applies a group change: directly when the connection lives here, else through the
    /// backplane (which waits for the owning server's acknowledgement).
    pub async fn change_group(&self, change: GroupChange) -> Result<(), BackplaneError> {
        if self.registry.apply_group_change(&change) {
            return Ok(());
        }
        self.backplane.change_remote_group(change).await
    }

    /// Whether the backplane can carry messages now.
    pub fn is_ready(&self) -> bool {
        self.backplane.is_ready()
    }

    pub fn registry(&self) -> &Arc<LocalRegistry> {
        &self.registry
    }
}
