//! `/{hub}`: the transports' requests for a connection. GET opens a WebSocket (an upgrade),
//! an event stream (`Accept: text/event-stream`) or polls; POST sends (Server-Sent Events and
//! long polling); DELETE ends a long-polling connection. Status codes and texts are ASP.NET's.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path, Query, RawQuery, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use futures_util::StreamExt;

use super::{AppState, authorize, text, unauthorized};
use crate::auth::Identity;
use crate::metrics::Metrics;
use crate::runtime::LoadedHub;
use crate::session::{self, Connection};
use crate::transport::connections::{Found, StartError, Started};
use crate::transport::{Transport, long_polling, sse, websocket};
use crate::types::{Caller, ConnectionId, Request};

const NO_CONNECTION: &str = "No Connection with that ID";
const ID_REQUIRED: &str = "Connection ID required";
const OTHER_TRANSPORT: &str = "Cannot change transports mid-connection";

/// The hub and who is asking, or the answer that refuses the request.
fn admit(
    app: &AppState,
    hub: &str,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<(Arc<LoadedHub>, Identity), Box<Response>> {
    let loaded = app
        .runtime
        .hub(hub)
        .ok_or_else(|| Box::new(text(StatusCode::NOT_FOUND, "Hub not found")))?;
    let identity =
        authorize(app, &loaded, headers, query).map_err(|e| Box::new(unauthorized(&e)))?;
    Ok((loaded, identity))
}

/// The hub and the connection token of a request about a connection already started (a POST,
/// a DELETE), or the answer that refuses it.
fn admit_token<'q>(
    app: &AppState,
    hub: &str,
    headers: &HeaderMap,
    query: &'q HashMap<String, String>,
) -> Result<(Arc<LoadedHub>, &'q String), Box<Response>> {
    let (loaded, _) = admit(app, hub, headers, query)?;
    let token = query
        .get("id")
        .ok_or_else(|| Box::new(text(StatusCode::BAD_REQUEST, ID_REQUIRED)))?;
    Ok((loaded, token))
}

fn connection(
    loaded: &LoadedHub,
    connection_id: ConnectionId,
    identity: Identity,
    transport: Transport,
    request: Option<Arc<Request>>,
) -> Connection {
    Connection {
        caller: Caller {
            hub: loaded.name().clone(),
            connection_id,
            user_id: identity.user_id,
            claims: identity.claims,
            request,
        },
        max_message_size: loaded.limits().max_message_size,
        transport: transport.features(),
        token: None,
    }
}

fn start_error(error: StartError) -> Response {
    match error {
        StartError::Unknown => text(StatusCode::NOT_FOUND, NO_CONNECTION),
        StartError::InUse => text(StatusCode::CONFLICT, ""),
        StartError::OtherTransport => text(StatusCode::BAD_REQUEST, OTHER_TRANSPORT),
    }
}

