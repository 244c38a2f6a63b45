//! `cuts`: broadcast load while the network keeps cutting clients off. C clients negotiate
//! stateful reconnect (JSON over WebSockets, handshake version 2); every second, `--cut-percent`
//! of them have their TCP connection reset (no WebSocket close) and resume on a new socket with
//! their connection token, as ASP.NET Core 8's client does; with `--resume-elsewhere` the new
//! socket goes to the next host, which takes the connection over. S other connections
//! broadcast chat messages numbered per sender.
//!
//! Each client numbers what it receives, acknowledges once a second, skips what a resume sends
//! again, and checks every sender's numbers arrive exactly once and in order. Reports
//! deliveries, lost and duplicated messages (both must be 0), resumes and their latency, and
//! host CPU per delivery; run with `--cut-percent 0` for the same load without cuts.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::sync::{Mutex, watch};
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message;

use crate::Args;
use crate::client::{Dialect, Ws, connect, ms, nanos, negotiate_stateful, table, websocket};
use crate::http::Http;
use crate::procs::{Backplane, Proc, redis_cli, start_cluster};
use crate::wire::{Protocol, RS};

/// What every client adds up.
#[derive(Default)]
struct Tally {
    delivered: AtomicU64,
    /// Numbers a sender skipped (gaps), as the clients saw them.
    gaps: AtomicU64,
    /// Messages that reached the application twice.
    duplicates: AtomicU64,
    /// Messages a resume sent again, which the client's numbering skipped.
    skipped: AtomicU64,
    resumes: AtomicU64,
    failed_resumes: AtomicU64,
}

/// What one cuts run measured.
pub(crate) struct CutStats {
    pub(crate) lost: u64,
    pub(crate) duplicates: u64,
}

