//! The connections, groups and users of one hub on this server.

use std::collections::{HashMap, HashSet};

use parking_lot::Mutex;

use super::{ConnectionHandle, Delivery, Place, Source};
use crate::presence::{Answer, Holding, Member, Query};
use crate::types::{ConnectionId, GroupChange, HubName, Interest, InterestChange, LogPos, Target};

struct Entry {
    handle: ConnectionHandle,
    groups: HashSet<String>,
    delivery: Delivery,
    /// The claim whose marker it started from here (it moved here, or is durable).
    started: Option<u64>,
}

#[derive(Default)]
pub(super) struct HubConnections {
    connections: HashMap<ConnectionId, Entry>,
    groups: HashMap<String, HashSet<ConnectionId>>,
    users: HashMap<String, HashSet<ConnectionId>>,
    /// The newest packet of the hub's log delivered here (durable reconnect). Set by
    /// deliveries under the registry's read lock, read by checkpoints under its write lock.
    last: Mutex<Option<LogPos>>,
}

impl HubConnections {
    /// A packet of the hub's log at `at` was delivered.
    pub(super) fn logged(&self, at: Option<LogPos>) {
        if at.is_some() {
            *self.last.lock() = at;
        }
    }

    /// Tells a durable connection taking the backplane's order where it is in the log, with
    /// its groups (see [`Outbound::Checkpoint`]).
    pub(super) fn checkpoint(&self, id: &str) {
        if let Some(entry) = self.connections.get(id) {
            self.checkpoint_entry(entry);
        }
    }

    pub(super) fn checkpoint_all(&self) {
        for entry in self.connections.values() {
            self.checkpoint_entry(entry);
        }
    }

    fn checkpoint_entry(&self, entry: &Entry) {
        let Some(at) = *self.last.lock() else {
            return;
        };
        if entry.handle.durable && entry.delivery == Delivery::InOrder {
            let mut groups: Vec<String> = entry.groups.iter().cloned().collect();
            groups.sort();
            entry.handle.offer(Place::now(at, groups));
        }
    }

    pub(super) fn len(&self) -> usize {
        self.connections.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.connections.is_empty()
    }

    pub(super) fn contains(&self, id: &str) -> bool {
        self.connections.contains_key(id)
    }

    /// The groups a connection is in, sorted.
    pub(super) fn groups_of(&self, id: &str) -> Vec<String> {
        let mut groups: Vec<String> = self
            .connections
            .get(id)
            .map(|entry| entry.groups.iter().cloned().collect())
            .unwrap_or_default();
        groups.sort();
        groups
    }

    /// Adds a connection; returns the interests gained (its own channel, its user's).
    pub(super) fn add(
        &mut self,
        hub: &HubName,
        handle: ConnectionHandle,
        delivery: Delivery,
    ) -> Vec<InterestChange> {
        let mut changes = vec![InterestChange::Subscribe(Interest::Connection(
            hub.clone(),
            handle.id.to_string(),
        ))];
        if let Some(user) = &handle.user {
            let members = self.users.entry(user.clone()).or_default();
            if members.is_empty() {
                changes.push(InterestChange::Subscribe(Interest::User(
                    hub.clone(),
                    user.clone(),
                )));
            }
            members.insert(handle.id.clone());
        }
        self.connections.insert(
            handle.id.clone(),
            Entry {
                handle,
                groups: HashSet::new(),
                started: match delivery {
                    Delivery::AfterMarker(claim) => Some(claim),
                    _ => None,
                },
                delivery,
            },
        );
        changes
    }

    /// The claim whose marker the connection started from here, if any.
    pub(super) fn started_at(&self, id: &str) -> Option<u64> {
        self.connections.get(id).and_then(|e| e.started)
    }

    /// How a local connection takes deliveries (`None` if it is not here).
    pub(super) fn delivery(&self, id: &str) -> Option<Delivery> {
        self.connections.get(id).map(|e| e.delivery)
    }

    /// Changes how a local connection takes deliveries; its handle, groups and the previous
    /// way, or `None` if it is not here.
    pub(super) fn set_delivery(
        &mut self,
        id: &str,
        delivery: Delivery,
    ) -> Option<(ConnectionHandle, Vec<String>, Delivery)> {
        let entry = self.connections.get_mut(id)?;
        let before = std::mem::replace(&mut entry.delivery, delivery);
        let mut groups: Vec<String> = entry.groups.iter().cloned().collect();
        groups.sort();
        Some((entry.handle.clone(), groups, before))
    }

    /// Removes a connection with its memberships; returns the interests lost.
    pub(super) fn remove(&mut self, hub: &HubName, id: &ConnectionId) -> Vec<InterestChange> {
        let Some(entry) = self.connections.remove(id) else {
            return Vec::new();
        };
        let mut changes = vec![InterestChange::Unsubscribe(Interest::Connection(
            hub.clone(),
            id.to_string(),
        ))];
        for group in entry.groups {
            if remove_member(&mut self.groups, &group, id) {
                changes.push(InterestChange::Unsubscribe(Interest::Group(
                    hub.clone(),
                    group,
                )));
            }
        }
        if let Some(user) = &entry.handle.user
            && remove_member(&mut self.users, user, id)
        {
            changes.push(InterestChange::Unsubscribe(Interest::User(
                hub.clone(),
                user.clone(),
            )));
        }
        changes
    }

