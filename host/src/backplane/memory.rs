//! The in-memory backplane: one server, delivery straight into the local registry.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::future::BoxFuture;

use super::{Backplane, BackplaneError, BackplaneStats};
use crate::registry::{LocalRegistry, Source};
use crate::types::{Answered, Envelope, GroupChange, InterestChange, Question, Reply};

/// The single-server backplane.
pub struct MemoryBackplane {
    registry: Arc<LocalRegistry>,
    stats: BackplaneStats,
}

impl MemoryBackplane {
    pub fn new(registry: Arc<LocalRegistry>) -> Self {
        let stats = BackplaneStats::default();
        stats.connected.store(true, Ordering::Relaxed);
        Self { registry, stats }
    }
}

impl Backplane for MemoryBackplane {
    fn publish(&self, envelope: Envelope) {
        BackplaneStats::add(&self.stats.published, 1);
        let stats = self.registry.deliver(&envelope, Source::Only);
        tracing::trace!(hub = %envelope.hub, delivered = stats.delivered, "delivered");
    }

    fn change_remote_group(
        &self,
        change: GroupChange,
    ) -> BoxFuture<'static, Result<(), BackplaneError>> {
        // With one server there is no other place the connection could be: like ASP.NET Core's
        // default lifetime manager, a change for an unknown connection is a no-op.
        tracing::debug!(
            connection = change.connection(),
            "group change for an unknown connection ignored"
        );
        Box::pin(async { Ok(()) })
    }

    fn update_interest(&self, _changes: Vec<InterestChange>) -> BoxFuture<'_, ()> {
        // Everything is local: there is nothing to subscribe to.
        Box::pin(async {})
    }

    fn ask(&self, question: Question) {
        if !self.registry.deliver_question(&question) {
            // One server: a connection that is not here is nowhere.
            self.registry.asks().resolve(Answered {
                invocation_id: question.invocation_id,
                connection: question.connection,
                reply: Reply::Gone,
            });
        }
    }

    fn answer(&self, answered: Answered) {
        self.registry.asks().resolve(answered);
    }

    fn server_name(&self) -> &str {
        "local"
    }

    fn is_ready(&self) -> bool {
        true
    }

    fn stats(&self) -> &BackplaneStats {
        &self.stats
    }

    fn kind(&self) -> &'static str {
        "memory"
    }

    fn registry(&self) -> &Arc<LocalRegistry> {
        &self.registry
    }
}
