//! A SignalR 2 connection: it outlives the requests that carry it.
//!
//! In SignalR 2 a connection is not a socket: it starts at `/connect`, may go through several
//! transport requests (reconnects, long polls), and ends at `/abort` or when no request has
//! been attached to it for the disconnect timeout. A [`Persistent`] connection holds what
//! those requests share: its [`Mailbox`] (what it was sent, numbered, so a reconnecting
//! client gets what it missed), the queue of its invocations, and who is attached.
//!
//! Its task ([`run`]) registers it with the router in each hub it listed in `connectionData`,
//! runs the hubs' `on-connected` at `/start`, runs invocations one at a time in the order
//! they came, and unregisters it (running `on-disconnected`) when it ends. A pump moves what
//! the registry delivers into the mailbox.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Signalr2;
use super::mailbox::Mailbox;
use super::message::{self, HubRequest, Outcome};
use super::names;
use super::protocol::Signalr2Protocol;
use crate::auth::Identity;
use crate::dispatcher::Failure;
use crate::metrics::Metrics;
use crate::protocol::Frame;
use crate::registry::{ConnectionHandle, Outbound, OutboxReceiver, OutboxSender, outbox};
use crate::runtime::{CallError, HubError};
use crate::session::rate_limit::{self, RateLimiter};
use crate::types::{Caller, ConnectionId, GroupChange, HubName, Request as HttpRequest};

/// Invocations queued for one connection before `/send` and the WebSocket wait.
const QUEUED_REQUESTS: usize = 16;

/// What a connection's requests ask of its task.
#[derive(Debug)]
pub enum Request {
    /// `/start`: run the hubs' `on-connected` (once), then answer.
    Start {
        done: oneshot::Sender<Result<(), String>>,
    },
    /// A hub invocation; its response goes to `reply` (`/send`) or into the mailbox
    /// (WebSockets). Boxed: the queue's slots are allocated up front, at the largest
    /// request's size, for every connection.
    Invoke {
        request: Box<HubRequest>,
        reply: Option<oneshot::Sender<String>>,
    },
}

/// One SignalR 2 connection.
pub struct Persistent {
    pub id: ConnectionId,
    /// The authenticated user, if any.
    pub user: Option<String>,
    pub claims: Vec<(String, String)>,
    /// The hubs it named in `connectionData`: it receives their client calls.
    pub hubs: Vec<HubName>,
    /// The request that opened it, kept if one of its hubs reads it.
    request: Option<Arc<HttpRequest>>,
    pub mailbox: Mailbox,
    requests: mpsc::Sender<Request>,
    /// Cancelled when the connection ends, whatever ended it.
    pub ended: CancellationToken,
    presence: Mutex<Presence>,
    presence_changed: Notify,
    groups: Mutex<Groups>,
}

/// The connection's groups as its client last heard of them.
#[derive(Default)]
struct Groups {
    /// `Hub.group` names, sorted.
    names: Vec<String>,
    /// Their token (`G`); `None` until they first change.
    token: Option<Arc<str>>,
    /// Counts changes, so each transport request knows whether it has sent the latest.
    version: u64,
}

/// Who is attached: requests carrying the connection now, and since when none has been.
struct Presence {
    attached: usize,
    idle_since: Instant,
    /// The newest request's token: a newer request ends the older one, as in SignalR 2.
    newest: CancellationToken,
}

/// A transport request carrying the connection; dropping it detaches it.
pub struct Attachment {
    connection: Arc<Persistent>,
    /// Cancelled when a newer request takes the connection over.
    pub superseded: CancellationToken,
}

impl Drop for Attachment {
    fn drop(&mut self) {
        let mut presence = self.connection.presence.lock();
        presence.attached -= 1;
        if presence.attached == 0 {
            presence.idle_since = Instant::now();
        }
        drop(presence);
        self.connection.presence_changed.notify_waiters();
    }
}

/// Why a request could not be handed to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the connection has ended")]
pub struct Ended;

