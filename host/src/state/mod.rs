//! Shared hub state behind the `state` import: a small key-value store with counters and sets.
//!
//! [`memory`] serves a single server; [`redis`] keeps the values in Redis under
//! `{prefix}:{hub}:state:{key}` so every server of a deployment sees the same ones.
//!
//! Each hub's state is bounded by a [`Quota`] of keys and bytes, so a hub cannot grow the
//! host's or Redis's memory without bound: an operation that would go past it fails with
//! `too-large` and changes nothing. A key counts while it exists (until deleted or expired);
//! its bytes are the key's length plus its value's (a text, the decimal digits of a counter, or
//! the members of a set). Both stores account the same way.

pub mod memory;
pub mod redis;

use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::types::HubName;

/// Longest key accepted, in bytes.
pub const MAX_KEY: usize = 512;
/// Largest value accepted, in bytes.
pub const MAX_VALUE: usize = 1 << 20;

/// How much state one hub may keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Keys alive at once.
    pub max_keys: u64,
    /// Bytes of keys and values, over all keys.
    pub max_bytes: u64,
}

impl Default for Quota {
    /// 10,000 keys and 16 MiB per hub: far beyond what presence, counters and room lists need,
    /// small enough that a runaway hub cannot exhaust a shared Redis.
    fn default() -> Self {
        Self {
            max_keys: 10_000,
            max_bytes: 16 << 20,
        }
    }
}

/// What an operation would take past a quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    Keys,
    Bytes,
}

impl Quota {
    /// The error for an operation refused by this quota.
    pub fn refusal(&self, exceeded: Exceeded) -> StateError {
        StateError::TooLarge(match exceeded {
            Exceeded::Keys => format!(
                "the hub's state is limited to {} keys (state-keys in its settings)",
                self.max_keys
            ),
            Exceeded::Bytes => format!(
                "the hub's state is limited to {} bytes (state-bytes in its settings)",
                self.max_bytes
            ),
        })
    }

    /// Whether a hub holding `keys` keys and `bytes` bytes may change one key whose size goes
    /// from `old` (`None`: the key does not exist) to `new`. Changes that do not grow the state
    /// always pass, even over a quota lowered since.
    pub fn admit(&self, keys: u64, bytes: u64, old: Option<u64>, new: u64) -> Result<(), Exceeded> {
        if old.is_none() && keys + 1 > self.max_keys {
            return Err(Exceeded::Keys);
        }
        let old = old.unwrap_or(0);
        if new > old && bytes - bytes.min(old) + new > self.max_bytes {
            return Err(Exceeded::Bytes);
        }
        Ok(())
    }
}

/// Why a state operation failed; passed to the hub as its `state-error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("wrong type: {0}")]
    WrongType(String),
    #[error("too large: {0}")]
    TooLarge(String),
}

/// The result of a state operation.
pub type StateResult<T> = Result<T, StateError>;

/// One operation on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateOp {
    Get,
    Set {
        value: String,
        ttl: Option<Duration>,
    },
    Delete,
    Incr(i64),
    SetAdd(String),
    SetRemove(String),
    SetMembers,
    Expire(Duration),
}

/// What an operation returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateValue {
    Nothing,
    Value(Option<String>),
    Flag(bool),
    Integer(i64),
    Members(Vec<String>),
}

impl StateValue {
    /// The answer of `Get`.
    pub fn into_value(self) -> StateResult<Option<String>> {
        match self {
            Self::Value(v) => Ok(v),
            other => Err(other.mismatch()),
        }
    }

    /// The answer of `Delete`, `SetAdd`, `SetRemove` and `Expire`.
    pub fn into_flag(self) -> StateResult<bool> {
        match self {
            Self::Flag(b) => Ok(b),
            other => Err(other.mismatch()),
        }
    }

    /// The answer of `Incr`.
    pub fn into_integer(self) -> StateResult<i64> {
        match self {
            Self::Integer(n) => Ok(n),
            other => Err(other.mismatch()),
        }
    }

    /// The answer of `SetMembers`.
    pub fn into_members(self) -> StateResult<Vec<String>> {
        match self {
            Self::Members(m) => Ok(m),
            other => Err(other.mismatch()),
        }
    }

    /// A store answered with a value of an unexpected shape: a host bug, not the hub's.
    fn mismatch(self) -> StateError {
        StateError::Unavailable(format!("state store answered {self:?}"))
    }
}

/// A store of hub state.
pub trait StateStore: Send + Sync + 'static {
    /// Runs one operation on `key` of `hub`, within the hub's `quota`.
    fn run(
        &self,
        hub: &HubName,
        key: &str,
        op: StateOp,
        quota: Quota,
    ) -> BoxFuture<'_, StateResult<StateValue>>;
}

/// Checks sizes before an operation reaches a store.
pub fn check(key: &str, op: &StateOp) -> StateResult<()> {
    if key.len() > MAX_KEY {
        return Err(StateError::TooLarge(format!(
            "keys are limited to {MAX_KEY} bytes"
        )));
    }
    let value_len = match op {
        StateOp::Set { value, .. } => value.len(),
        StateOp::SetAdd(m) | StateOp::SetRemove(m) => m.len(),
        _ => 0,
    };
    if value_len > MAX_VALUE {
        return Err(StateError::TooLarge(format!(
            "values are limited to {} KiB",
            MAX_VALUE >> 10
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_of_the_wrong_shape_are_a_store_failure() {
        assert_eq!(StateValue::Flag(true).into_flag(), Ok(true));
        assert_eq!(StateValue::Integer(3).into_integer(), Ok(3));
        assert_eq!(
            StateValue::Integer(3).into_flag(),
            Err(StateError::Unavailable(
                "state store answered Integer(3)".into()
            ))
        );
    }

    #[test]
    fn the_quota_admits_what_does_not_grow_past_it() {
        let q = Quota {
            max_keys: 2,
            max_bytes: 10,
        };
        assert_eq!(
            q.admit(1, 5, None, 5),
            Ok(()),
            "a second key, to exactly 10 bytes"
        );
        assert_eq!(q.admit(2, 5, None, 1), Err(Exceeded::Keys));
        assert_eq!(q.admit(1, 5, None, 6), Err(Exceeded::Bytes));
        assert_eq!(q.admit(2, 10, Some(4), 5), Err(Exceeded::Bytes));
        assert_eq!(q.admit(2, 10, Some(4), 4), Ok(()), "same size");
        assert_eq!(
            q.admit(5, 50, Some(9), 3),
            Ok(()),
            "shrinking passes over a lowered quota"
        );
    }
}
