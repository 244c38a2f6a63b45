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
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::RwLock;
use tokio_util::sync::CancellationToken;

use crate::presence::{self, Answer, FeedSender, Holding, Query};
use crate::protocol::{Frame, HubProtocol, ServerMessage};
use crate::types::{
    ConnectionId, Envelope, GroupChange, HubName, Interest, InterestChange, LogPos, Question,
};
use asks::Asks;
use hub::HubConnections;
pub use outbox::{OfferError, OutboxReceiver, OutboxSender, outbox};

/// Most recipients a delivery writes to directly (from the delivering task, when their writers
/// are idle): a chat room's worth. Past it, writing one frame per socket in a row would hold
/// the delivering task and forgo the joined writes of busy writers.
const DIRECT_FAN_OUT: usize = 16;

/// What a connection's writer receives.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A frame (one or more messages) to write.
    Frame(Frame),
    /// From now on, write this frame (the protocol's Ping) when the connection has been quiet.
    KeepAlive(Frame),
    /// Write this frame (a Close message), then close the connection.
    Close(Frame),
    /// The connection moved to another server (stateful reconnect): everything before this
    /// was meant for it here; nothing after. `groups` are its groups at that point.
    Moved { groups: Vec<String> },
    /// Durable reconnect: a frame made from a packet of the hub's log, which a server taking
    /// the connection over after a crash makes again from the log (a plain [`Outbound::Frame`]
    /// of a durable connection is kept in Redis before it is written).
    Logged(Frame),
    /// Durable reconnect: every frame before this one was made from the hub's log up to its
    /// place (or is kept), and from there on the connection is in its groups. The writer
    /// records in Redis what the client has not acknowledged, and that place. (Boxed: rare,
    /// and every queued message has room for the largest kind.)
    Checkpoint(Box<Place>),
}

/// A durable connection's place in its hub's log (see [`Outbound::Checkpoint`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub at: LogPos,
    pub groups: Vec<String>,
    /// When it was taken (Unix milliseconds): reading the log for it starts a little before.
    pub since: u64,
}

impl Place {
    pub fn now(at: LogPos, groups: Vec<String>) -> Outbound {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        Outbound::Checkpoint(Box::new(Self { at, groups, since }))
    }
}

/// How a local connection takes the deliveries of sends. Most take a send published here at
/// once, and skip its copy coming back from the backplane. A connection moving between servers
/// (stateful reconnect) must see every send in one order, the backplane's, on both servers:
/// the order a marker cuts in two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Sends published here at once; from the backplane, other servers' sends.
    Direct,
    /// On the way from [`Delivery::Direct`] to [`Delivery::InOrder`]: this server's sends
    /// published before the switch were taken at once, and their copies coming back are
    /// skipped, until the switch's own marker comes back.
    Switching,
    /// Every send in the backplane's order, this server's own included.
    InOrder,
    /// Nothing until the marker of this claim arrives, then [`Delivery::InOrder`]: the
    /// connection is moving here, and what comes before the marker is its old server's.
    AfterMarker(u64),
    /// Nothing: the connection moved away.
    Moved,
}

impl Delivery {
    fn takes(self, source: Source) -> bool {
        match self {
            Self::Direct => source != Source::Echo,
            Self::Switching => source == Source::Only,
            Self::InOrder => source != Source::Local,
            Self::AfterMarker(_) | Self::Moved => false,
        }
    }
}

/// Where a delivery comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Published here, and also on its way through the backplane (whose copy is the
    /// [`Source::Echo`]).
    Local,
    /// The only copy: from another server, or published here with no copy coming back.
    Only,
    /// This server's own send, back from the backplane.
    Echo,
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
    /// Durable reconnect: what it is sent from the hub's log comes as [`Outbound::Logged`],
    /// and it is told [`Outbound::Checkpoint`]s.
    pub durable: bool,
}

impl ConnectionHandle {
    /// A frame made from a packet of the hub's log at `at` (`None`: not from the log).
    fn delivery_of(&self, frame: Frame, at: Option<LogPos>) -> Outbound {
        if self.durable && at.is_some() {
            Outbound::Logged(frame)
        } else {
            Outbound::Frame(frame)
        }
    }

