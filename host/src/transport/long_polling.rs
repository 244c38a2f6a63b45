//! Long polling: frames go down as answers to polls, messages come up as POSTs
//! ([`inbox`](super::inbox)), a DELETE ends the connection.
//!
//! As ASP.NET does: the first poll is answered at once (empty), starting the session; later
//! polls take everything queued, or wait for it up to the poll timeout (then 200, empty); a
//! poll gets 204 once the connection has ended, or when a newer poll replaced it. The polls
//! themselves show the client is alive, so the session sends no pings; a client that has not
//! polled for the disconnect timeout is gone.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{FutureExt, Sink, Stream};
use parking_lot::Mutex;
use tokio::time::{Instant, Sleep};

use super::inbox::{InboxSender, Incoming};
use super::pipe::{Abandoned, Pipe};
use crate::protocol::Frame;
use crate::session::{self, Connection, Inbound, SessionContext};

/// Starts the session of a connection's first poll and answers it (200, empty, at once).
/// `lease` is kept until the session ends.
pub fn start(
    connection: Connection,
    context: Arc<SessionContext>,
    (inbox, incoming): (InboxSender, Incoming),
    polls: Arc<Polls>,
    disconnect_timeout: Duration,
    lease: impl Send + 'static,
) -> Response {
    let incoming = PolledIncoming::new(incoming, polls.clone(), inbox, disconnect_timeout);
    let session =
        session::serve(incoming, polls.sink(), connection, context).map(move |()| drop(lease));
    tokio::spawn(session);
    answer(StatusCode::OK, "application/octet-stream", Bytes::new())
}

/// The answer to a poll, with the headers that keep proxies from caching it.
pub fn answer_poll(outcome: PollOutcome) -> Response {
    match outcome {
        PollOutcome::Data(frames) => answer(StatusCode::OK, "application/octet-stream", frames),
        PollOutcome::TimedOut => answer(StatusCode::OK, "text/plain", Bytes::new()),
        PollOutcome::Ended | PollOutcome::Replaced => {
            answer(StatusCode::NO_CONTENT, "text/plain", Bytes::new())
        }
    }
}

fn answer(status: StatusCode, content_type: &'static str, body: Bytes) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache, no-store"),
            ),
            (header::PRAGMA, HeaderValue::from_static("no-cache")),
            (
                header::EXPIRES,
                HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"),
            ),
        ],
        body,
    )
        .into_response()
}

/// How a poll ended.
#[derive(Debug, PartialEq, Eq)]
pub enum PollOutcome {
    /// Queued frames: 200 with them.
    Data(Bytes),
    /// Nothing within the poll timeout: 200, empty.
    TimedOut,
    /// The connection has ended (and everything was taken): 204.
    Ended,
    /// A newer poll took over: 204.
    Replaced,
}

#[derive(Debug)]
struct PollState {
    /// Numbers the polls; only the newest may take frames.
    newest: u64,
    /// Whether a poll is waiting.
    active: bool,
    /// When the last poll ended (or the connection began).
    last_seen: Instant,
}

/// One long-polling connection's frames and polls.
pub struct Polls {
    pipe: Arc<Pipe>,
    state: Mutex<PollState>,
}

impl Polls {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            pipe: Pipe::new(),
            state: Mutex::new(PollState {
                newest: 0,
                active: false,
                last_seen: Instant::now(),
            }),
        })
    }

    /// The sink the session writes its frames to.
    pub fn sink(self: &Arc<Self>) -> PollSink {
        PollSink {
            pipe: self.pipe.clone(),
        }
    }

    /// One poll: waits up to `timeout` for frames.
    pub async fn poll(&self, timeout: Duration) -> PollOutcome {
        let number = {
            let mut state = self.state.lock();
            state.newest += 1;
            state.active = true;
            state.newest
        };
        // The poll this one replaces, if any, is waiting on the pipe: wake it.
        self.pipe.wake_polls();
        let _end = PollEnd {
            polls: self,
            number,
        };
        let deadline = Instant::now() + timeout;
        loop {
            let changed = self.pipe.readable();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.state.lock().newest != number {
                return PollOutcome::Replaced;
            }
            if let Some(frames) = self.pipe.take_all() {
                return PollOutcome::Data(frames);
            }
            if self.pipe.is_finished() {
                return PollOutcome::Ended;
            }
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep_until(deadline) => return PollOutcome::TimedOut,
            }
        }
    }

    /// Whether the client is gone: not polling, and not since `timeout` ago.
    fn gone(&self, timeout: Duration) -> Result<(), Instant> {
        let state = self.state.lock();
        if state.active {
            return Err(Instant::now() + timeout);
        }
        let due = state.last_seen + timeout;
        if Instant::now() >= due {
            Ok(())
        } else {
            Err(due)
        }
    }
}

/// Marks the end of a poll, however it ends (an aborted request drops it).
struct PollEnd<'a> {
    polls: &'a Polls,
    number: u64,
}

impl Drop for PollEnd<'_> {
    fn drop(&mut self) {
        let mut state = self.polls.state.lock();
        if state.newest == self.number {
            state.active = false;
        }
        state.last_seen = Instant::now();
    }
}

