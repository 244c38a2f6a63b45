//! # hubhost-sdk: write SignalR-style hubs in plain Rust
//!
//! A *hub* is the server side of a real-time application: clients (the official SignalR clients,
//! such as npm `@microsoft/signalr`) invoke its methods by name, and its methods send messages back
//! to any set of clients: everyone, everyone but the caller, a group, a user. hubhost runs hubs as
//! sandboxed WebAssembly components; this crate is everything a hub author needs.
//!
//! ```no_run
//! use hubhost_sdk::prelude::*;
//!
//! /// Served at `/chat` when built as `chat.wasm`.
//! pub struct Chat;
//!
//! #[hub]
//! impl Chat {
//!     /// Clients call `connection.invoke("Send", name, message)`.
//!     fn send(name: String, message: String) -> HubResult {
//!         Clients::all().send("broadcastMessage", (name, message))
//!     }
//!
//!     /// A method with a result: `await connection.invoke("Echo", "hi")` resolves to `"hi"`.
//!     fn echo(message: String) -> String {
//!         message
//!     }
//!
//!     fn join_room(ctx: &Context, room: String) {
//!         Groups::add(ctx.connection_id(), &room);
//!     }
//! }
//! ```
//!
//! Build it with `cargo build --target wasm32-wasip2 --release` (crate type `cdylib`) and drop
//! the `.wasm` into the host's hubs folder.
//!
//! ## How calls work
//! - Each method of the `#[hub]` impl block is a hub method. Its name is the Rust name in
//!   PascalCase (`join_room` is `JoinRoom`), matched case-insensitively as SignalR does.
//! - Arguments are any [`serde::de::DeserializeOwned`] types, decoded from the client's JSON. An
//!   optional first parameter `ctx: &Context` gives the caller's identity ([`Context`]).
//! - The return value is anything [`serde::Serialize`], or a [`HubResult`] of it; `()` or no
//!   return type means a void method. An `Err` goes back to the caller as an error completion.
//! - A method that returns a [`HubStream`] (or a `HubResult` of one) is a streaming method:
//!   clients call it with `connection.stream(...)` and receive its items one by one. A method
//!   that takes an [`Upload`] receives a stream the client sends (`connection.invoke("Sum",
//!   subject)`).
//! - `ctx.request()` reads the connecting request's headers, query and cookies, and
//!   `ctx.abort()` closes the caller's connection ([`Context`]).
//! - `on_connected(ctx: &Context) -> HubResult` and
//!   `on_disconnected(ctx: &Context, error: Option<String>) -> HubResult`, if defined, run when
//!   a client connects and disconnects; clients cannot invoke them.
//! - Sends ([`Clients`]) and group changes ([`Groups`]) are carried out by the host in order, after
//!   the method returns and before the caller receives its completion.
//!
//! ## Hubs are transient
//! As in SignalR, a hub must not keep state in its own memory between calls: the host may reuse
//! one instance for many calls, from many connections, or create a fresh one for each call, and
//! it discards instances that trap. Keep what must last in [`State`] (shared by every server) or
//! in groups, and ask who is connected with [`Presence`] (over every server, and right again
//! soon after a server dies, unlike a counter kept in `State`).
//!
//! ## Logging and panics
//! Use [`log`]: lines go to the host's log tagged with the hub and connection. `println!` goes
//! nowhere. A panic becomes an error completion for the caller and its message is logged.

// The generated bindings refer to this crate by name, also from inside it.
extern crate self as hubhost_sdk;

mod client;
mod clients;
mod context;
mod error;
mod groups;
mod imports;
pub mod log;
#[cfg(not(target_family = "wasm"))]
pub mod native;
mod presence;
mod request;
mod state;
mod stream;
mod upload;

#[doc(hidden)]
pub mod __private;

/// The generated WIT bindings. Not part of the API: use the types above instead.
#[doc(hidden)]
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod __bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "hub",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "::hubhost_sdk::__bindings",
        runtime_path: "::hubhost_sdk::__private::wit_bindgen::rt",
    });
}

pub use client::{Client, ClientError};
pub use clients::Clients;
pub use context::Context;
pub use error::{HubError, HubResult};
pub use groups::Groups;
pub use presence::{Member, Presence};
pub use request::Request;
pub use state::State;
pub use stream::{HubStream, Step};
pub use upload::Upload;

/// Marks an `impl` block as a hub and exports it from the component.
///
/// Every associated function in the block becomes a hub method named in PascalCase
/// (`send_to_room` is `SendToRoom`); clients match names case-insensitively. One `#[hub]` per
/// crate: a component is one hub.
///
/// ```no_run
/// use hubhost_sdk::prelude::*;
///
/// pub struct Counter;
///
/// #[hub]
/// impl Counter {
///     fn add(a: i64, b: i64) -> i64 {
///         a + b
///     }
///
///     fn on_connected(ctx: &Context) -> HubResult {
///         ctx.caller().send("welcome", (ctx.connection_id(),))
///     }
/// }
/// ```
///
/// Methods take no `self` (hubs are transient), their arguments must be owned types (`String`,
/// not `&str`), and a method can be given a different wire name with
/// `#[hub(name = "OldName")]`. A method that returns a [`HubStream`] (or a `HubResult` of one)
/// streams to the caller; one that takes an [`Upload`] receives the caller's stream. The doc
/// comments, parameter names and types become what `hubhost describe` and `hubhost types` show.
pub use hubhost_sdk_macros::hub;

/// Everything a hub usually needs, in one import.
///
/// ```no_run
/// use hubhost_sdk::prelude::*;
/// # pub struct H;
/// # #[hub] impl H { fn ping() -> &'static str { "pong" } }
/// ```
pub mod prelude {
    pub use crate::log;
    pub use crate::{
        Client, Clients, Context, Groups, HubError, HubResult, HubStream, Presence, Request, State,
        Step, Upload, hub,
    };
}
