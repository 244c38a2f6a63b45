//! `loadgen`: measures hubhost end to end, the way clients see it.
//!
//! It starts what a scenario needs (a `redis-server` on a free port, 1–3 `hubhost` processes
//! serving the chat hub), connects clients speaking the SignalR JSON protocol over WebSockets,
//! and prints one table per scenario:
//!
//! - `broadcast`: C connections over H hosts; S of them send chat messages (at a fixed total
//!   rate, or as fast as they can with `--rate 0`); every connection receives every message.
//!   Reports deliveries/s, end-to-end latency percentiles (the send time travels in the message),
//!   messages lost, and host CPU-seconds per million deliveries.
//! - `echo`: invoke-with-result round trips on one connection: p50/p99 and calls/s.
//! - `idle`: N idle connections on one host: host RSS per connection.
//! - `hub-call`: one hub invocation (the chat hub's `Echo` and `Send`) through the runtime, in
//!   process: with instance reuse, with a fresh instance per call, and the same hub compiled
//!   natively (`cargo bench -p loadgen` measures the same with criterion).
//! - `native-vs-wasm`: the broadcast scenario against `hubhost` (chat hub as Wasm) and
//!   `hubhost-native` (the same hub crate compiled into the host), alternating; compares
//!   deliveries/s and host CPU per delivery.
//!
//! `--quick` runs every scenario small and fails if any message was lost (CI runs it; it asserts
//! nothing about speed). See docs/performance.md for how to run the full figures.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const RS: char = '\u{1e}';

#[derive(Debug, Clone, Parser)]
#[command(name = "loadgen", about = "hubhost load generator")]
struct Args {
    /// Scenarios to run: broadcast, echo, idle, hub-call, native-vs-wasm (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "broadcast,echo,idle,hub-call,native-vs-wasm"
    )]
    scenarios: Vec<String>,
    /// Connections (broadcast).
    #[arg(short = 'c', long, default_value_t = 1000)]
    connections: usize,
    /// Hosts sharing one Redis (1 uses the in-memory backplane).
    #[arg(short = 'H', long, default_value_t = 2)]
    hosts: usize,
    /// Senders among the connections (broadcast).
    #[arg(short = 's', long, default_value_t = 10)]
    senders: usize,
    /// Total messages per second over all senders; 0 sends as fast as possible.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// How long the broadcast scenario sends.
    #[arg(long, default_value = "10", value_parser = parse_secs)]
    duration: Duration,
    /// Round trips (echo).
    #[arg(long, default_value_t = 20_000)]
    calls: usize,
    /// Idle connections (idle); past ~28,000 they use several 127.0.0.x source addresses.
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// The hubhost binary (default: target/release/hubhost, else target/debug/hubhost).
    #[arg(long)]
    host_bin: Option<PathBuf>,
    /// Directory with chat.wasm (default: target/hubs).
    #[arg(long, default_value = "target/hubs")]
    hubs: PathBuf,
    /// The hubhost-native binary (default: beside the hubhost binary).
    #[arg(long)]
    native_bin: Option<PathBuf>,
    /// Runs of each binary in native-vs-wasm (alternating, averaged).
    #[arg(long, default_value_t = 2)]
    repeat: usize,
    /// Small runs of every scenario that fail if a message is lost; for CI.
    #[arg(long)]
    quick: bool,
}

