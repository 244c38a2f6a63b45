//! The writing half of a connection: drains the outbox into the transport's sink and sends
//! keep-alive pings when the connection has been quiet.
//!
//! Frames queued together go out as one transport message (both hub protocols allow several
//! messages per transport message) and one flush, so a busy connection costs one write and one
//! client-side message event per batch, not per frame.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::SinkExt;
use futures_util::future::Either;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::handoff::HandoffReceiver;
use super::resume::{HEAR_WITHIN, Sent};
use super::{DirectWrite, Outlet};
use crate::durable;
use crate::metrics::Metrics;
use crate::protocol::{Frame, ServerMessage};
use crate::registry::{Outbound, OutboxReceiver, Place};

/// Most frames taken from the outbox at once.
const BATCH: usize = 64;
/// Largest message built by joining frames; a frame beyond it starts the next message.
const MAX_JOINED: usize = 16 * 1024;
/// Least time between two Acks (ASP.NET's AckRate).
const ACK_EVERY: Duration = Duration::from_secs(1);

/// When the writer writes without being asked to.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timing {
    /// A Ping goes out when nothing was written for this long.
    pub keep_alive: Duration,
    /// After a frame is queued, how long the writer waits for more to join it in one write.
    pub write_delay: Duration,
}

/// What a connection that may resume gives its writer: the frames it keeps for the client, and
/// the transports it resumes on.
pub(super) struct Resumable<O> {
    pub sent: Arc<Sent>,
    /// New transports, each with its generation (the session counts them).
    pub sinks: HandoffReceiver<(u64, O)>,
    /// The connection moved here from another server: the first transport is a resume (the
    /// server's Sequence, then what the old server kept).
    pub moved_in: bool,
}

/// The writer's transport and what it has sent.
struct Writer<O> {
    /// `None` while a resumable connection waits for its client to come back.
    sink: Option<O>,
    /// The protocol's Ping, once the handshake chose the protocol.
    ping: Option<Frame>,
    /// Whether the handshake's answer went out (what follows may be numbered).
    answered: bool,
    sent: Option<Arc<Sent>>,
    /// Where the transports of a resumable connection come from, and one that came while a
    /// write was under way.
    sinks: Option<HandoffReceiver<(u64, O)>>,
    next: Option<(u64, O)>,
    /// The generation of `sink` (0: the first transport).
    generation: u64,
    metrics: Arc<Metrics>,
}

