//! The Redis backplane: several servers sharing one Redis act as one.
//!
//! # How it works
//! - Every send is published once per channel it needs ([`Channels::for_target`]) as a compact
//!   [`WireMessage`]; every server, this one included, receives what it subscribed to and
//!   delivers it to its local recipients, encoding the frame once.
//! - A server subscribes only to what it has local members for: a hub's `all` channel while it
//!   has connections of that hub, each local connection's channel, the channels of groups and
//!   users with local members. Subscriptions are confirmed before a join completes.
//! - Group changes for a connection on another server travel on the internal groups channel; the
//!   server holding the connection applies them and acknowledges on the sender's ack channel.
//! - Publishing uses one multiplexed connection, with queued messages pipelined together;
//!   subscriptions use a dedicated pub/sub connection.
//! - If Redis goes away nothing crashes: sends are delivered to local clients only and counted
//!   (and logged) as dropped for the other servers, the link is retried with a short backoff,
//!   and every subscription is restored when it is back.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::channels::Channels;
use super::wire::WireMessage;
use super::{Backplane, BackplaneError, BackplaneStats, GroupChange, InterestChange};
use crate::router::{Envelope, LocalRegistry};

/// Longest wait for one Redis round trip before the link counts as broken.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the pub/sub link is checked with a PING.
const HEALTH_INTERVAL: Duration = Duration::from_millis(500);
/// Reconnect backoff bounds: short, so subscriptions are back well within 2 s of Redis.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_millis(500);
/// Messages waiting for the publisher before new ones are dropped.
const PUBLISH_QUEUE: usize = 65_536;
/// Messages pipelined in one round trip.
const PUBLISH_BATCH: usize = 512;
/// Channels per SUBSCRIBE command when restoring.
const SUBSCRIBE_CHUNK: usize = 1000;

/// Settings of the Redis backplane.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://[:password@]host:port[/db]` or `rediss://...` for TLS.
    pub url: String,
    /// Channel prefix (SignalR's "AppName").
    pub prefix: String,
    /// How long a group change for a connection on another server waits for its acknowledgement.
    pub ack_timeout: Duration,
}

/// Why the Redis backplane cannot start.
#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    #[error("--redis {url}: not a valid Redis URL ({reason})")]
    BadUrl { url: String, reason: String },
    #[error("Redis at {url} rejected the credentials: {reason}")]
    Auth { url: String, reason: String },
}

/// A publish waiting for the publisher task.
struct Outgoing {
    items: Vec<(String, Vec<u8>)>,
    /// Delivered locally if the publish fails, so this server's clients still get it.
    envelope: Option<Envelope>,
}

struct Subscriptions {
    /// Every channel this server needs, restored after a reconnect.
    desired: HashSet<String>,
    sink: Option<PubSubSink>,
}

struct Inner {
    client: redis::Client,
    url_for_logs: String,
    channels: Channels,
    server_id: String,
    registry: Arc<LocalRegistry>,
    commands: ConnectionManager,
    outgoing: mpsc::Sender<Outgoing>,
    subscriptions: tokio::sync::Mutex<Subscriptions>,
    acks: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    next_ack: AtomicU64,
    ack_timeout: Duration,
    stats: BackplaneStats,
    /// Drops since the link was lost, reported when it is back.
    outage_drops: AtomicU64,
    shutdown: CancellationToken,
}

/// The Redis backplane. Cheap to clone.
#[derive(Clone)]
pub struct RedisBackplane {
    inner: Arc<Inner>,
}

/// `redis://:secret@host` → `redis://:***@host`, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

