//! A test hub for what contract 0.2 added: streams to the caller, `abort`, the connecting
//! request, exception type names, `describe`, client results and presence.

use std::time::Duration;

use hubhost_sdk::Member;
use hubhost_sdk::prelude::*;

pub struct Features;

#[hub]
impl Features {
    /// Streams 0..count, one item every `delay_ms`.
    fn counter(count: u32, delay_ms: u64) -> HubResult<HubStream<u32>> {
        if count > 100_000 {
            return Err(HubError::new("Too many items."));
        }
        Ok(HubStream::unfold(0, move |next: u32| {
            if next == count {
                return Ok(Step::done());
            }
            Ok(Step::item(next)
                .then(next + 1)
                .after(Duration::from_millis(delay_ms)))
        }))
    }

    /// Streams forever, counting its steps in the state under `steps:{key}`, so a test can see
    /// when the host stops calling it.
    fn counted(key: String, delay_ms: u64) -> HubStream<i64> {
        HubStream::unfold((), move |()| {
            let steps = State::incr(&format!("steps:{key}"), 1)?;
            Ok(Step::item(steps)
                .then(())
                .after(Duration::from_millis(delay_ms)))
        })
    }

    /// How many steps `Counted(key)` took.
    fn steps(key: String) -> HubResult<i64> {
        Ok(State::get(&format!("steps:{key}"))?.unwrap_or(0))
    }

    /// Streams 0, 1, ... and fails deliberately at item `at`.
    fn fail_at(at: u32) -> HubStream<u32> {
        HubStream::unfold(0, move |next: u32| {
            if next == at {
                return Err(HubError::new(format!("Stopped at {at}.")));
            }
            Ok(Step::item(next).then(next + 1))
        })
    }

    /// Streams 0, 1, ... and panics (a trap) at item `at`.
    fn trap_at(at: u32) -> HubStream<u32> {
        HubStream::unfold(0, move |next: u32| {
            assert!(next != at, "trapped at {at}");
            Ok(Step::item(next).then(next + 1))
        })
    }

    /// Streams 0, 1, ... and fails unexpectedly, with an exception type, at item `at`.
    fn explode_at(at: u32) -> HubStream<u32> {
        HubStream::unfold(0, move |next: u32| {
            if next == at {
                return Err(HubError::exception("InvalidOperationException", "boom"));
            }
            Ok(Step::item(next).then(next + 1))
        })
    }

    /// The given items, then completion.
    fn items(items: Vec<serde_json::Value>) -> HubStream<serde_json::Value> {
        HubStream::iter(items)
    }

    /// Fails unexpectedly with a .NET-style exception type.
    fn explode() -> HubResult {
        Err(HubError::exception("InvalidOperationException", "boom"))
    }

    /// Parses an integer: a `ParseIntError` converted with `?` names its type.
    fn parse(text: String) -> HubResult<i64> {
        Ok(text.parse::<i64>()?)
    }

    /// What the connecting request carried.
    fn request_info(ctx: &Context) -> serde_json::Value {
        let request = ctx.request();
        serde_json::json!({
            "signalrAgent": request.header("X-SignalR-User-Agent"),
            "userAgent": request.header("user-agent"),
            "room": request.query("room"),
            "id": request.query("id"),
            "flavor": request.cookie("flavor"),
        })
    }

    /// Closes the caller's connection after answering.
    fn leave(ctx: &Context) -> &'static str {
        ctx.abort();
        "bye"
    }

    /// Streams two items, then closes the caller's connection.
    fn leave_streaming(ctx: &Context) -> HubStream<u32> {
        let ctx = ctx.clone();
        HubStream::unfold(0, move |next: u32| {
            if next == 2 {
                ctx.abort();
                return Ok(Step::done());
            }
            Ok(Step::item(next).then(next + 1))
        })
    }

    /// The words the caller streams, in the order they came.
    fn words(words: Upload<String>) -> HubResult<Vec<String>> {
        words.collect()
    }

    /// Adds up the caller's streamed integers, then tells everyone the total; stops early, and
    /// answers, once the total passes `limit`.
    fn sum_up_to(limit: i64, numbers: Upload<i64>) -> HubResult<i64> {
        let total = numbers.fold(0, |total, n| {
            let total = total + n;
            if total > limit {
                return Err(HubError::new(format!("Past {limit}.")));
            }
            Ok(total)
        })?;
        Clients::all().send("summed", (total,))?;
        Ok(total)
    }

    /// Asks `connection_id` to `Answer(question)`, giving it `timeout_ms`.
    fn ask_within(connection_id: String, question: String, timeout_ms: u64) -> HubResult<String> {
        let client = Client::new(connection_id).timeout(Duration::from_millis(timeout_ms));
        Ok(client.invoke("Answer", (question,))?)
    }

    /// Asks the caller itself to `Answer(question)`.
    fn ask_caller(ctx: &Context, question: String) -> HubResult<String> {
        Ok(Client::new(ctx.connection_id()).invoke("Answer", (question,))?)
    }

    /// Asks `connection_id` for a number, and tells how the asking went instead of failing.
    fn ask_number(connection_id: String) -> String {
        match Client::new(connection_id).invoke::<i64>("Number", ()) {
            Ok(n) => format!("got {n}"),
            Err(e) => format!("{e:?}"),
        }
    }

    /// Adds two numbers.
    fn add(a: i64, b: f64) -> f64 {
        a as f64 + b
    }

    /// Every presence count at once: the hub's connections and users, `user`'s connections
    /// and `group`'s size.
    fn presence_counts(user: String, group: String) -> HubResult<serde_json::Value> {
        Ok(serde_json::json!({
            "connections": Presence::connections()?,
            "users": Presence::users()?,
            "user": Presence::user_connections(&user)?,
            "online": Presence::is_online(&user)?,
            "group": Presence::group_size(&group)?,
        }))
    }

    /// Up to `limit` members of `group`, sorted by connection id.
    fn presence_members(group: String, limit: u32) -> HubResult<Vec<Member>> {
        let mut members = Presence::group_members(&group, limit)?;
        members.sort_by(|a, b| a.connection_id.cmp(&b.connection_id));
        Ok(members)
    }

    /// Adds the caller to `group`.
    fn join_group(ctx: &Context, group: String) {
        Groups::add(ctx.connection_id(), &group);
    }

    /// Adds connection `connection_id` (on any server) to `group`.
    fn add_to_group(connection_id: String, group: String) {
        Groups::add(&connection_id, &group);
    }

    /// Removes the caller from `group`.
    fn leave_group(ctx: &Context, group: String) {
        Groups::remove(ctx.connection_id(), &group);
    }
}
