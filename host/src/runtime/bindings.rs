//! The only `bindgen!` of the host: Rust types and traits for the hub world in
//! `guest-sdk/wit/hub.wit`. Private to the runtime: what leaves it is converted into hubhost's
//! own types ([`HubError`](super::HubError), [`Target`](crate::types::Target)).
//!
//! Exports are async so a call runs on a fiber that yields to tokio at every epoch tick: a hub
//! that loops cannot pin a runtime thread, and the deadline check happens on those ticks.
//! Imports are trappable, so the host can end a call that misuses them. Those that only record
//! effects stay synchronous; `state` is async because it may wait for Redis.

wasmtime::component::bindgen!({
    path: "../guest-sdk/wit",
    world: "hub",
    imports: {
        "hubhost:hub/state": async | trappable,
        default: trappable,
    },
    exports: { default: async },
});

pub(super) use self::exports::hubhost::hub::handler::HubError;
pub(super) use self::hubhost::hub::types::{Context, GroupExcept, Level, Target};

impl From<HubError> for super::HubError {
    fn from(error: HubError) -> Self {
        match error {
            HubError::MethodNotFound => Self::MethodNotFound,
            HubError::InvalidArguments(text) => Self::InvalidArguments(text),
            HubError::Rejected(text) => Self::Rejected(text),
            HubError::Failed(text) => Self::Failed(text),
        }
    }
}

impl From<Target> for crate::types::Target {
    fn from(target: Target) -> Self {
        use crate::types::Target as T;
        match target {
            Target::All => T::All,
            Target::AllExcept(ids) => T::AllExcept(ids),
            Target::Connection(id) => T::Connection(id),
            Target::Connections(ids) => T::Connections(ids),
            Target::Group(g) => T::Group(g),
            Target::GroupExcept(GroupExcept { group, excluded }) => {
                T::GroupExcept { group, excluded }
            }
            Target::Groups(gs) => T::Groups(gs),
            Target::User(u) => T::User(u),
            Target::Users(us) => T::Users(us),
        }
    }
}

impl From<&crate::types::Caller> for Context {
    fn from(caller: &crate::types::Caller) -> Self {
        Self {
            hub: caller.hub.as_str().to_owned(),
            connection_id: caller.connection_id.as_str().to_owned(),
            user_id: caller.user_id.clone(),
            claims: caller.claims.clone(),
        }
    }
}
