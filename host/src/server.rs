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

use crate::connection::ids::{ClaimError, random_id};
use crate::connection::{self, Accepted, Shared};
use crate::router::{ConnectionId, HubName};

const DEMO_PAGE: &str = include_str!("demo/index.html");

/// Builds the routes.
pub fn routes(shared: Arc<Shared>, demo: bool) -> Router {
    // Browsers send credentials and SignalR's own headers on negotiate: mirror the origin.
    // (Restricting origins is an operator setting still to come.)
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::mirror_request())
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
    router.layer(cors).with_state(shared)
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
    use std::fmt::Write as _;
    let router = shared.dispatcher.router();
    let backplane = router.backplane();
    let stats = backplane.stats();
    let get = crate::backplane::BackplaneStats::get;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    metric(
        "hubhost_connections",
        "gauge",
        "Client connections on this server.",
        router.registry().connection_count() as u64,
    );
    metric(
        "hubhost_backplane_connected",
        "gauge",
        "1 when the backplane link is up.",
        u64::from(backplane.is_ready()),
    );
    metric(
        "hubhost_backplane_published_total",
        "counter",
        "Messages handed to the backplane transport.",
        get(&stats.published),
    );
    metric(
        "hubhost_backplane_received_total",
        "counter",
        "Messages received from the backplane transport.",
        get(&stats.received),
    );
    metric(
        "hubhost_backplane_dropped_total",
        "counter",
        "Messages that could not reach other servers (delivered locally only).",
        get(&stats.dropped),
    );
    metric(
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
        out,
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
fn unauthorized(error: &crate::auth::AuthError) -> Response {
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
    if let Err(e) = shared.auth.identify(&headers, &query) {
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
