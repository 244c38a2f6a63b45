//! `POST /{hub}/negotiate`: a new connection, the transports it may take, or (with
//! `--public-url`) where to negotiate instead.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde_json::json;

use super::{AppState, authorize, bearer, text, unauthorized};

pub(super) async fn negotiate(
    State(app): State<Arc<AppState>>,
    Path(hub): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let Some(hub) = app.runtime.hub(&hub) else {
        return text(StatusCode::NOT_FOUND, "Hub not found");
    };
    if let Err(e) = authorize(&app, &hub, &headers, &query) {
        return unauthorized(&e);
    }
    // Behind a balancer that is not sticky, the requests of a Server-Sent Events or
    // long-polling connection could reach different hosts: send the client to this host's own
    // address, where it negotiates again, keeping its token.
    if let Some(public) = &app.public_url
        && !public.is_addressed_by(&headers)
    {
        let mut body = json!({ "url": public.hub_url(hub.name().as_str()) });
        if let Some(token) = bearer(&headers, &query) {
            body["accessToken"] = json!(token);
        }
        return axum::Json(body).into_response();
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
    // Granted only when asked (a client that did not ask fails when it is granted) and only
    // with a token to resume with; it takes effect on a WebSocket.
    let stateful = app.stateful_reconnect
        && version >= 1
        && query
            .get("useStatefulReconnect")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let Ok((connection_id, token)) = app
        .connections
        .create(hub.name().clone(), version, stateful)
    else {
        // Retry after a moment, spread so refused clients do not come back together.
        let retry = rand::rng().random_range(1..=5).to_string();
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("text/plain")),
                (
                    header::RETRY_AFTER,
                    HeaderValue::from_str(&retry).unwrap_or(HeaderValue::from_static("1")),
                ),
            ],
            "Too many connections are being negotiated; try again shortly.",
        )
            .into_response();
    };
    let transports: Vec<_> = app
        .transports
        .iter()
        .map(|t| json!({ "transport": t.name(), "transferFormats": t.transfer_formats() }))
        .collect();
    let body = if version >= 1 {
        let mut body = json!({
            "negotiateVersion": version,
            "connectionId": connection_id.as_str(),
            "connectionToken": token,
            "availableTransports": transports,
        });
        if stateful {
            body["useStatefulReconnect"] = json!(true);
        }
        body
    } else {
        json!({
            "negotiateVersion": 0,
            "connectionId": connection_id.as_str(),
            "availableTransports": transports,
        })
    };
    axum::Json(body).into_response()
}
