//! SignalR 2's transports over a connection's mailbox.
//!
//! Each transport request attaches to the connection (superseding the one before it), sends
//! the init response on `/connect`, then what the mailbox holds after the request's cursor,
//! as persistent responses:
//! - WebSockets: one text message per response, `{}` when quiet; hub calls come up as text
//!   messages;
//! - Server-Sent Events: `data: initialized`, then one event per response, `data: {}` when
//!   quiet; hub calls come up as `/send` POSTs;
//! - long polling: `/connect` answers the init at once; each `/poll` (or `/reconnect`) is
//!   answered with what came after its cursor, or empty after the poll timeout.
//!
//! When the connection ends (abort, shutdown), streams close and a held poll answers with
//! `T:1`, so a client that did not ask for the end reconnects (to another host, when this one
//! is going away).

use std::collections::VecDeque;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::WebSocketUpgrade;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, close_code};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt, stream};

use super::Signalr2;
use super::connection::{Attachment, Persistent, Request};
use super::mailbox::Cursor;
use super::message::{Flags, HubRequest, persistent_response};
use crate::transport::sse::event;

/// A persistent response at `cursor` carrying `messages`.
fn persistent(cursor: &str, messages: &[Bytes], flags: Flags<'_>) -> Bytes {
    Bytes::from(persistent_response(
        cursor,
        messages.iter().map(|m| &m[..]),
        flags,
    ))
}

/// Where a request starts reading: the mailbox's end on `/connect` (after the init
/// response), the client's cursor on a reconnect or poll.
fn start(connection: &Persistent, cursor: Option<&str>) -> Cursor {
    cursor
        .and_then(|text| connection.mailbox.parse(text))
        .unwrap_or_else(|| connection.mailbox.cursor())
}

/// The init response (`S:1`) at `cursor`.
fn init(cursor: Cursor) -> Bytes {
    persistent(
        &cursor.to_string(),
        &[],
        Flags {
            initialized: true,
            ..Flags::default()
        },
    )
}

/// What a transport request waits for next.
enum Next {
    /// Messages after the cursor: the response carrying them, and the cursor after them.
    Messages(Bytes, Cursor),
    /// Quiet for the keep-alive interval.
    Quiet,
    /// A newer request took the connection over, or the connection ended.
    Over,
}

/// `groups_sent` is the version of the groups token this request last sent; a response after
/// a change carries the new one.
async fn next(
    connection: &Persistent,
    attachment: &Attachment,
    cursor: Cursor,
    quiet: std::time::Duration,
    groups_sent: &mut u64,
) -> Next {
    tokio::select! {
        biased;
        () = attachment.superseded.cancelled() => Next::Over,
        () = connection.ended.cancelled() => Next::Over,
        () = connection.mailbox.wait_after(cursor) => {
            let batch = connection.mailbox.after(cursor);
            let (version, token) = connection.groups_token();
            let groups = (version != *groups_sent).then_some(token).flatten();
            *groups_sent = version;
            let flags = Flags {
                groups: groups.as_deref(),
                ..Flags::default()
            };
            match batch.cursor {
                Some(after) => Next::Messages(
                    persistent(&after.to_string(), &batch.messages, flags),
                    after,
                ),
                None => Next::Quiet,
            }
        }
        () = tokio::time::sleep(quiet) => Next::Quiet,
    }
}

/// Serves a connection over a WebSocket: `/connect` (`initialize`) or `/reconnect`.
pub fn websocket(
    upgrade: WebSocketUpgrade,
    service: Arc<Signalr2>,
    connection: Arc<Persistent>,
    cursor: Option<String>,
    initialize: bool,
) -> Response {
    let limit = service.settings.max_message_size;
    upgrade
        .read_buffer_size(1024)
        .write_buffer_size(16 * 1024)
        // Somewhat over the limit, so an oversized message is answered with a proper close.
        .max_message_size(limit.saturating_mul(4).max(64 * 1024))
        .on_failed_upgrade(|error| tracing::debug!("WebSocket upgrade failed: {error}"))
        .on_upgrade(move |socket| async move {
            let attachment = connection.attach();
            let cursor = start(&connection, cursor.as_deref());
            serve_websocket(
                socket,
                &service,
                &connection,
                &attachment,
                cursor,
                initialize,
            )
            .await;
        })
}

