//! This server's connections, their groups and users, and delivery into their outboxes.
//!
//! The registry is what every backplane delivers into: it resolves a [`Target`] to local
//! connections, encodes the frame once per protocol those connections speak, and queues the
//! shared bytes in each one's [`outbox`]. It reports the [`InterestChange`]s of this server
//! (the first local member of a hub, connection, group or user appears, or the last one leaves)
//! so a backplane spanning servers knows what to subscribe to.

pub mod asks;
mod hub;
pub mod outbox;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;
use tokio_util::sync::CancellationToken;

use crate::protocol::{Frame, HubProtocol, ServerMessage};
use crate::types::{
    ConnectionId, Envelope, GroupChange, HubName, Interest, InterestChange, Question,
};
use asks::Asks;
use hub::HubConnections;
pub use outbox::{OfferError, OutboxReceiver, OutboxSender, outbox};

/// What a connection's writer receives.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A frame (one or more messages) to write.
    Frame(Frame),
    /// From now on, write this frame (the protocol's Ping) when the connection has been quiet.
    KeepAlive(Frame),
    /// Write this frame (a Close message), then close the connection.
    Close(Frame),
}

/// How the registry reaches one connection: the protocol it speaks, its bounded outbox, and a
/// token that ends it.
#[derive(Debug, Clone)]
pub struct ConnectionHandle {
    pub id: ConnectionId,
    pub user: Option<String>,
    pub protocol: &'static dyn HubProtocol,
    pub outbox: OutboxSender,
    /// Cancelled to drop a connection that cannot keep up with its outbox.
    pub cancel: CancellationToken,
}

impl ConnectionHandle {
    /// Queues a frame; a full outbox means the client is not reading, so it is cut off rather
    /// than let it hold memory or slow everyone else.
    pub fn offer(&self, message: Outbound) -> bool {
        match self.outbox.try_send(message) {
            Ok(()) => true,
            Err(OfferError::Full) => {
                tracing::warn!(connection = %self.id, "outbox full, closing slow connection");
                self.cancel.cancel();
                false
            }
            Err(OfferError::Closed) => false,
        }
    }
}

/// Counts of one delivery, for metrics and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryStats {
    pub delivered: usize,
    pub dropped: usize,
}

/// One message encoded lazily, once per protocol among its recipients.
struct Encoded<'a> {
    message: ServerMessage<'a>,
    /// The first protocol's frame inline (most fan-outs need no other); few protocols exist,
    /// so the others are a list searched by name rather than a map.
    first: Option<(&'static str, Frame)>,
    others: Vec<(&'static str, Frame)>,
}

impl<'a> Encoded<'a> {
    fn new(message: ServerMessage<'a>) -> Self {
        Self {
            message,
            first: None,
            others: Vec::new(),
        }
    }

    fn frame(&mut self, protocol: &'static dyn HubProtocol) -> Frame {
        let name = protocol.name();
        let known = self
            .first
            .iter()
            .chain(&self.others)
            .find(|(n, _)| *n == name);
        if let Some((_, frame)) = known {
            return frame.clone();
        }
        let frame = protocol.encode(&self.message);
        if self.first.is_none() {
            self.first = Some((name, frame.clone()));
        } else {
            self.others.push((name, frame.clone()));
        }
        frame
    }
}

/// The connections living on this server, per hub.
#[derive(Default)]
pub struct LocalRegistry {
    hubs: RwLock<HashMap<HubName, HubConnections>>,
    /// Frames queued to connections by deliveries (for `/metrics`).
    delivered: AtomicU64,
    /// Client results in flight.
    asks: Asks,
}

/// Group figures of this server, for `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GroupCounts {
    /// Groups with at least one local member.
    pub groups: u64,
    /// Local memberships, over all groups.
    pub memberships: u64,
}

