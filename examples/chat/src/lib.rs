//! The chat hub, served at `/chat` as `chat.wasm`.
//!
//! Clients call `Send(name, message)` and everyone receives `broadcastMessage(name, message)`;
//! rooms are SignalR groups.

use hubhost_sdk::prelude::*;

pub struct Chat;

#[hub]
impl Chat {
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

    /// Sends `privateMessage(from, message)` to one connection.
    fn send_to_connection(ctx: &Context, connection_id: String, message: String) -> HubResult {
        Clients::client(connection_id).send("privateMessage", (ctx.connection_id(), message))
    }
}

fn check_room(room: &str) -> HubResult {
    if room.trim().is_empty() || room.len() > 100 {
        return Err(HubError::new("Room names must have 1 to 100 characters."));
    }
    Ok(())
}
