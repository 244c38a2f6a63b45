//! The session proper: handshake, registration, the read loop, and the end.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use futures_util::{Stream, StreamExt};
use serde_json::value::RawValue;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::handoff::HandoffSender;
use super::invocations::{Finished, Invocations, Running};
use super::rate_limit::{self, RateLimiter};
use super::registration::Registration;
use super::resume::{Received, Sent, Verdict};
use super::streams::{self, Streams};
use super::uploads::{self, Uploads};
use super::{
    Attachment, Attachments, Connection, Inbound, SessionContext, TransportError,
    TransportFeatures, Uploaded,
};
use crate::durable;
use crate::metrics::Metrics;
use crate::protocol::handshake::{self, Chosen, HandshakeError};
use crate::protocol::{ClientMessage, Completion, HubProtocol, ProtocolError, ServerMessage};
use crate::registry::{ConnectionHandle, OfferError, Outbound, OutboxSender};
use crate::types::{Caller, Handover, MoveOrder, Offer, Reply};

/// The error of a stream to the client when its connection moves to another server (a stream
/// does not move with it).
const STREAM_MOVED: &str = "The stream ended because the connection moved to another server.";
/// The error of a stream from the client (an upload) when its connection moves.
const UPLOAD_MOVED: &str = "The upload ended because the connection moved to another server.";

/// How long a connection moving away waits for its claimant's marker.
const MARKER_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Registers a connection: as a durable one (from its marker in the hub's log) when it is
/// given `durable`, else as any other.
async fn register(
    context: Arc<SessionContext>,
    caller: Arc<Caller>,
    handle: ConnectionHandle,
    durable: Option<(durable::Link, Arc<Sent>)>,
) -> Registration {
    let (router, hubs) = (context.router.clone(), context.hubs.clone());
    match durable {
        Some((link, sent)) => {
            sent.make_durable(link);
            // Its frames from the hub's log start at its marker there.
            let claim = rand::random::<u64>();
            Registration::register_from_marker(router, hubs, caller, handle, claim).await
        }
        None => Registration::register(router, hubs, caller, handle).await,
    }
}

/// How a session ended.
enum End {
    /// The transport closed or failed; nothing more can be written.
    TransportGone(Option<String>),
    /// The client sent a Close message.
    ClientClosed(Option<String>),
    /// The server ends it with a Close message; `error` is given to `on-disconnected`.
    Close {
        error: Option<String>,
        allow_reconnect: bool,
        reason: Option<String>,
    },
    /// Cut off by the server (slow client, shutdown, hub removed); the writer closes.
    Cancelled,
    /// Another server took the client's new transport and claims the connection. (Boxed:
    /// every connection's session future has room for an `End`.)
    Moved(Box<MoveOrder>),
}

impl End {
    /// The hub aborted the connection (SignalR's `Context.Abort()`): closed without letting the
    /// client reconnect.
    const ABORTED: Self = Self::Close {
        error: None,
        allow_reconnect: false,
        reason: None,
    };

    /// The end of a session whose client sent something that is not the protocol.
    fn protocol_error(error: &ProtocolError) -> Self {
        // ASP.NET Core shows the cause only with detailed errors; it is the client's own input,
        // so hubhost always says what was wrong (the text matches ASP.NET's detailed form).
        Self::Close {
            error: Some(format!(
                "Connection closed with an error. {}: {error}",
                error.exception()
            )),
            allow_reconnect: false,
            reason: Some(error.to_string()),
        }
    }
}

/// What runs for a connection besides its read loop.
struct Work<'a> {
    invocations: &'a mut Invocations,
    streams: &'a mut Streams,
    uploads: &'a mut Uploads,
}

