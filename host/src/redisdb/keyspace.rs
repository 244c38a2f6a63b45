//! Where a hub's keys and channels start, on one Redis or a cluster.

use crate::types::HubName;

/// The start of every Redis name of a deployment.
///
/// On one Redis a hub's names start `prefix:hub` (as they always have, so an upgrade keeps its
/// state and talks to servers of the previous version). On a cluster they start `{prefix:hub}`,
/// a hash tag, so all of them hash to one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyspace {
    prefix: String,
    clustered: bool,
}

impl Keyspace {
    /// Names for one Redis server.
    pub fn single(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            clustered: false,
        }
    }

    /// Names for a Redis Cluster: hash-tagged per hub.
    pub fn cluster(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            clustered: true,
        }
    }

    /// The deployment's prefix (SignalR's "AppName").
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether names are hash-tagged for a cluster.
    pub fn is_clustered(&self) -> bool {
        self.clustered
    }

    /// The start of every name of `hub`'s.
    pub fn hub(&self, hub: &HubName) -> String {
        self.tagged(hub.as_str())
    }

    /// The start of the names of channels between servers (group commands, acks, answers).
    pub fn internal(&self) -> String {
        self.tagged("internal")
    }

    /// The stream every packet published on `hub`'s channels is appended to (durable
    /// reconnect).
    pub fn log(&self, hub: &HubName) -> String {
        format!("{}:log", self.hub(hub))
    }

    /// What durable reconnect keeps for the connection of `token`: its record, and the frames
    /// the client has not acknowledged that the log cannot give again.
    pub fn durable(&self, hub: &HubName, token: &str) -> (String, String) {
        let record = format!("{}:durable:{token}", self.hub(hub));
        let frames = format!("{record}:frames");
        (record, frames)
    }

    fn tagged(&self, name: &str) -> String {
        if self.clustered {
            format!("{{{}:{name}}}", self.prefix)
        } else {
            format!("{}:{name}", self.prefix)
        }
    }
}

/// The part of a key or channel name a Redis Cluster hashes to find its slot: what is between
/// the first `{` and the next `}` when that is not empty, otherwise the whole name. Names with
/// the same tag are in the same slot.
pub fn hash_tag(name: &str) -> &str {
    if let Some(open) = name.find('{')
        && let Some(len) = name[open + 1..].find('}')
        && len > 0
    {
        return &name[open + 1..open + 1 + len];
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_redis_keeps_the_old_names() {
        let keys = Keyspace::single("app");
        assert_eq!(keys.hub(&HubName::new("chat")), "app:chat");
        assert_eq!(keys.internal(), "app:internal");
    }

    #[test]
    fn a_cluster_tags_each_hub() {
        let keys = Keyspace::cluster("app");
        assert_eq!(keys.hub(&HubName::new("chat")), "{app:chat}");
        assert_eq!(keys.internal(), "{app:internal}");
        assert_eq!(hash_tag("{app:chat}:group:a{b}"), "app:chat");
    }

    #[test]
    fn hash_tags_follow_redis_rules() {
        assert_eq!(hash_tag("plain"), "plain");
        assert_eq!(hash_tag("{}x"), "{}x", "an empty tag hashes the whole name");
        assert_eq!(hash_tag("a{b"), "a{b");
        assert_eq!(hash_tag("a{b}{c}"), "b");
        assert_eq!(hash_tag("a}{b}"), "b");
    }
}
