//! This server's connections, their groups and users, and delivery into their outboxes.

use std::collections::{HashMap, HashSet};

use axum::extract::ws::Utf8Bytes;
use parking_lot::RwLock;
use tokio_util::sync::CancellationToken;

use super::outbox::{OfferError, OutboxSender};
use super::target::{ConnectionId, Envelope, HubName, Target};
use crate::backplane::{GroupChange, Interest, InterestChange};
use crate::protocol::json;

/// What a connection's writer task receives.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A complete frame (one or more records) to write as a Text message.
    Frame(Utf8Bytes),
    /// Write this frame (a Close message), then close the socket.
    Close(Utf8Bytes),
}

/// How the registry reaches one connection: its bounded outbox and a token that ends it.
#[derive(Debug, Clone)]
pub struct ConnectionHandle {
    pub id: ConnectionId,
    pub user: Option<String>,
    pub outbox: OutboxSender,
    /// Cancelled to drop a connection that cannot keep up with its outbox.
    pub cancel: CancellationToken,
}

impl ConnectionHandle {
    /// Queues a frame; a full outbox means the client is not reading, so it is cut off rather
    /// than let it hold memory or slow everyone else.
    fn offer(&self, message: Outbound) -> bool {
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

struct Entry {
    handle: ConnectionHandle,
    groups: HashSet<String>,
}

#[derive(Default)]
struct HubConnections {
    connections: HashMap<ConnectionId, Entry>,
    groups: HashMap<String, HashSet<ConnectionId>>,
    users: HashMap<String, HashSet<ConnectionId>>,
}

impl HubConnections {
    fn resolve(&self, target: &Target) -> Vec<&ConnectionHandle> {
        let by_id = |id: &str| self.connections.get(id).map(|e| &e.handle);
        let members = |set: Option<&HashSet<ConnectionId>>| -> Vec<&ConnectionHandle> {
            set.into_iter()
                .flatten()
                .filter_map(|id| by_id(id.as_str()))
                .collect()
        };
        match target {
            Target::All => self.connections.values().map(|e| &e.handle).collect(),
            Target::AllExcept(excluded) => self
                .connections
                .values()
                .filter(|e| !excluded.iter().any(|x| x == e.handle.id.as_str()))
                .map(|e| &e.handle)
                .collect(),
            Target::Connection(id) => by_id(id).into_iter().collect(),
            Target::Connections(ids) => unique(ids).filter_map(by_id).collect(),
            Target::Group(group) => members(self.groups.get(group)),
            Target::GroupExcept { group, excluded } => members(self.groups.get(group))
                .into_iter()
                .filter(|h| !excluded.iter().any(|x| x == h.id.as_str()))
                .collect(),
            Target::Groups(groups) => self.union(unique(groups).map(|g| self.groups.get(g))),
            Target::User(user) => members(self.users.get(user)),
            Target::Users(users) => self.union(unique(users).map(|u| self.users.get(u))),
        }
    }

    fn union<'a>(
        &'a self,
        sets: impl Iterator<Item = Option<&'a HashSet<ConnectionId>>>,
    ) -> Vec<&'a ConnectionHandle> {
        let mut seen = HashSet::new();
        sets.flatten()
            .flatten()
            .filter(|id| seen.insert(*id))
            .filter_map(|id| self.connections.get(id.as_str()).map(|e| &e.handle))
            .collect()
    }
}

fn unique(items: &[String]) -> impl Iterator<Item = &str> {
    let mut seen = HashSet::new();
    items
        .iter()
        .map(String::as_str)
        .filter(move |s| seen.insert(*s))
}