/// The writer of one connection, to spawn. A plain function returning the loop: what is set up
/// here is moved into the future once, where an `async fn` would keep its arguments beside what
/// it makes of them for the connection's whole life.
pub(super) fn run<O>(
    sink: O,
    mut outbox: OutboxReceiver,
    Timing {
        keep_alive,
        write_delay,
    }: Timing,
    cancel: CancellationToken,
    resumable: Option<Resumable<O>>,
    metrics: Arc<Metrics>,
) -> impl std::future::Future<Output = ()>
where
    O: Outlet,
    O::Error: std::fmt::Display,
{
    let (sent, sinks, moved_in) = match resumable {
        Some(r) => (Some(r.sent), Some(r.sinks), r.moved_in),
        None => (None, None, false),
    };
    // The writer's own handle on the kept frames, for the waits below (which must not borrow
    // the writer while it writes).
    let kept = sent.clone();
    let (sink, next) = if moved_in {
        (None, Some((0, sink)))
    } else {
        (Some(sink), None)
    };
    let mut writer = Writer {
        sink,
        ping: None,
        answered: moved_in,
        sent,
        sinks,
        next,
        generation: 0,
        metrics,
    };
    async move {
        // A Ping goes out `keep_alive` after the last write, so the client never waits longer
        // than that. Writes only note their time; the timer is moved when it fires, which costs a
        // timer update per keep-alive period instead of one per write.
        let mut last_write = Instant::now();
        let idle = tokio::time::sleep(keep_alive);
        tokio::pin!(idle);
        // When the next Ack is due (stateful reconnect), and the newest id acknowledged.
        let mut ack_due: Option<Instant> = None;
        let mut last_ack = Instant::now()
            .checked_sub(ACK_EVERY)
            .unwrap_or_else(Instant::now);
        let mut acked = 0;
        // The transport's direct path, once lent to the outbox: only to a connection that cannot
        // resume (whose frames are not numbered and kept) and writes without delay.
        let mut lent: Option<Arc<dyn DirectWrite>> = None;
        // Made once: a fresh `cancelled()` per loop would register with the token every time.
        let cancelled = cancel.cancelled();
        tokio::pin!(cancelled);
        loop {
            if let Some(sink) = writer.next.take() {
                // Boxed, like everything only a connection that may resume does: every writer
                // would otherwise hold room for it all its life.
                Box::pin(writer.resume(sink)).await;
                last_write = Instant::now();
                // The client may have missed the last Ack: the next one repeats it.
                acked = 0;
                continue;
            }
            let numbering = kept.as_deref().filter(|_| writer.numbering().is_some());
            // Under stateful reconnect, frames are taken only while the client's unacknowledged
            // ones leave room: the outbox then fills, which holds back streams (and, at its
            // capacity, cuts off a client that never acknowledges).
            let room = numbering.is_none_or(|sent| sent.has_room());
            let attached = writer.sink.is_some();
            // Allocated per batch: a buffer kept between batches would be idle memory.
            let mut batch = Vec::new();
            // A resumable connection's handshake answer is taken alone: what follows it may be
            // numbered (see `Sent::heard`).
            let most = if writer.answered || kept.is_none() {
                BATCH
            } else {
                1
            };
            tokio::select! {
                open = outbox.recv_batch(&mut batch, most), if room => {
                    if !open {
                        // Every sender is gone: the connection ended without a Close message.
                        if let Some(sink) = &mut writer.sink {
                            let _ = sink.close().await;
                        }
                        break;
                    }
                    let answered = writer.answered;
                    if !write_delay.is_zero() && answered && batch.len() < most {
                        // Frames queued meanwhile go out in the same write. A Close waits too,
                        // and the session's end waits for the writer.
                        tokio::time::sleep(write_delay).await;
                        let more = most - batch.len();
                        outbox.try_recv_batch(&mut batch, more);
                    }
                    match writer.write_batch(batch).await {
                        Flow::Continue => {
                            outbox.written();
                            if lent.is_none() && kept.is_none() && write_delay.is_zero() && writer.answered
                                && let Some(direct) = writer.sink.as_ref().and_then(Outlet::direct)
                            {
                                outbox.lend(direct.clone());
                                lent = Some(direct);
                            }
                            last_write = Instant::now();
                            if !answered && writer.numbering().is_some() {
                                // Numbered messages wait for the client to be heard, or this.
                                let due = last_write + HEAR_WITHIN;
                                if due < idle.deadline() {
                                    idle.as_mut().reset(due);
                                }
                            }
                        }
                        Flow::Closed => {
                            cancel.cancel();
                            break;
                        }
                    }
                }
                () = unless_none(numbering.map(Sent::room)), if !room => {}
                sink = unless_none(writer.sinks.as_mut().map(HandoffReceiver::recv)) => match sink {
                    // Resumed at the top of the loop.
                    Some(sink) => writer.next = Some(sink),
                    // The session is over: no transport will come any more.
                    None => writer.sinks = None,
                },
                () = unless_none(numbering.map(Sent::received_more)), if attached && ack_due.is_none() => {
                    // One timer for keep-alives and Acks: it is part of every connection's memory.
                    let due = (last_ack + ACK_EVERY).max(Instant::now());
                    ack_due = Some(due);
                    if due < idle.deadline() {
                        idle.as_mut().reset(due);
                    }
                }
                () = &mut idle => {
                    let now = Instant::now();
                    if let Some(sent) = numbering
                        && !sent.is_heard()
                    {
                        // A client that says nothing after its handshake numbers messages by now.
                        sent.heard();
                    }
                    if let Some(due) = ack_due
                        && now >= due
                    {
                        ack_due = None;
                        // Read once: what the Ack says is what counts as acknowledged (the session
                        // may take more meanwhile; those get the next Ack).
                        let received = kept.as_ref().map_or(0, |sent| sent.received());
                        if received > acked {
                            if !Box::pin(record_received(kept.as_deref(), received)).await {
                                // Not acknowledged until recorded: tried again in a while.
                                ack_due = Some(now + ACK_EVERY);
                            } else if writer.ack(received).await {
                                acked = received;
                                last_ack = now;
                            }
                        }
                    }
                    if let Some(at) = lent.as_ref().and_then(|direct| direct.last_write()) {
                        last_write = last_write.max(at);
                    }
                    let ping_due = last_write + keep_alive;
                    if now >= ping_due {
                        if let Some(ping) = writer.ping.clone()
                            && writer.send(ping).await.is_err()
                        {
                            cancel.cancel();
                            break;
                        }
                        last_write = Instant::now();
                    }
                    let next = last_write + keep_alive;
                    idle.as_mut().reset(ack_due.map_or(next, |due| due.min(next)));
                }
                () = &mut cancelled => {
                    // Flush what the session queued last (its Close message) before closing.
                    let mut rest = Vec::new();
                    // A frame being written directly goes first (a moment: such writes never
                    // wait); the rest queued behind it is taken after.
                    while outbox.writing_direct() {
                        tokio::task::yield_now().await;
                    }
                    outbox.try_recv_batch(&mut rest, usize::MAX);
                    if matches!(writer.write_batch(rest).await, Flow::Continue)
                        && let Some(sink) = &mut writer.sink
                    {
                        let _ = sink.close().await;
                    }
                    break;
                }
            }
        }
    }
}

