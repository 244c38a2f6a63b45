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

use crate::auth::{AuthError, Identity};
use crate::connection::ids::{ClaimError, random_id};
use crate::connection::{self, Accepted, Shared};
use crate::metrics::Exposition;
use crate::router::{ConnectionId, HubName};
use crate::runtime::{Caller, LoadedHub};

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
        get(&stats.published),
    );
    e.metric(
        "hubhost_backplane_received_total",
        "counter",
        "Messages received from the backplane transport.",
        get(&stats.received),
    );
    e.metric(
        "hubhost_backplane_dropped_total",
        "counter",
        "Messages that could not reach other servers (delivered locally only).",
        get(&stats.dropped),
    );
    e.metric(
        "hubhost_backplane_reconnects_total",
        "counter",
        "Times the backplane link was restored after a loss.",
        get(&stats.reconnects),
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

fn known_hub(shared: &Shared, hub: &str) -> Option<Arc<LoadedHub>> {
    shared.dispatcher.runtime().hub(hub)
}

/// Who the request is. A token that does not verify, or none on a hub that requires one (its
/// `NAME.toml`), is an error, answered with [`unauthorized`].
fn authorize(
    shared: &Shared,
    hub: &LoadedHub,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<Identity, AuthError> {
    let identity = shared.auth.identify(headers, query)?;
    if identity.user_id.is_none() && hub.limits().require_auth {
        return Err(AuthError::Missing);
    }
    Ok(identity)
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
    if let Err(e) = authorize(&shared, &hub, &headers, &query) {
        return unauthorized(&e);
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
    let (connection_id, token) = shared.negotiated.create(hub.name().clone(), version);
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
    let Some(loaded) = known_hub(&shared, &hub) else {
        return text(StatusCode::NOT_FOUND, "Hub not found");
    };
    let identity = match authorize(&shared, &loaded, &headers, &query) {
        Ok(identity) => identity,
        Err(e) => return unauthorized(&e),
    };
    let hub = loaded.name().clone();
    let max_message_size = loaded.limits().max_message_size;
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
    let accepted = Accepted {
        caller: Caller {
            hub,
            connection_id,
            user_id: identity.user_id,
            claims: identity.claims,
        },
        token: token.clone(),
        max_message_size,
    };
    // The socket accepts somewhat more than a message so an oversized one can be answered with
    // a proper Close message instead of a torn connection.
    let ws_limit = max_message_size.saturating_mul(4).max(64 * 1024);
    let negotiated = shared.negotiated.clone();
    upgrade
        // tungstenite keeps its read buffer allocated for the life of the connection (128 KiB
        // by default): a small one keeps idle connections cheap. Larger messages still arrive
        // in one piece: the buffer grows to the length announced in a frame's header.
        .read_buffer_size(1024)
        // Written frames are flushed to the socket past this size; tungstenite's write buffer
        // keeps the largest size it reached, so it is bounded for the same reason.
        .write_buffer_size(16 * 1024)
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
