//! `rooms`: many small rooms with sparse messages, as real chat traffic is. Connections are
//! spread over the hosts and over rooms (chat groups) of `--room-size`, so every room has
//! members on every host; each connection sends to its room `--client-rate` times a second,
//! at its own phase, and every member (the sender too) receives each message.

use std::path::{Path, PathBuf};

use anyhow::Context;
use std::time::{Duration, Instant};

use super::floor::{self, Pace};
use crate::Args;
use crate::client::{
    Deliveries, Dialect, Receiver, Sender, completion, connect_hub, ms, nanos, table,
};
use crate::procs::{Proc, start_cluster};
use crate::wire::Protocol;

/// What one rooms run measured.
pub(crate) struct RoomsStats {
    pub(crate) lost: u64,
}

fn room_of(connection: usize, room_size: usize) -> String {
    format!("room-{}", connection / room_size)
}

/// Joins `room` and waits for the completion (the hub's `joined` notices may come first).
async fn join(
    sender: &mut Sender,
    receiver: &mut Receiver,
    dialect: Dialect,
    room: &str,
) -> anyhow::Result<()> {
    let join = dialect
        .protocol
        .invocation(Some("join"), "JoinRoom", &[room]);
    sender.send(join).await?;
    completion(receiver, dialect.protocol, "join").await
}

/// The hub room `room` is in: rooms take turns over `copies` copies of the chat hub.
fn hub_of(room: usize, copies: usize) -> String {
    match room % copies.max(1) {
        0 => "chat".to_owned(),
        k => format!("chat{}", k + 1),
    }
}

/// A hubs directory with `copies` copies of the chat hub of `hubs` (named as [`hub_of`] names
/// them), or `hubs` itself for one.
fn hub_copies(hubs: &Path, copies: usize) -> anyhow::Result<PathBuf> {
    if copies <= 1 {
        return Ok(hubs.to_owned());
    }
    let dir = std::env::temp_dir().join(format!("loadgen-hubs-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for room in 0..copies {
        std::fs::copy(
            hubs.join("chat.wasm"),
            dir.join(format!("{}.wasm", hub_of(room, copies))),
        )
        .context("cannot copy chat.wasm")?;
    }
    Ok(dir)
}

pub(crate) async fn rooms(args: &Args, bin: &PathBuf) -> anyhow::Result<RoomsStats> {
    let copies = args.hub_copies.max(1);
    let mut args = args.clone();
    args.hubs = hub_copies(&args.hubs, copies)?;
    let args = &args;
    let (backplane, hosts) = start_cluster(args, bin, args.hosts).await?;
    let room_size = args.room_size.max(1);
    let connections = args.connections;
    let epoch = Instant::now();
    let mut deliveries = Deliveries::new(epoch, "roomMessage");
    let mut sinks = Vec::new();
    let dialect = Dialect::JSON_WEBSOCKETS;
    for i in 0..connections {
        let hub = hub_of(i / room_size, copies);
        let (mut sink, mut stream) =
            connect_hub(&hosts[i % hosts.len()].addr, &hub, dialect, None).await?;
        join(&mut sink, &mut stream, dialect, &room_of(i, room_size)).await?;
        sinks.push(sink);
        deliveries.watch(stream, dialect.protocol);
    }
    // Members per room (the last one may be smaller).
    let members = |room: usize| room_size.min(connections - room * room_size) as u64;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu_before: f64 = hosts.iter().map(Proc::cpu_seconds).sum();
    let redis_before = backplane.cpu();
    let started = Instant::now();
    let period = Duration::from_secs_f64(1.0 / args.client_rate.max(0.001));
    let mut senders = Vec::new();
    for (i, mut sink) in sinks.into_iter().enumerate() {
        let duration = args.duration;
        let room = room_of(i, room_size);
        // Spread the connections' phases over the period, as independent users would be.
        let phase = period.mul_f64(((i * 7919) % 1000) as f64 / 1000.0);
        senders.push(tokio::spawn(async move {
            let mut sent = 0u64;
            loop {
                let due = started + phase + period * sent as u32;
                if due.duration_since(started) >= duration {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                let clock = nanos(epoch).to_string();
                let frame =
                    dialect
                        .protocol
                        .invocation(None, "SendToRoom", &[&room, "bench", &clock]);
                if sink.send(frame).await.is_err() {
                    break;
                }
                sent += 1;
            }
            (sent, sink)
        }));
    }
    let mut sent = 0u64;
    let mut expected = 0u64;
    let mut held = Vec::new();
    for (i, task) in senders.into_iter().enumerate() {
        let (n, sink) = task.await?;
        sent += n;
        expected += n * members(i / room_size);
        held.push(sink);
    }
    let send_time = started.elapsed();
    deliveries.drain(expected).await;
    let total_time = started.elapsed();
    let cpu = hosts.iter().map(Proc::cpu_seconds).sum::<f64>() - cpu_before;
    let redis_rows = backplane.cpu_rows(
        &redis_before,
        send_time.as_secs_f64(),
        sent,
        "Redis CPU per message",
    );
    let got = deliveries.received();
    drop(held);
    drop(hosts);
    let h = deliveries.latencies().await;
    let lost = expected.saturating_sub(got);
    let per = |n: u64| cpu / (n.max(1) as f64) * 1e6;
    // The kernel's cost of the same deliveries, measured right after.
    // A member of the last room gets the longest room name.
    let last_room = room_of(connections.saturating_sub(1), room_size);
    let floor = floor::after_load(
        args,
        Pace {
            sockets: connections,
            frames_per_s: got as f64 / send_time.as_secs_f64(),
            frame_bytes: floor::frame_bytes(Protocol::Json, "roomMessage", &[&last_room, "bench"]),
            duration: args.duration,
        },
    )
    .await?;
    let mut rows = vec![
        (
            "messages sent",
            format!("{sent} in {:.1} s", send_time.as_secs_f64()),
        ),
        ("deliveries", format!("{got} of {expected}")),
        (
            "deliveries/s",
            format!("{:.0}", got as f64 / total_time.as_secs_f64()),
        ),
        ("latency p50", ms(&h, 0.50)),
        ("latency p90", ms(&h, 0.90)),
        ("latency p99", ms(&h, 0.99)),
        ("latency p99.9", ms(&h, 0.999)),
        ("latency max", format!("{:.2} ms", h.max() as f64 / 1e6)),
        ("lost", lost.to_string()),
        ("host CPU per delivery", format!("{:.1} µs", per(got))),
        ("host CPU per message", format!("{:.1} µs", per(sent))),
        (
            "host CPU",
            format!("{:.1} % of one core", cpu / send_time.as_secs_f64() * 100.0),
        ),
    ];
    rows.extend(redis_rows);
    if let Some(floor) = floor {
        rows.extend(floor.rows(per(got)));
    }
    table(
        &format!(
            "rooms ({}): {connections} connections over {} host(s), rooms of {room_size}, {} msg/s each",
            bin.file_name().unwrap_or_default().to_string_lossy(),
            args.hosts,
            args.client_rate
        ),
        &rows,
    );
    Ok(RoomsStats { lost })
}
