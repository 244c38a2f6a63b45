//! The one way hub effects leave the runtime: sends and group changes, handed to the backplane.
//!
//! Every send goes through the backplane, never straight to local sockets, so one server and
//! many behave alike. Group changes for connections living here are applied directly (and the
//! backplane told what this server now needs to hear about); others go through the backplane,
//! which waits for the owning server's acknowledgement.

use std::sync::Arc;

use crate::backplane::{Backplane, BackplaneError};
use crate::registry::{ConnectionHandle, LocalRegistry};
use crate::types::{ConnectionId, Envelope, GroupChange, HubName};

/// Routes hub effects. Cheap to clone.
#[derive(Clone)]
pub struct Router {
    backplane: Arc<dyn Backplane>,
}

impl Router {
    pub fn new(backplane: Arc<dyn Backplane>) -> Self {
        Self { backplane }
    }

    /// Fans a message out through the backplane.
    pub fn send(&self, envelope: Envelope) {
        self.backplane.publish(envelope);
    }

    /// Registers a local connection and subscribes to what it needs (its own channel, its
    /// user's, its hub's) before it can be addressed.
    pub async fn connect(&self, hub: &HubName, handle: ConnectionHandle) {
        let changes = self.registry().add(hub, handle);
        self.backplane.update_interest(changes).await;
    }

    /// Forgets a local connection, with its groups, and drops the subscriptions no one needs.
    pub async fn disconnect(&self, hub: &HubName, id: &ConnectionId) {
        let changes = self.registry().remove(hub, id);
        self.backplane.update_interest(changes).await;
    }

    /// [`Router::disconnect`] from a context that cannot wait (a drop): the connection is
    /// forgotten at once, the subscriptions are updated by a spawned task.
    pub fn disconnect_now(&self, hub: &HubName, id: &ConnectionId) {
        let changes = self.registry().remove(hub, id);
        if changes.is_empty() {
            return;
        }
        let backplane = self.backplane.clone();
        tokio::spawn(async move { backplane.update_interest(changes).await });
    }

    /// Applies a group change: directly when the connection lives here, else through the
    /// backplane (which waits for the owning server's acknowledgement).
    pub async fn change_group(&self, change: GroupChange) -> Result<(), BackplaneError> {
        match self.registry().apply_group_change(&change) {
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

    /// This server's connections.
    pub fn registry(&self) -> &Arc<LocalRegistry> {
        self.backplane.registry()
    }
}