impl LocalRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a connection (after its handshake, before the hub's `on-connected`) and
    /// returns the interests this server gains.
    pub fn add(&self, hub: &HubName, handle: ConnectionHandle) -> Vec<InterestChange> {
        let mut changes = Vec::new();
        let mut hubs = self.hubs.write();
        let conns = hubs.entry(hub.clone()).or_insert_with(|| {
            changes.push(InterestChange::Subscribe(Interest::Hub(hub.clone())));
            HubConnections::default()
        });
        changes.extend(conns.add(hub, handle));
        changes
    }

    /// Forgets a connection and its group and user memberships; returns the interests this
    /// server loses.
    pub fn remove(&self, hub: &HubName, id: &ConnectionId) -> Vec<InterestChange> {
        let mut hubs = self.hubs.write();
        let Some(conns) = hubs.get_mut(hub) else {
            return Vec::new();
        };
        let mut changes = conns.remove(hub, id);
        if conns.is_empty() {
            hubs.remove(hub);
            changes.push(InterestChange::Unsubscribe(Interest::Hub(hub.clone())));
        }
        changes
    }

    /// Applies a group change if the connection lives here, returning the interests gained or
    /// lost; `None` if the connection does not live here.
    pub fn apply_group_change(&self, change: &GroupChange) -> Option<Vec<InterestChange>> {
        let mut hubs = self.hubs.write();
        hubs.get_mut(change.hub())?.apply_group_change(change)
    }

    /// Delivers a send to the local recipients; the frame is encoded once per protocol and
    /// shared.
    pub fn deliver(&self, envelope: &Envelope) -> DeliveryStats {
        let hubs = self.hubs.read();
        let Some(conns) = hubs.get(&envelope.hub) else {
            return DeliveryStats::default();
        };
        let mut encoded = Encoded::new(ServerMessage::Invocation {
            invocation_id: None,
            target: &envelope.method,
            arguments: &envelope.arguments,
        });
        let mut stats = DeliveryStats::default();
        conns.for_each_recipient(&envelope.target, |handle| {
            if handle.offer(Outbound::Frame(encoded.frame(handle.protocol))) {
                stats.delivered += 1;
            } else {
                stats.dropped += 1;
            }
        });
        self.delivered
            .fetch_add(stats.delivered as u64, Ordering::Relaxed);
        stats
    }

    /// Delivers a question to the asked connection if it lives here (and remembers it, so the
    /// connection answers "gone" if it leaves first); `false` if it does not live here.
    pub fn deliver_question(&self, question: &Question) -> bool {
        let hubs = self.hubs.read();
        let Some(conns) = hubs.get(&question.hub) else {
            return false;
        };
        let target = crate::types::Target::Connection(question.connection.clone());
        let mut found = false;
        conns.for_each_recipient(&target, |handle| {
            found = true;
            let frame = handle.protocol.encode(&ServerMessage::Invocation {
                invocation_id: Some(&question.invocation_id),
                target: &question.method,
                arguments: &question.arguments,
            });
            self.asks
                .delivered(&question.connection, &question.invocation_id);
            handle.offer(Outbound::Frame(frame));
        });
        found
    }

    /// Client results in flight on this server.
    pub fn asks(&self) -> &Asks {
        &self.asks
    }

    /// Sends every connection of `hub` a Close message with `error` (not allowing reconnect),
    /// then closes it; returns how many connections were told.
    pub fn close_hub(&self, hub: &HubName, error: &str) -> usize {
        let hubs = self.hubs.read();
        let Some(conns) = hubs.get(hub) else {
            return 0;
        };
        let mut encoded = Encoded::new(ServerMessage::Close {
            error: Some(error),
            allow_reconnect: false,
        });
        let mut count = 0;
        conns.for_each_recipient(&crate::types::Target::All, |handle| {
            // A connection whose outbox is full is cut off anyway.
            handle.offer(Outbound::Close(encoded.frame(handle.protocol)));
            count += 1;
        });
        count
    }

    /// The groups of `hub` a local connection is in, sorted (none if it is not here).
    pub fn groups_of(&self, hub: &HubName, id: &str) -> Vec<String> {
        self.hubs
            .read()
            .get(hub)
            .map(|conns| conns.groups_of(id))
            .unwrap_or_default()
    }

    /// Whether the connection lives on this server.
    pub fn contains(&self, hub: &HubName, id: &str) -> bool {
        self.hubs.read().get(hub).is_some_and(|c| c.contains(id))
    }

    /// Frames delivered to local connections so far.
    pub fn delivered_total(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Connections per hub on this server.
    pub fn connection_counts(&self) -> Vec<(String, u64)> {
        let mut counts: Vec<_> = self
            .hubs
            .read()
            .iter()
            .map(|(hub, c)| (hub.to_string(), c.len() as u64))
            .collect();
        counts.sort();
        counts
    }

    /// How many connections this server holds, over all hubs.
    pub fn connection_count(&self) -> usize {
        self.hubs.read().values().map(HubConnections::len).sum()
    }

    /// Groups with local members and local memberships, over all hubs.
    pub fn group_counts(&self) -> GroupCounts {
        let hubs = self.hubs.read();
        let mut counts = GroupCounts::default();
        for conns in hubs.values() {
            let (groups, memberships) = conns.group_counts();
            counts.groups += groups;
            counts.memberships += memberships;
        }
        counts
    }

    /// The members of a group that live on this server (for tests and diagnostics).
    pub fn local_group_members(&self, hub: &HubName, group: &str) -> Vec<ConnectionId> {
        self.hubs
            .read()
            .get(hub)
            .map(|c| c.group_members(group))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
