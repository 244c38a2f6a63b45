//! The one way hub effects leave the runtime: sends and group changes, handed to the backplane.
//!
//! Every send goes through the backplane, never straight to local sockets, so one server and
//! many behave alike. Group changes for connections living here are applied directly (and the
//! backplane told what this server now needs to hear about); others go through the backplane,
//! which waits for the owning server's acknowledgement.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::backplane::{Backplane, BackplaneError};
use crate::presence::{LocalPresence, Presence};
use crate::registry::{ConnectionHandle, LocalRegistry};
use crate::types::{Answered, ConnectionId, Envelope, GroupChange, HubName, Question, Reply};

/// Routes hub effects. Cheap to clone.
#[derive(Clone)]
pub struct Router {
    backplane: Arc<dyn Backplane>,
    presence: Arc<dyn Presence>,
    /// Numbers this server's client-result questions.
    questions: Arc<AtomicU64>,
}

/// Why a client-result question got no result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AskError {
    /// The client answered with an error: its text.
    Client(String),
    /// No answer in time.
    Timeout,
    /// The connection is gone (or was never there).
    Gone,
}

impl Router {
    /// A router whose presence is its registry's (one server).
    pub fn new(backplane: Arc<dyn Backplane>) -> Self {
        let presence = Arc::new(LocalPresence::new(backplane.registry().clone()));
        Self {
            backplane,
            presence,
            questions: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The same router with presence kept by `presence` (over several servers).
    pub fn with_presence(self, presence: Arc<dyn Presence>) -> Self {
        Self { presence, ..self }
    }

    /// Who is connected, over every server.
    pub fn presence(&self) -> &Arc<dyn Presence> {
        &self.presence
    }

    /// Asks connection `connection` of `hub` (on any server) to run client method `method` with
    /// `arguments` (a JSON array) and waits, at most `timeout`, for its result (a JSON value).
    pub async fn ask(
        &self,
        hub: &HubName,
        connection: &str,
        method: &str,
        arguments: &str,
        timeout: Duration,
    ) -> Result<String, AskError> {
        let n = self.questions.fetch_add(1, Ordering::Relaxed);
        let invocation_id = format!("{}.{n}", self.backplane.server_name());
        let asks = self.registry().asks();
        let reply = asks.expect(invocation_id.clone(), connection.to_owned());
        self.backplane.ask(Question {
            hub: hub.clone(),
            connection: connection.to_owned(),
            invocation_id: invocation_id.clone(),
            method: method.to_owned(),
            arguments: arguments.to_owned(),
        });
        match tokio::time::timeout(timeout, reply).await {
            Ok(Ok(Reply::Result(result))) => Ok(result),
            Ok(Ok(Reply::Error(error))) => Err(AskError::Client(error)),
            Ok(Ok(Reply::Gone) | Err(_)) => Err(AskError::Gone),
            Err(_) => {
                asks.forget(&invocation_id);
                Err(AskError::Timeout)
            }
        }
    }

    /// A local connection answered a question (a Completion for an invocation id it was
    /// given); `false` if it was asked no such thing.
    pub fn answer(&self, connection: &ConnectionId, invocation_id: &str, reply: Reply) -> bool {
        if !self
            .registry()
            .asks()
            .answered(connection.as_str(), invocation_id)
        {
            return false;
        }
        self.backplane.answer(Answered {
            invocation_id: invocation_id.to_owned(),
            connection: connection.as_str().to_owned(),
            reply,
        });
        true
    }

    /// The questions a leaving connection will never answer are answered "gone".
    fn answer_gone(&self, id: &ConnectionId) {
        for answered in self.registry().asks().left(id.as_str()) {
            self.backplane.answer(answered);
        }
    }

    /// Fans a message out through the backplane.
    pub fn send(&self, envelope: Envelope) {
        self.backplane.publish(envelope);
    }

    /// Registers a local connection and subscribes to what it needs (its own channel, its
    /// user's, its hub's) before it can be addressed; it counts in presence once this returns.
    pub async fn connect(&self, hub: &HubName, handle: ConnectionHandle) {
        let changes = self.registry().add(hub, handle);
        self.settle(changes).await;
    }

    /// Follows the interests a registry change gained or lost, and waits for presence to count
    /// the change.
    async fn settle(&self, changes: Vec<crate::types::InterestChange>) {
        let written = self.registry().presence_written();
        tokio::join!(self.backplane.update_interest(changes), written);
    }

    /// Registers a connection moving here from another server, with its groups, and subscribes
    /// to what it needs; it takes nothing until the marker of `claim`.
    pub async fn adopt(
        &self,
        hub: &HubName,
        handle: ConnectionHandle,
        groups: &[String],
        claim: u64,
    ) {
        let changes = self.registry().adopt(hub, handle, groups, claim);
        self.settle(changes).await;
    }

    /// Forgets a local connection, with its groups, and drops the subscriptions no one needs;
    /// it no longer counts in presence once this returns.
    pub async fn disconnect(&self, hub: &HubName, id: &ConnectionId) {
        self.answer_gone(id);
        let changes = self.registry().remove(hub, id);
        self.settle(changes).await;
    }

    /// [`Router::disconnect`] from a context that cannot wait (a drop): the connection is
    /// forgotten at once, the subscriptions are updated by a spawned task.
    pub fn disconnect_now(&self, hub: &HubName, id: &ConnectionId) {
        self.answer_gone(id);
        let changes = self.registry().remove(hub, id);
        if changes.is_empty() {
            return;
        }
        let backplane = self.backplane.clone();
        tokio::spawn(async move { backplane.update_interest(changes).await });
    }

    /// Applies a group change: directly when the connection lives here, else through the
    /// backplane (which waits for the owning server's acknowledgement).
    pub async fn change_group(&self, change: GroupChange) -> Result<(), BackplaneError> {
        match self.registry().apply_group_change(&change) {
            Some(changes) => {
                self.settle(changes).await;
                self.registry()
                    .checkpoint(change.hub(), change.connection());
                Ok(())
            }
            None => self.backplane.change_remote_group(change).await,
        }
    }

    /// The backplane's counters and kind.
    pub fn backplane(&self) -> &dyn Backplane {
        self.backplane.as_ref()
    }

    /// Whether the backplane can carry messages now.
    pub fn is_ready(&self) -> bool {
        self.backplane.is_ready()
    }

    /// This server's connections.
    pub fn registry(&self) -> &Arc<LocalRegistry> {
        self.backplane.registry()
    }
}
