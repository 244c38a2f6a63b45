//! The host side of a hub's imports. They only *record* what the hub asks for; the dispatcher
//! carries the effects out after the call, in order.

use std::time::Instant;

use serde_json::value::RawValue;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use std::sync::Arc;

use super::Effect;
use super::bindings;
use crate::presence::{self, Answer, Query};
use crate::router::{AskError, Router};
use crate::state::{self, Quota, StateOp, StateStore, StateValue};
use crate::types::{Envelope, GroupChange, HubName, Request, Target};

/// Denies memory growth past the hub's cap and remembers that it did, so the caller's error can
/// say "memory limit" instead of the allocator's abort.
pub(super) struct Limiter {
    pub(super) memory_limit: usize,
    pub(super) memory_denied: bool,
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.memory_denied = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a hub needing more than this is broken.
        Ok(desired <= 100_000)
    }
}

/// What went wrong inside a call besides a plain trap.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Faults {
    pub(super) deadline_hit: bool,
    pub(super) effects_overflow: bool,
}

/// The data of one hub instance's store.
pub(super) struct HubState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limiter: Limiter,
    pub(super) hub: HubName,
    /// The connection of the call in progress, for log lines.
    pub(super) connection: String,
    pub(super) effects: Vec<Effect>,
    effect_bytes: usize,
    max_effect_bytes: usize,
    pub(super) deadline: Instant,
    pub(super) faults: Faults,
    state: Arc<dyn StateStore>,
    quota: Quota,
    /// The request that opened the calling connection, for `caller.request`.
    pub(super) request: Option<Arc<Request>>,
    /// Where client-result questions go (`results.ask`); none in a runtime without a router.
    router: Option<Router>,
}

impl HubState {
    pub(super) fn new(
        hub: HubName,
        memory_limit: usize,
        max_effect_bytes: usize,
        state: Arc<dyn StateStore>,
        quota: Quota,
        router: Option<Router>,
    ) -> Self {
        // An empty WASI context: no preopened directories, no environment, no inherited stdio,
        // no sockets. The guest's std links against WASI, but every such call finds nothing.
        let wasi = WasiCtx::builder().build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter: Limiter {
                memory_limit,
                memory_denied: false,
            },
            hub,
            connection: String::new(),
            effects: Vec::new(),
            effect_bytes: 0,
            max_effect_bytes,
            deadline: Instant::now(),
            faults: Faults::default(),
            state,
            quota,
            request: None,
            router,
        }
    }

    async fn state(&mut self, key: String, op: StateOp) -> state::StateResult<StateValue> {
        state::check(&key, &op)?;
        self.state.run(&self.hub, &key, op, self.quota).await
    }

    /// Resets the per-call fields before a call.
    pub(super) fn begin_call(
        &mut self,
        connection: &str,
        request: Option<Arc<Request>>,
        deadline: Instant,
    ) {
        self.connection.clear();
        self.connection.push_str(connection);
        self.request = request;
        self.effects.clear();
        self.effect_bytes = 0;
        self.deadline = deadline;
        self.faults = Faults::default();
        self.limiter.memory_denied = false;
    }

    fn record(&mut self, effect: Effect, bytes: usize) -> wasmtime::Result<()> {
        self.effect_bytes = self.effect_bytes.saturating_add(bytes);
        if self.effect_bytes > self.max_effect_bytes {
            self.faults.effects_overflow = true;
            return Err(wasmtime::Error::msg(format!(
                "the call sent more than {} bytes of messages",
                self.max_effect_bytes
            )));
        }
        self.effects.push(effect);
        Ok(())
    }
}

impl WasiView for HubState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

fn target_bytes(target: &Target) -> usize {
    let list = |l: &[String]| l.iter().map(|s| s.len() + 8).sum::<usize>();
    match target {
        Target::All => 0,
        Target::AllExcept(l) | Target::Connections(l) | Target::Groups(l) | Target::Users(l) => {
            list(l)
        }
        Target::Connection(s) | Target::Group(s) | Target::User(s) => s.len(),
        Target::GroupExcept { group, excluded } => group.len() + list(excluded),
    }
}

/// Whether `text` is one JSON array: the frame is spliced from it, so anything else would
/// corrupt every recipient's stream.
pub(super) fn is_json_array(text: &str) -> bool {
    text.trim_start().starts_with('[') && serde_json::from_str::<&RawValue>(text).is_ok()
}

