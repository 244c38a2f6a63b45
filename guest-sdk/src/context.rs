use crate::__bindings::hubhost::hub::types as wit;
use crate::clients::Clients;
use crate::imports::caller;
use crate::request::Request;

/// Who is calling: the connection, its user and claims, and the hub.
///
/// Take it as the first parameter of a hub method (`ctx: &Context`) to use it.
///
/// ```no_run
/// use hubhost_sdk::prelude::*;
/// # pub struct Chat;
/// # #[hub] impl Chat {
/// fn whoami(ctx: &Context) -> String {
///     ctx.user_id().unwrap_or(ctx.connection_id()).to_string()
/// }
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Context {
    hub: String,
    connection_id: String,
    user_id: Option<String>,
    claims: Vec<(String, String)>,
}

impl Context {
    pub(crate) fn from_wit(ctx: wit::Context) -> Self {
        Self {
            hub: ctx.hub,
            connection_id: ctx.connection_id,
            user_id: ctx.user_id,
            claims: ctx.claims,
        }
    }

    /// The hub's name, as in its URL path (`chat` for `/chat`).
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// # fn f(ctx: &Context) {
    /// log::info(format!("call on hub {}", ctx.hub()));
    /// # }
    /// ```
    pub fn hub(&self) -> &str {
        &self.hub
    }

    /// The calling connection's id: the `connectionId` its client sees, and what
    /// [`Clients::client`] and [`crate::Groups::add`] take.
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// # fn f(ctx: &Context) {
    /// Groups::add(ctx.connection_id(), "lobby");
    /// # }
    /// ```
    pub fn connection_id(&self) -> &str {
        &self.connection_id
    }

    /// The authenticated user's id, or `None` for an anonymous connection.
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// # fn f(ctx: &Context) -> HubResult {
    /// let user = ctx.user_id().ok_or_else(|| HubError::new("Sign in first."))?;
    /// # Ok(()) }
    /// ```
    pub fn user_id(&self) -> Option<&str> {
        self.user_id.as_deref()
    }

    /// All claims of the authenticated user, as (type, value) pairs.
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// # fn f(ctx: &Context) {
    /// for (kind, value) in ctx.claims() {
    ///     log::debug(format!("{kind} = {value}"));
    /// }
    /// # }
    /// ```
    pub fn claims(&self) -> &[(String, String)] {
        &self.claims
    }

    /// The first claim of the given type, if any.
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// # fn f(ctx: &Context) {
    /// let is_admin = ctx.claim("role") == Some("admin");
    /// # }
    /// ```
    pub fn claim(&self, kind: &str) -> Option<&str> {
        self.claims
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, v)| v.as_str())
    }

    /// The calling connection only (SignalR's `Clients.Caller`).
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// # fn f(ctx: &Context) -> HubResult {
    /// ctx.caller().send("notice", ("Welcome!",))
    /// # }
    /// ```
    pub fn caller(&self) -> Clients {
        Clients::client(self.connection_id.clone())
    }

    /// Every connection of the hub but the caller (SignalR's `Clients.Others`).
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// # fn f(ctx: &Context, name: String) -> HubResult {
    /// ctx.others().send("userJoined", (name,))
    /// # }
    /// ```
    pub fn others(&self) -> Clients {
        Clients::all_except([self.connection_id.clone()])
    }

    /// Every member of `group` but the caller (SignalR's `Clients.OthersInGroup`).
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// # fn f(ctx: &Context) -> HubResult {
    /// ctx.others_in_group("room-1").send("typing", (ctx.connection_id(),))
    /// # }
    /// ```
    pub fn others_in_group(&self, group: impl Into<String>) -> Clients {
        Clients::group_except(group, [self.connection_id.clone()])
    }

    /// The HTTP request that opened the caller's connection: headers, query string, cookies
    /// (ASP.NET's `Context.GetHttpContext()`). Asked of the host on each use.
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// # fn f(ctx: &Context) {
    /// let agent = ctx.request().header("user-agent").map(str::to_owned);
    /// # }
    /// ```
    pub fn request(&self) -> Request {
        Request::from_wit(caller::request())
    }

    /// Closes the caller's connection once this call ends (after its completion), with a Close
    /// that does not let the client reconnect automatically (SignalR's `Context.Abort()`).
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// # pub struct H;
    /// # #[hub] impl H {
    /// fn leave(ctx: &Context) {
    ///     ctx.abort();
    /// }
    /// # }
    /// ```
    pub fn abort(&self) {
        caller::abort();
    }
}