    /// Queues a frame; a full outbox means the client is not reading, so it is cut off rather
    /// than let it hold memory or slow everyone else.
    pub fn offer(&self, message: Outbound) -> bool {
        self.offered(self.outbox.try_send(message))
    }

    /// [`offer`](Self::offer)s a frame of a small fan-out, which goes straight to the
    /// connection's transport when its writer is idle (see [`OutboxSender::try_send_direct`]).
    /// `Some(true)`: written directly; `Some(false)`: queued; `None`: not offered.
    pub fn offer_direct(&self, frame: Frame) -> Option<bool> {
        let outcome = self.outbox.try_send_direct(frame);
        let direct = outcome.as_ref().is_ok_and(|direct| *direct);
        self.offered(outcome.map(drop)).then_some(direct)
    }

    fn offered(&self, outcome: Result<(), OfferError>) -> bool {
        match outcome {
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
    /// Connections whose delivery is not [`Delivery::Direct`]: while there are none, the
    /// backplane's copies of this server's own sends are skipped unread.
    not_direct: AtomicUsize,
    /// Frames queued to connections by deliveries (for `/metrics`).
    delivered: AtomicU64,
    /// Of those, frames written straight to the socket (for `/metrics`).
    direct: AtomicU64,
    /// Client results in flight.
    asks: Asks,
    /// Where the changes of this server's presence share go, when presence is kept beyond it.
    presence: OnceLock<FeedSender>,
    /// Numbers those changes. Advanced under the `hubs` write lock, so a share copied under the
    /// read lock knows exactly which changes it holds.
    presence_seq: AtomicU64,
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
        self.add_with(hub, handle, Delivery::Direct, &[])
    }

    /// Registers a connection that moves here from another server (stateful reconnect), with
    /// its groups: it takes nothing until the marker of `claim` arrives.
    pub fn adopt(
        &self,
        hub: &HubName,
        handle: ConnectionHandle,
        groups: &[String],
        claim: u64,
    ) -> Vec<InterestChange> {
        self.add_with(hub, handle, Delivery::AfterMarker(claim), groups)
    }

    fn add_with(
        &self,
        hub: &HubName,
        handle: ConnectionHandle,
        delivery: Delivery,
        groups: &[String],
    ) -> Vec<InterestChange> {
        let mut changes = Vec::new();
        let mut hubs = self.hubs.write();
        let conns = hubs.entry(hub.clone()).or_insert_with(|| {
            changes.push(InterestChange::Subscribe(Interest::Hub(hub.clone())));
            HubConnections::default()
        });
        let id = handle.id.clone();
        if let Some(before) = conns.delivery(id.as_str()) {
            self.count_delivery(before, Delivery::Direct);
        }
        self.count_delivery(Delivery::Direct, delivery);
        self.tell(hub, || presence::Change::Connected {
            connection: id.to_string(),
            user: handle.user.clone(),
        });
        changes.extend(conns.add(hub, handle, delivery));
        for group in groups {
            let join = GroupChange::Add {
                hub: hub.clone(),
                connection: id.to_string(),
                group: group.clone(),
            };
            if let Some(gained) = conns.apply_group_change(&join) {
                changes.extend(gained);
                self.tell(hub, || presence::Change::Joined {
                    connection: id.to_string(),
                    group: group.clone(),
                });
            }
        }
        changes
    }

    /// From now on, every change of this server's presence share goes to `feed` (`false` if
    /// one was set already). Call it before the first connection is added.
    pub fn feed_presence(&self, feed: FeedSender) -> bool {
        self.presence.set(feed).is_ok()
    }

    /// Reports a change of the share, numbered; called under the `hubs` write lock.
    fn tell(&self, hub: &HubName, change: impl FnOnce() -> presence::Change) {
        if let Some(feed) = self.presence.get() {
            let seq = self.presence_seq.fetch_add(1, Ordering::Relaxed) + 1;
            // A closed feed means presence has stopped (the server is shutting down).
            let _ = feed.send(presence::Feed::Change {
                seq,
                hub: hub.clone(),
                change: change(),
            });
        }
    }

    /// Resolves once every presence change reported so far has been written (or failed to be:
    /// it does not hang while Redis is away); at once where presence is this server's alone.
    pub fn presence_written(&self) -> impl Future<Output = ()> + Send + 'static {
        let written = self.presence.get().and_then(|feed| {
            let (done, written) = tokio::sync::oneshot::channel();
            feed.send(presence::Feed::Flush(done))
                .ok()
                .map(|()| written)
        });
        async move {
            if let Some(written) = written {
                let _ = written.await;
            }
        }
    }

