//! Hub state in this server's memory (the single-server default).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Instant;

use futures_util::future::BoxFuture;
use parking_lot::Mutex;

use super::{Quota, StateError, StateOp, StateResult, StateStore, StateValue};
use crate::types::HubName;

#[derive(Clone)]
enum Data {
    Text(String),
    Set(HashSet<String>),
}

#[derive(Clone)]
struct Entry {
    data: Data,
    expires: Option<Instant>,
}

impl Entry {
    /// The bytes this entry counts against its hub's quota, with its key.
    fn size(&self, key: &str) -> u64 {
        let value = match &self.data {
            Data::Text(text) => text.len(),
            Data::Set(set) => set.iter().map(String::len).sum(),
        };
        (key.len() + value) as u64
    }
}

/// One hub's keys, with what they count against its quota and when they expire.
#[derive(Default)]
struct Space {
    entries: HashMap<String, Entry>,
    /// Keys with a time to live, soonest first: expired ones are removed before each
    /// operation, so they stop counting against the quota when they expire.
    expiring: BTreeSet<(Instant, String)>,
    keys: u64,
    bytes: u64,
}

impl Space {
    fn purge(&mut self, now: Instant) {
        while let Some((at, _)) = self.expiring.first()
            && *at <= now
        {
            if let Some((_, key)) = self.expiring.pop_first() {
                self.remove(&key);
            }
        }
    }

    fn remove(&mut self, key: &str) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        if let Some(at) = entry.expires {
            self.expiring.remove(&(at, key.to_owned()));
        }
        self.keys = self.keys.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(entry.size(key));
        Some(entry)
    }

    /// Replaces the entry at `key` (or removes it, with `None`) if `quota` allows.
    fn commit(&mut self, key: &str, entry: Option<Entry>, quota: Quota) -> StateResult<()> {
        let Some(entry) = entry else {
            self.remove(key);
            return Ok(());
        };
        let old = self.entries.get(key).map(|e| e.size(key));
        let new = entry.size(key);
        quota
            .admit(self.keys, self.bytes, old, new)
            .map_err(|exceeded| quota.refusal(exceeded))?;
        self.remove(key);
        if let Some(at) = entry.expires {
            self.expiring.insert((at, key.to_owned()));
        }
        self.keys += 1;
        self.bytes += new;
        self.entries.insert(key.to_owned(), entry);
        Ok(())
    }

    fn expire(&mut self, key: &str, at: Instant) -> bool {
        let Some(entry) = self.entries.get_mut(key) else {
            return false;
        };
        if let Some(previous) = entry.expires.replace(at) {
            self.expiring.remove(&(previous, key.to_owned()));
        }
        self.expiring.insert((at, key.to_owned()));
        true
    }
}

#[derive(Default)]
struct Inner {
    spaces: HashMap<HubName, Space>,
}

/// In-memory state, with the same semantics as the Redis store.
#[derive(Default)]
pub struct MemoryState {
    inner: Mutex<Inner>,
}

impl MemoryState {
    pub fn new() -> Self {
        Self::default()
    }