fn parse_secs(text: &str) -> Result<Duration, String> {
    text.trim_end_matches('s')
        .parse::<f64>()
        .map(Duration::from_secs_f64)
        .map_err(|e| format!("'{text}': {e}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.connections = 100;
        args.hosts = 2;
        args.senders = 4;
        args.rate = 200;
        args.duration = Duration::from_secs(2);
        args.calls = 2000;
        args.idle = 1000;
        args.repeat = 1;
    }
    raise_fd_limit();
    let bin = match &args.host_bin {
        Some(bin) => bin.clone(),
        None if PathBuf::from("target/release/hubhost").exists() => "target/release/hubhost".into(),
        None => "target/debug/hubhost".into(),
    };
    let native_bin = args
        .native_bin
        .clone()
        .unwrap_or_else(|| bin.with_file_name("hubhost-native"));
    println!("hubhost binary: {}", bin.display());
    let mut failed = false;
    for scenario in args.scenarios.clone() {
        match scenario.as_str() {
            "broadcast" => failed |= broadcast(&args, &bin).await?.lost > 0,
            "native-vs-wasm" => failed |= native_vs_wasm(&args, &bin, &native_bin).await?,
            "echo" => echo(&args, &bin).await?,
            "idle" => idle(&args, &bin).await?,
            "hub-call" => hub_call(&args).await?,
            other => bail!("unknown scenario '{other}'"),
        }
    }
    if failed {
        bail!("messages were lost");
    }
    Ok(())
}

/// Raises the open-files limit to the hard limit (each connection is a socket here and in the
/// host, which inherits the limit) and reports it.
fn raise_fd_limit() {
    match hubhost::raise_open_files_limit() {
        Some((before, after)) => println!("open files limit: {after} (was {before})"),
        None => println!("open files limit: unknown"),
    }
}

// ---------------------------------------------------------------------------------------------
// Processes

struct Proc {
    child: Child,
    addr: String,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// User + system CPU seconds of the process so far.
    fn cpu_seconds(&self) -> f64 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())) else {
            return 0.0;
        };
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let ticks: f64 = fields
            .get(11)
            .and_then(|u| u.parse::<f64>().ok())
            .unwrap_or(0.0)
            + fields
                .get(12)
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or(0.0);
        ticks / 100.0
    }

    fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    }
}

async fn free_port() -> anyhow::Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    Ok(listener.local_addr()?.port())
}

async fn start_redis() -> anyhow::Result<Proc> {
    let port = free_port().await?;
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start redis-server")?;
    let addr = format!("127.0.0.1:{port}");
    for _ in 0..200 {
        if TcpStream::connect(&addr).await.is_ok() {
            return Ok(Proc { child, addr });
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    bail!("redis-server did not start")
}

async fn start_host(bin: &PathBuf, hubs: &PathBuf, redis: Option<&Proc>) -> anyhow::Result<Proc> {
    let mut cmd = Command::new(bin);
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--no-demo",
        "--rate-limit",
        "0",
        "--outbox",
        "65536",
        "--hubs",
    ])
    .arg(hubs)
    .env("HUBHOST_LOG", "warn,hubhost=info")
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .kill_on_drop(true);
    if let Some(redis) = redis {
        cmd.args(["--redis", &format!("redis://{}", redis.addr)]);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            if line.contains("hubhost listening") {
                let v: serde_json::Value = serde_json::from_str(&line)?;
                let addr = v["fields"]["address"]
                    .as_str()
                    .context("no address")?
                    .to_owned();
                return anyhow::Ok(addr);
            }
        }
        bail!("hubhost exited before listening")
    })
    .await
    .context("hubhost did not start")??;
    // Keep draining its log so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    // Wait until ready (joined the backplane).
    for _ in 0..400 {
        if http_status(&addr, "/readyz").await.unwrap_or(0) == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Ok(Proc { child, addr })
}

async fn http_status(addr: &str, path: &str) -> anyhow::Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut buf = vec![0; 64];
    let n = s.read(&mut buf).await?;
    let head = String::from_utf8_lossy(&buf[..n]);
    Ok(head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0))
}

// ---------------------------------------------------------------------------------------------
// A minimal SignalR JSON client

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn connect(addr: &str, source: Option<std::net::IpAddr>) -> anyhow::Result<Ws> {
    connect_hub(addr, "chat", source).await
}

