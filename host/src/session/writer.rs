//! The writing half of a connection: drains the outbox into the transport's sink and sends
//! keep-alive pings when the connection has been quiet.
//!
//! Frames queued together go out as one transport message (both hub protocols allow several
//! messages per transport message) and one flush, so a busy connection costs one write and one
//! client-side message event per batch, not per frame.

use std::time::Duration;

use futures_util::{Sink, SinkExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::protocol::Frame;
use crate::registry::{Outbound, OutboxReceiver};

/// Most frames taken from the outbox at once.
const BATCH: usize = 64;
/// Largest message built by joining frames; a frame beyond it starts the next message.
const MAX_JOINED: usize = 16 * 1024;

pub(super) async fn run<O>(
    mut sink: O,
    mut outbox: OutboxReceiver,
    keep_alive: Duration,
    cancel: CancellationToken,
) where
    O: Sink<Frame> + Unpin,
    O::Error: std::fmt::Display,
{
    // The protocol's Ping, once the handshake chose the protocol.
    let mut ping: Option<Frame> = None;
    // A Ping goes out `keep_alive` after the last write, so the client never waits longer
    // than that. Writes only note their time; the timer is moved when it fires, which costs a
    // timer update per keep-alive period instead of one per write.
    let mut last_write = Instant::now();
    let idle = tokio::time::sleep(keep_alive);
    tokio::pin!(idle);
    // Made once: a fresh `cancelled()` per loop would register with the token every time.
    let cancelled = cancel.cancelled();
    tokio::pin!(cancelled);
    loop {
        // Allocated per batch: a buffer kept between batches would be idle memory.
        let mut batch = Vec::new();
        tokio::select! {
            open = outbox.recv_batch(&mut batch, BATCH) => {
                if !open {
                    // Every sender is gone: the connection ended without a Close message.
                    let _ = sink.close().await;
                    break;
                }
                match write_batch(&mut sink, batch, &mut ping).await {
                    Ok(Flow::Continue) => last_write = Instant::now(),
                    Ok(Flow::Closed) => {
                        cancel.cancel();
                        break;
                    }
                    Err(e) => {
                        tracing::debug!("write failed: {e}");
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
                if let Some(ping) = &ping
                    && sink.send(ping.clone()).await.is_err()
                {
                    cancel.cancel();
                    break;
                }
                last_write = Instant::now();
                idle.as_mut().reset(last_write + keep_alive);
            }
            () = &mut cancelled => {
                // Flush what the session queued last (its Close message) before closing.
                let mut rest = Vec::new();
                outbox.try_recv_batch(&mut rest, usize::MAX);
                if matches!(write_batch(&mut sink, rest, &mut ping).await, Ok(Flow::Continue)) {
                    let _ = sink.close().await;
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
/// the batch and the connection.
async fn write_batch<O>(
    sink: &mut O,
    batch: Vec<Outbound>,
    ping: &mut Option<Frame>,
) -> Result<Flow, O::Error>
where
    O: Sink<Frame> + Unpin,
{
    let mut joined = Joined::default();
    for message in batch {
        match message {
            Outbound::Frame(frame) => {
                if let Some(full) = joined.push(frame) {
                    sink.feed(full).await?;
                }
            }
            Outbound::KeepAlive(frame) => *ping = Some(frame),
            Outbound::Close(frame) => {
                if let Some(rest) = joined.take() {
                    sink.feed(rest).await?;
                }
                sink.send(frame).await?;
                sink.close().await?;
                return Ok(Flow::Closed);
            }
        }
    }
    if let Some(rest) = joined.take() {
        sink.feed(rest).await?;
    }
    sink.flush().await?;
    Ok(Flow::Continue)
}

/// Frames being joined into one message. A lone frame is sent as it is (its bytes are shared
/// with every other recipient); only two or more are copied into a new buffer.
#[derive(Default)]
struct Joined {
    frames: Vec<Frame>,
    len: usize,
}

impl Joined {
    /// Adds `frame`; returns the message to send first when `frame` would make it too large or
    /// is of another format.
    fn push(&mut self, frame: Frame) -> Option<Frame> {
        let fits = self.frames.first().is_none_or(|first| {
            first.format() == frame.format() && self.len + frame.len() <= MAX_JOINED
        });
        let full = if fits { None } else { self.take() };
        self.len += frame.len();
        self.frames.push(frame);
        full
    }

    fn take(&mut self) -> Option<Frame> {
        let joined = Frame::join(&self.frames);
        self.frames.clear();
        self.len = 0;
        joined
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &str) -> Frame {
        Frame::text(text.to_owned())
    }

    #[test]
    fn frames_are_joined_until_the_size_limit() {
        let mut joined = Joined::default();
        assert!(joined.push(frame("a\u{1e}")).is_none());
        assert!(joined.push(frame("b\u{1e}")).is_none());
        assert_eq!(joined.take().expect("joined").as_bytes(), b"a\x1eb\x1e");
        assert!(joined.take().is_none());

        let big = "x".repeat(MAX_JOINED - 1);
        assert!(joined.push(frame(&big)).is_none());
        assert!(
            joined.push(frame("y")).is_none(),
            "exactly the limit still joins"
        );
        let first = joined.push(frame("z")).expect("the full message");
        assert_eq!(first.len(), MAX_JOINED);
        assert_eq!(joined.take().expect("the rest").as_bytes(), b"z");
    }

    #[test]
    fn formats_are_not_mixed() {
        let mut joined = Joined::default();
        assert!(joined.push(frame("a")).is_none());
        let text = joined.push(Frame::binary(vec![1])).expect("the text part");
        assert_eq!(text.as_bytes(), b"a");
        assert_eq!(joined.take().expect("binary").as_bytes(), &[1]);
    }
}
