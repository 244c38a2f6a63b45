//! Running a hub as native code, outside a WebAssembly host.
//!
//! A hub crate built for the host's own target (not `wasm32-wasip2`) can be called directly,
//! with a [`Host`] standing in for hubhost's imports. hubhost's load generator uses it to run the
//! very same chat hub natively and as Wasm, so the cost of the sandbox is measured rather than
//! guessed; it also lets a hub's logic be exercised in an ordinary `cargo test`.
//!
//! ```
//! use hubhost_sdk::native::{self, Event, Host, Level, StateError, Target};
//! use hubhost_sdk::prelude::*;
//!
//! pub struct Greeter;
//!
//! #[hub]
//! impl Greeter {
//!     fn greet(name: String) -> HubResult {
//!         Clients::all().send("greeting", (format!("hello {name}"),))
//!     }
//! }
//!
//! /// Records sends; has no state.
//! #[derive(Default)]
//! struct Recorder(Vec<String>);
//!
//! impl Host for Recorder {
//!     fn send(&mut self, _to: &Target, method: &str, arguments: &str) {
//!         self.0.push(format!("{method}{arguments}"));
//!     }
//!     fn group_add(&mut self, _connection_id: &str, _group: &str) {}
//!     fn group_remove(&mut self, _connection_id: &str, _group: &str) {}
//!     fn state_get(&mut self, _key: &str) -> Result<Option<String>, StateError> { Ok(None) }
//!     fn state_set(&mut self, _key: &str, _value: &str, _ttl_ms: Option<u64>) -> Result<(), StateError> { Ok(()) }
//!     fn state_delete(&mut self, _key: &str) -> Result<bool, StateError> { Ok(false) }
//!     fn state_incr(&mut self, _key: &str, delta: i64) -> Result<i64, StateError> { Ok(delta) }
//!     fn state_set_add(&mut self, _key: &str, _member: &str) -> Result<bool, StateError> { Ok(true) }
//!     fn state_set_remove(&mut self, _key: &str, _member: &str) -> Result<bool, StateError> { Ok(false) }
//!     fn state_set_members(&mut self, _key: &str) -> Result<Vec<String>, StateError> { Ok(vec![]) }
//!     fn state_expire(&mut self, _key: &str, _ttl_ms: u64) -> Result<bool, StateError> { Ok(false) }
//!     fn log(&mut self, _level: Level, _message: &str) {}
//! }
//!
//! let mut host = Recorder::default();
//! let ctx = native::context("greeter", "conn-1", None, vec![]);
//! let event = Event::Invoke { method: "Greet", arguments: r#"["ana"]"# };
//! native::call::<Greeter>(&mut host, &ctx, event).unwrap();
//! assert_eq!(host.0, [r#"greeting["hello ana"]"#]);
//! ```

use std::cell::Cell;
use std::ptr::NonNull;

use crate::Context;

/// What `#[hub]` implements: the type [`call`] takes.
pub use crate::__private::Hub;

pub use crate::__bindings::hubhost::hub::presence::{Member as WireMember, PresenceError};
pub use crate::__bindings::hubhost::hub::results::AskError;
pub use crate::__bindings::hubhost::hub::state::StateError;
pub use crate::__bindings::hubhost::hub::types::{
    Exception as WireException, GroupExcept, HttpRequest as WireRequest, HubError as WireError,
    Level, MethodInfo, ParamInfo, StreamNext, StreamStep, Target, UploadEvent, UploadStep,
};