    /// Tells presence that `hub`'s code was replaced (whether it reads presence may have
    /// changed).
    pub fn presence_reloaded(&self, hub: &HubName) {
        if let Some(feed) = self.presence.get() {
            let _ = feed.send(presence::Feed::Reloaded(hub.clone()));
        }
    }

    /// This server's share of `hub`'s presence, with the number of the last change it holds.
    pub fn share(&self, hub: &HubName) -> (u64, Vec<Holding>) {
        let hubs = self.hubs.read();
        let seq = self.presence_seq.load(Ordering::Relaxed);
        let holdings = hubs
            .get(hub)
            .map(HubConnections::holdings)
            .unwrap_or_default();
        (seq, holdings)
    }

    /// Answers a presence query from this server's connections alone.
    pub fn presence(&self, hub: &HubName, query: &Query) -> Answer {
        let hubs = self.hubs.read();
        match hubs.get(hub) {
            Some(conns) => conns.answer(query),
            None => match query {
                Query::GroupMembers { .. } => Answer::Members(Vec::new()),
                _ => Answer::Count(0),
            },
        }
    }

    /// Changes how a local connection takes deliveries, keeping the count of those not
    /// [`Delivery::Direct`]; its handle and groups, or `None` if it is not here.
    fn set_delivery(
        &self,
        conns: &mut HubConnections,
        id: &str,
        delivery: Delivery,
    ) -> Option<(ConnectionHandle, Vec<String>)> {
        let (handle, groups, before) = conns.set_delivery(id, delivery)?;
        self.count_delivery(before, delivery);
        Some((handle, groups))
    }

