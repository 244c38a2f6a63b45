//! `loadgen`: measures hubhost end to end, the way clients see it.
//!
//! It starts what a scenario needs (a `redis-server` on a free port, 1–3 `hubhost` processes
//! serving the chat hub), connects clients speaking SignalR (JSON or MessagePack, over WebSockets
//! or long polling: `--protocol`, `--transport`; `broadcast`, `echo` and `idle` run once for
//! each combination given), and prints one table per scenario:
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
//! - `rooms`: C connections over H hosts in rooms (chat groups) of `--room-size`; every
//!   connection sends to its room `--client-rate` times a second. Reports deliveries/s, latency
//!   percentiles, messages lost, and host CPU per delivery. Real chat traffic looks like this:
//!   many small rooms with sparse messages.
//! - `floor`: the kernel's own cost of delivering frames: minimal writer threads write frames to
//!   C loopback TCP sockets (TCP_NODELAY) at the rooms load's pace (`--client-rate` ×
//!   `--room-size` a second each), one `write()` per frame; reports writer CPU per frame. rooms
//!   and broadcast measure it after their load, at their own pace and frame size, and print
//!   host CPU per delivery as a multiple of it (`--no-floor` leaves it out).
//! - `negotiate-flood`: `--negotiations` negotiate requests that never connect, against one
//!   host: how many are refused, and the host's memory before and after.
//! - `streams`: `--streams` clients on one host each stream the lobby hub's `Countdown` (one
//!   item a second): host memory per open stream, CPU per item, and the gaps between a
//!   stream's items.
//!
//! - `cuts`: broadcast load on C clients with stateful reconnect while `--cut-percent` of them
//!   have their TCP connection reset every second and resume (on the same host, or with
//!   `--resume-elsewhere` on the next one): messages lost and duplicated (both must be 0),
//!   resume latency, host CPU per delivery.
//!
//! - `presence`: what presence costs over Redis: connects and disconnects (Redis script time and
//!   CPU, host CPU, per cycle), heartbeats at rest with `--idle` connections in rooms, and how
//!   long dropping a killed host's share and rewriting the shares after a FLUSHALL take.
//!
//! `--quick` runs every scenario small and fails if any message was lost (CI runs it; it asserts
//! nothing about speed). See docs/performance.md for how to run the full figures.

mod client;
mod http;
mod procs;
mod scenarios;
mod wire;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::Parser;

use client::{Dialect, Transport};
use scenarios::Pace;
use wire::Protocol;

