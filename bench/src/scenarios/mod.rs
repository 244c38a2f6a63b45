//! One module per scenario.

mod broadcast;
mod cuts;
mod echo;
mod floor;
mod hub_call;
mod idle;
mod negotiate;
mod presence;
mod rooms;
mod streams;

pub(crate) use broadcast::{broadcast, native_vs_wasm};
pub(crate) use cuts::cuts;
pub(crate) use echo::echo;
pub(crate) use floor::{Pace, floor};
pub(crate) use hub_call::hub_call;
pub(crate) use idle::idle;
pub(crate) use negotiate::negotiate_flood;
pub(crate) use presence::presence;
pub(crate) use rooms::rooms;
pub(crate) use streams::streams;
