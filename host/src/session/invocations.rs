//! A connection's invocations in progress.
//!
//! Up to `limit` run at once (polled by the session's task, so they cost no task of their
//! own). When the limit is reached the next one waits here and the session stops reading, as
//! ASP.NET's read loop waits for a slot: the client is held back by TCP rather than queueing
//! without bound. Messages already read keep being handled only up to that invocation.

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;

use crate::dispatcher::ErrorText;

/// A finished invocation: who asked (no id: nobody wants the answer) and the answer.
pub(super) struct Finished {
    pub(super) invocation_id: Option<String>,
    pub(super) reply: Result<Option<String>, ErrorText>,
    /// The hub aborted the connection: it closes once the reply is sent.
    pub(super) abort: bool,
}

impl Finished {
    /// An invocation answered with an error before reaching the hub.
    pub(super) fn refused(invocation_id: Option<String>, error: ErrorText) -> Self {
        Self {
            invocation_id,
            reply: Err(error),
            abort: false,
        }
    }
}

pub(super) type Running = BoxFuture<'static, Finished>;

pub(super) struct Invocations {
    limit: usize,
    /// Created with the first invocation: an idle connection should not pay for it.
    running: Option<FuturesUnordered<Running>>,
    waiting: Option<Running>,
}

impl Invocations {
    pub(super) fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            running: None,
            waiting: None,
        }
    }

    fn running_count(&self) -> usize {
        self.running.as_ref().map_or(0, FuturesUnordered::len)
    }

    /// Starts an invocation, or holds it until a slot frees.
    pub(super) fn start(&mut self, invocation: Running) {
        if self.running_count() < self.limit {
            self.running
                .get_or_insert_with(FuturesUnordered::new)
                .push(invocation);
        } else {
            self.waiting = Some(invocation);
        }
    }

    /// Whether an invocation waits for a slot (and the session must not read more).
    pub(super) fn is_blocked(&self) -> bool {
        self.waiting.is_some()
    }

    pub(super) fn is_running(&self) -> bool {
        self.running_count() > 0
    }

    /// The next invocation to finish; then the waiting one, if any, takes its slot. Pending
    /// forever when none runs (guard with [`Invocations::is_running`]).
    pub(super) async fn next(&mut self) -> Finished {
        let Some(running) = self.running.as_mut() else {
            return std::future::pending().await;
        };
        let Some(finished) = running.next().await else {
            return std::future::pending().await;
        };
        if let Some(waiting) = self.waiting.take() {
            running.push(waiting);
        }
        finished
    }

    /// Forgets the invocation waiting for a slot (the session is ending; its caller gets no
    /// answer, as with ASP.NET when the connection closes).
    pub(super) fn drop_waiting(&mut self) {
        self.waiting = None;
    }
}
