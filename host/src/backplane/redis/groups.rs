//! Group changes for connections on another server.
//!
//! The request travels on the internal groups channel to every server; the one holding the
//! connection applies it, subscribes to the group if it must, and then acknowledges on the
//! requester's ack channel, so the requester's next send to the group reaches the new member.
//! The requester waits for the acknowledgement up to the ack timeout; a connection no server
//! holds fails the request then.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::Inner;
use super::broker::Broker;
use crate::backplane::BackplaneError;
use crate::backplane::wire::WireMessage;
use crate::types::GroupChange;

/// Requests waiting for their acknowledgement, by id.
#[derive(Default)]
pub(super) struct PendingAcks {
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, oneshot::Sender<()>>>,
}

impl PendingAcks {
    fn register(&self) -> (u64, oneshot::Receiver<()>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (sender, receiver) = oneshot::channel();
        self.waiting.lock().insert(id, sender);
        (id, receiver)
    }

    /// An acknowledgement arrived.
    pub(super) fn complete(&self, id: u64) {
        if let Some(waiter) = self.waiting.lock().remove(&id) {
            let _ = waiter.send(());
        }
    }

    fn forget(&self, id: u64) {
        self.waiting.lock().remove(&id);
    }

    /// Requests still waiting.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.waiting.lock().len()
    }
}

/// Asks the server holding the connection to apply `change`; resolves once it has.
pub(super) async fn request<B: Broker>(
    inner: Arc<Inner<B>>,
    change: GroupChange,
) -> Result<(), BackplaneError> {
    if !inner.stats.is_connected() {
        return Err(BackplaneError::Disconnected);
    }
    let (id, acked) = inner.acks.register();
    let command = WireMessage::GroupCommand {
        id,
        reply_to: inner.server.name.clone(),
        change,
    };
    inner.send(vec![(inner.channels.group_commands(), command)]);
    let result = tokio::time::timeout(inner.ack_timeout, acked).await;
    inner.acks.forget(id);
    match result {
        Ok(Ok(())) => Ok(()),
        _ => Err(BackplaneError::AckTimeout(inner.ack_timeout)),
    }
}

/// Applies a request from another server if the connection lives here, then acknowledges it.
pub(super) fn serve<B: Broker>(
    inner: &Arc<Inner<B>>,
    id: u64,
    reply_to: String,
    change: &GroupChange,
) {
    let Some(changes) = inner.registry.apply_group_change(change) else {
        return; // not ours
    };
    let (inner, change) = (inner.clone(), change.clone());
    tokio::spawn(async move {
        // Subscribe to the group before acknowledging: the requester's next send to the group
        // must reach the new member.
        // And count it in presence, so the requester reads what it asked for.
        let written = inner.registry.presence_written();
        tokio::join!(
            inner.subscriptions.update(&inner.channels, changes),
            written
        );
        inner.registry.checkpoint(change.hub(), change.connection());
        let ack = inner.channels.acks(&reply_to);
        inner.send(vec![(ack, WireMessage::Ack { id })]);
    });
}
