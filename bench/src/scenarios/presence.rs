//! `presence`: what presence costs Redis and the hosts, over H hosts sharing a Redis.
//!
//! 1. Churn: `--connections` clients connect and disconnect, 16 at a time, on the chat hub
//!    (which reads the online count through presence in every on-connected and
//!    on-disconnected) and on the lobby hub (which never reads presence, so none is written).
//! 2. Heartbeats: `--idle` clients stay connected, each in a room of `--room-size`, while the
//!    hosts beat (a 3 s presence TTL, so a beat a second per host and hub).
//! 3. A host is killed: past its share's time of death, the other hosts' heartbeats drop it,
//!    500 entries per script.
//! 4. Redis is emptied (FLUSHALL): every host writes its share again on its next beat.
//!
//! Redis time is read from `INFO commandstats` (the scripts' own microseconds), besides the
//! CPU of the Redis and host processes.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::Args;
use crate::client::{Dialect, Receiver, Sender, connect, connect_hub, table};
use crate::http::Http;
use crate::procs::{Backplane, Proc, redis_cli, start_host};

/// Clients connecting and disconnecting at once in the churn.
const WORKERS: usize = 16;
const TTL: &str = "3s";

/// Calls and microseconds of Lua scripts Redis has run so far.
#[derive(Debug, Clone, Copy, Default)]
struct Scripts {
    calls: u64,
    usec: u64,
}

impl std::ops::Sub for Scripts {
    type Output = Self;
    fn sub(self, earlier: Self) -> Self {
        Self {
            calls: self.calls - earlier.calls,
            usec: self.usec - earlier.usec,
        }
    }
}

fn scripts(redis: &Proc) -> anyhow::Result<Scripts> {
    let info = redis_cli(redis, &["INFO", "commandstats"])?;
    let mut total = Scripts::default();
    for line in info.lines() {
        let Some(stats) = line
            .strip_prefix("cmdstat_evalsha:")
            .or_else(|| line.strip_prefix("cmdstat_eval:"))
        else {
            continue;
        };
        for field in stats.split(',') {
            match field.split_once('=') {
                Some(("calls", n)) => total.calls += n.parse::<u64>()?,
                Some(("usec", n)) => total.usec += n.parse::<u64>()?,
                _ => {}
            }
        }
    }
    Ok(total)
}

/// The longest script Redis ran (µs) since the last call, which starts the count again: Redis's
/// slow log keeps every script over 1 ms.
fn slowest_script(redis: &Proc) -> anyhow::Result<u64> {
    let (host, port) = redis.addr.split_once(':').context("Redis address")?;
    let out = std::process::Command::new("redis-cli")
        .args(["-h", host, "-p", port, "--json", "SLOWLOG", "GET", "100000"])
        .output()
        .context("cannot run redis-cli")?;
    let entries: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "SLOWLOG GET did not answer JSON: {:?}",
                String::from_utf8_lossy(&out.stdout[..out.stdout.len().min(300)])
            )
        })?;
    let longest = entries
        .iter()
        .filter(|e| {
            e[3][0].as_str().is_some_and(|c| {
                c.eq_ignore_ascii_case("evalsha") || c.eq_ignore_ascii_case("eval")
            })
        })
        .filter_map(|e| e[2].as_u64())
        .max()
        .unwrap_or(0);
    redis_cli(redis, &["CONFIG", "SET", "slowlog-log-slower-than", "1000"])?;
    redis_cli(redis, &["CONFIG", "SET", "slowlog-max-len", "100000"])?;
    redis_cli(redis, &["SLOWLOG", "RESET"])?;
    Ok(longest)
}

/// Connections of the chat hub presence counts, over every host.
fn counted(redis: &Proc) -> anyhow::Result<u64> {
    let n = redis_cli(redis, &["HLEN", "{hubhost:chat}:presence:n"])?;
    n.parse().with_context(|| format!("HLEN answered {n:?}"))
}