impl RedisBackplane {
    /// Connects (or starts trying to) and spawns the publisher and subscriber tasks.
    ///
    /// Fails only for what retrying cannot fix: a malformed URL or rejected credentials. An
    /// unreachable Redis is not an error: the server starts, is not ready, and joins when Redis
    /// comes up.
    pub async fn start(
        config: RedisConfig,
        registry: Arc<LocalRegistry>,
        shutdown: CancellationToken,
    ) -> Result<Self, RedisSetupError> {
        let url_for_logs = redact(&config.url);
        let client =
            redis::Client::open(config.url.as_str()).map_err(|e| RedisSetupError::BadUrl {
                url: url_for_logs.clone(),
                reason: e.to_string(),
            })?;
        check_credentials(&client, &url_for_logs).await?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(IO_TIMEOUT))
            .set_response_timeout(Some(IO_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(BACKOFF_MAX);
        let commands = client
            .get_connection_manager_lazy(manager_config)
            .map_err(|e| RedisSetupError::BadUrl {
                url: url_for_logs.clone(),
                reason: e.to_string(),
            })?;
        let (outgoing, queue) = mpsc::channel(PUBLISH_QUEUE);
        let server_id = crate::connection::ids::random_id();
        let channels = Channels::new(config.prefix);
        let mut desired = HashSet::new();
        desired.insert(channels.group_commands());
        desired.insert(channels.acks(&server_id));
        let inner = Arc::new(Inner {
            client,
            url_for_logs,
            channels,
            server_id,
            registry,
            commands,
            outgoing,
            subscriptions: tokio::sync::Mutex::new(Subscriptions {
                desired,
                sink: None,
            }),
            acks: Mutex::new(HashMap::new()),
            next_ack: AtomicU64::new(1),
            ack_timeout: config.ack_timeout,
            stats: BackplaneStats::default(),
            outage_drops: AtomicU64::new(0),
            shutdown,
        });
        tokio::spawn(publisher(inner.clone(), queue));
        tokio::spawn(subscriber(inner.clone()));
        Ok(Self { inner })
    }

    /// The multiplexed command connection, shared with the Redis state store.
    pub fn commands(&self) -> ConnectionManager {
        self.inner.commands.clone()
    }

    /// This server's id on the backplane.
    pub fn server_id(&self) -> &str {
        &self.inner.server_id
    }
}

/// Fails fast on a wrong password; anything else (Redis down) is left to the reconnect loop.
async fn check_credentials(client: &redis::Client, url: &str) -> Result<(), RedisSetupError> {
    let attempt = async {
        let mut con = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<()>(&mut con).await
    };
    match tokio::time::timeout(IO_TIMEOUT, attempt).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) if is_auth_error(&e) => Err(RedisSetupError::Auth {
            url: url.to_owned(),
            reason: e.to_string(),
        }),
        Ok(Err(e)) => {
            tracing::warn!(
                redis = url,
                "Redis is unreachable ({e}); serving local clients and retrying"
            );
            Ok(())
        }
        Err(_) => {
            tracing::warn!(
                redis = url,
                "Redis did not answer; serving local clients and retrying"
            );
            Ok(())
        }
    }
}

fn is_auth_error(e: &redis::RedisError) -> bool {
    let text = e.to_string();
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || text.contains("NOAUTH")
        || text.contains("WRONGPASS")
        || text.contains("invalid password")
        || text.contains("invalid username-password")
}

impl Inner {
    fn connected(&self) -> bool {
        self.stats.connected.load(Ordering::Relaxed)
    }

    /// Counts messages that cannot reach the other servers, and delivers them here.
    fn drop_remote(&self, envelope: Option<&Envelope>, count: u64, why: &str) {
        if let Some(envelope) = envelope {
            self.registry.deliver(envelope);
        }
        BackplaneStats::add(&self.stats.dropped, count);
        let before = self.outage_drops.fetch_add(count, Ordering::Relaxed);
        if before == 0 {
            tracing::warn!(redis = %self.url_for_logs, "messages are reaching local clients only ({why}); counting them as dropped until Redis is back");
        } else {
            tracing::debug!(dropped = count, "message not published: {why}");
        }
    }

