//! The connections of SignalR's HTTP connection protocol, by token: negotiated ones waiting
//! for their transport, and the transport each took.
//!
//! Negotiating costs the server an entry until the client connects (or the entry expires), so
//! the entries not yet connected are capped: a flood of negotiations without connections is
//! refused once the cap is reached, instead of growing memory without bound.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::Transport;
use super::inbox::{InboxSender, Incoming, inbox};
use super::long_polling::Polls;
use super::websocket::{self, Resumer};
use crate::session::Attachments;
use crate::types::{ConnectionId, HubName, random_id};

/// How long a negotiated connection waits for its transport before it is forgotten.
const NEGOTIATED_TTL: Duration = Duration::from_secs(60);
/// How long an ended long-polling connection is kept, so its client's last poll gets 204.
const ENDED_TTL: Duration = Duration::from_secs(10);
/// Least time between sweeps of a full table, and between log lines about refusals.
const FULL_SWEEP_EVERY: Duration = Duration::from_secs(1);
const REFUSALS_LOG_EVERY: Duration = Duration::from_secs(10);

/// Where a connection's transport is.
enum State {
    /// Negotiated; no transport yet. POSTs that come first wait in an inbox made for them.
    Waiting {
        early: Option<(InboxSender, Incoming)>,
    },
    /// On a WebSocket; with stateful reconnect, where the connection's later sockets go.
    WebSocket { resumer: Option<Resumer> },
    /// On Server-Sent Events or long polling: POSTs go to the inbox.
    Http {
        transport: Transport,
        inbox: InboxSender,
        polls: Option<Arc<Polls>>,
    },
    /// Ended; kept a moment for a long-polling client's last poll.
    Ended { at: Instant, polls: Arc<Polls> },
}

struct Entry {
    hub: HubName,
    connection_id: ConnectionId,
    created: Instant,
    /// Negotiated with stateful reconnect.
    stateful: bool,
    state: State,
}

struct Table {
    by_token: HashMap<String, Entry>,
    /// Entries whose transport has not come yet (the ones the cap counts).
    waiting: usize,
    /// When the table was last swept because it was full: a flood must not make every refused
    /// request walk the whole table.
    swept: Instant,
    /// Negotiations refused since that was last logged, and when it was.
    refused_unlogged: u64,
    logged: Option<Instant>,
}

impl Table {
    fn remove(&mut self, token: &str) {
        if let Some(entry) = self.by_token.remove(token)
            && matches!(entry.state, State::Waiting { .. })
        {
            self.waiting -= 1;
        }
    }

    fn sweep(&mut self, now: Instant) {
        self.swept = now;
        let mut removed_waiting = 0;
        self.by_token.retain(|_, entry| match &entry.state {
            State::Waiting { .. } => {
                let keep = now.duration_since(entry.created) < NEGOTIATED_TTL;
                removed_waiting += usize::from(!keep);
                keep
            }
            State::Ended { at, .. } => now.duration_since(*at) < ENDED_TTL,
            State::WebSocket { .. } | State::Http { .. } => true,
        });
        self.waiting -= removed_waiting;
    }
}

/// Why negotiate could not make a connection: too many wait for their transport.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

/// Why a transport cannot take a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum StartError {
    /// No connection with that token (or it expired): 404 `No Connection with that ID`.
    Unknown,
    /// The connection already has this transport: 409.
    InUse,
    /// The connection has another transport: 400 `Cannot change transports mid-connection`.
    OtherTransport,
}

/// A connection that took its transport.
pub struct Started {
    pub connection_id: ConnectionId,
    /// Held for as long as the connection lives.
    pub lease: Lease,
    /// Server-Sent Events and long polling: where POSTs arrive, and how to end it.
    pub incoming: Option<(InboxSender, Incoming)>,
    /// Long polling: the connection's polls.
    pub polls: Option<Arc<Polls>>,
    /// A WebSocket negotiated with stateful reconnect: the sockets it may resume on.
    pub attachments: Option<Attachments<websocket::Incoming, websocket::Outgoing>>,
}

