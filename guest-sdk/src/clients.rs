use serde::Serialize;

use crate::__bindings::hubhost::hub::types::{GroupExcept, Target};
use crate::error::{HubError, HubResult};
use crate::imports::clients as wit;

/// A set of clients to send to (SignalR's `Clients.All`, `Clients.Group(..)`, ...).
///
/// Build one with a constructor, then [`send`](Clients::send). The caller-relative sets
/// (`Caller`, `Others`, `OthersInGroup`) come from [`crate::Context`].
///
/// ```no_run
/// use hubhost_sdk::prelude::*;
///
/// # fn f(ctx: &Context) -> HubResult {
/// Clients::all().send("broadcastMessage", ("ana", "hello"))?;
/// Clients::group("room-1").send("roomMessage", ("ana", "hi room"))?;
/// ctx.others().send("userTyping", ("ana",))?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a Clients set does nothing until you call send"]
pub struct Clients {
    target: Target,
}

fn owned(ids: impl IntoIterator<Item = impl Into<String>>) -> Vec<String> {
    ids.into_iter().map(Into::into).collect()
}

impl Clients {
    /// Every connection of the hub, on every server.
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// # fn f() -> HubResult {
    /// Clients::all().send("broadcastMessage", ("ana", "hello"))
    /// # }
    /// ```
    pub fn all() -> Self {
        Self {
            target: Target::All,
        }
    }

    /// Every connection of the hub except the given connection ids.
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// # fn f(muted: Vec<String>) -> HubResult {
    /// Clients::all_except(muted).send("broadcastMessage", ("ana", "hello"))
    /// # }
    /// ```
    pub fn all_except(excluded: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            target: Target::AllExcept(owned(excluded)),
        }
    }

    /// One connection, by connection id.
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// # fn f(peer: String) -> HubResult {
    /// Clients::client(peer).send("privateMessage", ("ana", "psst"))
    /// # }
    /// ```
    pub fn client(connection_id: impl Into<String>) -> Self {
        Self {
            target: Target::Connection(connection_id.into()),
        }
    }

    /// Several connections, by connection id.
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// # fn f(a: String, b: String) -> HubResult {
    /// Clients::clients([a, b]).send("matchFound", ("game-7",))
    /// # }
    /// ```
    #[allow(clippy::self_named_constructors)] // SignalR's name: `Clients.Clients(ids)`
    pub fn clients(connection_ids: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            target: Target::Connections(owned(connection_ids)),
        }
    }

    /// Every member of a group.
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// # fn f() -> HubResult {
    /// Clients::group("room-1").send("roomMessage", ("ana", "hi"))
    /// # }
    /// ```
    pub fn group(group: impl Into<String>) -> Self {
        Self {
            target: Target::Group(group.into()),
        }
    }

    /// Every member of a group except the given connection ids.
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// # fn f(ctx: &Context) -> HubResult {
    /// Clients::group_except("room-1", [ctx.connection_id()]).send("typing", ("ana",))
    /// # }
    /// ```
    pub fn group_except(
        group: impl Into<String>,
        excluded: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            target: Target::GroupExcept(GroupExcept {
                group: group.into(),
                excluded: owned(excluded),
            }),
        }
    }

    /// Every member of any of the groups; a connection in several of them receives one copy.
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// # fn f() -> HubResult {
    /// Clients::groups(["room-1", "room-2"]).send("announcement", ("closing soon",))
    /// # }
    /// ```
    pub fn groups(groups: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            target: Target::Groups(owned(groups)),
        }
    }

    /// Every connection of a user (all their tabs and devices).
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// # fn f() -> HubResult {
    /// Clients::user("ana@example.com").send("notify", ("You have mail",))
    /// # }
    /// ```
    pub fn user(user_id: impl Into<String>) -> Self {
        Self {
            target: Target::User(user_id.into()),
        }
    }

    /// Every connection of any of the users.
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// # fn f() -> HubResult {
    /// Clients::users(["ana", "ben"]).send("notify", ("Meeting in 5",))
    /// # }
    /// ```
    pub fn users(user_ids: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            target: Target::Users(owned(user_ids)),
        }
    }

    /// Invokes `method` on every client in the set with `arguments`.
    ///
    /// `arguments` must serialize to a JSON array: use a tuple (`(a, b)`, and `(a,)` for one
    /// argument), an array or a `Vec`; `()` sends no arguments. The client's handler
    /// (`connection.on("method", (a, b) => ...)`) receives them in order. Fails only if the
    /// arguments cannot be serialized.
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// # fn f() -> HubResult {
    /// Clients::all().send("tick", ())?;
    /// Clients::all().send("score", ("ana", 42))?;
    /// Clients::all().send("message", ("one argument",))
    /// # }
    /// ```
    pub fn send(&self, method: &str, arguments: impl Serialize) -> HubResult {
        let json = arguments_json(method, &arguments)?;
        wit::send(&self.target, method, &json);
        Ok(())
    }
}

/// A client method's arguments as the JSON array the host takes.
pub(crate) fn arguments_json(method: &str, arguments: &impl Serialize) -> HubResult<String> {
    let json = if is_unit(arguments) {
        "[]".to_owned()
    } else {
        serde_json::to_string(arguments)?
    };
    if !json.starts_with('[') {
        return Err(HubError::unexpected(format!(
            "the arguments of '{method}' must serialize to a JSON array (use a tuple such as `(value,)`), not {json}"
        )));
    }
    Ok(json)
}

/// `()` serializes as `null`; for sends it means "no arguments".
fn is_unit<T: Serialize>(value: &T) -> bool {
    std::mem::size_of_val(value) == 0 && serde_json::to_string(value).is_ok_and(|s| s == "null")
}
