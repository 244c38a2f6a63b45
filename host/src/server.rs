//! HTTP routes: negotiate, the hub WebSocket, health checks and the demo page.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path, Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

use crate::auth::AuthError;
use crate::connection::ids::{ClaimError, random_id};
use crate::connection::{self, Accepted, Shared};
use crate::metrics::Exposition;
use crate::router::{ConnectionId, HubName};

const DEMO_PAGE: &str = include_str!("demo/index.html");

/// Builds the routes. `origins` lists the browser origins allowed (empty: any).
pub fn routes(shared: Arc<Shared>, demo: bool, origins: &[String]) -> Router {
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
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(AllowHeaders::mirror_request());
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/{hub}/negotiate", post(negotiate))
        .route("/{hub}", get(connect));
    if demo {
        router = router.route("/", get(|| async { Html(DEMO_PAGE) }));
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
    router.layer(origin_check).layer(cors).with_state(shared)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let hubs = shared.dispatcher.runtime().hub_names();
    let router = shared.dispatcher.router();
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
async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    use crate::backplane::BackplaneStats;
    let router = shared.dispatcher.router();
    let registry = router.registry();
    let backplane = router.backplane();
    let stats = backplane.stats();
    let m = shared.dispatcher.metrics();
    let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let mut e = Exposition::new();
    e.metric(
        "hubhost_connections",
        "gauge",
        "Client connections on this server.",
        registry.connection_count() as u64,
    );
    e.labelled(
        "hubhost_hub_connections",
        "gauge",
        "Client connections on this server, per hub.",
        "hub",
        &registry.connection_counts(),
    );
    e.metric(
        "hubhost_messages_in_total",
        "counter",
        "Messages received from clients.",
        get(&m.messages_in),
    );
    e.metric(
        "hubhost_messages_out_total",
        "counter",
        "Hub messages delivered to local clients.",
        registry.delivered_total(),
    );
    e.metric(
        "hubhost_hub_calls_total",
        "counter",
        "Hub calls (invocations, connects, disconnects).",
        get(&m.hub_calls),
    );
    e.metric(
        "hubhost_hub_traps_total",
        "counter",
        "Hub calls that trapped.",
        get(&m.traps),
    );
    e.metric(
        "hubhost_hub_deadline_hits_total",
        "counter",
        "Hub calls stopped at their deadline.",
        get(&m.deadline_hits),
    );
    e.metric(
        "hubhost_hub_memory_hits_total",
        "counter",
        "Hub calls stopped at their memory cap.",
        get(&m.memory_hits),
    );
    e.metric(
        "hubhost_rate_limited_total",
        "counter",
        "Invocations refused by the per-connection rate limit.",
        get(&m.rate_limited),
    );
    e.histogram(
        "hubhost_hub_call_duration_seconds",
        "Duration of hub calls.",
        &m.call_duration,
    );
    e.metric(
        "hubhost_backplane_connected",
        "gauge",
        "1 when the backplane link is up.",
        u64::from(backplane.is_ready()),
    );
    e.metric(
        "hubhost_backplane_published_total",
        "counter",
        "Messages handed to the backplane transport.",
        BackplaneStats::get(&stats.published),
    );
    e.metric(
        "hubhost_backplane_received_total",
        "counter",
        "Messages received from the backplane transport.",
        BackplaneStats::get(&stats.received),
    );
    e.metric(
        "hubhost_backplane_dropped_total",
        "counter",
        "Messages that could not reach other servers (delivered locally only).",
        BackplaneStats::get(&stats.dropped),
    );
    e.metric(
        "hubhost_backplane_reconnects_total",
        "counter",
        "Times the backplane link was restored after a loss.",
        BackplaneStats::get(&stats.reconnects),
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

fn known_hub(shared: &Shared, hub: &str) -> Option<HubName> {
    shared
        .dispatcher
        .runtime()
        .hub(hub)
        .map(|h| h.name().clone())
}

/// Whether the hub's settings require authenticated clients.
fn requires_auth(shared: &Shared, hub: &str) -> bool {
    shared
        .dispatcher
        .runtime()
        .hub(hub)
        .is_some_and(|h| h.limits().require_auth)
}

/// The largest client message a hub accepts (its `NAME.toml` may change the global limit).
fn max_message_size(shared: &Shared, hub: &str) -> usize {
    shared
        .dispatcher
        .runtime()
        .hub(hub)
        .map_or(shared.settings.max_message_size, |h| {
            h.limits().max_message_size
        })
}

/// 401 for a token that does not verify.
fn unauthorized(error: &AuthError) -> Response {
    tracing::debug!("refused a token: {error}");
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        )],
        "Unauthorized",
    )
        .into_response()
}