/// What a hub may ask of its host; the native counterpart of the component's imports
/// (`guest-sdk/wit/hub.wit` documents each one).
pub trait Host {
    /// `clients.send`: invoke `method` with `arguments` (a JSON array) on the clients `to` selects.
    fn send(&mut self, to: &Target, method: &str, arguments: &str);
    /// `groups.add`.
    fn group_add(&mut self, connection_id: &str, group: &str);
    /// `groups.remove`.
    fn group_remove(&mut self, connection_id: &str, group: &str);
    /// `state.get`.
    fn state_get(&mut self, key: &str) -> Result<Option<String>, StateError>;
    /// `state.set`.
    fn state_set(&mut self, key: &str, value: &str, ttl_ms: Option<u64>) -> Result<(), StateError>;
    /// `state.delete`.
    fn state_delete(&mut self, key: &str) -> Result<bool, StateError>;
    /// `state.incr`.
    fn state_incr(&mut self, key: &str, delta: i64) -> Result<i64, StateError>;
    /// `state.set-add`.
    fn state_set_add(&mut self, key: &str, member: &str) -> Result<bool, StateError>;
    /// `state.set-remove`.
    fn state_set_remove(&mut self, key: &str, member: &str) -> Result<bool, StateError>;
    /// `state.set-members`.
    fn state_set_members(&mut self, key: &str) -> Result<Vec<String>, StateError>;
    /// `state.expire`.
    fn state_expire(&mut self, key: &str, ttl_ms: u64) -> Result<bool, StateError>;
    /// `log.write`.
    fn log(&mut self, level: Level, message: &str);
    /// `caller.request`: the request that opened the caller's connection. None by default.
    fn request(&mut self) -> WireRequest {
        WireRequest {
            headers: Vec::new(),
            query: Vec::new(),
            cookies: Vec::new(),
        }
    }
    /// `results.ask`: run `method` on connection `connection_id` and return its result. By
    /// default there is no such connection.
    fn ask(
        &mut self,
        _connection_id: &str,
        _method: &str,
        _arguments: &str,
        _timeout_ms: u32,
    ) -> Result<String, AskError> {
        Err(AskError::Gone)
    }
    /// `presence.connections`. By default presence is unavailable, as are the others below.
    fn presence_connections(&mut self) -> Result<u64, PresenceError> {
        Err(no_presence())
    }
    /// `presence.users`.
    fn presence_users(&mut self) -> Result<u64, PresenceError> {
        Err(no_presence())
    }
    /// `presence.user-connections`.
    fn presence_user_connections(&mut self, _user_id: &str) -> Result<u64, PresenceError> {
        Err(no_presence())
    }
    /// `presence.group-size`.
    fn presence_group_size(&mut self, _group: &str) -> Result<u64, PresenceError> {
        Err(no_presence())
    }
    /// `presence.group-members`.
    fn presence_group_members(
        &mut self,
        _group: &str,
        _limit: u32,
    ) -> Result<Vec<WireMember>, PresenceError> {
        Err(no_presence())
    }
    /// `caller.abort`: close the caller's connection after the call. A harness that has no
    /// connection to close may leave it at this default, which only logs it.
    fn abort(&mut self) {
        self.log(Level::Info, "the hub aborted the caller's connection");
    }
}

fn no_presence() -> PresenceError {
    PresenceError::Unavailable("this host keeps no presence".into())
}

/// What the host asks of a hub: the exports of the component.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// `on-connected`.
    Connected,
    /// `on-disconnected`, with why the client left when it was not a clean close.
    Disconnected {
        /// The reason, if any.
        error: Option<&'a str>,
    },
    /// `invoke`: `arguments` is the JSON array of the client's arguments.
    Invoke {
        /// The method name, matched case-insensitively.
        method: &'a str,
        /// A JSON array.
        arguments: &'a str,
    },
}

/// The caller's context, as the host would pass it.
///
/// ```
/// let ctx = hubhost_sdk::native::context("chat", "conn-1", Some("ana"), vec![]);
/// assert_eq!(ctx.user_id(), Some("ana"));
/// ```
pub fn context(
    hub: &str,
    connection_id: &str,
    user_id: Option<&str>,
    claims: Vec<(String, String)>,
) -> Context {
    Context::from_wit(crate::__bindings::hubhost::hub::types::Context {
        hub: hub.to_owned(),
        connection_id: connection_id.to_owned(),
        user_id: user_id.map(str::to_owned),
        claims,
    })
}

