//! Stateful reconnect (ASP.NET Core 8): what a connection keeps so that it survives the loss of
//! its WebSocket and resumes on a new one without losing or repeating a message.
//!
//! Both sides number the messages of types 1 to 5 they send, from 1, and keep those the peer
//! has not acknowledged (Ack, at most once a second). When the client comes back on a new
//! WebSocket with the same connection token, each side sends Sequence (the id of the oldest
//! message it still holds) and sends everything it holds again; the receiver skips what it
//! already had.
//!
//! [`Sent`] is the server's half: the frames sent and not acknowledged, shared by the session
//! (which reads the client's Acks) and the writer (which numbers frames, replays them and sends
//! Acks). [`Received`] is the session's count of what the client sent, which tells a
//! duplicate from a new message after a resume.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::Context;

use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::durable;
use crate::metrics::Metrics;
use crate::protocol::{Frame, HubProtocol};

/// How long numbered messages wait for a client's first message after the handshake.
pub const HEAR_WITHIN: std::time::Duration = std::time::Duration::from_millis(500);

/// ASP.NET's text when a client's Sequence names messages the server never received.
pub const SEQUENCE_AHEAD: &str = "Sequence ID greater than amount of messages we've received.";

/// The server's numbered messages that the client has not acknowledged yet.
pub struct Sent {
    /// Set at the handshake when the client chose stateful reconnect (version 2): from the next
    /// frame on, what the writer sends is numbered and kept.
    protocol: OnceLock<&'static dyn HubProtocol>,
    inner: Mutex<Unacked>,
    /// Bytes of unacknowledged frames past which the writer waits for an Ack.
    limit: usize,
    /// Wakes the writer when an Ack made room.
    room: Notify,
    /// The newest sequence id received from the client, for the writer's Acks.
    received: AtomicU64,
    /// Wakes the writer when `received` moved (it then acks within a second).
    receiving: Notify,
    /// Whether the client numbers what it receives yet (see [`Sent::heard`]).
    heard: AtomicBool,
    /// The connection is moving to another server: the writer takes everything meant for it
    /// here, room or not, and writes nothing more.
    moving: AtomicBool,
    /// The writer could not write to the transport it had (its generation + 1; 0: none), and
    /// the session's waker, so the session lets the transport go and waits for a new one.
    lost: AtomicU64,
    lost_waker: AtomicWaker,
    /// Durable reconnect: where the writer records what survives a crash of this server.
    durable: OnceLock<Arc<durable::Link>>,
    metrics: Arc<Metrics>,
}

struct Unacked {
    frames: VecDeque<Frame>,
    /// Sequence id of `frames[0]` (of the next frame when there is none).
    first: u64,
    bytes: usize,
    /// Set when the writer reached the marker of a move: the connection's groups then.
    moved: Option<Vec<String>>,
}

