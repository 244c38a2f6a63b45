//! Presence: who is connected to each hub, over every server, behind the `presence` import.
//!
//! The registry knows this server's connections; presence adds the others'. With one server
//! ([`LocalPresence`]) the registry is the whole answer. With Redis ([`redis::RedisPresence`])
//! each server writes its *share* (its connections, their users and groups) beside a heartbeat,
//! and a server that stops beating is dropped from every count by the live servers' next
//! heartbeat, so counts cannot drift when a server dies the way a counter in hub state does.
//!
//! The registry reports every change of its share ([`Feed`]) in its own order, numbered, and
//! can copy a hub's share with the number it was taken at ([`Shares::share`]): Redis
//! presence writes the changes, and rewrites a whole share after Redis lost it.
//!

pub mod redis;

use futures_util::future::BoxFuture;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

use crate::types::HubName;

/// Most members one `group-members` call returns.
pub const MAX_MEMBERS: u32 = 1000;

/// A change of this server's share of a hub's presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Connected {
        connection: String,
        user: Option<String>,
    },
    /// The connection left, and with it `groups`.
    Disconnected {
        connection: String,
        groups: Vec<String>,
    },
    Joined {
        connection: String,
        group: String,
    },
    Left {
        connection: String,
        group: String,
    },
}

/// What the registry tells presence, in its order.
#[derive(Debug)]
pub enum Feed {
    /// A change, numbered in the registry's order (see [`Shares::share`]).
    Change {
        seq: u64,
        hub: HubName,
        change: Change,
    },
    /// Answered once every change before it has been written (or failed to be).
    Flush(oneshot::Sender<()>),
    /// The hub's code was replaced: whether its presence is counted may have changed.
    Reloaded(HubName),
}

/// Which hubs presence is kept for: those whose code reads it.
pub type Counted = Box<dyn Fn(&HubName) -> bool + Send + Sync>;

/// The sending end of the feed, which the registry holds.
pub type FeedSender = mpsc::UnboundedSender<Feed>;

/// One connection of a share: its id, user and groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    pub connection: String,
    pub user: Option<String>,
    pub groups: Vec<String>,
}

/// What a hub asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// Connections of the hub.
    Connections,
    /// Distinct users with a connection.
    Users,
    /// Connections of one user.
    UserConnections(String),
    /// Connections in a group.
    GroupSize(String),
    /// Up to `limit` members of a group.
    GroupMembers { group: String, limit: u32 },
}

/// A member of a group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Member {
    pub connection: String,
    pub user: Option<String>,
}

/// What a query answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Count(u64),
    Members(Vec<Member>),
}

impl Answer {
    /// The count asked for (a list counts its members).
    pub fn into_count(self) -> u64 {
        match self {
            Self::Count(n) => n,
            Self::Members(members) => members.len() as u64,
        }
    }

    /// The members asked for (none where a count was answered).
    pub fn into_members(self) -> Vec<Member> {
        match self {
            Self::Count(_) => Vec::new(),
            Self::Members(members) => members,
        }
    }
}

/// Why presence could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PresenceError {
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// Counters of presence, for `/metrics`.
#[derive(Debug, Default)]
pub struct PresenceStats {
    /// Batches of changes written.
    pub writes: std::sync::atomic::AtomicU64,
    /// Writes and heartbeats that failed (the share is rewritten once the store is back).
    pub failures: std::sync::atomic::AtomicU64,
    /// Shares rewritten whole (first use, after a failure, or after the store lost them).
    pub rewrites: std::sync::atomic::AtomicU64,
    /// Shares of servers that stopped beating, dropped by this server.
    pub reaped: std::sync::atomic::AtomicU64,
    /// Heartbeats sent (one per hub this server has a share of, per beat).
    pub heartbeats: std::sync::atomic::AtomicU64,
}

impl PresenceStats {
    pub fn add(counter: &std::sync::atomic::AtomicU64, n: u64) {
        counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn get(counter: &std::sync::atomic::AtomicU64) -> u64 {
        counter.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Presence as the router and the hub imports see it.
pub trait Presence: Send + Sync + 'static {
    /// Answers a hub's query, over every server.
    fn read(
        &self,
        hub: &HubName,
        query: Query,
    ) -> BoxFuture<'static, Result<Answer, PresenceError>>;

    /// The counters (all zero where nothing is written).
    fn stats(&self) -> &PresenceStats;

    /// Takes this server's share out (it is shutting down, its connections gone).
    fn close(&self) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

/// What presence needs of this server's registry (which sits above it, and implements this).
pub trait Shares: Send + Sync + 'static {
    /// From now on, every change of this server's share goes to `feed` (`false` if one was set
    /// already).
    fn feed_presence(&self, feed: FeedSender) -> bool;
    /// This server's share of `hub`, with the number of the last change it holds.
    fn share(&self, hub: &HubName) -> (u64, Vec<Holding>);
    /// A query answered from this server's connections alone.
    fn answer(&self, hub: &HubName, query: &Query) -> Answer;
}

/// One server: the registry is the whole answer.
pub struct LocalPresence {
    registry: Arc<dyn Shares>,
    stats: PresenceStats,
}

impl LocalPresence {
    pub fn new(registry: Arc<dyn Shares>) -> Self {
        Self {
            registry,
            stats: PresenceStats::default(),
        }
    }
}

impl Presence for LocalPresence {
    fn read(
        &self,
        hub: &HubName,
        query: Query,
    ) -> BoxFuture<'static, Result<Answer, PresenceError>> {
        let answer = self.registry.answer(hub, &query);
        Box::pin(async move { Ok(answer) })
    }

    fn stats(&self) -> &PresenceStats {
        &self.stats
    }
}

/// `limit` as the host caps it.
pub fn capped(limit: u32) -> u32 {
    limit.min(MAX_MEMBERS)
}
