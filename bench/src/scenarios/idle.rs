//! `idle`: connections held open on one host, and the host's memory per connection.

use std::path::PathBuf;
use std::time::Duration;

use crate::Args;
use crate::client::{Dialect, Transport, connect_hub, table};
use crate::procs::start_cluster;

pub(crate) async fn idle(args: &Args, bin: &PathBuf, dialect: Dialect) -> anyhow::Result<()> {
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
        let (sender, mut receiver) = connect_hub(&host.addr, "lobby", dialect, source).await?;
        match dialect.transport {
            Transport::Websockets => held.push((sender, Some(receiver))),
            // An idle long-polling client keeps a poll waiting, as a browser does.
            Transport::Longpolling => {
                tokio::spawn(async move { while receiver.next().await.is_some() {} });
                held.push((sender, None));
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = host.rss_kib();
    table(
        &format!(
            "idle ({dialect}): {} connections held on one host",
            args.idle
        ),
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
