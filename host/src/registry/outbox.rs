//! A connection's outbox: the bounded queue between fan-out and the connection's writer task.
//!
//! Not a `tokio::sync::mpsc` channel, because of idle memory: mpsc allocates its first block of
//! 32 slots (about 1.3 KiB here) plus the channel (0.5 KiB) per connection, while this queue
//! costs one small allocation until messages flow, and gives its buffer back after a burst.
//! It also hands the writer everything queued in one lock, which is how writes get batched.
//!
//! A frame may also skip the queue and the writer altogether: when the writer lends the outbox
//! a [`DirectWrite`] and is idle with nothing queued, [`OutboxSender::try_send_direct`] writes
//! the frame to the transport at once, from the delivering task. That saves waking the
//! writer's task (and, on a multi-threaded runtime, often another thread) for each frame of a
//! small fan-out; frames that queue up still go out joined, by the writer.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::Outbound;
use crate::protocol::Frame;

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

/// A transport that can take a frame without waiting, lent to the outbox by its writer.
pub trait DirectWrite: Send + Sync {
    /// Writes `frame` now if the transport can take it without waiting.
    fn try_write(&self, frame: &Frame) -> Direct;

    /// When a frame was last written this way: the writer's keep-alive counts it.
    fn last_write(&self) -> Option<tokio::time::Instant>;
}

/// What [`DirectWrite::try_write`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direct {
    /// The frame is written.
    Written,
    /// The transport took the frame but not all of it reached the socket: the writer must
    /// flush it (and will see any error).
    Unflushed,
    /// The transport is busy; nothing was taken.
    NotNow,
}

struct State {
    queue: VecDeque<Outbound>,
    senders: usize,
    receiving: bool,
    /// A sender waits in [`OutboxSender::room`]: the writer wakes it when it takes frames.
    waiting_for_room: bool,
    /// Lent by the writer while frames may skip the queue.
    direct: Option<Arc<dyn DirectWrite>>,
    /// The writer holds frames it took and has not finished writing.
    writing: bool,
    /// A sender writes a frame directly: the writer takes nothing meanwhile, so what is
    /// queued behind that frame cannot overtake it.
    writing_direct: bool,
    /// A direct write left bytes in the transport for the writer to flush.
    unflushed: bool,
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
            direct: None,
            writing: false,
            writing_direct: false,
            unflushed: false,
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