    fn send_wire(&self, items: Vec<(String, Vec<u8>)>, envelope: Option<Envelope>) {
        let count = items.len() as u64;
        if !self.connected() {
            self.drop_remote(envelope.as_ref(), count, "Redis is not connected");
            return;
        }
        if let Err(e) = self.outgoing.try_send(Outgoing { items, envelope }) {
            let outgoing = match e {
                mpsc::error::TrySendError::Full(o) | mpsc::error::TrySendError::Closed(o) => o,
            };
            self.drop_remote(
                outgoing.envelope.as_ref(),
                count,
                "the publish queue is full",
            );
        }
    }

    /// Applies a change of local interests to the pub/sub subscriptions.
    async fn update(&self, changes: Vec<InterestChange>) {
        if changes.is_empty() {
            return;
        }
        let mut subs = self.subscriptions.lock().await;
        let mut subscribe = Vec::new();
        let mut unsubscribe = Vec::new();
        for change in changes {
            match change {
                InterestChange::Subscribe(interest) => {
                    let channel = self.channels.for_interest(&interest);
                    if subs.desired.insert(channel.clone()) {
                        unsubscribe.retain(|c| c != &channel);
                        subscribe.push(channel);
                    }
                }
                InterestChange::Unsubscribe(interest) => {
                    let channel = self.channels.for_interest(&interest);
                    if subs.desired.remove(&channel) {
                        subscribe.retain(|c| c != &channel);
                        unsubscribe.push(channel);
                    }
                }
            }
        }
        let Some(sink) = subs.sink.as_mut() else {
            // Not connected: the reconnect subscribes to everything desired.
            return;
        };
        let result = tokio::time::timeout(IO_TIMEOUT, async {
            if !subscribe.is_empty() {
                sink.subscribe(&subscribe).await?;
            }
            if !unsubscribe.is_empty() {
                sink.unsubscribe(&unsubscribe).await?;
            }
            Ok::<_, redis::RedisError>(())
        })
        .await;
        if !matches!(result, Ok(Ok(()))) {
            // The link is failing; the subscriber loop notices and restores `desired`.
            tracing::debug!("subscription change not confirmed; it is restored on reconnect");
            subs.sink = None;
        }
    }

    fn handle(self: &Arc<Self>, payload: &[u8]) {
        BackplaneStats::add(&self.stats.received, 1);
        let message = match WireMessage::decode(payload) {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!("ignored a backplane message: {e}");
                return;
            }
        };
        match message {
            WireMessage::Send(envelope) => {
                self.registry.deliver(&envelope);
            }
            WireMessage::GroupCommand {
                id,
                reply_to,
                change,
            } => {
                let Some(changes) = self.registry.apply_group_change(&change) else {
                    return; // not ours
                };
                let inner = self.clone();
                tokio::spawn(async move {
                    // Subscribe to the group before acknowledging: the sender's next send to the
                    // group must reach the new member.
                    inner.update(changes).await;
                    match (WireMessage::Ack { id }).encode() {
                        Ok(ack) => {
                            inner.send_wire(vec![(inner.channels.acks(&reply_to), ack)], None)
                        }
                        Err(e) => tracing::error!("cannot encode an ack: {e}"),
                    }
                });
            }
            WireMessage::Ack { id } => {
                if let Some(waiter) = self.acks.lock().remove(&id) {
                    let _ = waiter.send(());
                }
            }
        }
    }
}

