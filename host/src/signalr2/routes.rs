//! The `/signalr/...` endpoints and the checks every request passes.
//!
//! All but `negotiate`, `ping` and `hubs` carry a connection token, checked first: the
//! transport must be known, the token present and genuine, and its user the requester, with
//! SignalR 2's answers (400 `Protocol error: Unknown transport.`, 400 `Protocol error: Missing
//! connection token.`, 400 `The ConnectionId is in the incorrect format.`, 403 `Unrecognized
//! user identity…`). Every request names its hubs in `connectionData`; an unknown one is
//! SignalR 2's 500 `'x' Hub could not be resolved.`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, WebSocketUpgrade};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::oneshot;

use super::Signalr2;
use super::connection::{Persistent, Request as ConnectionRequest};
use super::message::HubRequest;
use super::transports;
use crate::auth::Identity;
use crate::types::{ConnectionId, HubName, Request as HttpRequest};

/// Largest form body read (a `/send` or a poll); larger messages are refused by size first.
const MAX_BODY: usize = 1024 * 1024;

/// The protocol version this server speaks (the 2.x jQuery client accepts 1.5 to 2.1).
const PROTOCOL_VERSION: &str = "2.0";

use crate::transport::Transport;

/// An answer that ends a request early.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        plain(self.0, self.1)
    }
}

fn plain(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=UTF-8"),
        )],
        body.into(),
    )
        .into_response()
}

/// `/signalr/{action}`. `redirect` is where negotiate sends the client instead, if anywhere
/// (this host's own URL, when the request came through a load balancer: every later request
/// of the connection then reaches this host).
pub async fn handle(
    service: Arc<Signalr2>,
    action: &str,
    request: Request,
    redirect: Option<String>,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let query = parse_pairs(parts.uri.query().unwrap_or("").as_bytes());
    let action = action.to_ascii_lowercase();
    match (action.as_str(), &parts.method) {
        ("ping", _) => return transports::json(json!({"Response": "pong"}).to_string()),
        ("hubs" | "js", &Method::GET) => {
            return super::proxy::script(&service, base_path(&parts.uri)).await;
        }
        _ => {}
    }
    let identity = match service.auth.identify(&parts.headers, &query) {
        Ok(identity) => identity,
        Err(error) => return crate::auth::unauthorized(&error),
    };
    let hubs = match connection_data(&service, &query) {
        Ok(hubs) => hubs,
        Err(refusal) => return refusal.into_response(),
    };
    if identity.user_id.is_none() && requires_auth(&service, &hubs) {
        return crate::auth::unauthorized(&crate::auth::AuthError::Missing);
    }
    if action == "negotiate" {
        // The 2.x client (protocol 2.0 and later) negotiates again at `RedirectUrl`.
        if let Some(url) = redirect {
            let body = json!({"ProtocolVersion": PROTOCOL_VERSION, "RedirectUrl": url});
            return transports::json(body.to_string());
        }
        return negotiate(&service, &parts.uri, &identity);
    }
    let transport = match transport(&service, &query) {
        Ok(transport) => transport,
        Err(refusal) => return refusal.into_response(),
    };
    let id = match check_token(&service, &query, &identity) {
        Ok(id) => id,
        Err(refusal) => return refusal.into_response(),
    };
    let action = match action.as_str() {
        "connect" => Action::Connect,
        "reconnect" => Action::Reconnect,
        "poll" => Action::Poll,
        "start" => Action::Start,
        "send" => Action::Send,
        "abort" => Action::Abort,
        _ => return plain(StatusCode::NOT_FOUND, "Not found."),
    };
    // A WebSocket transport request must be an upgrade; checked before anything is opened.
    let upgrade = match (action, transport) {
        (Action::Connect | Action::Reconnect, Transport::WebSockets) => {
            match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
                Ok(upgrade) => Some(upgrade),
                Err(_) => return plain(StatusCode::BAD_REQUEST, "Not a valid web socket request."),
            }
        }
        _ => None,
    };
    let form = if parts.method == Method::POST {
        match axum::body::to_bytes(body, MAX_BODY).await {
            Ok(bytes) => parse_pairs(&bytes),
            Err(_) => {
                return plain(StatusCode::PAYLOAD_TOO_LARGE, "The message is too large.");
            }
        }
    } else {
        HashMap::new()
    };
    if action == Action::Abort {
        if let Some(connection) = service.connection(&id) {
            connection.ended.cancel();
        }
        return plain(StatusCode::OK, "");
    }
    let groups_token = form
        .get("groupsToken")
        .or(query.get("groupsToken"))
        .map_or("", String::as_str);
    let revived = (action != Action::Connect).then_some(groups_token);
    let opening = || opening_request(&parts.headers, &query);
    let Some(connection) = service.open(&id, &identity, hubs, revived, opening) else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "The server is shutting down.",
        );
    };
    // Long polling sends the cursor in the form; the streaming transports in the query.
    let cursor = form.get("messageId").or(query.get("messageId")).cloned();
    match (action, transport) {
        (Action::Connect | Action::Reconnect, _) if let Some(upgrade) = upgrade => {
            let initialize = action == Action::Connect;
            transports::websocket(upgrade, service, connection, cursor, initialize)
        }
        (Action::Connect | Action::Reconnect, Transport::ServerSentEvents) => {
            let initialize = action == Action::Connect;
            transports::event_stream(&service, connection, cursor, initialize)
        }
        (Action::Connect, _) => transports::poll_connect(&connection),
        (Action::Reconnect | Action::Poll, _) => {
            transports::poll(&service, &connection, cursor.as_deref()).await
        }
        (Action::Start, _) => start(&connection).await,
        (Action::Send, _) => send(&service, &connection, &form).await,
        (Action::Abort, _) => plain(StatusCode::OK, ""),
    }
}

