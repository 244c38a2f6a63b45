//! HTTP routes: negotiate, the hub's transport, health checks, metrics and the demo page.

mod connect;
mod negotiate;
pub mod public_url;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::json;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

pub(crate) use crate::auth::unauthorized;
use crate::auth::{AuthError, Authenticator, Identity};
use crate::metrics::Exposition;
use crate::runtime::{HubRuntime, LoadedHub};
use crate::session::SessionContext;
use crate::transport::Transport;
use crate::transport::connections::Connections;
use crate::types::HubName;
use public_url::PublicUrl;

const DEMO_PAGE: &str = include_str!("../demo/index.html");

/// What the routes share.
pub struct AppState {
    pub sessions: Arc<SessionContext>,
    pub runtime: Arc<HubRuntime>,
    /// Negotiated connections and their transports.
    pub connections: Arc<Connections>,
    /// The transports negotiate offers and requests may use (`--transports`).
    pub transports: Vec<Transport>,
    /// Whether negotiate grants stateful reconnect to clients that ask.
    pub stateful_reconnect: bool,
    /// This host's own address, where negotiate sends clients that came another way.
    pub public_url: Option<PublicUrl>,
    pub long_polling: LongPollingSettings,
    /// Checks bearer tokens.
    pub auth: Arc<Authenticator>,
    /// The SignalR 2 endpoints' connections.
    pub signalr2: Arc<crate::signalr2::Signalr2>,
}

/// Timeouts of long polling (ASP.NET's defaults: 90 s and 15 s).
#[derive(Debug, Clone, Copy)]
pub struct LongPollingSettings {
    /// A poll with nothing to take is answered (empty) after this long.
    pub poll_timeout: std::time::Duration,
    /// A client that has not polled for this long is gone.
    pub disconnect_timeout: std::time::Duration,
}

/// What `/` serves.
#[derive(Debug, Clone)]
pub enum Site {
    /// The demo chat page.
    Demo,
    /// A folder of static files (`--static`), as IIS serves an application's own pages.
    Static(std::path::PathBuf),
    Nothing,
}

/// Builds the routes. `origins` lists the browser origins allowed (empty: any).
pub fn routes(app: Arc<AppState>, site: Site, origins: &[String]) -> Router {
    // Browsers send credentials and SignalR's own headers on negotiate, so the allowed origin is
    // echoed rather than `*`.
    let allowed: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o.trim()).ok())
        .collect();
    let allow_origin = if allowed.is_empty() {
        AllowOrigin::mirror_request()
    } else {
        AllowOrigin::list(allowed.clone())
    };
    let cors = CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_credentials(true)
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers(AllowHeaders::mirror_request());
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/{hub}/negotiate", post(negotiate::negotiate))
        .route("/signalr/{action}", any(signalr2))
        .route(
            "/{hub}",
            get(connect::connect)
                .post(connect::send)
                .delete(connect::end),
        );
    match site {
        Site::Demo => router = router.route("/", get(|| async { Html(DEMO_PAGE) })),
        Site::Static(dir) => {
            let files = tower_http::services::ServeDir::new(dir);
            router = router.fallback_service(files.clone());
            // A top-level file (`/app.js`) has the shape of a hub's path (`/{hub}`): it is a
            // file unless a hub has that name.
            let runtime = app.runtime.clone();
            let files_first = axum::middleware::from_fn(
                move |request: axum::extract::Request, next: axum::middleware::Next| {
                    let files = files.clone();
                    let runtime = runtime.clone();
                    async move {
                        if is_top_level_file(&request, &runtime) {
                            use tower::ServiceExt;
                            match files.oneshot(request).await {
                                Ok(response) => response.into_response(),
                                Err(never) => match never {},
                            }
                        } else {
                            next.run(request).await
                        }
                    }
                },
            );
            router = router.layer(files_first);
        }
        Site::Nothing => {}
    }
    let origin_check = axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let allowed = allowed.clone();
            async move {
                let origin = request.headers().get(header::ORIGIN);
                match origin {
                    Some(origin) if !allowed.is_empty() && !allowed.contains(origin) => {
                        tracing::debug!(?origin, "refused a request from an origin not allowed");
                        text(StatusCode::FORBIDDEN, "Origin not allowed")
                    }
                    _ => next.run(request).await,
                }
            }
        },
    );
    router.layer(origin_check).layer(cors).with_state(app)
}

/// `/signalr/{action}`: the SignalR 2 endpoints.
async fn signalr2(
    State(app): State<Arc<AppState>>,
    axum::extract::Path(action): axum::extract::Path<String>,
    request: axum::extract::Request,
) -> Response {
    // Through another address (a load balancer), negotiate sends the client to this host.
    let redirect = app
        .public_url
        .as_ref()
        .filter(|_| action.eq_ignore_ascii_case("negotiate"))
        .filter(|url| !url.is_addressed_by(request.headers()))
        .map(|url| url.hub_url("signalr"));
    crate::signalr2::routes::handle(app.signalr2.clone(), &action, request, redirect).await
}