async fn connect_hub(
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
fn nanos(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64
}

fn table(title: &str, rows: &[(&str, String)]) {
    println!("\n{title}");
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("  {k:width$}  {v}");
    }
}

fn ms(h: &Histogram<u64>, q: f64) -> String {
    format!("{:.2} ms", h.value_at_quantile(q) as f64 / 1e6)
}

// ---------------------------------------------------------------------------------------------
// Scenarios

async fn start_cluster(
    args: &Args,
    bin: &PathBuf,
    hosts: usize,
) -> anyhow::Result<(Option<Proc>, Vec<Proc>)> {
    let redis = if hosts > 1 {
        Some(start_redis().await?)
    } else {
        None
    };
    let mut procs = Vec::new();
    for _ in 0..hosts {
        procs.push(start_host(bin, &args.hubs, redis.as_ref()).await?);
    }
    Ok((redis, procs))
}

/// What one broadcast run measured.
struct BroadcastStats {
    deliveries_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    lost: u64,
    cpu_per_million: f64,
}

/// Runs the broadcast scenario and prints its table.
async fn broadcast(args: &Args, bin: &PathBuf) -> anyhow::Result<BroadcastStats> {
    let (_redis, hosts) = start_cluster(args, bin, args.hosts).await?;
    let epoch = Instant::now();
    let latencies = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1_000,
        60_000_000_000,
        3,
    )?));
    let received = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    let mut senders = Vec::new();
    for i in 0..args.connections {
        let ws = connect(&hosts[i % hosts.len()].addr, None).await?;
        let (sink, mut stream) = ws.split();
        if i < args.senders {
            senders.push(sink);
        } else {
            drop(sink);
        }
        let (latencies, received) = (latencies.clone(), received.clone());
        readers.push(tokio::spawn(async move {
            let mut local =
                Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3).expect("bounds");
            let mut since_merge = 0u64;
            while let Some(Ok(msg)) = stream.next().await {
                let Ok(text) = msg.to_text() else { continue };
                let mut count = 0;
                for record in text.split(RS).filter(|r| r.contains("broadcastMessage")) {
                    // {"type":1,"target":"broadcastMessage","arguments":["bench","<sent-ns>"]}
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
        }));
    }
    let receivers = args.connections as u64;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu_before: f64 = hosts.iter().map(Proc::cpu_seconds).sum();
    let started = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let per_sender_rate = if args.rate == 0 {
        0.0
    } else {
        args.rate as f64 / args.senders as f64
    };
    let mut tasks = Vec::new();
    for mut sink in senders {
        let (sent, duration) = (sent.clone(), args.duration);
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while started.elapsed() < duration {
                if per_sender_rate > 0.0 {
                    let due = started + Duration::from_secs_f64(n as f64 / per_sender_rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let frame = format!(
                    "{{\"type\":1,\"target\":\"Send\",\"arguments\":[\"bench\",\"{}\"]}}{RS}",
                    nanos(epoch)
                );
                if sink.feed(Message::text(frame)).await.is_err() {
                    break;
                }
                n += 1;
                if per_sender_rate > 0.0 || n.is_multiple_of(16) {
                    let _ = sink.flush().await;
                }
                // Bound what is in flight when sending flat out, so the measurement is of
                // delivery rather than of queues growing.
                if per_sender_rate == 0.0 && n.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
            }
            let _ = sink.flush().await;
            sent.fetch_add(n, Ordering::Relaxed);
            sink
        }));
    }
    let mut sinks = Vec::new();
    for t in tasks {
        sinks.push(t.await?);
    }
    let send_time = started.elapsed();
    let expected = sent.load(Ordering::Relaxed) * receivers;
    // Let deliveries drain.
    let drain_start = Instant::now();
    while received.load(Ordering::Relaxed) < expected
        && drain_start.elapsed() < Duration::from_secs(20)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total_time = started.elapsed();
    let cpu = hosts.iter().map(Proc::cpu_seconds).sum::<f64>() - cpu_before;
    let got = received.load(Ordering::Relaxed);
    // Closing the hosts ends the readers, which merge their last latencies.
    drop(sinks);
    drop(hosts);
    for r in readers {
        let _ = tokio::time::timeout(Duration::from_secs(5), r).await;
    }
    let h = latencies.lock().await;
    let lost = expected.saturating_sub(got);
    let stats = BroadcastStats {
        deliveries_per_s: got as f64 / total_time.as_secs_f64(),
        p50_ms: h.value_at_quantile(0.5) as f64 / 1e6,
        p99_ms: h.value_at_quantile(0.99) as f64 / 1e6,
        lost,
        cpu_per_million: cpu / (got.max(1) as f64 / 1e6),
    };
    table(
        &format!(
            "broadcast ({}): {} connections over {} host(s), {} senders, rate {}",
            bin.file_name().unwrap_or_default().to_string_lossy(),
            args.connections,
            args.hosts,
            args.senders,
            if args.rate == 0 {
                "max".to_owned()
            } else {
                format!("{}/s", args.rate)
            }
        ),
        &[
            (
                "messages sent",
                format!(
                    "{} in {:.1} s",
                    sent.load(Ordering::Relaxed),
                    send_time.as_secs_f64()
                ),
            ),
            ("deliveries", format!("{got} of {expected}")),
            ("deliveries/s", format!("{:.0}", stats.deliveries_per_s)),
            ("latency p50", ms(&h, 0.50)),
            ("latency p90", ms(&h, 0.90)),
            ("latency p99", ms(&h, 0.99)),
            ("latency max", format!("{:.2} ms", h.max() as f64 / 1e6)),
            ("lost", lost.to_string()),
            (
                "host CPU-s / 1M deliveries",
                format!("{:.2}", stats.cpu_per_million),
            ),
        ],
    );
    Ok(stats)
}