/// What a request finds at a token.
pub enum Found {
    Unknown,
    /// Negotiated, no transport yet; POSTs go to this inbox.
    Waiting(InboxSender),
    WebSocket,
    Http {
        transport: Transport,
        inbox: InboxSender,
        polls: Option<Arc<Polls>>,
    },
    /// A long-polling connection that ended moments ago.
    Ended(Arc<Polls>),
}

/// Claims of other servers reach the connection of the token through its resumer.
impl crate::backplane::Movers for Connections {
    fn order(&self, hub: &HubName, token: &str, order: crate::types::MoveOrder) -> bool {
        self.resumer(hub, token)
            .is_some_and(|resumer| resumer.order(order))
    }
}

/// Negotiated connections by secret token.
pub struct Connections {
    table: Mutex<Table>,
    /// Most entries waiting for their transport.
    max_waiting: usize,
    /// Negotiations refused because the table was full (for `/metrics`).
    refused: AtomicU64,
}

/// A connection's hold on its entry: dropping it forgets the entry (or, for long polling, marks
/// it ended for a moment).
pub struct Lease {
    connections: Arc<Connections>,
    token: String,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut table = self.connections.table.lock();
        let polls = match table.by_token.get(&self.token).map(|e| &e.state) {
            Some(State::Http {
                polls: Some(polls), ..
            }) => Some(polls.clone()),
            _ => None,
        };
        match polls {
            Some(polls) => {
                if let Some(entry) = table.by_token.get_mut(&self.token) {
                    entry.state = State::Ended {
                        at: Instant::now(),
                        polls,
                    };
                }
            }
            None => table.remove(&self.token),
        }
    }
}

impl Connections {
    pub fn new(max_waiting: usize) -> Self {
        Self {
            table: Mutex::new(Table {
                by_token: HashMap::new(),
                waiting: 0,
                swept: Instant::now(),
                refused_unlogged: 0,
                logged: None,
            }),
            max_waiting,
            refused: AtomicU64::new(0),
        }
    }

    /// Records a negotiation and returns the (connection id, token) pair. With negotiate
    /// version 0 the token is the connection id. A `stateful` connection (stateful reconnect)
    /// on a WebSocket may resume on later sockets.
    pub fn create(
        &self,
        hub: HubName,
        version: u32,
        stateful: bool,
    ) -> Result<(ConnectionId, String), Full> {
        let mut table = self.table.lock();
        if table.waiting >= self.max_waiting {
            let now = Instant::now();
            if now.duration_since(table.swept) >= FULL_SWEEP_EVERY {
                table.sweep(now);
            }
            if table.waiting >= self.max_waiting {
                self.refused.fetch_add(1, Ordering::Relaxed);
                table.refused_unlogged += 1;
                // One line per period, with the count: a flood must not flood the log too.
                if table
                    .logged
                    .is_none_or(|at| now.duration_since(at) >= REFUSALS_LOG_EVERY)
                {
                    tracing::warn!(
                        limit = self.max_waiting,
                        refused = table.refused_unlogged,
                        "negotiate refused: too many negotiated connections wait for their transport (--max-pending-negotiations)"
                    );
                    table.refused_unlogged = 0;
                    table.logged = Some(now);
                }
                return Err(Full);
            }
        }
        let connection_id = ConnectionId::random();
        let token = if version >= 1 {
            random_id()
        } else {
            connection_id.to_string()
        };
        table.by_token.insert(
            token.clone(),
            Entry {
                hub,
                connection_id: connection_id.clone(),
                created: Instant::now(),
                stateful,
                state: State::Waiting { early: None },
            },
        );
        table.waiting += 1;
        Ok((connection_id, token))
    }