impl Persistent {
    /// A connection and the receiving end of its requests (for [`run`]); what it is sent is
    /// kept for replay for `replay_window`; `request` is what opened it, for hubs that read it.
    pub fn new(
        id: ConnectionId,
        identity: Identity,
        hubs: Vec<HubName>,
        request: Option<Arc<HttpRequest>>,
        replay_window: Duration,
    ) -> (Arc<Self>, mpsc::Receiver<Request>) {
        let (requests, receiver) = mpsc::channel(QUEUED_REQUESTS);
        let connection = Arc::new(Self {
            id,
            user: identity.user_id,
            claims: identity.claims,
            hubs,
            request,
            mailbox: Mailbox::new(replay_window),
            requests,
            ended: CancellationToken::new(),
            presence: Mutex::new(Presence {
                attached: 0,
                idle_since: Instant::now(),
                newest: CancellationToken::new(),
            }),
            presence_changed: Notify::new(),
            groups: Mutex::new(Groups::default()),
        });
        (connection, receiver)
    }

    /// Attaches a transport request, superseding the one attached before it.
    pub fn attach(self: &Arc<Self>) -> Attachment {
        let superseded = CancellationToken::new();
        let mut presence = self.presence.lock();
        presence.attached += 1;
        let older = std::mem::replace(&mut presence.newest, superseded.clone());
        drop(presence);
        older.cancel();
        self.presence_changed.notify_waiters();
        Attachment {
            connection: self.clone(),
            superseded,
        }
    }

    /// Hands a request to the connection's task, waiting for room (so a client that sends
    /// faster than its hub answers is slowed, not buffered without bound).
    pub async fn request(&self, request: Request) -> Result<(), Ended> {
        tokio::select! {
            sent = self.requests.send(request) => sent.map_err(|_| Ended),
            () = self.ended.cancelled() => Err(Ended),
        }
    }

    /// The groups token and its version, once the groups have changed.
    pub fn groups_token(&self) -> (u64, Option<Arc<str>>) {
        let groups = self.groups.lock();
        (groups.version, groups.token.clone())
    }

    /// Reads the connection's groups from the registry; a new token if they changed.
    fn refresh_groups(&self, service: &Signalr2) {
        let registry = service.router.registry();
        let mut names: Vec<String> = Vec::new();
        for hub in &self.hubs {
            let legacy = names::legacy_name(hub);
            for group in registry.groups_of(hub, self.id.as_str()) {
                names.push(format!("{legacy}.{group}"));
            }
        }
        names.sort();
        let mut groups = self.groups.lock();
        if groups.names != names {
            groups.token = Some(service.key.protect_groups(&self.id, &names).into());
            groups.names = names;
            groups.version += 1;
        }
    }

    /// Puts a revived connection back in the groups its client's token names (`Hub.group`).
    async fn rejoin(&self, service: &Signalr2, groups: &[String]) {
        for name in groups {
            let Some((legacy, group)) = name.split_once('.') else {
                continue;
            };
            let Some(hub) = names::resolve(&self.hubs, legacy) else {
                continue;
            };
            let change = GroupChange::Add {
                hub,
                connection: self.id.to_string(),
                group: group.to_owned(),
            };
            if let Err(error) = Box::pin(service.router.change_group(change)).await {
                tracing::warn!(connection = %self.id, group, "could not rejoin a group: {error}");
            }
        }
    }

    /// The caller of a hub call made for this connection.
    fn caller(&self, hub: &HubName) -> Caller {
        Caller {
            hub: hub.clone(),
            connection_id: self.id.clone(),
            user_id: self.user.clone(),
            claims: self.claims.clone(),
            request: self.request.clone(),
        }
    }

    /// Returns once no request has been attached for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let changed = self.presence_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let idle_since = {
                let presence = self.presence.lock();
                (presence.attached == 0).then_some(presence.idle_since)
            };
            match idle_since {
                Some(since) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(since + timeout) => return,
                        () = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }
}

/// Why a connection ended, for the log.
#[derive(Debug, Clone, Copy)]
enum End {
    /// `/abort`, the hub's abort, or the hub went away.
    Ended,
    /// A hub's `on-connected` failed.
    Refused,
    TimedOut,
    ShuttingDown,
}

