//! Publishing: a bounded queue drained by one task, which pipelines what has accumulated into
//! one round trip and numbers the packets in publish order.
//!
//! A failed pipeline is retried once (the first publish after Redis came back finds the old
//! connection broken). Part of a failed pipeline may have been published already; the packets'
//! sequence numbers let receivers drop the copies, so a retry never delivers twice.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::Inner;
use super::broker::{Broker, LogStart, Publication};
use crate::backplane::BackplaneStats;
use crate::backplane::wire::{self, Header};

/// Messages waiting for the publisher before new ones are dropped.
const QUEUE: usize = 65_536;
/// Messages pipelined in one round trip.
const BATCH: usize = 512;

/// One message for one channel: a [`WireMessage`](wire::WireMessage) body, which the
/// publisher wraps in its packet header.
pub(super) struct Outgoing {
    pub(super) channel: String,
    pub(super) body: Bytes,
    /// The hub's log it is appended to (durable reconnect).
    pub(super) log: Option<String>,
}

/// The publisher's queue.
pub(super) struct PublishQueue {
    sender: mpsc::Sender<Vec<Outgoing>>,
}

impl PublishQueue {
    pub(super) fn new() -> (Self, mpsc::Receiver<Vec<Outgoing>>) {
        let (sender, receiver) = mpsc::channel(QUEUE);
        (Self { sender }, receiver)
    }

    /// Queues the messages of one send (or command); gives them back when the queue is full.
    pub(super) fn push(&self, messages: Vec<Outgoing>) -> Result<(), Vec<Outgoing>> {
        self.sender.try_send(messages).map_err(|e| match e {
            mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m) => m,
        })
    }
}

/// Drains the queue until shutdown.
pub(super) async fn run<B: Broker>(inner: Arc<Inner<B>>, mut queue: mpsc::Receiver<Vec<Outgoing>>) {
    let mut seq = 0u64;
    let mut payloads: Vec<Publication> = Vec::with_capacity(BATCH);
    loop {
        let first = tokio::select! {
            first = queue.recv() => first,
            () = inner.shutdown.cancelled() => None,
        };
        let Some(first) = first else { return };
        let mut next = Some(first);
        while let Some(messages) = next.take() {
            for Outgoing { channel, body, log } in messages {
                seq += 1;
                let header = Header {
                    origin: inner.server.origin,
                    seq,
                };
                match wire::packet(header, &body) {
                    Ok(payload) => payloads.push(Publication {
                        channel,
                        payload,
                        log,
                    }),
                    Err(e) => tracing::error!("cannot encode a packet: {e}"),
                }
            }
            if payloads.len() < BATCH {
                next = queue.try_recv().ok();
            }
        }
        // One send may hold more than a batch (to many connections or users): publishing it in
        // batches keeps a retry's copies within the receivers' duplicate window.
        for batch in payloads.chunks(BATCH) {
            publish(&inner, batch).await;
        }
        payloads.clear();
    }
}

async fn publish<B: Broker>(inner: &Inner<B>, payloads: &[Publication]) {
    if payloads.is_empty() {
        return;
    }
    let count = payloads.len() as u64;
    let log_start = inner.log.map_or(0, log_start);
    let mut result = inner.broker.publish(payloads, log_start).await;
    if result.is_err() {
        // Safe to repeat: receivers drop the packets they already have (and whoever reads
        // a log skips its copies).
        result = inner.broker.publish(payloads, log_start).await;
    }
    match result {
        Ok(unheard) => {
            BackplaneStats::add(&inner.stats.published, count - unheard);
            inner.health.published();
            // Counted, but not an outage: the broker logged it.
            BackplaneStats::add(&inner.stats.dropped, unheard);
        }
        Err(e) => inner.health.dropped(&inner.stats, count, &e.to_string()),
    }
}

/// The oldest stream id a log keeps, for logs kept `retention`: by this server's clock, which
/// only shifts how long entries stay.
fn log_start(retention: std::time::Duration) -> LogStart {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    now.saturating_sub(retention).as_millis() as u64
}
