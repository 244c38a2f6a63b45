//! A minimal SignalR client: either hub protocol ([`wire`](crate::wire)) over WebSockets or long
//! polling, and the helpers every scenario prints with.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::http::Http;
use crate::wire::{Decoder, Event, Protocol, RS};

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A transport loadgen can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Transport {
    Websockets,
    Longpolling,
}

/// How a client connects: transport and hub protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dialect {
    pub(crate) transport: Transport,
    pub(crate) protocol: Protocol,
    /// Negotiates stateful reconnect (WebSockets: handshake version 2, numbered messages).
    pub(crate) stateful: bool,
}

impl Dialect {
    pub(crate) const JSON_WEBSOCKETS: Self = Self {
        transport: Transport::Websockets,
        protocol: Protocol::Json,
        stateful: false,
    };
}

impl std::fmt::Display for Dialect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let transport = match self.transport {
            Transport::Websockets => "WebSockets",
            Transport::Longpolling => "long polling",
        };
        write!(f, "{} over {transport}", self.protocol.name())?;
        if self.stateful {
            f.write_str(", stateful reconnect")?;
        }
        Ok(())
    }
}

/// The sending half of a connection.
pub(crate) enum Sender {
    Ws(SplitSink<Ws, Message>, Protocol),
    /// POSTs on a connection of their own, as browsers do.
    Http(Http, String),
}

impl Sender {
    /// Queues a message (WebSockets), or sends it (long polling: one POST each).
    pub(crate) async fn feed(&mut self, bytes: Vec<u8>) -> anyhow::Result<()> {
        match self {
            Self::Ws(sink, protocol) => {
                let message = if protocol.is_binary() {
                    Message::binary(bytes)
                } else {
                    Message::text(String::from_utf8(bytes)?)
                };
                sink.feed(message).await?;
            }
            Self::Http(http, path) => {
                let answer = http.request("POST", path, &bytes).await?;
                if answer.status != 200 {
                    bail!("POST answered {}", answer.status);
                }
            }
        }
        Ok(())
    }

    pub(crate) async fn flush(&mut self) -> anyhow::Result<()> {
        if let Self::Ws(sink, _) = self {
            sink.flush().await?;
        }
        Ok(())
    }

    pub(crate) async fn send(&mut self, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.feed(bytes).await?;
        self.flush().await
    }

    /// Closes a WebSocket with a close frame (a long-polling client just stops polling).
    pub(crate) async fn close(&mut self) {
        if let Self::Ws(sink, _) = self {
            // A socket the host closed already is closed.
            let _ = sink.close().await;
        }
    }
}

/// The receiving half of a connection.
pub(crate) enum Receiver {
    Ws(SplitStream<Ws>),
    /// Polls on a connection of their own; `first` holds what came with the handshake answer.
    Poll {
        http: Http,
        path: String,
        first: Option<Vec<u8>>,
    },
}

impl Receiver {
    /// The next bytes that arrive; `None` once the connection has ended.
    pub(crate) async fn next(&mut self) -> Option<Vec<u8>> {
        match self {
            Self::Ws(stream) => loop {
                match stream.next().await? {
                    Ok(Message::Text(text)) => return Some(text.as_bytes().to_vec()),
                    Ok(Message::Binary(bytes)) => return Some(bytes.to_vec()),
                    Ok(Message::Close(_)) | Err(_) => return None,
                    Ok(_) => {}
                }
            },
            Self::Poll { http, path, first } => {
                if let Some(bytes) = first.take().filter(|b| !b.is_empty()) {
                    return Some(bytes);
                }
                loop {
                    let answer = http.request("GET", path, &[]).await.ok()?;
                    match answer.status {
                        200 if answer.body.is_empty() => {}
                        200 => return Some(answer.body),
                        _ => return None,
                    }
                }
            }
        }
    }
}

/// Connects to the chat hub.
pub(crate) async fn connect(addr: &str, dialect: Dialect) -> anyhow::Result<(Sender, Receiver)> {
    connect_hub(addr, "chat", dialect, None).await
}

/// Connects to `hub` and completes the handshake; `source` picks the local address.
pub(crate) async fn connect_hub(
    addr: &str,
    hub: &str,
    dialect: Dialect,
    source: Option<std::net::IpAddr>,
) -> anyhow::Result<(Sender, Receiver)> {
    match dialect.transport {
        Transport::Websockets if dialect.protocol == Protocol::Signalr2 => {
            connect_signalr2(addr, hub, source).await
        }
        Transport::Longpolling if dialect.protocol == Protocol::Signalr2 => {
            bail!("loadgen speaks SignalR 2 over WebSockets only")
        }
        Transport::Websockets => connect_ws(addr, hub, dialect, source).await,
        Transport::Longpolling => connect_long_polling(addr, hub, dialect.protocol, source).await,
    }
}