    /// Gives a negotiated connection its transport.
    pub fn start(
        self: &Arc<Self>,
        hub: &HubName,
        token: &str,
        transport: Transport,
    ) -> Result<Started, StartError> {
        let mut table = self.table.lock();
        let entry = table
            .by_token
            .get_mut(token)
            .filter(|e| &e.hub == hub)
            .ok_or(StartError::Unknown)?;
        let early = match &mut entry.state {
            State::Waiting { early } => early.take(),
            State::WebSocket { .. } if transport == Transport::WebSockets => {
                return Err(StartError::InUse);
            }
            State::Http { transport: t, .. } if *t == transport => return Err(StartError::InUse),
            State::Ended { .. } => return Err(StartError::Unknown),
            State::WebSocket { .. } | State::Http { .. } => {
                return Err(StartError::OtherTransport);
            }
        };
        let connection_id = entry.connection_id.clone();
        let mut attachments = None;
        let (incoming, polls) = match transport {
            Transport::WebSockets => {
                let resumer = entry.stateful.then(|| {
                    let (resumer, receiver) = Resumer::new();
                    attachments = Some(receiver);
                    resumer
                });
                entry.state = State::WebSocket { resumer };
                (None, None)
            }
            Transport::ServerSentEvents | Transport::LongPolling => {
                let (sender, incoming) = early.unwrap_or_else(inbox);
                let polls = (transport == Transport::LongPolling).then(Polls::new);
                entry.state = State::Http {
                    transport,
                    inbox: sender.clone(),
                    polls: polls.clone(),
                };
                (Some((sender, incoming)), polls)
            }
        };
        table.waiting -= 1;
        Ok(Started {
            connection_id,
            lease: Lease {
                connections: self.clone(),
                token: token.to_owned(),
            },
            incoming,
            polls,
            attachments,
        })
    }

    /// Records a connection that moved here from another server on a WebSocket (stateful
    /// reconnect across servers), under its token: its later sockets resume here.
    pub fn adopt(
        self: &Arc<Self>,
        hub: &HubName,
        token: &str,
        connection_id: ConnectionId,
    ) -> (Lease, Attachments<websocket::Incoming, websocket::Outgoing>) {
        let (resumer, attachments) = Resumer::new();
        // The session takes sockets from the start: its client chose stateful reconnect on
        // its first server.
        attachments.open();
        let mut table = self.table.lock();
        table.remove(token);
        table.by_token.insert(
            token.to_owned(),
            Entry {
                hub: hub.clone(),
                connection_id,
                created: Instant::now(),
                stateful: true,
                state: State::WebSocket {
                    resumer: Some(resumer),
                },
            },
        );
        let lease = Lease {
            connections: self.clone(),
            token: token.to_owned(),
        };
        (lease, attachments)
    }

    /// Where a new socket for `token` goes if its connection can resume on it (stateful
    /// reconnect, and its session still takes sockets).
    pub fn resumer(&self, hub: &HubName, token: &str) -> Option<Resumer> {
        let table = self.table.lock();
        match &table.by_token.get(token).filter(|e| &e.hub == hub)?.state {
            State::WebSocket {
                resumer: Some(resumer),
            } if resumer.is_open() => Some(resumer.clone()),
            _ => None,
        }
    }

    /// What a poll, POST or DELETE finds at `token`.
    pub fn find(&self, hub: &HubName, token: &str) -> Found {
        let mut table = self.table.lock();
        let Some(entry) = table.by_token.get_mut(token).filter(|e| &e.hub == hub) else {
            return Found::Unknown;
        };
        match &mut entry.state {
            State::Waiting { early } => Found::Waiting(early.get_or_insert_with(inbox).0.clone()),
            State::WebSocket { .. } => Found::WebSocket,
            State::Http {
                transport,
                inbox,
                polls,
            } => Found::Http {
                transport: *transport,
                inbox: inbox.clone(),
                polls: polls.clone(),
            },
            State::Ended { polls, .. } => Found::Ended(polls.clone()),
        }
    }