/// The imports both contract versions share, implemented once per version's generated traits.
macro_rules! shared_imports {
    ($v:ident) => {
        impl bindings::$v::hubhost::hub::types::Host for HubState {}

        impl bindings::$v::hubhost::hub::state::Host for HubState {
            async fn get(
                &mut self,
                key: String,
            ) -> StateCall<Option<String>, bindings::$v::hubhost::hub::state::StateError> {
                let result = self.state(key, StateOp::Get).await;
                Ok(result.and_then(StateValue::into_value).map_err(Into::into))
            }

            async fn set(
                &mut self,
                key: String,
                value: String,
                ttl_ms: Option<u64>,
            ) -> StateCall<(), bindings::$v::hubhost::hub::state::StateError> {
                let ttl = ttl_ms.map(std::time::Duration::from_millis);
                let result = self.state(key, StateOp::Set { value, ttl }).await;
                Ok(result.map(|_| ()).map_err(Into::into))
            }

            async fn delete(
                &mut self,
                key: String,
            ) -> StateCall<bool, bindings::$v::hubhost::hub::state::StateError> {
                let result = self.state(key, StateOp::Delete).await;
                Ok(result.and_then(StateValue::into_flag).map_err(Into::into))
            }

            async fn incr(
                &mut self,
                key: String,
                delta: i64,
            ) -> StateCall<i64, bindings::$v::hubhost::hub::state::StateError> {
                let result = self.state(key, StateOp::Incr(delta)).await;
                Ok(result
                    .and_then(StateValue::into_integer)
                    .map_err(Into::into))
            }

            async fn set_add(
                &mut self,
                key: String,
                member: String,
            ) -> StateCall<bool, bindings::$v::hubhost::hub::state::StateError> {
                let result = self.state(key, StateOp::SetAdd(member)).await;
                Ok(result.and_then(StateValue::into_flag).map_err(Into::into))
            }

            async fn set_remove(
                &mut self,
                key: String,
                member: String,
            ) -> StateCall<bool, bindings::$v::hubhost::hub::state::StateError> {
                let result = self.state(key, StateOp::SetRemove(member)).await;
                Ok(result.and_then(StateValue::into_flag).map_err(Into::into))
            }

            async fn set_members(
                &mut self,
                key: String,
            ) -> StateCall<Vec<String>, bindings::$v::hubhost::hub::state::StateError> {
                let result = self.state(key, StateOp::SetMembers).await;
                Ok(result
                    .and_then(StateValue::into_members)
                    .map_err(Into::into))
            }

            async fn expire(
                &mut self,
                key: String,
                ttl_ms: u64,
            ) -> StateCall<bool, bindings::$v::hubhost::hub::state::StateError> {
                let ttl = std::time::Duration::from_millis(ttl_ms);
                let result = self.state(key, StateOp::Expire(ttl)).await;
                Ok(result.and_then(StateValue::into_flag).map_err(Into::into))
            }
        }

        impl From<state::StateError> for bindings::$v::hubhost::hub::state::StateError {
            fn from(error: state::StateError) -> Self {
                match error {
                    state::StateError::Unavailable(m) => Self::Unavailable(m),
                    state::StateError::WrongType(m) => Self::WrongType(m),
                    state::StateError::TooLarge(m) => Self::TooLarge(m),
                }
            }
        }

        impl bindings::$v::hubhost::hub::clients::Host for HubState {
            fn send(
                &mut self,
                to: bindings::$v::Target,
                method: String,
                arguments: String,
            ) -> wasmtime::Result<()> {
                self.send(Target::from(to), method, arguments)
            }
        }

        impl bindings::$v::hubhost::hub::groups::Host for HubState {
            fn add(&mut self, connection_id: String, group: String) -> wasmtime::Result<()> {
                let bytes = connection_id.len() + group.len();
                let hub = self.hub.clone();
                self.record(
                    Effect::Group(GroupChange::Add {
                        hub,
                        connection: connection_id,
                        group,
                    }),
                    bytes,
                )
            }

            fn remove(&mut self, connection_id: String, group: String) -> wasmtime::Result<()> {
                let bytes = connection_id.len() + group.len();
                let hub = self.hub.clone();
                self.record(
                    Effect::Group(GroupChange::Remove {
                        hub,
                        connection: connection_id,
                        group,
                    }),
                    bytes,
                )
            }
        }

        impl bindings::$v::hubhost::hub::log::Host for HubState {
            fn write(
                &mut self,
                level: bindings::$v::Level,
                message: String,
            ) -> wasmtime::Result<()> {
                hub_log(level.into(), self.hub.as_str(), &self.connection, &message);
                Ok(())
            }
        }
    };
}

/// What a `state` import answers.
type StateCall<T, E> = wasmtime::Result<Result<T, E>>;

shared_imports!(v1);
shared_imports!(v2);

impl bindings::v2::hubhost::hub::caller::Host for HubState {
    fn request(&mut self) -> wasmtime::Result<bindings::v2::hubhost::hub::types::HttpRequest> {
        let request = self.request.as_deref().cloned().unwrap_or_default();
        Ok(bindings::v2::hubhost::hub::types::HttpRequest {
            headers: request.headers(),
            query: request.query(),
            cookies: request.cookies(),
        })
    }

    fn abort(&mut self) -> wasmtime::Result<()> {
        self.record(Effect::Abort, 0)
    }
}