async fn negotiate(
    State(shared): State<Arc<Shared>>,
    Path(hub): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let Some(hub) = known_hub(&shared, &hub) else {
        return text(StatusCode::NOT_FOUND, "Hub not found");
    };
    match shared.auth.identify(&headers, &query) {
        Err(e) => return unauthorized(&e),
        Ok(identity) if identity.user_id.is_none() && requires_auth(&shared, hub.as_str()) => {
            return unauthorized(&AuthError::Missing);
        }
        Ok(_) => {}
    }
    let version = match query.get("negotiateVersion") {
        None => 0,
        Some(v) => match v.parse::<u32>() {
            Ok(v) => v.min(1),
            Err(_) => {
                return axum::Json(json!({
                    "error": "The client requested a non-integer protocol version."
                }))
                .into_response();
            }
        },
    };
    let (connection_id, token) = shared.negotiated.create(hub, version);
    let transports = json!([{ "transport": "WebSockets", "transferFormats": ["Text", "Binary"] }]);
    let body = if version >= 1 {
        json!({
            "negotiateVersion": version,
            "connectionId": connection_id.as_str(),
            "connectionToken": token,
            "availableTransports": transports,
        })
    } else {
        json!({
            "negotiateVersion": 0,
            "connectionId": connection_id.as_str(),
            "availableTransports": transports,
        })
    };
    axum::Json(body).into_response()
}

async fn connect(
    State(shared): State<Arc<Shared>>,
    Path(hub): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Some(hub) = known_hub(&shared, &hub) else {
        return text(StatusCode::NOT_FOUND, "Hub not found");
    };
    let identity = match shared.auth.identify(&headers, &query) {
        Ok(identity) if identity.user_id.is_none() && requires_auth(&shared, hub.as_str()) => {
            return unauthorized(&AuthError::Missing);
        }
        Ok(identity) => identity,
        Err(e) => return unauthorized(&e),
    };
    let token = query.get("id").cloned();
    let Ok(upgrade) = upgrade else {
        // Only the WebSockets transport is offered, so a plain GET is a client mistake.
        return match token {
            Some(token) if !shared.negotiated.exists(&hub, &token) => {
                text(StatusCode::NOT_FOUND, "No Connection with that ID")
            }
            Some(_) => text(
                StatusCode::BAD_REQUEST,
                "This server supports only the WebSockets transport.",
            ),
            None => text(StatusCode::BAD_REQUEST, "Connection ID required"),
        };
    };
    let connection_id = match &token {
        Some(token) => match shared.negotiated.claim(&hub, token) {
            Ok(id) => id,
            Err(ClaimError::Unknown) => {
                return text(StatusCode::NOT_FOUND, "No Connection with that ID");
            }
            Err(ClaimError::InUse) => return text(StatusCode::CONFLICT, ""),
        },
        // skipNegotiation: the socket is the whole connection.
        None => ConnectionId::new(random_id()),
    };
    let max_message_size = max_message_size(&shared, hub.as_str());
    let accepted = Accepted {
        max_message_size,
        hub,
        connection_id,
        token: token.clone(),
        user_id: identity.user_id,
        claims: identity.claims,
    };
    // The socket accepts somewhat more than a message so an oversized one can be answered with
    // a proper Close message instead of a torn connection.
    let ws_limit = max_message_size.saturating_mul(4).max(64 * 1024);
    let negotiated = shared.negotiated.clone();
    upgrade
        // tungstenite preallocates its read buffer (128 KiB by default): a small one keeps an
        // idle connection cheap, and larger messages still arrive (the buffer grows as needed).
        .read_buffer_size(4 * 1024)
        .max_message_size(ws_limit)
        .max_frame_size(ws_limit)
        .on_failed_upgrade(move |error| {
            tracing::debug!("WebSocket upgrade failed: {error}");
            if let Some(token) = token {
                negotiated.release(&token);
            }
        })
        .on_upgrade(move |socket| {
            let sessions = shared.sessions.clone();
            sessions.track_future(connection::serve(socket, accepted, shared))
        })
}
