//! Presence kept in Redis: every server writes its share of each hub, kept alive by heartbeats.
//!
//! # Layout
//! One script (`presence.lua`) does everything, atomically. Per hub, under one hash tag
//! (`{prefix:hub}:presence:…`, so a cluster keeps a hub's presence on one shard):
//! - the totals over every live share, which queries read in O(1): connections (counted per
//!   share holding them, since a connection moving between servers is briefly on two), users
//!   with their connection counts, and each group's members;
//! - each server's share (its connections with their users, its groups' members), so that the
//!   share can be taken out of the totals when the server dies;
//! - when each share dies, a sorted set the heartbeats push forward.
//!
//! A share whose time has passed is dropped by the next write or heartbeat of a live server
//! (every third of the TTL), 500 memberships and connections per script call, calls following
//! one another until it is gone, so that no one script holds Redis up for a large share. A
//! server killed outright stops counting within `ttl` and a third after its last heartbeat.
//!
//! # Writing
//! Shares are written only for hubs whose code reads presence (see [`RedisPresence::count_only`]):
//! the others cost nothing. One task writes everything, in the registry's order: it takes the changes queued since its
//! last write and writes each hub's in one script call. A hub's share is rewritten whole when
//! this server first writes it, after a failed write (Redis was away), and when Redis no longer
//! has it (Redis restarted, or this server was paused past its TTL and dropped): the registry's
//! copy of a share carries the number of the last change it holds, so the changes it already
//! holds are skipped.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{
    Answer, Change, Counted, Feed, Holding, Member, Presence, PresenceError, PresenceStats, Query,
    Shares,
};
use crate::redisdb::{Commands, Keyspace};
use crate::types::HubName;

/// Longest a script call waits for Redis; a hub's call is blocked meanwhile.
const OP_TIMEOUT: Duration = Duration::from_secs(2);

/// Most changes written in one batch (one script call per hub).
const MAX_BATCH: usize = 500;

/// What a write answers: 1 if this server's share is alive (0: rewrite it), shares of dead
/// servers dropped whole, 1 if some remain to drop.
type Outcome = (u8, u64, u8);

/// Connections and memberships of a share rewritten per script call, as many as the script
/// drops of a dead share per call (a few milliseconds of Redis's time).
const REWRITE_CHUNK: usize = 500;

const SCRIPT: &str = include_str!("presence.lua");

/// The keys of a deployment's presence: always hash-tagged per hub, on one Redis too, so the
/// same names serve a cluster.
#[derive(Clone)]
struct Keys(Keyspace);

impl Keys {
    /// The base every key of `hub`'s presence starts with.
    fn base(&self, hub: &HubName) -> String {
        format!("{}:presence", self.0.hub(hub))
    }
}

/// Presence over every server sharing a Redis.
pub struct RedisPresence {
    reader: Reader,
    /// Which hubs are counted, once the runtime says (until then, all).
    counted: Arc<OnceLock<Counted>>,
    stats: Arc<PresenceStats>,
    /// Ends the writer, once it has taken this server's shares out.
    close: parking_lot::Mutex<Option<oneshot::Sender<oneshot::Sender<()>>>>,
}

impl RedisPresence {
    /// Starts writing `registry`'s share as server `server`, with a heartbeat every third of
    /// `ttl`.
    pub fn start(
        connection: Commands,
        prefix: &str,
        server: &str,
        registry: Arc<dyn Shares>,
        ttl: Duration,
        stop: CancellationToken,
    ) -> Self {
        let (feed, changes) = mpsc::unbounded_channel();
        if !registry.feed_presence(feed) {
            tracing::error!("the registry already reports its presence elsewhere");
        }
        let reader = Reader {
            connection,
            keys: Keys(Keyspace::cluster(prefix)),
            script: redis::Script::new(SCRIPT),
        };
        let stats = Arc::new(PresenceStats::default());
        let counted = Arc::new(OnceLock::new());
        let (close, closing) = oneshot::channel();
        let writer = Writer {
            redis: reader.clone(),
            counted: counted.clone(),
            server: server.to_owned(),
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            registry,
            stats: stats.clone(),
            hubs: HashMap::new(),
            healthy: true,
        };
        tokio::spawn(writer.run(changes, ttl / 3, closing, stop));
        Self {
            reader,
            counted,
            stats,
            close: parking_lot::Mutex::new(Some(close)),
        }
    }
}

impl RedisPresence {
    /// Keeps presence only for the hubs `counted` accepts (the runtime's hubs whose code reads
    /// it): changes of others are not written, and their shares expire. Asked again for a hub
    /// whenever its code is replaced. Set once.
    pub fn count_only(&self, counted: Counted) {
        if self.counted.set(counted).is_err() {
            tracing::error!("which hubs presence counts was set twice");
        }
    }
}

