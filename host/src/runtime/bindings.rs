//! The only `bindgen!` of the host: Rust types and traits for the hub world in
//! `guest-sdk/wit/hub.wit`.
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

pub use self::exports::hubhost::hub::handler::HubError;
pub(super) use self::hubhost::hub::types::{Context, GroupExcept, Level, Target};