/// Serves a connection to its end; a `revived` one (see [`Signalr2::open`]) rejoins the
/// groups its client's groups token names and starts at once.
pub async fn run(
    service: Arc<Signalr2>,
    connection: Arc<Persistent>,
    mut requests: mpsc::Receiver<Request>,
    revived: Option<Vec<String>>,
) {
    let (sender, receiver) = outbox(service.settings.outbox_capacity);
    for hub in &connection.hubs {
        let legacy = names::legacy_name(hub);
        let handle = ConnectionHandle {
            id: connection.id.clone(),
            user: connection.user.clone(),
            protocol: Signalr2Protocol::for_hub(&legacy),
            outbox: sender.clone(),
            cancel: connection.ended.clone(),
            durable: false,
        };
        Box::pin(service.router.connect(hub, handle)).await;
    }
    let mut registered = Registered {
        service: &service,
        connection: &connection,
        done: false,
    };
    let pump = tokio::spawn(pump(receiver, connection.clone()));
    // How many of its hubs were told of the connection (`None`: not started yet).
    let mut told = None;
    let mut end = None;
    if let Some(groups) = revived {
        connection.rejoin(&service, &groups).await;
        connection.refresh_groups(&service);
        let (hubs, result) = Box::pin(start(&service, &connection)).await;
        told = Some(hubs);
        end = result.is_err().then_some(End::Refused);
    }
    let mut limiter = RateLimiter::new(service.settings.rate_limit);
    let end = loop {
        if let Some(end) = end {
            break end;
        }
        tokio::select! {
            () = connection.ended.cancelled() => break End::Ended,
            () = service.draining.cancelled() => break End::ShuttingDown,
            () = connection.idle_for(service.settings.disconnect_timeout) => break End::TimedOut,
            // Hub calls are boxed: the task lives as long as the connection, idle or not, and
            // should not keep their (large, short-lived) futures' room.
            request = requests.recv() => match request {
                None => break End::Ended,
                Some(Request::Start { done }) if told.is_some() => {
                    let _ = done.send(Ok(()));
                }
                Some(Request::Start { done }) => {
                    let (hubs, result) = Box::pin(start(&service, &connection)).await;
                    told = Some(hubs);
                    // A hub that refuses the connection ends it, once the client has its answer.
                    end = result.is_err().then_some(End::Refused);
                    let _ = done.send(result);
                }
                Some(Request::Invoke { request, reply }) => {
                    let (response, abort) = if limiter.as_mut().is_some_and(|l| !l.allow()) {
                        (rate_limited(&service, &request), false)
                    } else {
                        Box::pin(invoke(&service, &connection, &request)).await
                    };
                    // Before the response goes: the response carrying it also carries the
                    // new groups token.
                    connection.refresh_groups(&service);
                    match reply {
                        Some(reply) => {
                            let _ = reply.send(response);
                        }
                        None => respond(&sender, response).await,
                    }
                    end = abort.then_some(End::Ended);
                }
            },
        }
    };
    tracing::debug!(connection = %connection.id, ?end, "SignalR 2 connection ended");
    connection.ended.cancel();
    service.forget(&connection);
    for hub in &connection.hubs {
        Box::pin(service.router.disconnect(hub, &connection.id)).await;
    }
    registered.done = true;
    for hub in &connection.hubs[..told.unwrap_or(0)] {
        let caller = connection.caller(hub);
        Box::pin(service.dispatcher.disconnected(&caller, None)).await;
    }
    pump.abort();
}

/// Runs `on-connected` of each hub the connection named, in order, until one refuses: how many
/// were told, and the refusal.
async fn start(service: &Signalr2, connection: &Persistent) -> (usize, Result<(), String>) {
    for (told, hub) in connection.hubs.iter().enumerate() {
        let caller = connection.caller(hub);
        if let Err(refusal) = service.dispatcher.connected(&caller).await {
            return (told, Err(refusal));
        }
    }
    (connection.hubs.len(), Ok(()))
}

/// Unregisters a connection whose task ended without doing so (it panicked): the registry must
/// not keep a handle nobody serves.
struct Registered<'a> {
    service: &'a Signalr2,
    connection: &'a Arc<Persistent>,
    done: bool,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let id = &self.connection.id;
        tracing::error!(connection = %id, "SignalR 2 connection task ended abnormally; unregistering it");
        self.connection.ended.cancel();
        self.service.forget(self.connection);
        for hub in &self.connection.hubs {
            self.service.router.disconnect_now(hub, id);
        }
    }
}

/// Queues a response behind what the hub sent during the call, so the client sees them in
/// the order they happened.
async fn respond(sender: &OutboxSender, response: String) {
    sender.room(1).await;
    let _ = sender.try_send(Outbound::Frame(Frame::text(response)));
}

/// The response to an invocation over `--rate-limit`, which does not reach the hub.
fn rate_limited(service: &Signalr2, request: &HubRequest) -> String {
    Metrics::inc(&service.dispatcher.metrics().rate_limited);
    let outcome = Outcome::Error {
        text: rate_limit::exceeded(service.settings.rate_limit),
        hub_exception: true,
    };
    message::hub_response(&request.id, &outcome)
}

