//! The writing half of a connection: drains the outbox into the socket and sends keep-alive
//! pings when the connection has been quiet.
//!
//! Frames queued together go out as one WebSocket message (SignalR's JSON protocol allows
//! several records per message, each ended by its separator) and one flush, so a busy
//! connection costs one write and one client-side message event per batch, not per frame.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, close_code};
use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::protocol::json;
use crate::router::{Outbound, OutboxReceiver};

/// Most frames taken from the outbox at once.
const BATCH: usize = 64;
/// Largest message built by joining frames; a frame beyond it starts the next message.
const MAX_JOINED: usize = 16 * 1024;

type Sink = SplitSink<WebSocket, Message>;

pub(super) async fn run(
    mut sink: Sink,
    mut outbox: OutboxReceiver,
    keep_alive: Duration,
    cancel: CancellationToken,
) {
    // A Ping goes out `keep_alive` after the last write, so the client never waits longer
    // than that. Writes only note their time; the timer is moved when it fires, which costs a
    // timer update per keep-alive period instead of one per write.
    let mut last_write = Instant::now();
    let idle = tokio::time::sleep(keep_alive);
    tokio::pin!(idle);
    // Made once: a fresh `cancelled()` per loop would register with the token every time.
    let cancelled = cancel.cancelled();
    tokio::pin!(cancelled);
    let ping = Utf8Bytes::from_static(json::PING);
    loop {
        // Allocated per batch: a buffer kept between batches would be idle memory.
        let mut batch = Vec::new();
        tokio::select! {
            open = outbox.recv_batch(&mut batch, BATCH) => {
                if !open {
                    // Every sender is gone: the connection ended without a Close message.
                    close(&mut sink).await;
                    break;
                }
                match write_batch(&mut sink, batch).await {
                    Ok(Flow::Continue) => last_write = Instant::now(),
                    Ok(Flow::Closed) | Err(_) => {
                        cancel.cancel();
                        break;
                    }
                }
            }
            () = &mut idle => {
                let due = last_write + keep_alive;
                if Instant::now() < due {
                    idle.as_mut().reset(due);
                    continue;
                }
                if sink.send(Message::Text(ping.clone())).await.is_err() {
                    cancel.cancel();
                    break;
                }
                last_write = Instant::now();
                idle.as_mut().reset(last_write + keep_alive);
            }
            () = &mut cancelled => {
                // Flush what the reader queued last (its Close message) before closing.
                let mut rest = Vec::new();
                outbox.try_recv_batch(&mut rest, usize::MAX);
                if matches!(write_batch(&mut sink, rest).await, Ok(Flow::Continue)) {
                    close(&mut sink).await;
                }
                break;
            }
        }
    }
}

enum Flow {
    Continue,
    Closed,
}

/// Writes `batch` in order, joining consecutive frames, and flushes once. A Close message ends
/// the batch and the socket.
async fn write_batch(sink: &mut Sink, batch: Vec<Outbound>) -> Result<Flow, axum::Error> {
    let mut joined = Joined::default();
    for message in batch {
        match message {
            Outbound::Frame(frame) => {
                if let Some(full) = joined.push(frame) {
                    sink.feed(Message::Text(full)).await?;
                }
            }
            Outbound::Close(frame) => {
                if let Some(text) = joined.take() {
                    sink.feed(Message::Text(text)).await?;
                }
                sink.send(Message::Text(frame)).await?;
                close(sink).await;
                return Ok(Flow::Closed);
            }
        }
    }
    if let Some(text) = joined.take() {
        sink.feed(Message::Text(text)).await?;
    }
    sink.flush().await?;
    Ok(Flow::Continue)
}

/// Frames being joined into one message. A lone frame is sent as it is (its bytes are shared
/// with every other recipient); only two or more are copied into a new buffer.
#[derive(Default)]
enum Joined {
    #[default]
    Empty,
    One(Utf8Bytes),
    Many(String),
}

impl Joined {
    /// Adds `frame`; returns the message to send first when `frame` would make it too large.
    fn push(&mut self, frame: Utf8Bytes) -> Option<Utf8Bytes> {
        let len = match self {
            Joined::Empty => 0,
            Joined::One(f) => f.len(),
            Joined::Many(s) => s.len(),
        };
        if len > 0 && len + frame.len() > MAX_JOINED {
            let full = self.take();
            *self = Joined::One(frame);
            return full;
        }
        *self = match std::mem::take(self) {
            Joined::Empty => Joined::One(frame),
            Joined::One(first) => {
                let mut text = String::with_capacity(first.len() + frame.len() * 2);
                text.push_str(first.as_str());
                text.push_str(frame.as_str());
                Joined::Many(text)
            }
            Joined::Many(mut text) => {
                text.push_str(frame.as_str());
                Joined::Many(text)
            }
        };
        None
    }

    fn take(&mut self) -> Option<Utf8Bytes> {
        match std::mem::take(self) {
            Joined::Empty => None,
            Joined::One(frame) => Some(frame),
            Joined::Many(text) => Some(Utf8Bytes::from(text)),
        }
    }
}

/// A normal closure (1000): any other code shows as an error in the client.
async fn close(sink: &mut Sink) {
    let frame = CloseFrame {
        code: close_code::NORMAL,
        reason: Utf8Bytes::from_static(""),
    };
    let _ = sink.send(Message::Close(Some(frame))).await;
    let _ = sink.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &str) -> Utf8Bytes {
        Utf8Bytes::from(text.to_owned())
    }

    #[test]
    fn frames_are_joined_until_the_size_limit() {
        let mut joined = Joined::default();
        assert!(joined.push(frame("a\u{1e}")).is_none());
        assert!(joined.push(frame("b\u{1e}")).is_none());
        assert_eq!(joined.take().unwrap().as_str(), "a\u{1e}b\u{1e}");
        assert!(joined.take().is_none());

        let big = "x".repeat(MAX_JOINED - 1);
        assert!(joined.push(frame(&big)).is_none());
        assert!(
            joined.push(frame("y")).is_none(),
            "exactly the limit still joins"
        );
        let first = joined.push(frame("z")).unwrap();
        assert_eq!(first.len(), MAX_JOINED);
        assert_eq!(joined.take().unwrap().as_str(), "z");
    }
}
