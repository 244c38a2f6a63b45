//! The seam between the Redis backplane and the pub/sub service under it.
//!
//! The backplane's bookkeeping (interests, acknowledgements, outages, resubscription) is written
//! against these two small traits. [`RedisBroker`](super::client::RedisBroker) implements them
//! for one Redis (on its own sockets, [`direct`](super::direct), or the `redis` crate's),
//! [`ClusterBroker`](super::cluster::ClusterBroker) for a cluster, and
//! [`MemoryBroker`](super::memory::MemoryBroker) implements them in
//! process, so that bookkeeping gets fast, deterministic tests (with paused time), outages and
//! partial failures included.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;

/// Longest wait for one Redis round trip before the link counts as broken.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Payloads of the messages a subscriber link receives, in order, until the link breaks.
pub type Payloads = Pin<Box<dyn Stream<Item = Bytes> + Send>>;

/// One packet to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    pub channel: String,
    pub payload: Bytes,
    /// Durable reconnect: the hub's log, to which the packet is appended in the same step as
    /// it is published (so the log's order is the order subscribers receive).
    pub log: Option<String>,
}

/// How a publish trims the logs it appends to: entries older than this (Unix milliseconds,
/// by the Redis stream ids' clock) may go.
pub type LogStart = u64;

/// Why the broker could not do something.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BrokerError {
    /// Not reachable, or the connection broke.
    #[error("{0}")]
    Unavailable(String),
    /// The credentials were refused: retrying will not help.
    #[error("the credentials were rejected: {0}")]
    Auth(String),
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl BrokerError {
    /// An error Redis answered: [`Auth`](Self::Auth) when it refused the credentials.
    pub fn refusal(text: String) -> Self {
        if refuses_credentials(&text) {
            Self::Auth(text)
        } else {
            Self::Unavailable(text)
        }
    }
}

/// Whether an error from Redis says the credentials were refused.
pub(super) fn refuses_credentials(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    [
        "noauth",
        "wrongpass",
        "invalid password",
        "invalid username-password",
        "authentication failed",
        // `AUTH` to a Redis without a password.
        "without any password configured",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

/// Runs one round trip with the I/O timeout.
pub(super) async fn bounded<T>(
    work: impl Future<Output = Result<T, BrokerError>>,
) -> Result<T, BrokerError> {
    tokio::time::timeout(IO_TIMEOUT, work)
        .await
        .unwrap_or(Err(BrokerError::Timeout(IO_TIMEOUT)))
}

/// A pub/sub service: links for subscribing, and a connection for publishing.
pub trait Broker: Send + Sync + 'static {
    /// A subscriber connection.
    type Link: Link;

    /// Opens a subscriber link (subscribed to nothing yet) and the stream of what it receives.
    fn connect(&self) -> impl Future<Output = Result<(Self::Link, Payloads), BrokerError>> + Send;

    /// Publishes `messages` in this order, in one round trip, appending those with a log to it
    /// atomically with their publication (trimming it to `log_start`). On an error, any prefix
    /// of them may have been published. Answers how many were lost although they were
    /// published: they reached no subscriber while this server listens on their channel (a
    /// cluster shard that changed hands before the subscribers were back).
    fn publish(
        &self,
        messages: &[Publication],
        log_start: LogStart,
    ) -> impl Future<Output = Result<u64, BrokerError>> + Send;

    /// Whether the publishing connection answers (and, for a reconnecting client, the nudge to
    /// reconnect after an outage).
    fn check(&self) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// Where the broker is, for logs (without credentials).
    fn describe(&self) -> &str;

    /// The backplane's kind, as `/readyz` reports it.
    fn kind(&self) -> &'static str {
        "redis"
    }
}

/// One subscriber connection.
///
/// Its commands may be answered on the same stream as its messages (a link on the backplane's
/// own socket reads both from one socket): they complete only while its [`Payloads`] stream is
/// being polled, so a caller awaiting one must keep reading the stream (see `receiving` in the
/// subscriber).
pub trait Link: Send + Sync + 'static {
    /// Subscribes to `channels`, resolving once the broker confirmed it.
    fn subscribe(
        &mut self,
        channels: &[String],
    ) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// Unsubscribes from `channels`.
    fn unsubscribe(
        &mut self,
        channels: &[String],
    ) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// Checks the link answers.
    fn ping(&mut self) -> impl Future<Output = Result<(), BrokerError>> + Send;
}

/// Publishes packets and appends those with a log to it, in one step: nothing another server
/// publishes comes between a packet's publication and its place in the log. `ARGV[1]` is the
/// publish command, `ARGV[2]` the oldest stream id kept; then, per packet, its channel, its
/// payload and the index of its log in `KEYS` (0: none). Answers each packet's subscriber
/// count.
const PUBLISH_AND_LOG: &str = r"
local counts = {}
for i = 3, #ARGV, 3 do
  counts[#counts + 1] = redis.call(ARGV[1], ARGV[i], ARGV[i + 1])
  local log = tonumber(ARGV[i + 2])
  if log > 0 then
    redis.call('XADD', KEYS[log], 'MINID', '~', ARGV[2], '*', 'p', ARGV[i + 1])
  end
end
return counts
";

/// The script of [`PUBLISH_AND_LOG`], made once.
pub(super) fn publish_and_log_script() -> &'static redis::Script {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(PUBLISH_AND_LOG))
}

/// The invocation publishing `messages` with `command` (`PUBLISH`, `SPUBLISH`) and appending
/// those with a log (see [`PUBLISH_AND_LOG`]); `None` when none has a log.
pub(super) fn publish_and_log<'a>(
    command: &str,
    messages: impl IntoIterator<Item = &'a Publication>,
    log_start: LogStart,
) -> Option<redis::ScriptInvocation<'static>> {
    let messages: Vec<&Publication> = messages.into_iter().collect();
    if messages.iter().all(|m| m.log.is_none()) {
        return None;
    }
    let mut invocation = publish_and_log_script().prepare_invoke();
    invocation.arg(command).arg(format!("{log_start}-0"));
    let mut logs: Vec<&str> = Vec::new();
    for message in messages {
        let index = match &message.log {
            Some(log) => match logs.iter().position(|l| *l == log) {
                Some(i) => i + 1,
                None => {
                    logs.push(log);
                    invocation.key(log.as_str());
                    logs.len()
                }
            },
            None => 0,
        };
        invocation
            .arg(&message.channel)
            .arg(message.payload.as_ref())
            .arg(index);
    }
    Some(invocation)
}