/// Calls hub `H` for `event`, with `host` serving its imports for the duration of the call.
/// The answer is what the component would return: a JSON result, or the wire form of the error.
///
/// See the [module example](self).
pub fn call<H: Hub>(
    host: &mut dyn Host,
    ctx: &Context,
    event: Event<'_>,
) -> Result<Option<String>, WireError> {
    with_host(host, || match event {
        Event::Connected => H::on_connected(ctx).map(|()| None),
        Event::Disconnected { error } => {
            H::on_disconnected(ctx, error.map(str::to_owned)).map(|()| None)
        }
        Event::Invoke { method, arguments } => H::invoke(ctx, method, arguments),
    })
    .map_err(crate::HubError::into_wit)
}

/// Runs one step of hub `H`'s streaming `method` (the first with no `cursor`), as the host's
/// `handler.stream` would.
///
/// ```
/// use hubhost_sdk::native::{self, Host};
/// use hubhost_sdk::prelude::*;
/// # use hubhost_sdk::native::{Level, StateError, Target};
///
/// pub struct Numbers;
///
/// #[hub]
/// impl Numbers {
///     fn upto(n: u32) -> HubStream<u32> {
///         HubStream::unfold(0, move |i: u32| Ok(if i < n { Step::item(i).then(i + 1) } else { Step::done() }))
///     }
/// }
/// # struct Nothing;
/// # impl Host for Nothing {
/// #     fn send(&mut self, _: &Target, _: &str, _: &str) {}
/// #     fn group_add(&mut self, _: &str, _: &str) {}
/// #     fn group_remove(&mut self, _: &str, _: &str) {}
/// #     fn state_get(&mut self, _: &str) -> Result<Option<String>, StateError> { Ok(None) }
/// #     fn state_set(&mut self, _: &str, _: &str, _: Option<u64>) -> Result<(), StateError> { Ok(()) }
/// #     fn state_delete(&mut self, _: &str) -> Result<bool, StateError> { Ok(false) }
/// #     fn state_incr(&mut self, _: &str, d: i64) -> Result<i64, StateError> { Ok(d) }
/// #     fn state_set_add(&mut self, _: &str, _: &str) -> Result<bool, StateError> { Ok(true) }
/// #     fn state_set_remove(&mut self, _: &str, _: &str) -> Result<bool, StateError> { Ok(false) }
/// #     fn state_set_members(&mut self, _: &str) -> Result<Vec<String>, StateError> { Ok(vec![]) }
/// #     fn state_expire(&mut self, _: &str, _: u64) -> Result<bool, StateError> { Ok(false) }
/// #     fn log(&mut self, _: Level, _: &str) {}
/// # }
///
/// let ctx = native::context("numbers", "c1", None, vec![]);
/// let first = native::stream::<Numbers>(&mut Nothing, &ctx, "Upto", "[3]", None).unwrap();
/// let cursor = first.next.unwrap().cursor;
/// let step = native::stream::<Numbers>(&mut Nothing, &ctx, "Upto", "[3]", Some(cursor)).unwrap();
/// assert_eq!(step.items, ["0", "1", "2"]);
/// assert!(step.next.is_none());
/// ```
pub fn stream<H: Hub>(
    host: &mut dyn Host,
    ctx: &Context,
    method: &str,
    arguments: &str,
    cursor: Option<String>,
) -> Result<StreamStep, WireError> {
    with_host(host, || H::stream(ctx, method, arguments, cursor)).map_err(crate::HubError::into_wit)
}