/// Drains the publish queue, pipelining what has accumulated into one round trip.
async fn publisher(inner: Arc<Inner>, mut queue: mpsc::Receiver<Outgoing>) {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    loop {
        let first = tokio::select! {
            first = queue.recv() => first,
            () = inner.shutdown.cancelled() => None,
        };
        let Some(first) = first else { return };
        batch.push(first);
        while batch.len() < PUBLISH_BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let mut pipe = redis::pipe();
        let mut count = 0u64;
        for outgoing in &batch {
            for (channel, payload) in &outgoing.items {
                pipe.cmd("PUBLISH")
                    .arg(channel)
                    .arg(payload.as_slice())
                    .ignore();
                count += 1;
            }
        }
        let mut con = inner.commands.clone();
        let mut result = tokio::time::timeout(IO_TIMEOUT, pipe.query_async::<()>(&mut con)).await;
        if matches!(result, Ok(Err(_))) && inner.connected() {
            // A connection error makes the manager reconnect; one retry covers the first
            // publish after Redis came back.
            result = tokio::time::timeout(IO_TIMEOUT, pipe.query_async::<()>(&mut con)).await;
        }
        match result {
            Ok(Ok(())) => BackplaneStats::add(&inner.stats.published, count),
            Ok(Err(e)) => {
                for outgoing in &batch {
                    inner.drop_remote(
                        outgoing.envelope.as_ref(),
                        outgoing.items.len() as u64,
                        &e.to_string(),
                    );
                }
            }
            Err(_) => {
                for outgoing in &batch {
                    inner.drop_remote(
                        outgoing.envelope.as_ref(),
                        outgoing.items.len() as u64,
                        "Redis did not answer",
                    );
                }
            }
        }
        batch.clear();
    }
}

/// Keeps the pub/sub link up: connects, subscribes to every desired channel, dispatches
/// messages, checks the link, and starts over when it breaks.
async fn subscriber(inner: Arc<Inner>) {
    let mut backoff = BACKOFF_MIN;
    let mut lost_at: Option<Instant> = None;
    let mut ever_connected = false;
    loop {
        if inner.shutdown.is_cancelled() {
            return;
        }
        match connect_and_subscribe(&inner).await {
            Ok(stream) if !commands_work(&inner).await => {
                drop(stream);
                inner.subscriptions.lock().await.sink = None;
                tracing::debug!(redis = %inner.url_for_logs, "pub/sub is up but commands are not yet");
            }
            Ok(stream) => {
                backoff = BACKOFF_MIN;
                inner.stats.connected.store(true, Ordering::Relaxed);
                let dropped = inner.outage_drops.swap(0, Ordering::Relaxed);
                if ever_connected {
                    BackplaneStats::add(&inner.stats.reconnects, 1);
                    let down = lost_at.map(|t| t.elapsed()).unwrap_or_default();
                    tracing::info!(redis = %inner.url_for_logs, down_ms = down.as_millis() as u64, dropped, "Redis link restored; subscriptions restored");
                } else {
                    tracing::info!(redis = %inner.url_for_logs, server = %inner.server_id, "joined the Redis backplane");
                }
                ever_connected = true;
                run_link(&inner, stream).await;
                inner.stats.connected.store(false, Ordering::Relaxed);
                inner.subscriptions.lock().await.sink = None;
                if inner.shutdown.is_cancelled() {
                    return;
                }
                lost_at = Some(Instant::now());
                tracing::warn!(redis = %inner.url_for_logs, "lost the Redis link; retrying");
            }
            Err(e) => {
                if lost_at.is_none() {
                    lost_at = Some(Instant::now());
                }
                if is_auth_error(&e) {
                    tracing::error!(redis = %inner.url_for_logs, "Redis rejected the credentials: {e}");
                } else {
                    tracing::debug!(redis = %inner.url_for_logs, "cannot reach Redis: {e}");
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = inner.shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Whether the command connection (publishes, state) answers; asking also makes the connection
/// manager reconnect after an outage, before this server declares itself ready.
async fn commands_work(inner: &Inner) -> bool {
    let mut con = inner.commands.clone();
    for _ in 0..3 {
        let ping = redis::cmd("PING");
        if matches!(
            tokio::time::timeout(IO_TIMEOUT, ping.query_async::<()>(&mut con)).await,
            Ok(Ok(()))
        ) {
            return true;
        }
        tokio::time::sleep(BACKOFF_MIN).await;
    }
    false
}

async fn connect_and_subscribe(inner: &Arc<Inner>) -> redis::RedisResult<redis::aio::PubSubStream> {
    let connect = async {
        let pubsub = inner.client.get_async_pubsub().await?;
        let (mut sink, stream) = pubsub.split();
        let mut subs = inner.subscriptions.lock().await;
        let channels: Vec<String> = subs.desired.iter().cloned().collect();
        for chunk in channels.chunks(SUBSCRIBE_CHUNK) {
            sink.subscribe(chunk).await?;
        }
        subs.sink = Some(sink);
        Ok(stream)
    };
    match tokio::time::timeout(IO_TIMEOUT * 2, connect).await {
        Ok(result) => result,
        Err(_) => Err(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "connecting to Redis timed out",
        ))),
    }
}

/// Dispatches messages until the link breaks (stream ends or a health PING fails).
async fn run_link(inner: &Arc<Inner>, mut stream: redis::aio::PubSubStream) {
    let mut health = tokio::time::interval(HEALTH_INTERVAL);
    health.tick().await;
    loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(message) => inner.handle(message.get_payload_bytes()),
                None => return,
            },
            _ = health.tick() => {
                let mut subs = inner.subscriptions.lock().await;
                let Some(sink) = subs.sink.as_mut() else { return };
                // In subscribed mode PING answers with an array, so accept any value.
                let ping = tokio::time::timeout(IO_TIMEOUT, sink.ping::<redis::Value>()).await;
                if !matches!(ping, Ok(Ok(_))) {
                    return;
                }
            }
            () = inner.shutdown.cancelled() => return,
        }
    }
}

