//! `GET /{hub}`: a client's transport for a negotiated connection (or, with
//! `skipNegotiation`, the whole connection).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path, Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::negotiate::ClaimError;
use super::{AppState, authorize, text, unauthorized};
use crate::session::Connection;
use crate::transport::websocket;
use crate::types::{Caller, ConnectionId};

pub(super) async fn connect(
    State(app): State<Arc<AppState>>,
    Path(hub): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Some(loaded) = app.runtime.hub(&hub) else {
        return text(StatusCode::NOT_FOUND, "Hub not found");
    };
    let identity = match authorize(&app, &loaded, &headers, &query) {
        Ok(identity) => identity,
        Err(e) => return unauthorized(&e),
    };
    let hub = loaded.name().clone();
    let token = query.get("id");
    let Ok(upgrade) = upgrade else {
        // Only the WebSockets transport is offered, so a plain GET is a client mistake.
        return match token {
            Some(token) if !app.negotiated.exists(&hub, token) => {
                text(StatusCode::NOT_FOUND, "No Connection with that ID")
            }
            Some(_) => text(
                StatusCode::BAD_REQUEST,
                "This server supports only the WebSockets transport.",
            ),
            None => text(StatusCode::BAD_REQUEST, "Connection ID required"),
        };
    };
    let (connection_id, lease) = match token {
        Some(token) => match app.negotiated.claim(&hub, token) {
            Ok((id, lease)) => (id, Some(lease)),
            Err(ClaimError::Unknown) => {
                return text(StatusCode::NOT_FOUND, "No Connection with that ID");
            }
            Err(ClaimError::InUse) => return text(StatusCode::CONFLICT, ""),
        },
        // skipNegotiation: the socket is the whole connection.
        None => (ConnectionId::random(), None),
    };
    let connection = Connection {
        caller: Caller {
            hub,
            connection_id,
            user_id: identity.user_id,
            claims: identity.claims,
        },
        max_message_size: loaded.limits().max_message_size,
    };
    websocket::accept(upgrade, connection, app.sessions.clone(), lease)
}
