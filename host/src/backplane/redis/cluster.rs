//! The broker on a Redis Cluster: sharded pub/sub (`SSUBSCRIBE`/`SPUBLISH`, Redis 7+), so each
//! message is carried only by the shard that owns its channel's slot.
//!
//! The `redis` crate routes each command to its slot's shard and follows MOVED and ASK. What it
//! leaves to us:
//! - **Slots that move.** When a slot migrates or its shard fails over, the shard that served it
//!   sends an unprompted `SUNSUBSCRIBE` for each of its channels, and nothing subscribes again
//!   (the next publish would reach nobody). The link's [`pump`] sees it and, for a channel still
//!   wanted, has the [`repair`] task subscribe again, on whichever shard owns the slot now.
//! - **Shards that go away.** When a node's connection drops (a killed master), every wanted
//!   channel is subscribed again once the cluster has a new owner for its slot; until then the
//!   repair task retries with a short backoff.
//! - **Pipelines and scripts keep to one slot** (the cluster refuses CrossSlot ones): publishes
//!   are grouped by hash tag, one pipeline per group, sent concurrently.
//! - **Messages that reach a slot's new owner before its subscribers do.** A master that fails
//!   over by hand holds the publishes it gets meanwhile and then redirects them all to the new
//!   master, before anyone could subscribe there. `SPUBLISH` answers how many subscribers heard
//!   a message: when none did on a channel this server listens on (so at least its own
//!   subscription is missing), the message is published again, after 10 ms and then twice as
//!   long, until it is heard or 1.2 s have passed (then it counts as dropped). Servers that
//!   heard it already drop the copy by its sequence number.
//!
//! A subscription that cannot be made at once (its shard is failing over) is left to the repair
//! task rather than failing the whole link: the other shards keep delivering. The link counts as
//! up while any master answers.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use parking_lot::Mutex;
use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use redis::{ConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::broker::{Broker, BrokerError, Link, LogStart, Payloads, Publication, publish_and_log};
use super::client::{
    IO_TIMEOUT, RedisSetupError, bounded, check_credentials, connection_info, redact,
};
use crate::redisdb::{Commands, hash_tag};

/// Retry bounds of the repair task: short, so a failed-over shard delivers again soon after it
/// has a new master.
const REPAIR_MIN: Duration = Duration::from_millis(50);
const REPAIR_MAX: Duration = Duration::from_millis(1000);
/// After a node's connection dropped, how long before every channel is subscribed again (the
/// crate reconnects and refreshes its slot map meanwhile).
const AFTER_DISCONNECT: Duration = Duration::from_millis(100);
/// How long a publish waits, in all, for subscriptions to come back to a shard that took a slot
/// over, before it counts what reached nobody as dropped; and its first wait. Meanwhile the
/// publisher waits: in order, nothing is published behind them.
const UNHEARD_WAIT: Duration = Duration::from_millis(1200);
const UNHEARD_FIRST_WAIT: Duration = Duration::from_millis(10);
/// Channels per SSUBSCRIBE command.
const SUBSCRIBE_CHUNK: usize = 500;

/// A Redis Cluster as the backplane's broker.
pub struct ClusterBroker {
    /// RESP3, for the subscriber links (pushes need it).
    subscriber: ClusterClient,
    /// The command connection (RESP2: script answers keep the shapes they have on one Redis).
    commands: ClusterConnection,
    /// The channels the live link should be subscribed to.
    listening: Arc<Mutex<HashSet<String>>>,
    for_logs: String,
}

fn builder(nodes: &[ConnectionInfo]) -> ClusterClientBuilder {
    ClusterClientBuilder::new(nodes.to_vec())
        .connection_timeout(IO_TIMEOUT)
        .response_timeout(IO_TIMEOUT)
        .retries(3)
}

/// A connection's settings: a config given to a connection replaces the client's response
/// timeout, so it carries the I/O bounds again.
fn bounded_config() -> ClusterConfig {
    ClusterConfig::new()
        .set_connection_timeout(IO_TIMEOUT)
        .set_response_timeout(IO_TIMEOUT)
}

impl ClusterBroker {
    /// Opens the broker on the cluster that `urls` (seed nodes) belong to. Fails only for what
    /// retrying cannot fix: a malformed URL, URLs that disagree on credentials or TLS, or rejected
    /// credentials. An unreachable cluster is retried later.
    pub async fn open(urls: &[String]) -> Result<Self, RedisSetupError> {
        let for_logs = urls.iter().map(|u| redact(u)).collect::<Vec<_>>().join(",");
        let bad = |reason: String| RedisSetupError::BadCluster {
            urls: for_logs.clone(),
            reason,
        };
        if urls.is_empty() {
            return Err(bad("name at least one node".into()));
        }
        let mut nodes = Vec::with_capacity(urls.len());
        for url in urls {
            match connection_info(url) {
                Ok(info) => nodes.push(info),
                Err(e) => {
                    return Err(bad(format!(
                        "{} is not a valid Redis URL ({e})",
                        redact(url)
                    )));
                }
            }
        }
        let commands_client = builder(&nodes)
            .use_protocol(ProtocolVersion::RESP2)
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let subscriber = builder(&nodes)
            .use_protocol(ProtocolVersion::RESP3)
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let attempt = async {
            let mut con = commands_client.get_async_connection().await?;
            redis::cmd("PING").query_async::<()>(&mut con).await
        };
        check_credentials(attempt, &for_logs).await?;
        let commands = commands_client.get_pending_async_connection_with_config(bounded_config());
        Ok(Self {
            subscriber,
            commands,
            listening: Arc::default(),
            for_logs,
        })
    }

    /// The multiplexed command connection, shared with the state store and presence.
    pub fn commands(&self) -> Commands {
        Commands::Cluster(self.commands.clone())
    }

    /// Publishes `messages`, one pipeline per slot, all at once, and answers those that reached
    /// no subscriber although this server listens on their channel: the shard that owns it had
    /// just taken the slot over (a failover or a migration) and this server's subscription is
    /// not there yet, so other servers' may not be either.
    async fn publish_once<'a>(
        &self,
        messages: Vec<&'a Publication>,
        log_start: LogStart,
    ) -> Result<Vec<&'a Publication>, BrokerError> {
        let sends = by_tag(&messages, |message| message.channel.as_str())
            .into_iter()
            .map(|group| {
                // A hub's channels and log share its slot, so one script does both.
                let logged = publish_and_log("SPUBLISH", group.iter().map(|m| **m), log_start);
                let mut con = self.commands.clone();
                async move {
                    let heard = match logged {
                        Some(invocation) => {
                            bounded(invocation.invoke_async::<Vec<u64>>(&mut con)).await
                        }
                        None => {
                            let mut pipe = redis::pipe();
                            for message in &group {
                                pipe.cmd("SPUBLISH")
                                    .arg(&message.channel)
                                    .arg(message.payload.as_ref());
                            }
                            bounded(pipe.query_async::<Vec<u64>>(&mut con)).await
                        }
                    };
                    (group, heard)
                }
            });
        let mut unheard = Vec::new();
        // Every group is tried; the first failure is reported (the publisher retries the whole
        // batch, and receivers drop the copies).
        for (group, heard) in join_all(sends).await {
            let heard = heard?;
            let listening = self.listening.lock();
            for (message, receivers) in group.into_iter().zip(heard) {
                if receivers == 0 && listening.contains(&message.channel) {
                    unheard.push(*message);
                }
            }
        }
        Ok(unheard)
    }
}