/// The broadcast scenario against `hubhost` (the chat hub as Wasm) and `hubhost-native` (the
/// same hub crate compiled into the host), alternating runs; returns whether messages were lost.
async fn native_vs_wasm(
    args: &Args,
    wasm_bin: &PathBuf,
    native_bin: &PathBuf,
) -> anyhow::Result<bool> {
    let mut wasm = Vec::new();
    let mut native = Vec::new();
    for _ in 0..args.repeat {
        wasm.push(broadcast(args, wasm_bin).await?);
        native.push(broadcast(args, native_bin).await?);
    }
    let mean = |runs: &[BroadcastStats], f: fn(&BroadcastStats) -> f64| {
        runs.iter().map(f).sum::<f64>() / runs.len().max(1) as f64
    };
    let row = |runs: &[BroadcastStats]| {
        format!(
            "{:.0} deliveries/s, p50 {:.2} ms, p99 {:.2} ms, {:.3} CPU-s / 1M deliveries",
            mean(runs, |r| r.deliveries_per_s),
            mean(runs, |r| r.p50_ms),
            mean(runs, |r| r.p99_ms),
            mean(runs, |r| r.cpu_per_million),
        )
    };
    let cpu_ratio = mean(&native, |r| r.cpu_per_million) / mean(&wasm, |r| r.cpu_per_million);
    let rate_ratio = mean(&wasm, |r| r.deliveries_per_s) / mean(&native, |r| r.deliveries_per_s);
    table(
        &format!(
            "native-vs-wasm: the chat hub in the broadcast scenario, mean of {} run(s) each",
            args.repeat
        ),
        &[
            ("wasm", row(&wasm)),
            ("native", row(&native)),
            ("wasm / native deliveries/s", format!("{rate_ratio:.3}")),
            (
                "wasm / native throughput per CPU-second",
                format!("{cpu_ratio:.3}"),
            ),
        ],
    );
    Ok(wasm.iter().chain(&native).any(|r| r.lost > 0))
}

