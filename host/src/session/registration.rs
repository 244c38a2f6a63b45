//! A session's place in the registry, given back whatever happens.
//!
//! Registered connections must be unregistered, or the registry keeps a dead handle (and the
//! backplane its subscriptions) for good. A session that ends normally does it in order
//! (unregister, then the hub's `on-disconnected`); if the session's task panics instead, the
//! guard's drop does both, the first at once and the second on a spawned task.

use std::sync::Arc;

use super::HubCalls;
use crate::registry::ConnectionHandle;
use crate::router::Router;
use crate::types::Caller;

/// How long a new durable connection waits for its marker before it takes sends without.
const MARKER_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// In the registry; the hub has not been told.
    Registered,
    /// In the registry, and the hub's `on-connected` succeeded.
    Connected,
    /// Cleaned up.
    Done,
}

pub(super) struct Registration {
    router: Router,
    hubs: Arc<dyn HubCalls>,
    caller: Arc<Caller>,
    stage: Stage,
}

impl Registration {
    /// Registers the connection (subscribing to what it needs before it can be addressed).
    pub(super) async fn register(
        router: Router,
        hubs: Arc<dyn HubCalls>,
        caller: Arc<Caller>,
        handle: ConnectionHandle,
    ) -> Self {
        // Armed before the first await, so a panic while subscribing still cleans up.
        let registration = Self {
            router,
            hubs,
            caller,
            stage: Stage::Registered,
        };
        // Boxed: futures of backplane work are large and short-lived; an idle session should
        // not hold their space.
        Box::pin(
            registration
                .router
                .connect(&registration.caller.hub, handle),
        )
        .await;
        registration
    }

    /// Registers a connection that moves here from another server, with its groups, taking
    /// nothing until the marker of `claim`, which it then publishes (see
    /// [`LocalRegistry::adopt`]). The hub heard of it on its first server, so it hears of its
    /// end here.
    ///
    /// [`LocalRegistry::adopt`]: crate::registry::LocalRegistry::adopt
    pub(super) async fn adopt(
        router: Router,
        hubs: Arc<dyn HubCalls>,
        caller: Arc<Caller>,
        handle: ConnectionHandle,
        groups: &[String],
        claim: u64,
    ) -> Self {
        let registration = Self {
            router,
            hubs,
            caller,
            stage: Stage::Connected,
        };
        registration.register_waiting(handle, groups, claim).await;
        registration
    }

    /// Registers a new connection of durable reconnect: it takes nothing until the marker of
    /// `claim` reaches this server, so its frames from the hub's log start at a place in it;
    /// if the marker is lost, it takes what comes after [`MARKER_WITHIN`], and its first
    /// checkpoint names a place.
    pub(super) async fn register_from_marker(
        router: Router,
        hubs: Arc<dyn HubCalls>,
        caller: Arc<Caller>,
        handle: ConnectionHandle,
        claim: u64,
    ) -> Self {
        let registration = Self {
            router,
            hubs,
            caller,
            stage: Stage::Registered,
        };
        registration.register_waiting(handle, &[], claim).await;
        let registry = registration.router.registry().clone();
        let (hub, id) = (
            registration.caller.hub.clone(),
            registration.caller.connection_id.to_string(),
        );
        tokio::spawn(async move {
            tokio::time::sleep(MARKER_WITHIN).await;
            if registry.stop_waiting(&hub, &id, claim) {
                tracing::warn!(connection = %id, "its marker did not come back: it takes sends without one");
            }
        });
        registration
    }

    /// Registers the connection waiting for the marker of `claim`, and publishes the marker
    /// once it is subscribed to what it needs.
    async fn register_waiting(&self, handle: ConnectionHandle, groups: &[String], claim: u64) {
        let (hub, id) = (&self.caller.hub, self.caller.connection_id.as_str());
        Box::pin(self.router.adopt(hub, handle, groups, claim)).await;
        self.router.backplane().mark(hub, id, claim);
    }

    /// The hub's `on-connected` succeeded: from now on, it must hear of the disconnection.
    pub(super) fn connected(&mut self) {
        self.stage = Stage::Connected;
    }

    /// Unregisters, then (if the hub knew of the connection) runs `on-disconnected`.
    pub(super) async fn end(mut self, error: Option<String>) {
        let told = self.stage == Stage::Connected;
        self.stage = Stage::Done;
        Box::pin(
            self.router
                .disconnect(&self.caller.hub, &self.caller.connection_id),
        )
        .await;
        if told {
            self.hubs
                .clone()
                .disconnected(self.caller.clone(), error)
                .await;
        }
    }

    /// Unregisters without telling the hub: its `on-connected` failed (ASP.NET does not call
    /// `OnDisconnectedAsync` then either), or the connection lives on on another server.
    pub(super) async fn abandon(mut self) {
        self.stage = Stage::Done;
        Box::pin(
            self.router
                .disconnect(&self.caller.hub, &self.caller.connection_id),
        )
        .await;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if self.stage == Stage::Done {
            return;
        }
        tracing::error!(hub = %self.caller.hub, connection = %self.caller.connection_id, "session ended abnormally; unregistering the connection");
        self.router
            .disconnect_now(&self.caller.hub, &self.caller.connection_id);
        if self.stage == Stage::Connected
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let hubs = self.hubs.clone();
            let caller = self.caller.clone();
            runtime.spawn(hubs.disconnected(caller, Some("the session failed".into())));
        }
    }
}
