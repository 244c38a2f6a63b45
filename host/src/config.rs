//! Command-line flags, each also read from a `HUBHOST_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::transport::Transport;
use crate::units::{parse_duration, parse_size};

/// The longest `--write-delay`: past it, the delay is a latency nobody wants.
const MAX_WRITE_DELAY: Duration = Duration::from_secs(1);
/// Heartbeats go every third of the TTL: below a second they would be a load of their own.
const MIN_PRESENCE_TTL: Duration = Duration::from_secs(1);
const MAX_PRESENCE_TTL: Duration = Duration::from_secs(3600);

/// hubhost: a SignalR-compatible real-time server whose hubs are WebAssembly components.
///
/// Every `NAME.wasm` in the hubs directory is served at `/NAME` to SignalR clients
/// (`@microsoft/signalr` and friends) over WebSockets with the JSON hub protocol.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "hubhost",
    version,
    about,
    long_about = None,
    args_conflicts_with_subcommands = true,
    args_override_self = true
)]
pub struct Config {
    /// A TOML file of settings named like the flags (`listen = "0.0.0.0:5000"`,
    /// `redis-prefix = "app"`, `detailed-errors = true`). Flags and `HUBHOST_*` variables win over it.
    #[arg(long, env = "HUBHOST_CONFIG")]
    pub config: Option<PathBuf>,

    /// Without a command, hubhost serves the hubs.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address to listen on.
    #[arg(long, env = "HUBHOST_LISTEN", default_value = "127.0.0.1:5000")]
    pub listen: SocketAddr,

    /// Directory of hub components: `chat.wasm` serves `/chat`.
    #[arg(long, env = "HUBHOST_HUBS", default_value = "hubs")]
    pub hubs: PathBuf,

    /// Directory of the compiled-component cache (default: `$XDG_CACHE_HOME/hubhost` or
    /// `~/.cache/hubhost`); a restart then loads hubs without recompiling them.
    #[arg(long, env = "HUBHOST_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Compile every hub at start, without the cache.
    #[arg(long, env = "HUBHOST_NO_CACHE")]
    pub no_cache: bool,

    /// Do not watch the hubs directory (by default, added, replaced and removed files take
    /// effect without a restart).
    #[arg(long, env = "HUBHOST_NO_WATCH")]
    pub no_watch: bool,

    /// Longest a single hub call may run (e.g. `5s`, `500ms`); a call past it fails.
    #[arg(long, env = "HUBHOST_CALL_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub call_timeout: Duration,

    /// Linear memory cap of one hub instance (e.g. `64MiB`).
    #[arg(long, env = "HUBHOST_HUB_MEMORY", default_value = "64MiB", value_parser = parse_size)]
    pub hub_memory: usize,

    /// Instances of one hub alive at once; more concurrent calls wait for one.
    #[arg(long, env = "HUBHOST_INSTANCES_PER_HUB", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub instances_per_hub: u32,

    /// Instance slots reserved by the pooling allocator, over all hubs. When none is free, the
    /// least recently used idle instance of any hub gives its slot up.
    #[arg(long, env = "HUBHOST_TOTAL_INSTANCES", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub total_instances: u32,

    /// Idle hub instances unused this long are dropped, giving their memory and slot back.
    #[arg(long, env = "HUBHOST_IDLE_INSTANCE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub idle_instance_timeout: Duration,

    /// Keys each hub's shared state may hold (a hub's `state-keys` setting overrides it).
    #[arg(long, env = "HUBHOST_STATE_MAX_KEYS", default_value_t = 10_000)]
    pub state_max_keys: u64,

    /// Bytes of keys and values each hub's shared state may hold (a hub's `state-bytes`
    /// setting overrides it).
    #[arg(long, env = "HUBHOST_STATE_MAX_BYTES", default_value = "16MiB", value_parser = parse_size)]
    pub state_max_bytes: usize,

    /// Largest message accepted from a client (SignalR's MaximumReceiveMessageSize).
    #[arg(long, env = "HUBHOST_MAX_MESSAGE_SIZE", default_value = "32KiB", value_parser = parse_size)]
    pub max_message_size: usize,

    /// A Ping is sent to a client after this long without other traffic.
    #[arg(long, env = "HUBHOST_KEEP_ALIVE", default_value = "15s", value_parser = parse_duration)]
    pub keep_alive: Duration,

    /// A client that has pinged once is dropped after this long without a message.
    #[arg(long, env = "HUBHOST_CLIENT_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub client_timeout: Duration,

