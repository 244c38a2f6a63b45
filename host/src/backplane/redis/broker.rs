//! The seam between the Redis backplane and the pub/sub service under it.
//!
//! The backplane's bookkeeping (interests, acknowledgements, outages, resubscription) is written
//! against these two small traits. [`RedisBroker`](super::client::RedisBroker) implements them
//! with the `redis` crate; [`MemoryBroker`](super::memory::MemoryBroker) implements them in
//! process, so that bookkeeping gets fast, deterministic tests (with paused time), outages and
//! partial failures included.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;

/// Payloads of the messages a subscriber link receives, in order, until the link breaks.
pub type Payloads = Pin<Box<dyn Stream<Item = Bytes> + Send>>;

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

/// A pub/sub service: links for subscribing, and a connection for publishing.
pub trait Broker: Send + Sync + 'static {
    /// A subscriber connection.
    type Link: Link;

    /// Opens a subscriber link (subscribed to nothing yet) and the stream of what it receives.
    fn connect(&self) -> impl Future<Output = Result<(Self::Link, Payloads), BrokerError>> + Send;

    /// Publishes `messages` (channel, payload) in this order, in one round trip. On an error,
    /// any prefix of them may have been published. Answers how many were lost although they
    /// were published: they reached no subscriber while this server listens on their channel
    /// (a cluster shard that changed hands before the subscribers were back).
    fn publish(
        &self,
        messages: &[(String, Bytes)],
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