    fn apply(
        &self,
        hub: &HubName,
        key: &str,
        op: StateOp,
        quota: Quota,
    ) -> StateResult<StateValue> {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        let space = inner.spaces.entry(hub.clone()).or_default();
        space.purge(now);
        let wrong = || StateError::WrongType(format!("'{key}' holds another kind of value"));
        let current = space.entries.get(key).cloned();
        Ok(match op {
            StateOp::Get => match current.map(|e| e.data) {
                None => StateValue::Value(None),
                Some(Data::Text(t)) => StateValue::Value(Some(t)),
                Some(Data::Set(_)) => return Err(wrong()),
            },
            StateOp::Set { value, ttl } => {
                let entry = Entry {
                    data: Data::Text(value),
                    expires: ttl.map(|t| now + t),
                };
                space.commit(key, Some(entry), quota)?;
                StateValue::Nothing
            }
            StateOp::Delete => StateValue::Flag(space.remove(key).is_some()),
            StateOp::Incr(delta) => {
                let (current, expires) = match current {
                    None => (0, None),
                    Some(Entry {
                        data: Data::Text(text),
                        expires,
                    }) => {
                        let n: i64 = text.parse().map_err(|_| {
                            StateError::WrongType(format!("'{key}' does not hold an integer"))
                        })?;
                        (n, expires)
                    }
                    Some(_) => return Err(wrong()),
                };
                let next = current
                    .checked_add(delta)
                    .ok_or_else(|| StateError::WrongType(format!("'{key}' would overflow")))?;
                let entry = Entry {
                    data: Data::Text(next.to_string()),
                    expires,
                };
                space.commit(key, Some(entry), quota)?;
                StateValue::Integer(next)
            }
            StateOp::SetAdd(member) => {
                let mut entry = match current {
                    None => Entry {
                        data: Data::Set(HashSet::new()),
                        expires: None,
                    },
                    Some(
                        entry @ Entry {
                            data: Data::Set(_), ..
                        },
                    ) => entry,
                    Some(_) => return Err(wrong()),
                };
                let Data::Set(set) = &mut entry.data else {
                    return Err(wrong());
                };
                if !set.insert(member) {
                    return Ok(StateValue::Flag(false));
                }
                space.commit(key, Some(entry), quota)?;
                StateValue::Flag(true)
            }
            StateOp::SetRemove(member) => match current {
                None => StateValue::Flag(false),
                Some(
                    mut entry @ Entry {
                        data: Data::Set(_), ..
                    },
                ) => {
                    let Data::Set(set) = &mut entry.data else {
                        return Err(wrong());
                    };
                    if !set.remove(&member) {
                        return Ok(StateValue::Flag(false));
                    }
                    // An emptied set disappears, as in Redis.
                    let keep = (!set.is_empty()).then_some(entry);
                    space.commit(key, keep, quota)?;
                    StateValue::Flag(true)
                }
                Some(_) => return Err(wrong()),
            },
            StateOp::SetMembers => match current.map(|e| e.data) {
                None => StateValue::Members(Vec::new()),
                Some(Data::Set(set)) => StateValue::Members(set.into_iter().collect()),
                Some(Data::Text(_)) => return Err(wrong()),
            },
            StateOp::Expire(ttl) => StateValue::Flag(space.expire(key, now + ttl)),
        })
    }

    /// Keys and bytes `hub` holds.
    #[cfg(test)]
    fn usage(&self, hub: &HubName) -> (u64, u64) {
        let mut inner = self.inner.lock();
        let space = inner.spaces.entry(hub.clone()).or_default();
        space.purge(Instant::now());
        (space.keys, space.bytes)
    }
}

impl StateStore for MemoryState {
    fn run(
        &self,
        hub: &HubName,
        key: &str,
        op: StateOp,
        quota: Quota,
    ) -> BoxFuture<'_, StateResult<StateValue>> {
        let result = self.apply(hub, key, op, quota);
        Box::pin(async move { result })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn run(s: &MemoryState, key: &str, op: StateOp) -> StateResult<StateValue> {
        s.apply(&HubName::new("h"), key, op, Quota::default())
    }

    fn set(value: &str) -> StateOp {
        StateOp::Set {
            value: value.into(),
            ttl: None,
        }
    }

    #[test]
    fn values_counters_and_sets() {
        let s = MemoryState::new();
        assert_eq!(run(&s, "k", StateOp::Get), Ok(StateValue::Value(None)));
        run(&s, "k", set("\"v\"")).unwrap();
        assert_eq!(
            run(&s, "k", StateOp::Get),
            Ok(StateValue::Value(Some("\"v\"".into())))
        );
        assert_eq!(run(&s, "n", StateOp::Incr(5)), Ok(StateValue::Integer(5)));
        assert_eq!(run(&s, "n", StateOp::Incr(-7)), Ok(StateValue::Integer(-2)));
        assert!(matches!(
            run(&s, "k", StateOp::Incr(1)),
            Err(StateError::WrongType(_))
        ));
        assert_eq!(
            run(&s, "s", StateOp::SetAdd("a".into())),
            Ok(StateValue::Flag(true))
        );
        assert_eq!(
            run(&s, "s", StateOp::SetAdd("a".into())),
            Ok(StateValue::Flag(false))
        );
        assert_eq!(
            run(&s, "s", StateOp::SetMembers),
            Ok(StateValue::Members(vec!["a".into()]))
        );
        assert!(matches!(
            run(&s, "s", StateOp::Get),
            Err(StateError::WrongType(_))
        ));
        assert_eq!(
            run(&s, "s", StateOp::SetRemove("a".into())),
            Ok(StateValue::Flag(true))
        );
        assert_eq!(
            run(&s, "s", StateOp::SetMembers),
            Ok(StateValue::Members(vec![]))
        );
        assert_eq!(run(&s, "k", StateOp::Delete), Ok(StateValue::Flag(true)));
        assert_eq!(run(&s, "k", StateOp::Delete), Ok(StateValue::Flag(false)));
    }

