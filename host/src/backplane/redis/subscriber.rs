//! The subscriber link and the interest bookkeeping behind it.
//!
//! [`Subscriptions`] keeps the set of channels this server needs (its hubs', connections',
//! groups' and users' channels, plus its internal ones) and applies changes to the live link,
//! confirming them before a join completes. [`run`] keeps a link up: connects, subscribes to
//! every channel needed, hands what arrives to the backplane, checks the link with a PING, and
//! starts over with a short backoff when it breaks, restoring every subscription.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::Inner;
use super::broker::{Broker, BrokerError, Link, Payloads};
use crate::backplane::channels::Channels;
use crate::types::InterestChange;

/// How often the link is checked with a PING.
const HEALTH_INTERVAL: Duration = Duration::from_millis(500);
/// Reconnect backoff bounds: short, so subscriptions are back well within 2 s of Redis.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_millis(500);
/// Channels per SUBSCRIBE command when restoring.
const SUBSCRIBE_CHUNK: usize = 1000;

struct State<L> {
    /// Every channel this server needs, restored after a reconnect.
    desired: HashSet<String>,
    /// The live link, if any.
    link: Option<L>,
}

/// The channels this server needs, and the link they are subscribed on.
pub(super) struct Subscriptions<L> {
    state: tokio::sync::Mutex<State<L>>,
}

impl<L: Link> Subscriptions<L> {
    /// Starts with `always`, the channels needed whatever the connections (internal ones).
    pub(super) fn new(always: impl IntoIterator<Item = String>) -> Self {
        Self {
            state: tokio::sync::Mutex::new(State {
                desired: always.into_iter().collect(),
                link: None,
            }),
        }
    }

    /// Applies a change of interests: updates the channels needed and, when the link is up,
    /// subscribes and unsubscribes on it, resolving once confirmed. Without a link (or when it
    /// fails) the change is kept for the next link.
    pub(super) async fn update(&self, channels: &Channels, changes: Vec<InterestChange>) {
        if changes.is_empty() {
            return;
        }
        let mut state = self.state.lock().await;
        let mut subscribe = Vec::new();
        let mut unsubscribe = Vec::new();
        for change in changes {
            match change {
                InterestChange::Subscribe(interest) => {
                    let channel = channels.for_interest(&interest);
                    if state.desired.insert(channel.clone()) {
                        unsubscribe.retain(|c| c != &channel);
                        subscribe.push(channel);
                    }
                }
                InterestChange::Unsubscribe(interest) => {
                    let channel = channels.for_interest(&interest);
                    if state.desired.remove(&channel) {
                        subscribe.retain(|c| c != &channel);
                        unsubscribe.push(channel);
                    }
                }
            }
        }
        let Some(link) = state.link.as_mut() else {
            return;
        };
        let mut result = Ok(());
        if !subscribe.is_empty() {
            result = link.subscribe(&subscribe).await;
        }
        if result.is_ok() && !unsubscribe.is_empty() {
            result = link.unsubscribe(&unsubscribe).await;
        }
        if let Err(e) = result {
            // The link is failing; dropping it makes the link loop start over and restore
            // every desired channel.
            tracing::debug!("subscription change not confirmed ({e}); it is restored on reconnect");
            state.link = None;
        }
    }

    /// Subscribes a new link to every channel needed, then makes it the live link.
    async fn attach(&self, mut link: L) -> Result<(), BrokerError> {
        let mut state = self.state.lock().await;
        let channels: Vec<String> = state.desired.iter().cloned().collect();
        for chunk in channels.chunks(SUBSCRIBE_CHUNK) {
            link.subscribe(chunk).await?;
        }
        state.link = Some(link);
        Ok(())
    }

    async fn detach(&self) {
        self.state.lock().await.link = None;
    }

    /// Whether the live link answers a PING.
    async fn ping(&self) -> bool {
        let mut state = self.state.lock().await;
        match state.link.as_mut() {
            Some(link) => link.ping().await.is_ok(),
            None => false,
        }
    }

