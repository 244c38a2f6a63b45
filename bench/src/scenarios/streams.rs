//! `streams`: many slow streams open on one host (the lobby hub's `Countdown`, one item a
//! second each): the host's memory per open stream and its CPU per streamed item.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::Mutex;

use crate::Args;
use crate::client::{Dialect, connect_hub, table};
use crate::procs::start_cluster;
use crate::wire::{Decoder, Event};

/// What a run measured; `stalled` streams got no item during the measured window.
pub(crate) struct StreamsReport {
    pub(crate) stalled: usize,
}

pub(crate) async fn streams(
    args: &Args,
    bin: &PathBuf,
    dialect: Dialect,
) -> anyhow::Result<StreamsReport> {
    let (_redis, hosts) = start_cluster(args, bin, 1).await?;
    let host = &hosts[0];
    let count = args.streams;
    let mut clients = Vec::with_capacity(count);
    for i in 0..count {
        let source =
            (count > 20_000).then(|| std::net::IpAddr::from([127, 0, 0, 1 + (i / 20_000) as u8]));
        clients.push(connect_hub(&host.addr, "lobby", dialect, source).await?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let connected = host.rss_kib();

    // Items per stream, and the gaps between a stream's items (1 s when the host keeps pace).
    let items: Arc<Vec<AtomicU64>> = Arc::new((0..count).map(|_| AtomicU64::new(0)).collect());
    // 1 ms to 60 s, 3 significant digits: cannot fail.
    let gaps = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1_000_000,
        60_000_000_000,
        3,
    )?));
    let mut held = Vec::with_capacity(count);
    let mut readers = Vec::with_capacity(count);
    // An hour-long countdown: items keep coming for the whole run.
    let invocation = dialect
        .protocol
        .stream_invocation("s", "Countdown", &[3600]);
    for (i, (mut sender, mut receiver)) in clients.into_iter().enumerate() {
        sender.send(invocation.clone()).await?;
        held.push(sender);
        let (items, gaps) = (items.clone(), gaps.clone());
        let protocol = dialect.protocol;
        readers.push(tokio::spawn(async move {
            let mut decoder = Decoder::new(protocol);
            let mut last: Option<Instant> = None;
            while let Some(bytes) = receiver.next().await {
                let mut arrived = 0;
                decoder.feed(&bytes, |event| {
                    if event == Event::StreamItem {
                        arrived += 1;
                    }
                });
                if arrived == 0 {
                    continue;
                }
                let now = Instant::now();
                if let Some(last) = last {
                    let gap = now.duration_since(last).as_nanos() as u64;
                    let _ = gaps.lock().await.record(gap.max(1_000_000));
                }
                last = Some(now);
                items[i].fetch_add(arrived, Ordering::Relaxed);
            }
        }));
    }
    // Every stream has started and settled into its pace.
    tokio::time::sleep(Duration::from_secs(3)).await;
    gaps.lock().await.reset();
    let streaming = host.rss_kib();
    let before: Vec<u64> = items.iter().map(|n| n.load(Ordering::Relaxed)).collect();
    let cpu_before = host.cpu_seconds();
    let started = Instant::now();
    tokio::time::sleep(args.duration).await;
    let cpu = host.cpu_seconds() - cpu_before;
    let elapsed = started.elapsed().as_secs_f64();
    let after: Vec<u64> = items.iter().map(|n| n.load(Ordering::Relaxed)).collect();
    let delivered: u64 = after.iter().zip(&before).map(|(a, b)| a - b).sum();
    let stalled = after.iter().zip(&before).filter(|(a, b)| a == b).count();
    let gaps = gaps.lock().await.clone();
    let per_stream = connected_delta(streaming, connected, count);
    table(
        &format!(
            "streams ({dialect}): {count} open streams on one host, one item a second each, {:.0} s measured",
            elapsed
        ),
        &[
            ("host RSS, connections only", format!("{connected} KiB")),
            ("host RSS, streams open", format!("{streaming} KiB")),
            ("per open stream", format!("{per_stream:.2} KiB")),
            ("items/s", format!("{:.0}", delivered as f64 / elapsed)),
            (
                "host CPU",
                format!("{:.1} % of one core", 100.0 * cpu / elapsed),
            ),
            (
                "host CPU per item",
                format!("{:.1} µs", 1e6 * cpu / delivered.max(1) as f64),
            ),
            (
                "gap between a stream's items p50 / p99 / max",
                format!(
                    "{:.0} / {:.0} / {:.0} ms",
                    gaps.value_at_quantile(0.5) as f64 / 1e6,
                    gaps.value_at_quantile(0.99) as f64 / 1e6,
                    gaps.max() as f64 / 1e6
                ),
            ),
            ("streams that stalled", stalled.to_string()),
        ],
    );
    drop(held);
    for reader in readers {
        reader.abort();
    }
    Ok(StreamsReport { stalled })
}

fn connected_delta(streaming: u64, connected: u64, count: usize) -> f64 {
    streaming.saturating_sub(connected) as f64 / count.max(1) as f64
}