impl Presence for RedisPresence {
    fn read(
        &self,
        hub: &HubName,
        query: Query,
    ) -> BoxFuture<'static, Result<Answer, PresenceError>> {
        let reader = self.reader.clone();
        let hub = hub.clone();
        Box::pin(async move {
            match tokio::time::timeout(OP_TIMEOUT, reader.query(&hub, query)).await {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(e)) => Err(PresenceError::Unavailable(e.to_string())),
                Err(_) => Err(PresenceError::Unavailable(format!(
                    "Redis did not answer within {OP_TIMEOUT:?}"
                ))),
            }
        })
    }

    fn stats(&self) -> &PresenceStats {
        &self.stats
    }

    fn close(&self) -> BoxFuture<'static, ()> {
        let close = self.close.lock().take();
        Box::pin(async move {
            let Some(close) = close else {
                return;
            };
            let (done, left) = oneshot::channel();
            if close.send(done).is_ok() {
                let _ = left.await;
            }
        })
    }
}

/// Runs the script; cheap to clone.
#[derive(Clone)]
struct Reader {
    connection: Commands,
    keys: Keys,
    script: redis::Script,
}

impl Reader {
    /// An invocation of operation `op` on `hub`'s presence, to which its arguments are added.
    fn invocation(&self, hub: &HubName, op: &str) -> redis::ScriptInvocation<'_> {
        let base = self.keys.base(hub);
        let mut invocation = self.script.prepare_invoke();
        invocation.key(format!("{base}:servers")).arg(base).arg(op);
        invocation
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: redis::ScriptInvocation<'_>,
    ) -> redis::RedisResult<T> {
        let mut con = self.connection.clone();
        match tokio::time::timeout(OP_TIMEOUT, invocation.invoke_async(&mut con)).await {
            Ok(result) => result,
            Err(_) => Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "Redis did not answer in time",
            ))),
        }
    }

    async fn query(&self, hub: &HubName, query: Query) -> redis::RedisResult<Answer> {
        let (op, arg) = match &query {
            Query::Connections => ("connections", None),
            Query::Users => ("users", None),
            Query::UserConnections(user) => ("user", Some(user)),
            Query::GroupSize(group) => ("size", Some(group)),
            Query::GroupMembers { group, limit } => {
                let mut invocation = self.invocation(hub, "members");
                invocation.arg(group).arg(super::capped(*limit));
                let found: Vec<String> = self.run(invocation).await?;
                let mut members: Vec<Member> = found
                    .chunks_exact(2)
                    .map(|pair| Member {
                        connection: pair[0].clone(),
                        user: Some(pair[1].clone()).filter(|u| !u.is_empty()),
                    })
                    .collect();
                members.sort();
                return Ok(Answer::Members(members));
            }
        };
        let mut invocation = self.invocation(hub, op);
        if let Some(arg) = arg {
            invocation.arg(arg);
        }
        Ok(Answer::Count(self.run(invocation).await?))
    }
}

/// What Redis holds of this server's share of one hub.
#[derive(Debug, Default)]
struct Written {
    /// Whether it holds the share as the registry does (up to `through`); if not, the share is
    /// rewritten whole before anything else.
    current: bool,
    /// The number of the last change it holds.
    through: u64,
}

/// The one task that writes this server's shares.
struct Writer {
    redis: Reader,
    counted: Arc<OnceLock<Counted>>,
    server: String,
    ttl_ms: u64,
    registry: Arc<dyn Shares>,
    stats: Arc<PresenceStats>,
    hubs: HashMap<HubName, Written>,
    /// Whether the last write succeeded (failures are logged once per outage).
    healthy: bool,
}

impl Writer {
    async fn run(
        mut self,
        mut feed: mpsc::UnboundedReceiver<Feed>,
        beat: Duration,
        mut closing: oneshot::Receiver<oneshot::Sender<()>>,
        stop: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(beat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            tokio::select! {
                n = feed.recv_many(&mut batch, MAX_BATCH) => {
                    if n == 0 {
                        return;
                    }
                    self.write(&mut batch).await;
                }
                _ = tick.tick() => self.beat().await,
                done = &mut closing => {
                    self.leave().await;
                    if let Ok(done) = done {
                        let _ = done.send(());
                    }
                    return;
                }
                () = stop.cancelled() => return,
            }
        }
    }