impl Sent {
    pub fn new(limit: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            protocol: OnceLock::new(),
            inner: Mutex::new(Unacked {
                frames: VecDeque::new(),
                first: 1,
                bytes: 0,
                moved: None,
            }),
            limit: limit.max(1),
            room: Notify::new(),
            received: AtomicU64::new(0),
            receiving: Notify::new(),
            heard: AtomicBool::new(false),
            moving: AtomicBool::new(false),
            lost: AtomicU64::new(0),
            lost_waker: AtomicWaker::new(),
            durable: OnceLock::new(),
            metrics,
        }
    }

    /// Makes the connection durable: its writer records it through `link`.
    pub fn make_durable(&self, link: durable::Link) {
        let _ = self.durable.set(Arc::new(link));
    }

    /// Where the connection is recorded, if it is durable.
    pub fn durable(&self) -> Option<&Arc<durable::Link>> {
        self.durable.get()
    }

    /// Turns numbering on (the handshake asked for version 2). Called before the handshake's
    /// answer is queued, so the writer sees it once it has written that answer.
    pub fn activate(&self, protocol: &'static dyn HubProtocol) {
        let _ = self.protocol.set(protocol);
    }

    /// Takes over what another server kept for the client (the connection moved here):
    /// numbering is on, and `frames`, numbered from `first`, are what a resume replays.
    pub fn restore(&self, protocol: &'static dyn HubProtocol, first: u64, frames: Vec<Frame>) {
        self.activate(protocol);
        self.heard.store(true, Ordering::Release);
        let bytes: usize = frames.iter().map(Frame::len).sum();
        let mut inner = self.inner.lock();
        inner.first = first;
        inner.bytes += bytes;
        inner.frames.extend(frames);
        Metrics::add(&self.metrics.reconnect_buffer_bytes, bytes);
    }

    /// The connection is moving to another server (see `moving`).
    pub fn start_moving(&self) {
        self.moving.store(true, Ordering::Release);
        self.room.notify_waiters();
    }

    pub fn is_moving(&self) -> bool {
        self.moving.load(Ordering::Acquire)
    }

    /// Waits until the connection is moving to another server.
    pub async fn moving(&self) {
        self.wait_for(|| self.is_moving().then_some(())).await;
    }

    /// The writer reached the marker of the move: everything meant for the client here is
    /// kept. `groups` are the connection's groups then.
    pub fn moved(&self, groups: Vec<String>) {
        self.inner.lock().moved = Some(groups);
        self.room.notify_waiters();
    }

    /// Waits until the writer reached the marker of the move: the connection's groups then.
    pub async fn reached_marker(&self) -> Vec<String> {
        self.wait_for(|| self.inner.lock().moved.take()).await
    }

    /// Waits until `ready` gives something, checking it whenever the writer's state changes
    /// (room made, a move started, the marker reached: each wakes `room`'s waiters).
    async fn wait_for<T>(&self, mut ready: impl FnMut() -> Option<T>) -> T {
        loop {
            let notified = self.room.notified();
            if let Some(value) = ready() {
                return value;
            }
            notified.await;
        }
    }

    /// The protocol of the connection, once numbering is on.
    pub fn protocol(&self) -> Option<&'static dyn HubProtocol> {
        self.protocol.get().copied()
    }

    /// Keeps `frame` (one numbered message) until the client acknowledges it; its number.
    pub fn push(&self, frame: &Frame) -> u64 {
        let mut inner = self.inner.lock();
        inner.bytes += frame.len();
        inner.frames.push_back(frame.clone());
        Metrics::add(&self.metrics.reconnect_buffer_bytes, frame.len());
        inner.first + inner.frames.len() as u64 - 1
    }

    /// Whether the writer may send more: the client numbers what it receives, and has
    /// acknowledged enough.
    pub fn has_room(&self) -> bool {
        self.is_moving()
            || (self.heard.load(Ordering::Acquire) && self.inner.lock().bytes < self.limit)
    }

    /// The client is numbering what it receives. The official JavaScript client starts its
    /// count only after handling the handshake's answer, and in Node it handles every message
    /// that came in one read before that: messages right behind the answer would go
    /// uncounted, and a resume would then replay one of them twice. It sends a Ping once it
    /// counts, so numbered messages wait for the client's first message (or, for a client that
    /// sends none, a moment: [`HEAR_WITHIN`]).
    pub fn heard(&self) {
        if !self.heard.swap(true, Ordering::AcqRel) {
            self.room.notify_waiters();
        }
    }

    pub fn is_heard(&self) -> bool {
        self.heard.load(Ordering::Acquire)
    }

    /// The writer failed to write to transport `generation`: a socket can fail to write while
    /// its reading half still seems fine, and the client would hear nothing and not resume.
    pub fn writer_lost(&self, generation: u64) {
        self.lost.store(generation + 1, Ordering::Release);
        self.lost_waker.wake();
    }

    /// The generation of a transport the writer lost since the last call, if any.
    pub fn poll_lost(&self, cx: &mut Context<'_>) -> Option<u64> {
        self.lost_waker.register(cx.waker());
        self.lost.swap(0, Ordering::AcqRel).checked_sub(1)
    }

    /// Waits until [`has_room`](Self::has_room).
    pub async fn room(&self) {
        self.wait_for(|| self.has_room().then_some(())).await;
    }

    /// The client has every message up to `sequence_id`: they are forgotten. An id beyond what
    /// was sent acknowledges everything (ASP.NET does not check it either).
    pub fn ack(&self, sequence_id: u64) {
        let mut inner = self.inner.lock();
        let mut freed = 0;
        while inner.first <= sequence_id {
            let Some(frame) = inner.frames.pop_front() else {
                break;
            };
            inner.first += 1;
            freed += frame.len();
        }
        inner.bytes -= freed;
        drop(inner);
        if freed > 0 {
            Metrics::sub(&self.metrics.reconnect_buffer_bytes, freed);
            self.room.notify_waiters();
        }
    }

    /// What a resume sends: the Sequence id (the oldest unacknowledged message, or the next
    /// one) and every unacknowledged frame, in order.
    pub fn replay(&self) -> (u64, Vec<Frame>) {
        let inner = self.inner.lock();
        (inner.first, inner.frames.iter().cloned().collect())
    }

    /// Notes the newest sequence id received from the client.
    pub fn set_received(&self, sequence_id: u64) {
        self.received.store(sequence_id, Ordering::Relaxed);
        self.receiving.notify_one();
    }

    /// Waits until a message was received since the last call.
    pub async fn received_more(&self) {
        self.receiving.notified().await;
    }

    /// The newest sequence id received from the client.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Drop for Sent {
    fn drop(&mut self) {
        Metrics::sub(
            &self.metrics.reconnect_buffer_bytes,
            self.inner.get_mut().bytes,
        );
    }
}