/// A GET for `/{name}` where no hub is named `name` (and no route of the host's own).
fn is_top_level_file(request: &axum::extract::Request, runtime: &HubRuntime) -> bool {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return false;
    }
    let Some(name) = request.uri().path().strip_prefix('/') else {
        return false;
    };
    !name.is_empty()
        && !name.contains('/')
        && !matches!(name, "healthz" | "readyz" | "metrics")
        && runtime.hub(name).is_none()
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    let hubs = app.runtime.hub_names();
    let router = &app.sessions.router;
    let backplane = router.is_ready();
    let ready = !hubs.is_empty() && backplane;
    let body = json!({
        "ready": ready,
        "hubs": hubs.iter().map(HubName::as_str).collect::<Vec<_>>(),
        "backplane": backplane,
        "backplaneKind": router.backplane().kind(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// Prometheus text exposition of the server's counters.
async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    let router = &app.sessions.router;
    let registry = router.registry();
    let backplane = router.backplane();
    let stats = backplane.stats();
    let presence = router.presence().stats();
    let m = &app.sessions.metrics;
    let groups = registry.group_counts();
    let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let (gauge, counter) = ("gauge", "counter");
    let samples: [(&str, &str, &str, u64); 40] = [
        (
            "hubhost_connections",
            gauge,
            "Client connections on this server.",
            registry.connection_count() as u64,
        ),
        (
            "hubhost_groups",
            gauge,
            "Groups with members on this server.",
            groups.groups,
        ),
        (
            "hubhost_group_memberships",
            gauge,
            "Group memberships of this server's connections.",
            groups.memberships,
        ),
        (
            "hubhost_negotiations_waiting",
            gauge,
            "Negotiated connections waiting for their transport.",
            app.connections.waiting() as u64,
        ),
        (
            "hubhost_negotiations_refused_total",
            counter,
            "Negotiations refused because too many waited for their transport.",
            app.connections.refused(),
        ),
        (
            "hubhost_instance_slots_free",
            gauge,
            "Hub instance slots free (of --total-instances).",
            app.runtime.free_instance_slots() as u64,
        ),
        (
            "hubhost_messages_in_total",
            counter,
            "Messages received from clients.",
            get(&m.messages_in),
        ),
        (
            "hubhost_messages_out_total",
            counter,
            "Hub messages delivered to local clients.",
            registry.delivered_total(),
        ),
        (
            "hubhost_messages_out_direct_total",
            counter,
            "Of those, handed to the socket by the delivering task rather than the connection's writer (small fan-outs to idle WebSocket connections).",
            registry.direct_total(),
        ),
        (
            "hubhost_hub_calls_total",
            counter,
            "Hub calls (invocations, connects, disconnects).",
            get(&m.hub_calls),
        ),
        (
            "hubhost_hub_traps_total",
            counter,
            "Hub calls that trapped.",
            get(&m.traps),
        ),
        (
            "hubhost_hub_deadline_hits_total",
            counter,
            "Hub calls stopped at their deadline.",
            get(&m.deadline_hits),
        ),
        (
            "hubhost_hub_memory_hits_total",
            counter,
            "Hub calls stopped at their memory cap.",
            get(&m.memory_hits),
        ),
        (
            "hubhost_rate_limited_total",
            counter,
            "Invocations refused by the per-connection rate limit.",
            get(&m.rate_limited),
        ),
        (
            "hubhost_reconnect_resumes_total",
            counter,
            "Stateful reconnect: connections resumed on a new WebSocket on this host.",
            get(&m.resumes),
        ),
        (
            "hubhost_reconnect_moves_in_total",
            counter,
            "Stateful reconnect: connections resumed here that another host held.",
            get(&m.moves_in),
        ),
        (
            "hubhost_reconnect_moves_out_total",
            counter,
            "Stateful reconnect: connections handed over to another host their client resumed on.",
            get(&m.moves_out),
        ),
        (
            "hubhost_reconnect_resumes_refused_total",
            counter,
            "WebSockets presenting a connection token no host holds (a resume after the window).",
            get(&m.resumes_refused),
        ),
        (
            "hubhost_reconnect_replayed_messages_total",
            counter,
            "Stateful reconnect: messages sent again on resumes.",
            get(&m.replayed_messages),
        ),
        (
            "hubhost_reconnect_durable_resumes_total",
            counter,
            "Durable reconnect: connections resumed here after their host stopped answering.",
            get(&m.durable_resumes),
        ),
        (
            "hubhost_reconnect_durable_log_frames_total",
            counter,
            "Durable reconnect: frames made again from the hubs' logs for those resumes.",
            get(&m.durable_replayed_from_log),
        ),
        (
            "hubhost_reconnect_durable_checkpoints_total",
            counter,
            "Durable reconnect: checkpoints written to Redis.",
            get(&m.durable_checkpoints),
        ),
        (
            "hubhost_reconnect_durable_write_failures_total",
            counter,
            "Durable reconnect: record writes that failed (not safe from a crash of this host).",
            get(&m.durable_write_failures),
        ),
        (
            "hubhost_reconnect_buffer_bytes",
            gauge,
            "Stateful reconnect: bytes of messages kept until their clients acknowledge them.",
            get(&m.reconnect_buffer_bytes),
        ),
        (
            "hubhost_backplane_connected",
            gauge,
            "1 when the backplane link is up.",
            u64::from(backplane.is_ready()),
        ),
        (
            "hubhost_backplane_published_total",
            counter,
            "Messages handed to the backplane transport.",
            get(&stats.published),
        ),
        (
            "hubhost_backplane_received_total",
            counter,
            "Messages received from the backplane transport.",
            get(&stats.received),
        ),
        (
            "hubhost_backplane_dropped_total",
            counter,
            "Messages that could not reach other servers (delivered locally only).",
            get(&stats.dropped),
        ),
        (
            "hubhost_backplane_outages_total",
            counter,
            "Backplane outages (link lost or publishing failing), each logged once.",
            get(&stats.outages),
        ),
        (
            "hubhost_backplane_reconnects_total",
            counter,
            "Times the backplane link was restored after a loss.",
            get(&stats.reconnects),
        ),
        (
            "hubhost_presence_writes_total",
            counter,
            "Batches of this server's presence changes written to Redis.",
            get(&presence.writes),
        ),
        (
            "hubhost_presence_heartbeats_total",
            counter,
            "Presence heartbeats sent (one per hub this server has a share of, per beat).",
            get(&presence.heartbeats),
        ),
        (
            "hubhost_presence_failures_total",
            counter,
            "Presence writes and heartbeats that failed (the share is rewritten once Redis is back).",
            get(&presence.failures),
        ),
        (
            "hubhost_presence_rewrites_total",
            counter,
            "Shares of presence written whole (first use, after a failure, or after Redis lost them).",
            get(&presence.rewrites),
        ),
        (
            "hubhost_presence_reaped_total",
            counter,
            "Shares of presence of servers that stopped beating, dropped by this server.",
            get(&presence.reaped),
        ),
        (
            "hubhost_signalr2_connections",
            gauge,
            "SignalR 2 connections held by this server (with a transport attached or not).",
            app.signalr2.len() as u64,
        ),
        (
            "hubhost_sessions_running",
            gauge,
            "Sessions running (connections being served, draining included).",
            app.sessions.sessions.len() as u64,
        ),
        (
            "hubhost_hubs_loaded",
            gauge,
            "Hubs being served.",
            app.runtime.hub_names().len() as u64,
        ),
        (
            "hubhost_hub_instances_idle",
            gauge,
            "Idle hub instances kept for reuse, over all hubs.",
            app.runtime.idle_instances() as u64,
        ),
        (
            "hubhost_instance_slots_total",
            gauge,
            "Hub instance slots of the host (--total-instances).",
            u64::from(app.runtime.config().total_instances),
        ),
    ];
    let mut e = Exposition::new();
    for (name, kind, help, value) in samples {
        e.metric(name, kind, help, value);
    }
    e.labelled(
        "hubhost_hub_connections",
        "gauge",
        "Client connections on this server, per hub.",
        "hub",
        &registry.connection_counts(),
    );
    e.labelled(
        "hubhost_transport_connections",
        "gauge",
        "Client connections on this server, per transport.",
        "transport",
        &m.transports.samples(),
    );
    e.labelled(
        "hubhost_protocol_connections",
        "gauge",
        "Client connections on this server, per hub protocol.",
        "protocol",
        &m.protocols.samples(),
    );
    e.histogram(
        "hubhost_hub_call_duration_seconds",
        "Duration of hub calls.",
        &m.call_duration,
    );
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        e.finish(),
    )
        .into_response()
}

fn text(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
        body,
    )
        .into_response()
}

/// Who the request is. A token that does not verify, or none on a hub that requires one (its
/// `NAME.toml`), is an error, answered with [`unauthorized`].
fn authorize(
    app: &AppState,
    hub: &LoadedHub,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<Identity, AuthError> {
    let identity = app.auth.identify(headers, query)?;
    if identity.user_id.is_none() && hub.limits().require_auth {
        return Err(AuthError::Missing);
    }
    Ok(identity)
}

/// The bearer token a request carries, if any.
fn bearer<'a>(headers: &'a HeaderMap, query: &'a HashMap<String, String>) -> Option<&'a str> {
    crate::auth::request_token(headers, query)
}
