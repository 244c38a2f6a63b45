//! [`SdkHub`]: a hub written with `hubhost-sdk`, compiled for the host's target, as a
//! [`NativeHub`] of hubhost's runtime. Each import maps onto the [`NativeHost`] call that the
//! Wasm import of the same name makes, so only the sandbox differs.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use hubhost::presence::{Answer as PresenceAnswer, PresenceError, Query};
use hubhost::runtime::{
    Answer, Call, Exception, HubError, MethodInfo, NativeHost, NativeHub, ParamInfo, StreamNext,
    StreamStep, UploadEvent, UploadStep,
};
use hubhost::state::{StateError, StateOp, StateValue};
use hubhost::types::{Caller, HubName, Target};
use hubhost_sdk::native::{
    self as sdk, Event, Level, PresenceError as SdkPresenceError, StateError as SdkStateError,
    WireError,
};

/// Hub `H` as native code.
pub struct SdkHub<H>(PhantomData<fn() -> H>);

impl<H: sdk::Hub + 'static> SdkHub<H> {
    /// The hub, ready for [`hubhost::runtime::HubRuntime::install_native`].
    pub fn shared() -> Arc<dyn NativeHub> {
        Arc::new(Self(PhantomData))
    }
}

impl<H: sdk::Hub + 'static> NativeHub for SdkHub<H> {
    fn call(
        &self,
        caller: &Caller,
        call: Call<'_>,
        host: &mut NativeHost,
    ) -> Result<Answer, HubError> {
        let ctx = sdk::context(
            caller.hub.as_str(),
            caller.connection_id.as_str(),
            caller.user_id.as_deref(),
            caller.claims.clone(),
        );
        let event = match call {
            Call::Connected => Event::Connected,
            Call::Disconnected { error } => Event::Disconnected { error },
            Call::Invoke { method, arguments } => Event::Invoke { method, arguments },
            Call::Stream {
                method,
                arguments,
                cursor,
            } => {
                let cursor = cursor.map(str::to_owned);
                return sdk::stream::<H>(&mut Bridge(host), &ctx, method, arguments, cursor)
                    .map(|step| Answer::Step(stream_step(step)))
                    .map_err(hub_error);
            }
            Call::Upload {
                method,
                arguments,
                event,
                state,
            } => {
                let event = match event {
                    UploadEvent::Item(item) => sdk::UploadEvent::Item(item.to_owned()),
                    UploadEvent::End(error) => sdk::UploadEvent::End(error.map(str::to_owned)),
                };
                let state = state.map(str::to_owned);
                return sdk::upload::<H>(&mut Bridge(host), &ctx, method, arguments, event, state)
                    .map(|step| {
                        Answer::Upload(match step {
                            sdk::UploadStep::Pending(state) => UploadStep::Pending(state),
                            sdk::UploadStep::Done(result) => UploadStep::Done(result),
                        })
                    })
                    .map_err(hub_error);
            }
            Call::Describe => {
                return Ok(Answer::Methods(
                    sdk::describe::<H>().into_iter().map(method_info).collect(),
                ));
            }
        };
        sdk::call::<H>(&mut Bridge(host), &ctx, event)
            .map(Answer::Value)
            .map_err(hub_error)
    }
}

fn hub_error(error: WireError) -> HubError {
    match error {
        WireError::MethodNotFound => HubError::MethodNotFound,
        WireError::InvalidArguments(m) => HubError::InvalidArguments(m),
        WireError::Rejected(m) => HubError::Rejected(m),
        WireError::Failed(e) => HubError::Failed(Exception {
            type_name: e.type_name,
            message: e.message,
        }),
    }
}

fn stream_step(step: sdk::StreamStep) -> StreamStep {
    StreamStep {
        items: step.items,
        next: step.next.map(|next| StreamNext {
            cursor: next.cursor,
            delay: Duration::from_millis(next.delay_ms.into()),
        }),
        error: step.error.map(hub_error),
    }
}

fn method_info(info: sdk::MethodInfo) -> MethodInfo {
    MethodInfo {
        name: info.name,
        doc: info.doc,
        params: info
            .params
            .into_iter()
            .map(|p| ParamInfo {
                name: p.name,
                schema: p.schema,
                upload: p.upload,
            })
            .collect(),
        returns: info.returns,
        streaming: info.streaming,
    }
}

/// The SDK's imports, served by the runtime's [`NativeHost`].
struct Bridge<'a>(&'a mut NativeHost);

impl Bridge<'_> {
    /// A presence query that answers a count.
    fn count(&mut self, query: Query) -> Result<u64, SdkPresenceError> {
        self.0
            .presence(query)
            .map(PresenceAnswer::into_count)
            .map_err(presence_error)
    }

    /// Runs `op` and takes the answer's expected shape, as the Wasm `state` import does.
    fn state<T>(
        &mut self,
        key: &str,
        op: StateOp,
        answer: fn(StateValue) -> Result<T, StateError>,
    ) -> Result<T, SdkStateError> {
        self.0.state(key, op).and_then(answer).map_err(|e| match e {
            StateError::Unavailable(m) => SdkStateError::Unavailable(m),
            StateError::WrongType(m) => SdkStateError::WrongType(m),
            StateError::TooLarge(m) => SdkStateError::TooLarge(m),
        })
    }
}

