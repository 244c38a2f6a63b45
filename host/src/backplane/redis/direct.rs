//! The backplane's own sockets to one Redis over plain TCP: the subscriber link, read by the task
//! that delivers what arrives, and the publishing connection, written and answered by the
//! publisher's task.
//!
//! Through the `redis` crate every message took extra hops between tasks: its pub/sub driver read
//! a message and queued it for the subscriber task, and a publish went from the publisher task to
//! the multiplexed connection's driver and its answer back. Each hop is a wake-up, often of
//! another thread, and at a few thousand messages a second the hosts spent more on waking than on
//! the work. TLS and Unix sockets stay with the crate ([`Endpoint::of`]).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::oneshot;

use super::broker::{BrokerError, Link, Payloads, Publication, bounded};
use super::resp::{self, Frame};

/// Room kept free in a read buffer before reading into it.
const READ_ROOM: usize = 4096;
/// What a read buffer grows by when it runs short.
const READ_CHUNK: usize = 16 * 1024;

/// Where the sockets go, and the credentials they log in with.
#[derive(Clone)]
pub(super) struct Endpoint {
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
}

impl Endpoint {
    /// The endpoint of `info`, or `None` when only the `redis` crate can reach it (TLS, Unix
    /// sockets). The database number does not matter: pub/sub channels are server-wide.
    pub(super) fn of(info: &redis::ConnectionInfo) -> Option<Self> {
        let redis::ConnectionAddr::Tcp(host, port) = info.addr() else {
            return None;
        };
        let settings = info.redis_settings();
        Some(Self {
            host: host.clone(),
            port: *port,
            username: settings.username().map(str::to_owned),
            password: settings.password().map(str::to_owned),
        })
    }

    /// Connects (TCP_NODELAY: a publish must not wait for the previous one's answer) and logs
    /// in.
    async fn open(&self) -> Result<(Reader, OwnedWriteHalf), BrokerError> {
        bounded(async {
            let stream = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(unavailable)?;
            stream.set_nodelay(true).map_err(unavailable)?;
            let (read, mut write) = stream.into_split();
            let mut reader = Reader::new(read);
            if let Some(password) = &self.password {
                let mut out = BytesMut::new();
                let mut args: Vec<&[u8]> = vec![b"AUTH"];
                args.extend(self.username.as_deref().map(str::as_bytes));
                args.push(password.as_bytes());
                resp::command(&mut out, &args);
                write.write_all(&out).await.map_err(unavailable)?;
                let (bytes, frame) = reader.frame().await?;
                if let Frame::Error(text) = frame {
                    return Err(BrokerError::refusal(text_of(&bytes, text)));
                }
            }
            Ok((reader, write))
        })
        .await
    }

    /// Opens a subscriber link.
    pub(super) async fn link(&self) -> Result<(DirectLink, Payloads), BrokerError> {
        let (reader, write) = self.open().await?;
        let waiting = Waiting::default();
        let link = DirectLink {
            write,
            waiting: waiting.clone(),
            poisoned: false,
        };
        Ok((link, Box::pin(Incoming { reader, waiting })))
    }
}

fn unavailable(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(e.to_string())
}

fn text_of(bytes: &Bytes, range: std::ops::Range<usize>) -> String {
    String::from_utf8_lossy(&bytes[range]).into_owned()
}

/// The read half of a connection, taken frame by frame.
struct Reader {
    read: OwnedReadHalf,
    buf: BytesMut,
}

impl Reader {
    fn new(read: OwnedReadHalf) -> Self {
        Self {
            read,
            buf: BytesMut::new(),
        }
    }

    /// The next frame, with the bytes its ranges point into.
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Result<(Bytes, Frame), BrokerError>> {
        loop {
            match resp::parse(&self.buf) {
                Ok(Some((frame, used))) => {
                    return Poll::Ready(Ok((self.buf.split_to(used).freeze(), frame)));
                }
                Ok(None) => {}
                Err(e) => return Poll::Ready(Err(unavailable(e))),
            }
            if self.buf.capacity() - self.buf.len() < READ_ROOM {
                self.buf.reserve(READ_CHUNK);
            }
            let read = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut self.read),
                cx,
                &mut self.buf
            ));
            match read {
                Ok(0) => return Poll::Ready(Err(unavailable("Redis closed the connection"))),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(unavailable(e))),
            }
        }
    }

    async fn frame(&mut self) -> Result<(Bytes, Frame), BrokerError> {
        std::future::poll_fn(|cx| self.poll_frame(cx)).await
    }
}

/// A command on the link waiting for its replies (one per channel of a SUBSCRIBE).
struct Waiter {
    replies: usize,
    done: oneshot::Sender<Result<(), BrokerError>>,
}