/// Waits until presence counts `n` connections; how long that took.
async fn settle(redis: &Proc, n: u64, within: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        if counted(redis)? == n {
            return Ok(started.elapsed());
        }
        if started.elapsed() > within {
            bail!(
                "presence counts {} connections, not {n}, after {within:?}",
                counted(redis)?
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until presence counts `n` room memberships of the chat hub.
async fn memberships(redis: &Proc, n: u64) -> anyhow::Result<()> {
    const SUM: &str = "local n = 0 for _, k in ipairs(redis.call('KEYS', ARGV[1])) do n = n + redis.call('HLEN', k) end return n";
    let started = Instant::now();
    loop {
        let counted = redis_cli(redis, &["EVAL", SUM, "0", "{hubhost:chat}:presence:g:*"])?;
        if counted.parse::<u64>().ok() == Some(n) {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("presence counts {counted} room memberships, not {n}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn cpu(procs: &[Proc]) -> f64 {
    procs.iter().map(Proc::cpu_seconds).sum()
}

/// Waits until no host holds a connection of `hub` (each has run its disconnects).
async fn emptied(addrs: &[String], hub: &str) -> anyhow::Result<()> {
    let sample = format!("hubhost_hub_connections{{hub=\"{hub}\"}} ");
    let started = Instant::now();
    for addr in addrs {
        loop {
            let mut http = Http::connect(addr, None).await?;
            let metrics = http.request("GET", "/metrics", &[]).await?;
            let text = String::from_utf8_lossy(&metrics.body);
            let held = text
                .lines()
                .find_map(|l| l.strip_prefix(sample.as_str()))
                .and_then(|n| n.trim().parse::<f64>().ok())
                .unwrap_or(0.0);
            if held == 0.0 {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("{addr} still holds {held} connections of {hub}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

pub(crate) async fn presence(args: &Args, bin: &PathBuf) -> anyhow::Result<()> {
    let backplane = Backplane::one_redis().await?;
    let redis = backplane.redis.first().context("no Redis")?;
    let mut extra = args.host_arg.clone();
    extra.extend(["--presence-ttl".to_owned(), TTL.to_owned()]);
    let mut hosts = Vec::new();
    for _ in 0..args.hosts.max(2) {
        hosts.push(start_host(bin, &args.hubs, &backplane.host_args(), &extra).await?);
    }
    let addrs: Vec<String> = hosts.iter().map(|h| h.addr.clone()).collect();
    let dialect = Dialect::JSON_WEBSOCKETS;

    // 1. Churn, on a hub that reads presence and on one that does not.
    let cycles = args.connections;
    let mut rows = Vec::new();
    for hub in ["chat", "lobby"] {
        let (scripts0, redis0, hosts0) = (scripts(redis)?, redis.cpu_seconds(), cpu(&hosts));
        let started = Instant::now();
        let mut workers = Vec::new();
        for w in 0..WORKERS {
            let count = cycles / WORKERS + usize::from(w < cycles % WORKERS);
            let addrs = addrs.clone();
            workers.push(tokio::spawn(async move {
                for i in 0..count {
                    let addr = &addrs[(w + i) % addrs.len()];
                    let (sender, receiver) = connect_hub(addr, hub, dialect, None).await?;
                    close(sender, receiver).await;
                }
                anyhow::Ok(())
            }));
        }
        for worker in workers {
            worker.await??;
        }
        emptied(&addrs, hub).await?;
        let took = started.elapsed();
        let churned = scripts(redis)? - scripts0;
        let n = cycles as u64;
        rows.push((
            hub,
            n as f64 / took.as_secs_f64(),
            churned.calls as f64 / n as f64,
            churned.usec as f64 / n as f64,
            (redis.cpu_seconds() - redis0) * 1e6 / n as f64,
            (cpu(&hosts) - hosts0) * 1e6 / n as f64,
        ));
    }
    println!(
        "\npresence churn: {cycles} connects and disconnects per hub over {} hosts, {WORKERS} at a time",
        hosts.len()
    );
    println!(
        "  {:<34} {:>9} {:>8} {:>12} {:>12} {:>12}",
        "hub", "cycles/s", "scripts", "script time", "Redis CPU", "host CPU"
    );
    for (hub, rate, calls, usec, redis_us, host_us) in rows {
        let name = if hub == "chat" {
            "chat (reads presence)"
        } else {
            "lobby (never reads presence)"
        };
        println!(
            "  {name:<34} {rate:>9.0} {calls:>8.1} {usec:>9.1} µs {redis_us:>9.1} µs {host_us:>9.1} µs"
        );
    }
    println!("  (per connect and disconnect; scripts are Redis Lua calls, their time Redis's own)");

    // 2. Heartbeats, with idle clients in rooms.
    let idle = args.idle;
    let mut held = Vec::with_capacity(idle);
    for i in 0..idle {
        let (mut sender, receiver) = connect(&addrs[i % addrs.len()], dialect).await?;
        let room = format!("room-{}", i / args.room_size.max(1));
        sender
            .send(dialect.protocol.invocation(None, "JoinRoom", &[&room]))
            .await?;
        held.push((sender, receiver));
    }
    let watch = tokio::spawn(drain_all(held));
    settle(redis, idle as u64, Duration::from_secs(30)).await?;
    memberships(redis, idle as u64).await?;
    let window = Duration::from_secs(if args.quick { 3 } else { 10 });
    let (scripts1, redis1, hosts1) = (scripts(redis)?, redis.cpu_seconds(), cpu(&hosts));
    tokio::time::sleep(window).await;
    let beats = scripts(redis)? - scripts1;
    let beats_redis = redis.cpu_seconds() - redis1;
    let beats_hosts = cpu(&hosts) - hosts1;
    let per_beat = beats.usec as f64 / beats.calls.max(1) as f64;

    // 3. A host is killed; past its share's time of death, the other hosts drop it.
    let mut doomed = hosts.remove(0);
    let share = idle.div_ceil(addrs.len()) as u64;
    let before = scripts(redis)?;
    slowest_script(redis)?;
    doomed.kill().await;
    let gone = settle(redis, idle as u64 - share, Duration::from_secs(10)).await?;
    let reap = scripts(redis)? - before;
    // The beats in that window cost what beats cost; the rest is the drop.
    let reap_usec = reap.usec as f64 - per_beat * reap.calls.saturating_sub(1) as f64;
    let reap_longest = slowest_script(redis)?;

    // 4. Redis emptied: the hosts left write their shares again.
    let left = idle as u64 - share;
    let before = scripts(redis)?;
    slowest_script(redis)?;
    redis_cli(redis, &["FLUSHALL"])?;
    let back = settle(redis, left, Duration::from_secs(10)).await?;
    let rewrite = scripts(redis)? - before;
    let rewrite_longest = slowest_script(redis)?;
    let rewrite_usec =
        rewrite.usec as f64 - per_beat * rewrite.calls.saturating_sub(hosts.len() as u64) as f64;
    watch.abort();

    let idle_s = window.as_secs_f64();
    table(
        &format!(
            "presence at rest: {idle} idle connections in rooms of {} over {} hosts (TTL {TTL})",
            args.room_size,
            addrs.len()
        ),
        &[
            (
                "heartbeats/s (scripts)",
                format!("{:.1}", beats.calls as f64 / idle_s),
            ),
            ("script time per heartbeat", format!("{per_beat:.1} µs")),
            (
                "Redis CPU/s at rest",
                format!("{:.2} ms", beats_redis * 1e3 / idle_s),
            ),
            (
                "host CPU/s at rest (all hosts)",
                format!("{:.2} ms", beats_hosts * 1e3 / idle_s),
            ),
            (
                "killed host's share dropped after",
                format!("{:.2} s", gone.as_secs_f64()),
            ),
            (
                "dropping it: script time",
                format!(
                    "{:.2} ms ({:.2} µs per connection)",
                    reap_usec / 1e3,
                    reap_usec / share as f64
                ),
            ),
            (
                "dropping it: longest script",
                format!("{:.2} ms", reap_longest as f64 / 1e3),
            ),
            (
                "rewritten after FLUSHALL within",
                format!("{:.2} s", back.as_secs_f64()),
            ),
            (
                "rewriting: script time",
                format!(
                    "{:.2} ms ({:.2} µs per connection)",
                    rewrite_usec / 1e3,
                    rewrite_usec / left.max(1) as f64
                ),
            ),
            (
                "rewriting: longest script",
                format!("{:.2} ms", rewrite_longest as f64 / 1e3),
            ),
        ],
    );
    Ok(())
}

/// Closes a client's connection with a WebSocket close, as a browser tab would.
async fn close(mut sender: Sender, receiver: Receiver) {
    sender.close().await;
    drop(receiver);
}

/// Reads what the held clients receive, so their sockets never fill.
async fn drain_all(held: Vec<(Sender, Receiver)>) {
    let mut tasks = tokio::task::JoinSet::new();
    for (sender, mut receiver) in held {
        tasks.spawn(async move {
            let _sender = sender;
            while receiver.next().await.is_some() {}
        });
    }
    while tasks.join_next().await.is_some() {}
}