/// `PING` answered by any master: the cluster is there, even while one shard fails over.
async fn ping_any(con: &mut ClusterConnection) -> Result<(), BrokerError> {
    let routing = RoutingInfo::MultiNode((
        MultipleNodeRoutingInfo::AllMasters,
        Some(ResponsePolicy::OneSucceeded),
    ));
    bounded(con.route_command(redis::cmd("PING"), routing))
        .await
        .map(|_| ())
}

/// Splits names into runs that share a hash tag (so a slot), keeping their order within each.
fn by_tag<'a, T>(items: &'a [T], name: impl Fn(&'a T) -> &'a str) -> Vec<Vec<&'a T>> {
    let mut groups: BTreeMap<&str, Vec<&T>> = BTreeMap::new();
    for item in items {
        groups.entry(hash_tag(name(item))).or_default().push(item);
    }
    groups.into_values().collect()
}

impl Broker for ClusterBroker {
    type Link = ClusterLink;

    async fn connect(&self) -> Result<(ClusterLink, Payloads), BrokerError> {
        let (push_sender, pushes) = mpsc::unbounded_channel::<PushInfo>();
        let config = bounded_config().set_push_sender(push_sender);
        let mut connection =
            bounded(self.subscriber.get_async_connection_with_config(config)).await?;
        ping_any(&mut connection).await?;
        // A new link starts with no subscriptions; the backplane makes them all again.
        let wanted = self.listening.clone();
        wanted.lock().clear();
        let stop = CancellationToken::new();
        let (payload_sender, mut payloads) = mpsc::unbounded_channel();
        let (repairs, repair_queue) = mpsc::unbounded_channel();
        tokio::spawn(pump(
            pushes,
            payload_sender,
            wanted.clone(),
            repairs.clone(),
            stop.clone(),
        ));
        tokio::spawn(repair(
            connection.clone(),
            wanted.clone(),
            repair_queue,
            stop.clone(),
        ));
        let link = ClusterLink {
            connection,
            wanted,
            repairs,
            _stop: stop.drop_guard(),
        };
        let stream = futures_util::stream::poll_fn(move |cx| payloads.poll_recv(cx));
        Ok((link, Box::pin(stream)))
    }