/// Negotiates with `method` on `path`; the connection token, from the answer's `field`.
async fn negotiate(
    http: &mut Http,
    method: &str,
    path: &str,
    field: &str,
) -> anyhow::Result<String> {
    let negotiated = http.request(method, path, &[]).await?;
    let body: serde_json::Value = serde_json::from_slice(&negotiated.body)
        .with_context(|| format!("negotiate answered {}", negotiated.status))?;
    let token = body[field].as_str().context("negotiate gave no token")?;
    Ok(token.to_owned())
}

/// Negotiates a connection of `hub` with stateful reconnect; its token, once the host granted
/// it.
pub(crate) async fn negotiate_stateful(
    addr: &str,
    hub: &str,
    source: Option<std::net::IpAddr>,
) -> anyhow::Result<String> {
    let mut http = Http::connect(addr, source).await?;
    let path = format!("/{hub}/negotiate?negotiateVersion=1&useStatefulReconnect=true");
    let answer = http.request("POST", &path, &[]).await?;
    let body: serde_json::Value = serde_json::from_slice(&answer.body)
        .with_context(|| format!("negotiate answered {}", answer.status))?;
    if body["useStatefulReconnect"] != serde_json::Value::Bool(true) {
        bail!("the host did not grant stateful reconnect");
    }
    let token = body["connectionToken"]
        .as_str()
        .context("negotiate gave no token")?;
    Ok(token.to_owned())
}

/// A WebSocket to `path` (`/chat?id=…`) on `addr`, from `source`.
pub(crate) async fn websocket(
    addr: &str,
    path: &str,
    source: Option<std::net::IpAddr>,
) -> anyhow::Result<Ws> {
    let stream = tcp(addr, source).await?;
    let (ws, _) = tokio_tungstenite::client_async(
        format!("ws://{addr}{path}"),
        MaybeTlsStream::Plain(stream),
    )
    .await
    .context("WebSocket handshake")?;
    Ok(ws)
}

/// A TCP connection to `addr` from `source` (any local address if `None`).
async fn tcp(addr: &str, source: Option<std::net::IpAddr>) -> anyhow::Result<TcpStream> {
    let stream = match source {
        Some(ip) => {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(std::net::SocketAddr::new(ip, 0))?;
            socket.connect(addr.parse()?).await?
        }
        None => TcpStream::connect(addr).await?,
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A SignalR 2 connection over WebSockets, as the jQuery client makes it: negotiate, connect
/// (waiting for the init response), start. `hub` is the file's stem (`chat` → `chathub`).
async fn connect_signalr2(
    addr: &str,
    hub: &str,
    source: Option<std::net::IpAddr>,
) -> anyhow::Result<(Sender, Receiver)> {
    // `[{"name":"chathub"}]`, URL-encoded.
    let data = format!("%5B%7B%22name%22%3A%22{hub}hub%22%7D%5D");
    let mut http = Http::connect(addr, source).await?;
    let path = format!("/signalr/negotiate?clientProtocol=2.1&connectionData={data}");
    // Tokens are base64url and a dot: nothing to escape.
    let token = negotiate(&mut http, "GET", &path, "ConnectionToken").await?;
    let query = format!(
        "transport=webSockets&clientProtocol=2.1&connectionToken={token}&connectionData={data}"
    );
    let mut ws = websocket(addr, &format!("/signalr/connect?{query}&tid=1"), source).await?;
    let init = ws
        .next()
        .await
        .context("closed before the init response")??;
    if !init.into_data().windows(5).any(|w| w == b"\"S\":1") {
        bail!("no init response");
    }
    let started = http
        .request("GET", &format!("/signalr/start?{query}"), &[])
        .await?;
    if started.status != 200 {
        bail!("start answered {}", started.status);
    }
    let (sink, stream) = ws.split();
    Ok((Sender::Ws(sink, Protocol::Signalr2), Receiver::Ws(stream)))
}

async fn connect_ws(
    addr: &str,
    hub: &str,
    dialect: Dialect,
    source: Option<std::net::IpAddr>,
) -> anyhow::Result<(Sender, Receiver)> {
    let protocol = dialect.protocol;
    // Without stateful reconnect the socket is the whole connection (skipNegotiation).
    let (path, version) = if dialect.stateful {
        let token = negotiate_stateful(addr, hub, source).await?;
        (format!("/{hub}?id={token}"), 2)
    } else {
        (format!("/{hub}"), 1)
    };
    let mut ws = websocket(addr, &path, source).await?;
    ws.send(Message::text(String::from_utf8(
        protocol.handshake(version),
    )?))
    .await?;
    let answer = ws.next().await.context("closed during handshake")??;
    if !answer.into_data().starts_with(b"{}") {
        bail!("handshake refused");
    }
    let (sink, stream) = ws.split();
    let mut sender = Sender::Ws(sink, protocol);
    if dialect.stateful {
        // The host numbers what it sends once the client has said something.
        sender.send(protocol.ping()).await?;
    }
    Ok((sender, Receiver::Ws(stream)))
}

async fn connect_long_polling(
    addr: &str,
    hub: &str,
    protocol: Protocol,
    source: Option<std::net::IpAddr>,
) -> anyhow::Result<(Sender, Receiver)> {
    let mut posts = Http::connect(addr, source).await?;
    let path = format!("/{hub}/negotiate?negotiateVersion=1");
    let token = negotiate(&mut posts, "POST", &path, "connectionToken").await?;
    let path = format!("/{hub}?id={token}");
    let mut polls = Http::connect(addr, source).await?;
    if polls.request("GET", &path, &[]).await?.status != 200 {
        bail!("the first poll failed");
    }
    let answer = posts.request("POST", &path, &protocol.handshake(1)).await?;
    if answer.status != 200 {
        bail!("the handshake POST answered {}", answer.status);
    }
    // The handshake answer, and whatever came after it in the same poll.
    let mut received = Vec::new();
    let end = loop {
        if let Some(end) = received.iter().position(|&b| b == RS) {
            break end;
        }
        let answer = polls.request("GET", &path, &[]).await?;
        if answer.status != 200 {
            bail!("a poll during the handshake answered {}", answer.status);
        }
        received.extend_from_slice(&answer.body);
    };
    if !received.starts_with(b"{}") {
        bail!("handshake refused");
    }
    let rest = received.split_off(end + 1);
    Ok((
        Sender::Http(posts, path.clone()),
        Receiver::Poll {
            http: polls,
            path,
            first: Some(rest),
        },
    ))
}

/// Waits for the completion of invocation `id`, reading `receiver`; fails on an error
/// completion.
pub(crate) async fn completion(
    receiver: &mut Receiver,
    protocol: Protocol,
    id: &str,
) -> anyhow::Result<()> {
    let mut decoder = Decoder::new(protocol);
    loop {
        let bytes = receiver
            .next()
            .await
            .context("closed before the completion")?;
        let mut outcome = None;
        decoder.feed(&bytes, |event| {
            if let Event::Completion { id: got, error } = event
                && got == id
            {
                outcome = Some(error);
            }
        });
        match outcome {
            Some(None) => return Ok(()),
            Some(Some(error)) => bail!("invocation {id} failed: {error}"),
            None => {}
        }
    }
}

/// Nanoseconds since `epoch`, the clock that travels in messages.
pub(crate) fn nanos(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64
}

pub(crate) fn table(title: &str, rows: &[(&str, String)]) {
    println!("\n{title}");
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("  {k:width$}  {v}");
    }
}

pub(crate) fn ms(h: &Histogram<u64>, q: f64) -> String {
    format!("{:.2} ms", h.value_at_quantile(q) as f64 / 1e6)
}

/// Watches connections for the records of one client method whose last argument is the
/// sender's clock ([`nanos`]): counts them and their end-to-end latency.
pub(crate) struct Deliveries {
    epoch: Instant,
    target: &'static str,
    received: Arc<AtomicU64>,
    latencies: Arc<Mutex<Histogram<u64>>>,
    readers: Vec<JoinHandle<()>>,
}

fn latency_histogram() -> Histogram<u64> {
    // 1 µs to 60 s, 3 significant digits: cannot fail.
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3).expect("valid bounds")
}