/// Delivers one event of an upload to hub `H`'s `method` (the first with no `state`), as the
/// host's `handler.upload` would.
///
/// ```
/// use hubhost_sdk::native::{self, Host, UploadEvent, UploadStep};
/// use hubhost_sdk::prelude::*;
/// # use hubhost_sdk::native::{Level, StateError, Target};
///
/// pub struct Numbers;
///
/// #[hub]
/// impl Numbers {
///     fn sum(numbers: Upload<i64>) -> HubResult<i64> {
///         numbers.fold(0, |total, n| Ok(total + n))
///     }
/// }
/// # struct Nothing;
/// # impl Host for Nothing {
/// #     fn send(&mut self, _: &Target, _: &str, _: &str) {}
/// #     fn group_add(&mut self, _: &str, _: &str) {}
/// #     fn group_remove(&mut self, _: &str, _: &str) {}
/// #     fn state_get(&mut self, _: &str) -> Result<Option<String>, StateError> { Ok(None) }
/// #     fn state_set(&mut self, _: &str, _: &str, _: Option<u64>) -> Result<(), StateError> { Ok(()) }
/// #     fn state_delete(&mut self, _: &str) -> Result<bool, StateError> { Ok(false) }
/// #     fn state_incr(&mut self, _: &str, d: i64) -> Result<i64, StateError> { Ok(d) }
/// #     fn state_set_add(&mut self, _: &str, _: &str) -> Result<bool, StateError> { Ok(true) }
/// #     fn state_set_remove(&mut self, _: &str, _: &str) -> Result<bool, StateError> { Ok(false) }
/// #     fn state_set_members(&mut self, _: &str) -> Result<Vec<String>, StateError> { Ok(vec![]) }
/// #     fn state_expire(&mut self, _: &str, _: u64) -> Result<bool, StateError> { Ok(false) }
/// #     fn log(&mut self, _: Level, _: &str) {}
/// # }
///
/// let ctx = native::context("numbers", "c1", None, vec![]);
/// let mut state = None;
/// for item in ["1", "2", "3"] {
///     let event = UploadEvent::Item(item.into());
///     match native::upload::<Numbers>(&mut Nothing, &ctx, "Sum", "[]", event, state).unwrap() {
///         UploadStep::Pending(next) => state = Some(next),
///         UploadStep::Done(_) => unreachable!("Sum waits for the end"),
///     }
/// }
/// let end = native::upload::<Numbers>(&mut Nothing, &ctx, "Sum", "[]", UploadEvent::End(None), state);
/// assert!(matches!(end, Ok(UploadStep::Done(Some(total))) if total == "6"));
/// ```
pub fn upload<H: Hub>(
    host: &mut dyn Host,
    ctx: &Context,
    method: &str,
    arguments: &str,
    event: UploadEvent,
    state: Option<String>,
) -> Result<UploadStep, WireError> {
    with_host(host, || H::upload(ctx, method, arguments, event, state))
        .map_err(crate::HubError::into_wit)
}

/// Hub `H`'s methods, as the host's `handler.describe` reports them.
///
/// ```
/// use hubhost_sdk::prelude::*;
///
/// pub struct Greeter;
///
/// #[hub]
/// impl Greeter {
///     /// Says hello.
///     fn greet(name: String) -> String {
///         format!("hello {name}")
///     }
/// }
///
/// let methods = hubhost_sdk::native::describe::<Greeter>();
/// assert_eq!(methods[0].name, "Greet");
/// assert_eq!(methods[0].params[0].schema, r#"{"type":"string"}"#);
/// assert_eq!(methods[0].doc.as_deref(), Some("Says hello."));
/// ```
pub fn describe<H: Hub>() -> Vec<MethodInfo> {
    H::describe()
}

thread_local! {
    /// The host of the call running on this thread. Taken while one of its methods runs, so
    /// there is never more than one `&mut` to it.
    static HOST: Cell<Option<NonNull<dyn Host + 'static>>> = const { Cell::new(None) };
}

fn with_host<R>(host: &mut dyn Host, f: impl FnOnce() -> R) -> R {
    /// Puts the previous host back, also when `f` unwinds.
    struct Restore(Option<NonNull<dyn Host + 'static>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            HOST.set(self.0);
        }
    }
    let host: NonNull<dyn Host + '_> = NonNull::from(host);
    // SAFETY: only the lifetime is erased. The pointer is reachable only through `HOST`, which
    // `Restore` resets before this function returns, so it is never used after `host`'s borrow
    // ends.
    let host: NonNull<dyn Host + 'static> = unsafe { std::mem::transmute(host) };
    let _restore = Restore(HOST.replace(Some(host)));
    f()
}