    /// An invocation of `op` on this server's share of `hub` (which lives `ttl` longer), to
    /// which its arguments are added.
    fn on_share(&self, hub: &HubName, op: &str) -> redis::ScriptInvocation<'_> {
        let mut invocation = self.redis.invocation(hub, op);
        invocation.arg(&self.server).arg(self.ttl_ms);
        invocation
    }

    /// Whether `hub`'s presence is kept.
    fn counts(&self, hub: &HubName) -> bool {
        self.counted.get().is_none_or(|counted| counted(hub))
    }

    /// Writes a batch of changes, one script call per hub, then answers its flushes.
    async fn write(&mut self, batch: &mut Vec<Feed>) {
        let mut flushes = Vec::new();
        let mut per_hub: Vec<(HubName, Vec<(u64, Change)>)> = Vec::new();
        let mut reloaded = Vec::new();
        for item in batch.drain(..) {
            match item {
                Feed::Flush(done) => flushes.push(done),
                Feed::Reloaded(hub) => reloaded.push(hub),
                Feed::Change { seq, hub, change } => {
                    match per_hub.iter_mut().find(|(h, _)| *h == hub) {
                        Some((_, changes)) => changes.push((seq, change)),
                        None => per_hub.push((hub, vec![(seq, change)])),
                    }
                }
            }
        }
        for hub in reloaded {
            // Written again whole if it is counted now, left to expire if not.
            let written = self.hubs.entry(hub.clone()).or_default();
            written.current = false;
            if self.counts(&hub) {
                self.rewrite(&hub).await;
            }
        }
        for (hub, changes) in per_hub {
            if !self.counts(&hub) {
                // Remembered, so a version of the hub that reads presence gets its share.
                self.hubs.entry(hub).or_default().current = false;
                continue;
            }
            let written = self.hubs.entry(hub.clone()).or_default();
            let through = written.through;
            let current = written.current;
            let changes: Vec<_> = changes
                .into_iter()
                .filter(|(seq, _)| *seq > through)
                .collect();
            let Some(last) = changes.last().map(|(seq, _)| *seq) else {
                continue;
            };
            if !current {
                // The share copied now holds these changes.
                self.rewrite(&hub).await;
                continue;
            }
            let mut invocation = self.on_share(&hub, "change");
            for (_, change) in &changes {
                add_change(&mut invocation, change);
            }
            match self.redis.run::<Outcome>(invocation).await {
                Ok((1, reaped, more)) => {
                    self.succeeded(&hub, reaped, more).await;
                    PresenceStats::add(&self.stats.writes, 1);
                    self.hubs.entry(hub).or_default().through = last;
                }
                Ok(_) => {
                    tracing::info!(%hub, "Redis had lost this server's presence; rewriting it");
                    self.rewrite(&hub).await;
                }
                Err(e) => self.failed(&hub, &e),
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }

    /// Replaces what Redis holds of this server's share of `hub` with the registry's. A large
    /// share goes in chunks, so no one script holds Redis up for long: the first chunk
    /// replaces the old share, the others add to it.
    async fn rewrite(&mut self, hub: &HubName) {
        let (seq, holdings) = self.registry.share(hub);
        let mut chunks = chunks(&holdings, REWRITE_CHUNK).into_iter();
        let mut invocation = self.on_share(hub, "rewrite");
        for holding in chunks.next().unwrap_or_default() {
            add_holding(&mut invocation, holding);
        }
        let mut outcome = self.redis.run::<Outcome>(invocation).await;
        for chunk in chunks {
            if !matches!(outcome, Ok((1, _, _))) {
                break;
            }
            if let Ok((_, reaped, more)) = outcome {
                self.succeeded(hub, reaped, more).await;
            }
            let mut invocation = self.on_share(hub, "add");
            for holding in chunk {
                add_holding(&mut invocation, holding);
            }
            outcome = self.redis.run::<Outcome>(invocation).await;
        }
        match outcome {
            Ok((1, reaped, more)) => {
                self.succeeded(hub, reaped, more).await;
                PresenceStats::add(&self.stats.rewrites, 1);
                let written = self.hubs.entry(hub.clone()).or_default();
                written.current = true;
                written.through = seq;
            }
            // The share vanished half-way (dropped as expired): the next beat starts again.
            Ok(_) => self.hubs.entry(hub.clone()).or_default().current = false,
            Err(e) => self.failed(hub, &e),
        }
    }

    /// Pushes this server's shares' time of death forward, rewriting those Redis lost.
    async fn beat(&mut self) {
        let hubs: Vec<(HubName, bool)> = self
            .hubs
            .iter()
            .map(|(hub, written)| (hub.clone(), written.current))
            .collect();
        for (hub, current) in hubs {
            if !self.counts(&hub) {
                // Its share (if any) expires; it is written whole if the hub counts again.
                self.hubs.entry(hub).or_default().current = false;
                continue;
            }
            if !current {
                self.rewrite(&hub).await;
                continue;
            }
            let invocation = self.on_share(&hub, "beat");
            PresenceStats::add(&self.stats.heartbeats, 1);
            match self.redis.run::<Outcome>(invocation).await {
                Ok((1, reaped, more)) => self.succeeded(&hub, reaped, more).await,
                Ok(_) => {
                    tracing::warn!(%hub, "this server's presence had expired in Redis (was it paused?); rewriting it");
                    self.rewrite(&hub).await;
                }
                Err(e) => self.failed(&hub, &e),
            }
        }
    }

    /// Takes this server's shares out (it is shutting down).
    async fn leave(&mut self) {
        for hub in self.hubs.keys() {
            let mut invocation = self.redis.invocation(hub, "leave");
            invocation.arg(&self.server);
            if let Err(e) = self.redis.run::<Outcome>(invocation).await {
                tracing::warn!(%hub, "cannot take this server's presence out of Redis ({e}); it expires on its own");
            }
        }
    }

    /// A script succeeded, having dropped `reaped` dead shares; `more` (1) when dead shares
    /// remain, which are dropped now, a bounded part per call.
    async fn succeeded(&mut self, hub: &HubName, reaped: u64, more: u8) {
        if !self.healthy {
            tracing::info!("presence is written to Redis again");
            self.healthy = true;
        }
        let mut reaped = reaped;
        let mut more = more;
        while more == 1 {
            let invocation = self.on_share(hub, "reap");
            match self.redis.run::<Outcome>(invocation).await {
                Ok((_, dropped, left)) => {
                    reaped += dropped;
                    more = left;
                }
                Err(e) => {
                    // The next write or heartbeat goes on with it.
                    tracing::warn!(%hub, "cannot drop the presence of dead servers: {e}");
                    break;
                }
            }
        }
        if reaped > 0 {
            PresenceStats::add(&self.stats.reaped, reaped);
            tracing::info!(
                servers = reaped,
                "dropped the presence of servers that stopped beating"
            );
        }
    }

    fn failed(&mut self, hub: &HubName, error: &redis::RedisError) {
        PresenceStats::add(&self.stats.failures, 1);
        self.hubs.entry(hub.clone()).or_default().current = false;
        if self.healthy {
            tracing::warn!(%hub, "cannot write presence to Redis ({error}); rewriting it once Redis is back");
            self.healthy = false;
        }
    }
}

/// `holdings` in runs of about `entries` connections and memberships (one holding is never
/// split).
fn chunks(holdings: &[Holding], entries: usize) -> Vec<&[Holding]> {
    let mut runs = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, holding) in holdings.iter().enumerate() {
        size += 1 + holding.groups.len();
        if size >= entries {
            runs.push(&holdings[start..=i]);
            (start, size) = (i + 1, 0);
        }
    }
    if start < holdings.len() || runs.is_empty() {
        runs.push(&holdings[start..]);
    }
    runs
}