pub(crate) async fn cuts(args: &Args, bin: &PathBuf, elsewhere: bool) -> anyhow::Result<CutStats> {
    let (backplane, hosts) = start_cluster(args, bin, args.hosts).await?;
    let addrs: Arc<Vec<String>> = Arc::new(hosts.iter().map(|h| h.addr.clone()).collect());
    let epoch = Instant::now();
    let tally = Arc::new(Tally::default());
    let latencies = Arc::new(Mutex::new(histogram()));
    let resume_times = Arc::new(Mutex::new(histogram()));
    // Each client watches the round number: it is cut when the round picks it.
    let (rounds, round) = watch::channel(0u64);
    let receivers = args.connections;
    let mut clients = Vec::new();
    for i in 0..receivers {
        let client = Client::connect(addrs.clone(), i % addrs.len()).await?;
        let context = Shared {
            elsewhere,
            index: i as u64,
            every: cut_every(args.cut_percent),
            epoch,
            tally: tally.clone(),
            latencies: latencies.clone(),
            resume_times: resume_times.clone(),
            round: round.clone(),
        };
        clients.push(tokio::spawn(client.run(context)));
    }
    let mut senders = Vec::new();
    for i in 0..args.senders {
        senders.push(
            connect(&hosts[i % hosts.len()].addr, Dialect::JSON_WEBSOCKETS)
                .await?
                .0,
        );
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let cpu_before: f64 = hosts.iter().map(Proc::cpu_seconds).sum();
    let redis_before = backplane.cpu();
    let memory_before = redis_memory(&backplane);
    let started = Instant::now();
    let per_sender = args.rate.max(1) as f64 / args.senders.max(1) as f64;
    let mut tasks = Vec::new();
    for (k, mut sink) in senders.into_iter().enumerate() {
        let duration = args.duration;
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while started.elapsed() < duration {
                let due = started + Duration::from_secs_f64(n as f64 / per_sender);
                tokio::time::sleep_until(due.into()).await;
                n += 1;
                let name = format!("s{k}:{n}");
                let clock = nanos(epoch).to_string();
                let frame = Protocol::Json.invocation(None, "Send", &[&name, &clock]);
                if sink.send(frame).await.is_err() {
                    break;
                }
            }
            (n, sink)
        }));
    }
    // The cuts: one round a second while senders send, each cutting its share of the clients.
    let cutting = tokio::spawn(async move {
        for n in 1.. {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if rounds.send(n).is_err() {
                break;
            }
        }
    });
    let mut sent = 0;
    let mut sinks = Vec::new();
    for task in tasks {
        let (n, sink) = task.await?;
        sent += n;
        sinks.push(sink);
    }
    cutting.abort();
    let send_time = started.elapsed();
    let expected = sent * receivers as u64;
    let waited = Instant::now();
    while tally.delivered.load(Ordering::Relaxed) < expected
        && waited.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total_time = started.elapsed();
    let cpu = hosts.iter().map(Proc::cpu_seconds).sum::<f64>() - cpu_before;
    // Read before the clients go (a record lives as long as its connection).
    let memory_after = redis_memory(&backplane);
    let redis_rows = backplane.cpu_rows(
        &redis_before,
        send_time.as_secs_f64(),
        sent,
        "Redis CPU per message",
    );
    let mut resumed_on_hosts = 0.0;
    let mut moved = 0.0;
    let mut replayed = 0.0;
    let mut checkpoints = 0.0;
    let mut durable_failures = 0.0;
    for host in &hosts {
        resumed_on_hosts += metric(&host.addr, "hubhost_reconnect_resumes_total").await?;
        moved += metric(&host.addr, "hubhost_reconnect_moves_in_total").await?;
        replayed += metric(&host.addr, "hubhost_reconnect_replayed_messages_total").await?;
        checkpoints += metric(&host.addr, "hubhost_reconnect_durable_checkpoints_total").await?;
        durable_failures +=
            metric(&host.addr, "hubhost_reconnect_durable_write_failures_total").await?;
    }
    let got = tally.delivered.load(Ordering::Relaxed);
    drop(sinks);
    for client in clients {
        client.abort();
    }
    let lost = expected.saturating_sub(got);
    let duplicates = tally.duplicates.load(Ordering::Relaxed);
    let h = latencies.lock().await.clone();
    let r = resume_times.lock().await.clone();
    let durable = args
        .host_arg
        .iter()
        .any(|a| a.trim_start_matches('-').starts_with("durable-reconnect"));
    let mut rows = vec![
        (
            "messages sent",
            format!("{sent} in {:.1} s", send_time.as_secs_f64()),
        ),
        ("deliveries", format!("{got} of {expected}")),
        ("lost", lost.to_string()),
        ("gaps seen", tally.gaps.load(Ordering::Relaxed).to_string()),
        ("duplicates delivered", duplicates.to_string()),
        (
            "resumes (clients / same host / moved)",
            format!(
                "{} / {resumed_on_hosts} / {moved} ({} failed)",
                tally.resumes.load(Ordering::Relaxed),
                tally.failed_resumes.load(Ordering::Relaxed)
            ),
        ),
        (
            "replayed (hosts) / skipped by clients",
            format!("{replayed} / {}", tally.skipped.load(Ordering::Relaxed)),
        ),
        ("resume p50", ms(&r, 0.50)),
        ("resume p99", ms(&r, 0.99)),
        ("latency p50", ms(&h, 0.50)),
        ("latency p99", ms(&h, 0.99)),
        ("latency max", format!("{:.2} ms", h.max() as f64 / 1e6)),
        (
            "host CPU-s / 1M deliveries",
            format!("{:.2}", cpu / (got.max(1) as f64 / 1e6)),
        ),
    ];
    rows.extend(redis_rows);
    if let (Some(before), Some(after)) = (memory_before, memory_after) {
        rows.push((
            "Redis memory (before / during)",
            format!("{:.1} / {:.1} MiB", mib(before), mib(after)),
        ));
    }
    // Durable reconnect's work, when the hosts run it.
    if checkpoints > 0.0 {
        rows.push((
            "durable checkpoints / failed writes",
            format!("{checkpoints} / {durable_failures}"),
        ));
    }
    rows.push(("run time", format!("{:.1} s", total_time.as_secs_f64())));
    table(
        &format!(
            "cuts: {receivers} stateful{} clients over {} host(s), {}% cut every second and resumed on {}, {} senders, {}/s",
            if durable { " (durable)" } else { "" },
            args.hosts,
            args.cut_percent,
            if elsewhere {
                "the next host"
            } else {
                "their host"
            },
            args.senders,
            args.rate
        ),
        &rows,
    );
    Ok(CutStats { lost, duplicates })
}