/// Whether the client asks for an event stream.
fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| media.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// GET: a WebSocket, an event stream, or a poll.
pub(super) async fn connect(
    State(app): State<Arc<AppState>>,
    Path(hub): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let (loaded, identity) = match admit(&app, &hub, &headers, &query) {
        Ok(admitted) => admitted,
        Err(refused) => return *refused,
    };
    // Kept only for hubs that can read it (`caller.request`), built when a connection starts:
    // every connection holds it for its whole life.
    let request = || {
        loaded.reads_request().then(|| {
            Arc::new(Request::new(
                headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())),
                raw_query.as_deref().unwrap_or_default(),
            ))
        })
    };
    let transport = if upgrade.is_ok() {
        Transport::WebSockets
    } else if wants_event_stream(&headers) {
        Transport::ServerSentEvents
    } else {
        Transport::LongPolling
    };
    if !app.transports.contains(&transport) {
        return text(
            StatusCode::NOT_FOUND,
            match transport {
                Transport::WebSockets => {
                    "WebSockets transport not supported by this end point type"
                }
                Transport::ServerSentEvents => {
                    "ServerSentEvents transport not supported by this end point type"
                }
                Transport::LongPolling => {
                    "LongPolling transport not supported by this end point type"
                }
            },
        );
    }
    let token = query.get("id");
    let hub = loaded.name().clone();
    let sessions = app.sessions.clone();
    match (transport, upgrade) {
        (Transport::WebSockets, Ok(upgrade)) => {
            // Stateful reconnect: a connection's later socket carries it on, without a new
            // handshake.
            if let Some(resumer) = token.and_then(|token| app.connections.resumer(&hub, token)) {
                return resumer.resume(upgrade, loaded.limits().max_message_size);
            }
            let (connection_id, lease, attachments) = match token {
                Some(token) => match app.connections.start(&hub, token, transport) {
                    Ok(Started {
                        connection_id,
                        lease,
                        attachments,
                        ..
                    }) => (connection_id, Some(lease), attachments),
                    Err(StartError::Unknown) if app.stateful_reconnect => {
                        // A client coming back to a connection this host does not hold:
                        // another host may, and hands it over.
                        return take_over(&app, &loaded, identity, token, request(), upgrade).await;
                    }
                    Err(e) => return start_error(e),
                },
                // skipNegotiation: the socket is the whole connection.
                None => (ConnectionId::random(), None, None),
            };
            let mut connection = connection(&loaded, connection_id, identity, transport, request());
            connection.token = token
                .filter(|_| attachments.is_some())
                .map(|t| Arc::from(t.as_str()));
            websocket::accept(upgrade, connection, sessions, lease, attachments)
        }
        (Transport::ServerSentEvents, _) => {
            let Some(token) = token else {
                return text(StatusCode::BAD_REQUEST, ID_REQUIRED);
            };
            match app.connections.start(&hub, token, transport) {
                Ok(Started {
                    connection_id,
                    lease,
                    incoming: Some((inbox, incoming)),
                    ..
                }) => {
                    let connection =
                        connection(&loaded, connection_id, identity, transport, request());
                    sse::respond(connection, sessions, incoming, inbox, lease)
                }
                Ok(_) => text(StatusCode::INTERNAL_SERVER_ERROR, ""),
                Err(e) => start_error(e),
            }
        }
        _ => {
            let Some(token) = token else {
                return text(StatusCode::BAD_REQUEST, ID_REQUIRED);
            };
            let timeout = app.long_polling.poll_timeout;
            match app.connections.find(&hub, token) {
                Found::Unknown => text(StatusCode::NOT_FOUND, NO_CONNECTION),
                Found::Waiting(_) => match app.connections.start(&hub, token, transport) {
                    Ok(Started {
                        connection_id,
                        lease,
                        incoming: Some(incoming),
                        polls: Some(polls),
                        ..
                    }) => {
                        let connection =
                            connection(&loaded, connection_id, identity, transport, request());
                        let disconnect = app.long_polling.disconnect_timeout;
                        long_polling::start(
                            connection, sessions, incoming, polls, disconnect, lease,
                        )
                    }
                    Ok(_) => text(StatusCode::INTERNAL_SERVER_ERROR, ""),
                    Err(e) => start_error(e),
                },
                Found::Http {
                    transport: Transport::LongPolling,
                    polls: Some(polls),
                    ..
                }
                | Found::Ended(polls) => long_polling::answer_poll(polls.poll(timeout).await),
                Found::WebSocket | Found::Http { .. } => {
                    text(StatusCode::BAD_REQUEST, OTHER_TRANSPORT)
                }
            }
        }
    }
}

/// A WebSocket presenting a token this host does not hold: the connection moves here if another
/// host holds it (stateful reconnect across hosts), else 404 as ASP.NET answers, and the client
/// starts over.
async fn take_over(
    app: &Arc<AppState>,
    loaded: &LoadedHub,
    identity: Identity,
    token: &str,
    request: Option<Arc<Request>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let hub = loaded.name();
    let refused = || {
        Metrics::inc(&app.sessions.metrics.resumes_refused);
        start_error(StartError::Unknown)
    };
    let backplane = app.sessions.router.backplane();
    // The holder stays put unless the user is the connection's.
    let user = identity.user_id.clone();
    let Some(claimed) = backplane.claim(hub, token, user).await else {
        // No host holds it: under durable reconnect its record may, if its host died.
        return match revive(app, loaded, identity, token, request, upgrade).await {
            Some(response) => response,
            None => refused(),
        };
    };
    let connection_id = ConnectionId::new(claimed.offer.connection.clone());
    let connection = connection(
        loaded,
        connection_id,
        identity,
        Transport::WebSockets,
        request,
    );
    let caller = Arc::new(connection.caller.clone());
    match session::adopt(&app.sessions, caller, claimed, token).await {
        Ok(adopted) => accept_moved(app, token, upgrade, connection, adopted),
        Err(e) => {
            tracing::warn!(hub = %hub, "a connection could not move here: {e}");
            refused()
        }
    }
}

