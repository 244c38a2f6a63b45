//! Hub state in this server's memory (the single-server default).

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use futures_util::future::BoxFuture;
use parking_lot::Mutex;

use super::{StateError, StateOp, StateResult, StateStore, StateValue};
use crate::router::HubName;

enum Data {
    Text(String),
    Set(HashSet<String>),
}

struct Entry {
    data: Data,
    expires: Option<Instant>,
}

/// Writes between sweeps of expired keys.
const SWEEP_EVERY: u32 = 1024;

#[derive(Default)]
struct Inner {
    entries: HashMap<(HubName, String), Entry>,
    writes: u32,
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

    fn apply(&self, hub: &HubName, key: &str, op: StateOp) -> StateResult<StateValue> {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        inner.writes = inner.writes.wrapping_add(1);
        if inner.writes.is_multiple_of(SWEEP_EVERY) {
            inner
                .entries
                .retain(|_, e| e.expires.is_none_or(|t| t > now));
        }
        let id = (hub.clone(), key.to_owned());
        if inner
            .entries
            .get(&id)
            .is_some_and(|e| e.expires.is_some_and(|t| t <= now))
        {
            inner.entries.remove(&id);
        }
        let entries = &mut inner.entries;
        let wrong = || StateError::WrongType(format!("'{key}' holds another kind of value"));
        Ok(match op {
            StateOp::Get => match entries.get(&id) {
                None => StateValue::Value(None),
                Some(Entry {
                    data: Data::Text(t),
                    ..
                }) => StateValue::Value(Some(t.clone())),
                Some(_) => return Err(wrong()),
            },
            StateOp::Set { value, ttl } => {
                entries.insert(
                    id,
                    Entry {
                        data: Data::Text(value),
                        expires: ttl.map(|t| now + t),
                    },
                );
                StateValue::Nothing
            }
            StateOp::Delete => StateValue::Flag(entries.remove(&id).is_some()),
            StateOp::Incr(delta) => {
                let entry = entries.entry(id).or_insert_with(|| Entry {
                    data: Data::Text("0".into()),
                    expires: None,
                });
                let Data::Text(text) = &mut entry.data else {
                    return Err(wrong());
                };
                let current: i64 = text.parse().map_err(|_| {
                    StateError::WrongType(format!("'{key}' does not hold an integer"))
                })?;
                let next = current
                    .checked_add(delta)
                    .ok_or_else(|| StateError::WrongType(format!("'{key}' would overflow")))?;
                *text = next.to_string();
                StateValue::Integer(next)
            }
            StateOp::SetAdd(member) => {
                let entry = entries.entry(id).or_insert_with(|| Entry {
                    data: Data::Set(HashSet::new()),
                    expires: None,
                });
                let Data::Set(set) = &mut entry.data else {
                    return Err(wrong());
                };
                StateValue::Flag(set.insert(member))
            }
            StateOp::SetRemove(member) => match entries.get_mut(&id) {
                None => StateValue::Flag(false),
                Some(Entry {
                    data: Data::Set(set),
                    ..
                }) => {
                    let removed = set.remove(&member);
                    if set.is_empty() {
                        entries.remove(&id);
                    }
                    StateValue::Flag(removed)
                }
                Some(_) => return Err(wrong()),
            },
            StateOp::SetMembers => match entries.get(&id) {
                None => StateValue::Members(Vec::new()),
                Some(Entry {
                    data: Data::Set(set),
                    ..
                }) => StateValue::Members(set.iter().cloned().collect()),
                Some(_) => return Err(wrong()),
            },
            StateOp::Expire(ttl) => match entries.get_mut(&id) {
                None => StateValue::Flag(false),
                Some(entry) => {
                    entry.expires = Some(now + ttl);
                    StateValue::Flag(true)
                }
            },
        })
    }
}

impl StateStore for MemoryState {
    fn run(&self, hub: &HubName, key: &str, op: StateOp) -> BoxFuture<'_, StateResult<StateValue>> {
        let result = self.apply(hub, key, op);
        Box::pin(async move { result })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn run(s: &MemoryState, key: &str, op: StateOp) -> StateResult<StateValue> {
        s.apply(&HubName::new("h"), key, op)
    }

    #[test]
    fn values_counters_and_sets() {
        let s = MemoryState::new();
        assert_eq!(run(&s, "k", StateOp::Get), Ok(StateValue::Value(None)));
        run(
            &s,
            "k",
            StateOp::Set {
                value: "\"v\"".into(),
                ttl: None,
            },
        )
        .unwrap();
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
        s.apply(&HubName::new("a"), "n", StateOp::Incr(1)).unwrap();
        assert_eq!(
            s.apply(&HubName::new("b"), "n", StateOp::Get),
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
        run(
            &s,
            "j",
            StateOp::Set {
                value: "1".into(),
                ttl: None,
            },
        )
        .unwrap();
        assert_eq!(
            run(&s, "j", StateOp::Expire(Duration::from_millis(1))),
            Ok(StateValue::Flag(true))
        );
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(run(&s, "j", StateOp::Get), Ok(StateValue::Value(None)));
    }
}