/// `wait`'s outcome, or never when there is nothing to wait for (a connection that cannot
/// resume has no kept frames and no new transports).
///
/// A plain future, not an `async fn`: that would hold `wait` twice beside the future it awaits
/// (about three times `F`), in every connection's writer for its whole life.
fn unless_none<F: std::future::Future>(
    wait: Option<F>,
) -> Either<F, std::future::Pending<F::Output>> {
    match wait {
        Some(wait) => Either::Left(wait),
        None => Either::Right(std::future::pending()),
    }
}

enum Flow {
    Continue,
    Closed,
}

/// One write on the transport: raced against a new transport ([`racing`]) on a connection that
/// may resume. That race is boxed: it is several times the size of the write, and every
/// connection's writer would otherwise hold room for it all its life. A plain future, not an
/// `async fn`, for the same reason as [`unless_none`].
fn carrying<'a, O, T, F>(
    sinks: &'a mut Option<HandoffReceiver<O>>,
    next: &'a mut Option<O>,
    sent: Option<&'a Sent>,
    op: F,
) -> impl std::future::Future<Output = Option<T>> + 'a
where
    T: 'a,
    F: std::future::Future<Output = T> + 'a,
{
    if sinks.is_none() && sent.is_none() {
        Either::Left(op.map(Some as fn(T) -> Option<T>))
    } else {
        Either::Right(Box::pin(racing(sinks, next, sent, op)))
    }
}

/// One write on the transport; a new transport that arrives meanwhile abandons it (`None`,
/// with the transport in `next`): the old one is dead or stuck behind a full send buffer, and
/// the client is waiting on the new one (ASP.NET cancels the old socket too). So does a move of
/// the connection to another server (`None`, nothing in `next`): the client is there.
async fn racing<O, T>(
    sinks: &mut Option<HandoffReceiver<O>>,
    next: &mut Option<O>,
    sent: Option<&Sent>,
    op: impl std::future::Future<Output = T>,
) -> Option<T> {
    if sent.is_some_and(Sent::is_moving) {
        return None;
    }
    let mut op = std::pin::pin!(op);
    let moving = unless_none(sent.map(Sent::moving));
    let mut moving = std::pin::pin!(moving);
    loop {
        let Some(receiver) = sinks.as_mut().filter(|_| next.is_none()) else {
            return tokio::select! {
                done = &mut op => Some(done),
                () = &mut moving => None,
            };
        };
        tokio::select! {
            done = &mut op => return Some(done),
            () = &mut moving => return None,
            sink = receiver.recv() => match sink {
                Some(sink) => {
                    *next = Some(sink);
                    return None;
                }
                // The session is over: no transport will come any more.
                None => *sinks = None,
            },
        }
    }
}

