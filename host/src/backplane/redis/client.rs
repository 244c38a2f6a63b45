//! The real broker: one Redis.
//!
//! Over plain TCP, publishing and each subscriber link use the backplane's own sockets
//! ([`direct`](super::direct)), so a message takes no extra hop between tasks. Durable logs (a
//! script) and the Redis state store use one multiplexed connection of the `redis` crate, which
//! reconnects by itself; so does everything over TLS or a Unix socket. Every socket has
//! TCP_NODELAY (the crate leaves Nagle's algorithm on): small publishes must not wait for the
//! previous one's acknowledgement. Every round trip is bounded by [`IO_TIMEOUT`].

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::IntoConnectionInfo;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink};
use redis::io::tcp::TcpSettings;

use super::broker::{
    self, Broker, BrokerError, Link, LogStart, Payloads, Publication, publish_and_log,
    refuses_credentials,
};
use super::direct::{DirectLink, Endpoint, Publisher};
use crate::redisdb::Commands;

pub use super::broker::IO_TIMEOUT;
/// Most delay between reconnect attempts of the publishing connection.
pub(super) const RECONNECT_MAX: Duration = Duration::from_millis(500);

/// Why the Redis backplane cannot start.
#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    #[error("--redis {url}: not a valid Redis URL ({reason})")]
    BadUrl { url: String, reason: String },
    #[error("--redis-cluster {urls}: {reason}")]
    BadCluster { urls: String, reason: String },
    #[error("Redis at {url} rejected the credentials: {reason}")]
    Auth { url: String, reason: String },
}

/// Redis as the backplane's broker.
pub struct RedisBroker {
    client: redis::Client,
    commands: ConnectionManager,
    /// The backplane's own sockets, when Redis is reached over plain TCP.
    direct: Option<Publisher>,
    url_for_logs: String,
}

impl RedisBroker {
    /// Opens the broker for `url`. Fails only for what retrying cannot fix: a malformed URL or
    /// rejected credentials. An unreachable Redis is not an error: it is retried later.
    pub async fn open(url: &str) -> Result<Self, RedisSetupError> {
        let url_for_logs = redact(url);
        let bad_url = |e: redis::RedisError| RedisSetupError::BadUrl {
            url: url_for_logs.clone(),
            reason: e.to_string(),
        };
        let info = connection_info(url).map_err(bad_url)?;
        let direct = Endpoint::of(&info).map(Publisher::new);
        let client = redis::Client::open(info).map_err(bad_url)?;
        let attempt = async {
            let mut con = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<()>(&mut con).await
        };
        check_credentials(attempt, &url_for_logs).await?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(IO_TIMEOUT))
            .set_response_timeout(Some(IO_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(RECONNECT_MAX);
        let commands = client
            .get_connection_manager_lazy(manager_config)
            .map_err(bad_url)?;
        Ok(Self {
            client,
            commands,
            direct,
            url_for_logs,
        })
    }

    /// The multiplexed command connection, shared with the Redis state store.
    pub fn commands(&self) -> Commands {
        Commands::Single(self.commands.clone())
    }
}

/// The node at `url`, with TCP_NODELAY.
pub(super) fn connection_info(url: &str) -> redis::RedisResult<redis::ConnectionInfo> {
    Ok(url
        .into_connection_info()?
        .set_tcp_settings(TcpSettings::default().set_nodelay(true)))
}

/// Fails fast on a wrong password; anything else (Redis down) is left to the reconnect loop.
/// `attempt` connects and sends a PING.
pub(super) async fn check_credentials(
    attempt: impl Future<Output = redis::RedisResult<()>>,
    url: &str,
) -> Result<(), RedisSetupError> {
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

pub(super) fn is_auth_error(e: &redis::RedisError) -> bool {
    // A cluster client wraps the node's refusal in an I/O error of its own: read the text too.
    e.kind() == redis::ErrorKind::AuthenticationFailed || refuses_credentials(&e.to_string())
}

pub(super) fn classify(e: redis::RedisError) -> BrokerError {
    if is_auth_error(&e) {
        BrokerError::Auth(e.to_string())
    } else {
        BrokerError::Unavailable(e.to_string())
    }
}

/// Runs one round trip with the I/O timeout.
pub(super) async fn bounded<T>(
    work: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, BrokerError> {
    broker::bounded(async { work.await.map_err(classify) }).await
}

/// `redis://:secret@host` → `redis://***@host`, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

impl Broker for RedisBroker {
    type Link = RedisLink;

    async fn connect(&self) -> Result<(RedisLink, Payloads), BrokerError> {
        if let Some(publisher) = &self.direct {
            let (link, payloads) = publisher.endpoint().link().await?;
            return Ok((RedisLink::Direct(link), payloads));
        }
        let pubsub = bounded(self.client.get_async_pubsub()).await?;
        let (sink, stream) = pubsub.split();
        let payloads = stream.map(|message| Bytes::copy_from_slice(message.get_payload_bytes()));
        Ok((RedisLink::Crate(sink), Box::pin(payloads)))
    }

    async fn publish(
        &self,
        messages: &[Publication],
        log_start: LogStart,
    ) -> Result<u64, BrokerError> {
        let mut con = self.commands.clone();
        if let Some(invocation) = publish_and_log("PUBLISH", messages, log_start) {
            let published = invocation.invoke_async::<Vec<u64>>(&mut con);
            return bounded(published).await.map(|_| 0);
        }
        // One Redis delivers to whoever is subscribed when it publishes: nothing is lost after.
        if let Some(publisher) = &self.direct {
            return publisher.publish(messages).await.map(|()| 0);
        }
        let mut pipe = redis::pipe();
        for message in messages {
            pipe.cmd("PUBLISH")
                .arg(&message.channel)
                .arg(message.payload.as_ref())
                .ignore();
        }
        // One Redis delivers to whoever is subscribed when it publishes: nothing is lost after.
        bounded(pipe.query_async::<()>(&mut con)).await.map(|()| 0)
    }

    async fn check(&self) -> Result<(), BrokerError> {
        if let Some(publisher) = &self.direct {
            publisher.check().await?;
        }
        let mut con = self.commands.clone();
        bounded(redis::cmd("PING").query_async::<()>(&mut con)).await
    }

    fn describe(&self) -> &str {
        &self.url_for_logs
    }
}

/// A dedicated pub/sub connection.
pub enum RedisLink {
    Direct(DirectLink),
    /// Through the `redis` crate (TLS, Unix sockets).
    Crate(PubSubSink),
}

impl Link for RedisLink {
    async fn subscribe(&mut self, channels: &[String]) -> Result<(), BrokerError> {
        match self {
            Self::Direct(link) => link.subscribe(channels).await,
            Self::Crate(sink) => bounded(sink.subscribe(channels)).await,
        }
    }

    async fn unsubscribe(&mut self, channels: &[String]) -> Result<(), BrokerError> {
        match self {
            Self::Direct(link) => link.unsubscribe(channels).await,
            Self::Crate(sink) => bounded(sink.unsubscribe(channels)).await,
        }
    }

    async fn ping(&mut self) -> Result<(), BrokerError> {
        match self {
            Self::Direct(link) => link.ping().await,
            // In subscribed mode PING answers with an array, so accept any value.
            Self::Crate(sink) => bounded(sink.ping::<redis::Value>()).await.map(|_| ()),
        }
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