/// What the session makes of a numbered message the client sent, under stateful reconnect.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// New: handle it.
    Handle,
    /// Already handled: the client sent it again on a resume.
    Skip,
}

/// The session's count of the client's numbered messages.
#[derive(Debug)]
pub struct Received {
    /// The newest id handled.
    latest: u64,
    /// The id the next numbered message has.
    next: u64,
}

impl Default for Received {
    fn default() -> Self {
        Self { latest: 0, next: 1 }
    }
}

impl Received {
    /// The count of a connection that moved here, whose old server handled up to `latest`.
    pub fn after(latest: u64) -> Self {
        Self {
            latest,
            next: latest + 1,
        }
    }

    /// The client's Sequence (on a resume): its next message has `sequence_id`. An id past
    /// what was received would leave a gap, which is an error. (As ASP.NET 8, messages that
    /// come before the Sequence are numbered on from where the count was; the official
    /// clients send their Sequence first.)
    pub fn sequence(&mut self, sequence_id: u64) -> Result<(), &'static str> {
        if sequence_id > self.latest + 1 {
            return Err(SEQUENCE_AHEAD);
        }
        self.next = sequence_id;
        Ok(())
    }

    /// Numbers a message of types 1 to 5 and says whether it is new.
    pub fn numbered(&mut self) -> Verdict {
        let id = self.next;
        self.next += 1;
        if id <= self.latest {
            return Verdict::Skip;
        }
        self.latest = id;
        Verdict::Handle
    }

    /// The newest id handled.
    pub fn latest(&self) -> u64 {
        self.latest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &str) -> Frame {
        Frame::text(text.to_owned())
    }

    #[test]
    fn acks_forget_frames_and_make_room() {
        let metrics = Arc::new(Metrics::default());
        let sent = Sent::new(10, metrics.clone());
        assert!(!sent.has_room(), "not before the client is heard");
        sent.heard();
        for text in ["aaaa", "bbbb", "cccc"] {
            sent.push(&frame(text));
        }
        assert!(!sent.has_room(), "12 bytes kept, limit 10");
        assert_eq!(metrics.reconnect_buffer_bytes.load(Ordering::Relaxed), 12);
        let (first, frames) = sent.replay();
        assert_eq!((first, frames.len()), (1, 3));

        sent.ack(2);
        assert!(sent.has_room());
        let (first, frames) = sent.replay();
        assert_eq!(first, 3);
        assert_eq!(frames, vec![frame("cccc")]);

        // An ack of everything and more leaves the next id to send.
        sent.ack(99);
        assert_eq!(sent.replay(), (4, Vec::new()));
        sent.push(&frame("d"));
        assert_eq!(sent.replay().0, 4);
        drop(sent);
        assert_eq!(metrics.reconnect_buffer_bytes.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_writer_waiting_for_room_wakes_on_an_ack() {
        let sent = Arc::new(Sent::new(4, Arc::new(Metrics::default())));
        sent.heard();
        sent.push(&frame("full"));
        let waiting = tokio::spawn({
            let sent = sent.clone();
            async move { sent.room().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        sent.ack(1);
        waiting.await.expect("woken");
    }

    #[test]
    fn duplicates_after_a_resume_are_skipped() {
        let mut received = Received::default();
        for _ in 0..3 {
            assert_eq!(received.numbered(), Verdict::Handle);
        }
        assert_eq!(received.latest(), 3);
        // The client had an ack for 1 only: it sends 2 and 3 again, then 4.
        received.sequence(2).expect("within what was received");
        assert_eq!(received.numbered(), Verdict::Skip);
        assert_eq!(received.numbered(), Verdict::Skip);
        assert_eq!(received.numbered(), Verdict::Handle);
        assert_eq!(received.latest(), 4);
    }

    #[test]
    fn a_sequence_past_what_was_received_is_an_error() {
        let mut received = Received::default();
        assert_eq!(received.numbered(), Verdict::Handle);
        assert_eq!(received.sequence(3), Err(SEQUENCE_AHEAD));
        received.sequence(2).expect("the next one is fine");
        assert_eq!(received.numbered(), Verdict::Handle);
    }
}