/// Runs `f` on the current call's host.
///
/// # Panics
/// Outside [`call`]: an import used outside a call is a bug of the harness.
fn host<R>(f: impl FnOnce(&mut dyn Host) -> R) -> R {
    let Some(mut host) = HOST.take() else {
        panic!("a hub import was used outside hubhost_sdk::native::call");
    };
    /// Puts the host back after the method, also when it unwinds.
    struct Return(NonNull<dyn Host + 'static>);
    impl Drop for Return {
        fn drop(&mut self) {
            HOST.set(Some(self.0));
        }
    }
    let _return = Return(host);
    // SAFETY: `with_host` keeps the pointee borrowed for as long as the pointer is in `HOST`,
    // and taking it out of `HOST` makes this the only reference until `Return` puts it back.
    f(unsafe { host.as_mut() })
}

/// The imports with the signatures of the generated bindings, served by [`host`].
pub(crate) mod imports {
    pub(crate) mod clients {
        use super::super::{Target, host};
        pub(crate) fn send(to: &Target, method: &str, arguments: &str) {
            host(|h| h.send(to, method, arguments));
        }
    }

    pub(crate) mod groups {
        use super::super::host;
        pub(crate) fn add(connection_id: &str, group: &str) {
            host(|h| h.group_add(connection_id, group));
        }
        pub(crate) fn remove(connection_id: &str, group: &str) {
            host(|h| h.group_remove(connection_id, group));
        }
    }

    pub(crate) mod caller {
        use super::super::{WireRequest, host};
        pub(crate) fn request() -> WireRequest {
            host(|h| h.request())
        }
        pub(crate) fn abort() {
            host(|h| h.abort());
        }
    }

    pub(crate) mod results {
        use super::super::host;
        pub(crate) use crate::__bindings::hubhost::hub::results::AskError;
        pub(crate) fn ask(
            connection_id: &str,
            method: &str,
            arguments: &str,
            timeout_ms: u32,
        ) -> Result<String, AskError> {
            host(|h| h.ask(connection_id, method, arguments, timeout_ms))
        }
    }

    pub(crate) mod presence {
        use super::super::{PresenceError, WireMember, host};
        pub(crate) fn connections() -> Result<u64, PresenceError> {
            host(|h| h.presence_connections())
        }
        pub(crate) fn users() -> Result<u64, PresenceError> {
            host(|h| h.presence_users())
        }
        pub(crate) fn user_connections(user_id: &str) -> Result<u64, PresenceError> {
            host(|h| h.presence_user_connections(user_id))
        }
        pub(crate) fn group_size(group: &str) -> Result<u64, PresenceError> {
            host(|h| h.presence_group_size(group))
        }
        pub(crate) fn group_members(
            group: &str,
            limit: u32,
        ) -> Result<Vec<WireMember>, PresenceError> {
            host(|h| h.presence_group_members(group, limit))
        }
    }

    pub(crate) mod log {
        use super::super::{Level, host};
        pub(crate) fn write(level: Level, message: &str) {
            host(|h| h.log(level, message));
        }
    }

    pub(crate) mod state {
        use super::super::{StateError, host};
        pub(crate) fn get(key: &str) -> Result<Option<String>, StateError> {
            host(|h| h.state_get(key))
        }
        pub(crate) fn set(key: &str, value: &str, ttl_ms: Option<u64>) -> Result<(), StateError> {
            host(|h| h.state_set(key, value, ttl_ms))
        }
        pub(crate) fn delete(key: &str) -> Result<bool, StateError> {
            host(|h| h.state_delete(key))
        }
        pub(crate) fn incr(key: &str, delta: i64) -> Result<i64, StateError> {
            host(|h| h.state_incr(key, delta))
        }
        pub(crate) fn set_add(key: &str, member: &str) -> Result<bool, StateError> {
            host(|h| h.state_set_add(key, member))
        }
        pub(crate) fn set_remove(key: &str, member: &str) -> Result<bool, StateError> {
            host(|h| h.state_set_remove(key, member))
        }
        pub(crate) fn set_members(key: &str) -> Result<Vec<String>, StateError> {
            host(|h| h.state_set_members(key))
        }
        pub(crate) fn expire(key: &str, ttl_ms: u64) -> Result<bool, StateError> {
            host(|h| h.state_expire(key, ttl_ms))
        }
    }
}