    /// Applies a group change for a local connection; `None` if it is not local.
    pub(super) fn apply_group_change(
        &mut self,
        change: &GroupChange,
    ) -> Option<Vec<InterestChange>> {
        let hub = change.hub();
        let group = change.group();
        // A connection that moved away is its new server's to change.
        let entry = self
            .connections
            .get_mut(change.connection())
            .filter(|e| e.delivery != Delivery::Moved)?;
        let id = entry.handle.id.clone();
        let mut changes = Vec::new();
        match change {
            GroupChange::Add { .. } => {
                entry.groups.insert(group.to_owned());
                let members = self.groups.entry(group.to_owned()).or_default();
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
                if remove_member(&mut self.groups, group, &id) {
                    changes.push(InterestChange::Unsubscribe(Interest::Group(
                        hub.clone(),
                        group.to_owned(),
                    )));
                }
            }
        }
        Some(changes)
    }

    /// Calls `visit` once for each local connection `target` selects that takes deliveries
    /// from `source`.
    pub(super) fn for_each_recipient(
        &self,
        target: &Target,
        source: Source,
        mut visit: impl FnMut(&ConnectionHandle),
    ) {
        let visit = |entry: &Entry| {
            if entry.delivery.takes(source) {
                visit(&entry.handle);
            }
        };
        let by_id = |id: &str| self.connections.get(id);
        let excluded = |list: &[String], id: &ConnectionId| list.iter().any(|x| x == id.as_str());
        match target {
            Target::All => self.connections.values().for_each(visit),
            Target::AllExcept(list) => self
                .connections
                .values()
                .filter(|e| !excluded(list, &e.handle.id))
                .for_each(visit),
            Target::Connection(id) => by_id(id).into_iter().for_each(visit),
            Target::Connections(ids) => unique(ids).filter_map(by_id).for_each(visit),
            Target::Group(group) => self.members(self.groups.get(group), |_| true, visit),
            Target::GroupExcept {
                group,
                excluded: list,
            } => self.members(self.groups.get(group), |id| !excluded(list, id), visit),
            Target::Groups(groups) => self.union(unique(groups).map(|g| self.groups.get(g)), visit),
            Target::User(user) => self.members(self.users.get(user), |_| true, visit),
            Target::Users(users) => self.union(unique(users).map(|u| self.users.get(u)), visit),
        }
    }

    /// At most how many local connections `target` selects (without visiting them).
    pub(super) fn fan_out(&self, target: &Target) -> usize {
        let size = |set: Option<&HashSet<ConnectionId>>| set.map_or(0, HashSet::len);
        match target {
            Target::All | Target::AllExcept(_) => self.connections.len(),
            Target::Connection(_) => 1,
            Target::Connections(ids) => ids.len(),
            Target::Group(group) | Target::GroupExcept { group, .. } => {
                size(self.groups.get(group))
            }
            Target::Groups(groups) => groups.iter().map(|g| size(self.groups.get(g))).sum(),
            Target::User(user) => size(self.users.get(user)),
            Target::Users(users) => users.iter().map(|u| size(self.users.get(u))).sum(),
        }
    }

    fn members(
        &self,
        set: Option<&HashSet<ConnectionId>>,
        keep: impl Fn(&ConnectionId) -> bool,
        visit: impl FnMut(&Entry),
    ) {
        set.into_iter()
            .flatten()
            .filter(|id| keep(id))
            .filter_map(|id| self.connections.get(id))
            .for_each(visit);
    }

    /// Members of several sets, each once.
    fn union<'a>(
        &'a self,
        sets: impl Iterator<Item = Option<&'a HashSet<ConnectionId>>>,
        visit: impl FnMut(&Entry),
    ) {
        let mut seen = HashSet::new();
        sets.flatten()
            .flatten()
            .filter(|id| seen.insert(*id))
            .filter_map(|id| self.connections.get(id))
            .for_each(visit);
    }

    /// Groups with members here, and memberships.
    pub(super) fn group_counts(&self) -> (u64, u64) {
        let memberships = self.groups.values().map(|m| m.len() as u64).sum();
        (self.groups.len() as u64, memberships)
    }

    /// Every connection with its user and groups (presence's share of this hub).
    pub(super) fn holdings(&self) -> Vec<Holding> {
        self.connections
            .iter()
            .map(|(id, entry)| Holding {
                connection: id.to_string(),
                user: entry.handle.user.clone(),
                groups: entry.groups.iter().cloned().collect(),
            })
            .collect()
    }

    /// A presence query over this server's connections.
    pub(super) fn answer(&self, query: &Query) -> Answer {
        let size = |index: &HashMap<String, HashSet<ConnectionId>>, key: &str| {
            index.get(key).map_or(0, |members| members.len() as u64)
        };
        match query {
            Query::Connections => Answer::Count(self.connections.len() as u64),
            Query::Users => Answer::Count(self.users.len() as u64),
            Query::UserConnections(user) => Answer::Count(size(&self.users, user)),
            Query::GroupSize(group) => Answer::Count(size(&self.groups, group)),
            Query::GroupMembers { group, limit } => {
                let limit = crate::presence::capped(*limit) as usize;
                let mut members: Vec<Member> = self
                    .groups
                    .get(group)
                    .into_iter()
                    .flatten()
                    .take(limit)
                    .map(|id| Member {
                        connection: id.to_string(),
                        user: self
                            .connections
                            .get(id)
                            .and_then(|entry| entry.handle.user.clone()),
                    })
                    .collect();
                members.sort();
                Answer::Members(members)
            }
        }
    }

    pub(super) fn group_members(&self, group: &str) -> Vec<ConnectionId> {
        let mut members: Vec<_> = self
            .groups
            .get(group)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        members.sort();
        members
    }
}

fn unique(items: &[String]) -> impl Iterator<Item = &str> {
    let mut seen = HashSet::new();
    items
        .iter()
        .map(String::as_str)
        .filter(move |s| seen.insert(*s))
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