/// The commands of a link waiting for replies, shared by its two halves.
#[derive(Default)]
struct Pending {
    waiters: VecDeque<Waiter>,
    /// The link broke: no reply will come.
    ended: bool,
}

type Waiting = Arc<Mutex<Pending>>;

fn broke() -> BrokerError {
    unavailable("the subscriber link broke")
}

/// The commanding half of a subscriber link. Its replies arrive among the messages, so they are
/// only seen while its [`Incoming`] stream is polled.
pub struct DirectLink {
    write: OwnedWriteHalf,
    waiting: Waiting,
    /// A command was dropped before its replies came (or half written): later replies would
    /// be matched to the wrong commands, so the link is unusable.
    poisoned: bool,
}

impl DirectLink {
    /// Sends `name` with `args` and waits for its `replies`.
    async fn command(
        &mut self,
        name: &[u8],
        args: &[String],
        replies: usize,
    ) -> Result<(), BrokerError> {
        if self.poisoned {
            return Err(broke());
        }
        let mut out = BytesMut::new();
        let parts: Vec<&[u8]> = std::iter::once(name)
            .chain(args.iter().map(String::as_bytes))
            .collect();
        resp::command(&mut out, &parts);
        let (done, answered) = oneshot::channel();
        {
            let mut pending = self.waiting.lock();
            if pending.ended {
                return Err(broke());
            }
            pending.waiters.push_back(Waiter { replies, done });
        }
        // Cleared only once the command is answered: dropping this future midway poisons it.
        self.poisoned = true;
        let write = &mut self.write;
        let result = bounded(async move {
            write.write_all(&out).await.map_err(unavailable)?;
            answered.await.unwrap_or_else(|_| Err(broke()))
        })
        .await;
        // After a timeout the replies may still come, to be matched to the next command.
        self.poisoned = result.is_err();
        result
    }
}

impl Link for DirectLink {
    async fn subscribe(&mut self, channels: &[String]) -> Result<(), BrokerError> {
        if channels.is_empty() {
            return Ok(());
        }
        self.command(b"SUBSCRIBE", channels, channels.len()).await
    }

    async fn unsubscribe(&mut self, channels: &[String]) -> Result<(), BrokerError> {
        // Without channels UNSUBSCRIBE would mean all of them.
        if channels.is_empty() {
            return Ok(());
        }
        self.command(b"UNSUBSCRIBE", channels, channels.len()).await
    }

    async fn ping(&mut self) -> Result<(), BrokerError> {
        self.command(b"PING", &[], 1).await
    }
}

/// What arrives on a subscriber link: the payloads of its messages, while the replies to its
/// commands are handed to their waiters.
struct Incoming {
    reader: Reader,
    waiting: Waiting,
}

/// One frame on a subscriber link.
enum Push {
    /// A message's payload.
    Message(std::ops::Range<usize>),
    /// A reply to a command: one confirmation, or its error.
    Reply(Result<(), String>),
    /// Nothing the backplane asked for.
    Other,
}

fn push(bytes: &Bytes, frame: Frame) -> Push {
    match frame {
        Frame::Array(Some(items)) => {
            let kind = match items.first() {
                Some(Frame::Bulk(Some(kind))) => &bytes[kind.clone()],
                _ => return Push::Other,
            };
            match (kind, items.get(2)) {
                (b"message", Some(Frame::Bulk(Some(payload)))) => Push::Message(payload.clone()),
                (b"subscribe" | b"unsubscribe" | b"pong", _) => Push::Reply(Ok(())),
                _ => Push::Other,
            }
        }
        // PING outside subscribed mode.
        Frame::Simple(_) => Push::Reply(Ok(())),
        Frame::Error(text) => Push::Reply(Err(text_of(bytes, text))),
        _ => Push::Other,
    }
}

impl Incoming {
    fn answer(&self, reply: Result<(), String>) {
        let mut pending = self.waiting.lock();
        let Some(front) = pending.waiters.front_mut() else {
            tracing::debug!("ignored a reply no command waits for");
            return;
        };
        front.replies = front.replies.saturating_sub(1);
        if (front.replies == 0 || reply.is_err())
            && let Some(waiter) = pending.waiters.pop_front()
        {
            let _ = waiter.done.send(reply.map_err(BrokerError::refusal));
        }
    }

    /// No reply will come: the waiters learn it as their senders go.
    fn end(&self) {
        let mut pending = self.waiting.lock();
        pending.ended = true;
        pending.waiters.clear();
    }
}