/// Serves a connection that moved here (or was taken over) on the client's new WebSocket, and
/// registers its token here.
fn accept_moved(
    app: &Arc<AppState>,
    token: &str,
    upgrade: WebSocketUpgrade,
    connection: Connection,
    adopted: session::Adopted,
) -> Response {
    let (hub, id) = (
        &connection.caller.hub,
        connection.caller.connection_id.clone(),
    );
    let (lease, attachments) = app.connections.adopt(hub, token, id);
    let sessions = app.sessions.clone();
    websocket::accept_adopted(upgrade, connection, sessions, lease, attachments, adopted)
}

/// Resumes, from its durable record, a connection no host answered for (its host died): the
/// response, or `None` when there is no record for this client to resume.
async fn revive(
    app: &Arc<AppState>,
    loaded: &LoadedHub,
    identity: Identity,
    token: &str,
    request: Option<Arc<Request>>,
    upgrade: WebSocketUpgrade,
) -> Option<Response> {
    let store = app.sessions.durable.as_ref()?;
    let hub = loaded.name();
    let record = match store.load(hub, token).await {
        Ok(record) => record?,
        Err(e) => {
            tracing::warn!(hub = %hub, "a durable record could not be read: {e}");
            return None;
        }
    };
    // Only its own user resumes a connection.
    if record.user != identity.user_id {
        return None;
    }
    let connection_id = ConnectionId::new(record.connection.clone());
    let connection = connection(
        loaded,
        connection_id,
        identity,
        Transport::WebSockets,
        request,
    );
    let caller = Arc::new(connection.caller.clone());
    match session::revive(&app.sessions, caller, record, token).await {
        Ok(adopted) => Some(accept_moved(app, token, upgrade, connection, adopted)),
        Err(e) => {
            tracing::warn!(hub = %hub, "a connection could not be resumed from its record: {e}");
            None
        }
    }
}

/// POST: one message (or several) from a Server-Sent Events or long-polling client.
pub(super) async fn send(
    State(app): State<Arc<AppState>>,
    Path(hub): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (loaded, token) = match admit_token(&app, &hub, &headers, &query) {
        Ok(admitted) => admitted,
        Err(refused) => return *refused,
    };
    let inbox = match app.connections.find(loaded.name(), token) {
        Found::Unknown => return text(StatusCode::NOT_FOUND, NO_CONNECTION),
        Found::WebSocket => {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "POST requests are not allowed for WebSocket connections.",
            );
        }
        Found::Ended(_) => return text(StatusCode::NOT_FOUND, ""),
        Found::Waiting(inbox) | Found::Http { inbox, .. } => inbox,
    };
    // The body goes to the session chunk by chunk, as ASP.NET copies it into the connection's
    // pipe: memory stays bounded whatever its size, a batch of many messages is fine, and a
    // message over the hub's limit closes the connection with ASP.NET's text.
    let _one_body_at_a_time = inbox.one_body_at_a_time().await;
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let Ok(chunk) = chunk else {
            // The client went away mid-body.
            return text(StatusCode::BAD_REQUEST, "");
        };
        if inbox.send(chunk).await.is_err() {
            return text(StatusCode::NOT_FOUND, "");
        }
    }
    text(StatusCode::OK, "")
}

/// DELETE: a long-polling client ends its connection.
pub(super) async fn end(
    State(app): State<Arc<AppState>>,
    Path(hub): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let (loaded, token) = match admit_token(&app, &hub, &headers, &query) {
        Ok(admitted) => admitted,
        Err(refused) => return *refused,
    };
    match app.connections.find(loaded.name(), token) {
        Found::Unknown => text(StatusCode::NOT_FOUND, NO_CONNECTION),
        Found::Http {
            transport: Transport::LongPolling,
            inbox,
            ..
        } => {
            inbox.close();
            text(StatusCode::ACCEPTED, "")
        }
        Found::Ended(_) => text(StatusCode::ACCEPTED, ""),
        Found::Waiting(_) | Found::WebSocket | Found::Http { .. } => text(
            StatusCode::BAD_REQUEST,
            "Cannot terminate this connection using the DELETE endpoint.",
        ),
    }
}
