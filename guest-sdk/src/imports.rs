//! The host's imports, as the rest of the SDK calls them: the component's imports when the hub
//! is built for WebAssembly, and the [`crate::native::Host`] of the running call otherwise.

#[cfg(target_family = "wasm")]
pub(crate) use crate::__bindings::hubhost::hub::{
    caller, clients, groups, log, presence, results, state,
};

#[cfg(not(target_family = "wasm"))]
pub(crate) use crate::native::imports::{caller, clients, groups, log, presence, results, state};
