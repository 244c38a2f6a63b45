//! `echo`: sequential invoke round trips on one connection.

use std::path::PathBuf;
use std::time::Instant;

use hdrhistogram::Histogram;

use crate::Args;
use crate::client::{Dialect, completion, connect, ms, table};
use crate::procs::start_cluster;

/// Completions between two Acks of a stateful client.
const ACK_EVERY: usize = 100;

pub(crate) async fn echo(args: &Args, bin: &PathBuf, dialect: Dialect) -> anyhow::Result<()> {
    let (_redis, hosts) = start_cluster(args, bin, 1).await?;
    let (mut sender, mut receiver) = connect(&hosts[0].addr, dialect).await?;
    let mut h = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3)?;
    let started = Instant::now();
    for i in 0..args.calls {
        let t = Instant::now();
        let id = i.to_string();
        sender
            .send(dialect.protocol.invocation(Some(&id), "Echo", &["ping"]))
            .await?;
        completion(&mut receiver, dialect.protocol, &id).await?;
        h.record(t.elapsed().as_nanos() as u64)?;
        // Under stateful reconnect the host keeps what the client has not acknowledged, and
        // cuts off a client that never does once that fills: acknowledge as the official
        // clients do, now and then. Completions are the only numbered messages here.
        if dialect.stateful && (i + 1) % ACK_EVERY == 0 {
            sender.send(dialect.protocol.ack(i as u64 + 1)).await?;
        }
    }
    let total = started.elapsed();
    table(
        &format!(
            "echo ({dialect}): {} sequential invoke round trips, one connection",
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