    /// Writes `frame` straight to the transport when the writer lent one and is idle with
    /// nothing queued; queues it otherwise. Meant for small fan-outs: a frame written here is
    /// one write of its own, where queued frames get joined. `Ok(true)`: written directly.
    pub fn try_send_direct(&self, frame: Frame) -> Result<bool, OfferError> {
        let mut state = self.shared.state.lock();
        if !state.receiving {
            return Err(OfferError::Closed);
        }
        let direct = match &state.direct {
            Some(direct)
                if state.queue.is_empty()
                    && !state.writing
                    && !state.writing_direct
                    && !state.unflushed =>
            {
                direct.clone()
            }
            _ => {
                drop(state);
                return self.try_send(Outbound::Frame(frame)).map(|()| false);
            }
        };
        state.writing_direct = true;
        drop(state);
        let done = direct.try_write(&frame);
        let mut state = self.shared.state.lock();
        state.writing_direct = false;
        match done {
            Direct::Written => {}
            Direct::Unflushed => state.unflushed = true,
            // Ahead of anything queued meanwhile, which came after it.
            Direct::NotNow => state.queue.push_front(Outbound::Frame(frame)),
        }
        // The writer took nothing while this was under way, even if woken.
        let wake = state.unflushed || !state.queue.is_empty();
        drop(state);
        if wake {
            self.shared.ready.notify_one();
        }
        Ok(done != Direct::NotNow)
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
    /// once the queue is empty and every sender is gone; `true` with nothing in `batch` when a
    /// direct write left the transport to flush. After taking frames, the writer says when it
    /// has [`written`](Self::written) them. Cancel-safe: nothing is taken unless it
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

    /// Lends the outbox the writer's transport: from now on, while the writer is idle and
    /// nothing is queued, [`OutboxSender::try_send_direct`] writes to it.
    pub fn lend(&mut self, direct: Arc<dyn DirectWrite>) {
        self.shared.state.lock().direct = Some(direct);
    }

    /// A sender is writing a frame directly: nothing can be taken until it is done.
    pub fn writing_direct(&self) -> bool {
        self.shared.state.lock().writing_direct
    }

    /// The writer finished writing what it took (and flushed it): frames may skip the queue
    /// again.
    pub fn written(&mut self) {
        self.shared.state.lock().writing = false;
    }
}

/// Moves queued frames into `batch`; `true` with an empty batch when a direct write left the
/// transport to flush.
fn take(state: &mut State, drained: &Notify, batch: &mut Vec<Outbound>, limit: usize) -> bool {
    if state.writing_direct {
        // Its frame goes first; the sender wakes the writer when it is done.
        return false;
    }
    let flush = std::mem::take(&mut state.unflushed);
    let take = state.queue.len().min(limit);
    batch.extend(state.queue.drain(..take));
    if state.queue.is_empty() && state.queue.capacity() > KEEP_CAPACITY {
        state.queue = VecDeque::new();
    }
    if take > 0 && std::mem::take(&mut state.waiting_for_room) {
        drained.notify_waiters();
    }
    let taken = take > 0 || flush;
    state.writing |= taken;
    taken
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock();
        state.receiving = false;
        state.queue = VecDeque::new();
        // The transport closes once the writer lets go of it.
        let direct = state.direct.take();
        drop(state);
        drop(direct);
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

    /// A transport that records what it is given, answering `answer`; `during` runs inside the
    /// write (another sender, the writer).
    struct Recorder {
        written: Mutex<Vec<Vec<u8>>>,
        answer: Direct,
        during: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    }

    impl Recorder {
        fn new(answer: Direct) -> Arc<Self> {
            Arc::new(Self {
                written: Mutex::new(Vec::new()),
                answer,
                during: Mutex::new(None),
            })
        }
    }

    impl DirectWrite for Recorder {
        fn try_write(&self, frame: &Frame) -> Direct {
            if let Some(during) = self.during.lock().take() {
                during();
            }
            if self.answer != Direct::NotNow {
                self.written.lock().push(frame.as_bytes().to_vec());
            }
            self.answer
        }

        fn last_write(&self) -> Option<tokio::time::Instant> {
            None
        }
    }

    #[tokio::test]
    async fn an_idle_writer_lends_its_transport_and_frames_skip_the_queue() {
        let (tx, mut rx) = outbox(4);
        let transport = Recorder::new(Direct::Written);
        rx.lend(transport.clone());
        assert_eq!(tx.try_send_direct(Frame::static_text("a")), Ok(true));
        assert_eq!(*transport.written.lock(), [b"a".to_vec()]);
        // Nothing was queued, and the writer has nothing to do for it: the next thing it
        // takes is the next frame queued (not an empty batch to flush).
        let mut batch = Vec::new();
        assert!(!rx.try_recv_batch(&mut batch, 8));
        tx.try_send(frame("sentinel")).unwrap();
        assert!(rx.recv_batch(&mut batch, 8).await);
        assert_eq!(texts(&batch), [b"sentinel"]);
    }

    #[tokio::test]
    async fn frames_queue_while_the_writer_writes_or_others_wait() {
        let (tx, mut rx) = outbox(8);
        let transport = Recorder::new(Direct::Written);
        // Not lent yet: queued.
        assert_eq!(tx.try_send_direct(Frame::static_text("a")), Ok(false));
        rx.lend(transport.clone());
        // Something is queued: behind it.
        tx.try_send_direct(Frame::static_text("b")).unwrap();
        let mut batch = Vec::new();
        assert!(rx.recv_batch(&mut batch, 8).await);
        assert_eq!(texts(&batch), [b"a", b"b"]);
        // The writer holds frames it has not written: behind them.
        tx.try_send_direct(Frame::static_text("c")).unwrap();
        rx.written();
        // Something is still queued: behind it.
        tx.try_send_direct(Frame::static_text("d")).unwrap();
        batch.clear();
        assert!(rx.try_recv_batch(&mut batch, 8));
        assert_eq!(texts(&batch), [b"c", b"d"]);
        rx.written();
        // Idle, nothing queued: direct.
        tx.try_send_direct(Frame::static_text("e")).unwrap();
        assert_eq!(*transport.written.lock(), [b"e".to_vec()]);
    }

    #[tokio::test]
    async fn a_busy_transport_leaves_the_frame_ahead_of_those_queued_meanwhile() {
        let (tx, mut rx) = outbox(8);
        let transport = Recorder::new(Direct::NotNow);
        rx.lend(transport.clone());
        let other = tx.clone();
        *transport.during.lock() = Some(Box::new(move || {
            other.try_send(frame("b")).unwrap();
        }));
        tx.try_send_direct(Frame::static_text("a")).unwrap();
        let mut batch = Vec::new();
        assert!(rx.recv_batch(&mut batch, 8).await);
        assert_eq!(texts(&batch), [b"a", b"b"]);
    }

    #[tokio::test]
    async fn the_writer_takes_nothing_while_a_frame_is_written_directly() {
        let (tx, rx) = outbox(8);
        let transport = Recorder::new(Direct::Written);
        let rx = Arc::new(Mutex::new(rx));
        rx.lock().lend(transport.clone());
        let (other, writer) = (tx.clone(), rx.clone());
        *transport.during.lock() = Some(Box::new(move || {
            other.try_send(frame("b")).unwrap();
            let mut writer = writer.lock();
            assert!(writer.writing_direct());
            assert!(!writer.try_recv_batch(&mut Vec::new(), 8));
        }));
        tx.try_send_direct(Frame::static_text("a")).unwrap();
        assert_eq!(*transport.written.lock(), [b"a".to_vec()]);
        assert!(!rx.lock().writing_direct());
        let mut batch = Vec::new();
        assert!(rx.lock().try_recv_batch(&mut batch, 8));
        assert_eq!(texts(&batch), [b"b"]);
    }

    #[tokio::test]
    async fn an_unflushed_direct_write_wakes_the_writer_to_flush() {
        let (tx, mut rx) = outbox(4);
        rx.lend(Recorder::new(Direct::Unflushed));
        tx.try_send_direct(Frame::static_text("a")).unwrap();
        let mut batch = Vec::new();
        assert!(rx.recv_batch(&mut batch, 8).await);
        assert!(batch.is_empty());
        // Until it has flushed, frames queue.
        tx.try_send_direct(Frame::static_text("b")).unwrap();
        assert!(rx.try_recv_batch(&mut batch, 8));
        assert_eq!(texts(&batch), [b"b"]);
    }

    #[tokio::test]
    async fn a_writer_gone_takes_its_transport_with_it() {
        let (tx, mut rx) = outbox(4);
        let transport = Recorder::new(Direct::Written);
        rx.lend(transport.clone());
        drop(rx);
        assert_eq!(
            tx.try_send_direct(Frame::static_text("a")),
            Err(OfferError::Closed)
        );
        assert_eq!(Arc::strong_count(&transport), 1);
    }
}
