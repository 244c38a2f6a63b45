use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::__bindings::hubhost::hub::state::StateError;
use crate::error::{HubError, HubResult};
use crate::imports::state as wit;

/// Shared state of the hub: values, counters and sets that every server of the deployment sees
/// (kept in Redis when the host has one, in the host's memory otherwise).
///
/// Hubs are transient, so this is where a hub keeps what must outlive a call. Keys are
/// namespaced per hub; values are stored as JSON. Operations take effect at once (unlike sends,
/// which go out after the method returns). An unreachable store is an unexpected failure of the
/// call, unless the hub handles the error.
///
/// ```no_run
/// use hubhost_sdk::prelude::*;
///
/// pub struct Presence;
///
/// #[hub]
/// impl Presence {
///     fn on_connected(ctx: &Context) -> HubResult {
///         let online = State::incr("online", 1)?;
///         Clients::all().send("online", (online,))
///     }
///
///     fn on_disconnected(ctx: &Context, _error: Option<String>) -> HubResult {
///         let online = State::incr("online", -1)?;
///         Clients::all().send("online", (online,))
///     }
/// }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct State;

fn failed(op: &str, key: &str, error: StateError) -> HubError {
    let detail = match error {
        StateError::Unavailable(m) => format!("state store unavailable: {m}"),
        StateError::WrongType(m) => format!("wrong type: {m}"),
        StateError::TooLarge(m) => format!("too large: {m}"),
    };
    HubError::unexpected(format!("State::{op}(\"{key}\") failed: {detail}"))
}

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl State {
    /// The value at `key`, decoded from JSON, or `None` if absent.
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// # fn f() -> HubResult {
    /// let topic: Option<String> = State::get("topic")?;
    /// # Ok(()) }
    /// ```
    pub fn get<T: DeserializeOwned>(key: &str) -> HubResult<Option<T>> {
        match wit::get(key).map_err(|e| failed("get", key, e))? {
            Some(json) => Ok(Some(serde_json::from_str(&json)?)),
            None => Ok(None),
        }
    }

    /// Stores `value` (as JSON) at `key`.
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// # fn f() -> HubResult {
    /// State::set("topic", &"Rust and WebAssembly")?;
    /// # Ok(()) }
    /// ```
    pub fn set<T: Serialize + ?Sized>(key: &str, value: &T) -> HubResult {
        let json = serde_json::to_string(value)?;
        wit::set(key, &json, None).map_err(|e| failed("set", key, e))
    }

    /// Stores `value` at `key` for `ttl`, after which the key disappears.
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// # use std::time::Duration;
    /// # fn f() -> HubResult {
    /// State::set_with_ttl("last-ping", &1_700_000_000u64, Duration::from_secs(60))?;
    /// # Ok(()) }
    /// ```
    pub fn set_with_ttl<T: Serialize + ?Sized>(key: &str, value: &T, ttl: Duration) -> HubResult {
        let json = serde_json::to_string(value)?;
        wit::set(key, &json, Some(millis(ttl))).map_err(|e| failed("set", key, e))
    }

    /// Removes `key`; `true` if it existed.
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// # fn f() -> HubResult {
    /// State::delete("topic")?;
    /// # Ok(()) }
    /// ```
    pub fn delete(key: &str) -> HubResult<bool> {
        wit::delete(key).map_err(|e| failed("delete", key, e))
    }

    /// Adds `delta` (may be negative) to the counter at `key`, atomically across servers, and
    /// returns the new value. An absent key counts as 0.
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// # fn f() -> HubResult {
    /// let visits = State::incr("visits", 1)?;
    /// # Ok(()) }
    /// ```
    pub fn incr(key: &str, delta: i64) -> HubResult<i64> {
        wit::incr(key, delta).map_err(|e| failed("incr", key, e))
    }

    /// Adds `member` to the set at `key`; `true` if it was new.
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// # fn f(ctx: &Context) -> HubResult {
    /// State::set_add("room:lobby", ctx.connection_id())?;
    /// # Ok(()) }
    /// ```
    pub fn set_add(key: &str, member: &str) -> HubResult<bool> {
        wit::set_add(key, member).map_err(|e| failed("set_add", key, e))
    }

    /// Removes `member` from the set at `key`; `true` if it was there.
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// # fn f(ctx: &Context) -> HubResult {
    /// State::set_remove("room:lobby", ctx.connection_id())?;
    /// # Ok(()) }
    /// ```
    pub fn set_remove(key: &str, member: &str) -> HubResult<bool> {
        wit::set_remove(key, member).map_err(|e| failed("set_remove", key, e))
    }

    /// The members of the set at `key` (empty if absent), in no particular order.
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// # fn f() -> HubResult {
    /// let players = State::set_members("room:lobby")?;
    /// # Ok(()) }
    /// ```
    pub fn set_members(key: &str) -> HubResult<Vec<String>> {
        wit::set_members(key).map_err(|e| failed("set_members", key, e))
    }

    /// Makes `key` expire after `ttl`; `true` if the key exists.
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// # use std::time::Duration;
    /// # fn f() -> HubResult {
    /// State::expire("room:lobby", Duration::from_secs(3600))?;
    /// # Ok(()) }
    /// ```
    pub fn expire(key: &str, ttl: Duration) -> HubResult<bool> {
        wit::expire(key, millis(ttl)).map_err(|e| failed("expire", key, e))
    }
}