    /// Whether a negotiation with this token exists for `hub` (whatever its state).
    pub fn exists(&self, hub: &HubName, token: &str) -> bool {
        !matches!(self.find(hub, token), Found::Unknown)
    }

    /// Forgets negotiations whose transport never came, and ended connections kept for their
    /// last poll.
    pub fn sweep(&self) {
        self.table.lock().sweep(Instant::now());
    }

    /// Entries waiting for their transport.
    pub fn waiting(&self) -> usize {
        self.table.lock().waiting
    }

    /// The cap on entries waiting for their transport.
    pub fn max_waiting(&self) -> usize {
        self.max_waiting
    }

    /// Negotiations refused so far because too many were waiting.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> HubName {
        HubName::new("chat")
    }

    #[test]
    fn a_token_takes_one_transport_once_and_is_released_with_its_lease() {
        let n = Arc::new(Connections::new(10));
        let (id, token) = n.create(hub(), 1, false).expect("room");
        assert_ne!(id.as_str(), token, "version 1 has a separate secret token");
        let started = n
            .start(&hub(), &token, Transport::WebSockets)
            .expect("started");
        assert_eq!(started.connection_id, id);
        assert_eq!(
            n.start(&hub(), &token, Transport::WebSockets).err(),
            Some(StartError::InUse)
        );
        assert_eq!(
            n.start(&hub(), &token, Transport::ServerSentEvents).err(),
            Some(StartError::OtherTransport)
        );
        drop(started);
        assert_eq!(
            n.start(&hub(), &token, Transport::WebSockets).err(),
            Some(StartError::Unknown)
        );
    }

    #[test]
    fn version_0_uses_the_connection_id_as_token() {
        let n = Arc::new(Connections::new(10));
        let (id, token) = n.create(hub(), 0, false).expect("room");
        assert_eq!(id.as_str(), token);
        assert_eq!(
            n.start(&HubName::new("other"), &token, Transport::WebSockets)
                .err(),
            Some(StartError::Unknown)
        );
    }

    #[test]
    fn only_connections_waiting_for_their_transport_count_against_the_cap() {
        let n = Arc::new(Connections::new(2));
        let (_, first) = n.create(hub(), 1, false).expect("room");
        n.create(hub(), 1, false).expect("room");
        assert_eq!(n.create(hub(), 1, false), Err(Full));
        assert_eq!(n.refused(), 1);
        // A connection that got its transport no longer waits.
        let started = n
            .start(&hub(), &first, Transport::LongPolling)
            .expect("started");
        assert_eq!(n.waiting(), 1);
        n.create(hub(), 1, false).expect("room again");
        drop(started);
        assert_eq!(n.waiting(), 2);
    }

    #[test]
    fn an_ended_long_polling_connection_is_kept_for_its_last_poll() {
        let n = Arc::new(Connections::new(10));
        let (_, token) = n.create(hub(), 1, false).expect("room");
        let started = n
            .start(&hub(), &token, Transport::LongPolling)
            .expect("started");
        assert!(matches!(
            n.find(&hub(), &token),
            Found::Http {
                transport: Transport::LongPolling,
                polls: Some(_),
                ..
            }
        ));
        drop(started);
        assert!(matches!(n.find(&hub(), &token), Found::Ended(_)));
    }

    #[tokio::test]
    async fn posts_before_the_transport_wait_for_it() {
        let n = Arc::new(Connections::new(10));
        let (_, token) = n.create(hub(), 1, false).expect("room");
        let Found::Waiting(early) = n.find(&hub(), &token) else {
            panic!("waiting");
        };
        early
            .send(bytes::Bytes::from_static(b"first"))
            .await
            .expect("taken");
        let started = n
            .start(&hub(), &token, Transport::ServerSentEvents)
            .expect("started");
        let (_, mut incoming) = started.incoming.expect("an inbox");
        use futures_util::StreamExt;
        assert_eq!(
            incoming.next().await.and_then(Result::ok),
            Some(bytes::Bytes::from_static(b"first"))
        );
    }
}
