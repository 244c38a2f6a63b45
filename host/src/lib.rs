//! # hubhost
//!
//! A SignalR-compatible real-time server whose hubs are sandboxed WebAssembly components.
//! Official SignalR clients connect unchanged; every `NAME.wasm` in the hubs directory serves
//! `/NAME`.
//!
//! ## Data flow
//! ```text
//! socket -> server (axum: negotiate, the transport's endpoint)
//!        -> transport (WebSocket <-> a stream of messages and a sink of frames)
//!        -> session (handshake, read loop, invocations, keep-alive, timeouts, writer)
//!        -> protocol (bytes <-> messages, in the encoding the client chose)
//!        -> dispatcher (which hub, which method; completion texts)
//!        -> runtime (wasmtime call; returns the effects the hub recorded)
//!        -> router (sends and group changes)
//!        -> backplane (memory | redis; every fan-out goes through it)
//!        -> registry (this server's connections; frames encoded once per protocol)
//!        -> outboxes -> the sessions' writers -> sockets
//! ```
//!
//! ## Layout
//! Data flows one way: a module imports only modules listed after it here (the test
//! `host/tests/layering.rs` reads this list and fails when an import goes upward, or when the
//! files of one module import each other in a circle). The only way back up is the outbox
//! sender a session registers.
//!
//! 1. [`config`]: flags, environment variables and the config file.
//! 2. [`describe`]: `hubhost describe` and `hubhost types`: a hub's methods for people and TypeScript.
//! 3. [`server`]: HTTP routes: negotiate, transports, health, metrics, the demo page.
//! 4. [`signalr2`]: the ASP.NET SignalR 2.x endpoints under `/signalr`, over the same hubs.
//! 5. [`reload`]: applies changes of the hubs directory while running.
//! 6. [`transport`]: how a connection's messages travel (WebSockets).
//! 7. [`session`]: one connection, generic over its transport and protocol.
//! 8. [`dispatcher`]: hub calls, their effects and SignalR's completion texts.
//! 9. [`runtime`]: the only module that knows wasmtime.
//! 10. [`router`]: hands sends and group changes to the backplane.
//! 11. [`durable`]: durable reconnect: connection records and the hubs' logs in Redis.
//! 12. [`backplane`]: fan-out between servers (memory, Redis or a Redis Cluster).
//! 13. [`registry`]: this server's connections, groups and users, and their outboxes.
//! 14. [`presence`]: who is connected over every server (memory or Redis), kept by heartbeats.
//! 15. [`state`]: the hubs' shared key-value state (memory or Redis), with quotas.
//! 16. [`redisdb`]: how Redis is reached (one server or a cluster) and its key and channel names.
//! 17. [`protocol`]: the hub protocol's messages and encodings (JSON), and the handshake.
//! 18. [`auth`]: bearer tokens.
//! 19. [`metrics`]: counters and histograms for `/metrics`.
//! 20. [`template`]: the hub crate `hubhost new` writes.
//! 21. [`units`]: durations and sizes as operators write them.
//! 22. [`types`]: the shared vocabulary: ids, hub names, callers, targets, envelopes.

pub mod auth;
pub mod backplane;
pub mod config;
pub mod describe;
pub mod dispatcher;
pub mod durable;
pub mod metrics;
pub mod presence;
pub mod protocol;
pub mod redisdb;
pub mod registry;
pub mod reload;
pub mod router;
pub mod runtime;
pub mod server;
pub mod session;
pub mod signalr2;
pub mod state;
pub mod template;
pub mod transport;
pub mod types;
pub mod units;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use auth::Expiry;
use backplane::Backplane;
use backplane::memory::MemoryBackplane;
use backplane::redis::{RedisBackplane, RedisConfig};
use config::Config;
use dispatcher::Dispatcher;
use presence::redis::RedisPresence;
use registry::LocalRegistry;
use router::Router;
use runtime::{HubRuntime, RuntimeConfig};
use server::public_url::PublicUrl;
use server::{AppState, LongPollingSettings};
use session::{SessionContext, Settings};
use signalr2::Signalr2;
use signalr2::token::TokenKey;
use state::memory::MemoryState;
use state::redis::RedisState;
use state::{Quota, StateStore};
use transport::Transport;
use transport::connections::Connections;

