//! `broadcast` and `native-vs-wasm`: every connection receives every message.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::floor::{self, Pace};
use crate::Args;
use crate::client::{Deliveries, Dialect, connect, ms, nanos, table};
use crate::procs::{Proc, start_cluster};

/// What one broadcast run measured.
pub(crate) struct BroadcastStats {
    pub(crate) deliveries_per_s: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) lost: u64,
    pub(crate) cpu_per_million: f64,
}

/// Runs the broadcast scenario with every client speaking `dialect`, and prints its table.
pub(crate) async fn broadcast(
    args: &Args,
    bin: &PathBuf,
    dialect: Dialect,
) -> anyhow::Result<BroadcastStats> {
    let (backplane, hosts) = start_cluster(args, bin, args.hosts).await?;
    let epoch = Instant::now();
    let mut deliveries = Deliveries::new(epoch, "broadcastMessage");
    let mut senders = Vec::new();
    for i in 0..args.connections {
        let (sink, stream) = connect(&hosts[i % hosts.len()].addr, dialect).await?;
        if i < args.senders {
            senders.push(sink);
        } else {
            drop(sink);
        }
        deliveries.watch(stream, dialect.protocol);
    }
    let receivers = args.connections as u64;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu_before: f64 = hosts.iter().map(Proc::cpu_seconds).sum();
    let redis_before = backplane.cpu();
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
                let clock = nanos(epoch).to_string();
                let frame = dialect
                    .protocol
                    .invocation(None, "Send", &["bench", &clock]);
                if sink.feed(frame).await.is_err() {
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
    deliveries.drain(expected).await;
    let total_time = started.elapsed();
    let cpu = hosts.iter().map(Proc::cpu_seconds).sum::<f64>() - cpu_before;
    let redis_rows = backplane.cpu_rows(
        &redis_before,
        send_time.as_secs_f64(),
        sent.load(Ordering::Relaxed),
        "Redis CPU per message",
    );
    let got = deliveries.received();
    // Closing the hosts ends the readers, which merge their last latencies.
    drop(sinks);
    drop(hosts);
    let h = deliveries.latencies().await;
    let lost = expected.saturating_sub(got);
    let stats = BroadcastStats {
        deliveries_per_s: got as f64 / total_time.as_secs_f64(),
        p50_ms: h.value_at_quantile(0.5) as f64 / 1e6,
        p99_ms: h.value_at_quantile(0.99) as f64 / 1e6,
        lost,
        cpu_per_million: cpu / (got.max(1) as f64 / 1e6),
    };
    // The kernel's cost of the same deliveries, measured right after (not for every dialect:
    // the frames are of one size, and the comparison is the WebSockets one).
    let floor = floor::after_load(
        args,
        Pace {
            sockets: args.connections,
            frames_per_s: stats.deliveries_per_s,
            frame_bytes: floor::frame_bytes(dialect.protocol, "broadcastMessage", &["bench"]),
            duration: args.duration,
        },
    )
    .await?;
    let mut rows = vec![
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
    ];
    rows.extend(redis_rows);
    if let Some(floor) = floor {
        rows.extend(floor.rows(stats.cpu_per_million));
    }
    table(
        &format!(
            "broadcast ({}, {dialect}): {} connections over {} host(s), {} senders, rate {}",
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
        &rows,
    );
    Ok(stats)
}

/// The broadcast scenario against `hubhost` (the chat hub as Wasm) and `hubhost-native` (the
/// same hub crate compiled into the host), alternating runs; returns whether messages were lost.
pub(crate) async fn native_vs_wasm(
    args: &Args,
    wasm_bin: &PathBuf,
    native_bin: &PathBuf,
) -> anyhow::Result<bool> {
    let mut wasm = Vec::new();
    let mut native = Vec::new();
    // The comparison here is between binaries, not with the kernel.
    let args = &Args {
        no_floor: true,
        ..args.clone()
    };
    for _ in 0..args.repeat {
        wasm.push(broadcast(args, wasm_bin, Dialect::JSON_WEBSOCKETS).await?);
        native.push(broadcast(args, native_bin, Dialect::JSON_WEBSOCKETS).await?);
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