async fn serve_websocket(
    socket: WebSocket,
    service: &Signalr2,
    connection: &Persistent,
    attachment: &Attachment,
    mut cursor: Cursor,
    initialize: bool,
) {
    let (mut sink, mut stream) = socket.split();
    let limit = service.settings.max_message_size;
    let reader = async {
        while let Some(Ok(message)) = stream.next().await {
            let text = match message {
                Message::Text(text) => text,
                Message::Close(_) => return None,
                _ => continue,
            };
            if text.len() > limit {
                // SignalR 2 closes the socket on a message over its limit (1009).
                tracing::debug!(connection = %connection.id, size = text.len(), "SignalR 2 message too large");
                return Some(CloseFrame {
                    code: close_code::SIZE,
                    reason: Utf8Bytes::from_static("Message too big"),
                });
            }
            match HubRequest::parse(text.as_str()) {
                Ok(request) => {
                    let invoke = Request::Invoke {
                        request: Box::new(request),
                        reply: None,
                    };
                    if connection.request(invoke).await.is_err() {
                        return None;
                    }
                }
                // SignalR 2 logs a message it cannot read and goes on.
                Err(error) => {
                    tracing::debug!(connection = %connection.id, "ignored a SignalR 2 message: {error}")
                }
            }
        }
        None
    };
    let writer = async {
        if initialize && sink.send(text(init(cursor))).await.is_err() {
            return;
        }
        let mut groups_sent = 0;
        loop {
            let quiet = service.settings.keep_alive;
            let frame = match next(connection, attachment, cursor, quiet, &mut groups_sent).await {
                Next::Messages(response, after) => {
                    cursor = after;
                    response
                }
                Next::Quiet => Bytes::from_static(b"{}"),
                Next::Over => return,
            };
            if sink.send(text(frame)).await.is_err() {
                return;
            }
        }
    };
    let close = tokio::select! {
        close = reader => close,
        () = writer => None,
    };
    let close = close.unwrap_or(CloseFrame {
        code: close_code::NORMAL,
        reason: Utf8Bytes::from_static(""),
    });
    let _ = sink.send(Message::Close(Some(close))).await;
}

fn text(bytes: Bytes) -> Message {
    // Persistent responses are built from JSON text: always UTF-8.
    match Utf8Bytes::try_from(bytes.clone()) {
        Ok(text) => Message::Text(text),
        Err(_) => Message::Binary(bytes),
    }
}

/// Serves a connection as an event stream: `/connect` (`initialize`) or `/reconnect`.
pub fn event_stream(
    service: &Signalr2,
    connection: Arc<Persistent>,
    cursor: Option<String>,
    initialize: bool,
) -> Response {
    let attachment = connection.attach();
    let cursor = start(&connection, cursor.as_deref());
    // Each response is an event, a `data:` line per line (JSON from other clients may hold
    // line breaks; the browser joins the lines again), as Core's event streams write them.
    let mut first = VecDeque::from([event(b"initialized")]);
    if initialize {
        first.push_back(event(&init(cursor)));
    }
    let keep_alive = service.settings.keep_alive;
    let events = stream::unfold(
        (connection, attachment, cursor, first, 0),
        move |(connection, attachment, mut cursor, mut first, mut groups_sent)| async move {
            let chunk = match first.pop_front() {
                Some(chunk) => chunk,
                None => match next(
                    &connection,
                    &attachment,
                    cursor,
                    keep_alive,
                    &mut groups_sent,
                )
                .await
                {
                    Next::Messages(response, after) => {
                        cursor = after;
                        event(&response)
                    }
                    Next::Quiet => event(b"{}"),
                    Next::Over => return None,
                },
            };
            Some((
                Ok::<_, std::convert::Infallible>(chunk),
                (connection, attachment, cursor, first, groups_sent),
            ))
        },
    );
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            // Keeps nginx from buffering the events.
            (
                header::HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            ),
        ],
        Body::from_stream(events),
    )
        .into_response()
}

/// Long polling's `/connect`: the init response, at once.
pub fn poll_connect(connection: &Persistent) -> Response {
    json(init(connection.mailbox.cursor()))
}

/// Long polling's `/poll` and `/reconnect`: what came after `cursor`, once there is some or
/// after the poll timeout.
pub async fn poll(
    service: &Signalr2,
    connection: &Arc<Persistent>,
    cursor: Option<&str>,
) -> Response {
    let attachment = connection.attach();
    let from = start(connection, cursor);
    tracing::debug!(connection = %connection.id, cursor = %from, "long poll waiting");
    let mut groups_sent = 0;
    let quiet = service.settings.poll_timeout;
    match next(connection, &attachment, from, quiet, &mut groups_sent).await {
        Next::Messages(response, _) => json(response),
        // Nothing came, or a newer request took over: empty. The connection ended: `T:1`.
        Next::Quiet | Next::Over => {
            let flags = Flags {
                reconnect: connection.ended.is_cancelled(),
                ..Flags::default()
            };
            json(persistent(&from.to_string(), &[], flags))
        }
    }
}

/// A JSON answer, as SignalR 2 types them.
pub fn json(body: impl Into<Body>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=UTF-8"),
        )],
        body.into(),
    )
        .into_response()
}
