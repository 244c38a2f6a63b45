//! # hubhost
//!
//! A SignalR-compatible real-time server whose hubs are sandboxed WebAssembly components.
//! Official SignalR clients connect unchanged; every `NAME.wasm` in the hubs directory serves
//! `/NAME`.
//!
//! ## Layout
//! Data flows one way; no module imports one above it.
//! ```text
//! socket -> server (axum: negotiate, ws upgrade)
//!        -> connection (handshake, read loop, writer task)
//!        -> protocol (records <-> messages)
//!        -> dispatcher (which hub, which method; completion texts)
//!        -> runtime (wasmtime call; returns the effects the hub recorded)
//!        -> router (who receives: all / except / connection / group / user)
//!        -> backplane (memory | redis; every fan-out goes through it)
//!        -> router's LocalRegistry -> connection outboxes -> sockets
//! ```
//! - [`config`]: flags and environment variables.
//! - [`server`]: HTTP routes.
//! - [`connection`]: one client connection; [`connection::ids`] ids and negotiated tokens.
//! - [`protocol`]: the SignalR JSON hub protocol.
//! - [`dispatcher`]: hub calls and their effects.
//! - [`runtime`]: the only module that knows wasmtime.
//! - [`reload`]: applies changes of the hubs directory while running.
//! - [`router`]: recipients and the local registry.
//! - [`backplane`]: fan-out between servers (memory or Redis).
//! - [`state`]: the hubs' shared key-value state (memory or Redis).

pub mod auth;
pub mod backplane;
pub mod config;
pub mod connection;
pub mod dispatcher;
pub mod metrics;
pub mod protocol;
pub mod reload;
pub mod router;
pub mod runtime;
pub mod server;
pub mod state;
pub mod template;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use backplane::Backplane;
use backplane::memory::MemoryBackplane;
use backplane::redis::{RedisBackplane, RedisConfig};
use config::Config;
use connection::ids::Negotiated;
use connection::{Settings, Shared};
use dispatcher::Dispatcher;
use router::{LocalRegistry, Router};
use runtime::{HubRuntime, RuntimeConfig};
use state::StateStore;
use state::memory::MemoryState;
use state::redis::RedisState;

fn authenticator(config: &Config) -> anyhow::Result<auth::Authenticator> {
    let claim = config.jwt_user_claim.clone();
    Ok(match (&config.jwt_secret, &config.jwt_public_key) {
        (Some(secret), _) => auth::Authenticator::hs256(secret.as_bytes(), claim),
        (None, Some(path)) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("--jwt-public-key {}: cannot read it", path.display()))?;
            auth::Authenticator::public_key(&pem, claim)
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

/// Installs the log subscriber: `HUBHOST_LOG` filters (default `info`), in text or JSON lines.
pub fn init_tracing(format: config::LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("HUBHOST_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,wasmtime=warn,cranelift=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
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

/// [`run`], also serving hubs compiled into the binary (see [`runtime::NativeHub`]); a native
/// hub takes precedence over a component of the same name.
pub async fn run_with_native_hubs(
    listener: TcpListener,
    config: Config,
    native_hubs: Vec<(router::HubName, Arc<dyn runtime::NativeHub>)>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    let stop = CancellationToken::new();
    let registry = Arc::new(LocalRegistry::new());
    let (backplane, state): (Arc<dyn Backplane>, Arc<dyn StateStore>) = match &config.redis {
        None => (
            Arc::new(MemoryBackplane::new(registry.clone())),
            Arc::new(MemoryState::new()),
        ),
        Some(url) => {
            // rediss:// needs a TLS crypto provider; installing twice (tests) is harmless.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let redis = RedisBackplane::start(
                RedisConfig {
                    url: url.clone(),
                    prefix: config.redis_prefix.clone(),
                    ack_timeout: config.redis_ack_timeout,
                },
                registry.clone(),
                stop.clone(),
            )
            .await?;
            let state = RedisState::new(redis.commands(), config.redis_prefix.clone());
            (Arc::new(redis), Arc::new(state))
        }
    };
    let runtime = HubRuntime::new(
        RuntimeConfig {
            call_timeout: config.call_timeout,
            memory_limit: config.hub_memory,
            instances_per_hub: config.instances_per_hub,
            total_instances: config.total_instances,
            cache_dir: config.effective_cache_dir(),
            max_message_size: config.max_message_size,
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
    if !config.no_watch {
        reload::watch(
            config.hubs.clone(),
            runtime.clone(),
            registry.clone(),
            stop.clone(),
        )?;
    }
    let router = Router::new(backplane, registry.clone());
    let dispatcher = Arc::new(Dispatcher::new(runtime, router, config.detailed_errors));
    let shared = Arc::new(Shared {
        dispatcher,
        negotiated: Arc::new(Negotiated::default()),
        settings: Settings {
            keep_alive: config.keep_alive,
            client_timeout: config.client_timeout,
            handshake_timeout: config.handshake_timeout,
            outbox_capacity: config.outbox as usize,
            rate_limit: config.rate_limit,
        },
        shutdown: stop.clone(),
        draining: CancellationToken::new(),
        sessions: TaskTracker::new(),
        auth: authenticator(&config)?,
    });

    let sweeper = {
        let negotiated = shared.negotiated.clone();
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

    let app = server::routes(shared.clone(), !config.no_demo, &config.allowed_origins);
    let address = listener.local_addr().context("listener has no address")?;
    tracing::info!(%address, hubs = ?loaded.iter().map(|h| h.as_str()).collect::<Vec<_>>(), "hubhost listening");

    // On the signal: tell every client to reconnect (elsewhere) and stop accepting; then give
    // the connections the drain timeout to leave.
    // Each session finishes the call it is running (its caller gets the completion), then
    // sends Close with allowReconnect and ends.
    let told_to_leave = {
        let registry = registry.clone();
        let draining = shared.draining.clone();
        async move {
            shutdown.await;
            draining.cancel();
            tracing::info!(
                connections = registry.connection_count(),
                "shutting down: clients told to reconnect"
            );
        }
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(told_to_leave)
        .await
        .context("server failed")?;
    // Sessions end once their client has gone and the hub's on-disconnected has run.
    shared.sessions.close();
    if tokio::time::timeout(config.drain_timeout, shared.sessions.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = shared.sessions.len(),
            "drain timeout: closing the remaining connections"
        );
    }
    stop.cancel();
    sweeper.abort();
    Ok(())
}
