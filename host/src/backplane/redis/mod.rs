//! The Redis backplane: several servers sharing one Redis act as one.
//!
//! # How it works
//! - A send is delivered to this server's recipients at once, and published once per channel
//!   it needs ([`Channels::for_target`]) for the other servers, as a compact [`WireMessage`]
//!   (a send to a connection that lives here is not published at all). Each server delivers
//!   what it receives to its own recipients, encoding the frame once per protocol.
//! - A server subscribes only to what it has local members for: a hub's `all` channel while it
//!   has connections of that hub, each local connection's channel, the channels of groups and
//!   users with local members ([`subscriber`]). Subscriptions are confirmed before a join
//!   completes.
//! - Group changes for a connection on another server travel on the internal groups channel;
//!   the server holding the connection applies them and acknowledges ([`groups`]).
//! - Publishing uses one connection, with queued messages pipelined together ([`publisher`]);
//!   subscriptions use a dedicated pub/sub connection; over plain TCP both are the backplane's
//!   own sockets, without a driver task between them and their users ([`direct`]).
//! - Every packet names its sender and carries a sequence number
//!   ([`wire`](crate::backplane::wire)): a server skips its own packets and drops duplicates,
//!   so nothing is delivered twice, even when a pipeline that failed half-way is retried.
//! - A connection of stateful reconnect whose client comes back to another server moves there
//!   ([`moves`], and [`crate::types::Claim`] for the steps): while it moves, it takes this
//!   server's own sends back from Redis like everyone else's (they are not skipped for it), so
//!   both servers see one order, which the new server's marker cuts in two.
//! - If Redis goes away nothing crashes: this server's clients keep being served, what cannot
//!   reach other servers is counted and logged once per outage ([`health`]), the link is retried
//!   with a short backoff, and every subscription is restored when it is back.
//!
//! The bookkeeping talks to Redis through a small seam ([`broker`]): [`client::RedisBroker`] in
//! production, [`memory::MemoryBroker`] in tests.

pub mod broker;
pub mod client;
pub mod cluster;
mod direct;
mod groups;
mod health;
pub mod memory;
mod moves;
mod publisher;
mod resp;
mod seen;
mod subscriber;
#[cfg(test)]
mod test_redis;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::channels::Channels;
use super::wire::{self, WireMessage};
use super::{Backplane, BackplaneError, BackplaneStats, Claimed, Movers};
use crate::redisdb::{Commands, Keyspace};
use crate::registry::{LocalRegistry, Source};
use crate::types::{
    Answered, Envelope, GroupChange, Handover, HubName, InterestChange, LogPos, MoveOrder, Offer,
    Question, Target,
};
use broker::Broker;
pub use client::{RedisBroker, RedisSetupError};
pub use cluster::ClusterBroker;
use groups::PendingAcks;
use health::Health;
use moves::Moves;
use publisher::{Outgoing, PublishQueue};
use seen::Seen;
use subscriber::Subscriptions;

/// Settings of the Redis backplane.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// Channel prefix (SignalR's "AppName").
    pub prefix: String,
    /// How long a group change for a connection on another server waits for its acknowledgement.
    pub ack_timeout: Duration,
    /// Durable reconnect: how long each hub's log keeps what was published on its channels
    /// (`None`: no log).
    pub log: Option<Duration>,
}

/// This server on the backplane.
struct ServerId {
    /// Random, in every packet's header.
    origin: u64,
    /// The same in hex: the name of this server's ack channel.
    name: String,
}

struct Inner<B: Broker> {
    broker: B,
    channels: Channels,
    server: ServerId,
    registry: Arc<LocalRegistry>,
    queue: PublishQueue,
    subscriptions: Subscriptions<B::Link>,
    acks: PendingAcks,
    moves: Moves,
    ack_timeout: Duration,
    /// How long the hubs' logs keep packets (durable reconnect), if they are kept.
    log: Option<Duration>,
    health: Health,
    stats: BackplaneStats,
    seen: Mutex<Seen>,
    shutdown: CancellationToken,
}

/// The Redis backplane. Cheap to clone.
pub struct RedisBackplane<B: Broker = RedisBroker> {
    inner: Arc<Inner<B>>,
}

