//! The backplane carries every fan-out to every server, this one included.
//!
//! [`memory`] is the single-server default: publishing is delivering to the local registry.
//! [`redis`] makes several servers act as one through Redis pub/sub ([`channels`] names the
//! channels, [`wire`] encodes what travels on them).

pub mod channels;
pub mod memory;
pub mod redis;
pub mod wire;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// Something this server wants to hear about: messages for one of its hubs, connections, groups
/// or users. The registry reports when the first local member appears and the last one leaves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Interest {
    Hub(HubName),
    Connection(HubName, String),
    Group(HubName, String),
    User(HubName, String),
}

/// A change of this server's interests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterestChange {
    Subscribe(Interest),
    Unsubscribe(Interest),
}

/// Counters of a backplane, for `/metrics` and `/readyz`.
#[derive(Debug, Default)]
pub struct BackplaneStats {
    /// Messages handed to the backplane's transport.
    pub published: AtomicU64,
    /// Messages received from other servers (and this one) through the transport.
    pub received: AtomicU64,
    /// Messages that could not reach other servers (delivered locally only).
    pub dropped: AtomicU64,
    /// Times the link was re-established after a loss.
    pub reconnects: AtomicU64,
    /// Whether the link is up.
    pub connected: AtomicBool,
}

impl BackplaneStats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
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

    /// Follows this server's interests (subscribes and unsubscribes), resolving once the
    /// transport has confirmed them, so a message sent after a join reaches the new member.
    fn update_interest(&self, changes: Vec<InterestChange>) -> BoxFuture<'_, ()>;

    /// Whether the backplane can carry messages now (for `/readyz`).
    fn is_ready(&self) -> bool;

    /// The backplane's counters.
    fn stats(&self) -> &BackplaneStats;

    /// A short name for logs and metrics (`memory`, `redis`).
    fn kind(&self) -> &'static str;
}
