//! The processes a scenario starts: redis-server and hubhost hosts, with their CPU and memory.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::Args;

/// User + system CPU seconds in a `/proc/…/stat` file (a process's, or a thread's with
/// `/proc/thread-self/stat`); `None` if it cannot be read.
pub(crate) fn cpu_seconds(stat: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(stat).ok()?;
    // Fields after the command name (which may hold spaces), from the state on.
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

pub(crate) struct Proc {
    child: Child,
    pub(crate) addr: String,
}

impl Proc {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Kills the process (SIGKILL) and waits for it to exit.
    pub(crate) async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// User + system CPU seconds of the process so far.
    pub(crate) fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&format!("/proc/{}/stat", self.pid())).unwrap_or(0.0)
    }

    pub(crate) fn rss_kib(&self) -> u64 {
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

pub(crate) async fn free_port() -> anyhow::Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    Ok(listener.local_addr()?.port())
}

pub(crate) async fn start_redis() -> anyhow::Result<Proc> {
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

pub(crate) async fn start_host(
    bin: &PathBuf,
    hubs: &PathBuf,
    redis: Option<&Proc>,
    extra: &[String],
) -> anyhow::Result<Proc> {
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
    cmd.args(extra);
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

pub(crate) async fn http_status(addr: &str, path: &str) -> anyhow::Result<u16> {
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

/// Redis (for more than one host) and `hosts` hosts serving the hubs of `args.hubs`.
pub(crate) async fn start_cluster(
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
        procs.push(start_host(bin, &args.hubs, redis.as_ref(), &args.host_arg).await?);
    }
    Ok((redis, procs))
}