fn authenticator(config: &Config) -> anyhow::Result<auth::Authenticator> {
    let claim = config.jwt_user_claim.clone();
    let expiry = if config.allow_tokens_without_exp {
        Expiry::Optional
    } else {
        Expiry::Required
    };
    Ok(match (&config.jwt_secret, &config.jwt_public_key) {
        (Some(secret), _) => auth::Authenticator::hs256(secret.as_bytes(), claim, expiry),
        (None, Some(path)) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("--jwt-public-key {}: cannot read it", path.display()))?;
            auth::Authenticator::public_key(&pem, claim, expiry)
                .map_err(|e| anyhow::anyhow!("--jwt-public-key {}: {e}", path.display()))?
        }
        (None, None) => auth::Authenticator::anonymous(),
    })
}

/// Raises this process's soft limit on open files to its hard limit, as servers holding many
/// sockets need (the soft limit is often 1,024). Returns the soft limit before and after;
/// `None` where there is no such limit or it cannot be read.
pub fn raise_open_files_limit() -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let limit = getrlimit(Resource::Nofile);
        let before = limit.current?;
        let Some(hard) = limit.maximum else {
            return Some((before, before));
        };
        if before >= hard {
            return Some((before, before));
        }
        let raised = rustix::process::Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        };
        let after = if setrlimit(Resource::Nofile, raised).is_ok() {
            hard
        } else {
            before
        };
        Some((before, after))
    }
    #[cfg(not(unix))]
    None
}

/// Installs the log subscriber: `HUBHOST_LOG` filters (default `info`), in text or JSON lines
/// on standard output. Text is coloured only on a terminal (and never with `NO_COLOR` set), so
/// logs written to a file or a pipe carry no escape codes.
pub fn init_tracing(format: config::LogFormat) {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("HUBHOST_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,wasmtime=warn,cranelift=warn"));
    let colour = std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour);
    match format {
        config::LogFormat::Text => builder.init(),
        config::LogFormat::Json => builder.json().init(),
    }
}

/// Runs the server on `listener` until `shutdown` resolves, then drains: every client gets a
/// SignalR Close with `allowReconnect: true`, and the function returns once they are gone or
/// the drain timeout passed.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_with_native_hubs(listener, config, Vec::new(), shutdown).await
}

/// The backplane, state store and presence of `config`: in memory, on one Redis, or on a Redis
/// Cluster.
async fn open_backplane(
    config: &Config,
    registry: Arc<LocalRegistry>,
    stop: &CancellationToken,
) -> anyhow::Result<Backends> {
    if config.redis.is_none() && config.redis_cluster.is_empty() {
        return Ok(Backends {
            backplane: Arc::new(MemoryBackplane::new(registry)),
            state: Arc::new(MemoryState::new()),
            presence: None,
            durable: None,
        });
    }
    let durable = config
        .durable_reconnect
        .then(|| durable::Timing::for_window(config.reconnect_window));
    // rediss:// needs a TLS crypto provider; installing twice (tests) is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let redis_config = RedisConfig {
        prefix: config.redis_prefix.clone(),
        ack_timeout: config.redis_ack_timeout,
        log: durable.map(|timing| timing.log_retention()),
    };
    let (backplane, commands, keys): (Arc<dyn Backplane>, _, _) = match &config.redis {
        Some(url) => {
            let redis = RedisBackplane::start(url, redis_config, registry, stop.clone()).await?;
            let (commands, keys) = (redis.commands(), redis.keyspace().clone());
            (Arc::new(redis), commands, keys)
        }
        None => {
            let nodes = &config.redis_cluster;
            let redis =
                RedisBackplane::start_cluster(nodes, redis_config, registry, stop.clone()).await?;
            let (commands, keys) = (redis.commands(), redis.keyspace().clone());
            (Arc::new(redis), commands, keys)
        }
    };
    let durable =
        durable.map(|timing| Arc::new(durable::Store::new(commands.clone(), keys.clone(), timing)));
    let state = RedisState::new(commands.clone(), keys);
    let presence = Arc::new(RedisPresence::start(
        commands,
        &config.redis_prefix,
        backplane.server_name(),
        backplane.registry().clone(),
        config.presence_ttl,
        stop.clone(),
    ));
    Ok(Backends {
        backplane,
        state: Arc::new(state),
        presence: Some(presence),
        durable,
    })
}

