//! Hub state in Redis: `{prefix}:{hub}:state:{key}`, shared by every server of the deployment.

use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::aio::ConnectionManager;

use super::{StateError, StateOp, StateResult, StateStore, StateValue};
use crate::router::HubName;

/// Longest a state operation waits for Redis: the hub's call is blocked meanwhile, and epoch
/// deadlines do not interrupt host calls.
const OP_TIMEOUT: Duration = Duration::from_secs(2);

/// State kept in Redis.
pub struct RedisState {
    connection: ConnectionManager,
    prefix: String,
}

impl RedisState {
    pub fn new(connection: ConnectionManager, prefix: impl Into<String>) -> Self {
        Self {
            connection,
            prefix: prefix.into(),
        }
    }

    async fn apply(&self, hub: &HubName, key: &str, op: StateOp) -> StateResult<StateValue> {
        let full = format!("{}:{}:state:{}", self.prefix, hub, key);
        let mut con = self.connection.clone();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
        let work = async move {
            Ok::<_, redis::RedisError>(match op {
                StateOp::Get => {
                    StateValue::Value(redis::cmd("GET").arg(&full).query_async(&mut con).await?)
                }
                StateOp::Set { value, ttl } => {
                    let mut cmd = redis::cmd("SET");
                    cmd.arg(&full).arg(value);
                    if let Some(ttl) = ttl {
                        cmd.arg("PX").arg(ms(ttl));
                    }
                    cmd.query_async::<()>(&mut con).await?;
                    StateValue::Nothing
                }
                StateOp::Delete => {
                    let n: i64 = redis::cmd("DEL").arg(&full).query_async(&mut con).await?;
                    StateValue::Flag(n > 0)
                }
                StateOp::Incr(delta) => StateValue::Integer(
                    redis::cmd("INCRBY")
                        .arg(&full)
                        .arg(delta)
                        .query_async(&mut con)
                        .await?,
                ),
                StateOp::SetAdd(member) => {
                    let n: i64 = redis::cmd("SADD")
                        .arg(&full)
                        .arg(member)
                        .query_async(&mut con)
                        .await?;
                    StateValue::Flag(n > 0)
                }
                StateOp::SetRemove(member) => {
                    let n: i64 = redis::cmd("SREM")
                        .arg(&full)
                        .arg(member)
                        .query_async(&mut con)
                        .await?;
                    StateValue::Flag(n > 0)
                }
                StateOp::SetMembers => StateValue::Members(
                    redis::cmd("SMEMBERS")
                        .arg(&full)
                        .query_async(&mut con)
                        .await?,
                ),
                StateOp::Expire(ttl) => {
                    let n: i64 = redis::cmd("PEXPIRE")
                        .arg(&full)
                        .arg(ms(ttl))
                        .query_async(&mut con)
                        .await?;
                    StateValue::Flag(n > 0)
                }
            })
        };
        match tokio::time::timeout(OP_TIMEOUT, work).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(classify(&e)),
            Err(_) => Err(StateError::Unavailable(format!(
                "Redis did not answer within {OP_TIMEOUT:?}"
            ))),
        }
    }
}

fn classify(error: &redis::RedisError) -> StateError {
    let text = error.to_string();
    if error.code() == Some("WRONGTYPE")
        || text.contains("not an integer")
        || text.contains("overflow")
    {
        StateError::WrongType(text)
    } else {
        StateError::Unavailable(text)
    }
}

impl StateStore for RedisState {
    fn run(&self, hub: &HubName, key: &str, op: StateOp) -> BoxFuture<'_, StateResult<StateValue>> {
        let hub = hub.clone();
        let key = key.to_owned();
        Box::pin(async move { self.apply(&hub, &key, op).await })
    }
}