/// Runs one invocation; the response, and whether the hub aborted the connection.
async fn invoke(
    service: &Signalr2,
    connection: &Persistent,
    request: &HubRequest,
) -> (String, bool) {
    let hubs = service.dispatcher.runtime().hub_names();
    let Some(hub) = names::resolve(&hubs, &request.hub) else {
        // SignalR 2 throws (no response at all); an error response tells the caller why.
        let outcome = Outcome::Error {
            text: format!("'{}' Hub could not be resolved.", request.hub),
            hub_exception: false,
        };
        return (message::hub_response(&request.id, &outcome), false);
    };
    let caller = connection.caller(&hub);
    let (reply, abort) = service
        .dispatcher
        .invoke_unworded(&caller, &request.method, request.arguments.get())
        .await;
    let outcome = match reply {
        Ok(None) => Outcome::Void,
        Ok(Some(value)) => Outcome::Value(value),
        Err(Failure::Call(CallError::Hub(HubError::Rejected(text)))) => Outcome::Error {
            text,
            hub_exception: true,
        },
        Err(failure) => Outcome::Error {
            text: error_text(&failure, request, service.dispatcher.detailed_errors()),
            hub_exception: false,
        },
    };
    (message::hub_response(&request.id, &outcome), abort)
}

/// A failure as SignalR 2 words it: one masked text unless detailed errors are on.
fn error_text(failure: &Failure, request: &HubRequest, detailed: bool) -> String {
    let method = &request.method;
    if !detailed {
        return format!(
            "There was an error invoking Hub method '{}.{method}'.",
            request.hub
        );
    }
    match failure {
        Failure::Call(CallError::Hub(HubError::MethodNotFound)) => {
            format!("'{method}' method could not be resolved. No method found with that name.")
        }
        Failure::Call(CallError::Hub(HubError::InvalidArguments(text))) => {
            format!("'{method}' method could not be resolved: {text}")
        }
        Failure::Call(CallError::Hub(HubError::Failed(exception))) => exception.message.clone(),
        Failure::Call(other) => other.to_string(),
        Failure::Refused(text) => text.clone(),
    }
}

/// Moves what the registry delivers into the mailbox; a Close (the hub went away) ends the
/// connection.
async fn pump(mut receiver: OutboxReceiver, connection: Arc<Persistent>) {
    let mut batch = Vec::new();
    while receiver.recv_batch(&mut batch, 64).await {
        for outbound in batch.drain(..) {
            match outbound {
                Outbound::Frame(frame) | Outbound::Logged(frame) => {
                    connection.mailbox.push(frame.bytes())
                }
                // SignalR 2 connections do not move between servers this way.
                Outbound::KeepAlive(_) | Outbound::Moved { .. } | Outbound::Checkpoint(_) => {}
                Outbound::Close(_) => connection.ended.cancel(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection() -> Arc<Persistent> {
        let window = Duration::from_secs(45);
        let anonymous = Identity {
            user_id: None,
            claims: Vec::new(),
        };
        Persistent::new(ConnectionId::new("c"), anonymous, Vec::new(), None, window).0
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_after_the_timeout_with_nothing_attached() {
        let connection = connection();
        let timeout = Duration::from_secs(30);
        let attachment = connection.attach();
        // Attached: never idle, however long.
        let waited = tokio::time::timeout(Duration::from_secs(300), connection.idle_for(timeout));
        assert!(waited.await.is_err());
        // Detached: idle once the timeout has passed since.
        drop(attachment);
        let detached = Instant::now();
        connection.idle_for(timeout).await;
        assert!(detached.elapsed() >= timeout);
        // A request attached meanwhile restarts the clock when it detaches.
        drop(connection.attach());
        let waiting = tokio::spawn({
            let connection = connection.clone();
            async move { connection.idle_for(timeout).await }
        });
        tokio::time::sleep(Duration::from_secs(20)).await;
        let attachment = connection.attach();
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert!(!waiting.is_finished());
        drop(attachment);
        let detached = Instant::now();
        waiting.await.unwrap();
        assert!(detached.elapsed() >= timeout);
    }

    #[tokio::test]
    async fn a_newer_request_supersedes_the_older() {
        let connection = connection();
        let first = connection.attach();
        let second = connection.attach();
        assert!(first.superseded.is_cancelled());
        assert!(!second.superseded.is_cancelled());
        drop(first);
        // The older one leaving does not detach the newer.
        assert_eq!(connection.presence.lock().attached, 1);
    }
}