/// What a connection negotiated with stateful reconnect has to resume.
pub(super) struct Resume<I, O> {
    /// New transports that present the connection's token (`None` once none can come).
    attachments: Option<Attachments<I, O>>,
    /// Where a new transport's sink goes, with its generation: to the writer.
    sinks: HandoffSender<(u64, O)>,
    /// Transports taken so far after the first.
    generation: u64,
    /// What the writer keeps for the client (the session passes on the client's Acks).
    sent: Arc<Sent>,
    pub(super) received: Received,
    /// When the transport was cut, while the client has not come back.
    away_since: Option<Instant>,
    /// The connection moved here from another server: its protocol and registration (taken
    /// when the session starts).
    pub(super) moved_in: Option<(&'static dyn HubProtocol, Registration)>,
    /// The token its client resumes it with (durable reconnect names its record by it).
    token: Option<Arc<str>>,
}

impl<I, O> Resume<I, O> {
    pub(super) fn new(
        attachments: Attachments<I, O>,
        sinks: HandoffSender<(u64, O)>,
        sent: Arc<Sent>,
    ) -> Self {
        Self {
            attachments: Some(attachments),
            sinks,
            generation: 0,
            sent,
            received: Received::default(),
            away_since: None,
            moved_in: None,
            token: None,
        }
    }
}

pub(super) struct Session<I, O> {
    /// `None` while a resumable connection waits for its client to come back.
    incoming: Option<I>,
    /// Received bytes not decoded yet.
    buffer: BytesMut,
    caller: Arc<Caller>,
    max_message_size: usize,
    transport: TransportFeatures,
    context: Arc<SessionContext>,
    outbox: OutboxSender,
    cancel: CancellationToken,
    limiter: Option<RateLimiter>,
    /// Stateful reconnect, when negotiated and (after the handshake) asked for. Boxed: most
    /// connections have none, and every idle one holds the session.
    resume: Option<Box<Resume<I, O>>>,
}

impl<I, O> Session<I, O>
where
    I: Stream<Item = Inbound> + Unpin + Send,
    O: Send,
{
    pub(super) fn new(
        incoming: I,
        connection: Connection,
        context: Arc<SessionContext>,
        outbox: OutboxSender,
        cancel: CancellationToken,
        resume: Option<Box<Resume<I, O>>>,
    ) -> Self {
        Self {
            incoming: Some(incoming),
            buffer: BytesMut::new(),
            caller: Arc::new(connection.caller),
            max_message_size: connection.max_message_size,
            transport: connection.transport,
            limiter: RateLimiter::new(context.settings.rate_limit),
            context,
            outbox,
            cancel,
            resume: resume.map(|mut resume| {
                resume.token = connection.token;
                resume
            }),
        }
    }

    /// Serves the connection: from its handshake, or, for a connection that moved here from
    /// another server, on from where it was. Returns the durable record to forget once its
    /// writer is done (a connection that ended here, not one that moved on).
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn holds its `self` argument twice (see below)"
    )]
    pub(super) fn run(mut self) -> impl Future<Output = Option<Arc<durable::Link>>> {
        // A plain function returning the future: an `async fn` would hold `self` twice (as
        // its argument and as a local) for the connection's whole life.
        async move {
            let (protocol, registration, _counted) = self.start().await?;
            let end = self.read_loop(protocol).await;
            let error = match end {
                End::TransportGone(error) => error,
                End::ClientClosed(error) => {
                    self.close(protocol, None, false);
                    error
                }
                End::Close {
                    error,
                    allow_reconnect,
                    reason,
                } => {
                    self.close(protocol, error.as_deref(), allow_reconnect);
                    reason
                }
                End::Cancelled => None,
                End::Moved(order) => {
                    // Boxed: a rare path, which an idle connection's future should not hold room for.
                    if Box::pin(self.move_out(protocol, &order)).await {
                        // It lives on on the other server, where the hub hears of its end.
                        registration.abandon().await;
                        return None;
                    }
                    Some("the move to another server did not complete".into())
                }
            };
            tracing::debug!(hub = %self.caller.hub, connection = %self.caller.connection_id, error, "disconnected");
            registration.end(error).await;
            self.resume.as_ref().and_then(|r| r.sent.durable()).cloned()
        }
    }

    /// The handshake, registration and the hub's `on-connected`: the protocol and registration
    /// of a connection that made it through them (or of one that moved here from another
    /// server, which did on its first server).
    async fn start(&mut self) -> Option<(&'static dyn HubProtocol, Registration, Counted)> {
        if let Some((protocol, registration)) = self.resume.as_mut().and_then(|r| r.moved_in.take())
        {
            let counted = self.counted(protocol);
            if !self.transport.inherent_keep_alive {
                self.queue(Outbound::KeepAlive(protocol.encode(&ServerMessage::Ping)));
            }
            tracing::debug!(hub = %self.caller.hub, connection = %self.caller.connection_id, "moved here");
            return Some((protocol, registration, counted));
        }
        let protocol = match self.handshake().await {
            Ok(chosen) => {
                match &self.resume {
                    // Before the answer is queued: the writer numbers what follows it.
                    Some(resume) if chosen.resumable() => {
                        resume.sent.activate(chosen.protocol);
                        if let Some(attachments) = &resume.attachments {
                            attachments.open();
                        }
                    }
                    // Negotiated, but the client's protocol version cannot resume (as
                    // ASP.NET, the connection is a plain one).
                    _ => self.resume = None,
                }
                chosen.protocol
            }
            Err(error) => {
                tracing::debug!(connection = %self.caller.connection_id, "handshake failed: {error}");
                self.queue(Outbound::Close(handshake::error_response(&error)));
                return None;
            }
        };
        // Counted before the client hears it is connected, so whatever it does next (a quick
        // stop included) is seen after the count.
        let counted = self.counted(protocol);
        self.queue(Outbound::Frame(handshake::success(protocol)));
        if !self.transport.inherent_keep_alive {
            self.queue(Outbound::KeepAlive(protocol.encode(&ServerMessage::Ping)));
        }

        let context = self.context.clone();
        // Made in a block, so that what it takes is not kept across the wait; boxed, because
        // its futures are large and an idle session should not hold room for them.
        let registering = {
            let durable = self.durable_link();
            let handle = ConnectionHandle {
                id: self.caller.connection_id.clone(),
                user: self.caller.user_id.clone(),
                protocol,
                outbox: self.outbox.clone(),
                cancel: self.cancel.clone(),
                durable: durable.is_some(),
            };
            let durable = durable.zip(self.resume.as_ref().map(|r| r.sent.clone()));
            Box::pin(register(
                context.clone(),
                self.caller.clone(),
                handle,
                durable,
            ))
        };
        let mut registration = registering.await;
        tracing::debug!(
            hub = %self.caller.hub,
            connection = %self.caller.connection_id,
            transport = self.transport.name,
            protocol = protocol.name(),
            "connected"
        );
        if let Err(text) = context.hubs.clone().connected(self.caller.clone()).await {
            registration.abandon().await;
            self.close(protocol, Some(&text), false);
            return None;
        }
        registration.connected();
        Some((protocol, registration, counted))
    }

    /// Durable reconnect: how this connection is recorded, when it is resumable, the server
    /// keeps records, and Redis is there to take its marker.
    fn durable_link(&self) -> Option<durable::Link> {
        let store = self.context.durable.clone()?;
        let token = self.resume.as_ref()?.token.as_deref()?;
        if !self.context.router.backplane().is_ready() {
            return None;
        }
        Some(durable::Link {
            store,
            hub: self.caller.hub.clone(),
            token: token.to_owned(),
            connection: self.caller.connection_id.to_string(),
            user: self.caller.user_id.clone(),
        })
    }

    fn counted(&self, protocol: &'static dyn HubProtocol) -> Counted {
        Counted::new(
            self.context.metrics.clone(),
            self.transport.name,
            protocol.name(),
        )
    }

    /// Hands the connection to the server that claimed it: answers the claim, waits for the
    /// writer to reach the claimant's marker (everything before it is kept for the client),
    /// and hands over what the client has not acknowledged. `false` if the marker did not come.
    async fn move_out(&mut self, protocol: &'static dyn HubProtocol, order: &MoveOrder) -> bool {
        let Some(resume) = &self.resume else {
            return false;
        };
        let (sent, context, caller) = (
            resume.sent.clone(),
            self.context.clone(),
            self.caller.clone(),
        );
        let router = &context.router;
        let (hub, id) = (&caller.hub, &caller.connection_id);
        router.backplane().offer(
            order,
            Offer {
                claim: order.claim,
                connection: id.to_string(),
                user: caller.user_id.clone(),
                protocol: protocol.name().to_owned(),
                groups: router.registry().groups_of(hub, id.as_str()),
                received: resume.received.latest(),
            },
        );
        let marker = sent.reached_marker();
        let Ok(groups) = tokio::time::timeout(MARKER_WITHIN, marker).await else {
            tracing::warn!(connection = %id, "the server that claimed the connection sent no marker");
            return false;
        };
        let (first, frames) = sent.replay();
        let frames = frames.iter().map(|f| f.as_bytes().to_vec()).collect();
        // Questions it was asked here go with it (not answered "gone" when it unregisters).
        let questions = router.registry().asks().moving(id.as_str());
        router.backplane().hand_over(
            order,
            Handover {
                claim: order.claim,
                first,
                frames,
                groups,
                questions,
            },
        );
        Metrics::inc(&context.metrics.moves_out);
        tracing::debug!(hub = %hub, connection = %id, "moved to another server");
        true
    }

    /// Reads until the handshake request is complete: what the client chose.
    async fn handshake(&mut self) -> Result<Chosen, HandshakeError> {
        let deadline = Instant::now() + self.context.settings.handshake_timeout;
        loop {
            let binary = self.transport.binary;
            if let Some(chosen) = handshake::read(&mut self.buffer, self.max_message_size, binary)?
            {
                return Ok(chosen);
            }
            let Some(incoming) = &mut self.incoming else {
                return Err(HandshakeError::Canceled);
            };
            let message = tokio::select! {
                message = incoming.next() => message,
                () = tokio::time::sleep_until(deadline) => return Err(HandshakeError::Canceled),
                () = self.cancel.cancelled() => return Err(HandshakeError::Canceled),
                () = self.context.draining.cancelled() => return Err(HandshakeError::Canceled),
            };
            match message {
                Some(Ok(bytes)) => self.buffer.extend_from_slice(&bytes),
                Some(Err(_)) | None => return Err(HandshakeError::Canceled),
            }
        }
    }

    async fn read_loop(&mut self, protocol: &'static dyn HubProtocol) -> End {
        let context = self.context.clone();
        let settings = &context.settings;
        let mut invocations = Invocations::new(settings.max_parallel_invocations);
        let mut streams = Streams::default();
        let mut uploads = Uploads::default();
        // Like ASP.NET Core, the client timeout starts with the client's first Ping: clients
        // that never ping are not expected to. It is paused while the session does not read.
        let mut timeout_armed = false;
        let mut last_received = Instant::now();
        let end = 'session: loop {
            // Messages already received go first, up to an invocation or upload item that must
            // wait.
            while !invocations.is_blocked() && !uploads.is_blocked() {
                match protocol.decode(&mut self.buffer, self.max_message_size) {
                    Ok(Some(message)) => {
                        let work = Work {
                            invocations: &mut invocations,
                            streams: &mut streams,
                            uploads: &mut uploads,
                        };
                        if let Some(end) = self.handle(protocol, message, work, &mut timeout_armed)
                        {
                            break 'session end;
                        }
                    }
                    Ok(None) => break,
                    Err(error) => break 'session End::protocol_error(&error),
                }
            }
            let reading = !invocations.is_blocked() && !uploads.is_blocked();
            let attached = self.incoming.is_some();
            // One timer serves both deadlines (it is part of every idle connection's memory):
            // the reconnect window while the client is away, else the client timeout.
            let deadline = match self.resume.as_ref().and_then(|r| r.away_since) {
                Some(since) => Some(since + settings.reconnect_window),
                None if reading && timeout_armed => Some(last_received + settings.client_timeout),
                None => None,
            };
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => break End::Cancelled,
                () = self.context.draining.cancelled() => break End::Close {
                    error: None,
                    allow_reconnect: true,
                    reason: None,
                },
                finished = invocations.next(), if invocations.is_running() => {
                    if self.complete(protocol, finished) {
                        break End::ABORTED;
                    }
                    if !reading {
                        last_received = Instant::now();
                    }
                }
                ended = streams.next(), if streams.is_running() => {
                    if self.stream_ended(protocol, ended) {
                        break End::ABORTED;
                    }
                }
                finished = uploads.next(), if uploads.is_running() => {
                    // `None`: an item that waited for room was taken; reading goes on.
                    if let Some(finished) = finished
                        && self.complete(protocol, finished)
                    {
                        break End::ABORTED;
                    }
                }
                message = poll_fn(|cx| poll_next(&mut self.incoming, cx)), if reading && attached => {
                    last_received = Instant::now();
                    match message {
                        Some(Ok(bytes)) => self.buffer.extend_from_slice(&bytes),
                        Some(Err(error)) => {
                            // Cut, not closed: a resumable connection waits for its client.
                            if !self.transport_cut(&error) {
                                break End::TransportGone(Some(error.to_string()));
                            }
                        }
                        None => break End::TransportGone(None),
                    }
                }
                resumption = poll_fn(|cx| poll_resumption(&mut self.resume, cx)) => match resumption {
                    Resumption::Attached(incoming, outgoing) => {
                        self.resumed(incoming, outgoing);
                        last_received = Instant::now();
                    }
                    Resumption::WriterLost => {
                        if self.incoming.is_some() {
                            let error = TransportError("writing to it failed".into());
                            self.transport_cut(&error);
                        }
                    }
                    Resumption::Move(order) if order.user != self.caller.user_id => {
                        tracing::warn!(connection = %self.caller.connection_id, "another user presented the connection's token");
                    }
                    Resumption::Move(order) => {
                        // From now on this server's own sends reach the connection in the
                        // backplane's order too, where the claimant's marker will cut it.
                        let backplane = self.context.router.backplane();
                        backplane.hold(&order);
                        backplane.deliver_in_order(&self.caller.hub, self.caller.connection_id.as_str());
                        if let Some(resume) = &self.resume {
                            resume.sent.start_moving();
                        }
                        self.incoming = None;
                        break End::Moved(Box::new(order));
                    }
                    Resumption::Ended => {}
                },
                () = tokio::time::sleep_until(deadline.unwrap_or(last_received)), if deadline.is_some() => {
                    if self.resume.as_ref().is_some_and(|r| r.away_since.is_some()) {
                        break End::TransportGone(Some(
                            "the client did not resume within the reconnect window".into(),
                        ));
                    }
                    break End::Close {
                        error: Some("Connection closed with an error. OperationCanceledException: Client hasn't sent a message/ping within the configured ClientTimeoutInterval.".into()),
                        allow_reconnect: true,
                        reason: Some("client timeout".into()),
                    };
                }
            }
        };
        // Streams and uploads stop (their clients are leaving; a client whose connection moves
        // to another server is told). Invocations in progress finish (each within its deadline), and
        // their callers get their completions while the transport lasts; one still waiting for
        // a slot is not started.
        let stopped = [
            (streams.stop_all(), STREAM_MOVED),
            (uploads.stop_all(), UPLOAD_MOVED),
        ];
        if matches!(end, End::Moved(_)) {
            for (ids, error) in &stopped {
                for invocation_id in ids {
                    self.queue(Outbound::Frame(protocol.encode(
                        &ServerMessage::Completion {
                            invocation_id,
                            completion: Completion::Error(error),
                        },
                    )));
                }
            }
            // A connection that moves keeps its calls, the one waiting for a slot too: the
            // client counts them as received, so they run here and their completions go over
            // with the rest.
        } else {
            invocations.drop_waiting();
        }
        while invocations.is_running() {
            let finished = invocations.next().await;
            // The session is ending anyway: an abort changes nothing.
            let _aborted = self.complete(protocol, finished);
        }
        end
    }

    /// Handles one message; `Some` ends the session.
    fn handle(
        &mut self,
        protocol: &'static dyn HubProtocol,
        message: ClientMessage,
        work: Work<'_>,
        timeout_armed: &mut bool,
    ) -> Option<End> {
        let Work {
            invocations,
            streams,
            uploads,
        } = work;
        Metrics::inc(&self.context.metrics.messages_in);
        if let Some(resume) = &mut self.resume {
            resume.sent.heard();
            if message.is_sequenced() {
                let verdict = resume.received.numbered();
                // A message sent again also asks for an Ack (its sender may have missed ours).
                resume.sent.set_received(resume.received.latest());
                if verdict == Verdict::Skip {
                    tracing::trace!(connection = %self.caller.connection_id, "skipped a message sent again");
                    return None;
                }
            }
        }
        match message {
            ClientMessage::Invocation {
                invocation_id,
                target,
                arguments,
                stream_ids,
            } => match (
                self.refusal(&target).or_else(|| {
                    let opening = !stream_ids.is_empty();
                    self.too_many_streams(&target, opening, streams.len() + uploads.len())
                }),
                stream_ids.first(),
            ) {
                (Some(error), _) => {
                    self.complete(protocol, Finished::refused(invocation_id, error));
                }
                (None, None) => {
                    invocations.start(self.invocation(invocation_id, target, arguments));
                }
                (None, Some(stream_id)) => {
                    let start = uploads::Start {
                        hubs: self.context.hubs.clone(),
                        caller: self.caller.clone(),
                    };
                    let (stream_id, sent) = (stream_id.clone(), stream_ids.len());
                    let arguments = arguments.get().into();
                    uploads.start(start, invocation_id, target, arguments, stream_id, sent);
                }
            },
            ClientMessage::BindingFailure {
                invocation_id,
                target,
                error,
            } => {
                let error = format!(
                    "Failed to invoke '{target}' due to an error on the server. InvalidDataException: {error}"
                );
                self.complete(protocol, Finished::refused(invocation_id, error));
            }
            ClientMessage::StreamInvocation {
                invocation_id,
                target,
                arguments,
                stream_ids,
            } => {
                let refusal = if streams.contains(&invocation_id) {
                    Some(format!(
                        "Invocation ID '{invocation_id}' is already in use."
                    ))
                } else if !stream_ids.is_empty() {
                    // Streams both ways in one invocation are not served.
                    Some(format!(
                        "An unexpected error occurred invoking '{target}' on the server. HubException: Client sent {} stream(s), Hub method expects 0.",
                        stream_ids.len()
                    ))
                } else {
                    self.refusal(&target).or_else(|| {
                        self.too_many_streams(&target, true, streams.len() + uploads.len())
                    })
                };
                match refusal {
                    Some(error) => {
                        self.complete(protocol, Finished::refused(Some(invocation_id), error));
                    }
                    None => {
                        let start = streams::Start {
                            hubs: self.context.hubs.clone(),
                            caller: self.caller.clone(),
                            protocol,
                            outbox: self.outbox.clone(),
                            room: self.context.settings.outbox_capacity / 2,
                            cut_off: self.cancel.clone(),
                        };
                        streams.start(start, invocation_id, target, arguments.get().into());
                    }
                }
            }
            ClientMessage::CancelInvocation { invocation_id } => {
                if !streams.cancel(&invocation_id) {
                    // The stream may have ended as the client gave up on it.
                    tracing::debug!(connection = %self.caller.connection_id, invocation_id, "cancel for no running stream");
                }
            }
            ClientMessage::Ping => *timeout_armed = true,
            ClientMessage::Close { error } => return Some(End::ClientClosed(error)),
            ClientMessage::StreamItem {
                invocation_id,
                item,
            } => {
                let event = match item {
                    Ok(item) => Uploaded::Item(item),
                    // As ASP.NET's binding failure of a stream item: the stream fails.
                    Err(error) => {
                        Uploaded::End(Some(format!("Failed to bind Stream message. {error}")))
                    }
                };
                if !uploads.deliver(&invocation_id, event) {
                    tracing::debug!(connection = %self.caller.connection_id, invocation_id, "ignored an item of no open stream");
                }
            }
            ClientMessage::Completion {
                invocation_id,
                error,
                result,
            } => {
                // The end of a stream the client sends, or its answer to a question a hub
                // asked it (a client result).
                if uploads.deliver(&invocation_id, Uploaded::End(error.clone())) {
                    return None;
                }
                let reply = match (error, result) {
                    (Some(error), _) => Reply::Error(error),
                    (None, Some(result)) => Reply::Result(result.get().to_owned()),
                    (None, None) => Reply::Result("null".to_owned()),
                };
                let router = &self.context.router;
                if !router.answer(&self.caller.connection_id, &invocation_id, reply) {
                    tracing::debug!(connection = %self.caller.connection_id, invocation_id, "ignored a completion of nothing asked");
                }
            }
            ClientMessage::Ack { sequence_id } => {
                if let Some(resume) = &self.resume {
                    resume.sent.ack(sequence_id);
                }
            }
            ClientMessage::Sequence { sequence_id } => {
                if let Some(resume) = &mut self.resume
                    && let Err(error) = resume.received.sequence(sequence_id)
                {
                    return Some(End::Close {
                        error: Some(format!(
                            "Connection closed with an error. InvalidOperationException: {error}"
                        )),
                        allow_reconnect: true,
                        reason: Some(error.to_owned()),
                    });
                }
            }
            ClientMessage::Unknown(kind) => {
                tracing::debug!(connection = %self.caller.connection_id, kind, "ignored a message of unknown type");
            }
        }
        None
    }

    /// The transport failed under the session (`error`). A resumable connection lets it go and
    /// waits for its client (`true`); any other ends.
    fn transport_cut(&mut self, error: &TransportError) -> bool {
        let Some(resume) = &mut self.resume else {
            return false;
        };
        tracing::debug!(connection = %self.caller.connection_id, "transport cut ({error}); waiting for the client to resume");
        self.incoming = None;
        resume.away_since = Some(Instant::now());
        true
    }

    /// The client came back on a new transport (which replaces the old one if that still
    /// seemed open): the writer resumes on its sink, the session reads from it.
    fn resumed(&mut self, incoming: I, outgoing: O) {
        let Some(resume) = &mut self.resume else {
            return;
        };
        // Part of a message from the old transport: the client sends it again whole.
        self.buffer.clear();
        self.incoming = Some(incoming);
        resume.away_since = None;
        resume.generation += 1;
        if resume.sinks.send((resume.generation, outgoing)).is_err() {
            // The writer is gone: the session is ending anyway.
            self.cancel.cancel();
        }
        Metrics::inc(&self.context.metrics.resumes);
        tracing::debug!(connection = %self.caller.connection_id, "resumed");
    }

    /// The hub call of one invocation, to run among the session's invocations.
    fn invocation(
        &self,
        invocation_id: Option<String>,
        target: String,
        arguments: Box<RawValue>,
    ) -> Running {
        let call = self
            .context
            .hubs
            .clone()
            .invoke(self.caller.clone(), target, arguments);
        Box::pin(async move {
            let replied = call.await;
            Finished {
                invocation_id,
                reply: replied.reply,
                abort: replied.abort,
            }
        })
    }

    /// Why an invocation is refused before reaching the hub (the rate limit), if it is.
    fn refusal(&mut self, target: &str) -> Option<String> {
        if self.limiter.as_mut().is_some_and(|l| !l.allow()) {
            Metrics::inc(&self.context.metrics.rate_limited);
            return Some(format!(
                "Failed to invoke '{target}' due to an error on the server. HubException: {}",
                rate_limit::exceeded(self.context.settings.rate_limit)
            ));
        }
        None
    }

    /// The refusal of a stream past `--max-streams` (`open` run already), if `opening` one.
    fn too_many_streams(&self, target: &str, opening: bool, open: usize) -> Option<String> {
        let limit = self.context.settings.max_streams;
        (opening && open >= limit).then(|| {
            format!(
                "An unexpected error occurred invoking '{target}' on the server. HubException: Too many streams: at most {limit} may be open at once per connection."
            )
        })
    }

    /// Queues the Completion of a stream that ended; `true` if the hub aborted the connection.
    fn stream_ended(&self, protocol: &'static dyn HubProtocol, ended: streams::Ended) -> bool {
        let completion = match &ended.reply {
            Ok(()) => Completion::Void,
            Err(error) => Completion::Error(error),
        };
        self.queue(Outbound::Frame(protocol.encode(
            &ServerMessage::Completion {
                invocation_id: &ended.invocation_id,
                completion,
            },
        )));
        ended.abort
    }

    /// Queues the completion of a finished invocation, in the protocol the session speaks;
    /// `true` if the hub aborted the connection (it closes after the completion).
    fn complete(&self, protocol: &'static dyn HubProtocol, finished: Finished) -> bool {
        let Some(invocation_id) = &finished.invocation_id else {
            // Without an invocation id the client wants no answer, not even an error.
            return finished.abort;
        };
        let completion = match &finished.reply {
            Ok(Some(result)) => Completion::Result(result),
            Ok(None) => Completion::Void,
            Err(error) => Completion::Error(error),
        };
        self.queue(Outbound::Frame(protocol.encode(
            &ServerMessage::Completion {
                invocation_id,
                completion,
            },
        )));
        finished.abort
    }

    /// Queues a Close message; the writer closes the transport after it.
    fn close(
        &self,
        protocol: &'static dyn HubProtocol,
        error: Option<&str>,
        allow_reconnect: bool,
    ) {
        self.queue(Outbound::Close(protocol.encode(&ServerMessage::Close {
            error,
            allow_reconnect,
        })));
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

// The two below are polled through `poll_fn` rather than written as `async fn`s: the read
// loop's futures are part of every idle connection's memory, and these add almost nothing.

/// The next message of the transport, if there is one.
fn poll_next<I>(incoming: &mut Option<I>, cx: &mut Context<'_>) -> Poll<Option<Inbound>>
where
    I: Stream<Item = Inbound> + Unpin,
{
    match incoming {
        Some(incoming) => incoming.poll_next_unpin(cx),
        None => Poll::Pending,
    }
}

/// What happened to a resumable connection's transports.
enum Resumption<I, O> {
    /// The client came back on a new transport.
    Attached(I, O),
    /// The writer could not write to the current transport.
    WriterLost,
    /// Another server claims the connection.
    Move(MoveOrder),
    /// No transport can come any more.
    Ended,
}

/// The next event of a resumable connection's transports (never, for any other).
fn poll_resumption<I, O>(
    resume: &mut Option<Box<Resume<I, O>>>,
    cx: &mut Context<'_>,
) -> Poll<Resumption<I, O>> {
    let Some(resume) = resume else {
        return Poll::Pending;
    };
    // A loss of an older transport (one already replaced) is stale.
    if resume.sent.poll_lost(cx) == Some(resume.generation) {
        return Poll::Ready(Resumption::WriterLost);
    }
    let Some(attachments) = &mut resume.attachments else {
        return Poll::Pending;
    };
    match std::task::ready!(attachments.poll_recv(cx)) {
        Some(Attachment::Transport(incoming, outgoing)) => {
            Poll::Ready(Resumption::Attached(incoming, outgoing))
        }
        Some(Attachment::Move(order)) => Poll::Ready(Resumption::Move(order)),
        None => {
            resume.attachments = None;
            Poll::Ready(Resumption::Ended)
        }
    }
}

/// Counts a connection in the per-transport and per-protocol gauges while it lives.
struct Counted {
    metrics: Arc<Metrics>,
    transport: &'static str,
    protocol: &'static str,
}

impl Counted {
    fn new(metrics: Arc<Metrics>, transport: &'static str, protocol: &'static str) -> Self {
        metrics.transports.add(transport);
        metrics.protocols.add(protocol);
        Self {
            metrics,
            transport,
            protocol,
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.metrics.transports.remove(self.transport);
        self.metrics.protocols.remove(self.protocol);
    }
}
