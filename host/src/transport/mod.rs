//! Transports: how a connection's messages travel. Each turns its wire into the session's
//! stream of incoming messages and sink of outgoing frames, and hands both to
//! [`session::serve`](crate::session::serve).
//!
//! - [`websocket`]: one WebSocket per connection, a SignalR message per WebSocket message
//!   (several, when frames were queued together).

pub mod websocket;
