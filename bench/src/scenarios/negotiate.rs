//! `negotiate-flood`: negotiations that never connect, as from a client that floods the
//! endpoint. Each costs the host an entry until it expires; the host must refuse them past its
//! cap rather than grow its memory.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::Args;
use crate::client::table;
use crate::procs::start_cluster;

/// Concurrent keep-alive connections the requests are spread over.
const WORKERS: usize = 16;

/// Sends `count` negotiate requests on one keep-alive connection; returns (200s, 503s).
async fn negotiate_many(addr: String, count: usize) -> anyhow::Result<(u64, u64)> {
    let stream = TcpStream::connect(&addr).await?;
    stream.set_nodelay(true)?;
    let mut stream = BufReader::new(stream);
    let request = "POST /chat/negotiate?negotiateVersion=1 HTTP/1.1\r\nHost: loadgen\r\nContent-Length: 0\r\n\r\n";
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..count {
        stream.get_mut().write_all(request.as_bytes()).await?;
        let mut line = String::new();
        stream.read_line(&mut line).await?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("not an HTTP answer: {line:?}"))?;
        let mut length = 0usize;
        loop {
            line.clear();
            stream.read_line(&mut line).await?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse()?;
            }
        }
        let mut body = vec![0; length];
        stream.read_exact(&mut body).await?;
        match status {
            200 => ok += 1,
            503 => refused += 1,
            other => bail!("negotiate answered {other}"),
        }
    }
    Ok((ok, refused))
}

pub(crate) async fn negotiate_flood(args: &Args, bin: &PathBuf) -> anyhow::Result<()> {
    let (_redis, hosts) = start_cluster(args, bin, 1).await?;
    let host = &hosts[0];
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = host.rss_kib();
    let started = Instant::now();
    let (ok, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let count = args.negotiations / WORKERS + usize::from(w < args.negotiations % WORKERS);
        let (addr, ok, refused) = (host.addr.clone(), ok.clone(), refused.clone());
        workers.push(tokio::spawn(async move {
            let (o, r) = negotiate_many(addr, count).await?;
            ok.fetch_add(o, Ordering::Relaxed);
            refused.fetch_add(r, Ordering::Relaxed);
            anyhow::Ok(())
        }));
    }
    for worker in workers {
        worker.await??;
    }
    let elapsed = started.elapsed();
    let after = host.rss_kib();
    let (ok, refused) = (ok.load(Ordering::Relaxed), refused.load(Ordering::Relaxed));
    table(
        &format!(
            "negotiate-flood ({}): {} negotiations that never connect, one host",
            bin.file_name().unwrap_or_default().to_string_lossy(),
            args.negotiations
        ),
        &[
            (
                "requests/s",
                format!("{:.0}", args.negotiations as f64 / elapsed.as_secs_f64()),
            ),
            ("answered 200", ok.to_string()),
            ("refused (503)", refused.to_string()),
            ("host RSS before", format!("{before} KiB")),
            ("host RSS after", format!("{after} KiB")),
            (
                "growth",
                format!("{:.1} MiB", after.saturating_sub(before) as f64 / 1024.0),
            ),
        ],
    );
    Ok(())
}
