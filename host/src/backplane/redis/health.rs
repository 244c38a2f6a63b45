//! Whether the link to Redis is up, and what an outage cost.
//!
//! An outage begins when the subscriber link is lost or a publish fails, and ends when the link
//! is back (or, for a publish failure on a live link, when a publish succeeds again). Each
//! outage is logged twice: once when it begins, once when it ends with the number of messages
//! that could not reach other servers meanwhile. Clients of this server are served throughout;
//! what is counted is only what other servers missed.

use std::sync::atomic::Ordering;
use std::time::Instant;

use parking_lot::Mutex;

use crate::backplane::BackplaneStats;

/// What began the outage in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// The subscriber link was lost: only its restoration ends the outage.
    LinkLost,
    /// A publish failed while the link looked up.
    PublishFailed,
}

#[derive(Debug)]
struct Outage {
    cause: Cause,
    since: Instant,
    dropped: u64,
}

/// The link's state and the outage in progress, if any.
pub(super) struct Health {
    broker: String,
    outage: Mutex<Option<Outage>>,
}

impl Health {
    pub(super) fn new(broker: &str) -> Self {
        Self {
            broker: broker.to_owned(),
            outage: Mutex::new(None),
        }
    }

    /// The subscriber link is up (again): ends any outage.
    pub(super) fn link_up(&self, stats: &BackplaneStats, first: bool) {
        stats.connected.store(true, Ordering::Relaxed);
        let ended = self.outage.lock().take();
        if !first {
            BackplaneStats::add(&stats.reconnects, 1);
        }
        match ended {
            Some(outage) => tracing::warn!(
                redis = %self.broker,
                down_ms = outage.since.elapsed().as_millis() as u64,
                dropped = outage.dropped,
                "Redis link restored, subscriptions restored; {} message(s) could not reach other servers meanwhile",
                outage.dropped,
            ),
            None if first => tracing::info!(redis = %self.broker, "joined the Redis backplane"),
            None => {
                tracing::info!(redis = %self.broker, "Redis link restored, subscriptions restored")
            }
        }
    }

    /// The subscriber link was lost.
    pub(super) fn link_lost(&self, stats: &BackplaneStats) {
        stats.connected.store(false, Ordering::Relaxed);
        let mut outage = self.outage.lock();
        match outage.as_mut() {
            Some(current) => current.cause = Cause::LinkLost,
            None => {
                *outage = Some(Outage {
                    cause: Cause::LinkLost,
                    since: Instant::now(),
                    dropped: 0,
                });
                BackplaneStats::add(&stats.outages, 1);
                tracing::warn!(redis = %self.broker, "lost the Redis link; this server's clients are still served, messages for other servers are dropped until it is back");
            }
        }
    }

    /// `count` messages could not reach other servers (`why`).
    pub(super) fn dropped(&self, stats: &BackplaneStats, count: u64, why: &str) {
        BackplaneStats::add(&stats.dropped, count);
        let mut outage = self.outage.lock();
        match outage.as_mut() {
            Some(current) => current.dropped += count,
            None => {
                *outage = Some(Outage {
                    cause: Cause::PublishFailed,
                    since: Instant::now(),
                    dropped: count,
                });
                BackplaneStats::add(&stats.outages, 1);
                tracing::warn!(redis = %self.broker, "cannot publish to Redis ({why}); this server's clients are still served, messages for other servers are dropped until it works again");
            }
        }
    }

    /// A publish went through: ends an outage that a failed publish began.
    pub(super) fn published(&self) {
        let mut outage = self.outage.lock();
        if outage
            .as_ref()
            .is_some_and(|o| o.cause == Cause::PublishFailed)
            && let Some(ended) = outage.take()
        {
            tracing::warn!(
                redis = %self.broker,
                dropped = ended.dropped,
                "publishing to Redis works again; {} message(s) could not reach other servers meanwhile",
                ended.dropped
            );
        }
    }

    /// Messages dropped in the outage in progress (0 when there is none).
    #[cfg(test)]
    pub(super) fn outage_drops(&self) -> u64 {
        self.outage.lock().as_ref().map_or(0, |o| o.dropped)
    }
}
