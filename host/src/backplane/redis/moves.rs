//! Connections moving between servers (stateful reconnect across servers; the steps are in
//! [`crate::types::Claim`]'s module).
//!
//! The claimant publishes its claim on the internal channel every server reads, and waits for
//! an offer on its return channel; the holder's answer and, later, its handover come there
//! too. The marker goes on the connection's own channel, which both servers are subscribed to
//! by then, so each sees it in its place among the connection's sends.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::Inner;
use super::broker::Broker;
use crate::backplane::wire::WireMessage;
use crate::backplane::{Claimed, Movers};
use crate::types::{Claim, Handover, HubName, MoveOrder, Offer};

/// How long a claim waits for the holder's first answer: a server that holds the token answers
/// within a round trip through Redis; none answering means no server holds it.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);
/// How long a claim the holder answered waits for its offer: the holder finishes the
/// connection's calls in flight first, each within its deadline.
const OFFER_WITHIN: Duration = Duration::from_secs(30);
/// When an unanswered claim is forgotten (well past any wait for its handover).
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// Claims of this server waiting for answers, and where other servers' claims go.
#[derive(Default)]
pub(super) struct Moves {
    waiting: Mutex<HashMap<u64, Waiting>>,
    movers: OnceLock<Arc<dyn Movers>>,
}

#[derive(Default)]
struct Waiting {
    /// Told when the holder answers that it holds the connection (its offer follows).
    held: Option<oneshot::Sender<()>>,
    offer: Option<oneshot::Sender<Offer>>,
    handover: Option<oneshot::Sender<Handover>>,
}

impl Moves {
    pub(super) fn serve(&self, movers: Arc<dyn Movers>) {
        if self.movers.set(movers).is_err() {
            tracing::warn!("claims already have a destination");
        }
    }

    /// The holder of one of this server's claims answered that it holds the connection.
    pub(super) fn held(&self, claim: u64) {
        if let Some(sender) = self.take(claim, |w| w.held.take()) {
            let _ = sender.send(());
        }
    }

    /// An offer arrived for one of this server's claims.
    pub(super) fn offered(&self, offer: Offer) {
        match self.take(offer.claim, |w| w.offer.take()) {
            Some(sender) => {
                let _ = sender.send(offer);
            }
            None => tracing::debug!(claim = offer.claim, "an offer for no claim waiting"),
        }
    }

    /// The sender `pick` takes from the claim's waiting senders, if the claim still waits.
    fn take<T>(
        &self,
        claim: u64,
        pick: impl FnOnce(&mut Waiting) -> Option<oneshot::Sender<T>>,
    ) -> Option<oneshot::Sender<T>> {
        self.waiting.lock().get_mut(&claim).and_then(pick)
    }

    /// A handover arrived for one of this server's claims.
    pub(super) fn handed_over(&self, handover: Handover) {
        let waiting = self.waiting.lock().remove(&handover.claim);
        match waiting.and_then(|w| w.handover) {
            Some(sender) => {
                let _ = sender.send(handover);
            }
            None => tracing::debug!(claim = handover.claim, "a handover for no claim waiting"),
        }
    }
}

/// Claims the connection of `token`: resolves with the holder's offer, or `None` when no
/// server answers in time.
pub(super) async fn claim<B: Broker>(
    inner: Arc<Inner<B>>,
    hub: HubName,
    token: String,
    user: Option<String>,
) -> Option<Claimed> {
    if !inner.stats.is_connected() {
        return None;
    }
    let id = rand::random::<u64>();
    let (held_sender, held) = oneshot::channel();
    let (offer_sender, offer) = oneshot::channel();
    let (handover_sender, handover) = oneshot::channel();
    inner.moves.waiting.lock().insert(
        id,
        Waiting {
            held: Some(held_sender),
            offer: Some(offer_sender),
            handover: Some(handover_sender),
        },
    );
    // Forgets the claim however this ends, the request that made it going away included;
    // a claim that got its offer is kept a while for its handover.
    let mut waiting = Forget {
        inner: inner.clone(),
        id,
        after: None,
    };
    let claim = Claim {
        hub,
        token,
        id,
        claimant: inner.server.name.clone(),
        user,
    };
    inner.send(vec![(
        inner.channels.group_commands(),
        WireMessage::Claim(claim),
    )]);
    if !matches!(tokio::time::timeout(ANSWER_WITHIN, held).await, Ok(Ok(()))) {
        return None;
    }
    match tokio::time::timeout(OFFER_WITHIN, offer).await {
        Ok(Ok(offer)) => {
            // A handover that never comes (its server died) must not be waited for forever.
            waiting.after = Some(FORGET_AFTER);
            Some(Claimed { offer, handover })
        }
        _ => None,
    }
}

/// Forgets a claim when dropped: at once, or `after` a while.
struct Forget<B: Broker> {
    inner: Arc<Inner<B>>,
    id: u64,
    after: Option<Duration>,
}

impl<B: Broker> Drop for Forget<B> {
    fn drop(&mut self) {
        let (inner, id) = (self.inner.clone(), self.id);
        match self.after {
            None => {
                inner.moves.waiting.lock().remove(&id);
            }
            Some(after) => {
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        tokio::time::sleep(after).await;
                        inner.moves.waiting.lock().remove(&id);
                    });
                }
            }
        }
    }
}

/// Another server's claim: the connection is asked to move if it lives here.
pub(super) fn claimed<B: Broker>(inner: &Inner<B>, claim: Claim) {
    if claim.claimant == inner.server.name {
        return;
    }
    let Some(movers) = inner.moves.movers.get() else {
        return;
    };
    let order = MoveOrder {
        claim: claim.id,
        claimant: claim.claimant,
        user: claim.user,
    };
    if movers.order(&claim.hub, &claim.token, order) {
        tracing::debug!(hub = %claim.hub, claim = claim.id, "a claim reached its connection");
    }
}