impl<B: Broker> Clone for RedisBackplane<B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl RedisBackplane<RedisBroker> {
    /// Connects to Redis at `url` (`redis://[:password@]host:port[/db]`, or `rediss://…` for
    /// TLS), or starts trying to, and spawns the publisher and subscriber tasks.
    ///
    /// Fails only for what retrying cannot fix: a malformed URL or rejected credentials. An
    /// unreachable Redis is not an error: the server starts, is not ready, and joins when Redis
    /// comes up.
    pub async fn start(
        url: &str,
        config: RedisConfig,
        registry: Arc<LocalRegistry>,
        shutdown: CancellationToken,
    ) -> Result<Self, RedisSetupError> {
        let broker = RedisBroker::open(url).await?;
        Ok(Self::with_broker(
            broker,
            Keyspace::single(&config.prefix),
            config.ack_timeout,
            config.log,
            registry,
            shutdown,
        ))
    }

    /// The multiplexed command connection, shared with the Redis state store.
    pub fn commands(&self) -> Commands {
        self.inner.broker.commands()
    }
}

impl RedisBackplane<ClusterBroker> {
    /// [`start`](RedisBackplane::start) on the Redis Cluster that `nodes` (seed URLs, with the
    /// same credentials and TLS) belong to, with sharded pub/sub.
    pub async fn start_cluster(
        nodes: &[String],
        config: RedisConfig,
        registry: Arc<LocalRegistry>,
        shutdown: CancellationToken,
    ) -> Result<Self, RedisSetupError> {
        let broker = ClusterBroker::open(nodes).await?;
        Ok(Self::with_broker(
            broker,
            Keyspace::cluster(&config.prefix),
            config.ack_timeout,
            config.log,
            registry,
            shutdown,
        ))
    }

    /// The multiplexed command connection, shared with the state store and presence.
    pub fn commands(&self) -> Commands {
        self.inner.broker.commands()
    }
}

impl<B: Broker> RedisBackplane<B> {
    /// The backplane over any broker; spawns its publisher and subscriber tasks.
    pub fn with_broker(
        broker: B,
        keys: Keyspace,
        ack_timeout: Duration,
        log: Option<Duration>,
        registry: Arc<LocalRegistry>,
        shutdown: CancellationToken,
    ) -> Self {
        let origin = rand::random::<u64>();
        let server = ServerId {
            origin,
            name: format!("{origin:016x}"),
        };
        let channels = Channels::for_keyspace(keys);
        let always = [
            channels.group_commands(),
            channels.acks(&server.name),
            channels.returns(&server.name),
        ];
        let (queue, receiver) = PublishQueue::new();
        let inner = Arc::new(Inner {
            health: Health::new(broker.describe()),
            broker,
            subscriptions: Subscriptions::new(always),
            channels,
            server,
            registry,
            queue,
            acks: PendingAcks::default(),
            moves: Moves::default(),
            ack_timeout,
            log,
            stats: BackplaneStats::default(),
            seen: Mutex::new(Seen::default()),
            shutdown,
        });
        tokio::spawn(publisher::run(inner.clone(), receiver));
        tokio::spawn(subscriber::run(inner.clone()));
        Self { inner }
    }

    /// The names of its keys and channels (hash-tagged per hub on a cluster), for the state
    /// store beside it.
    pub fn keyspace(&self) -> &Keyspace {
        self.inner.channels.keyspace()
    }

    /// This server's id on the backplane (the name of its ack channel).
    pub fn server_id(&self) -> &str {
        &self.inner.server.name
    }
}

impl<B: Broker> Inner<B> {
    /// Encodes and queues messages for the publisher; what cannot be queued is counted.
    fn send(&self, messages: Vec<(String, WireMessage)>) {
        self.send_if(self.stats.is_connected(), messages);
    }