impl<O> Writer<O>
where
    O: Outlet,
    O::Error: std::fmt::Display,
{
    /// The frames kept for the client, once numbering is on (stateful reconnect, after the
    /// handshake's answer).
    fn numbering(&self) -> Option<&Sent> {
        self.sent
            .as_deref()
            .filter(|sent| self.answered && sent.protocol().is_some())
    }

    /// The transport failed. A connection that can resume waits for the next one (`true`);
    /// any other ends (`false`).
    fn lost(&mut self) -> bool {
        self.sink = None;
        match self.numbering() {
            Some(sent) => {
                sent.writer_lost(self.generation);
                true
            }
            None => false,
        }
    }

    /// Writes `batch` from the outbox. On a connection that may resume, numbered frames are
    /// kept before any is written: one the transport fails to carry, or that a new transport
    /// interrupts, goes out again on the resume. That path is boxed here, so a writer that
    /// cannot resume does not hold room for it.
    fn write_batch(
        &mut self,
        batch: Vec<Outbound>,
    ) -> impl std::future::Future<Output = Flow> + '_ {
        if self.sent.is_none() {
            Either::Left(self.write(batch))
        } else {
            Either::Right(Box::pin(self.keep_and_write(batch)))
        }
    }

    async fn keep_and_write(&mut self, batch: Vec<Outbound>) -> Flow {
        if let Some(sent) = self.sent.clone() {
            let durable = sent.durable().cloned();
            // Durable reconnect: frames the log cannot give again, kept before they are sent.
            let mut keep = Vec::new();
            for message in &batch {
                match message {
                    Outbound::Frame(frame) | Outbound::Logged(frame) => {
                        if self.numbering().is_some() {
                            let number = sent.push(frame);
                            if durable.is_some() && matches!(message, Outbound::Frame(_)) {
                                keep.push((number, frame.clone()));
                            }
                        }
                        // The first frame is the handshake's answer, which is never numbered.
                        self.answered = true;
                    }
                    Outbound::Checkpoint(place) => {
                        if let Some(link) = &durable
                            && self.numbering().is_some()
                        {
                            // The checkpoint holds every frame numbered so far.
                            keep.clear();
                            checkpoint(link, &sent, place, &self.metrics).await;
                        }
                    }
                    // Nothing after it is for this server to send.
                    Outbound::Moved { .. } => break,
                    Outbound::KeepAlive(_) | Outbound::Close(_) => {}
                }
            }
            if let Some(link) = &durable
                && let Err(e) = link.store.keep(link, &keep).await
            {
                durable_failed(&self.metrics, &e);
            }
        }
        self.write(batch).await
    }

    /// Writes `messages` in order, joining consecutive frames, and flushes once. A Close
    /// message ends them and the connection.
    async fn write(&mut self, messages: impl IntoIterator<Item = Outbound>) -> Flow {
        let mut joined = Joined::default();
        for message in messages {
            match message {
                Outbound::Frame(frame) | Outbound::Logged(frame) => {
                    self.answered = true;
                    if let Some(full) = joined.push(frame)
                        && let Err(flow) = self.feed(full).await
                    {
                        return flow;
                    }
                }
                Outbound::KeepAlive(frame) => self.ping = Some(frame),
                Outbound::Checkpoint(_) => {}
                Outbound::Close(frame) => {
                    if let Some(rest) = joined.take()
                        && let Err(flow) = self.feed(rest).await
                    {
                        return flow;
                    }
                    if let Some(sink) = &mut self.sink {
                        let _ = sink.send(frame).await;
                        let _ = sink.close().await;
                    }
                    return Flow::Closed;
                }
                Outbound::Moved { groups } => {
                    // Everything meant for the client here is kept: the session hands it to
                    // the connection's new server.
                    if let Some(sent) = &self.sent {
                        sent.moved(groups);
                    }
                    return Flow::Closed;
                }
            }
        }
        if let Some(rest) = joined.take()
            && let Err(flow) = self.feed(rest).await
        {
            return flow;
        }
        self.flush().await
    }

    /// Feeds one message to the transport, if there is one.
    async fn feed(&mut self, frame: Frame) -> Result<(), Flow> {
        let Some(sink) = &mut self.sink else {
            return Ok(());
        };
        let sent = self.sent.as_deref();
        match carrying(&mut self.sinks, &mut self.next, sent, sink.feed(frame)).await {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => match self.failed(&e) {
                Flow::Continue => Ok(()),
                Flow::Closed => Err(Flow::Closed),
            },
            // Replaced: the old transport is let go.
            None => {
                self.sink = None;
                Ok(())
            }
        }
    }

    async fn flush(&mut self) -> Flow {
        let Some(sink) = &mut self.sink else {
            return Flow::Continue;
        };
        let sent = self.sent.as_deref();
        match carrying(&mut self.sinks, &mut self.next, sent, sink.flush()).await {
            Some(Err(e)) => self.failed(&e),
            Some(Ok(())) => Flow::Continue,
            None => {
                self.sink = None;
                Flow::Continue
            }
        }
    }

    /// Sends one message and flushes: whether it went out, or `Err` when the transport failed
    /// and the connection cannot resume.
    async fn send(&mut self, frame: Frame) -> Result<bool, Flow> {
        if self.sink.is_none() {
            return Ok(false);
        }
        self.feed(frame).await?;
        match self.flush().await {
            Flow::Continue => Ok(self.sink.is_some()),
            Flow::Closed => Err(Flow::Closed),
        }
    }

    fn failed(&mut self, error: &O::Error) -> Flow {
        tracing::debug!("write failed: {error}");
        if self.lost() {
            Flow::Continue
        } else {
            Flow::Closed
        }
    }

    /// Carries on over a new transport: the server's Sequence, then every frame the client has
    /// not acknowledged, then what comes next.
    async fn resume(&mut self, (generation, sink): (u64, O)) {
        // Dropping the old sink closes what is left of the old transport.
        self.sink = Some(sink);
        self.generation = generation;
        let Some(sent) = self.numbering() else {
            return;
        };
        let Some(protocol) = sent.protocol() else {
            return;
        };
        let (first, frames) = sent.replay();
        Metrics::add(&self.metrics.replayed_messages, frames.len());
        let sequence = protocol.encode(&ServerMessage::Sequence { sequence_id: first });
        // Written as they are (not kept again): they were numbered when first sent.
        let replay = std::iter::once(sequence).chain(frames).map(Outbound::Frame);
        self.write(replay).await;
    }

    /// Tells the client which of its messages the server has; `false` if it could not.
    async fn ack(&mut self, sequence_id: u64) -> bool {
        let Some(protocol) = self.sent.as_ref().and_then(|sent| sent.protocol()) else {
            return false;
        };
        let frame = protocol.encode(&ServerMessage::Ack { sequence_id });
        matches!(self.send(frame).await, Ok(true))
    }
}

