//! Durable reconnect (`--durable-reconnect`): what a connection of stateful reconnect has not
//! acknowledged survives the crash of its server, so its client resumes on another.
//!
//! Keeping every frame in Redis would cost a write per delivery. Most frames are sends made
//! from packets of the backplane, so the backplane keeps each hub's packets in a log instead
//! (a Redis stream, appended in the same step as each packet is published, so its order is the
//! order every server received them in), and each connection keeps only a small record:
//! - a checkpoint ([`Outbound::Checkpoint`]), written every few seconds and on each group
//!   change: the frames the client had not acknowledged then, the number of the next frame,
//!   the place in the log its later frames come from, and its groups;
//! - the frames made after it that the log cannot give again (results of the client's calls,
//!   stream items), written before they are sent;
//! - how many of the client's messages were handled, written before the server acknowledges
//!   them.
//!
//! A server the client comes back to, when no server answers its claim, reads the record,
//! registers the connection, puts a marker in the log, and makes the frames again: the kept
//! ones, and those the log's packets after the checkpoint make for this connection up to the
//! marker, numbered around the kept ones ([`replay`]). What comes after the marker it delivers
//! itself. So messages sent while no server held the connection are not lost.
//!
//! [`Outbound::Checkpoint`]: crate::registry::Outbound::Checkpoint

pub mod replay;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::protocol::Frame;
use crate::redisdb::{Commands, Keyspace};
use crate::registry::LocalRegistry;
use crate::types::{HubName, LogPos};

/// Longest a record operation waits for Redis: the writer waits on some of them.
const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// Log entries read per `XRANGE`.
const PAGE: usize = 1000;
/// How long a server taking a connection over waits for its marker to reach the log.
const MARKER_WITHIN: Duration = Duration::from_secs(5);
/// How long operations fail at once after one failed.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Margin for the clocks of servers and Redis when reading the log from a checkpoint's time.
const CLOCK_MARGIN: Duration = Duration::from_secs(10);

/// Why a record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum DurableError {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the record of the connection is malformed ({0})")]
    Malformed(String),
    #[error("its marker did not reach the hub's log within {0:?}")]
    NoMarker(Duration),
    #[error("Redis failed a moment ago; not tried again yet")]
    Failing,
    #[error("another server is taking the connection over")]
    Taken,
}

/// Settings of durable reconnect.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long a client may stay away (the reconnect window).
    pub window: Duration,
    /// How often every durable connection writes a checkpoint.
    pub checkpoint_every: Duration,
}

impl Timing {
    /// A checkpoint every third of the window (between 1 and 10 seconds).
    pub fn for_window(window: Duration) -> Self {
        Self {
            window,
            checkpoint_every: (window / 3).clamp(Duration::from_secs(1), Duration::from_secs(10)),
        }
    }

    /// How long a record outlives its last checkpoint: past the window after the last one
    /// its server could have written.
    pub fn record_ttl(&self) -> Duration {
        self.window + self.checkpoint_every * 2
    }

    /// How long the hubs' logs keep packets: from the oldest checkpoint a record can name to
    /// the end of its window.
    pub fn log_retention(&self) -> Duration {
        self.record_ttl() + self.checkpoint_every + CLOCK_MARGIN
    }
}

/// Records and logs in Redis.
pub struct Store {
    commands: Commands,
    keys: Keyspace,
    timing: Timing,
    /// Until when operations fail at once, after one failed: writers must not each wait out a
    /// timeout per batch while Redis is away (their connections would stall and be cut).
    failing_until: parking_lot::Mutex<Option<tokio::time::Instant>>,
}

/// One durable connection, as its writer records it.
pub struct Link {
    pub store: Arc<Store>,
    pub hub: HubName,
    pub token: String,
    pub connection: String,
    pub user: Option<String>,
}

/// What a checkpoint records (see the module's documentation).
pub struct Checkpoint<'a> {
    pub protocol: &'a str,
    pub at: LogPos,
    pub groups: &'a [String],
    /// When the place was taken (Unix milliseconds).
    pub since: u64,
    /// The number of the first kept frame.
    pub first: u64,
    /// The frames the client has not acknowledged, numbered from `first`.
    pub frames: &'a [Frame],
}

/// A connection's record, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub connection: String,
    pub user: Option<String>,
    pub protocol: String,
    pub groups: Vec<String>,
    /// The newest of the client's messages that was handled and acknowledged.
    pub received: u64,
    /// Where in the log the frames after the checkpoint's come from.
    pub at: LogPos,
    /// Unix milliseconds of the checkpoint (where reading the log may start).
    pub since: u64,
    /// The number the first frame after the checkpoint's got.
    pub next: u64,
    /// Kept frames by number.
    pub frames: BTreeMap<u64, Vec<u8>>,
}

/// One packet of a hub's log.
pub type LogEntry = Bytes;