/// The connections living on this server, per hub.
#[derive(Default)]
pub struct LocalRegistry {
    hubs: RwLock<HashMap<HubName, HubConnections>>,
    /// Frames queued to connections by deliveries (for `/metrics`).
    delivered: std::sync::atomic::AtomicU64,
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
        changes.push(InterestChange::Subscribe(Interest::Connection(
            hub.clone(),
            handle.id.to_string(),
        )));
        if let Some(user) = &handle.user {
            let members = conns.users.entry(user.clone()).or_default();
            if members.is_empty() {
                changes.push(InterestChange::Subscribe(Interest::User(
                    hub.clone(),
                    user.clone(),
                )));
            }
            members.insert(handle.id.clone());
        }
        conns.connections.insert(
            handle.id.clone(),
            Entry {
                handle,
                groups: HashSet::new(),
            },
        );
        changes
    }

    /// Forgets a connection and its group and user memberships; returns the interests this
    /// server loses.
    pub fn remove(&self, hub: &HubName, id: &ConnectionId) -> Vec<InterestChange> {
        let mut changes = Vec::new();
        let mut hubs = self.hubs.write();
        let Some(conns) = hubs.get_mut(hub) else {
            return changes;
        };
        let Some(entry) = conns.connections.remove(id) else {
            return changes;
        };
        changes.push(InterestChange::Unsubscribe(Interest::Connection(
            hub.clone(),
            id.to_string(),
        )));
        for group in entry.groups {
            if remove_member(&mut conns.groups, &group, id) {
                changes.push(InterestChange::Unsubscribe(Interest::Group(
                    hub.clone(),
                    group,
                )));
            }
        }
        if let Some(user) = &entry.handle.user
            && remove_member(&mut conns.users, user, id)
        {
            changes.push(InterestChange::Unsubscribe(Interest::User(
                hub.clone(),
                user.clone(),
            )));
        }
        if conns.connections.is_empty() {
            hubs.remove(hub);
            changes.push(InterestChange::Unsubscribe(Interest::Hub(hub.clone())));
        }
        changes
    }

    /// Applies a group change if the connection lives here, returning the interests gained or
    /// lost; `None` if the connection does not live here.
    pub fn apply_group_change(&self, change: &GroupChange) -> Option<Vec<InterestChange>> {
        let mut hubs = self.hubs.write();
        let hub = change.hub();
        let conns = hubs.get_mut(hub)?;
        let group = change.group();
        let entry = conns.connections.get_mut(change.connection())?;
        let id = entry.handle.id.clone();
        let mut changes = Vec::new();
        match change {
            GroupChange::Add { .. } => {
                entry.groups.insert(group.to_owned());
                let members = conns.groups.entry(group.to_owned()).or_default();
                if members.is_empty() {
                    changes.push(InterestChange::Subscribe(Interest::Group(
                        hub.clone(),
                        group.to_owned(),
                    )));
                }
                members.insert(id);
            }
            GroupChange::Remove { .. } => {
                entry.groups.remove(group);
                if remove_member(&mut conns.groups, group, &id) {
                    changes.push(InterestChange::Unsubscribe(Interest::Group(
                        hub.clone(),
                        group.to_owned(),
                    )));
                }
            }
        }
        Some(changes)
    }

    /// Delivers a send to the local recipients; the frame is built once and shared.
    pub fn deliver(&self, envelope: &Envelope) -> DeliveryStats {
        let hubs = self.hubs.read();
        let Some(conns) = hubs.get(&envelope.hub) else {
            return DeliveryStats::default();
        };
        let recipients = conns.resolve(&envelope.target);
        if recipients.is_empty() {
            return DeliveryStats::default();
        }
        let frame = Utf8Bytes::from(json::invocation(&envelope.method, &envelope.arguments));
        let mut stats = DeliveryStats::default();
        for handle in recipients {
            if handle.offer(Outbound::Frame(frame.clone())) {
                stats.delivered += 1;
            } else {
                stats.dropped += 1;
            }
        }
        self.delivered
            .fetch_add(stats.delivered as u64, std::sync::atomic::Ordering::Relaxed);
        stats
    }

    /// Sends `message` to every connection of one hub (or of all hubs) and returns how many.
    pub fn broadcast_control(&self, hub: Option<&HubName>, message: Outbound) -> usize {
        let hubs = self.hubs.read();
        let mut count = 0;
        for (name, conns) in hubs.iter() {
            if hub.is_some_and(|h| h != name) {
                continue;
            }
            for entry in conns.connections.values() {
                // Control messages must not be lost to a full outbox: wait-free try first,
                // and a connection too far behind is cut off anyway.
                entry.handle.offer(message.clone());
                count += 1;
            }
        }
        count
    }

    /// Whether the connection lives on this server.
    pub fn contains(&self, hub: &HubName, id: &str) -> bool {
        self.hubs
            .read()
            .get(hub)
            .is_some_and(|c| c.connections.contains_key(id))
    }

    /// Frames delivered to local connections so far.
    pub fn delivered_total(&self) -> u64 {
        self.delivered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Connections per hub on this server.
    pub fn connection_counts(&self) -> Vec<(String, u64)> {
        let mut counts: Vec<_> = self
            .hubs
            .read()
            .iter()
            .map(|(hub, c)| (hub.to_string(), c.connections.len() as u64))
            .collect();
        counts.sort();
        counts
    }

    /// How many connections this server holds, over all hubs.
    pub fn connection_count(&self) -> usize {
        self.hubs.read().values().map(|c| c.connections.len()).sum()
    }

    /// The members of a group that live on this server (for tests and diagnostics).
    pub fn local_group_members(&self, hub: &HubName, group: &str) -> Vec<ConnectionId> {
        let hubs = self.hubs.read();
        let mut members: Vec<_> = hubs
            .get(hub)
            .and_then(|c| c.groups.get(group))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        members.sort();
        members
    }
}