/// Durable reconnect: records that the client's messages up to `received` were handled, before
/// they are acknowledged (a client resends only what was not); `false` if it could not (the
/// Ack waits).
async fn record_received(sent: Option<&Sent>, received: u64) -> bool {
    let Some(link) = sent.and_then(Sent::durable) else {
        return true;
    };
    match link.store.received(link, received).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!("durable reconnect could not record what a client sent: {e}");
            false
        }
    }
}

/// Records a checkpoint of a durable connection (see [`Outbound::Checkpoint`]).
async fn checkpoint(link: &durable::Link, sent: &Sent, place: &Place, metrics: &Metrics) {
    let Some(protocol) = sent.protocol() else {
        return;
    };
    let (first, frames) = sent.replay();
    let point = durable::Checkpoint {
        protocol: protocol.name(),
        at: place.at,
        groups: &place.groups,
        since: place.since,
        first,
        frames: &frames,
    };
    match link.store.checkpoint(link, &point).await {
        Ok(()) => Metrics::inc(&metrics.durable_checkpoints),
        Err(e) => durable_failed(metrics, &e),
    }
}

fn durable_failed(metrics: &Metrics, error: &durable::DurableError) {
    Metrics::inc(&metrics.durable_write_failures);
    tracing::warn!("durable reconnect could not record a connection: {error}");
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
