//! The backplane carries every fan-out to every server, this one included.
//!
//! A backplane owns the [`LocalRegistry`] it delivers into. [`memory`] is the single-server
//! default: publishing is delivering. [`redis`] makes several servers act as one through Redis
//! pub/sub ([`channels`] names the channels, [`wire`] encodes what travels on them): a send is
//! delivered to this server's recipients at once and published for the others.

pub mod channels;
pub mod memory;
pub mod redis;
pub mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::registry::LocalRegistry;
use crate::types::{
    Answered, Envelope, GroupChange, Handover, HubName, InterestChange, MoveOrder, Offer, Question,
};

/// Why a group change for a connection on another server could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum BackplaneError {
    #[error("the backplane is not connected, so the group change cannot reach other servers")]
    Disconnected,
    #[error("no server acknowledged the group change within {0:?}")]
    AckTimeout(Duration),
}

/// Counters of a backplane, for `/metrics` and `/readyz`.
#[derive(Debug, Default)]
pub struct BackplaneStats {
    /// Messages handed to the backplane's transport.
    pub published: AtomicU64,
    /// Messages received from other servers through the transport.
    pub received: AtomicU64,
    /// Messages that could not reach other servers (this server's clients got them).
    pub dropped: AtomicU64,
    /// Times the link was re-established after a loss.
    pub reconnects: AtomicU64,
    /// Outages begun (the link lost, or publishing failing), each logged once.
    pub outages: AtomicU64,
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

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

/// A connection another server holds, stopped for this one to take over (stateful reconnect
/// across servers; see [`crate::types::Claim`]).
pub struct Claimed {
    pub offer: Offer,
    /// The holder's [`Handover`], once it has seen the marker.
    pub handover: tokio::sync::oneshot::Receiver<Handover>,
}

/// Where the claims of other servers go: whoever knows this server's connections by token.
pub trait Movers: Send + Sync + 'static {
    /// Asks the connection of `token` to move (`false` if this server holds none that can).
    fn order(&self, hub: &HubName, token: &str, order: MoveOrder) -> bool;
}

/// What every backplane does.
pub trait Backplane: Send + Sync + 'static {
    /// Fans a send out: delivered to this server's recipients before it returns, and handed on
    /// to the other servers. Never blocks and never fails: what cannot reach other servers is
    /// counted (and logged once per outage) by the backplane.
    fn publish(&self, envelope: Envelope);

    /// Applies a group change for a connection that does not live on this server, resolving
    /// when the server that holds it has applied it.
    fn change_remote_group(
        &self,
        change: GroupChange,
    ) -> BoxFuture<'static, Result<(), BackplaneError>>;

    /// Follows this server's interests (subscribes and unsubscribes), resolving once the
    /// transport has confirmed them, so a message sent after a join reaches the new member.
    fn update_interest(&self, changes: Vec<InterestChange>) -> BoxFuture<'_, ()>;

    /// Delivers a client-result question to the asked connection, here or on the server that
    /// holds it. Where no server can hold it (one server, and not here), answers "gone".
    fn ask(&self, question: Question);

    /// Takes an answer back to the server that asked (named in its invocation id).
    fn answer(&self, answered: Answered);

    /// This server's name on the backplane, which invocation ids of its questions start with.
    fn server_name(&self) -> &str;

    /// Whether the backplane can carry messages now (for `/readyz`).
    fn is_ready(&self) -> bool;

    /// The backplane's counters.
    fn stats(&self) -> &BackplaneStats;

    /// A short name for logs and metrics (`memory`, `redis`).
    fn kind(&self) -> &'static str;

    /// The registry of this server's connections, which the backplane delivers into.
    fn registry(&self) -> &Arc<LocalRegistry>;

    /// Finds the server holding the connection of `token` and has it stopped for this one to
    /// take over, if `user` is its user; `None` when no server answers (one server has no
    /// other to ask).
    fn claim(
        &self,
        hub: &HubName,
        token: &str,
        user: Option<String>,
    ) -> BoxFuture<'static, Option<Claimed>> {
        let _ = (hub, token, user);
        Box::pin(async { None })
    }

    /// Makes a local connection about to move take every send in the backplane's order, this
    /// server's own included (`false` where there is no such order, or it is not here).
    fn deliver_in_order(&self, hub: &HubName, connection: &str) -> bool {
        let _ = (hub, connection);
        false
    }

    /// Publishes the marker of `claim` in the backplane's order (once this server is
    /// subscribed to everything the connection needs).
    fn mark(&self, hub: &HubName, connection: &str, claim: u64) {
        let _ = (hub, connection, claim);
    }

    /// Tells the claimant this server holds the connection and stops it (the offer follows
    /// once its calls in flight are done).
    fn hold(&self, order: &MoveOrder) {
        let _ = order;
    }

    /// Answers a claim (the connection is stopped and waits for the marker).
    fn offer(&self, order: &MoveOrder, offer: Offer) {
        let _ = (order, offer);
    }

    /// Hands a moved connection's unacknowledged messages to its claimant.
    fn hand_over(&self, order: &MoveOrder, handover: Handover) {
        let _ = (order, handover);
    }

    /// Sends the claims of other servers to `movers`.
    fn serve_moves(&self, movers: Arc<dyn Movers>) {
        let _ = movers;
    }
}