fn presence_error(error: PresenceError) -> SdkPresenceError {
    let PresenceError::Unavailable(m) = error;
    SdkPresenceError::Unavailable(m)
}

fn target(to: &sdk::Target) -> Target {
    use sdk::Target as T;
    match to.clone() {
        T::All => Target::All,
        T::AllExcept(ids) => Target::AllExcept(ids),
        T::Connection(id) => Target::Connection(id),
        T::Connections(ids) => Target::Connections(ids),
        T::Group(g) => Target::Group(g),
        T::GroupExcept(sdk::GroupExcept { group, excluded }) => {
            Target::GroupExcept { group, excluded }
        }
        T::Groups(gs) => Target::Groups(gs),
        T::User(u) => Target::User(u),
        T::Users(us) => Target::Users(us),
    }
}

impl sdk::Host for Bridge<'_> {
    fn send(&mut self, to: &sdk::Target, method: &str, arguments: &str) {
        self.0.send(target(to), method, arguments);
    }

    fn group_add(&mut self, connection_id: &str, group: &str) {
        self.0.add_to_group(connection_id, group);
    }

    fn group_remove(&mut self, connection_id: &str, group: &str) {
        self.0.remove_from_group(connection_id, group);
    }

    fn state_get(&mut self, key: &str) -> Result<Option<String>, SdkStateError> {
        self.state(key, StateOp::Get, StateValue::into_value)
    }

    fn state_set(
        &mut self,
        key: &str,
        value: &str,
        ttl_ms: Option<u64>,
    ) -> Result<(), SdkStateError> {
        let op = StateOp::Set {
            value: value.to_owned(),
            ttl: ttl_ms.map(Duration::from_millis),
        };
        self.state(key, op, |_| Ok(()))
    }

    fn state_delete(&mut self, key: &str) -> Result<bool, SdkStateError> {
        self.state(key, StateOp::Delete, StateValue::into_flag)
    }

    fn state_incr(&mut self, key: &str, delta: i64) -> Result<i64, SdkStateError> {
        self.state(key, StateOp::Incr(delta), StateValue::into_integer)
    }

    fn state_set_add(&mut self, key: &str, member: &str) -> Result<bool, SdkStateError> {
        self.state(
            key,
            StateOp::SetAdd(member.to_owned()),
            StateValue::into_flag,
        )
    }

    fn state_set_remove(&mut self, key: &str, member: &str) -> Result<bool, SdkStateError> {
        self.state(
            key,
            StateOp::SetRemove(member.to_owned()),
            StateValue::into_flag,
        )
    }

    fn state_set_members(&mut self, key: &str) -> Result<Vec<String>, SdkStateError> {
        self.state(key, StateOp::SetMembers, StateValue::into_members)
    }

    fn state_expire(&mut self, key: &str, ttl_ms: u64) -> Result<bool, SdkStateError> {
        let ttl = Duration::from_millis(ttl_ms);
        self.state(key, StateOp::Expire(ttl), StateValue::into_flag)
    }

    fn presence_connections(&mut self) -> Result<u64, SdkPresenceError> {
        self.count(Query::Connections)
    }

    fn presence_users(&mut self) -> Result<u64, SdkPresenceError> {
        self.count(Query::Users)
    }

    fn presence_user_connections(&mut self, user_id: &str) -> Result<u64, SdkPresenceError> {
        self.count(Query::UserConnections(user_id.to_owned()))
    }

    fn presence_group_size(&mut self, group: &str) -> Result<u64, SdkPresenceError> {
        self.count(Query::GroupSize(group.to_owned()))
    }

    fn presence_group_members(
        &mut self,
        group: &str,
        limit: u32,
    ) -> Result<Vec<sdk::WireMember>, SdkPresenceError> {
        let query = Query::GroupMembers {
            group: group.to_owned(),
            limit,
        };
        let members = self.0.presence(query).map_err(presence_error)?;
        Ok(members
            .into_members()
            .into_iter()
            .map(|m| sdk::WireMember {
                connection_id: m.connection,
                user_id: m.user,
            })
            .collect())
    }

    fn abort(&mut self) {
        self.0.abort();
    }

    fn log(&mut self, level: Level, message: &str) {
        let level = match level {
            Level::Trace => tracing::Level::TRACE,
            Level::Debug => tracing::Level::DEBUG,
            Level::Info => tracing::Level::INFO,
            Level::Warn => tracing::Level::WARN,
            Level::Error => tracing::Level::ERROR,
        };
        self.0.log(level, message);
    }
}

/// The chat example hub (`examples/chat`), natively, under the name `chat`.
pub fn chat() -> (HubName, Arc<dyn NativeHub>) {
    (HubName::new("chat"), SdkHub::<chat::Chat>::shared())
}
