use crate::__bindings::hubhost::hub::presence::PresenceError;
use crate::error::{HubError, HubResult};
use crate::imports::presence as wit;

/// Who is connected to the hub, over every server of the deployment.
///
/// Unlike a counter kept in [`State`](crate::State), presence cannot drift: the host keeps
/// each server's share alive with heartbeats, so the connections of a server that dies stop
/// counting (and leave their groups) soon after (20 s with the host's default presence TTL). The caller counts from its
/// `on_connected` on and no longer in its `on_disconnected`; a group change counts once the call
/// that made it has returned. An unreachable store is an unexpected failure of the call, unless
/// the hub handles the error.
///
/// ```no_run
/// use hubhost_sdk::prelude::*;
///
/// pub struct Chat;
///
/// #[hub]
/// impl Chat {
///     fn on_connected(_ctx: &Context) -> HubResult {
///         Clients::all().send("online", (Presence::connections()?,))
///     }
///
///     fn on_disconnected(_ctx: &Context, _error: Option<String>) -> HubResult {
///         Clients::all().send("online", (Presence::connections()?,))
///     }
/// }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Presence;

/// A member of a group, as [`Presence::group_members`] lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    /// The member's connection id.
    pub connection_id: String,
    /// Its user id, if the connection is authenticated.
    pub user_id: Option<String>,
}

fn failed(what: &str, error: PresenceError) -> HubError {
    let PresenceError::Unavailable(m) = error;
    HubError::unexpected(format!(
        "Presence::{what} failed: presence unavailable: {m}"
    ))
}

impl Presence {
    /// How many connections the hub has.
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// # fn f() -> HubResult {
    /// let online = Presence::connections()?;
    /// # Ok(()) }
    /// ```
    pub fn connections() -> HubResult<u64> {
        wit::connections().map_err(|e| failed("connections()", e))
    }

    /// How many distinct users are connected: a user with several tabs counts once, anonymous
    /// connections not at all.
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// # fn f() -> HubResult {
    /// let people = Presence::users()?;
    /// # Ok(()) }
    /// ```
    pub fn users() -> HubResult<u64> {
        wit::users().map_err(|e| failed("users()", e))
    }

    /// How many connections user `user_id` has (0 when offline).
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// # fn f() -> HubResult {
    /// let tabs = Presence::user_connections("ana")?;
    /// # Ok(()) }
    /// ```
    pub fn user_connections(user_id: &str) -> HubResult<u64> {
        wit::user_connections(user_id)
            .map_err(|e| failed(&format!("user_connections(\"{user_id}\")"), e))
    }

    /// Whether user `user_id` has a connection.
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// # fn f() -> HubResult {
    /// if !Presence::is_online("ana")? {
    ///     log::info("ana is away");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn is_online(user_id: &str) -> HubResult<bool> {
        Ok(Self::user_connections(user_id)? > 0)
    }

    /// How many connections group `group` has.
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// # fn f() -> HubResult {
    /// let players = Presence::group_size("table-7")?;
    /// # Ok(()) }
    /// ```
    pub fn group_size(group: &str) -> HubResult<u64> {
        wit::group_size(group).map_err(|e| failed(&format!("group_size(\"{group}\")"), e))
    }

    /// Up to `limit` members of group `group` (the host caps `limit` at 1,000), in no
    /// particular order.
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// # fn f() -> HubResult {
    /// for member in Presence::group_members("table-7", 10)? {
    ///     log::info(format!("{} is at the table", member.connection_id));
    /// }
    /// # Ok(()) }
    /// ```
    pub fn group_members(group: &str, limit: u32) -> HubResult<Vec<Member>> {
        let members = wit::group_members(group, limit)
            .map_err(|e| failed(&format!("group_members(\"{group}\", {limit})"), e))?;
        Ok(members
            .into_iter()
            .map(|m| Member {
                connection_id: m.connection_id,
                user_id: m.user_id,
            })
            .collect())
    }
}

impl crate::__private::Schema for Member {
    fn schema() -> String {
        r#"{"type":"object","properties":{"connectionId":{"type":"string"},"userId":{"anyOf":[{"type":"string"},{"type":"null"}]}},"required":["connectionId","userId"]}"#.to_owned()
    }
}