/// Bytes Redis uses, over every shard (`None` without Redis).
fn redis_memory(backplane: &Backplane) -> Option<u64> {
    let mut total = None;
    for redis in &backplane.redis {
        let info = redis_cli(redis, &["INFO", "memory"]).ok()?;
        let used = info
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:")?.trim().parse::<u64>().ok())?;
        *total.get_or_insert(0) += used;
    }
    total
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// One client in `every` is cut each round (0: none).
fn cut_every(percent: u64) -> u64 {
    if percent == 0 {
        0
    } else {
        (100 / percent.min(100)).max(1)
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 60 s, 3 significant digits: cannot fail.
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3).expect("valid bounds")
}

/// The value of an unlabelled metric on a host's `/metrics`.
async fn metric(addr: &str, name: &str) -> anyhow::Result<f64> {
    let mut http = Http::connect(addr, None).await?;
    let answer = http.request("GET", "/metrics", &[]).await?;
    let text = String::from_utf8_lossy(&answer.body);
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(f64::NAN))
}

struct Shared {
    /// Cut clients resume on the next host.
    elsewhere: bool,
    index: u64,
    every: u64,
    epoch: Instant,
    tally: Arc<Tally>,
    latencies: Arc<Mutex<Histogram<u64>>>,
    resume_times: Arc<Mutex<Histogram<u64>>>,
    round: watch::Receiver<u64>,
}

/// A client of the chat hub with stateful reconnect.
struct Client {
    /// Every host, and the one this client is on.
    hosts: Arc<Vec<String>>,
    at: usize,
    token: String,
    ws: Ws,
    /// The newest id received, and the id the next numbered message has.
    latest: u64,
    next: u64,
    acked: u64,
    /// Per sender, the last number seen.
    last: HashMap<String, u64>,
}

impl Client {
    async fn connect(hosts: Arc<Vec<String>>, at: usize) -> anyhow::Result<Self> {
        let addr = &hosts[at];
        let token = negotiate_stateful(addr, "chat", None).await?;
        let mut ws = websocket(addr, &format!("/chat?id={token}"), None).await?;
        ws.send(Message::text(String::from_utf8(
            Protocol::Json.handshake(2),
        )?))
        .await?;
        let answer = ws.next().await.context("closed during handshake")??;
        if !answer.into_data().starts_with(b"{}") {
            bail!("handshake refused");
        }
        // The host numbers its messages once the client said something.
        ws.send(Message::text(String::from_utf8(Protocol::Json.ping())?))
            .await?;
        Ok(Self {
            hosts: hosts.clone(),
            at,
            token,
            ws,
            latest: 0,
            next: 1,
            acked: 0,
            last: HashMap::new(),
        })
    }