/// What [`open_backplane`] opens.
struct Backends {
    backplane: Arc<dyn Backplane>,
    state: Arc<dyn StateStore>,
    presence: Option<Arc<RedisPresence>>,
    /// Durable reconnect's records and logs, when asked for.
    durable: Option<Arc<durable::Store>>,
}

/// [`run`], also serving hubs compiled into the binary (see [`runtime::NativeHub`]); a native
/// hub takes precedence over a component of the same name.
pub async fn run_with_native_hubs(
    listener: TcpListener,
    config: Config,
    native_hubs: Vec<(types::HubName, Arc<dyn runtime::NativeHub>)>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    let stop = CancellationToken::new();
    let registry = Arc::new(LocalRegistry::new());
    let Backends {
        backplane,
        state,
        presence,
        durable,
    } = open_backplane(&config, registry, &stop).await?;
    let runtime = HubRuntime::new(
        RuntimeConfig {
            call_timeout: config.call_timeout,
            memory_limit: config.hub_memory,
            instances_per_hub: config.instances_per_hub,
            total_instances: config.total_instances,
            idle_instance_timeout: config.idle_instance_timeout,
            cache_dir: config.effective_cache_dir(),
            max_message_size: config.max_message_size,
            state_quota: Quota {
                max_keys: config.state_max_keys,
                max_bytes: config.state_max_bytes as u64,
            },
            ..RuntimeConfig::default()
        },
        state,
    )?;
    for (name, code) in native_hubs {
        runtime.install_native(name, code);
    }
    runtime.load_dir(&config.hubs)?;
    let loaded = runtime.hub_names();
    if loaded.is_empty() {
        tracing::warn!(dir = %config.hubs.display(), "no hub loaded: add NAME.wasm files to serve /NAME");
    }
    let runtime = Arc::new(runtime);
    let router = match presence {
        Some(presence) => {
            // Only hubs whose code reads presence pay for it.
            let hubs = Arc::downgrade(&runtime);
            presence.count_only(Box::new(move |hub| {
                hubs.upgrade()
                    .and_then(|runtime| runtime.hub(hub.as_str()))
                    .is_some_and(|hub| hub.uses_presence())
            }));
            Router::new(backplane).with_presence(presence)
        }
        None => Router::new(backplane),
    };
    if !config.no_watch {
        reload::watch(
            config.hubs.clone(),
            runtime.clone(),
            router.registry().clone(),
            stop.clone(),
        )?;
    }
    let dispatcher = Arc::new(Dispatcher::new(
        runtime.clone(),
        router.clone(),
        config.detailed_errors,
    ));
    let sessions = Arc::new(SessionContext {
        metrics: dispatcher.metrics().clone(),
        hubs: dispatcher.clone(),
        router: router.clone(),
        settings: Settings {
            keep_alive: config.keep_alive,
            client_timeout: config.client_timeout,
            handshake_timeout: config.handshake_timeout,
            outbox_capacity: config.outbox as usize,
            write_delay: config.write_delay,
            rate_limit: config.rate_limit,
            max_parallel_invocations: config.max_parallel_invocations as usize,
            max_streams: config.max_streams as usize,
            reconnect_window: config.reconnect_window,
            reconnect_buffer: config.reconnect_buffer,
        },
        durable: durable.clone(),
        shutdown: stop.clone(),
        draining: CancellationToken::new(),
        sessions: TaskTracker::new(),
    });
    if let Some(durable) = &durable {
        durable::checkpoint_periodically(router.registry().clone(), durable.timing(), stop.clone());
    }
    let auth = Arc::new(authenticator(&config)?);
    let app = Arc::new(AppState {
        sessions: sessions.clone(),
        runtime,
        connections: Arc::new(Connections::new(config.max_pending_negotiations as usize)),
        // In negotiate's order, whatever the flag's.
        transports: Transport::ALL
            .into_iter()
            .filter(|t| config.transports.contains(t))
            .collect(),
        stateful_reconnect: !config.no_stateful_reconnect,
        public_url: config
            .public_url
            .as_deref()
            .map(PublicUrl::parse)
            .transpose()
            .map_err(anyhow::Error::msg)?,
        long_polling: LongPollingSettings {
            poll_timeout: config.long_polling_timeout,
            disconnect_timeout: config.disconnect_timeout,
        },
        auth: auth.clone(),
        signalr2: Signalr2::new(
            dispatcher,
            signalr2::Settings {
                keep_alive: config.keep_alive,
                disconnect_timeout: config.disconnect_timeout,
                poll_timeout: config.long_polling_timeout,
                max_message_size: config.max_message_size,
                outbox_capacity: config.outbox as usize,
                rate_limit: config.rate_limit,
                transports: config.transports.clone(),
            },
            config
                .signalr2_token_key
                .as_deref()
                .map_or_else(TokenKey::random, TokenKey::from_secret),
            auth,
            sessions.draining.clone(),
            sessions.sessions.clone(),
        ),
    });

    // Other hosts' claims (stateful reconnect across hosts) find connections by token.
    if app.stateful_reconnect {
        app.sessions
            .router
            .backplane()
            .serve_moves(app.connections.clone());
    }

    let sweeper = {
        let negotiated = app.connections.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tokio::select! {
                    _ = tick.tick() => negotiated.sweep(),
                    _ = stop.cancelled() => break,
                }
            }
        })
    };

    let site = match (&config.static_dir, config.no_demo) {
        (Some(dir), _) => server::Site::Static(dir.clone()),
        (None, false) => server::Site::Demo,
        (None, true) => server::Site::Nothing,
    };
    let routes = server::routes(app, site, &config.allowed_origins);
    let address = listener.local_addr().context("listener has no address")?;
    tracing::info!(%address, hubs = ?loaded.iter().map(|h| h.as_str()).collect::<Vec<_>>(), "hubhost listening");
    match &config.static_dir {
        Some(dir) => tracing::info!("serving {} at http://{address}/", dir.display()),
        None if !config.no_demo => tracing::info!("demo page: http://{address}/"),
        None => {}
    }
    // Small frames must not wait for the previous one's acknowledgement (Nagle's algorithm
    // and the peer's delayed ACK would hold them up to 40 ms).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY on an accepted socket: {e}");
        }
    });

    // On the signal: tell every client to reconnect (elsewhere) and stop accepting; then give
    // the connections the drain timeout to leave. Each session finishes the calls it is
    // running (their callers get the completions), then sends Close with allowReconnect.
    let told_to_leave = {
        let registry = router.registry().clone();
        let draining = sessions.draining.clone();
        async move {
            shutdown.await;
            draining.cancel();
            tracing::info!(
                connections = registry.connection_count(),
                "shutting down: clients told to reconnect"
            );
        }
    };
    // `into_make_service` hands each connection a clone of the router (an `Arc`); serving the
    // router itself would rebuild its route table for every connection (3 KiB each, held as
    // long as the connection lives: long-polling clients keep theirs open).
    axum::serve(listener, routes.into_make_service())
        .with_graceful_shutdown(told_to_leave)
        .await
        .context("server failed")?;
    // Sessions end once their client has gone and the hub's on-disconnected has run.
    sessions.sessions.close();
    if tokio::time::timeout(config.drain_timeout, sessions.sessions.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = sessions.sessions.len(),
            "drain timeout: closing the remaining connections"
        );
    }
    // This server's connections are gone: so is its share of presence, at once rather than
    // when its heartbeats would have run out.
    if tokio::time::timeout(Duration::from_secs(2), router.presence().close())
        .await
        .is_err()
    {
        tracing::warn!("presence not taken out of Redis in time; it expires on its own");
    }
    stop.cancel();
    sweeper.abort();
    Ok(())
}
