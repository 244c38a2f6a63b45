//! One client connection: handshake, then a read loop that decodes records and runs hub calls
//! one at a time (SignalR's default of one parallel invocation per client), while a writer task
//! drains the connection's bounded outbox.

pub mod ids;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use futures_util::StreamExt;
use futures_util::stream::SplitStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::dispatcher::Dispatcher;
use crate::protocol::framing::RecordReader;
use crate::protocol::handshake::{self, HandshakeError};
use crate::protocol::{ClientMessage, ProtocolError, json};
use crate::router::{ConnectionHandle, OfferError, Outbound, OutboxSender};
use crate::runtime::Caller;
use ids::Negotiated;

/// Protocol settings of every connection.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A Ping goes out when nothing was written for this long.
    pub keep_alive: Duration,
    /// A client that pings and then goes silent this long is dropped.
    pub client_timeout: Duration,
    /// How long a client has to send its handshake.
    pub handshake_timeout: Duration,
    /// Frames queued for one connection before it counts as too slow and is cut off.
    pub outbox_capacity: usize,
    /// Invocations per second per connection (0: unlimited).
    pub rate_limit: u32,
}

/// A token bucket: `rate` tokens a second, holding at most twice that.
#[derive(Debug)]
struct RateLimiter {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    fn new(rate: u32) -> Option<Self> {
        (rate > 0).then(|| Self {
            rate: f64::from(rate),
            tokens: f64::from(rate) * 2.0,
            last: Instant::now(),
        })
    }

    fn allow(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate * 2.0);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What every connection shares.
pub struct Shared {
    pub dispatcher: Arc<Dispatcher>,
    pub negotiated: Arc<Negotiated>,
    pub settings: Settings,
    /// Cancelled when the server stops for good (after draining): ends every session at once.
    pub shutdown: CancellationToken,
    /// Cancelled when shutdown begins: sessions finish their current call, send Close with
    /// allowReconnect, and end.
    pub draining: CancellationToken,
    /// Every running session, so shutdown can wait for them to finish.
    pub sessions: TaskTracker,
    /// Checks bearer tokens.
    pub auth: crate::auth::Authenticator,
}

/// A WebSocket accepted for a hub.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The hub, the connection's id and who it belongs to.
    pub caller: Caller,
    /// The negotiate token to release when the connection ends (none with skipNegotiation).
    pub token: Option<String>,
    /// Largest message accepted on this connection (the hub's limit).
    pub max_message_size: usize,
}

/// How a session ended.
enum End {
    /// The socket closed or failed; nothing more can be written.
    SocketGone(Option<String>),
    /// The client sent a Close message.
    ClientClosed(Option<String>),
    /// The server ends it with this Close frame; `error` is given to `on-disconnected`.
    Close {
        frame: String,
        error: Option<String>,
    },
    /// Cut off by the server (slow client, shutdown, hub removed); the writer closes the socket.
    Cancelled,
}

/// Serves one WebSocket to the end.
pub async fn serve(socket: WebSocket, accepted: Accepted, shared: Arc<Shared>) {
    let Accepted {
        caller,
        token,
        max_message_size,
    } = accepted;
    let (sink, mut stream) = socket.split();
    let (outbox, outbox_rx) = crate::router::outbox(shared.settings.outbox_capacity);
    let cancel = shared.shutdown.child_token();
    let mut writer = tokio::spawn(writer::run(
        sink,
        outbox_rx,
        shared.settings.keep_alive,
        cancel.clone(),
    ));
    let mut session = Session {
        limiter: RateLimiter::new(shared.settings.rate_limit),
        stream: &mut stream,
        records: RecordReader::new(max_message_size),
        outbox: outbox.clone(),
        cancel: cancel.clone(),
        shared: &shared,
        caller,
    };
    session.run().await;
    drop(outbox);
    if let Some(token) = &token {
        shared.negotiated.release(token);
    }
    // The writer ends once it has flushed the Close frame; do not wait forever on a dead peer.
    cancel.cancel();
    if tokio::time::timeout(Duration::from_secs(5), &mut writer)
        .await
        .is_err()
    {
        // A peer that stopped reading: its socket goes with the task.
        writer.abort();
    }
}