impl Backplane for RedisBackplane {
    fn publish(&self, envelope: Envelope) -> Result<(), BackplaneError> {
        let inner = &self.inner;
        let mut items = Vec::new();
        for (channel, target) in inner.channels.for_target(&envelope.hub, &envelope.target) {
            let message = WireMessage::Send(Envelope {
                hub: envelope.hub.clone(),
                target,
                method: envelope.method.clone(),
                arguments: envelope.arguments.clone(),
            });
            match message.encode() {
                Ok(payload) => items.push((channel, payload)),
                Err(e) => tracing::error!("cannot encode a send: {e}"),
            }
        }
        let connected = inner.connected();
        inner.send_wire(items, Some(envelope));
        if connected {
            Ok(())
        } else {
            Err(BackplaneError::Disconnected)
        }
    }

    fn change_remote_group(
        &self,
        change: GroupChange,
    ) -> BoxFuture<'static, Result<(), BackplaneError>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            if !inner.connected() {
                return Err(BackplaneError::Disconnected);
            }
            let id = inner.next_ack.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            inner.acks.lock().insert(id, tx);
            let command = WireMessage::GroupCommand {
                id,
                reply_to: inner.server_id.clone(),
                change,
            };
            match command.encode() {
                Ok(payload) => {
                    inner.send_wire(vec![(inner.channels.group_commands(), payload)], None)
                }
                Err(e) => tracing::error!("cannot encode a group command: {e}"),
            }
            let acked = tokio::time::timeout(inner.ack_timeout, rx).await;
            inner.acks.lock().remove(&id);
            match acked {
                Ok(Ok(())) => Ok(()),
                _ => Err(BackplaneError::AckTimeout(inner.ack_timeout)),
            }
        })
    }

    fn update_interest(&self, changes: Vec<InterestChange>) -> BoxFuture<'_, ()> {
        Box::pin(self.inner.update(changes))
    }

    fn is_ready(&self) -> bool {
        self.inner.connected()
    }

    fn stats(&self) -> &BackplaneStats {
        &self.inner.stats
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redacts_passwords_in_urls() {
        assert_eq!(
            redact("redis://:secret@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(redact("rediss://user:pw@h"), "rediss://***@h");
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
    }
}