/// What a request with a connection token asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Connect,
    Reconnect,
    Poll,
    Start,
    Send,
    Abort,
}

/// Query parameters of SignalR 2's own, left out of what hubs see of a request (as Core's `id`
/// and `access_token` are).
const PROTOCOL_PARAMETERS: &[&str] = &[
    "transport",
    "clientProtocol",
    "connectionToken",
    "connectionData",
    "messageId",
    "groupsToken",
    "tid",
    "_",
];

/// The request that opens a connection, as hubs see it: its headers, and its query without
/// the protocol's parameters (the page's own `qs` stays).
fn opening_request(
    headers: &axum::http::HeaderMap,
    query: &HashMap<String, String>,
) -> HttpRequest {
    let mut own = form_urlencoded::Serializer::new(String::new());
    for (name, value) in query {
        if !PROTOCOL_PARAMETERS.contains(&name.as_str()) {
            own.append_pair(name, value);
        }
    }
    HttpRequest::new(
        headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())),
        &own.finish(),
    )
}

/// The endpoint's path: the request's path without its action (`/signalr`).
fn base_path(uri: &axum::http::Uri) -> &str {
    uri.path()
        .rsplit_once('/')
        .map_or("/signalr", |(base, _)| base)
}

/// Reads `a=b&c=d` (a query or a form; `+` is a space).
fn parse_pairs(bytes: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(bytes).into_owned().collect()
}

/// The hubs of `connectionData` (`[{"name":"chathub"}]`), resolved to loaded hubs.
fn connection_data(
    service: &Signalr2,
    query: &HashMap<String, String>,
) -> Result<Vec<HubName>, Refusal> {
    #[derive(Deserialize)]
    struct Named {
        name: String,
    }
    let Some(data) = query.get("connectionData").filter(|d| !d.is_empty()) else {
        return Ok(Vec::new());
    };
    let named: Vec<Named> = serde_json::from_str(data).map_err(|e| {
        Refusal(
            StatusCode::BAD_REQUEST,
            format!("Invalid connectionData: {e}"),
        )
    })?;
    let loaded = service.dispatcher.runtime().hub_names();
    let mut hubs: Vec<HubName> = Vec::with_capacity(named.len());
    for Named { name } in named {
        let Some(hub) = super::names::resolve(&loaded, &name) else {
            return Err(Refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("'{name}' Hub could not be resolved."),
            ));
        };
        if hubs.contains(&hub) {
            return Err(Refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Duplicate Hub names found.".into(),
            ));
        }
        hubs.push(hub);
    }
    Ok(hubs)
}

/// Whether one of `hubs` requires an authenticated user (its `NAME.toml`).
fn requires_auth(service: &Signalr2, hubs: &[HubName]) -> bool {
    hubs.iter().any(|hub| {
        service
            .dispatcher
            .runtime()
            .hub(hub.as_str())
            .is_some_and(|loaded| loaded.limits().require_auth)
    })
}

/// The request's transport; one `--transports` leaves out is unknown here.
fn transport(service: &Signalr2, query: &HashMap<String, String>) -> Result<Transport, Refusal> {
    let allowed = |transport| {
        service
            .settings
            .transports
            .contains(&transport)
            .then_some(transport)
    };
    let transport = match query.get("transport").map(String::as_str) {
        Some("webSockets") => allowed(Transport::WebSockets),
        Some("serverSentEvents") => allowed(Transport::ServerSentEvents),
        Some("longPolling") => allowed(Transport::LongPolling),
        // Internet Explorer's iframe transport: refused, so IE falls back to long polling.
        Some("foreverFrame") => {
            return Err(Refusal(
                StatusCode::BAD_REQUEST,
                "Protocol error: The foreverFrame transport is not supported.".into(),
            ));
        }
        _ => None,
    };
    transport.ok_or_else(|| {
        Refusal(
            StatusCode::BAD_REQUEST,
            "Protocol error: Unknown transport.".into(),
        )
    })
}