    /// The channels needed, sorted (for tests).
    #[cfg(test)]
    pub(super) async fn desired(&self) -> Vec<String> {
        let mut channels: Vec<String> = self.state.lock().await.desired.iter().cloned().collect();
        channels.sort();
        channels
    }
}

/// Keeps the link up until shutdown.
pub(super) async fn run<B: Broker>(inner: Arc<Inner<B>>) {
    let mut backoff = BACKOFF_MIN;
    let mut first = true;
    loop {
        if inner.shutdown.is_cancelled() {
            return;
        }
        match connect(&inner).await {
            Ok(payloads) => {
                backoff = BACKOFF_MIN;
                inner.health.link_up(&inner.stats, first);
                first = false;
                listen(&inner, payloads).await;
                inner.subscriptions.detach().await;
                if inner.shutdown.is_cancelled() {
                    return;
                }
                inner.health.link_lost(&inner.stats);
            }
            Err(BrokerError::Auth(e)) => {
                tracing::error!(redis = %inner.broker.describe(), "Redis rejected the credentials: {e}");
            }
            Err(e) => tracing::debug!(redis = %inner.broker.describe(), "cannot reach Redis: {e}"),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = inner.shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Opens a link with every subscription, once the publishing connection also answers (asking
/// it also makes it reconnect after an outage, before this server declares itself ready).
async fn connect<B: Broker>(inner: &Arc<Inner<B>>) -> Result<Payloads, BrokerError> {
    let (link, mut payloads) = inner.broker.connect().await?;
    receiving(inner, &mut payloads, inner.subscriptions.attach(link))
        .await
        .unwrap_or_else(|| Err(BrokerError::Unavailable("the link closed".into())))?;
    // The link is live now: a join meanwhile waits for replies only the stream brings.
    let check = async {
        let mut result = inner.broker.check().await;
        for _ in 0..2 {
            if result.is_ok() {
                break;
            }
            tokio::time::sleep(BACKOFF_MIN).await;
            result = inner.broker.check().await;
        }
        result
    };
    let result = receiving(inner, &mut payloads, check)
        .await
        .unwrap_or_else(|| Err(BrokerError::Unavailable("the link closed".into())));
    if let Err(e) = result {
        inner.subscriptions.detach().await;
        tracing::debug!(redis = %inner.broker.describe(), "pub/sub is up but commands are not yet ({e})");
        return Err(e);
    }
    Ok(payloads)
}

/// Hands what arrives to the backplane until the link breaks (its stream ends or a PING fails).
async fn listen<B: Broker>(inner: &Arc<Inner<B>>, mut payloads: Payloads) {
    let mut health = tokio::time::interval(HEALTH_INTERVAL);
    health.tick().await;
    loop {
        tokio::select! {
            payload = payloads.next() => match payload {
                Some(payload) => {
                    inner.receive(&payload);
                    // What one read brought can be hundreds of messages, each written to
                    // sockets here: let the connections' tasks in between, as a channel would.
                    tokio::task::consume_budget().await;
                }
                None => return,
            },
            _ = health.tick() => {
                if receiving(inner, &mut payloads, inner.subscriptions.ping()).await != Some(true) {
                    return;
                }
            }
            () = inner.shutdown.cancelled() => return,
        }
    }
}

/// Runs `work` on the link while handing on what arrives: a link may read the replies to its
/// commands from the same stream as its messages, so `work` can only finish while the stream is
/// read. `None` if the link ended first.
async fn receiving<B: Broker, T>(
    inner: &Arc<Inner<B>>,
    payloads: &mut Payloads,
    work: impl Future<Output = T>,
) -> Option<T> {
    let mut work = std::pin::pin!(work);
    loop {
        tokio::select! {
            biased;
            done = &mut work => return Some(done),
            payload = payloads.next() => match payload {
                Some(payload) => inner.receive(&payload),
                None => return None,
            },
        }
    }
}