impl bindings::v2::hubhost::hub::results::Host for HubState {
    async fn ask(
        &mut self,
        connection_id: String,
        method: String,
        arguments: String,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<String, bindings::v2::hubhost::hub::results::AskError>> {
        use bindings::v2::hubhost::hub::results::AskError as Wit;
        if !is_json_array(&arguments) {
            return Err(wasmtime::Error::msg(format!(
                "results.ask('{method}') was given arguments that are not a JSON array"
            )));
        }
        let Some(router) = self.router.clone() else {
            return Ok(Err(Wit::Gone));
        };
        let left = self.deadline.saturating_duration_since(Instant::now());
        let timeout = std::time::Duration::from_millis(timeout_ms.into()).min(left);
        let hub = self.hub.clone();
        let answer = router
            .ask(&hub, &connection_id, &method, &arguments, timeout)
            .await;
        Ok(answer.map_err(|e| match e {
            AskError::Client(text) => Wit::Client(text),
            AskError::Timeout => Wit::Timeout,
            AskError::Gone => Wit::Gone,
        }))
    }
}

impl HubState {
    /// A `presence` query, over every server. The future holds no borrow of the store's data
    /// (which is not `Sync`).
    fn presence(
        &self,
        query: Query,
    ) -> futures_util::future::BoxFuture<'static, Result<Answer, presence::PresenceError>> {
        match &self.router {
            Some(router) => router.presence().read(&self.hub, query),
            None => Box::pin(async {
                Err(presence::PresenceError::Unavailable(
                    "this runtime has no presence".into(),
                ))
            }),
        }
    }

    /// A `presence` query answering a count.
    async fn count(&mut self, query: Query) -> PresenceCall<u64> {
        let answer = self.presence(query).await;
        Ok(answer.map(Answer::into_count).map_err(Into::into))
    }
}

/// What a `presence` import answers.
type PresenceCall<T> =
    wasmtime::Result<Result<T, bindings::v2::hubhost::hub::presence::PresenceError>>;

impl From<presence::PresenceError> for bindings::v2::hubhost::hub::presence::PresenceError {
    fn from(error: presence::PresenceError) -> Self {
        match error {
            presence::PresenceError::Unavailable(m) => Self::Unavailable(m),
        }
    }
}

impl bindings::v2::hubhost::hub::presence::Host for HubState {
    async fn connections(&mut self) -> PresenceCall<u64> {
        self.count(Query::Connections).await
    }

    async fn users(&mut self) -> PresenceCall<u64> {
        self.count(Query::Users).await
    }

    async fn user_connections(&mut self, user_id: String) -> PresenceCall<u64> {
        self.count(Query::UserConnections(user_id)).await
    }

    async fn group_size(&mut self, group: String) -> PresenceCall<u64> {
        self.count(Query::GroupSize(group)).await
    }

    async fn group_members(
        &mut self,
        group: String,
        limit: u32,
    ) -> PresenceCall<Vec<bindings::v2::hubhost::hub::presence::Member>> {
        let answer = self.presence(Query::GroupMembers { group, limit }).await;
        Ok(answer.map_err(Into::into).map(|answer| {
            answer
                .into_members()
                .into_iter()
                .map(|m| bindings::v2::hubhost::hub::presence::Member {
                    connection_id: m.connection,
                    user_id: m.user,
                })
                .collect()
        }))
    }
}

impl HubState {
    /// `clients.send`, whichever contract version asked.
    fn send(&mut self, target: Target, method: String, arguments: String) -> wasmtime::Result<()> {
        if !is_json_array(&arguments) {
            return Err(wasmtime::Error::msg(format!(
                "clients.send('{method}') was given arguments that are not a JSON array"
            )));
        }
        let bytes = method.len() + arguments.len() + target_bytes(&target);
        let hub = self.hub.clone();
        self.record(
            Effect::Send(Envelope {
                hub,
                target,
                method,
                arguments,
            }),
            bytes,
        )
    }
}

/// Longest log line kept from a hub; the rest is cut so a hub cannot flood the log.
const MAX_LOG_LINE: usize = 8 * 1024;

/// Writes a hub's log line to the host's log, tagged with the hub and the calling connection.
pub(super) fn hub_log(level: tracing::Level, hub: &str, connection: &str, message: &str) {
    let message = if message.len() > MAX_LOG_LINE {
        let mut cut = MAX_LOG_LINE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        std::borrow::Cow::Owned(format!("{}…", &message[..cut]))
    } else {
        std::borrow::Cow::Borrowed(message)
    };
    match level {
        tracing::Level::TRACE => tracing::trace!(target: "hub", hub, connection, "{message}"),
        tracing::Level::DEBUG => tracing::debug!(target: "hub", hub, connection, "{message}"),
        tracing::Level::INFO => tracing::info!(target: "hub", hub, connection, "{message}"),
        tracing::Level::WARN => tracing::warn!(target: "hub", hub, connection, "{message}"),
        tracing::Level::ERROR => tracing::error!(target: "hub", hub, connection, "{message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::is_json_array;

    #[test]
    fn only_json_arrays_pass() {
        assert!(is_json_array("[]"));
        assert!(is_json_array(" [1, \"a\", {\"b\": null}]"));
        assert!(!is_json_array("{}"));
        assert!(!is_json_array("[1,"));
        assert!(!is_json_array("[1] [2]"));
        assert!(!is_json_array("\"x\""));
    }
}
