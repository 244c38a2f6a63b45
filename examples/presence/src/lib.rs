//! Presence and counters, served at `/presence`: who is online (by user when authenticated, by
//! connection otherwise) and named counters shared by every server.
//!
//! Client methods: `presence(online)`, `counter(name, value)`.

use hubhost_sdk::prelude::*;

pub struct Presence;

#[hub]
impl Presence {
    fn on_connected(ctx: &Context) -> HubResult {
        State::set_add("online", who(ctx))?;
        announce()
    }

    fn on_disconnected(ctx: &Context, _error: Option<String>) -> HubResult {
        State::set_remove("online", who(ctx))?;
        announce()
    }

    /// Who is online now.
    fn online() -> HubResult<Vec<String>> {
        let mut online = State::set_members("online")?;
        online.sort();
        Ok(online)
    }

    /// Adds `by` to counter `name`, tells everyone, and returns the new value.
    fn increment(name: String, by: i64) -> HubResult<i64> {
        let value = State::incr(&format!("counter:{name}"), by)?;
        Clients::all().send("counter", (&name, value))?;
        Ok(value)
    }

    /// The value of counter `name`.
    fn get(name: String) -> HubResult<i64> {
        Ok(State::get(&format!("counter:{name}"))?.unwrap_or(0))
    }
}

fn who(ctx: &Context) -> &str {
    ctx.user_id().unwrap_or(ctx.connection_id())
}

fn announce() -> HubResult {
    let mut online = State::set_members("online")?;
    online.sort();
    Clients::all().send("presence", (online,))
}
