//! The chat hub, served at `/chat` as `chat.wasm`.
//!
//! Clients call `Send(name, message)` and everyone receives `broadcastMessage(name, message)`;
//! rooms are SignalR groups; everyone receives `online(count)` as clients come and go, counted by
//! the host's presence so the number is right across every server, even after one dies.

use std::time::Duration;

use hubhost_sdk::prelude::*;

pub struct Chat;

#[hub]
impl Chat {
    /// Tells everyone the new number of clients online.
    fn on_connected(_ctx: &Context) -> HubResult {
        announce_online()
    }

    /// Tells everyone the new number of clients online.
    fn on_disconnected(_ctx: &Context, _error: Option<String>) -> HubResult {
        announce_online()
    }

    /// How many clients are connected, over all servers.
    fn online() -> HubResult<u64> {
        Presence::connections()
    }

    /// Everyone connected to the hub receives `broadcastMessage(name, message)`.
    fn send(name: String, message: String) -> HubResult {
        Clients::all().send("broadcastMessage", (name, message))
    }

    /// Everyone but the caller receives `broadcastMessage(name, message)`.
    fn send_to_others(ctx: &Context, name: String, message: String) -> HubResult {
        ctx.others().send("broadcastMessage", (name, message))
    }

    /// Returns the message to the caller, unchanged.
    fn echo(message: String) -> String {
        message
    }

    /// Returns the caller's connection id.
    fn whoami(ctx: &Context) -> String {
        ctx.connection_id().to_owned()
    }

    /// Joins a room; its members (the caller included) receive `joined(room, connectionId)`.
    fn join_room(ctx: &Context, room: String) -> HubResult {
        check_room(&room)?;
        Groups::add(ctx.connection_id(), &room);
        Clients::group(room.clone()).send("joined", (room, ctx.connection_id()))
    }

    /// Adds any connection (on any server) to a room, like SignalR's
    /// `Groups.AddToGroupAsync(connectionId, room)`; completes once it is done.
    fn add_to_room(connection_id: String, room: String) -> HubResult {
        check_room(&room)?;
        Groups::add(&connection_id, &room);
        Ok(())
    }

    /// Leaves a room.
    fn leave_room(ctx: &Context, room: String) -> HubResult {
        check_room(&room)?;
        Groups::remove(ctx.connection_id(), &room);
        Ok(())
    }

    /// Members of `room` receive `roomMessage(room, name, message)`.
    fn send_to_room(room: String, name: String, message: String) -> HubResult {
        check_room(&room)?;
        Clients::group(room.clone()).send("roomMessage", (room, name, message))
    }

    /// Sends `privateMessage(from, message)` to every connection of a user, on every server.
    fn send_to_user(ctx: &Context, user: String, message: String) -> HubResult {
        Clients::user(user).send("privateMessage", (ctx.connection_id(), message))
    }

    /// The caller's user id, if authenticated.
    fn whoami_user(ctx: &Context) -> Option<String> {
        ctx.user_id().map(str::to_owned)
    }

    /// Streams the integers 0..count to the caller, one every `delay_ms`:
    /// `connection.stream("Counter", 5, 100)`.
    fn counter(count: u32, delay_ms: u32) -> HubResult<HubStream<u32>> {
        if delay_ms < 10 && count > 1000 {
            return Err(HubError::new(
                "Fast counters stop at 1000: use a delay of 10 ms or more.",
            ));
        }
        let delay = Duration::from_millis(delay_ms.into());
        Ok(HubStream::unfold(0, move |next: u32| {
            Ok(if next < count {
                Step::item(next).then(next + 1).after(delay)
            } else {
                Step::done()
            })
        }))
    }

    /// Adds up the numbers the caller streams: `connection.invoke("Sum", subject)`, then
    /// `subject.next(1)`, `subject.next(2)`, `subject.complete()` resolves to 3.
    fn sum(numbers: Upload<f64>) -> HubResult<f64> {
        numbers.fold(0.0, |total, n| Ok(total + n))
    }

    /// Asks connection `connection_id` (on any server) to answer `question` with its
    /// `Answer(question)` handler, and returns the answer to the caller.
    fn ask(connection_id: String, question: String) -> HubResult<String> {
        Ok(Client::new(connection_id).invoke("Answer", (question,))?)
    }

    /// Sends `privateMessage(from, message)` to one connection.
    fn send_to_connection(ctx: &Context, connection_id: String, message: String) -> HubResult {
        Clients::client(connection_id).send("privateMessage", (ctx.connection_id(), message))
    }
}

/// The count is a nicety: while presence is unreachable the chat goes on without it.
fn announce_online() -> HubResult {
    match Presence::connections() {
        Ok(online) => Clients::all().send("online", (online,)),
        Err(e) => {
            log::warn(format!("online count not sent: {e}"));
            Ok(())
        }
    }
}

fn check_room(room: &str) -> HubResult {
    if room.trim().is_empty() || room.len() > 100 {
        return Err(HubError::new("Room names must have 1 to 100 characters."));
    }
    Ok(())
}
