use crate::imports::groups as wit;

/// Group membership of connections (SignalR's `Groups`).
///
/// Groups belong to the hub, exist while they have members, and span every server sharing the
/// host's backplane. A connection leaves all its groups when it disconnects. Changes take effect
/// in order with the hub's sends, before the caller gets its completion, so a send to a group
/// right after adding a connection reaches it.
///
/// ```no_run
/// use hubhost_sdk::prelude::*;
///
/// pub struct Rooms;
///
/// #[hub]
/// impl Rooms {
///     fn join(ctx: &Context, room: String) -> HubResult {
///         Groups::add(ctx.connection_id(), &room);
///         Clients::group(room).send("joined", (ctx.connection_id(),))
///     }
/// }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Groups;

impl Groups {
    /// Adds the connection to the group. Adding a member again is harmless.
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// # fn f(ctx: &Context) {
    /// Groups::add(ctx.connection_id(), "lobby");
    /// # }
    /// ```
    pub fn add(connection_id: &str, group: &str) {
        wit::add(connection_id, group);
    }

    /// Removes the connection from the group. Removing a non-member is harmless.
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// # fn f(ctx: &Context) {
    /// Groups::remove(ctx.connection_id(), "lobby");
    /// # }
    /// ```
    pub fn remove(connection_id: &str, group: &str) {
        wit::remove(connection_id, group);
    }
}
