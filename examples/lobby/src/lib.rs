//! A game lobby, served at `/lobby`: players create and join rooms (SignalR groups); each room's
//! players and status live in the shared state, so every server agrees on them.
//!
//! Client methods: `roomsChanged(rooms)`, `playerJoined(room, player, count)`,
//! `playerLeft(room, player, count)`, `gameStarted(room, players)`.

use std::time::Duration;

use hubhost_sdk::prelude::*;

pub struct Lobby;

/// Rooms of at most this many players.
const ROOM_SIZE: usize = 4;

#[hub]
impl Lobby {
    /// Creates a room (idempotent) and tells everyone the new list.
    fn create_room(room: String) -> HubResult<Vec<String>> {
        check(&room)?;
        State::set_add("rooms", &room)?;
        let rooms = sorted(State::set_members("rooms")?);
        Clients::all().send("roomsChanged", (&rooms,))?;
        Ok(rooms)
    }

    /// The rooms, by name.
    fn list_rooms() -> HubResult<Vec<String>> {
        Ok(sorted(State::set_members("rooms")?))
    }

    /// Joins `room` as `player`; the room's members hear about it. Fails if the room does not
    /// exist, is full, or its game has started.
    fn join_room(ctx: &Context, room: String, player: String) -> HubResult<usize> {
        check(&player)?;
        if !State::set_members("rooms")?.contains(&room) {
            return Err(HubError::new(format!("There is no room '{room}'.")));
        }
        if State::get::<String>(&status_key(&room))?.as_deref() == Some("playing") {
            return Err(HubError::new(format!("The game in '{room}' has started.")));
        }
        let players = players_key(&room);
        if State::set_members(&players)?.len() >= ROOM_SIZE
            && !State::set_members(&players)?.contains(&player)
        {
            return Err(HubError::new(format!(
                "'{room}' is full ({ROOM_SIZE} players)."
            )));
        }
        State::set_add(&players, &player)?;
        Groups::add(ctx.connection_id(), &room);
        let count = State::set_members(&players)?.len();
        Clients::group(room.clone()).send("playerJoined", (&room, &player, count))?;
        Ok(count)
    }

    /// Leaves `room`.
    fn leave_room(ctx: &Context, room: String, player: String) -> HubResult {
        State::set_remove(&players_key(&room), &player)?;
        Groups::remove(ctx.connection_id(), &room);
        let count = State::set_members(&players_key(&room))?.len();
        Clients::group(room.clone()).send("playerLeft", (&room, &player, count))
    }

    /// The players of `room`.
    fn players(room: String) -> HubResult<Vec<String>> {
        Ok(sorted(State::set_members(&players_key(&room))?))
    }

    /// Starts the game when at least two players are in; everyone in the room is told.
    fn start_game(room: String) -> HubResult {
        let players = sorted(State::set_members(&players_key(&room))?);
        if players.len() < 2 {
            return Err(HubError::new("A game needs at least two players."));
        }
        State::set(&status_key(&room), "playing")?;
        Clients::group(room.clone()).send("gameStarted", (&room, &players))
    }

    /// Counts down to a game's start: streams the seconds left, `seconds` down to 0, one a
    /// second (`connection.stream("Countdown", 10)`).
    fn countdown(seconds: u32) -> HubStream<u32> {
        HubStream::unfold(seconds, |left: u32| {
            Ok(match left.checked_sub(1) {
                Some(next) => Step::item(left).then(next).after(Duration::from_secs(1)),
                None => Step::item(0),
            })
        })
    }
}

fn players_key(room: &str) -> String {
    format!("room:{room}:players")
}

fn status_key(room: &str) -> String {
    format!("room:{room}:status")
}

fn sorted(mut items: Vec<String>) -> Vec<String> {
    items.sort();
    items
}

fn check(name: &str) -> HubResult {
    if name.trim().is_empty() || name.len() > 40 {
        return Err(HubError::new("Names must have 1 to 40 characters."));
    }
    Ok(())
}