    /// [`send`](Self::send) with the link's state as the caller saw it (a send delivered here
    /// decided by it whether a copy comes back).
    fn send_if(&self, connected: bool, messages: Vec<(String, WireMessage)>) {
        let count = messages.len() as u64;
        if count == 0 {
            return;
        }
        if !connected {
            self.health
                .dropped(&self.stats, count, "Redis is not connected");
            return;
        }
        let mut outgoing = Vec::with_capacity(messages.len());
        for (channel, message) in messages {
            // Durable reconnect: what a hub's connections may be sent goes to its log too.
            let log = self
                .log
                .and(message.logged_hub())
                .map(|hub| self.channels.keyspace().log(hub));
            match message.encode_body() {
                Ok(body) => outgoing.push(Outgoing { channel, body, log }),
                Err(e) => tracing::error!("cannot encode a backplane message: {e}"),
            }
        }
        if let Err(refused) = self.queue.push(outgoing) {
            self.health.dropped(
                &self.stats,
                refused.len() as u64,
                "the publish queue is full",
            );
        }
    }

    /// Handles one payload from the subscriber link.
    fn receive(self: &Arc<Self>, payload: &[u8]) {
        let (header, body) = match wire::split(payload) {
            Ok(parts) => parts,
            Err(e) => {
                tracing::warn!("ignored a backplane message: {e}");
                return;
            }
        };
        // Ours: delivered here when it was published, except to connections that take their
        // sends in the backplane's order (moving between servers), and our own markers.
        let echo = header.is_some_and(|h| h.origin == self.server.origin);
        if echo && !self.registry.wants_echoes() {
            return;
        }
        if let Some(header) = header
            && !self.seen.lock().accept(header.origin, header.seq)
        {
            tracing::debug!(
                origin = header.origin,
                seq = header.seq,
                "dropped a duplicate"
            );
            return;
        }
        let message = match wire::decode_body(body) {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!("ignored a backplane message: {e}");
                return;
            }
        };
        let source = if echo {
            Source::Echo
        } else {
            BackplaneStats::add(&self.stats.received, 1);
            Source::Only
        };
        // Durable reconnect: where this packet is in its hub's log.
        let at = header
            .filter(|_| self.log.is_some())
            .map(|h| LogPos::Entry {
                origin: h.origin,
                seq: h.seq,
            });
        match message {
            WireMessage::Send(envelope) => match at {
                Some(at) => {
                    self.registry.deliver_logged(&envelope, source, at);
                }
                None => {
                    self.registry.deliver(&envelope, source);
                }
            },
            WireMessage::Marker {
                hub,
                connection,
                claim,
            } => self.registry.marker(&hub, &connection, claim),
            // Only its sender acts on it.
            WireMessage::Switched { hub, connection } => {
                if echo {
                    self.registry.switched(&hub, &connection);
                }
            }
            // The rest of our own packets were for other servers.
            _ if echo => {}
            WireMessage::GroupCommand {
                id,
                reply_to,
                change,
            } => groups::serve(self, id, reply_to, &change),
            WireMessage::Ack { id } => self.acks.complete(id),
            WireMessage::Ask(question) => {
                // Only the server holding the connection listens on its channel.
                self.registry.deliver_question_logged(&question, at);
            }
            WireMessage::Answer(answered) => {
                self.registry.asks().resolve(answered);
            }
            WireMessage::Claim(claim) => moves::claimed(self, claim),
            WireMessage::Held { claim } => self.moves.held(claim),
            WireMessage::Offer(offer) => self.moves.offered(offer),
            WireMessage::Handover(handover) => self.moves.handed_over(handover),
        }
    }

    /// Sends `message` to the server that made the claim of `order`, on its return channel.
    fn answer_claim(&self, order: &MoveOrder, message: WireMessage) {
        let channel = self.channels.returns(&order.claimant);
        self.send(vec![(channel, message)]);
    }

    /// The copies of a send other servers need: one per channel, leaving out connections that
    /// live here and took it already (`direct`).
    fn remote_copies(
        &self,
        envelope: &Envelope,
        direct: &dyn Fn(&str) -> bool,
    ) -> Vec<(String, WireMessage)> {
        self.channels
            .for_target(&envelope.hub, &envelope.target)
            .into_iter()
            .filter(|(_, target)| !matches!(target, Target::Connection(id) if direct(id)))
            .map(|(channel, target)| {
                let copy = Envelope {
                    hub: envelope.hub.clone(),
                    target,
                    method: envelope.method.clone(),
                    arguments: envelope.arguments.clone(),
                };
                (channel, WireMessage::Send(copy))
            })
            .collect()
    }
}