/// Removes `id` from the set at `key`; `true` if that emptied (and so removed) the set.
fn remove_member(
    index: &mut HashMap<String, HashSet<ConnectionId>>,
    key: &str,
    id: &ConnectionId,
) -> bool {
    if let Some(set) = index.get_mut(key) {
        set.remove(id);
        if set.is_empty() {
            index.remove(key);
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Client {
        rx: crate::router::OutboxReceiver,
    }

    impl Client {
        fn frames(&mut self) -> Vec<String> {
            let mut batch = Vec::new();
            self.rx.try_recv_batch(&mut batch, usize::MAX);
            batch
                .into_iter()
                .filter_map(|m| match m {
                    Outbound::Frame(f) => Some(f.as_str().to_owned()),
                    Outbound::Close(_) => None,
                })
                .collect()
        }
    }

    fn hub() -> HubName {
        HubName::new("chat")
    }

    fn connect(registry: &LocalRegistry, id: &str, user: Option<&str>) -> Client {
        let (tx, rx) = crate::router::outbox(8);
        registry.add(
            &hub(),
            ConnectionHandle {
                id: ConnectionId::new(id),
                user: user.map(str::to_owned),
                outbox: tx,
                cancel: CancellationToken::new(),
            },
        );
        Client { rx }
    }

    fn send(registry: &LocalRegistry, target: Target) -> DeliveryStats {
        registry.deliver(&Envelope {
            hub: hub(),
            target,
            method: "m".into(),
            arguments: "[1]".into(),
        })
    }

    fn join(registry: &LocalRegistry, id: &str, group: &str) -> bool {
        registry
            .apply_group_change(&GroupChange::Add {
                hub: hub(),
                connection: id.into(),
                group: group.into(),
            })
            .is_some()
    }

    const FRAME: &str = "{\"type\":1,\"target\":\"m\",\"arguments\":[1]}\u{1e}";

    #[test]
    fn all_and_all_except() {
        let r = LocalRegistry::new();
        let mut a = connect(&r, "a", None);
        let mut b = connect(&r, "b", None);
        assert_eq!(send(&r, Target::All).delivered, 2);
        assert_eq!(a.frames(), [FRAME]);
        assert_eq!(b.frames(), [FRAME]);
        assert_eq!(send(&r, Target::AllExcept(vec!["a".into()])).delivered, 1);
        assert!(a.frames().is_empty());
        assert_eq!(b.frames(), [FRAME]);
    }

    #[test]
    fn connections_are_deduplicated_and_unknown_ids_ignored() {
        let r = LocalRegistry::new();
        let mut a = connect(&r, "a", None);
        let stats = send(
            &r,
            Target::Connections(vec!["a".into(), "a".into(), "zz".into()]),
        );
        assert_eq!(stats.delivered, 1);
        assert_eq!(a.frames().len(), 1);
        assert_eq!(send(&r, Target::Connection("zz".into())).delivered, 0);
    }

    #[test]
    fn groups_and_group_except() {
        let r = LocalRegistry::new();
        let mut a = connect(&r, "a", None);
        let mut b = connect(&r, "b", None);
        let mut c = connect(&r, "c", None);
        assert!(join(&r, "a", "g"));
        assert!(join(&r, "b", "g"));
        assert!(join(&r, "b", "h"));
        assert!(
            !join(&r, "nobody", "g"),
            "unknown connections are not local"
        );
        assert_eq!(send(&r, Target::Group("g".into())).delivered, 2);
        assert_eq!(
            send(
                &r,
                Target::GroupExcept {
                    group: "g".into(),
                    excluded: vec!["a".into()]
                }
            )
            .delivered,
            1
        );
        // b is in both groups but receives one copy.
        assert_eq!(
            send(&r, Target::Groups(vec!["g".into(), "h".into()])).delivered,
            2
        );
        assert_eq!(a.frames().len(), 2);
        assert_eq!(b.frames().len(), 3);
        assert!(c.frames().is_empty());
    }

    #[test]
    fn leaving_and_disconnecting_clear_membership() {
        let r = LocalRegistry::new();
        let _a = connect(&r, "a", None);
        let _b = connect(&r, "b", None);
        join(&r, "a", "g");
        join(&r, "b", "g");
        r.apply_group_change(&GroupChange::Remove {
            hub: hub(),
            connection: "a".into(),
            group: "g".into(),
        });
        assert_eq!(r.local_group_members(&hub(), "g"), [ConnectionId::new("b")]);
        r.remove(&hub(), &ConnectionId::new("b"));
        assert!(r.local_group_members(&hub(), "g").is_empty());
        assert_eq!(r.connection_count(), 1);
    }

    #[test]
    fn users_with_several_connections() {
        let r = LocalRegistry::new();
        let mut a1 = connect(&r, "a1", Some("ana"));
        let mut a2 = connect(&r, "a2", Some("ana"));
        let mut b = connect(&r, "b", Some("ben"));
        assert_eq!(send(&r, Target::User("ana".into())).delivered, 2);
        assert_eq!(
            send(&r, Target::Users(vec!["ana".into(), "ben".into()])).delivered,
            3
        );
        assert_eq!(a1.frames().len(), 2);
        assert_eq!(a2.frames().len(), 2);
        assert_eq!(b.frames().len(), 1);
    }

    #[test]
    fn hubs_are_isolated() {
        let r = LocalRegistry::new();
        let mut a = connect(&r, "a", None);
        let stats = r.deliver(&Envelope {
            hub: HubName::new("other"),
            target: Target::All,
            method: "m".into(),
            arguments: "[]".into(),
        });
        assert_eq!(stats.delivered, 0);
        assert!(a.frames().is_empty());
    }

    #[test]
    fn reports_interests_gained_and_lost() {
        use InterestChange::{Subscribe, Unsubscribe};
        let r = LocalRegistry::new();
        let (tx, _rx) = crate::router::outbox(8);
        let handle = |id: &str| ConnectionHandle {
            id: ConnectionId::new(id),
            user: Some("ana".into()),
            outbox: tx.clone(),
            cancel: CancellationToken::new(),
        };
        assert_eq!(
            r.add(&hub(), handle("a")),
            [
                Subscribe(Interest::Hub(hub())),
                Subscribe(Interest::Connection(hub(), "a".into())),
                Subscribe(Interest::User(hub(), "ana".into())),
            ]
        );
        assert_eq!(
            r.add(&hub(), handle("b")),
            [Subscribe(Interest::Connection(hub(), "b".into()))],
            "the hub and the user are already of interest"
        );
        let add = |id: &str| GroupChange::Add {
            hub: hub(),
            connection: id.into(),
            group: "g".into(),
        };
        assert_eq!(
            r.apply_group_change(&add("a")),
            Some(vec![Subscribe(Interest::Group(hub(), "g".into()))])
        );
        assert_eq!(r.apply_group_change(&add("b")), Some(vec![]));
        assert_eq!(r.apply_group_change(&add("elsewhere")), None);
        assert_eq!(
            r.remove(&hub(), &ConnectionId::new("a")),
            [Unsubscribe(Interest::Connection(hub(), "a".into()))]
        );
        assert_eq!(
            r.remove(&hub(), &ConnectionId::new("b")),
            [
                Unsubscribe(Interest::Connection(hub(), "b".into())),
                Unsubscribe(Interest::Group(hub(), "g".into())),
                Unsubscribe(Interest::User(hub(), "ana".into())),
                Unsubscribe(Interest::Hub(hub())),
            ]
        );
    }

    #[test]
    fn a_full_outbox_cuts_the_slow_connection_off() {
        let r = LocalRegistry::new();
        let (tx, _rx) = crate::router::outbox(1);
        let cancel = CancellationToken::new();
        r.add(
            &hub(),
            ConnectionHandle {
                id: ConnectionId::new("slow"),
                user: None,
                outbox: tx,
                cancel: cancel.clone(),
            },
        );
        assert_eq!(send(&r, Target::All).delivered, 1);
        assert_eq!(send(&r, Target::All).dropped, 1);
        assert!(cancel.is_cancelled());
    }
}