/// Checks the request's connection token; the connection's id.
fn check_token(
    service: &Signalr2,
    query: &HashMap<String, String>,
    identity: &Identity,
) -> Result<ConnectionId, Refusal> {
    let Some(token) = query.get("connectionToken").filter(|t| !t.is_empty()) else {
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            "Protocol error: Missing connection token.".into(),
        ));
    };
    let claims = service
        .key
        .unprotect(token)
        .map_err(|e| Refusal(StatusCode::BAD_REQUEST, e.to_string()))?;
    let user = identity.user_id.as_deref().unwrap_or("");
    if !claims.user.eq_ignore_ascii_case(user) {
        return Err(Refusal(
            StatusCode::FORBIDDEN,
            "Unrecognized user identity.  The user identity cannot change during an active SignalR connection.".into(),
        ));
    }
    Ok(claims.connection_id)
}

fn negotiate(service: &Signalr2, uri: &axum::http::Uri, identity: &Identity) -> Response {
    let id = ConnectionId::new(uuid_like());
    let token = service
        .key
        .protect(&id, identity.user_id.as_deref().unwrap_or(""));
    let settings = &service.settings;
    let body = json!({
        "Url": base_path(uri),
        "ConnectionToken": token,
        "ConnectionId": id.as_str(),
        "KeepAliveTimeout": (settings.keep_alive * 2).as_secs_f64(),
        "DisconnectTimeout": settings.disconnect_timeout.as_secs_f64(),
        "ConnectionTimeout": settings.poll_timeout.as_secs_f64(),
        "TryWebSockets": settings.transports.contains(&Transport::WebSockets),
        "ProtocolVersion": PROTOCOL_VERSION,
        "TransportConnectTimeout": 5.0,
        "LongPollDelay": 0.0,
    });
    transports::json(body.to_string())
}

/// A connection id shaped as SignalR 2's (a GUID).
fn uuid_like() -> String {
    let bytes: [u8; 16] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// `/start`: the hubs' `on-connected`, then `{"Response":"started"}`.
async fn start(connection: &Persistent) -> Response {
    let (done, started) = oneshot::channel();
    if connection
        .request(ConnectionRequest::Start { done })
        .await
        .is_err()
    {
        return plain(StatusCode::BAD_REQUEST, "The connection has ended.");
    }
    match started.await {
        Ok(Ok(())) => transports::json(json!({"Response": "started"}).to_string()),
        // The client reports anything else as `Invalid start response` and stops.
        Ok(Err(error)) => transports::json(json!({"Response": error}).to_string()),
        Err(_) => plain(StatusCode::BAD_REQUEST, "The connection has ended."),
    }
}

/// `/send`: runs the invocation in `data` and answers with its hub response.
async fn send(
    service: &Signalr2,
    connection: &Persistent,
    form: &HashMap<String, String>,
) -> Response {
    let Some(data) = form.get("data") else {
        return plain(
            StatusCode::BAD_REQUEST,
            "Invalid hub request: the form has no 'data'.",
        );
    };
    if data.len() > service.settings.max_message_size {
        return plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "The message is larger than the limit of {} bytes.",
                service.settings.max_message_size
            ),
        );
    }
    let request = match HubRequest::parse(data) {
        Ok(request) => request,
        Err(error) => return plain(StatusCode::BAD_REQUEST, error.to_string()),
    };
    let (reply, response) = oneshot::channel();
    let invoke = ConnectionRequest::Invoke {
        request: Box::new(request),
        reply: Some(reply),
    };
    if connection.request(invoke).await.is_err() {
        return plain(StatusCode::BAD_REQUEST, "The connection has ended.");
    }
    match response.await {
        Ok(response) => transports::json(response),
        Err(_) => plain(StatusCode::BAD_REQUEST, "The connection has ended."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hubs_see_the_page_query_without_the_protocol_parameters() {
        let query = parse_pairs(
            b"transport=webSockets&clientProtocol=2.1&connectionToken=t.s&connectionData=%5B%5D&tid=3&_=17&room=blue+sky",
        );
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("flavor=mint"));
        let request = opening_request(&headers, &query);
        assert_eq!(
            request.query(),
            [("room".to_owned(), "blue sky".to_owned())]
        );
        assert_eq!(
            request.cookies(),
            [("flavor".to_owned(), "mint".to_owned())]
        );
    }
}