impl Store {
    pub fn new(commands: Commands, keys: Keyspace, timing: Timing) -> Self {
        Self {
            commands,
            keys,
            timing,
            failing_until: parking_lot::Mutex::new(None),
        }
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        work: impl FnOnce(Commands) -> redis::RedisFuture<'static, T>,
    ) -> Result<T, DurableError> {
        let now = tokio::time::Instant::now();
        if self.failing_until.lock().is_some_and(|until| now < until) {
            return Err(DurableError::Failing);
        }
        let result = match tokio::time::timeout(OP_TIMEOUT, work(self.commands.clone())).await {
            Ok(result) => result.map_err(DurableError::from),
            Err(_) => Err(DurableError::Timeout(OP_TIMEOUT)),
        };
        if result.is_err() {
            *self.failing_until.lock() = Some(tokio::time::Instant::now() + RETRY_AFTER);
        }
        result
    }

    /// Runs one command (see [`run`](Self::run)).
    async fn command<T: redis::FromRedisValue + Send + 'static>(
        &self,
        cmd: redis::Cmd,
    ) -> Result<T, DurableError> {
        self.run(move |mut con| Box::pin(async move { cmd.query_async(&mut con).await }))
            .await
    }

    /// Runs a pipeline (see [`run`](Self::run)).
    async fn pipeline<T: redis::FromRedisValue + Send + 'static>(
        &self,
        pipe: redis::Pipeline,
    ) -> Result<T, DurableError> {
        self.run(move |mut con| Box::pin(async move { pipe.query_async(&mut con).await }))
            .await
    }

    /// Writes a checkpoint: the record's fields and the kept frames in place of the older ones.
    pub async fn checkpoint(
        &self,
        link: &Link,
        point: &Checkpoint<'_>,
    ) -> Result<(), DurableError> {
        let (record, frames) = self.keys.durable(&link.hub, &link.token);
        let ttl = millis(self.timing.record_ttl());
        let groups = serde_json::to_string(point.groups).unwrap_or_else(|_| "[]".into());
        let next = point.first + point.frames.len() as u64;
        let mut pipe = redis::pipe();
        // One slot (the hub's), so one transaction on a cluster too.
        pipe.atomic();
        pipe.del(&frames).ignore();
        if !point.frames.is_empty() {
            let numbered: Vec<(u64, &[u8])> = (point.first..)
                .zip(point.frames.iter().map(Frame::as_bytes))
                .collect();
            pipe.hset_multiple(&frames, &numbered).ignore();
            pipe.pexpire(&frames, ttl).ignore();
        }
        pipe.hset_multiple(
            &record,
            &[
                ("connection", link.connection.clone()),
                ("user", link.user.clone().unwrap_or_default()),
                ("anonymous", u8::from(link.user.is_none()).to_string()),
                ("protocol", point.protocol.to_owned()),
                ("groups", groups),
                ("at", point.at.to_string()),
                ("since", point.since.to_string()),
                ("next", next.to_string()),
            ],
        )
        .ignore();
        pipe.pexpire(&record, ttl).ignore();
        self.pipeline(pipe).await
    }

    /// Keeps frames the log cannot give again (numbered), before they are sent.
    pub async fn keep(&self, link: &Link, numbered: &[(u64, Frame)]) -> Result<(), DurableError> {
        if numbered.is_empty() {
            return Ok(());
        }
        let (_, frames) = self.keys.durable(&link.hub, &link.token);
        let fields: Vec<(u64, &[u8])> = numbered.iter().map(|(n, f)| (*n, f.as_bytes())).collect();
        let mut pipe = redis::pipe();
        pipe.hset_multiple(&frames, &fields).ignore();
        pipe.pexpire(&frames, millis(self.timing.record_ttl()))
            .ignore();
        self.pipeline(pipe).await
    }

    /// Records that the client's messages up to `received` were handled, before the server
    /// acknowledges them.
    pub async fn received(&self, link: &Link, received: u64) -> Result<(), DurableError> {
        let (record, _) = self.keys.durable(&link.hub, &link.token);
        let mut pipe = redis::pipe();
        pipe.hset(&record, "received", received).ignore();
        pipe.pexpire(&record, millis(self.timing.record_ttl()))
            .ignore();
        self.pipeline(pipe).await
    }

    /// Forgets the connection of `token`: it ended.
    pub async fn forget(&self, hub: &HubName, token: &str) -> Result<(), DurableError> {
        let (record, frames) = self.keys.durable(hub, token);
        let mut del = redis::cmd("DEL");
        del.arg(&record).arg(&frames);
        self.command(del).await
    }

    /// The record of the connection of `token`, if it has one that is complete.
    pub async fn load(&self, hub: &HubName, token: &str) -> Result<Option<Record>, DurableError> {
        let (record, frames) = self.keys.durable(hub, token);
        let mut pipe = redis::pipe();
        pipe.hgetall(&record).hgetall(&frames);
        let (fields, kept): (BTreeMap<String, String>, BTreeMap<u64, Vec<u8>>) =
            self.pipeline(pipe).await?;
        // A record that never had its first checkpoint (only `received`) cannot be resumed.
        if !fields.contains_key("at") {
            return Ok(None);
        }
        parse_record(&fields, kept).map(Some)
    }

    /// Takes the connection of `token` over, once: a second server trying within the window
    /// (the client retried elsewhere) is refused.
    pub async fn take_over(
        &self,
        hub: &HubName,
        token: &str,
        claim: u64,
    ) -> Result<(), DurableError> {
        let (record, _) = self.keys.durable(hub, token);
        let lock = format!("{record}:taken");
        let ttl = millis(self.timing.window);
        let mut set = redis::cmd("SET");
        set.arg(&lock).arg(claim).arg("NX").arg("PX").arg(ttl);
        let taken: Option<String> = self.command(set).await?;
        taken.map(|_| ()).ok_or(DurableError::Taken)
    }

    /// The packets of `hub`'s log from about `since` (Unix milliseconds) up to the marker of
    /// `claim`, which is on its way to it; waits for the marker a while.
    pub async fn read_log(
        &self,
        hub: &HubName,
        since: u64,
        claim: u64,
    ) -> Result<Vec<LogEntry>, DurableError> {
        let key = self.keys.log(hub);
        let start = since.saturating_sub(millis(CLOCK_MARGIN) as u64);
        let mut from = format!("{start}-0");
        let mut entries = Vec::new();
        let deadline = tokio::time::Instant::now() + MARKER_WITHIN;
        loop {
            let mut range = redis::cmd("XRANGE");
            range.arg(&key).arg(&from).arg("+").arg("COUNT").arg(PAGE);
            let page: Vec<(String, BTreeMap<String, Vec<u8>>)> = self.command(range).await?;
            let full = page.len() == PAGE;
            for (id, mut fields) in page {
                from = format!("({id}");
                if let Some(packet) = fields.remove("p") {
                    let packet = Bytes::from(packet);
                    let end = replay::is_marker(&packet, claim);
                    entries.push(packet);
                    if end {
                        return Ok(entries);
                    }
                }
            }
            if !full {
                if tokio::time::Instant::now() >= deadline {
                    return Err(DurableError::NoMarker(MARKER_WITHIN));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Tells every durable connection of this server to write a checkpoint, every
/// `timing.checkpoint_every`, until `stop`: records stay fresh and the log read on a takeover
/// stays short.
pub fn checkpoint_periodically(
    registry: Arc<LocalRegistry>,
    timing: Timing,
    stop: tokio_util::sync::CancellationToken,
) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(timing.checkpoint_every);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => registry.checkpoint_durable(),
                () = stop.cancelled() => return,
            }
        }
    });
}

