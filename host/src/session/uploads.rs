//! A connection's uploads: invocations whose client sends a stream (`streamIds`), each a loop of
//! hub calls, one per item and one at the end, polled by the session's task.
//!
//! Each upload buffers up to [`BUFFER`] items, ASP.NET's `StreamBufferCapacity`. An item that
//! finds its buffer full waits here and the session stops reading until the hub has taken one,
//! as ASP.NET's read loop waits: the client is held back by TCP, not queued without bound.
//! Uploads do not count against the parallel invocation limit, as in ASP.NET.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::future::{BoxFuture, Either};
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc;

use super::invocations::Finished;
use super::{HubCalls, Uploaded};
use crate::dispatcher::Replied;
use crate::runtime::UploadStep;
use crate::types::Caller;

/// Items buffered per upload before the session stops reading (ASP.NET's default).
pub(super) const BUFFER: usize = 10;

/// Boxed, and only while uploads run: every connection's session future holds this.
#[derive(Default)]
pub(super) struct Uploads(Option<Box<Running>>);

#[derive(Default)]
struct Running {
    /// Each upload's end, with the stream id it reads.
    futures: FuturesUnordered<BoxFuture<'static, (String, Finished)>>,
    /// Where each stream's items go, by stream id.
    streams: HashMap<String, mpsc::Sender<Uploaded>>,
    /// Each running upload's invocation id (`None`: the client wants no answer), by stream id.
    invocations: HashMap<String, Option<String>>,
    /// An event whose upload's buffer was full; the session reads nothing until it is taken.
    waiting: Option<(mpsc::Sender<Uploaded>, Uploaded)>,
}

/// What an upload needs besides its own arguments.
pub(super) struct Start {
    pub(super) hubs: Arc<dyn HubCalls>,
    pub(super) caller: Arc<Caller>,
}

impl Uploads {
    pub(super) fn is_running(&self) -> bool {
        self.0.is_some()
    }

    /// How many run.
    pub(super) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |r| r.futures.len())
    }

    /// Whether an event waits for room (and the session must not read more).
    pub(super) fn is_blocked(&self) -> bool {
        self.0.as_ref().is_some_and(|r| r.waiting.is_some())
    }

    /// Starts `method(arguments)` reading the client's stream `stream_id`; `sent` is how many
    /// streams the client sent (only one per invocation is served: the hub is asked to accept
    /// that many, and refuses any other number).
    pub(super) fn start(
        &mut self,
        start: Start,
        invocation_id: Option<String>,
        method: String,
        arguments: Arc<str>,
        stream_id: String,
        sent: usize,
    ) {
        let (sender, receiver) = mpsc::channel(BUFFER);
        let running = self.0.get_or_insert_with(Box::default);
        running.streams.insert(stream_id.clone(), sender);
        running
            .invocations
            .insert(stream_id.clone(), invocation_id.clone());
        let upload = run(
            start,
            invocation_id,
            method.into(),
            arguments,
            sent,
            receiver,
        );
        running
            .futures
            .push(Box::pin(async move { (stream_id, upload.await) }));
    }

    /// Stops every upload; the invocation ids of those whose client waits for an answer.
    pub(super) fn stop_all(&mut self) -> Vec<String> {
        let running = self.0.take();
        let mut ids: Vec<String> = running
            .map(|r| r.invocations.into_values().flatten().collect())
            .unwrap_or_default();
        ids.sort();
        ids
    }

    /// Passes what the client sent on `stream_id` to its upload; `false` if no upload reads
    /// that stream (ASP.NET ignores such messages). An event that finds the buffer full waits:
    /// see [`Uploads::is_blocked`].
    pub(super) fn deliver(&mut self, stream_id: &str, event: Uploaded) -> bool {
        let Some(running) = self.0.as_mut() else {
            return false;
        };
        let Some(sender) = running.streams.get(stream_id) else {
            return false;
        };
        let ends = matches!(event, Uploaded::End(_));
        match sender.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(event)) => {
                running.waiting = Some((sender.clone(), event));
            }
            // The upload finished early (the hub was done): later items are dropped.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
        if ends {
            // Nothing more may come on this stream.
            running.streams.remove(stream_id);
        }
        true
    }

    /// Runs the uploads until one finishes (`Some`), or until the event waiting for room was
    /// handed over (`None`: the session may read again). Pending forever when none runs (guard
    /// with [`Uploads::is_running`]).
    ///
    /// Boxed while uploads run: the session's loop makes this future on every turn, and
    /// inline it would make every connection's session future larger.
    pub(super) fn next(
        &mut self,
    ) -> Either<std::future::Pending<Option<Finished>>, BoxFuture<'_, Option<Finished>>> {
        match self.0.is_some() {
            true => Either::Right(Box::pin(self.progress())),
            false => Either::Left(std::future::pending()),
        }
    }

    async fn progress(&mut self) -> Option<Finished> {
        let Some(running) = self.0.as_mut() else {
            return std::future::pending().await;
        };
        let Running {
            futures,
            streams,
            invocations,
            waiting,
        } = &mut **running;
        let sender = waiting.as_ref().map(|(sender, _)| sender.clone());
        let room = async {
            match &sender {
                Some(sender) => sender.reserve().await.ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ended = futures.next() => {
                let (stream_id, finished) = ended?;
                streams.remove(&stream_id);
                invocations.remove(&stream_id);
                if futures.is_empty() && waiting.is_none() {
                    // Give the memory back until the next upload.
                    self.0 = None;
                }
                Some(finished)
            }
            permit = room => {
                if let (Some(permit), Some((_, event))) = (permit, waiting.take()) {
                    permit.send(event);
                } else {
                    // Its upload finished meanwhile and has no use for it.
                    waiting.take();
                }
                None
            }
        }
    }
}

async fn run(
    start: Start,
    invocation_id: Option<String>,
    method: Arc<str>,
    arguments: Arc<str>,
    sent: usize,
    mut events: mpsc::Receiver<Uploaded>,
) -> Finished {
    let Start { hubs, caller } = start;
    if let Err(error) = hubs
        .clone()
        .check_upload(caller.clone(), method.clone(), sent)
        .await
    {
        return Finished::refused(invocation_id, error);
    }
    let mut state = None;
    let mut aborted = false;
    loop {
        // The session drops the sender only when it ends, and then nobody reads this.
        let event = events.recv().await.unwrap_or(Uploaded::End(None));
        let Replied { reply, abort } = hubs
            .clone()
            .upload(
                caller.clone(),
                method.clone(),
                arguments.clone(),
                event,
                state.take(),
            )
            .await;
        aborted |= abort;
        match reply {
            Ok(UploadStep::Pending(next)) => state = Some(next),
            Ok(UploadStep::Done(result)) => {
                return Finished {
                    invocation_id,
                    reply: Ok(result),
                    abort: aborted,
                };
            }
            Err(error) => {
                return Finished {
                    invocation_id,
                    reply: Err(error),
                    abort: aborted,
                };
            }
        }
    }
}