async fn echo(args: &Args, bin: &PathBuf) -> anyhow::Result<()> {
    let (_redis, hosts) = start_cluster(args, bin, 1).await?;
    let mut ws = connect(&hosts[0].addr, None).await?;
    let mut h = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3)?;
    let started = Instant::now();
    for i in 0..args.calls {
        let t = Instant::now();
        ws.send(Message::text(format!(
            "{{\"type\":1,\"invocationId\":\"{i}\",\"target\":\"Echo\",\"arguments\":[\"ping\"]}}{RS}"
        )))
        .await?;
        loop {
            let msg = ws.next().await.context("closed")??;
            if msg.to_text().unwrap_or("").contains("\"type\":3") {
                break;
            }
        }
        h.record(t.elapsed().as_nanos() as u64)?;
    }
    let total = started.elapsed();
    table(
        &format!(
            "echo: {} sequential invoke round trips, one connection",
            args.calls
        ),
        &[
            (
                "calls/s",
                format!("{:.0}", args.calls as f64 / total.as_secs_f64()),
            ),
            ("p50", ms(&h, 0.50)),
            ("p99", ms(&h, 0.99)),
            ("max", format!("{:.2} ms", h.max() as f64 / 1e6)),
        ],
    );
    Ok(())
}

async fn idle(args: &Args, bin: &PathBuf) -> anyhow::Result<()> {
    let (_redis, hosts) = start_cluster(args, bin, 1).await?;
    let host = &hosts[0];
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = host.rss_kib();
    let mut held = Vec::with_capacity(args.idle);
    for i in 0..args.idle {
        // Beyond one source address's ephemeral ports, use 127.0.0.2, .3, ...
        let source = (args.idle > 20_000)
            .then(|| std::net::IpAddr::from([127, 0, 0, 1 + (i / 20_000) as u8]));
        // The lobby hub does nothing on connect: the chat hub would broadcast the online count
        // to everyone at every connect, and idle clients do not read.
        held.push(connect_hub(&host.addr, "lobby", source).await?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = host.rss_kib();
    table(
        &format!("idle: {} connections held on one host", args.idle),
        &[
            ("host RSS before", format!("{before} KiB")),
            ("host RSS after", format!("{after} KiB")),
            (
                "per connection",
                format!(
                    "{:.2} KiB",
                    (after.saturating_sub(before)) as f64 / args.idle as f64
                ),
            ),
        ],
    );
    drop(held);
    Ok(())
}

async fn hub_call(args: &Args) -> anyhow::Result<()> {
    use hubhost::runtime::Call;
    use loadgen::hub_call::{CALLS, Variant, caller, chat_hub};

    let calls = if args.quick {
        2_000
    } else {
        args.calls.max(20_000)
    };
    let caller = caller();
    let mut rows = Vec::new();
    for variant in Variant::ALL {
        let hub = chat_hub(&args.hubs, variant)?;
        for (method, arguments) in CALLS {
            let call = Call::Invoke { method, arguments };
            for _ in 0..200 {
                hub.call(&caller, call)
                    .await
                    .result
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            let mut h = Histogram::<u64>::new_with_bounds(10, 10_000_000_000, 3)?;
            let n = if variant == Variant::WasmFresh {
                calls / 4
            } else {
                calls
            };
            for _ in 0..n {
                let t = Instant::now();
                let outcome = hub.call(&caller, call).await;
                h.record(t.elapsed().as_nanos() as u64)?;
                outcome.result.map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            let us = |q: f64| format!("{:.2} µs", h.value_at_quantile(q) as f64 / 1e3);
            rows.push((
                format!("{method}, {}", variant.label()),
                format!("p50 {}, p99 {} ({n} calls)", us(0.5), us(0.99)),
            ));
        }
    }
    let rows: Vec<(&str, String)> = rows.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    table(
        "hub-call: one invocation of the chat hub, in process",
        &rows,
    );
    Ok(())
}