fn parse_record(
    fields: &BTreeMap<String, String>,
    frames: BTreeMap<u64, Vec<u8>>,
) -> Result<Record, DurableError> {
    let field = |name: &str| {
        fields
            .get(name)
            .ok_or_else(|| DurableError::Malformed(format!("no {name}")))
    };
    let number = |name: &str| -> Result<u64, DurableError> {
        match fields.get(name) {
            None => Ok(0),
            Some(text) => text
                .parse()
                .map_err(|_| DurableError::Malformed(format!("{name} is {text:?}"))),
        }
    };
    let anonymous = fields.get("anonymous").is_some_and(|a| a == "1");
    Ok(Record {
        connection: field("connection")?.clone(),
        user: (!anonymous).then(|| fields.get("user").cloned().unwrap_or_default()),
        protocol: field("protocol")?.clone(),
        groups: serde_json::from_str(field("groups")?)
            .map_err(|e| DurableError::Malformed(format!("groups: {e}")))?,
        received: number("received")?,
        at: field("at")?.parse().map_err(DurableError::Malformed)?,
        since: number("since")?,
        next: number("next")?,
        frames,
    })
}

fn millis(duration: Duration) -> i64 {
    duration.as_millis().try_into().unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_from_its_fields() {
        let fields: BTreeMap<String, String> = [
            ("connection", "c1"),
            ("user", ""),
            ("anonymous", "1"),
            ("protocol", "json"),
            ("groups", r#"["r"]"#),
            ("at", "m:7"),
            ("since", "1000"),
            ("next", "4"),
            ("received", "2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let record = parse_record(&fields, BTreeMap::new()).expect("parses");
        assert_eq!(record.user, None);
        assert_eq!(record.groups, vec!["r".to_owned()]);
        assert_eq!(
            (record.at, record.next, record.received),
            (LogPos::Marker(7), 4, 2)
        );

        let mut named = fields.clone();
        named.insert("anonymous".into(), "0".into());
        named.insert("user".into(), "ana".into());
        assert_eq!(
            parse_record(&named, BTreeMap::new()).expect("parses").user,
            Some("ana".into())
        );
        let mut broken = fields;
        broken.insert("at".into(), "later".into());
        assert!(parse_record(&broken, BTreeMap::new()).is_err());
    }

    #[test]
    fn checkpoints_come_often_enough_for_the_window() {
        let timing = Timing::for_window(Duration::from_secs(15));
        assert_eq!(timing.checkpoint_every, Duration::from_secs(5));
        assert_eq!(timing.record_ttl(), Duration::from_secs(25));
        assert!(timing.log_retention() > timing.record_ttl() + timing.checkpoint_every);
        let short = Timing::for_window(Duration::from_secs(2));
        assert_eq!(short.checkpoint_every, Duration::from_secs(1));
    }
}
