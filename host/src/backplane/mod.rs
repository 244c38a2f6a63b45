//! The backplane carries every fan-out to every server, this one included.
//!
//! [`memory`] is the single-server default: publishing is delivering to the local registry.
//! A Redis backplane (several servers as one) implements the same trait.

pub mod memory;

use futures_util::future::BoxFuture;

use crate::router::{Envelope, HubName};

/// Why the backplane could not carry a message or a group change.
#[derive(Debug, thiserror::Error)]
pub enum BackplaneError {
    #[error("the backplane is not connected; the message was dropped")]
    Disconnected,
    #[error("no server acknowledged the group change within {0:?}")]
    AckTimeout(std::time::Duration),
}

/// A group membership change for one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupChange {
    Add {
        hub: HubName,
        connection: String,
        group: String,
    },
    Remove {
        hub: HubName,
        connection: String,
        group: String,
    },
}

impl GroupChange {
    pub fn hub(&self) -> &HubName {
        match self {
            Self::Add { hub, .. } | Self::Remove { hub, .. } => hub,
        }
    }

    pub fn connection(&self) -> &str {
        match self {
            Self::Add { connection, .. } | Self::Remove { connection, .. } => connection,
        }
    }

    pub fn group(&self) -> &str {
        match self {
            Self::Add { group, .. } | Self::Remove { group, .. } => group,
        }
    }
}

/// What every backplane does.
pub trait Backplane: Send + Sync + 'static {
    /// Fans a send out to every server, this one included. Never blocks: a remote backplane
    /// queues the message for its publisher.
    fn publish(&self, envelope: Envelope) -> Result<(), BackplaneError>;

    /// Applies a group change for a connection that does not live on this server, resolving
    /// when the server that holds it has applied it.
    fn change_remote_group(
        &self,
        change: GroupChange,
    ) -> BoxFuture<'static, Result<(), BackplaneError>>;

    /// Whether the backplane can carry messages now (for `/readyz`).
    fn is_ready(&self) -> bool;
}
