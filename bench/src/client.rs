//! A minimal SignalR JSON client over WebSockets, and the helpers every scenario prints with.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::stream::SplitStream;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub(crate) const RS: char = '\u{1e}';

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub(crate) async fn connect(addr: &str, source: Option<std::net::IpAddr>) -> anyhow::Result<Ws> {
    connect_hub(addr, "chat", source).await
}

pub(crate) async fn connect_hub(
    addr: &str,
    hub: &str,
    source: Option<std::net::IpAddr>,
) -> anyhow::Result<Ws> {
    let stream = match source {
        Some(ip) => {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(std::net::SocketAddr::new(ip, 0))?;
            socket.connect(addr.parse()?).await?
        }
        None => TcpStream::connect(addr).await?,
    };
    stream.set_nodelay(true)?;
    let (mut ws, _) = tokio_tungstenite::client_async(
        format!("ws://{addr}/{hub}"),
        MaybeTlsStream::Plain(stream),
    )
    .await
    .context("WebSocket handshake")?;
    ws.send(Message::text(format!(
        "{{\"protocol\":\"json\",\"version\":1}}{RS}"
    )))
    .await?;
    let answer = ws.next().await.context("closed during handshake")??;
    if !answer.to_text().unwrap_or("").starts_with("{}") {
        bail!("handshake refused: {answer}");
    }
    Ok(ws)
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

    /// Reads `stream` until it ends.
    pub(crate) fn watch(&mut self, mut stream: SplitStream<Ws>) {
        let (epoch, received, latencies) =
            (self.epoch, self.received.clone(), self.latencies.clone());
        let needle = format!("\"target\":\"{}\"", self.target);
        self.readers.push(tokio::spawn(async move {
            let mut local = latency_histogram();
            let mut since_merge = 0u64;
            while let Some(Ok(msg)) = stream.next().await {
                let Ok(text) = msg.to_text() else { continue };
                let mut count = 0;
                for record in text.split(RS).filter(|r| r.contains(&needle)) {
                    // {"type":1,"target":"…","arguments":[…,"<sent-ns>"]}
                    if let Some(sent) = record
                        .rsplit('"')
                        .nth(1)
                        .and_then(|s| s.parse::<u64>().ok())
                    {
                        let _ = local.record(nanos(epoch).saturating_sub(sent).max(1_000));
                        count += 1;
                    }
                }
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
