//! A connection's streams to the client (`connection.stream(...)`): each is a loop of hub calls,
//! one per step, polled by the session's task like its invocations.
//!
//! Hubs are transient, so a stream lives here as a cursor, not in a hub instance: between steps
//! it holds no instance, no call deadline and no task of its own, only its cursor and a timer.
//! Items wait for room in the outbox (back-pressure, as ASP.NET awaits each write) instead of
//! cutting the client off as fan-out would. Streams do not count against the parallel
//! invocation limit, as in ASP.NET, where a stream runs in the background once started.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::future::{BoxFuture, Either};
use futures_util::stream::FuturesUnordered;
use tokio_util::sync::CancellationToken;

use super::HubCalls;
use crate::dispatcher::{ErrorText, Replied};
use crate::protocol::{HubProtocol, ServerMessage};
use crate::registry::{OfferError, Outbound, OutboxSender};
use crate::types::Caller;

/// How a stream ended, for its Completion.
pub(super) struct Ended {
    pub(super) invocation_id: String,
    /// `Err`: the stream failed with this text; `Ok`: it completed or was cancelled.
    pub(super) reply: Result<(), ErrorText>,
    /// The hub aborted the connection during a step.
    pub(super) abort: bool,
}

/// What a stream needs besides its own arguments.
pub(super) struct Start {
    pub(super) hubs: Arc<dyn HubCalls>,
    pub(super) caller: Arc<Caller>,
    pub(super) protocol: &'static dyn HubProtocol,
    pub(super) outbox: OutboxSender,
    /// Stream items queued for the client beyond which a stream waits before its next step.
    pub(super) room: usize,
    /// Cancelled to cut the connection off when its outbox is full.
    pub(super) cut_off: CancellationToken,
}

/// Boxed, and only while streams run: every connection's session future holds this, and an
/// idle connection should not pay for streams.
#[derive(Default)]
pub(super) struct Streams(Option<Box<Running>>);

#[derive(Default)]
struct Running {
    futures: FuturesUnordered<BoxFuture<'static, Ended>>,
    cancels: HashMap<String, CancellationToken>,
}

impl Streams {
    /// Whether a stream with this invocation id is running.
    pub(super) fn contains(&self, invocation_id: &str) -> bool {
        self.0
            .as_ref()
            .is_some_and(|r| r.cancels.contains_key(invocation_id))
    }

    pub(super) fn is_running(&self) -> bool {
        self.0.is_some()
    }

    /// How many run.
    pub(super) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |r| r.cancels.len())
    }

    /// Starts streaming `method(arguments)` to the client under `invocation_id`.
    pub(super) fn start(
        &mut self,
        start: Start,
        invocation_id: String,
        method: String,
        arguments: Arc<str>,
    ) {
        let cancel = CancellationToken::new();
        let running = self.0.get_or_insert_with(Box::default);
        running
            .cancels
            .insert(invocation_id.clone(), cancel.clone());
        running.futures.push(Box::pin(run(
            start,
            invocation_id,
            method.into(),
            arguments,
            cancel,
        )));
    }

    /// Stops every stream; their invocation ids.
    pub(super) fn stop_all(&mut self) -> Vec<String> {
        let running = self.0.take();
        let mut ids: Vec<String> = running
            .map(|r| r.cancels.into_keys().collect())
            .unwrap_or_default();
        ids.sort();
        ids
    }

    /// Stops a stream the client gave up on (CancelInvocation); it ends with an empty
    /// Completion, as ASP.NET's. Unknown ids are ignored: the stream may have just ended.
    pub(super) fn cancel(&mut self, invocation_id: &str) -> bool {
        match self.0.as_ref().and_then(|r| r.cancels.get(invocation_id)) {
            Some(cancel) => {
                cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// The next stream to end. Pending forever when none runs (guard with
    /// [`Streams::is_running`]).
    ///
    /// Boxed while streams run: the session's loop makes this future on every turn, and inline
    /// it would make every connection's session future larger.
    pub(super) fn next(&mut self) -> Either<std::future::Pending<Ended>, BoxFuture<'_, Ended>> {
        match self.0.is_some() {
            true => Either::Right(Box::pin(self.progress())),
            false => Either::Left(std::future::pending()),
        }
    }

    async fn progress(&mut self) -> Ended {
        let Some(running) = self.0.as_mut() else {
            return std::future::pending().await;
        };
        let Some(ended) = running.futures.next().await else {
            return std::future::pending().await;
        };
        running.cancels.remove(&ended.invocation_id);
        if running.cancels.is_empty() {
            // Give the memory back until the next stream.
            self.0 = None;
        }
        ended
    }
}

async fn run(
    start: Start,
    invocation_id: String,
    method: Arc<str>,
    arguments: Arc<str>,
    cancel: CancellationToken,
) -> Ended {
    let Start {
        hubs,
        caller,
        protocol,
        outbox,
        room,
        cut_off,
    } = start;
    let ended = |reply, abort| Ended {
        invocation_id: invocation_id.clone(),
        reply,
        abort,
    };
    let mut cursor = None;
    loop {
        let Replied { reply, abort } = hubs
            .clone()
            .stream(
                caller.clone(),
                method.clone(),
                arguments.clone(),
                cursor.take(),
            )
            .await;
        if cancel.is_cancelled() {
            // The client stopped listening: what this step produced is not sent.
            return ended(Ok(()), abort);
        }
        let step = match reply {
            Ok(step) => step,
            Err(error) => return ended(Err(error), abort),
        };
        for item in &step.items {
            let frame = protocol.encode(&ServerMessage::StreamItem {
                invocation_id: &invocation_id,
                item,
            });
            match outbox.try_send(Outbound::Frame(frame)) {
                Ok(()) => {}
                Err(OfferError::Closed) => return ended(Ok(()), abort),
                Err(OfferError::Full) => {
                    // Fan-out filled the outbox while this step ran: the client is not reading.
                    tracing::warn!(connection = %caller.connection_id, "outbox full, closing slow connection");
                    cut_off.cancel();
                    return ended(Ok(()), abort);
                }
            }
        }
        if let Some(error) = step.error {
            return ended(Err(error), abort);
        }
        let Some(next) = step.next else {
            return ended(Ok(()), abort);
        };
        if abort {
            return ended(Ok(()), true);
        }
        cursor = Some(next.cursor);
        let wait = async {
            tokio::time::sleep(next.delay).await;
            outbox.room(room).await;
        };
        tokio::select! {
            () = wait => {}
            () = cancel.cancelled() => return ended(Ok(()), false),
        }
    }
}