/// The session's sink: frames into the pipe polls take from.
pub struct PollSink {
    pipe: Arc<Pipe>,
}

impl Sink<Frame> for PollSink {
    type Error = Abandoned;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Abandoned>> {
        self.pipe.poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, frame: Frame) -> Result<(), Abandoned> {
        self.pipe.write(frame.bytes())
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Abandoned>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Abandoned>> {
        self.pipe.close();
        Poll::Ready(Ok(()))
    }
}

/// Frames wait for the writer: no direct path.
impl crate::session::Outlet for PollSink {}

/// The session's incoming stream for a long-polling connection: the POSTs, ended early when
/// the client stops polling for the disconnect timeout.
pub struct PolledIncoming {
    incoming: Incoming,
    polls: Arc<Polls>,
    inbox: InboxSender,
    disconnect_timeout: Duration,
    check: Pin<Box<Sleep>>,
}

impl PolledIncoming {
    pub fn new(
        incoming: Incoming,
        polls: Arc<Polls>,
        inbox: InboxSender,
        disconnect_timeout: Duration,
    ) -> Self {
        Self {
            incoming,
            polls,
            inbox,
            disconnect_timeout,
            check: Box::pin(tokio::time::sleep(disconnect_timeout)),
        }
    }
}

impl Stream for PolledIncoming {
    type Item = Inbound;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Inbound>> {
        if let Poll::Ready(message) = Pin::new(&mut self.incoming).poll_next(cx) {
            return Poll::Ready(message);
        }
        while self.check.as_mut().poll(cx).is_ready() {
            match self.polls.gone(self.disconnect_timeout) {
                Ok(()) => {
                    tracing::debug!("long-polling client stopped polling: connection ended");
                    self.inbox.close();
                    return Pin::new(&mut self.incoming).poll_next(cx);
                }
                Err(next_check) => self.check.as_mut().reset(next_check),
            }
        }
        Poll::Pending
    }
}

use std::future::Future as _;

#[cfg(test)]
mod tests {
    use futures_util::{SinkExt, StreamExt};

    use super::*;
    use crate::transport::inbox::inbox;

    const TIMEOUT: Duration = Duration::from_secs(90);

    #[tokio::test(start_paused = true)]
    async fn a_poll_takes_what_is_queued_or_waits_for_it() {
        let polls = Polls::new();
        let mut sink = polls.sink();
        sink.send(Frame::static_text("a\u{1e}"))
            .await
            .expect("open");
        sink.send(Frame::static_text("b\u{1e}"))
            .await
            .expect("open");
        assert_eq!(
            polls.poll(TIMEOUT).await,
            PollOutcome::Data(Bytes::from_static(b"a\x1eb\x1e"))
        );
        let waiting = tokio::spawn({
            let polls = polls.clone();
            async move { polls.poll(TIMEOUT).await }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        sink.send(Frame::static_text("c\u{1e}"))
            .await
            .expect("open");
        assert_eq!(
            waiting.await.expect("joined"),
            PollOutcome::Data(Bytes::from_static(b"c\x1e"))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_poll_times_out_empty_and_ends_with_the_connection() {
        let polls = Polls::new();
        let started = Instant::now();
        assert_eq!(polls.poll(TIMEOUT).await, PollOutcome::TimedOut);
        assert_eq!(started.elapsed(), TIMEOUT);
        let mut sink = polls.sink();
        sink.send(Frame::static_text("last\u{1e}"))
            .await
            .expect("open");
        sink.close().await.expect("closed");
        assert!(matches!(polls.poll(TIMEOUT).await, PollOutcome::Data(_)));
        assert_eq!(polls.poll(TIMEOUT).await, PollOutcome::Ended);
    }

    #[tokio::test(start_paused = true)]
    async fn a_newer_poll_replaces_the_waiting_one() {
        let polls = Polls::new();
        let first = tokio::spawn({
            let polls = polls.clone();
            async move { polls.poll(TIMEOUT).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        let second = tokio::spawn({
            let polls = polls.clone();
            async move { polls.poll(TIMEOUT).await }
        });
        assert_eq!(first.await.expect("joined"), PollOutcome::Replaced);
        polls
            .sink()
            .send(Frame::static_text("x\u{1e}"))
            .await
            .expect("open");
        assert!(matches!(
            second.await.expect("joined"),
            PollOutcome::Data(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_polling_is_gone_after_the_disconnect_timeout() {
        let polls = Polls::new();
        let (sender, incoming) = inbox();
        let mut incoming =
            PolledIncoming::new(incoming, polls.clone(), sender, Duration::from_secs(15));
        // Polling keeps it alive, however long a poll waits.
        let poll = tokio::spawn({
            let polls = polls.clone();
            async move { polls.poll(TIMEOUT).await }
        });
        let idle = tokio::time::timeout(Duration::from_secs(60), incoming.next()).await;
        assert!(idle.is_err(), "still connected while a poll waits");
        assert_eq!(poll.await.expect("joined"), PollOutcome::TimedOut);
        let last_poll = Instant::now();
        assert!(incoming.next().await.is_none(), "then gone");
        assert_eq!(last_poll.elapsed(), Duration::from_secs(15));
    }
}