/// Adds one holding to a `rewrite` or `add` invocation, as the script reads it.
fn add_holding(invocation: &mut redis::ScriptInvocation<'_>, holding: &Holding) {
    invocation
        .arg(&holding.connection)
        .arg(holding.user.as_deref().unwrap_or(""))
        .arg(holding.groups.len());
    for group in &holding.groups {
        invocation.arg(group);
    }
}

/// Adds one change to a `change` invocation, as the script reads it.
fn add_change(invocation: &mut redis::ScriptInvocation<'_>, change: &Change) {
    match change {
        Change::Connected { connection, user } => {
            invocation
                .arg("c")
                .arg(connection)
                .arg(user.as_deref().unwrap_or(""));
        }
        Change::Disconnected { connection, groups } => {
            invocation.arg("d").arg(connection).arg(groups.len());
            for group in groups {
                invocation.arg(group);
            }
        }
        Change::Joined { connection, group } => {
            invocation.arg("j").arg(connection).arg(group);
        }
        Change::Left { connection, group } => {
            invocation.arg("l").arg(connection).arg(group);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holding(groups: usize) -> Holding {
        Holding {
            connection: "c".into(),
            user: None,
            groups: (0..groups).map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn a_share_is_rewritten_in_runs_of_about_so_many_entries() {
        let sizes = |holdings: &[Holding], entries| -> Vec<usize> {
            chunks(holdings, entries)
                .iter()
                .map(|run| run.len())
                .collect()
        };
        // Each holding is a connection and a membership: two entries.
        let share: Vec<Holding> = (0..7).map(|_| holding(1)).collect();
        assert_eq!(sizes(&share, 4), [2, 2, 2, 1]);
        assert_eq!(sizes(&share, 100), [7]);
        // A holding with more groups than a run holds goes whole, alone.
        let share = [holding(0), holding(9), holding(0)];
        assert_eq!(sizes(&share, 4), [2, 1]);
        // An empty share is one empty run: it still replaces what Redis had.
        assert_eq!(sizes(&[], 4), [0]);
    }
}