impl Stream for Incoming {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        loop {
            match ready!(self.reader.poll_frame(cx)) {
                Ok((bytes, frame)) => match push(&bytes, frame) {
                    Push::Message(payload) => return Poll::Ready(Some(bytes.slice(payload))),
                    Push::Reply(reply) => self.answer(reply),
                    Push::Other => tracing::debug!("ignored a push from Redis"),
                },
                Err(e) => {
                    tracing::debug!("the subscriber link ended: {e}");
                    self.end();
                    return Poll::Ready(None);
                }
            }
        }
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        self.end();
    }
}

/// The publishing connection, opened on first use and again after it broke.
pub(super) struct Publisher {
    endpoint: Endpoint,
    connection: tokio::sync::Mutex<Option<(Reader, OwnedWriteHalf)>>,
}

impl Publisher {
    pub(super) fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            connection: tokio::sync::Mutex::new(None),
        }
    }

    /// Where it publishes, for the subscriber links to the same Redis.
    pub(super) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Publishes `messages` in one round trip.
    pub(super) async fn publish(&self, messages: &[Publication]) -> Result<(), BrokerError> {
        let mut out = BytesMut::with_capacity(
            messages
                .iter()
                .map(|m| m.channel.len() + m.payload.len() + 40)
                .sum(),
        );
        for message in messages {
            resp::command(
                &mut out,
                &[b"PUBLISH", message.channel.as_bytes(), &message.payload],
            );
        }
        self.exchange(&out, messages.len()).await
    }

    /// Whether the connection answers a PING (opening it if need be).
    pub(super) async fn check(&self) -> Result<(), BrokerError> {
        let mut out = BytesMut::new();
        resp::command(&mut out, &[b"PING"]);
        self.exchange(&out, 1).await
    }

    /// Writes `out` and reads its `replies`; a broken connection is dropped, to be opened again
    /// by the next exchange.
    async fn exchange(&self, out: &[u8], replies: usize) -> Result<(), BrokerError> {
        let mut connection = self.connection.lock().await;
        // Taken out while in use: a connection whose exchange is dropped midway (replies
        // unread) or fails is not put back, and the next exchange opens a new one.
        let mut taken = connection.take();
        let result = bounded(async {
            let (reader, write) = match &mut taken {
                Some(open) => open,
                None => taken.insert(self.endpoint.open().await?),
            };
            write.write_all(out).await.map_err(unavailable)?;
            let mut refused = None;
            for _ in 0..replies {
                let (bytes, frame) = reader.frame().await?;
                if let Frame::Error(text) = frame {
                    refused.get_or_insert_with(|| text_of(&bytes, text));
                }
            }
            match refused {
                Some(text) => Err(BrokerError::refusal(text)),
                None => Ok(()),
            }
        })
        .await;
        if result.is_ok() {
            *connection = taken;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::super::test_redis::RedisServer as Server;
    use super::*;

    fn publication(channel: &str, payload: &[u8]) -> Publication {
        Publication {
            channel: channel.into(),
            payload: Bytes::copy_from_slice(payload),
            log: None,
        }
    }

    /// Runs `work` while reading `payloads` (as the subscriber task does), keeping what arrives.
    async fn reading<T>(
        payloads: &mut Payloads,
        seen: &mut Vec<Bytes>,
        work: impl Future<Output = T>,
    ) -> T {
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                biased;
                done = &mut work => return done,
                Some(payload) = payloads.next() => seen.push(payload),
            }
        }
    }

    #[tokio::test]
    async fn what_is_published_arrives_byte_for_byte_in_order() {
        let server = Server::start(Some("pw")).await;
        let endpoint = server.endpoint(Some("pw"));
        let (mut link, mut payloads) = endpoint.link().await.expect("a link");
        let mut seen = Vec::new();
        let channels = vec!["a".to_owned(), "b".to_owned()];
        reading(&mut payloads, &mut seen, link.subscribe(&channels))
            .await
            .expect("subscribed");
        let publisher = Publisher::new(endpoint);
        // Payloads holding CRLF, RESP markers and every byte value.
        let odd: Vec<u8> = (0..=255u8).chain(*b"\r\n*3\r\n$-1\r\n").collect();
        let big = vec![7u8; 200_000];
        publisher
            .publish(&[
                publication("a", b"first"),
                publication("elsewhere", b"unheard"),
                publication("b", &odd),
                publication("a", b""),
                publication("b", &big),
            ])
            .await
            .expect("published");
        publisher
            .publish(&[publication("a", b"sentinel")])
            .await
            .expect("published");
        while seen.last().map(|p| &p[..]) != Some(b"sentinel") {
            seen.push(payloads.next().await.expect("the link is up"));
        }
        let seen: Vec<&[u8]> = seen.iter().map(|p| &p[..]).collect();
        assert_eq!(seen, [&b"first"[..], &odd, b"", &big, b"sentinel"]);
    }

    #[tokio::test]
    async fn replies_are_matched_to_their_commands_among_messages() {
        let server = Server::start(None).await;
        let endpoint = server.endpoint(None);
        let (mut link, mut payloads) = endpoint.link().await.expect("a link");
        let mut seen = Vec::new();
        let a = vec!["a".to_owned()];
        reading(&mut payloads, &mut seen, link.subscribe(&a))
            .await
            .expect("subscribed");
        let publisher = Publisher::new(endpoint);
        let many: Vec<String> = (0..500).map(|i| format!("c{i}")).collect();
        for round in 0..20u8 {
            publisher
                .publish(&[publication("a", &[round])])
                .await
                .expect("published");
            reading(&mut payloads, &mut seen, link.subscribe(&many))
                .await
                .expect("subscribed");
            reading(&mut payloads, &mut seen, link.ping())
                .await
                .expect("answered");
            reading(&mut payloads, &mut seen, link.unsubscribe(&many))
                .await
                .expect("unsubscribed");
        }
        // Unsubscribed from c0 again: a sentinel on `a` after a publish on c0 proves it unheard.
        publisher
            .publish(&[publication("c0", b"unheard"), publication("a", b"end")])
            .await
            .expect("published");
        while seen.last().map(|p| &p[..]) != Some(b"end") {
            seen.push(payloads.next().await.expect("the link is up"));
        }
        let expected: Vec<Vec<u8>> = (0..20u8)
            .map(|r| vec![r])
            .chain([b"end".to_vec()])
            .collect();
        assert_eq!(seen, expected);
    }

    #[tokio::test]
    async fn a_command_dropped_before_its_replies_leaves_the_link_unusable() {
        let server = Server::start(None).await;
        let (mut link, _payloads) = server.endpoint(None).link().await.expect("a link");
        let a = vec!["a".to_owned()];
        // Polled once (written, waiting for its reply), then dropped.
        let dropped = tokio::time::timeout(std::time::Duration::ZERO, link.subscribe(&a)).await;
        assert!(dropped.is_err(), "it was still waiting");
        let e = link
            .ping()
            .await
            .expect_err("its reply would answer the PING");
        assert!(matches!(e, BrokerError::Unavailable(_)), "{e}");
    }

    #[tokio::test]
    async fn a_wrong_password_is_an_auth_error() {
        let server = Server::start(Some("right")).await;
        let endpoint = server.endpoint(Some("wrong"));
        let Err(e) = endpoint.link().await else {
            panic!("logged in with a wrong password")
        };
        assert!(
            matches!(&e, BrokerError::Auth(text) if text.starts_with("WRONGPASS")),
            "{e}"
        );
        let e = Publisher::new(endpoint).check().await.expect_err("refused");
        assert!(matches!(e, BrokerError::Auth(_)), "{e}");
    }

    #[tokio::test]
    async fn when_redis_goes_the_stream_ends_and_publishing_recovers_once_it_is_back() {
        let mut server = Server::start(None).await;
        let endpoint = server.endpoint(None);
        let (mut link, mut payloads) = endpoint.link().await.expect("a link");
        let publisher = Publisher::new(endpoint.clone());
        publisher.check().await.expect("up");
        server.kill();
        assert!(payloads.next().await.is_none(), "the stream ends");
        let e = link.ping().await.expect_err("no link");
        assert!(matches!(e, BrokerError::Unavailable(_)), "{e}");
        publisher.check().await.expect_err("Redis is down");

        // Back on the same port: the next exchange opens a new connection.
        server.restart();
        let mut up = false;
        for _ in 0..200 {
            if publisher.check().await.is_ok() {
                up = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(up, "publishing recovered");
    }

    #[tokio::test]
    async fn garbage_from_the_server_ends_the_link_with_its_waiters() {
        // Not Redis: answers anything with bytes that are not RESP.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 64];
            let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut buf).await;
            let _ = socket.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        });
        let info =
            redis::IntoConnectionInfo::into_connection_info(format!("redis://127.0.0.1:{port}"))
                .expect("a URL");
        let endpoint = Endpoint::of(&info).expect("plain TCP");
        let (mut link, mut payloads) = endpoint.link().await.expect("connected");
        let mut seen = Vec::new();
        let ended = tokio::select! {
            result = link.ping() => Some(result),
            None = payloads.next() => None,
        };
        assert!(ended.is_none(), "the stream ends first");
        let e = reading(&mut payloads, &mut seen, link.ping())
            .await
            .expect_err("no answer");
        assert!(matches!(e, BrokerError::Unavailable(_)), "{e}");
        assert!(seen.is_empty());
    }
}