impl Deliveries {
    /// Records `target` invocations; `epoch` is the clock senders put in them.
    pub(crate) fn new(epoch: Instant, target: &'static str) -> Self {
        Self {
            epoch,
            target,
            received: Arc::new(AtomicU64::new(0)),
            latencies: Arc::new(Mutex::new(latency_histogram())),
            readers: Vec::new(),
        }
    }

    /// Reads `receiver` until it ends.
    pub(crate) fn watch(&mut self, mut receiver: Receiver, protocol: Protocol) {
        let (epoch, received, latencies) =
            (self.epoch, self.received.clone(), self.latencies.clone());
        let target = self.target;
        self.readers.push(tokio::spawn(async move {
            let mut decoder = Decoder::new(protocol);
            let mut local = latency_histogram();
            let mut since_merge = 0u64;
            while let Some(bytes) = receiver.next().await {
                let mut count = 0;
                decoder.feed(&bytes, |event| {
                    if let Event::Invocation { target: t, last } = event
                        && t == target
                        && let Some(sent) = last.and_then(|s| s.parse::<u64>().ok())
                    {
                        let _ = local.record(nanos(epoch).saturating_sub(sent).max(1_000));
                        count += 1;
                    }
                });
                received.fetch_add(count, Ordering::Relaxed);
                since_merge += count;
                if since_merge >= 256 {
                    since_merge = 0;
                    let _ = latencies.lock().await.add(&local);
                    local.reset();
                }
            }
            let _ = latencies.lock().await.add(&local);
        }));
    }

    pub(crate) fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Waits until `expected` records have arrived, or 20 s.
    pub(crate) async fn drain(&self, expected: u64) {
        let started = Instant::now();
        while self.received() < expected && started.elapsed() < Duration::from_secs(20) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The latencies, once the streams have ended (their hosts stopped) or 5 s passed.
    pub(crate) async fn latencies(self) -> Histogram<u64> {
        for reader in self.readers {
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
        self.latencies.lock().await.clone()
    }
}