    async fn publish(
        &self,
        messages: &[Publication],
        log_start: LogStart,
    ) -> Result<u64, BrokerError> {
        let mut unheard = self
            .publish_once(messages.iter().collect(), log_start)
            .await?;
        let mut wait = UNHEARD_FIRST_WAIT;
        let mut waited = Duration::ZERO;
        while !unheard.is_empty() && waited < UNHEARD_WAIT {
            tokio::time::sleep(wait).await;
            waited += wait;
            wait *= 2;
            unheard = self.publish_once(unheard, log_start).await?;
        }
        if !unheard.is_empty() {
            tracing::warn!(
                messages = unheard.len(),
                "messages reached no subscriber on the cluster, not even this server's"
            );
        }
        Ok(unheard.len() as u64)
    }

    async fn check(&self) -> Result<(), BrokerError> {
        ping_any(&mut self.commands.clone()).await
    }

    fn describe(&self) -> &str {
        &self.for_logs
    }

    fn kind(&self) -> &'static str {
        "redis-cluster"
    }
}

/// What the repair task is asked to subscribe again.
enum Repair {
    /// These channels (their slot moved, or subscribing failed).
    Channels(Vec<String>),
    /// Every wanted channel (a node's connection dropped).
    All,
}

/// Subscribes to `channels`, each slot's at once (so a shard that fails over holds up only its
/// own); the channels subscribed, and those that failed.
async fn subscribe_all(
    connection: &ClusterConnection,
    channels: &[String],
) -> (Vec<String>, Vec<String>) {
    let groups = by_tag(channels, String::as_str);
    let chunks = groups
        .iter()
        .flat_map(|group| group.chunks(SUBSCRIBE_CHUNK))
        .map(|chunk| {
            let mut connection = connection.clone();
            async move { (chunk, bounded(connection.ssubscribe(chunk)).await) }
        });
    let (mut done, mut failed) = (Vec::new(), Vec::new());
    for (chunk, result) in join_all(chunks).await {
        let names = chunk.iter().map(|c| (*c).clone());
        match result {
            Ok(()) => done.extend(names),
            Err(e) => {
                tracing::debug!("subscribing on the cluster failed ({e})");
                failed.extend(names);
            }
        }
    }
    (done, failed)
}

/// A subscriber connection to every shard.
pub struct ClusterLink {
    connection: ClusterConnection,
    /// The channels this link should be subscribed to; the pump and the repair task read it.
    wanted: Arc<Mutex<HashSet<String>>>,
    repairs: mpsc::UnboundedSender<Repair>,
    /// Ends the pump and the repair task with the link.
    _stop: DropGuard,
}

impl Drop for ClusterLink {
    fn drop(&mut self) {
        // Without a link nothing is subscribed: publishes must not wait for their echo.
        self.wanted.lock().clear();
    }
}

impl Link for ClusterLink {
    async fn subscribe(&mut self, channels: &[String]) -> Result<(), BrokerError> {
        self.wanted.lock().extend(channels.iter().cloned());
        let (_, failed) = subscribe_all(&self.connection, channels).await;
        if !failed.is_empty() {
            tracing::warn!(
                channels = failed.len(),
                "cannot subscribe on the cluster yet; retrying in the background"
            );
            let _ = self.repairs.send(Repair::Channels(failed));
        }
        Ok(())
    }

    async fn unsubscribe(&mut self, channels: &[String]) -> Result<(), BrokerError> {
        {
            let mut wanted = self.wanted.lock();
            for channel in channels {
                wanted.remove(channel);
            }
        }
        for group in by_tag(channels, String::as_str) {
            for chunk in group.chunks(SUBSCRIBE_CHUNK) {
                // A shard that is down has dropped the subscription anyway; one that answers
                // later only sends what no local member wants.
                if let Err(e) = bounded(self.connection.sunsubscribe(chunk)).await {
                    tracing::debug!("cannot unsubscribe on the cluster ({e})");
                }
            }
        }
        Ok(())
    }

    async fn ping(&mut self) -> Result<(), BrokerError> {
        ping_any(&mut self.connection).await
    }
}