#[derive(Debug, Clone, Parser)]
#[command(name = "loadgen", about = "hubhost load generator")]
struct Args {
    /// Scenarios to run: broadcast, echo, idle, hub-call, native-vs-wasm, rooms, floor,
    /// negotiate-flood, streams, cuts, presence (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "broadcast,echo,idle,hub-call,native-vs-wasm,rooms,floor,negotiate-flood,streams,cuts,presence"
    )]
    scenarios: Vec<String>,
    /// Hub protocols clients speak (broadcast, echo, idle, streams), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "json")]
    protocol: Vec<Protocol>,
    /// Transports clients use (broadcast, echo, idle, streams), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "websockets")]
    transport: Vec<Transport>,
    /// Connections (broadcast).
    #[arg(short = 'c', long, default_value_t = 1000)]
    connections: usize,
    /// Hosts sharing one Redis (1 uses the in-memory backplane).
    #[arg(short = 'H', long, default_value_t = 2)]
    hosts: usize,
    /// With 2 or more hosts, a Redis Cluster of this many masters (no replicas; 3 or more)
    /// instead of one Redis, for broadcast and rooms: each Redis's CPU is shown.
    #[arg(long, default_value_t = 0)]
    redis_shards: usize,
    /// Rooms are spread over this many copies of the chat hub (`chat`, `chat2`, …), as
    /// separate applications would be; on a cluster each hub lives on one shard (rooms).
    #[arg(long, default_value_t = 1)]
    hub_copies: usize,
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
    /// Connections per room (rooms).
    #[arg(long, default_value_t = 8)]
    room_size: usize,
    /// Messages per second each connection sends to its room (rooms).
    #[arg(long, default_value_t = 5.0)]
    client_rate: f64,
    /// Open streams (streams); past ~28,000 they use several 127.0.0.x source addresses.
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    /// Negotiations sent (negotiate-flood).
    #[arg(long, default_value_t = 200_000)]
    negotiations: usize,
    /// Clients negotiate stateful reconnect (idle, echo; WebSockets, JSON or MessagePack).
    #[arg(long)]
    stateful: bool,
    /// Share of the clients whose connection is cut each second (cuts), in percent.
    #[arg(long, default_value_t = 10)]
    cut_percent: u64,
    /// Clients that are cut resume on the next host, which takes their connection over from
    /// the host that held it (cuts; needs 2 or more hosts).
    #[arg(long)]
    resume_elsewhere: bool,
    /// A flag for every host, after loadgen's own (repeatable), e.g. `--host-arg=--write-delay=5ms`.
    #[arg(long, allow_hyphen_values = true)]
    host_arg: Vec<String>,
    /// Leaves out the kernel floor that rooms and broadcast measure after their load (see the
    /// floor scenario).
    #[arg(long)]
    no_floor: bool,
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
        args.negotiations = 20_000;
        args.streams = 200;
        args.protocol = vec![Protocol::Json, Protocol::Messagepack, Protocol::Signalr2];
        args.transport = vec![Transport::Websockets, Transport::Longpolling];
    }
    let stateful = args.stateful;
    let dialects: Vec<Dialect> = args
        .transport
        .iter()
        .flat_map(|&transport| {
            args.protocol.iter().map(move |&protocol| Dialect {
                transport,
                protocol,
                stateful,
            })
        })
        // loadgen speaks SignalR 2 over WebSockets only.
        .filter(|d| d.protocol != Protocol::Signalr2 || d.transport == Transport::Websockets)
        .collect();
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
            "broadcast" => {
                for &dialect in &dialects {
                    failed |= scenarios::broadcast(&args, &bin, dialect).await?.lost > 0;
                }
            }
            "native-vs-wasm" => {
                failed |= scenarios::native_vs_wasm(&args, &bin, &native_bin).await?
            }
            "echo" => {
                for &dialect in &dialects {
                    scenarios::echo(&args, &bin, dialect).await?;
                }
            }
            "idle" => {
                for &dialect in &dialects {
                    scenarios::idle(&args, &bin, dialect).await?;
                }
            }
            "hub-call" => scenarios::hub_call(&args).await?,
            "rooms" => failed |= scenarios::rooms(&args, &bin).await?.lost > 0,
            "floor" => {
                // The rooms load's shape.
                let frames_per_s =
                    args.connections as f64 * args.client_rate * args.room_size as f64;
                scenarios::floor(Pace {
                    sockets: args.connections,
                    frames_per_s,
                    frame_bytes: 110,
                    duration: args.duration,
                })
                .await?;
            }
            "cuts" => {
                // The quick run resumes on the same host and on the other.
                let ways = if args.quick {
                    vec![false, true]
                } else {
                    vec![args.resume_elsewhere]
                };
                for elsewhere in ways {
                    let stats = scenarios::cuts(&args, &bin, elsewhere).await?;
                    failed |= stats.lost > 0 || stats.duplicates > 0;
                }
            }
            "negotiate-flood" => scenarios::negotiate_flood(&args, &bin).await?,
            "presence" => scenarios::presence(&args, &bin).await?,
            "streams" => {
                // SignalR 2 has no streams.
                for &dialect in dialects.iter().filter(|d| d.protocol != Protocol::Signalr2) {
                    failed |= scenarios::streams(&args, &bin, dialect).await?.stalled > 0;
                }
            }
            other => bail!("unknown scenario '{other}'"),
        }
    }
    if failed {
        bail!("messages were lost (or streams stalled)");
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
