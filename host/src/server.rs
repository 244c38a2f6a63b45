//! HTTP routes: negotiate, the hub WebSocket, health checks and the demo page.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path, Query, State, WebSocketUpgrade};
use axum::http::{HeaderValue, Method, StatusCode, header};
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
    let backplane = shared.dispatcher.router().is_ready();
    let ready = !hubs.is_empty() && backplane;
    let body = json!({
        "ready": ready,
        "hubs": hubs.iter().map(HubName::as_str).collect::<Vec<_>>(),
        "backplane": backplane,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
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

async fn negotiate(
    State(shared): State<Arc<Shared>>,
    Path(hub): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(hub) = known_hub(&shared, &hub) else {
        return text(StatusCode::NOT_FOUND, "Hub not found");
    };
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
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Some(hub) = known_hub(&shared, &hub) else {
        return text(StatusCode::NOT_FOUND, "Hub not found");
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
    let accepted = Accepted {
        hub,
        connection_id,
        token: token.clone(),
        user_id: None,
        claims: Vec::new(),
    };
    // The socket accepts somewhat more than a message so an oversized one can be answered with
    // a proper Close message instead of a torn connection.
    let ws_limit = shared
        .settings
        .max_message_size
        .saturating_mul(4)
        .max(64 * 1024);
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
