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
    spawn_redis(&[]).await
}

/// A redis-server on a free port with `extra` flags, once it accepts connections.
async fn spawn_redis(extra: &[String]) -> anyhow::Result<Proc> {
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
        .args(extra)
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

/// What the hosts share: nothing (one host, the in-memory backplane), one Redis, or the masters
/// of a Redis Cluster.
pub(crate) struct Backplane {
    pub(crate) redis: Vec<Proc>,
    /// A cluster's node files, removed at the end (none for one Redis).
    dir: Option<PathBuf>,
}

impl Backplane {
    pub(crate) fn none() -> Self {
        Self {
            redis: Vec::new(),
            dir: None,
        }
    }

    pub(crate) async fn one_redis() -> anyhow::Result<Self> {
        Ok(Self {
            redis: vec![start_redis().await?],
            dir: None,
        })
    }

    /// A Redis Cluster of `shards` masters without replicas (3 at least), every slot assigned.
    pub(crate) async fn cluster(shards: usize) -> anyhow::Result<Self> {
        if shards < 3 {
            bail!("a Redis Cluster needs at least 3 shards");
        }
        let dir = std::env::temp_dir().join(format!("loadgen-cluster-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut redis = Vec::new();
        for _ in 0..shards {
            let extra = [
                "--cluster-enabled".to_owned(),
                "yes".to_owned(),
                "--dir".to_owned(),
                dir.to_string_lossy().into_owned(),
                "--cluster-config-file".to_owned(),
                format!("nodes-{}.conf", redis.len()),
            ];
            redis.push(spawn_redis(&extra).await?);
        }
        let mut create = std::process::Command::new("redis-cli");
        create.args(["--cluster", "create"]);
        create.args(redis.iter().map(|r| r.addr.clone()));
        create.args(["--cluster-replicas", "0", "--cluster-yes"]);
        let out = create
            .output()
            .context("cannot run redis-cli --cluster create")?;
        if !out.status.success() {
            bail!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        let backplane = Self {
            redis,
            dir: Some(dir),
        };
        for _ in 0..200 {
            if backplane.redis.iter().all(|r| {
                redis_cli(r, &["CLUSTER", "INFO"]).is_ok_and(|i| i.contains("cluster_state:ok"))
            }) {
                return Ok(backplane);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the Redis Cluster did not come up")
    }

    fn is_cluster(&self) -> bool {
        self.dir.is_some()
    }

    /// The flags that put a host on it.
    pub(crate) fn host_args(&self) -> Vec<String> {
        let urls: Vec<String> = self
            .redis
            .iter()
            .map(|r| format!("redis://{}", r.addr))
            .collect();
        match (self.is_cluster(), urls.first()) {
            (_, None) => Vec::new(),
            (false, Some(url)) => vec!["--redis".into(), url.clone()],
            (true, Some(_)) => vec!["--redis-cluster".into(), urls.join(",")],
        }
    }

    /// CPU seconds of each Redis (each shard of a cluster) so far.
    pub(crate) fn cpu(&self) -> Vec<f64> {
        self.redis.iter().map(Proc::cpu_seconds).collect()
    }

    /// Rows of Redis CPU since `before` (from [`cpu`](Self::cpu)), over `seconds` and per
    /// `per` (messages, say, in the row named `per_label`): the total and, on a cluster, each
    /// shard's.
    pub(crate) fn cpu_rows(
        &self,
        before: &[f64],
        seconds: f64,
        per: u64,
        per_label: &'static str,
    ) -> Vec<(&'static str, String)> {
        let used: Vec<f64> = self
            .cpu()
            .iter()
            .zip(before)
            .map(|(now, then)| now - then)
            .collect();
        if used.is_empty() {
            return Vec::new();
        }
        let total: f64 = used.iter().sum();
        let mut rows = vec![
            (
                per_label,
                format!("{:.2} µs", total / per.max(1) as f64 * 1e6),
            ),
            (
                "Redis CPU",
                format!("{:.1} % of one core", total / seconds * 100.0),
            ),
        ];
        if self.is_cluster() {
            let shards: Vec<String> = used
                .iter()
                .map(|u| format!("{:.1}", u / seconds * 100.0))
                .collect();
            rows.push((
                "Redis CPU per shard",
                format!("{} % of one core", shards.join(" / ")),
            ));
        }
        rows
    }
}

impl Drop for Backplane {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Runs redis-cli against `redis`; its output, trimmed.
pub(crate) fn redis_cli(redis: &Proc, args: &[&str]) -> anyhow::Result<String> {
    let (host, port) = redis.addr.split_once(':').context("Redis address")?;
    let out = std::process::Command::new("redis-cli")
        .args(["-h", host, "-p", port])
        .args(args)
        .output()
        .context("cannot run redis-cli")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

pub(crate) async fn start_host(
    bin: &PathBuf,
    hubs: &PathBuf,
    backplane: &[String],
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
    cmd.args(backplane);
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

/// A backplane (for more than one host: one Redis, or a cluster of `--redis-shards`) and
/// `hosts` hosts serving the hubs of `args.hubs`.
pub(crate) async fn start_cluster(
    args: &Args,
    bin: &PathBuf,
    hosts: usize,
) -> anyhow::Result<(Backplane, Vec<Proc>)> {
    let backplane = match (hosts, args.redis_shards) {
        (0 | 1, _) => Backplane::none(),
        (_, 0 | 1) => Backplane::one_redis().await?,
        (_, shards) => Backplane::cluster(shards).await?,
    };
    let mut procs = Vec::new();
    for _ in 0..hosts {
        procs.push(start_host(bin, &args.hubs, &backplane.host_args(), &args.host_arg).await?);
    }
    Ok((backplane, procs))
}