    #[test]
    fn hubs_do_not_share_keys() {
        let s = MemoryState::new();
        s.apply(&HubName::new("a"), "n", StateOp::Incr(1), Quota::default())
            .unwrap();
        assert_eq!(
            s.apply(&HubName::new("b"), "n", StateOp::Get, Quota::default()),
            Ok(StateValue::Value(None))
        );
    }

    #[test]
    fn keys_expire() {
        let s = MemoryState::new();
        run(
            &s,
            "k",
            StateOp::Set {
                value: "1".into(),
                ttl: Some(Duration::from_millis(1)),
            },
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(run(&s, "k", StateOp::Get), Ok(StateValue::Value(None)));
        run(&s, "j", set("1")).unwrap();
        assert_eq!(
            run(&s, "j", StateOp::Expire(Duration::from_millis(1))),
            Ok(StateValue::Flag(true))
        );
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(run(&s, "j", StateOp::Get), Ok(StateValue::Value(None)));
    }

    #[test]
    fn accounts_keys_and_bytes_of_every_kind() {
        let s = MemoryState::new();
        let hub = HubName::new("h");
        run(&s, "k", set("abc")).unwrap(); // 1 + 3
        run(&s, "n", StateOp::Incr(100)).unwrap(); // 1 + 3
        run(&s, "s", StateOp::SetAdd("xy".into())).unwrap(); // 1 + 2
        run(&s, "s", StateOp::SetAdd("z".into())).unwrap(); // + 1
        assert_eq!(s.usage(&hub), (3, 12));
        run(&s, "k", set("a")).unwrap();
        run(&s, "n", StateOp::Incr(-95)).unwrap(); // "5"
        run(&s, "s", StateOp::SetRemove("xy".into())).unwrap();
        assert_eq!(s.usage(&hub), (3, 6));
        run(&s, "s", StateOp::SetRemove("z".into())).unwrap();
        run(&s, "k", StateOp::Delete).unwrap();
        assert_eq!(s.usage(&hub), (1, 2));
    }

    #[test]
    fn refuses_what_would_pass_the_quota_and_changes_nothing() {
        let s = MemoryState::new();
        let hub = HubName::new("h");
        let quota = Quota {
            max_keys: 2,
            max_bytes: 12,
        };
        let run = |key: &str, op| s.apply(&hub, key, op, quota);
        run("a", set("12345")).unwrap();
        run("b", set("1")).unwrap();
        let too_many = run("c", set("1")).unwrap_err();
        assert_eq!(
            too_many,
            StateError::TooLarge(
                "the hub's state is limited to 2 keys (state-keys in its settings)".into()
            )
        );
        assert_eq!(run("c", StateOp::Get), Ok(StateValue::Value(None)));
        let too_big = run("a", set("1234567890")).unwrap_err();
        assert_eq!(
            too_big,
            StateError::TooLarge(
                "the hub's state is limited to 12 bytes (state-bytes in its settings)".into()
            )
        );
        assert_eq!(
            run("a", StateOp::Get),
            Ok(StateValue::Value(Some("12345".into())))
        );
        // Deleting makes room.
        run("b", StateOp::Delete).unwrap();
        run("c", StateOp::SetAdd("m".into())).unwrap();
        assert!(run("c", StateOp::SetAdd("mmmmmm".into())).is_err());
        assert_eq!(
            run("c", StateOp::SetMembers),
            Ok(StateValue::Members(vec!["m".into()]))
        );
    }

    #[test]
    fn expired_keys_give_their_room_back() {
        let s = MemoryState::new();
        let hub = HubName::new("h");
        let quota = Quota {
            max_keys: 1,
            max_bytes: 100,
        };
        s.apply(
            &hub,
            "a",
            StateOp::Set {
                value: "1".into(),
                ttl: Some(Duration::from_millis(1)),
            },
            quota,
        )
        .unwrap();
        assert!(s.apply(&hub, "b", set("1"), quota).is_err());
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            s.apply(&hub, "b", set("1"), quota).is_ok(),
            "the expired key no longer counts"
        );
        assert_eq!(s.usage(&hub), (1, 2));
    }
}