struct Session<'a> {
    limiter: Option<RateLimiter>,
    stream: &'a mut SplitStream<WebSocket>,
    records: RecordReader,
    outbox: OutboxSender,
    cancel: CancellationToken,
    shared: &'a Shared,
    caller: Caller,
}

impl Session<'_> {
    async fn run(&mut self) {
        let dispatcher = self.shared.dispatcher.clone();
        let router = dispatcher.router().clone();
        if let Err(error) = self.handshake().await {
            tracing::debug!(connection = %self.caller.connection_id, "handshake failed: {error}");
            self.queue(Outbound::Close(handshake::error_response(&error).into()));
            return;
        }
        // The futures of hub calls and backplane work are large (a Wasm call's state machine) and
        // short-lived: boxed, they take memory only while they run, not for the whole life of
        // every idle connection.
        Box::pin(router.connect(
            &self.caller.hub,
            ConnectionHandle {
                id: self.caller.connection_id.clone(),
                user: self.caller.user_id.clone(),
                outbox: self.outbox.clone(),
                cancel: self.cancel.clone(),
            },
        ))
        .await;
        tracing::debug!(hub = %self.caller.hub, connection = %self.caller.connection_id, "connected");

        if let Err(text) = Box::pin(dispatcher.connected(&self.caller)).await {
            Box::pin(router.disconnect(&self.caller.hub, &self.caller.connection_id)).await;
            self.queue(Outbound::Close(json::close(Some(&text), false).into()));
            return;
        }

        let end = self.read_loop().await;
        Box::pin(router.disconnect(&self.caller.hub, &self.caller.connection_id)).await;
        let error = match end {
            End::SocketGone(error) => error,
            End::ClientClosed(error) => {
                self.queue(Outbound::Close(json::close(None, false).into()));
                error
            }
            End::Close { frame, error } => {
                self.queue(Outbound::Close(frame.into()));
                error
            }
            End::Cancelled => None,
        };
        tracing::debug!(hub = %self.caller.hub, connection = %self.caller.connection_id, error, "disconnected");
        Box::pin(dispatcher.disconnected(&self.caller, error.as_deref())).await;
    }

    /// Reads until the first record, which must be the handshake; answers it.
    async fn handshake(&mut self) -> Result<(), HandshakeError> {
        let deadline = Instant::now() + self.shared.settings.handshake_timeout;
        loop {
            match self.records.next_record() {
                Ok(Some(record)) => {
                    handshake::parse_request(&record)?;
                    self.queue(Outbound::Frame(Utf8Bytes::from_static(
                        handshake::HANDSHAKE_OK,
                    )));
                    return Ok(());
                }
                Ok(None) => {}
                Err(_) => return Err(HandshakeError::TimedOut),
            }
            let frame = tokio::select! {
                frame = self.stream.next() => frame,
                _ = tokio::time::sleep_until(deadline) => return Err(HandshakeError::TimedOut),
                _ = self.cancel.cancelled() => return Err(HandshakeError::TimedOut),
                _ = self.shared.draining.cancelled() => return Err(HandshakeError::TimedOut),
            };
            match frame {
                Some(Ok(Message::Text(text))) => self.records.push(text.as_bytes()),
                Some(Ok(Message::Binary(data))) => self.records.push(&data),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    return Err(HandshakeError::TimedOut);
                }
            }
        }
    }

    async fn read_loop(&mut self) -> End {
        let settings = &self.shared.settings;
        // Like ASP.NET Core, the client timeout starts with the client's first Ping: clients
        // that never ping are not expected to.
        let mut timeout_armed = false;
        let mut last_received = Instant::now();
        loop {
            // Messages that came with the handshake, or earlier in this frame, go first.
            loop {
                match self.records.next_record() {
                    Ok(Some(record)) => {
                        if let Some(end) = self.handle(&record, &mut timeout_armed).await {
                            return end;
                        }
                    }
                    Ok(None) => break,
                    Err(error) => return protocol_error(&error),
                }
            }
            let idle_deadline = last_received + settings.client_timeout;
            let frame = tokio::select! {
                frame = self.stream.next() => frame,
                _ = self.cancel.cancelled() => return End::Cancelled,
                _ = self.shared.draining.cancelled() => {
                    return End::Close { frame: json::close(None, true), error: None };
                }
                _ = tokio::time::sleep_until(idle_deadline), if timeout_armed => {
                    return End::Close {
                        frame: json::close(Some("Connection closed with an error. OperationCanceledException: Client hasn't sent a message/ping within the configured ClientTimeoutInterval."), true),
                        error: Some("client timeout".into()),
                    };
                }
            };
            last_received = Instant::now();
            match frame {
                Some(Ok(Message::Text(text))) => self.records.push(text.as_bytes()),
                Some(Ok(Message::Binary(data))) => self.records.push(&data),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None => return End::SocketGone(None),
                Some(Err(e)) => return End::SocketGone(Some(format!("connection lost: {e}"))),
            }
        }
    }

    /// Handles one record; `Some` ends the session.
    async fn handle(&mut self, record: &[u8], timeout_armed: &mut bool) -> Option<End> {
        crate::metrics::Metrics::inc(&self.shared.dispatcher.metrics().messages_in);
        let message = match json::decode(record) {
            Ok(message) => message,
            Err(error) => return Some(protocol_error(&error)),
        };
        match message {
            ClientMessage::Invocation {
                invocation_id,
                target,
                arguments,
                stream_ids,
            } => {
                let limited = self.limiter.as_mut().is_some_and(|l| !l.allow());
                let reply = if limited {
                    crate::metrics::Metrics::inc(&self.shared.dispatcher.metrics().rate_limited);
                    Err(format!(
                        "Failed to invoke '{target}' due to an error on the server. HubException: Rate limit exceeded: at most {} invocations per second per connection.",
                        self.shared.settings.rate_limit
                    ))
                } else if !stream_ids.is_empty() {
                    Err(format!(
                        "An unexpected error occurred invoking '{target}' on the server. HubException: Client sent {} stream(s), Hub method expects 0.",
                        stream_ids.len()
                    ))
                } else {
                    // Boxed, like the other hub calls: see `run`.
                    Box::pin(
                        self.shared
                            .dispatcher
                            .invoke(&self.caller, &target, arguments.get()),
                    )
                    .await
                };
                // Without an invocation id the client wants no answer, not even an error.
                if let Some(id) = invocation_id {
                    let frame = match reply {
                        Ok(Some(result)) => json::completion_result(&id, &result),
                        Ok(None) => json::completion_void(&id),
                        Err(error) => json::completion_error(&id, &error),
                    };
                    self.queue(Outbound::Frame(frame.into()));
                }
            }
            ClientMessage::StreamInvocation {
                invocation_id,
                target,
            } => {
                let error = format!(
                    "The client attempted to invoke the non-streaming '{target}' method with a streaming invocation."
                );
                self.queue(Outbound::Frame(
                    json::completion_error(&invocation_id, &error).into(),
                ));
            }
            ClientMessage::Ping => *timeout_armed = true,
            ClientMessage::Close { error } => return Some(End::ClientClosed(error)),
            ClientMessage::StreamItem { invocation_id }
            | ClientMessage::Completion { invocation_id }
            | ClientMessage::CancelInvocation { invocation_id } => {
                tracing::debug!(connection = %self.caller.connection_id, invocation_id, "ignored a message for an unknown invocation");
            }
            ClientMessage::AckOrSequence => {}
            ClientMessage::Unknown(kind) => {
                tracing::debug!(connection = %self.caller.connection_id, kind, "ignored a message of unknown type");
            }
        }
        None
    }

    /// Queues a frame for this connection; a full outbox cuts it off (it is not reading).
    fn queue(&self, message: Outbound) {
        match self.outbox.try_send(message) {
            Ok(()) | Err(OfferError::Closed) => {}
            Err(OfferError::Full) => {
                tracing::warn!(connection = %self.caller.connection_id, "outbox full, closing slow connection");
                self.cancel.cancel();
            }
        }
    }
}

/// The end of a session whose client sent something that is not the protocol.
fn protocol_error(error: &ProtocolError) -> End {
    // ASP.NET Core shows the cause only with detailed errors; it is the client's own input, so
    // hubhost always says what was wrong (the text matches ASP.NET's detailed form).
    let text = format!("Connection closed with an error. InvalidDataException: {error}");
    End::Close {
        frame: json::close(Some(&text), false),
        error: Some(error.to_string()),
    }
}