    async fn run(mut self, mut context: Shared) {
        let mut local = histogram();
        let mut ack = tokio::time::interval(Duration::from_secs(1));
        let mut pending = Vec::new();
        loop {
            tokio::select! {
                message = self.ws.next() => match message {
                    Some(Ok(Message::Text(text))) => {
                        pending.extend_from_slice(text.as_bytes());
                        self.take(&mut pending, &context, &mut local);
                    }
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Ok(_)) => {}
                    Some(Err(_)) => {
                        if !self.resume(&context, &mut pending).await {
                            break;
                        }
                    }
                },
                _ = ack.tick() => {
                    if self.latest > self.acked {
                        self.acked = self.latest;
                        let frame = format!("{{\"type\":8,\"sequenceId\":{}}}\u{1e}", self.latest);
                        let _ = self.ws.send(Message::text(frame)).await;
                    }
                    let _ = context.latencies.lock().await.add(&local);
                    local.reset();
                }
                changed = context.round.changed() => {
                    if changed.is_err() {
                        continue;
                    }
                    let round = *context.round.borrow();
                    if context.every > 0 && (context.index + round).is_multiple_of(context.every) {
                        self.cut();
                        if context.elsewhere {
                            self.at = (self.at + 1) % self.hosts.len();
                        }
                        if !self.resume(&context, &mut pending).await {
                            break;
                        }
                    }
                }
            }
        }
        let _ = context.latencies.lock().await.add(&local);
    }

    /// Resets the TCP connection, as a network failure does: no WebSocket close.
    fn cut(&mut self) {
        if let MaybeTlsStream::Plain(tcp) = self.ws.get_ref() {
            // A zero linger makes the close a reset; it does not block (the worry that
            // deprecated it), as nothing waits to be sent.
            #[allow(deprecated)]
            let _ = tcp.set_linger(Some(Duration::ZERO));
        }
    }

    /// Resumes on a new socket: no handshake; the client's Sequence (it sent no numbered
    /// message, so 1), then the host's Sequence and its replay arrive.
    async fn resume(&mut self, context: &Shared, pending: &mut Vec<u8>) -> bool {
        let started = Instant::now();
        pending.clear();
        let path = format!("/chat?id={}", self.token);
        let ws = match websocket(&self.hosts[self.at], &path, None).await {
            Ok(ws) => ws,
            Err(_) => {
                context.tally.failed_resumes.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        };
        // The old socket goes (with a reset, if it was cut).
        self.ws = ws;
        if self
            .ws
            .send(Message::text("{\"type\":9,\"sequenceId\":1}\u{1e}"))
            .await
            .is_err()
        {
            context.tally.failed_resumes.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        context.tally.resumes.fetch_add(1, Ordering::Relaxed);
        let _ = context
            .resume_times
            .lock()
            .await
            .record(started.elapsed().as_nanos() as u64);
        true
    }

    /// Handles the complete messages of `pending`.
    fn take(&mut self, pending: &mut Vec<u8>, context: &Shared, local: &mut Histogram<u64>) {
        let mut used = 0;
        while let Some(end) = pending[used..].iter().position(|&b| b == RS) {
            let record = &pending[used..used + end];
            used += end + 1;
            let Ok(text) = std::str::from_utf8(record) else {
                continue;
            };
            let kind = text
                .strip_prefix("{\"type\":")
                .and_then(|t| t.split([',', '}']).next())
                .and_then(|t| t.parse::<u8>().ok())
                .unwrap_or(0);
            match kind {
                9 => {
                    if let Some(id) = sequence_id(text) {
                        self.next = id;
                    }
                }
                1..=5 => {
                    let id = self.next;
                    self.next += 1;
                    if id <= self.latest {
                        context.tally.skipped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    self.latest = id;
                    if kind == 1 && text.contains("\"target\":\"broadcastMessage\"") {
                        self.delivered(text, context, local);
                    }
                }
                _ => {}
            }
        }
        pending.drain(..used);
    }

    /// A chat message `["s<k>:<n>", "<clock>"]`: counted, timed and checked for order.
    fn delivered(&mut self, text: &str, context: &Shared, local: &mut Histogram<u64>) {
        let Some(arguments) = text
            .split_once("\"arguments\":[\"")
            .map(|(_, rest)| rest.trim_end_matches("\"]}"))
        else {
            return;
        };
        let Some((name, clock)) = arguments.split_once("\",\"") else {
            return;
        };
        let Some((sender, n)) = name.split_once(':') else {
            // Not a numbered sender (another scenario's message).
            return;
        };
        let Ok(n) = n.parse::<u64>() else {
            return;
        };
        let last = self.last.entry(sender.to_owned()).or_insert(0);
        if n <= *last {
            context.tally.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if n > *last + 1 {
            context
                .tally
                .gaps
                .fetch_add(n - *last - 1, Ordering::Relaxed);
        }
        *last = n;
        context.tally.delivered.fetch_add(1, Ordering::Relaxed);
        if let Ok(sent) = clock.parse::<u64>() {
            let _ = local.record(nanos(context.epoch).saturating_sub(sent).max(1_000));
        }
    }
}

/// The `sequenceId` of an Ack or Sequence.
fn sequence_id(text: &str) -> Option<u64> {
    let (_, rest) = text.split_once("\"sequenceId\":")?;
    rest.trim_end_matches('}').parse().ok()
}
