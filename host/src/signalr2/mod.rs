//! The ASP.NET SignalR 2.x protocol under `/signalr`, so pages written for SignalR 2 (the
//! jQuery client and its generated `/signalr/hubs` proxies) connect unchanged.
//!
//! SignalR 2 differs from ASP.NET Core's protocol in its lifecycle more than in its messages:
//! a connection is negotiated, then carried by one transport request after another
//! (WebSocket, Server-Sent Events or long polls), each resuming from a message cursor; hub
//! calls arrive as WebSocket messages or `/send` POSTs. So a 2.x connection is a
//! [`Persistent`](connection::Persistent) object with its own task, while the hubs, the router,
//! the registry and the backplane are the ones Core connections use: a 2.x client and a Core
//! client on the same hub, on different hosts, receive each other's messages.
//!
//! - [`routes`]: the endpoints (negotiate, connect, reconnect, poll, start, send, abort, ping,
//!   hubs) and their checks;
//! - [`connection`]: the persistent connection and its task;
//! - [`transports`]: WebSockets, Server-Sent Events and long polling over a connection's
//!   [`mailbox`];
//! - [`message`], [`protocol`]: the wire format; [`token`]: connection tokens; [`names`]: how
//!   hub files are named to 2.x clients; [`proxy`]: the generated hubs script.
//!
//! The wire is specified by SignalR/SignalR's server (`Microsoft.AspNet.SignalR.Core`) and
//! jQuery client (`Microsoft.AspNet.SignalR.Client.JS`).

pub mod connection;
pub mod mailbox;
pub mod message;
pub mod names;
pub mod protocol;
pub mod proxy;
pub mod routes;
pub mod token;
pub mod transports;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::dispatcher::Dispatcher;
use crate::router::Router;
use crate::types::{ConnectionId, HubName, Request};
use connection::Persistent;
use token::TokenKey;

/// Timings of SignalR 2 connections.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A keep-alive (`{}`) goes out on a quiet WebSocket or event stream after this long;
    /// negotiate announces twice it as `KeepAliveTimeout`, as SignalR 2 does.
    pub keep_alive: Duration,
    /// A connection with no request attached for this long is gone (`DisconnectTimeout`).
    pub disconnect_timeout: Duration,
    /// The longest a poll is held (`ConnectionTimeout`).
    pub poll_timeout: Duration,
    /// Largest hub invocation accepted.
    pub max_message_size: usize,
    /// Frames queued between the registry and a connection's mailbox.
    pub outbox_capacity: usize,
    /// Invocations per second per connection (`--rate-limit`; 0: unlimited).
    pub rate_limit: u32,
    /// The transports clients may use (`--transports`).
    pub transports: Vec<crate::transport::Transport>,
}

impl Settings {
    /// How long a connection's messages are kept for a client to come back for: it notices a
    /// dead transport within the keep-alive timeout (twice the interval), then has the
    /// disconnect timeout to reconnect.
    pub fn replay_window(&self) -> Duration {
        self.keep_alive * 2 + self.disconnect_timeout
    }
}

/// The SignalR 2 service: its connections and what they share.
pub struct Signalr2 {
    pub dispatcher: Arc<Dispatcher>,
    pub router: Router,
    pub settings: Settings,
    pub key: TokenKey,
    /// Checks bearer tokens (the same as Core connections').
    pub auth: Arc<Authenticator>,
    connections: Mutex<HashMap<ConnectionId, Arc<Persistent>>>,
    /// Cancelled when shutdown begins: connections end, so their clients reconnect elsewhere.
    pub draining: CancellationToken,
    /// Every connection's task, so shutdown can wait for them.
    tasks: TaskTracker,
}

impl Signalr2 {
    pub fn new(
        dispatcher: Arc<Dispatcher>,
        settings: Settings,
        key: TokenKey,
        auth: Arc<Authenticator>,
        draining: CancellationToken,
        tasks: TaskTracker,
    ) -> Arc<Self> {
        Arc::new(Self {
            router: dispatcher.router().clone(),
            dispatcher,
            settings,
            key,
            auth,
            connections: Mutex::new(HashMap::new()),
            draining,
            tasks,
        })
    }

    /// The live connection with this id.
    pub fn connection(&self, id: &ConnectionId) -> Option<Arc<Persistent>> {
        self.connections.lock().get(id).cloned()
    }

    /// The live connection with this id, or a new one: on a first `/connect`, or for a
    /// connection this host does not hold (SignalR 2 connections live in their token, so a
    /// client that comes back after the server forgot it, or to another host, carries on; as
    /// it started before, it is `revived` with its groups token (empty if none): it rejoins its
    /// groups and the hubs' `on-connected` runs at once, as the `on-disconnected` ran where it
    /// was). `None` while shutting down.
    pub fn open(
        self: &Arc<Self>,
        id: &ConnectionId,
        identity: &crate::auth::Identity,
        hubs: Vec<HubName>,
        revived: Option<&str>,
        request: impl FnOnce() -> Request,
    ) -> Option<Arc<Persistent>> {
        if self.draining.is_cancelled() {
            return None;
        }
        let mut connections = self.connections.lock();
        if let Some(connection) = connections.get(id) {
            return Some(connection.clone());
        }
        // Kept only if one of its hubs can read it (`ctx.request()`), as for Core connections.
        let runtime = self.dispatcher.runtime();
        let reads_request = hubs
            .iter()
            .any(|hub| runtime.hub(hub.as_str()).is_some_and(|h| h.reads_request()));
        let (connection, requests) = Persistent::new(
            id.clone(),
            identity.clone(),
            hubs,
            reads_request.then(|| Arc::new(request())),
            self.settings.replay_window(),
        );
        connections.insert(id.clone(), connection.clone());
        drop(connections);
        // A revived connection's groups token, if genuine and its own; else no groups, as
        // SignalR 2 ignores a bad one.
        let rejoin = revived.map(|token| self.key.unprotect_groups(id, token).unwrap_or_default());
        self.tasks.spawn(connection::run(
            self.clone(),
            connection.clone(),
            requests,
            rejoin,
        ));
        Some(connection)
    }

    /// Forgets an ended connection.
    fn forget(&self, connection: &Arc<Persistent>) {
        let mut connections = self.connections.lock();
        if connections
            .get(&connection.id)
            .is_some_and(|c| Arc::ptr_eq(c, connection))
        {
            connections.remove(&connection.id);
        }
    }

    /// Connections this host holds.
    pub fn len(&self) -> usize {
        self.connections.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
