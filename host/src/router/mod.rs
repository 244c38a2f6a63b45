//! Who receives what: the [`Target`] selector, the [`Envelope`] every fan-out travels in, and
//! the [`LocalRegistry`] of this server's connections, groups and users.
//!
//! The router hands every send to the backplane, never straight to local sockets, so one server
//! and many behave alike; the backplane hands what it receives to the local registry.

pub mod outbox;
mod registry;
mod target;

use std::sync::Arc;

pub use outbox::{OfferError, OutboxReceiver, OutboxSender, outbox};
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

    /// Registers a local connection and subscribes to what it needs (its own channel, its
    /// user's, its hub's) before it can be addressed.
    pub async fn connect(&self, hub: &HubName, handle: ConnectionHandle) {
        let changes = self.registry.add(hub, handle);
        self.backplane.update_interest(changes).await;
    }

    /// Forgets a local connection, with its groups, and drops the subscriptions no one needs.
    pub async fn disconnect(&self, hub: &HubName, id: &ConnectionId) {
        let changes = self.registry.remove(hub, id);
        self.backplane.update_interest(changes).await;
    }

    /// Applies a group change: directly when the connection lives here, else through the
    /// backplane (which waits for the owning server's acknowledgement).
    pub async fn change_group(&self, change: GroupChange) -> Result<(), BackplaneError> {
        match self.registry.apply_group_change(&change) {
            Some(changes) => {
                self.backplane.update_interest(changes).await;
                Ok(())
            }
            None => self.backplane.change_remote_group(change).await,
        }
    }

    /// The backplane's counters and kind.
    pub fn backplane(&self) -> &dyn Backplane {
        self.backplane.as_ref()
    }

    /// Whether the backplane can carry messages now.
    pub fn is_ready(&self) -> bool {
        self.backplane.is_ready()
    }

    pub fn registry(&self) -> &Arc<LocalRegistry> {
        &self.registry
    }
}
