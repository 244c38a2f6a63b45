//! Shared hub state behind the `state` import: a small key-value store with counters and sets.
//!
//! [`memory`] serves a single server; [`redis`] keeps the values in Redis under
//! `{prefix}:{hub}:state:{key}` so every server of a deployment sees the same ones.

pub mod memory;
pub mod redis;

use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::router::HubName;

/// Longest key accepted, in bytes.
pub const MAX_KEY: usize = 512;
/// Largest value accepted, in bytes.
pub const MAX_VALUE: usize = 1 << 20;

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
    /// Runs one operation on `key` of `hub`.
    fn run(&self, hub: &HubName, key: &str, op: StateOp) -> BoxFuture<'_, StateResult<StateValue>>;
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
}