    fn count_delivery(&self, before: Delivery, after: Delivery) {
        match (before == Delivery::Direct, after == Delivery::Direct) {
            (true, false) => {
                self.not_direct.fetch_add(1, Ordering::Relaxed);
            }
            (false, true) => {
                self.not_direct.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// Whether some local connection takes sends in the backplane's order (so this server's
    /// own sends coming back must be read).
    pub fn wants_echoes(&self) -> bool {
        self.not_direct.load(Ordering::Relaxed) > 0
    }

    /// From now on the connection takes every send in the backplane's order (it is about to
    /// move to another server); `then` runs before any send can be published after the switch
    /// (the backplane queues the switch's marker there). `false` if it is not here.
    pub fn deliver_in_order(&self, hub: &HubName, id: &str, then: impl FnOnce()) -> bool {
        let mut hubs = self.hubs.write();
        let Some(conns) = hubs.get_mut(hub) else {
            return false;
        };
        match conns.delivery(id) {
            None => false,
            Some(Delivery::Direct) => {
                self.set_delivery(conns, id, Delivery::Switching);
                then();
                true
            }
            // A connection that moved here takes everything in that order already.
            Some(_) => true,
        }
    }

    /// The marker of a switch to the backplane's order came back: this server's own sends
    /// that follow it reach the connection from the backplane.
    pub fn switched(&self, hub: &HubName, id: &str) {
        let mut hubs = self.hubs.write();
        if let Some(conns) = hubs.get_mut(hub)
            && conns.delivery(id) == Some(Delivery::Switching)
        {
            self.set_delivery(conns, id, Delivery::InOrder);
        }
    }

    /// The marker of a move arrived, in the backplane's order. On the server the connection
    /// moves to (waiting for this claim's marker), it takes what follows from now on. On the
    /// server it leaves, it takes nothing more, and its writer is told, behind everything meant
    /// for it here.
    pub fn marker(&self, hub: &HubName, id: &str, claim: u64) {
        let mut hubs = self.hubs.write();
        let Some(conns) = hubs.get_mut(hub) else {
            return;
        };
        conns.logged(Some(LogPos::Marker(claim)));
        // Its own marker, late (it stopped waiting) or again: not a move.
        if conns.started_at(id) == Some(claim) {
            if conns.delivery(id) == Some(Delivery::AfterMarker(claim)) {
                self.arrived(conns, id, claim);
            }
            return;
        }
        match conns.delivery(id) {
            Some(Delivery::Direct | Delivery::Switching | Delivery::InOrder) => {
                if let Some((handle, groups)) = self.set_delivery(conns, id, Delivery::Moved) {
                    handle.offer(Outbound::Moved { groups });
                }
            }
            Some(Delivery::AfterMarker(_) | Delivery::Moved) | None => {}
        }
    }

    /// The marker a connection waited for arrived: it takes what follows, and a durable one
    /// is told its place.
    fn arrived(&self, conns: &mut HubConnections, id: &str, claim: u64) {
        if let Some((handle, groups)) = self.set_delivery(conns, id, Delivery::InOrder)
            && handle.durable
        {
            handle.offer(Place::now(LogPos::Marker(claim), groups));
        }
    }

    /// A connection still waiting for the marker of `claim` takes sends in the backplane's
    /// order without it (the marker was lost); `true` if it was waiting.
    pub fn stop_waiting(&self, hub: &HubName, id: &str, claim: u64) -> bool {
        let mut hubs = self.hubs.write();
        let Some(conns) = hubs.get_mut(hub) else {
            return false;
        };
        if conns.delivery(id) != Some(Delivery::AfterMarker(claim)) {
            return false;
        }
        self.set_delivery(conns, id, Delivery::InOrder);
        true
    }

    /// Forgets a connection and its group and user memberships; returns the interests this
    /// server loses.
    pub fn remove(&self, hub: &HubName, id: &ConnectionId) -> Vec<InterestChange> {
        let mut hubs = self.hubs.write();
        let Some(conns) = hubs.get_mut(hub) else {
            return Vec::new();
        };
        if let Some(before) = conns.delivery(id.as_str()) {
            self.count_delivery(before, Delivery::Direct);
            self.tell(hub, || presence::Change::Disconnected {
                connection: id.to_string(),
                groups: conns.groups_of(id.as_str()),
            });
        }
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
        let changes = hubs.get_mut(change.hub())?.apply_group_change(change)?;
        self.tell(change.hub(), || {
            let connection = change.connection().to_owned();
            let group = change.group().to_owned();
            match change {
                GroupChange::Add { .. } => presence::Change::Joined { connection, group },
                GroupChange::Remove { .. } => presence::Change::Left { connection, group },
            }
        });
        Some(changes)
    }

    /// A durable connection's groups changed and its channels are subscribed: it is told its
    /// place (see [`Outbound::Checkpoint`]). Under the write lock, so no delivery runs
    /// meanwhile: every frame before was made with the old groups, every one after with the new.
    pub fn checkpoint(&self, hub: &HubName, id: &str) {
        if let Some(conns) = self.hubs.write().get(hub) {
            conns.checkpoint(id);
        }
    }

    /// Tells every durable connection that takes the backplane's order where it is in its
    /// hub's log (see [`Outbound::Checkpoint`]): what it keeps in Redis is written again, so
    /// a server taking it over after a crash reads only the recent log.
    pub fn checkpoint_durable(&self) {
        let hubs = self.hubs.write();
        for conns in hubs.values() {
            conns.checkpoint_all();
        }
    }

    /// Delivers a send to the local recipients that take it from `source`; the frame is
    /// encoded once per protocol and shared.
    pub fn deliver(&self, envelope: &Envelope, source: Source) -> DeliveryStats {
        self.deliver_then(envelope, source, None, |_| ()).0
    }

    /// [`deliver`](Self::deliver) of a packet of the hub's log, at `at`.
    pub fn deliver_logged(&self, envelope: &Envelope, source: Source, at: LogPos) -> DeliveryStats {
        self.deliver_then(envelope, source, Some(at), |_| ()).0
    }

    /// [`deliver`](Self::deliver), then `then`, given whether a connection takes this server's
    /// sends at once ([`Delivery::Direct`]), before any connection can change how it takes
    /// them: what `then` hands the backplane is on its way before a connection that starts
    /// taking sends in the backplane's order (to move) says so.
    pub fn deliver_then<R>(
        &self,
        envelope: &Envelope,
        source: Source,
        at: Option<LogPos>,
        then: impl FnOnce(&dyn Fn(&str) -> bool) -> R,
    ) -> (DeliveryStats, R) {
        let hubs = self.hubs.read();
        let conns = hubs.get(&envelope.hub);
        let mut stats = DeliveryStats::default();
        if let Some(conns) = conns {
            let mut encoded = Encoded::new(ServerMessage::Invocation {
                invocation_id: None,
                target: &envelope.method,
                arguments: &envelope.arguments,
            });
            // A small fan-out writes to idle connections' sockets from here; a larger one
            // leaves it to their writers, which join frames that queue up into one write.
            let small = conns.fan_out(&envelope.target) <= DIRECT_FAN_OUT;
            let mut direct = 0;
            conns.for_each_recipient(&envelope.target, source, |handle| {
                let frame = encoded.frame(handle.protocol);
                let offered = if small && !handle.durable {
                    handle.offer_direct(frame).inspect(|&written| {
                        direct += u64::from(written);
                    })
                } else {
                    handle.offer(handle.delivery_of(frame, at)).then_some(false)
                };
                if offered.is_some() {
                    stats.delivered += 1;
                } else {
                    stats.dropped += 1;
                }
            });
            self.delivered
                .fetch_add(stats.delivered as u64, Ordering::Relaxed);
            self.direct.fetch_add(direct, Ordering::Relaxed);
            conns.logged(at);
        }
        let direct = |id: &str| conns.is_some_and(|c| c.delivery(id) == Some(Delivery::Direct));
        let then = then(&direct);
        (stats, then)
    }

    /// Delivers a question to the asked connection if it lives here (and remembers it, so the
    /// connection answers "gone" if it leaves first); `false` if it does not live here.
    pub fn deliver_question(&self, question: &Question) -> bool {
        self.deliver_question_logged(question, None)
    }

    /// [`deliver_question`](Self::deliver_question) of a packet of the hub's log, at `at`.
    pub fn deliver_question_logged(&self, question: &Question, at: Option<LogPos>) -> bool {
        let hubs = self.hubs.read();
        let Some(conns) = hubs.get(&question.hub) else {
            return false;
        };
        let target = crate::types::Target::Connection(question.connection.clone());
        let mut found = false;
        conns.for_each_recipient(&target, Source::Only, |handle| {
            found = true;
            let frame = handle.protocol.encode(&ServerMessage::Invocation {
                invocation_id: Some(&question.invocation_id),
                target: &question.method,
                arguments: &question.arguments,
            });
            self.asks
                .delivered(&question.connection, &question.invocation_id);
            handle.offer(handle.delivery_of(frame, at));
        });
        conns.logged(at);
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
        conns.for_each_recipient(&crate::types::Target::All, Source::Only, |handle| {
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

    /// Of [`delivered_total`](Self::delivered_total), frames written straight to the socket by
    /// the delivering task.
    pub fn direct_total(&self) -> u64 {
        self.direct.load(Ordering::Relaxed)
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

impl presence::Shares for LocalRegistry {
    fn feed_presence(&self, feed: FeedSender) -> bool {
        LocalRegistry::feed_presence(self, feed)
    }

    fn share(&self, hub: &HubName) -> (u64, Vec<Holding>) {
        LocalRegistry::share(self, hub)
    }

    fn answer(&self, hub: &HubName, query: &Query) -> Answer {
        self.presence(hub, query)
    }
}

#[cfg(test)]
mod tests;
