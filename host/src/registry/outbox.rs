//! A connection's outbox: the bounded queue between fan-out and the connection's writer task.
//!
//! Not a `tokio::sync::mpsc` channel, because of idle memory: mpsc allocates its first block of
//! 32 slots (about 1.3 KiB here) plus the channel (0.5 KiB) per connection, while this queue
//! costs one small allocation until messages flow, and gives its buffer back after a burst.
//! It also hands the writer everything queued in one lock, which is how writes get batched.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::Outbound;

/// Queued frames kept allocated after a burst; beyond this the buffer is released when drained.
const KEEP_CAPACITY: usize = 32;

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    /// The queue holds its capacity: the connection is not reading.
    #[error("outbox full")]
    Full,
    /// The writer is gone.
    #[error("outbox closed")]
    Closed,
}

struct State {
    queue: VecDeque<Outbound>,
    senders: usize,
    receiving: bool,
    /// A sender waits in [`OutboxSender::room`]: the writer wakes it when it takes frames.
    waiting_for_room: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the writer when the queue stops being empty or the last sender leaves.
    ready: Notify,
    /// Wakes senders waiting for room once the writer took frames.
    drained: Notify,
    capacity: usize,
}

/// A bounded outbox of `capacity` frames: many senders, one writer.
pub fn outbox(capacity: usize) -> (OutboxSender, OutboxReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            senders: 1,
            receiving: true,
            waiting_for_room: false,
        }),
        ready: Notify::new(),
        drained: Notify::new(),
        capacity: capacity.max(1),
    });
    (
        OutboxSender {
            shared: shared.clone(),
        },
        OutboxReceiver { shared },
    )
}

/// The sending side; clones share the queue. The writer sees the end once every sender is gone.
pub struct OutboxSender {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for OutboxSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxSender")
            .field("capacity", &self.shared.capacity)
            .finish_non_exhaustive()
    }
}

impl OutboxSender {
    /// Queues `message` without waiting.
    pub fn try_send(&self, message: Outbound) -> Result<(), OfferError> {
        let mut state = self.shared.state.lock();
        if !state.receiving {
            return Err(OfferError::Closed);
        }
        if state.queue.len() >= self.shared.capacity {
            return Err(OfferError::Full);
        }
        let was_empty = state.queue.is_empty();
        state.queue.push_back(message);
        drop(state);
        // The writer drains everything once woken, so only the first frame needs to wake it.
        if was_empty {
            self.shared.ready.notify_one();
        }
        Ok(())
    }

    /// Waits until at most `limit` frames are queued, or the writer is gone: back-pressure for a
    /// sender that produces at its own pace (a stream), where fan-out would cut the client off.
    pub async fn room(&self, limit: usize) {
        loop {
            let drained = self.shared.drained.notified();
            {
                let mut state = self.shared.state.lock();
                if state.queue.len() <= limit || !state.receiving {
                    return;
                }
                state.waiting_for_room = true;
            }
            drained.await;
        }
    }
}

impl Clone for OutboxSender {
    fn clone(&self) -> Self {
        self.shared.state.lock().senders += 1;
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for OutboxSender {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock();
        state.senders -= 1;
        if state.senders == 0 {
            drop(state);
            self.shared.ready.notify_one();
        }
    }
}

/// The writer's side.
pub struct OutboxReceiver {
    shared: Arc<Shared>,
}

impl OutboxReceiver {
    /// Waits for frames and moves up to `limit` of them into `batch`, in order. Returns `false`
    /// once the queue is empty and every sender is gone. Cancel-safe: nothing is taken unless it
    /// returns.
    pub async fn recv_batch(&mut self, batch: &mut Vec<Outbound>, limit: usize) -> bool {
        loop {
            {
                // One lock for both checks: a frame queued just before its sender left is
                // still delivered.
                let mut state = self.shared.state.lock();
                if take(&mut state, &self.shared.drained, batch, limit) {
                    return true;
                }
                if state.senders == 0 {
                    return false;
                }
            }
            // A notification sent since the check is kept as a permit, so none is missed.
            self.shared.ready.notified().await;
        }
    }