/// Sorts what the cluster pushes: messages go to the backplane; a channel dropped by its shard
/// while still wanted goes to the repair task, as does every channel when a node disconnects.
async fn pump(
    mut pushes: mpsc::UnboundedReceiver<PushInfo>,
    payloads: mpsc::UnboundedSender<Bytes>,
    wanted: Arc<Mutex<HashSet<String>>>,
    repairs: mpsc::UnboundedSender<Repair>,
    stop: CancellationToken,
) {
    loop {
        let push = tokio::select! {
            push = pushes.recv() => push,
            () = stop.cancelled() => None,
        };
        let Some(PushInfo { kind, data }) = push else {
            return;
        };
        match kind {
            PushKind::SMessage | PushKind::Message => {
                if let Some(Value::BulkString(payload)) = data.into_iter().nth(1)
                    && payloads.send(Bytes::from(payload)).is_err()
                {
                    return;
                }
            }
            PushKind::SUnsubscribe => {
                let Some(Value::BulkString(channel)) = data.into_iter().next() else {
                    continue;
                };
                let Ok(channel) = String::from_utf8(channel) else {
                    continue;
                };
                if wanted.lock().contains(&channel) {
                    tracing::info!(
                        channel,
                        "the cluster moved a channel's slot; subscribing again"
                    );
                    let _ = repairs.send(Repair::Channels(vec![channel]));
                }
            }
            PushKind::Disconnection => {
                tracing::info!("a cluster node's connection dropped; subscribing again");
                let _ = repairs.send(Repair::All);
            }
            _ => {}
        }
    }
}

/// Subscribes again what the pump or a failed subscribe hands it, retrying with a backoff until
/// the cluster takes it (a shard failing over has no master for a while).
async fn repair(
    mut connection: ClusterConnection,
    wanted: Arc<Mutex<HashSet<String>>>,
    mut queue: mpsc::UnboundedReceiver<Repair>,
    stop: CancellationToken,
) {
    let mut pending: HashSet<String> = HashSet::new();
    let mut backoff = REPAIR_MIN;
    loop {
        // Wait for work; while some is pending, only as long as the backoff.
        let wait = async {
            if pending.is_empty() {
                queue.recv().await
            } else {
                tokio::time::timeout(backoff, queue.recv())
                    .await
                    .unwrap_or(Some(Repair::Channels(Vec::new())))
            }
        };
        let next = tokio::select! {
            next = wait => next,
            () = stop.cancelled() => return,
        };
        let mut everything = false;
        let mut take = |repair: Repair, pending: &mut HashSet<String>| match repair {
            Repair::Channels(channels) => pending.extend(channels),
            Repair::All => everything = true,
        };
        match next {
            Some(repair) => take(repair, &mut pending),
            None => return,
        }
        while let Ok(repair) = queue.try_recv() {
            take(repair, &mut pending);
        }
        if everything {
            tokio::select! {
                () = tokio::time::sleep(AFTER_DISCONNECT) => {}
                () = stop.cancelled() => return,
            }
            pending.extend(wanted.lock().iter().cloned());
        }
        // Only what is still wanted.
        let todo: Vec<String> = {
            let wanted = wanted.lock();
            pending.retain(|c| wanted.contains(c));
            pending.iter().cloned().collect()
        };
        let pass = subscribe_all(&connection, &todo);
        let Some((done, failed)) = stop.run_until_cancelled(pass).await else {
            return;
        };
        for channel in &done {
            pending.remove(channel);
        }
        // Channels given up while they were being subscribed again are left again.
        let unwanted: Vec<String> = {
            let wanted = wanted.lock();
            done.into_iter().filter(|c| !wanted.contains(c)).collect()
        };
        for group in by_tag(&unwanted, String::as_str) {
            let _ = bounded(connection.sunsubscribe(group)).await;
        }
        if !failed.is_empty() {
            // The crate refreshes its slot map after a failed command; the next try follows it.
            backoff = (backoff * 2).min(REPAIR_MAX);
        } else {
            if !todo.is_empty() {
                tracing::info!(channels = todo.len(), "cluster subscriptions restored");
            }
            backoff = REPAIR_MIN;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::by_tag;

    #[test]
    fn publishes_are_grouped_by_slot_in_order() {
        let names = ["{a}:1", "{b}:1", "{a}:2", "{b}:2", "{a}:3"].map(String::from);
        let groups = by_tag(&names, String::as_str);
        assert_eq!(
            groups,
            vec![
                vec![&names[0], &names[2], &names[4]],
                vec![&names[1], &names[3]],
            ]
        );
    }
}
