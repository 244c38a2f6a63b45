//! What clients POST, on its way to their session: the incoming half of the Server-Sent Events
//! and long-polling transports.
//!
//! Bounded: when the session is not reading (an invocation waits for a slot), a POST waits too,
//! and the client is held back, as ASP.NET's pipe does. The connection's end (the event stream
//! dropped, a DELETE, the disconnect timeout) closes the inbox, which ends the session's
//! incoming stream once what was already posted is read.
//!
//! Not a `tokio::sync::mpsc` channel: that allocates a block of 32 slots per channel, about
//! 1 KiB, for every connection, idle or not; this queue holds nothing until a POST comes.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::session::Inbound;

/// Chunks of POST bodies waiting for the session before a POST waits.
const CAPACITY: usize = 16;

#[derive(Default)]
struct State {
    queue: VecDeque<Bytes>,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the session when a message comes or the inbox closes.
    reader: AtomicWaker,
    /// Wakes POSTs waiting for room.
    room: Notify,
    /// Held by the POST whose body is being passed on, so that two POSTs' chunks do not mix.
    body: tokio::sync::Mutex<()>,
}

/// The sending side, shared by the POSTs of one connection.
#[derive(Clone)]
pub struct InboxSender {
    shared: Arc<Shared>,
}

/// The session's incoming stream.
pub struct Incoming {
    shared: Arc<Shared>,
}

/// A new inbox.
pub fn inbox() -> (InboxSender, Incoming) {
    let shared = Arc::new(Shared::default());
    (
        InboxSender {
            shared: shared.clone(),
        },
        Incoming { shared },
    )
}

/// The connection has ended: nothing more is taken.
#[derive(Debug, PartialEq, Eq)]
pub struct Gone;

impl InboxSender {
    /// Waits for the POSTs before this one to finish; keep the guard while sending a body's
    /// chunks.
    pub async fn one_body_at_a_time(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.shared.body.lock().await
    }

    /// Hands one chunk of a POST body to the session, waiting while it is not reading.
    pub async fn send(&self, body: Bytes) -> Result<(), Gone> {
        loop {
            // Registered before the check, so room made in between is not missed.
            let room = self.shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut state = self.shared.state.lock();
                if state.closed {
                    return Err(Gone);
                }
                if state.queue.len() < CAPACITY {
                    state.queue.push_back(body);
                    drop(state);
                    self.shared.reader.wake();
                    return Ok(());
                }
            }
            room.await;
        }
    }

    /// Ends the connection from the transport's side: the session reads what was posted, then
    /// sees its client gone.
    pub fn close(&self) {
        self.shared.state.lock().closed = true;
        self.shared.reader.wake();
        self.shared.room.notify_waiters();
    }

    /// Whether the inbox was closed.
    pub fn is_closed(&self) -> bool {
        self.shared.state.lock().closed
    }
}

impl std::fmt::Debug for InboxSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxSender")
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Stream for Incoming {
    type Item = Inbound;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Inbound>> {
        let shared = &self.shared;
        // Registered before looking, so a message pushed in between wakes this task.
        shared.reader.register(cx.waker());
        let mut state = shared.state.lock();
        if let Some(message) = state.queue.pop_front() {
            if state.queue.is_empty() {
                // Give back the room a burst took.
                state.queue.shrink_to(0);
            }
            drop(state);
            shared.room.notify_one();
            return Poll::Ready(Some(Ok(message)));
        }
        if state.closed {
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

impl Drop for Incoming {
    /// The session is gone: POSTs waiting for room, and later ones, fail.
    fn drop(&mut self) {
        let mut state = self.shared.state.lock();
        state.closed = true;
        state.queue.clear();
        drop(state);
        self.shared.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    #[tokio::test]
    async fn delivers_in_order_then_ends_when_closed() {
        let (sender, mut incoming) = inbox();
        sender.send(Bytes::from_static(b"a")).await.expect("sent");
        sender.send(Bytes::from_static(b"b")).await.expect("sent");
        sender.close();
        assert_eq!(sender.send(Bytes::from_static(b"c")).await, Err(Gone));
        let mut got = Vec::new();
        while let Some(Ok(message)) = incoming.next().await {
            got.push(message);
        }
        assert_eq!(got, [Bytes::from_static(b"a"), Bytes::from_static(b"b")]);
    }

    #[tokio::test]
    async fn a_post_waits_while_the_session_is_not_reading() {
        let (sender, mut incoming) = inbox();
        for _ in 0..CAPACITY {
            sender.send(Bytes::from_static(b"x")).await.expect("room");
        }
        let blocked = sender.send(Bytes::from_static(b"y"));
        tokio::pin!(blocked);
        assert!(futures_util::poll!(blocked.as_mut()).is_pending());
        incoming.next().await;
        assert_eq!(blocked.await, Ok(()));
    }

    #[tokio::test]
    async fn a_waiting_post_fails_when_the_session_goes() {
        let (sender, incoming) = inbox();
        for _ in 0..CAPACITY {
            sender.send(Bytes::from_static(b"x")).await.expect("room");
        }
        let blocked = tokio::spawn({
            let sender = sender.clone();
            async move { sender.send(Bytes::from_static(b"y")).await }
        });
        tokio::task::yield_now().await;
        drop(incoming);
        assert_eq!(blocked.await.expect("joined"), Err(Gone));
    }

    #[tokio::test]
    async fn a_waiting_session_is_woken_by_a_post_from_another_task() {
        let (sender, mut incoming) = inbox();
        let reader = tokio::spawn(async move { incoming.next().await.map(|m| m.ok()) });
        tokio::task::yield_now().await;
        sender.send(Bytes::from_static(b"z")).await.expect("sent");
        assert_eq!(
            reader.await.expect("joined"),
            Some(Some(Bytes::from_static(b"z")))
        );
    }
}