impl<B: Broker> Backplane for RedisBackplane<B> {
    fn publish(&self, envelope: Envelope) {
        let inner = &self.inner;
        // Without a link no copy comes back: every local recipient takes it now. Read once, so
        // the delivery and the copy agree.
        let connected = inner.stats.is_connected();
        let source = if connected {
            Source::Local
        } else {
            Source::Only
        };
        // One look at the registry for both: a connection switching to the backplane's order
        // (to move) does so before this delivery or after its copies are queued, never
        // between, so it gets the send exactly once.
        inner
            .registry
            .deliver_then(&envelope, source, None, |direct| {
                inner.send_if(connected, inner.remote_copies(&envelope, direct));
            });
    }

    fn change_remote_group(
        &self,
        change: GroupChange,
    ) -> BoxFuture<'static, Result<(), BackplaneError>> {
        Box::pin(groups::request(self.inner.clone(), change))
    }

    fn update_interest(&self, changes: Vec<InterestChange>) -> BoxFuture<'_, ()> {
        Box::pin(
            self.inner
                .subscriptions
                .update(&self.inner.channels, changes),
        )
    }

    fn ask(&self, question: Question) {
        let inner = &self.inner;
        if inner.registry.deliver_question(&question) {
            return;
        }
        let channel = inner
            .channels
            .connection(&question.hub, &question.connection);
        inner.send(vec![(channel, WireMessage::Ask(question))]);
    }

    fn answer(&self, answered: Answered) {
        let inner = &self.inner;
        match Question::asker(&answered.invocation_id) {
            Some(server) if server == inner.server.name => {
                inner.registry.asks().resolve(answered);
            }
            Some(server) => {
                let channel = inner.channels.returns(server);
                inner.send(vec![(channel, WireMessage::Answer(answered))]);
            }
            None => tracing::debug!(
                invocation_id = answered.invocation_id,
                "an answer to no question of a server"
            ),
        }
    }

    fn server_name(&self) -> &str {
        &self.inner.server.name
    }

    fn is_ready(&self) -> bool {
        self.inner.stats.is_connected()
    }

    fn stats(&self) -> &BackplaneStats {
        &self.inner.stats
    }

    fn kind(&self) -> &'static str {
        self.inner.broker.kind()
    }

    fn registry(&self) -> &Arc<LocalRegistry> {
        &self.inner.registry
    }

    fn claim(
        &self,
        hub: &HubName,
        token: &str,
        user: Option<String>,
    ) -> BoxFuture<'static, Option<Claimed>> {
        Box::pin(moves::claim(
            self.inner.clone(),
            hub.clone(),
            token.to_owned(),
            user,
        ))
    }

    fn deliver_in_order(&self, hub: &HubName, connection: &str) -> bool {
        let inner = &self.inner;
        inner.registry.deliver_in_order(hub, connection, || {
            let switched = WireMessage::Switched {
                hub: hub.clone(),
                connection: connection.to_owned(),
            };
            inner.send(vec![(inner.channels.connection(hub, connection), switched)]);
        })
    }

    fn mark(&self, hub: &HubName, connection: &str, claim: u64) {
        let inner = &self.inner;
        let marker = WireMessage::Marker {
            hub: hub.clone(),
            connection: connection.to_owned(),
            claim,
        };
        inner.send(vec![(inner.channels.connection(hub, connection), marker)]);
    }

    fn hold(&self, order: &MoveOrder) {
        let held = WireMessage::Held { claim: order.claim };
        self.inner.answer_claim(order, held);
    }

    fn offer(&self, order: &MoveOrder, offer: Offer) {
        self.inner.answer_claim(order, WireMessage::Offer(offer));
    }

    fn hand_over(&self, order: &MoveOrder, handover: Handover) {
        self.inner
            .answer_claim(order, WireMessage::Handover(handover));
    }

    fn serve_moves(&self, movers: Arc<dyn Movers>) {
        self.inner.moves.serve(movers);
    }
}
