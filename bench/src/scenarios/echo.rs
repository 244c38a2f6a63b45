//! `echo`: sequential invoke round trips on one connection.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio_tungstenite::tungstenite::Message;

use crate::Args;
use crate::client::{RS, connect, ms, table};
use crate::procs::start_cluster;

pub(crate) async fn echo(args: &Args, bin: &PathBuf) -> anyhow::Result<()> {
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
