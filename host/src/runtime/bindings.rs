//! The only `bindgen!`s of the host: Rust types and traits for each version of the hub world it
//! loads, `guest-sdk/wit/hub.wit` (0.2, what the SDK builds) and `host/wit/0.1/hub.wit` (frozen,
//! so hubs built against it keep loading). Private to the runtime: what leaves it is converted
//! into hubhost's own types ([`HubError`](super::HubError), [`Target`](crate::types::Target)).
//!
//! Exports are async so a call runs on a fiber that yields to tokio at every epoch tick: a hub
//! that loops cannot pin a runtime thread, and the deadline check happens on those ticks.
//! Imports are trappable, so the host can end a call that misuses them. Those that only record
//! effects stay synchronous; `state` and `presence` (which may wait for Redis) and `results`
//! (which waits for a client) are async.

/// Contract 0.2.
pub(super) mod v2 {
    wasmtime::component::bindgen!({
        path: "../guest-sdk/wit",
        world: "hub",
        imports: {
            "hubhost:hub/state": async | trappable,
            "hubhost:hub/results": async | trappable,
            "hubhost:hub/presence": async | trappable,
            default: trappable,
        },
        exports: { default: async },
    });

    pub(in crate::runtime) use self::exports::hubhost::hub::handler::{
        HubError, MethodInfo, StreamStep, UploadEvent, UploadStep,
    };
    pub(in crate::runtime) use self::hubhost::hub::types::{Context, GroupExcept, Level, Target};
}

/// Contract 0.1: the same imports but `caller`, and `invoke`, `on-connected` and
/// `on-disconnected` only.
pub(super) mod v1 {
    wasmtime::component::bindgen!({
        path: "wit/0.1",
        world: "hub",
        imports: {
            "hubhost:hub/state": async | trappable,
            default: trappable,
        },
        exports: { default: async },
    });

    pub(in crate::runtime) use self::exports::hubhost::hub::handler::HubError;
    pub(in crate::runtime) use self::hubhost::hub::types::{Context, GroupExcept, Level, Target};
}

use super::{Exception, MethodInfo, ParamInfo, StreamNext};

impl From<v2::HubError> for super::HubError {
    fn from(error: v2::HubError) -> Self {
        match error {
            v2::HubError::MethodNotFound => Self::MethodNotFound,
            v2::HubError::InvalidArguments(text) => Self::InvalidArguments(text),
            v2::HubError::Rejected(text) => Self::Rejected(text),
            v2::HubError::Failed(e) => Self::Failed(Exception {
                type_name: e.type_name,
                message: e.message,
            }),
        }
    }
}

impl From<v1::HubError> for super::HubError {
    fn from(error: v1::HubError) -> Self {
        match error {
            v1::HubError::MethodNotFound => Self::MethodNotFound,
            v1::HubError::InvalidArguments(text) => Self::InvalidArguments(text),
            v1::HubError::Rejected(text) => Self::Rejected(text),
            v1::HubError::Failed(text) => Self::Failed(Exception::plain(text)),
        }
    }
}

impl From<v2::StreamStep> for super::StreamStep {
    fn from(step: v2::StreamStep) -> Self {
        Self {
            items: step.items,
            next: step.next.map(|next| StreamNext {
                cursor: next.cursor,
                delay: std::time::Duration::from_millis(next.delay_ms.into()),
            }),
            error: step.error.map(Into::into),
        }
    }
}

impl From<v2::MethodInfo> for MethodInfo {
    fn from(info: v2::MethodInfo) -> Self {
        Self {
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
}

impl From<v2::UploadStep> for super::UploadStep {
    fn from(step: v2::UploadStep) -> Self {
        match step {
            v2::UploadStep::Pending(state) => Self::Pending(state),
            v2::UploadStep::Done(result) => Self::Done(result),
        }
    }
}

impl<'a> From<super::UploadEvent<'a>> for v2::UploadEvent {
    fn from(event: super::UploadEvent<'a>) -> Self {
        match event {
            super::UploadEvent::Item(item) => Self::Item(item.to_owned()),
            super::UploadEvent::End(error) => Self::End(error.map(str::to_owned)),
        }
    }
}

/// The same conversions for both versions' generated types, which have the same shapes.
macro_rules! shared_conversions {
    ($v:ident) => {
        impl From<$v::Target> for crate::types::Target {
            fn from(target: $v::Target) -> Self {
                use $v::Target as W;
                match target {
                    W::All => Self::All,
                    W::AllExcept(ids) => Self::AllExcept(ids),
                    W::Connection(id) => Self::Connection(id),
                    W::Connections(ids) => Self::Connections(ids),
                    W::Group(g) => Self::Group(g),
                    W::GroupExcept($v::GroupExcept { group, excluded }) => {
                        Self::GroupExcept { group, excluded }
                    }
                    W::Groups(gs) => Self::Groups(gs),
                    W::User(u) => Self::User(u),
                    W::Users(us) => Self::Users(us),
                }
            }
        }

        impl From<&crate::types::Caller> for $v::Context {
            fn from(caller: &crate::types::Caller) -> Self {
                Self {
                    hub: caller.hub.as_str().to_owned(),
                    connection_id: caller.connection_id.as_str().to_owned(),
                    user_id: caller.user_id.clone(),
                    claims: caller.claims.clone(),
                }
            }
        }

        impl From<$v::Level> for tracing::Level {
            fn from(level: $v::Level) -> Self {
                match level {
                    $v::Level::Trace => Self::TRACE,
                    $v::Level::Debug => Self::DEBUG,
                    $v::Level::Info => Self::INFO,
                    $v::Level::Warn => Self::WARN,
                    $v::Level::Error => Self::ERROR,
                }
            }
        }
    };
}

shared_conversions!(v1);
shared_conversions!(v2);
