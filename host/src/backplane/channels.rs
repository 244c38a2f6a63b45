//! Redis channel names, all in one place.
//!
//! `{prefix}:{hub}:all`, `{prefix}:{hub}:group:{name}`, `{prefix}:{hub}:connection:{id}`,
//! `{prefix}:{hub}:user:{id}`, and the internal `{prefix}:internal:groups` (group changes for
//! connections on another server), `{prefix}:internal:ack:{server}` (their acknowledgements) and
//! `{prefix}:internal:return:{server}` (answers to the client-result questions a server asked).
//! The prefix plays the role of SignalR's "AppName": deployments with different prefixes share a
//! Redis without seeing each other. On a cluster `{prefix}:{hub}` is `{{prefix}:{hub}}` and
//! `{prefix}:internal` is `{{prefix}:internal}` ([`Keyspace`]).

use crate::redisdb::Keyspace;
use crate::types::{HubName, Interest, Target};

/// Builds channel names for one prefix.
#[derive(Debug, Clone)]
pub struct Channels {
    keys: Keyspace,
}

impl Channels {
    /// Names on one Redis.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self::for_keyspace(Keyspace::single(prefix))
    }

    /// Names in `keys` (hash-tagged per hub on a cluster, so a hub's channels share a slot).
    pub fn for_keyspace(keys: Keyspace) -> Self {
        Self { keys }
    }

    pub fn prefix(&self) -> &str {
        self.keys.prefix()
    }

    pub fn keyspace(&self) -> &Keyspace {
        &self.keys
    }

    pub fn all(&self, hub: &HubName) -> String {
        format!("{}:all", self.keys.hub(hub))
    }

    pub fn group(&self, hub: &HubName, group: &str) -> String {
        format!("{}:group:{group}", self.keys.hub(hub))
    }

    pub fn connection(&self, hub: &HubName, id: &str) -> String {
        format!("{}:connection:{id}", self.keys.hub(hub))
    }

    pub fn user(&self, hub: &HubName, user: &str) -> String {
        format!("{}:user:{user}", self.keys.hub(hub))
    }

    pub fn group_commands(&self) -> String {
        format!("{}:groups", self.keys.internal())
    }

    pub fn acks(&self, server: &str) -> String {
        format!("{}:ack:{server}", self.keys.internal())
    }

    /// Where answers to a server's client-result questions go (ASP.NET's `internal:return`).
    pub fn returns(&self, server: &str) -> String {
        format!("{}:return:{server}", self.keys.internal())
    }

    /// The channel that carries messages for an interest.
    pub fn for_interest(&self, interest: &Interest) -> String {
        match interest {
            Interest::Hub(hub) => self.all(hub),
            Interest::Connection(hub, id) => self.connection(hub, id),
            Interest::Group(hub, group) => self.group(hub, group),
            Interest::User(hub, user) => self.user(hub, user),
        }
    }

    /// Where a send is published, with the target each copy carries. Sends to several groups go
    /// to the hub's `all` channel once, so a connection in two of the groups gets one copy;
    /// sends to several connections or users become one message per channel.
    pub fn for_target(&self, hub: &HubName, target: &Target) -> Vec<(String, Target)> {
        match target {
            Target::All | Target::AllExcept(_) | Target::Groups(_) => {
                vec![(self.all(hub), target.clone())]
            }
            Target::Connection(id) => vec![(self.connection(hub, id), target.clone())],
            Target::Connections(ids) => dedup(ids)
                .map(|id| (self.connection(hub, id), Target::Connection(id.to_owned())))
                .collect(),
            Target::Group(group) | Target::GroupExcept { group, .. } => {
                vec![(self.group(hub, group), target.clone())]
            }
            Target::User(user) => vec![(self.user(hub, user), target.clone())],
            Target::Users(users) => dedup(users)
                .map(|user| (self.user(hub, user), Target::User(user.to_owned())))
                .collect(),
        }
    }
}

fn dedup(items: &[String]) -> impl Iterator<Item = &str> {
    let mut seen = std::collections::HashSet::new();
    items
        .iter()
        .map(String::as_str)
        .filter(move |s| seen.insert(*s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let c = Channels::new("hubhost");
        let hub = HubName::new("chat");
        assert_eq!(c.all(&hub), "hubhost:chat:all");
        assert_eq!(c.group(&hub, "room 1"), "hubhost:chat:group:room 1");
        assert_eq!(c.connection(&hub, "abc"), "hubhost:chat:connection:abc");
        assert_eq!(c.user(&hub, "ana"), "hubhost:chat:user:ana");
        assert_eq!(c.group_commands(), "hubhost:internal:groups");
        assert_eq!(c.acks("s1"), "hubhost:internal:ack:s1");
    }

    #[test]
    fn a_cluster_keeps_each_hub_in_one_slot() {
        let c = Channels::for_keyspace(Keyspace::cluster("p"));
        let hub = HubName::new("chat");
        assert_eq!(c.all(&hub), "{p:chat}:all");
        assert_eq!(c.group(&hub, "{x}"), "{p:chat}:group:{x}");
        assert_eq!(c.returns("s1"), "{p:internal}:return:s1");
        for name in [c.all(&hub), c.group(&hub, "{x}"), c.user(&hub, "u")] {
            assert_eq!(crate::redisdb::hash_tag(&name), "p:chat");
        }
    }

    #[test]
    fn targets_map_to_channels() {
        let c = Channels::new("p");
        let hub = HubName::new("h");
        assert_eq!(
            c.for_target(&hub, &Target::AllExcept(vec!["x".into()])),
            [("p:h:all".to_owned(), Target::AllExcept(vec!["x".into()]))]
        );
        assert_eq!(
            c.for_target(&hub, &Target::Groups(vec!["a".into(), "b".into()]))
                .len(),
            1,
            "several groups travel once, on the all channel"
        );
        assert_eq!(
            c.for_target(
                &hub,
                &Target::Connections(vec!["a".into(), "b".into(), "a".into()])
            ),
            [
                (
                    "p:h:connection:a".to_owned(),
                    Target::Connection("a".into())
                ),
                (
                    "p:h:connection:b".to_owned(),
                    Target::Connection("b".into())
                ),
            ]
        );
        assert_eq!(
            c.for_target(&hub, &Target::Users(vec!["u".into()])),
            [("p:h:user:u".to_owned(), Target::User("u".into()))]
        );
    }
}