    /// How long a new connection has to complete its handshake.
    #[arg(long, env = "HUBHOST_HANDSHAKE_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// Hub methods one connection may have running at once (ASP.NET's
    /// MaximumParallelInvocationsPerClient); further invocations wait, and the connection is
    /// not read meanwhile.
    #[arg(long, env = "HUBHOST_MAX_PARALLEL_INVOCATIONS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_parallel_invocations: u32,

    /// Streams one connection may have open at once, to it (`connection.stream`) and from it
    /// (uploads) together; further ones are refused with an error completion. ASP.NET sets no
    /// such limit, but each open stream costs a hub call per step.
    #[arg(long, env = "HUBHOST_MAX_STREAMS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_streams: u32,

    /// Negotiated connections that may wait for their transport at once; past it, negotiate
    /// answers 503 (a flood of negotiations cannot grow memory without bound).
    #[arg(long, env = "HUBHOST_MAX_PENDING_NEGOTIATIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub max_pending_negotiations: u32,

    /// Transports clients may use, comma-separated: websockets, sse (Server-Sent Events),
    /// longpolling. Negotiate offers them in that order.
    #[arg(
        long,
        env = "HUBHOST_TRANSPORTS",
        value_delimiter = ',',
        default_value = "websockets,sse,longpolling"
    )]
    pub transports: Vec<Transport>,

    /// This host's own URL (e.g. `http://10.0.0.5:5000`). With it, a negotiate that reaches the
    /// host through another address (a load balancer) is answered with a redirect here, so all
    /// requests of a connection reach this host without a sticky balancer.
    #[arg(long, env = "HUBHOST_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Long polling: a poll with nothing to take is answered, empty, after this long.
    #[arg(long, env = "HUBHOST_LONG_POLLING_TIMEOUT", default_value = "90s", value_parser = parse_duration)]
    pub long_polling_timeout: Duration,

    /// Long polling: a client that has not polled for this long is disconnected.
    #[arg(long, env = "HUBHOST_DISCONNECT_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub disconnect_timeout: Duration,

    /// Do not offer stateful reconnect (ASP.NET Core 8's `withStatefulReconnect`) to clients
    /// that ask for it in negotiate.
    #[arg(long, env = "HUBHOST_NO_STATEFUL_RECONNECT")]
    pub no_stateful_reconnect: bool,

    /// Stateful reconnect survives the crash of a client's server: what the client has not
    /// acknowledged is kept in Redis (each hub's published packets in a log, a small record
    /// per connection), so it resumes on another server without loss. Needs --redis or
    /// --redis-cluster. Costs a log append per published packet and a few record writes per
    /// connection per checkpoint (every third of --reconnect-window).
    #[arg(long, env = "HUBHOST_DURABLE_RECONNECT")]
    pub durable_reconnect: bool,

    /// Stateful reconnect: how long a connection whose WebSocket was cut waits for its client
    /// to resume it (ASP.NET's DisconnectTimeout).
    #[arg(long, env = "HUBHOST_RECONNECT_WINDOW", default_value = "15s", value_parser = parse_duration)]
    pub reconnect_window: Duration,

    /// Stateful reconnect: bytes of messages a client has not acknowledged past which the
    /// server waits for its Ack before sending more (ASP.NET's StatefulReconnectBufferSize).
    #[arg(long, env = "HUBHOST_RECONNECT_BUFFER", default_value = "100000", value_parser = parse_size)]
    pub reconnect_buffer: usize,

    /// Threads that run connections and hub calls (default: one per core). Fewer threads wake
    /// each other less: several hosts sharing a machine each do best with fewer.
    #[arg(long, env = "HUBHOST_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,

    /// How long a connection's writer waits after a frame is queued for more to join it in one
    /// write (Centrifugo's write delay). 0 writes at once; a few milliseconds make a busy
    /// broadcast cheaper for the host and its clients, at that much latency.
    #[arg(long, env = "HUBHOST_WRITE_DELAY", default_value = "0s", value_parser = parse_duration)]
    pub write_delay: Duration,

    /// Frames queued for one slow client before it is disconnected.
    #[arg(long, env = "HUBHOST_OUTBOX", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(8..=1_000_000))]
    pub outbox: u32,

    /// Browser origins allowed to connect (comma-separated, e.g. `https://app.example.com`);
    /// others get 403 on negotiate and on the WebSocket. Empty: any origin. Clients that send no
    /// Origin (non-browsers) are not affected.
    #[arg(long, env = "HUBHOST_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Invocations one connection may make per second (bursts of twice as many pass); excess
    /// ones get an error completion without reaching the hub. 0 turns the limit off.
    #[arg(long, env = "HUBHOST_RATE_LIMIT", default_value_t = 200)]
    pub rate_limit: u32,

    /// Show the causes of unexpected hub failures to callers (ASP.NET's EnableDetailedErrors).
    #[arg(long, env = "HUBHOST_DETAILED_ERRORS")]
    pub detailed_errors: bool,

    /// Do not serve the demo chat page at `/`.
    #[arg(long, env = "HUBHOST_NO_DEMO")]
    pub no_demo: bool,

    /// Serve this folder's files at `/` instead of the demo page (an application's own page,
    /// from the same origin as its hubs, as IIS served it).
    #[arg(long = "static", env = "HUBHOST_STATIC", value_name = "DIR")]
    pub static_dir: Option<PathBuf>,

    /// Secret that signs SignalR 2 connection tokens (`/signalr`). Hosts behind one load
    /// balancer need the same, so a client that comes back after its host went away carries
    /// on on another. Default: a key of this process only.
    #[arg(long, env = "HUBHOST_SIGNALR2_TOKEN_KEY", hide_env_values = true)]
    pub signalr2_token_key: Option<String>,

    /// Log format.
    #[arg(long, env = "HUBHOST_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Redis backplane and state store: `redis://[:password@]host:port[/db]`, or `rediss://` for
    /// TLS. Without it, this server runs alone with an in-memory backplane.
    #[arg(long, env = "HUBHOST_REDIS")]
    pub redis: Option<String>,

    /// A Redis Cluster (Redis 7 or later) as the backplane and state store, instead of one
    /// Redis: some of its nodes, comma-separated (`redis://:password@host:7000,redis://…`; all
    /// with the same password and TLS). Messages use sharded pub/sub, so each is carried only
    /// by the shard that owns its channel; each hub's channels and keys share one slot.
    #[arg(
        long,
        env = "HUBHOST_REDIS_CLUSTER",
        value_delimiter = ',',
        value_name = "URL[,URL…]",
        conflicts_with = "redis"
    )]
    pub redis_cluster: Vec<String>,

    /// Prefix of every Redis channel and key (SignalR's "AppName"): deployments with different
    /// prefixes share a Redis without seeing each other.
    #[arg(long, env = "HUBHOST_REDIS_PREFIX", default_value = "hubhost")]
    pub redis_prefix: String,

    /// How long a group change for a connection on another server waits for that server.
    #[arg(long, env = "HUBHOST_REDIS_ACK_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub redis_ack_timeout: Duration,

    /// How long this server's share of presence (its connections and their groups, which hubs
    /// count through the `presence` import) outlives its last heartbeat in Redis. Heartbeats go
    /// every third of it; a server that dies stops counting within this and a third of it after
    /// it last beat (the other servers' next heartbeat drops its share). Between 1s and 1h.
    #[arg(long, env = "HUBHOST_PRESENCE_TTL", default_value = "15s", value_parser = parse_duration)]
    pub presence_ttl: Duration,

    /// Secret of HS256 JWT bearer tokens. With it, clients that send a valid token (header
    /// `Authorization: Bearer` or query `access_token`) are that token's user; invalid tokens
    /// get 401; clients without one stay anonymous.
    #[arg(long, env = "HUBHOST_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM public key (RSA or EC P-256) of RS256/ES256 JWT bearer tokens, instead of a secret.
    #[arg(long, env = "HUBHOST_JWT_PUBLIC_KEY", conflicts_with = "jwt_secret")]
    pub jwt_public_key: Option<PathBuf>,

    /// Accept bearer tokens without an expiry (`exp` claim). By default they are refused, as
    /// ASP.NET Core's JwtBearer does: a token that never expires cannot be revoked.
    #[arg(long, env = "HUBHOST_ALLOW_TOKENS_WITHOUT_EXP")]
    pub allow_tokens_without_exp: bool,

    /// The token claim that holds the user id.
    #[arg(long, env = "HUBHOST_JWT_USER_CLAIM", default_value = "sub")]
    pub jwt_user_claim: String,

    /// How long shutdown waits for connections to close after telling clients to reconnect.
    #[arg(long, env = "HUBHOST_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
}