    /// Moves up to `limit` queued frames into `batch` without waiting; `true` if it moved any.
    pub fn try_recv_batch(&mut self, batch: &mut Vec<Outbound>, limit: usize) -> bool {
        take(
            &mut self.shared.state.lock(),
            &self.shared.drained,
            batch,
            limit,
        )
    }
}

fn take(state: &mut State, drained: &Notify, batch: &mut Vec<Outbound>, limit: usize) -> bool {
    let take = state.queue.len().min(limit);
    batch.extend(state.queue.drain(..take));
    if state.queue.is_empty() && state.queue.capacity() > KEEP_CAPACITY {
        state.queue = VecDeque::new();
    }
    if take > 0 && std::mem::take(&mut state.waiting_for_room) {
        drained.notify_waiters();
    }
    take > 0
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock();
        state.receiving = false;
        state.queue = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Frame;

    fn frame(text: &'static str) -> Outbound {
        Outbound::Frame(Frame::static_text(text))
    }

    fn texts(batch: &[Outbound]) -> Vec<&[u8]> {
        batch
            .iter()
            .map(|m| match m {
                Outbound::Frame(f)
                | Outbound::Logged(f)
                | Outbound::KeepAlive(f)
                | Outbound::Close(f) => f.as_bytes(),
                Outbound::Moved { .. } | Outbound::Checkpoint(_) => b"moved",
            })
            .collect()
    }

    #[tokio::test]
    async fn delivers_in_order_in_batches_up_to_the_limit() {
        let (tx, mut rx) = outbox(8);
        for t in ["a", "b", "c"] {
            tx.try_send(frame(t)).unwrap();
        }
        let mut batch = Vec::new();
        assert!(rx.recv_batch(&mut batch, 2).await);
        assert_eq!(texts(&batch), [b"a", b"b"]);
        batch.clear();
        assert!(rx.recv_batch(&mut batch, 2).await);
        assert_eq!(texts(&batch), [b"c"]);
    }

    #[tokio::test]
    async fn full_and_closed_are_reported() {
        let (tx, rx) = outbox(2);
        tx.try_send(frame("a")).unwrap();
        tx.try_send(frame("b")).unwrap();
        assert_eq!(tx.try_send(frame("c")), Err(OfferError::Full));
        drop(rx);
        assert_eq!(tx.try_send(frame("d")), Err(OfferError::Closed));
    }

    #[tokio::test]
    async fn the_writer_sees_the_end_after_the_last_frame() {
        let (tx, mut rx) = outbox(4);
        let other = tx.clone();
        tx.try_send(frame("last")).unwrap();
        drop(tx);
        drop(other);
        let mut batch = Vec::new();
        assert!(rx.recv_batch(&mut batch, 8).await);
        assert!(!rx.recv_batch(&mut batch, 8).await);
    }

    #[tokio::test]
    async fn a_sender_waiting_for_room_is_woken_when_the_writer_takes_frames() {
        let (tx, mut rx) = outbox(4);
        for t in ["a", "b", "c"] {
            tx.try_send(frame(t)).unwrap();
        }
        let sender = tx.clone();
        let waiter = tokio::spawn(async move { sender.room(1).await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        let mut batch = Vec::new();
        assert!(rx.recv_batch(&mut batch, 8).await);
        waiter.await.unwrap();
        // Room is there at once when the queue is short enough.
        tx.room(1).await;
    }

    #[tokio::test]
    async fn a_waiting_writer_is_woken_by_a_send_from_another_task() {
        let (tx, mut rx) = outbox(4);
        let waiter = tokio::spawn(async move {
            let mut batch = Vec::new();
            rx.recv_batch(&mut batch, 8).await;
            batch.len()
        });
        tokio::task::yield_now().await;
        tx.try_send(frame("x")).unwrap();
        assert_eq!(waiter.await.unwrap(), 1);
    }
}
