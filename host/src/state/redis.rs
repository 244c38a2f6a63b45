//! Hub state in Redis: `{prefix}:{hub}:state:{key}` (`{{prefix}:{hub}}:state:{key}` on a cluster,
//! so a hub's keys share a slot), shared by every server of the deployment.
//!
//! Reads are plain commands. Writes run one Lua script (`write.lua`), atomically: it keeps each
//! hub's usage beside its keys (`…:state-meta:*`: every key's size, the total
//! bytes, and when keys expire, so expired keys stop counting) and refuses a write that would
//! take the hub past its quota, whichever server makes it.

use std::time::Duration;

use futures_util::future::BoxFuture;

use super::{Exceeded, Quota, StateError, StateOp, StateResult, StateStore, StateValue};
use crate::redisdb::{Commands, Keyspace};
use crate::types::HubName;

/// Longest a state operation waits for Redis: the hub's call is blocked meanwhile, and epoch
/// deadlines do not interrupt host calls.
const OP_TIMEOUT: Duration = Duration::from_secs(2);

/// The write script.
const WRITE: &str = include_str!("write.lua");

/// State kept in Redis.
pub struct RedisState {
    connection: Commands,
    keys: Keyspace,
    write: redis::Script,
}

impl RedisState {
    pub fn new(connection: Commands, keys: Keyspace) -> Self {
        Self {
            connection,
            keys,
            write: redis::Script::new(WRITE),
        }
    }

    fn value_key(&self, hub: &HubName, key: &str) -> String {
        format!("{}:state:{key}", self.keys.hub(hub))
    }

    async fn apply(
        &self,
        hub: &HubName,
        key: &str,
        op: StateOp,
        quota: Quota,
    ) -> StateResult<StateValue> {
        match tokio::time::timeout(OP_TIMEOUT, self.query(hub, key, op, quota)).await {
            Ok(Ok(value)) => value,
            Ok(Err(e)) => Err(classify(&e)),
            Err(_) => Err(StateError::Unavailable(format!(
                "Redis did not answer within {OP_TIMEOUT:?}"
            ))),
        }
    }

    /// Reads with a command, writes with the script.
    async fn query(
        &self,
        hub: &HubName,
        key: &str,
        op: StateOp,
        quota: Quota,
    ) -> redis::RedisResult<StateResult<StateValue>> {
        let full = self.value_key(hub, key);
        let mut con = self.connection.clone();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
        let (name, args): (&str, Vec<String>) = match op {
            StateOp::Get => {
                let value = redis::cmd("GET").arg(&full).query_async(&mut con).await?;
                return Ok(Ok(StateValue::Value(value)));
            }
            StateOp::SetMembers => {
                let members = redis::cmd("SMEMBERS")
                    .arg(&full)
                    .query_async(&mut con)
                    .await?;
                return Ok(Ok(StateValue::Members(members)));
            }
            StateOp::Set { value, ttl } => {
                let ttl = ttl.map(|t| ms(t).to_string()).unwrap_or_default();
                ("set", vec![value, ttl])
            }
            StateOp::Delete => ("delete", vec![]),
            StateOp::Incr(delta) => ("incr", vec![delta.to_string()]),
            StateOp::SetAdd(member) => ("set-add", vec![member]),
            StateOp::SetRemove(member) => ("set-remove", vec![member]),
            StateOp::Expire(ttl) => ("expire", vec![ms(ttl).to_string()]),
        };
        let meta = format!("{}:state-meta", self.keys.hub(hub));
        let mut invocation = self.write.prepare_invoke();
        invocation
            .key(&full)
            .key(format!("{meta}:sizes"))
            .key(format!("{meta}:expiry"))
            .key(format!("{meta}:bytes"))
            .arg(name)
            .arg(key)
            .arg(quota.max_keys)
            .arg(quota.max_bytes);
        for arg in &args {
            invocation.arg(arg);
        }
        let (status, answer): (String, redis::Value) = invocation.invoke_async(&mut con).await?;
        Ok(Written { status, answer }.into_value(name, quota))
    }
}

/// The script's answer.
struct Written {
    status: String,
    answer: redis::Value,
}

impl Written {
    fn into_value(self, op: &str, quota: Quota) -> StateResult<StateValue> {
        let integer = || match &self.answer {
            redis::Value::Int(n) => Ok(*n),
            other => Err(StateError::Unavailable(format!(
                "the state script answered {other:?}"
            ))),
        };
        match (self.status.as_str(), op) {
            ("quota", _) => Err(quota.refusal(match &self.answer {
                redis::Value::BulkString(b) if b == b"keys" => Exceeded::Keys,
                _ => Exceeded::Bytes,
            })),
            ("ok", "set") => Ok(StateValue::Nothing),
            ("ok", "incr") => integer().map(StateValue::Integer),
            ("ok", _) => integer().map(|n| StateValue::Flag(n > 0)),
            (other, _) => Err(StateError::Unavailable(format!(
                "the state script answered '{other}'"
            ))),
        }
    }
}

fn classify(error: &redis::RedisError) -> StateError {
    let text = error.to_string();
    if error.code() == Some("WRONGTYPE")
        || text.contains("WRONGTYPE")
        || text.contains("not an integer")
        || text.contains("overflow")
    {
        StateError::WrongType(text)
    } else {
        StateError::Unavailable(text)
    }
}

impl StateStore for RedisState {
    fn run(
        &self,
        hub: &HubName,
        key: &str,
        op: StateOp,
        quota: Quota,
    ) -> BoxFuture<'_, StateResult<StateValue>> {
        let hub = hub.clone();
        let key = key.to_owned();
        Box::pin(async move { self.apply(&hub, &key, op, quota).await })
    }
}