/// Commands besides serving.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Creates a hub crate from the template: `hubhost new NAME`, then
    /// `cd NAME && cargo build --release`, then copy the `.wasm` into the hubs directory.
    New {
        /// The hub's name (its URL path and file stem).
        name: String,
        /// Path of hubhost's `guest-sdk` to depend on (default: the checkout this binary was
        /// built from, if it is still there, else a copy written into the new crate).
        #[arg(long)]
        sdk: Option<PathBuf>,
        /// Write a copy of the SDK into the new crate (`hubhost-sdk/`) and depend on it, so the
        /// crate builds wherever it is copied.
        #[arg(long, conflicts_with = "sdk")]
        vendor_sdk: bool,
        /// Where to create the crate.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Prints a hub's methods as it describes them (name, parameters and their JSON Schema,
    /// result or stream item, documentation): `hubhost describe chat.wasm`.
    Describe {
        /// The hub component.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Writes a TypeScript module with typed calls of a hub's methods over the official
    /// client's `HubConnection`: `hubhost types chat.wasm -o src/chatServer.ts`.
    Types {
        /// The hub component.
        file: PathBuf,
        /// Where to write it (default: standard output).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Config {
    /// Reads the command line, the environment and the optional `--config` file, in that order
    /// of precedence. Exits with clap's message on invalid flags.
    pub fn load() -> Result<Self, String> {
        let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
        let file = config_path(&args);
        let Some(path) = file else {
            return Ok(Self::parse_from(args));
        };
        let mut merged = vec![args.first().cloned().unwrap_or_else(|| "hubhost".into())];
        merged.extend(file_args(&path)?.into_iter().map(Into::into));
        merged.extend(args.into_iter().skip(1));
        Ok(Self::parse_from(merged))
    }

    /// The cache directory in effect, if any.
    pub fn effective_cache_dir(&self) -> Option<PathBuf> {
        if self.no_cache {
            return None;
        }
        if let Some(dir) = &self.cache_dir {
            return Some(dir.clone());
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("hubhost"))
    }

    /// The defaults, as if no flag were given (for tests and embedding).
    pub fn defaults() -> Self {
        Self::parse_from(["hubhost"])
    }

    /// Checks what clap cannot: relations between values.
    pub fn validate(&self) -> Result<(), String> {
        if self.call_timeout.is_zero() {
            return Err("--call-timeout must be greater than zero".into());
        }
        if self.max_message_size < 1024 {
            return Err("--max-message-size must be at least 1KiB".into());
        }
        if self.hub_memory < (2 << 20) {
            return Err(
                "--hub-memory must be at least 2MiB (a Rust hub needs about 1.1MiB to start)"
                    .into(),
            );
        }
        if self.redis_prefix.is_empty() || self.redis_prefix.contains(char::is_whitespace) {
            return Err("--redis-prefix must be a non-empty word".into());
        }
        if self.transports.is_empty() {
            return Err("--transports must name at least one transport".into());
        }
        if let Some(url) = &self.public_url {
            crate::server::public_url::PublicUrl::parse(url)?;
        }
        if self.long_polling_timeout.is_zero() || self.disconnect_timeout.is_zero() {
            return Err(
                "--long-polling-timeout and --disconnect-timeout must be greater than zero".into(),
            );
        }
        if self.reconnect_window.is_zero() || self.reconnect_buffer == 0 {
            return Err(
                "--reconnect-window and --reconnect-buffer must be greater than zero".into(),
            );
        }
        if self.durable_reconnect && self.redis.is_none() && self.redis_cluster.is_empty() {
            return Err("--durable-reconnect needs --redis or --redis-cluster".into());
        }
        if self.durable_reconnect && self.no_stateful_reconnect {
            return Err(
                "--durable-reconnect needs stateful reconnect (drop --no-stateful-reconnect)"
                    .into(),
            );
        }
        if self.instances_per_hub > self.total_instances {
            return Err(format!(
                "--instances-per-hub ({}) cannot exceed --total-instances ({})",
                self.instances_per_hub, self.total_instances
            ));
        }
        if self.keep_alive.is_zero() || self.keep_alive >= self.client_timeout {
            return Err(
                "--keep-alive must be greater than zero and shorter than --client-timeout".into(),
            );
        }
        if !(MIN_PRESENCE_TTL..=MAX_PRESENCE_TTL).contains(&self.presence_ttl) {
            return Err("--presence-ttl must be between 1s and 1h".into());
        }
        if self.write_delay > MAX_WRITE_DELAY {
            return Err(format!(
                "--write-delay must be at most {}",
                humantime::format_duration(MAX_WRITE_DELAY)
            ));
        }
        Ok(())
    }
}

/// `--config PATH` / `--config=PATH` from the arguments, else `HUBHOST_CONFIG`.
fn config_path(args: &[std::ffi::OsString]) -> Option<PathBuf> {
    let mut iter = args.iter().skip(1);
    while let Some(arg) = iter.next() {
        let arg = arg.to_string_lossy();
        if arg == "--config" {
            return iter.next().map(PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
        if matches!(arg.as_ref(), "new" | "describe" | "types") {
            return None; // a subcommand: no server settings
        }
    }
    std::env::var_os("HUBHOST_CONFIG").map(PathBuf::from)
}

/// The settings of a TOML file as flags, leaving out those set in the environment (which win).
fn file_args(path: &std::path::Path) -> Result<Vec<String>, String> {
    use clap::CommandFactory;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--config {}: cannot read it: {e}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| format!("--config {}: {e}", path.display()))?;
    let command = Config::command();
    let mut out = Vec::new();
    for (key, value) in table {
        let Some(arg) = command
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && key != "config")
        else {
            return Err(format!(
                "--config {}: unknown setting '{key}' (settings are named like the flags, e.g. 'listen', 'redis-prefix')",
                path.display()
            ));
        };
        if arg
            .get_env()
            .is_some_and(|env| std::env::var_os(env).is_some())
        {
            continue;
        }
        let flag = format!("--{key}");
        match value {
            toml::Value::Boolean(true) => out.push(flag),
            toml::Value::Boolean(false) => {}
            toml::Value::String(s) => out.push(format!("{flag}={s}")),
            toml::Value::Integer(i) => out.push(format!("{flag}={i}")),
            toml::Value::Array(items) => {
                let items: Vec<String> = items
                    .iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                    .collect();
                out.push(format!("{flag}={}", items.join(",")));
            }
            other => {
                return Err(format!(
                    "--config {}: '{key}' has an unsupported value {other}",
                    path.display()
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_signalr() {
        let config = Config::defaults();
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.max_message_size, 32 * 1024);
        assert_eq!(config.keep_alive, Duration::from_secs(15));
        assert_eq!(config.client_timeout, Duration::from_secs(30));
        assert_eq!(config.handshake_timeout, Duration::from_secs(15));
    }

    #[test]
    fn rejects_keep_alive_longer_than_timeout() {
        let config = Config::parse_from(["hubhost", "--keep-alive", "40s"]);
        assert!(config.validate().is_err());
    }

    #[test]
    fn presence_ttl_is_fifteen_seconds_by_default_and_bounded() {
        assert_eq!(
            Config::parse_from(["hubhost"]).presence_ttl,
            Duration::from_secs(15)
        );
        for (ttl, ok) in [("1s", true), ("1h", true), ("500ms", false), ("2h", false)] {
            let config = Config::parse_from(["hubhost", "--presence-ttl", ttl]);
            let expected = if ok {
                Ok(())
            } else {
                Err("--presence-ttl must be between 1s and 1h".to_owned())
            };
            assert_eq!(config.validate(), expected, "{ttl}");
        }
    }

    #[test]
    fn a_redis_cluster_takes_several_nodes_and_excludes_one_redis() {
        let config = Config::parse_from([
            "hubhost",
            "--redis-cluster",
            "redis://:pw@10.0.0.1:7000,redis://:pw@10.0.0.2:7000",
        ]);
        assert_eq!(
            config.redis_cluster,
            ["redis://:pw@10.0.0.1:7000", "redis://:pw@10.0.0.2:7000"]
        );
        let both = Config::try_parse_from([
            "hubhost",
            "--redis",
            "redis://a",
            "--redis-cluster",
            "redis://b",
        ]);
        let error = both.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            error.contains(
                "the argument '--redis <REDIS>' cannot be used with '--redis-cluster <URL[,URL…]>'"
            ),
            "{error}"
        );
    }

    #[test]
    fn write_delay_is_off_by_default_and_at_most_a_second() {
        assert_eq!(Config::parse_from(["hubhost"]).write_delay, Duration::ZERO);
        let config = Config::parse_from(["hubhost", "--write-delay", "5ms"]);
        assert_eq!(config.write_delay, Duration::from_millis(5));
        assert_eq!(config.validate(), Ok(()));
        let config = Config::parse_from(["hubhost", "--write-delay", "2s"]);
        assert_eq!(
            config.validate(),
            Err("--write-delay must be at most 1s".into())
        );
    }
}
