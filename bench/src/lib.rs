//! Support of the load generator: a bridge that serves hubs written with `hubhost-sdk` as
//! native code through hubhost's runtime, so the same hub can be measured with and without the
//! WebAssembly sandbox (`loadgen --scenarios hub-call` in process, and the `hubhost-native`
//! server end to end).

pub mod hub_call;
pub mod native;
