//! One client connection, whatever carries it and whatever protocol it speaks.
//!
//! A session is generic over "a stream of incoming transport messages + a sink of outgoing
//! frames" ([`serve`]): the WebSocket transport feeds it today, and any transport that can
//! produce those two (Server-Sent Events with POSTs, long polling) feeds the same code; tests
//! feed it channels. The wire encoding is the [`HubProtocol`](crate::protocol::HubProtocol) the
//! client chose in its handshake.
//!
//! What a session does, in order:
//! - the handshake, within the handshake timeout;
//! - registration with the router (the connection can be addressed from then on), then the
//!   hub's `on-connected`;
//! - the read loop ([`connection`]): decodes messages, starts invocations and keeps reading
//!   while they run. Invocations run one at a time per connection by default, as ASP.NET's
//!   (`MaximumParallelInvocationsPerClient`): when the limit is reached the loop holds the
//!   next invocation and stops reading until a slot frees ([`invocations`]). Also: the client
//!   timeout, the rate limit ([`rate_limit`]), and drain on shutdown;
//! - unregistration (guaranteed even if the session panics: [`registration`]) and the hub's
//!   `on-disconnected`.
//!
//! A writer task ([`writer`]) drains the connection's outbox into the sink, joining queued
//! frames, and sends keep-alive pings when the connection is quiet.
//!
//! A WebSocket connection negotiated with stateful reconnect ([`serve_resumable`]) outlives
//! its socket: when the socket is cut, the session keeps running for the reconnect window,
//! the writer keeps what the client has not acknowledged ([`resume`]), and a new socket with
//! the same connection token carries on where the old one stopped. A socket that reaches
//! another server moves the connection there: this session hands it over and ends without
//! `on-disconnected`, and that server's session ([`adopt`], [`serve_adopted`]) carries on.

mod connection;
pub mod handoff;
mod invocations;
pub(crate) mod rate_limit;
mod registration;
pub mod resume;
mod streams;
#[cfg(test)]
mod tests;
mod uploads;
mod writer;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, Sink, Stream};
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backplane::Claimed;
use crate::dispatcher::{Dispatcher, ErrorText, Replied, Streamed};
use crate::durable;
use crate::metrics::Metrics;
use crate::protocol::Frame;
use crate::protocol::HubProtocol;
use crate::protocol::handshake;
use crate::registry::outbox;
pub use crate::registry::outbox::{Direct, DirectWrite};
use crate::registry::{ConnectionHandle, OutboxReceiver, OutboxSender};
use crate::router::Router;
use crate::runtime::{UploadEvent, UploadStep};
use crate::types::{Caller, GroupChange, MoveOrder};

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
    /// How long the writer waits after a frame for more to go out in the same write (zero: at
    /// once).
    pub write_delay: Duration,
    /// Invocations per second per connection (0: unlimited).
    pub rate_limit: u32,
    /// Invocations of one connection running at once (ASP.NET's
    /// `MaximumParallelInvocationsPerClient`, default 1).
    pub max_parallel_invocations: usize,
    /// Streams (to the client and from it) one connection may have open at once.
    pub max_streams: usize,
    /// Stateful reconnect: how long a connection whose transport was cut waits for its client.
    pub reconnect_window: Duration,
    /// Stateful reconnect: bytes of unacknowledged messages past which the writer waits for
    /// the client's Ack (ASP.NET's StatefulReconnectBufferSize).
    pub reconnect_buffer: usize,
}

/// The hub side of a session: what it asks when a client connects, invokes and leaves. The
/// [`Dispatcher`] in a server; tests may wrap it to pace calls.
pub trait HubCalls: Send + Sync + 'static {
    /// Tells the hub a client connected. An error text closes the connection.
    fn connected(self: Arc<Self>, caller: Arc<Caller>)
    -> BoxFuture<'static, Result<(), ErrorText>>;

    /// Invokes a hub method; `Ok(Some(json))` is a result, `Ok(None)` a void completion.
    fn invoke(
        self: Arc<Self>,
        caller: Arc<Caller>,
        method: String,
        arguments: Box<RawValue>,
    ) -> BoxFuture<'static, Replied<Option<String>>>;

    /// One step of a streaming method (the first without a cursor).
    fn stream(
        self: Arc<Self>,
        caller: Arc<Caller>,
        method: Arc<str>,
        arguments: Arc<str>,
        cursor: Option<String>,
    ) -> BoxFuture<'static, Replied<Streamed>>;

    /// Checks that `method` takes `sent` streams from the client before its upload starts.
    fn check_upload(
        self: Arc<Self>,
        caller: Arc<Caller>,
        method: Arc<str>,
        sent: usize,
    ) -> BoxFuture<'static, Result<(), ErrorText>>;

    /// One event of an upload, with the state the previous one returned.
    fn upload(
        self: Arc<Self>,
        caller: Arc<Caller>,
        method: Arc<str>,
        arguments: Arc<str>,
        event: Uploaded,
        state: Option<String>,
    ) -> BoxFuture<'static, Replied<UploadStep>>;

    /// Tells the hub a client left (`error` says why when it was not clean).
    fn disconnected(
        self: Arc<Self>,
        caller: Arc<Caller>,
        error: Option<String>,
    ) -> BoxFuture<'static, ()>;
}

/// What a client sent on a stream it uploads.
#[derive(Debug)]
pub enum Uploaded {
    /// Its next item, as JSON.
    Item(Box<RawValue>),
    /// Its end; with the client's error text if it failed.
    End(Option<String>),
}

impl HubCalls for Dispatcher {
    fn connected(
        self: Arc<Self>,
        caller: Arc<Caller>,
    ) -> BoxFuture<'static, Result<(), ErrorText>> {
        Box::pin(async move { Dispatcher::connected(&self, &caller).await })
    }

    fn invoke(
        self: Arc<Self>,
        caller: Arc<Caller>,
        method: String,
        arguments: Box<RawValue>,
    ) -> BoxFuture<'static, Replied<Option<String>>> {
        Box::pin(async move { Dispatcher::invoke(&self, &caller, &method, arguments.get()).await })
    }

    fn stream(
        self: Arc<Self>,
        caller: Arc<Caller>,
        method: Arc<str>,
        arguments: Arc<str>,
        cursor: Option<String>,
    ) -> BoxFuture<'static, Replied<Streamed>> {
        Box::pin(async move {
            Dispatcher::stream(&self, &caller, &method, &arguments, cursor.as_deref()).await
        })
    }

    fn check_upload(
        self: Arc<Self>,
        caller: Arc<Caller>,
        method: Arc<str>,
        sent: usize,
    ) -> BoxFuture<'static, Result<(), ErrorText>> {
        Box::pin(async move { Dispatcher::check_upload(&self, &caller, &method, sent).await })
    }

    fn upload(
        self: Arc<Self>,
        caller: Arc<Caller>,
        method: Arc<str>,
        arguments: Arc<str>,
        event: Uploaded,
        state: Option<String>,
    ) -> BoxFuture<'static, Replied<UploadStep>> {
        Box::pin(async move {
            let event = match &event {
                Uploaded::Item(item) => UploadEvent::Item(item.get()),
                Uploaded::End(error) => UploadEvent::End(error.as_deref()),
            };
            Dispatcher::upload(&self, &caller, &method, &arguments, event, state.as_deref()).await
        })
    }

    fn disconnected(
        self: Arc<Self>,
        caller: Arc<Caller>,
        error: Option<String>,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move { Dispatcher::disconnected(&self, &caller, error.as_deref()).await })
    }
}

/// What every session shares.
pub struct SessionContext {
    pub hubs: Arc<dyn HubCalls>,
    pub router: Router,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    /// Durable reconnect: where resumable connections keep what survives a crash.
    pub durable: Option<Arc<durable::Store>>,
    /// Cancelled when the server stops for good (after draining): ends every session at once.
    pub shutdown: CancellationToken,
    /// Cancelled when shutdown begins: sessions finish the calls they are running, send Close
    /// with `allowReconnect`, and end.
    pub draining: CancellationToken,
    /// Every running session, so shutdown can wait for them to finish.
    pub sessions: TaskTracker,
}

/// A connection accepted for a hub.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The hub, the connection's id and who it belongs to.
    pub caller: Caller,
    /// Largest message accepted on this connection (the hub's limit).
    pub max_message_size: usize,
    /// What its transport can do.
    pub transport: TransportFeatures,
    /// The token the client presents to resume it (stateful reconnect), if it has one.
    pub token: Option<Arc<str>>,
}

/// What a transport can do, as far as the session is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportFeatures {
    /// Its name, as negotiate names it (`WebSockets`), for logs and metrics.
    pub name: &'static str,
    /// It carries binary frames (MessagePack); Server-Sent Events carry text only.
    pub binary: bool,
    /// It shows the connection is alive by itself (long polling: the polls), so the session
    /// sends no keep-alive pings, as ASP.NET does not.
    pub inherent_keep_alive: bool,
}

impl TransportFeatures {
    pub const WEBSOCKETS: Self = Self {
        name: "WebSockets",
        binary: true,
        inherent_keep_alive: false,
    };
    pub const SERVER_SENT_EVENTS: Self = Self {
        name: "ServerSentEvents",
        binary: false,
        inherent_keep_alive: false,
    };
    pub const LONG_POLLING: Self = Self {
        name: "LongPolling",
        binary: true,
        inherent_keep_alive: true,
    };
}

/// Why a transport stopped delivering messages.
#[derive(Debug, Clone, thiserror::Error)]
#[error("connection lost: {0}")]
pub struct TransportError(pub String);

/// One message from the transport (a WebSocket message, a POST body...), or why it failed.
/// The end of the stream is the client going away.
pub type Inbound = Result<Bytes, TransportError>;

/// What reaches a resumable connection from outside.
pub enum Attachment<I, O> {
    /// The client came back on a new transport.
    Transport(I, O),
    /// Another server took the client's new transport and claims the connection.
    Move(MoveOrder),
}

/// The transports a resumable connection may resume on (each new WebSocket that presents the
/// connection's token, as the session's stream and sink), and claims of other servers.
pub type Attachments<I, O> = handoff::HandoffReceiver<Attachment<I, O>>;

/// How long the writer may take to flush the last frames once the session ended; a peer that
/// stopped reading is cut off then.
const WRITER_GRACE: Duration = Duration::from_secs(5);

/// Where a connection's frames go: a transport's sink. One that can also take a frame without
/// waiting lends the connection's outbox a [`DirectWrite`], so frames of small fan-outs skip
/// the writer's task while it is idle.
pub trait Outlet: Sink<Frame> + Unpin {
    /// The transport's direct path, if it has one.
    fn direct(&self) -> Option<Arc<dyn DirectWrite>> {
        None
    }
}

/// Serves one connection to the end: `incoming` brings what the client sends, `outgoing`
/// takes the frames for it (closing it ends the connection, as a WebSocket close would).
pub fn serve<I, O>(
    incoming: I,
    outgoing: O,
    connection: Connection,
    context: Arc<SessionContext>,
) -> impl Future<Output = ()> + Send
where
    I: Stream<Item = Inbound> + Unpin + Send,
    O: Outlet + Send + 'static,
    O::Error: std::fmt::Display,
{
    serve_with(incoming, outgoing, connection, context, None)
}

/// [`serve`] for a connection negotiated with stateful reconnect: if the client's handshake
/// asks for it (version 2), a cut transport (an error, not a close) leaves the connection
/// waiting for one of `attachments` for the reconnect window.
pub fn serve_resumable<I, O>(
    incoming: I,
    outgoing: O,
    connection: Connection,
    context: Arc<SessionContext>,
    attachments: Attachments<I, O>,
) -> impl Future<Output = ()> + Send
where
    I: Stream<Item = Inbound> + Unpin + Send,
    O: Outlet + Send + 'static,
    O::Error: std::fmt::Display,
{
    serve_with(incoming, outgoing, connection, context, Some(attachments))
}

/// Not an `async fn`: the arguments are taken apart here, so the future (which lives as long
/// as the connection, idle or not) does not also keep the room they took.
fn serve_with<I, O>(
    incoming: I,
    outgoing: O,
    connection: Connection,
    context: Arc<SessionContext>,
    attachments: Option<Attachments<I, O>>,
) -> impl Future<Output = ()> + Send
where
    I: Stream<Item = Inbound> + Unpin + Send,
    O: Outlet + Send + 'static,
    O::Error: std::fmt::Display,
{
    let (sender, receiver) = outbox(context.settings.outbox_capacity);
    let cancel = context.shutdown.child_token();
    let sent = attachments.as_ref().map(|_| {
        Arc::new(resume::Sent::new(
            context.settings.reconnect_buffer,
            context.metrics.clone(),
        ))
    });
    let parts = Parts {
        sender,
        receiver,
        cancel,
        sent,
        moved_in: None,
    };
    run_session(incoming, outgoing, connection, context, attachments, parts)
}

/// A connection that moved here from another server, ready to carry on over its client's new
/// transport ([`adopt`]).
pub struct Adopted {
    parts: Parts,
}

/// Why a connection could not move here.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error("the connection's server offered an unknown protocol {0:?}")]
    Protocol(String),
    #[error("the connection's server did not hand it over within {0:?}")]
    NoHandover(Duration),
    #[error("its durable record could not be resumed: {0}")]
    Durable(#[from] durable::DurableError),
    #[error("its durable record and its hub's log disagree ({0} numbers missing)")]
    Disagree(u64),
    #[error("this server keeps no durable records")]
    NotDurable,
}

/// How long a claimant waits for the handover once it published its marker: the old server
/// finishes the calls in flight first (each within its deadline).
const HANDOVER_WITHIN: Duration = Duration::from_secs(10);

/// What a session is made of besides its transport.
struct Parts {
    sender: OutboxSender,
    receiver: OutboxReceiver,
    cancel: CancellationToken,
    /// What the writer keeps for the client, with stateful reconnect.
    sent: Option<Arc<resume::Sent>>,
    /// The connection moved here: its protocol, registration and count of received messages.
    moved_in: Option<(&'static dyn HubProtocol, registration::Registration, u64)>,
}

/// Takes over a connection another server held (stateful reconnect across servers): registers
/// it here taking nothing yet, publishes the marker once subscribed to everything it needs,
/// and waits for what its old server kept for the client.
pub async fn adopt(
    context: &Arc<SessionContext>,
    caller: Arc<Caller>,
    claimed: Claimed,
    token: &str,
) -> Result<Adopted, AdoptError> {
    let Claimed { offer, handover } = claimed;
    let protocol = handshake::protocol_named(&offer.protocol)
        .ok_or_else(|| AdoptError::Protocol(offer.protocol.clone()))?;
    let durable = durable_link(context, &caller, token);
    let (sender, receiver, cancel, handle) =
        moving_in(context, &caller, protocol, durable.is_some());
    let router = context.router.clone();
    let registration = registration::Registration::adopt(
        router.clone(),
        context.hubs.clone(),
        caller.clone(),
        handle,
        &offer.groups,
        offer.claim,
    )
    .await;
    let handover = match tokio::time::timeout(HANDOVER_WITHIN, handover).await {
        Ok(Ok(handover)) => handover,
        _ => {
            registration.abandon().await;
            return Err(AdoptError::NoHandover(HANDOVER_WITHIN));
        }
    };
    // Groups joined or left on the old server between its offer and the marker.
    let change = |group: &String, join: bool| {
        let (hub, connection, group) = (
            caller.hub.clone(),
            caller.connection_id.to_string(),
            group.clone(),
        );
        if join {
            GroupChange::Add {
                hub,
                connection,
                group,
            }
        } else {
            GroupChange::Remove {
                hub,
                connection,
                group,
            }
        }
    };
    let joined = handover.groups.iter().filter(|g| !offer.groups.contains(g));
    let left = offer.groups.iter().filter(|g| !handover.groups.contains(g));
    for change in joined
        .map(|g| change(g, true))
        .chain(left.map(|g| change(g, false)))
    {
        if let Err(e) = router.change_group(change).await {
            tracing::warn!(connection = %caller.connection_id, "a group change of a moving connection failed: {e}");
        }
    }
    // Client results it was asked on its old server, which it may answer here.
    let asks = router.registry().asks();
    for invocation_id in &handover.questions {
        asks.delivered(caller.connection_id.as_str(), invocation_id);
    }
    let sent = Arc::new(resume::Sent::new(
        context.settings.reconnect_buffer,
        context.metrics.clone(),
    ));
    let frames = handover
        .frames
        .into_iter()
        .filter_map(|bytes| match protocol.transfer_format() {
            crate::protocol::TransferFormat::Binary => Some(Frame::binary(bytes)),
            crate::protocol::TransferFormat::Text => String::from_utf8(bytes).ok().map(Frame::text),
        })
        .collect();
    sent.restore(protocol, handover.first, frames);
    if let Some(link) = durable {
        sent.make_durable(link);
    }
    Metrics::inc(&context.metrics.moves_in);
    Ok(Adopted {
        parts: Parts {
            sender,
            receiver,
            cancel,
            sent: Some(sent),
            moved_in: Some((protocol, registration, offer.received)),
        },
    })
}

/// The outbox, token and registry handle of a connection moving here.
fn moving_in(
    context: &SessionContext,
    caller: &Caller,
    protocol: &'static dyn HubProtocol,
    durable: bool,
) -> (
    OutboxSender,
    OutboxReceiver,
    CancellationToken,
    ConnectionHandle,
) {
    let (sender, receiver) = outbox(context.settings.outbox_capacity);
    let cancel = context.shutdown.child_token();
    let handle = ConnectionHandle {
        id: caller.connection_id.clone(),
        user: caller.user_id.clone(),
        protocol,
        outbox: sender.clone(),
        cancel: cancel.clone(),
        durable,
    };
    (sender, receiver, cancel, handle)
}

/// How a connection is recorded under durable reconnect, if this server keeps records.
fn durable_link(context: &SessionContext, caller: &Caller, token: &str) -> Option<durable::Link> {
    Some(durable::Link {
        store: context.durable.clone()?,
        hub: caller.hub.clone(),
        token: token.to_owned(),
        connection: caller.connection_id.to_string(),
        user: caller.user_id.clone(),
    })
}

/// Takes over a durable connection whose server stopped answering (durable reconnect): from
/// its record, with its groups, and the frames the record and the hub's log make again up to
/// the marker this server puts there; what follows the marker it delivers itself.
pub async fn revive(
    context: &Arc<SessionContext>,
    caller: Arc<Caller>,
    record: durable::Record,
    token: &str,
) -> Result<Adopted, AdoptError> {
    let protocol = handshake::protocol_named(&record.protocol)
        .ok_or_else(|| AdoptError::Protocol(record.protocol.clone()))?;
    let link = durable_link(context, &caller, token).ok_or(AdoptError::NotDurable)?;
    let (sender, receiver, cancel, handle) = moving_in(context, &caller, protocol, true);
    let router = context.router.clone();
    let claim = rand::random::<u64>();
    link.store.take_over(&caller.hub, token, claim).await?;
    let registration = registration::Registration::adopt(
        router.clone(),
        context.hubs.clone(),
        caller.clone(),
        handle,
        &record.groups,
        claim,
    )
    .await;
    let (hub, id) = (&caller.hub, caller.connection_id.as_str());
    let log = match link.store.read_log(hub, record.since, claim).await {
        Ok(log) => log,
        Err(e) => {
            registration.abandon().await;
            return Err(e.into());
        }
    };
    let rebuilt = durable::replay::rebuild(&record, &log, claim, protocol);
    if rebuilt.gaps > 0 {
        // Numbers the client counts would shift: it starts over rather than miss messages.
        registration.abandon().await;
        return Err(AdoptError::Disagree(rebuilt.gaps));
    }
    let asks = router.registry().asks();
    for invocation_id in &rebuilt.questions {
        asks.delivered(id, invocation_id);
    }
    let sent = Arc::new(resume::Sent::new(
        context.settings.reconnect_buffer,
        context.metrics.clone(),
    ));
    sent.restore(protocol, rebuilt.first, rebuilt.frames);
    sent.make_durable(link);
    Metrics::inc(&context.metrics.durable_resumes);
    Metrics::add(&context.metrics.durable_replayed_from_log, rebuilt.from_log);
    tracing::debug!(hub = %hub, connection = id, from_log = rebuilt.from_log, "taken over from its record");
    Ok(Adopted {
        parts: Parts {
            sender,
            receiver,
            cancel,
            sent: Some(sent),
            moved_in: Some((protocol, registration, record.received)),
        },
    })
}

/// Serves a connection that moved here ([`adopt`]) on its client's new transport: the writer
/// starts with the resume (Sequence, then what the old server kept), the session reads on.
pub fn serve_adopted<I, O>(
    incoming: I,
    outgoing: O,
    connection: Connection,
    context: Arc<SessionContext>,
    attachments: Attachments<I, O>,
    adopted: Adopted,
) -> impl Future<Output = ()> + Send
where
    I: Stream<Item = Inbound> + Unpin + Send,
    O: Outlet + Send + 'static,
    O::Error: std::fmt::Display,
{
    run_session(
        incoming,
        outgoing,
        connection,
        context,
        Some(attachments),
        adopted.parts,
    )
}

fn run_session<I, O>(
    incoming: I,
    outgoing: O,
    connection: Connection,
    context: Arc<SessionContext>,
    attachments: Option<Attachments<I, O>>,
    parts: Parts,
) -> impl Future<Output = ()> + Send
where
    I: Stream<Item = Inbound> + Unpin + Send,
    O: Outlet + Send + 'static,
    O::Error: std::fmt::Display,
{
    let running = context.sessions.token();
    let Parts {
        sender,
        receiver,
        cancel,
        sent,
        moved_in,
    } = parts;
    let (resumable, resume) = match (attachments, sent) {
        (Some(attachments), Some(sent)) => {
            let (sinks, sinks_receiver) = handoff::handoff();
            let mut resume = connection::Resume::new(attachments, sinks, sent.clone());
            let moved = moved_in.is_some();
            if let Some((protocol, registration, received)) = moved_in {
                resume.received = resume::Received::after(received);
                resume.moved_in = Some((protocol, registration));
            }
            (
                Some(writer::Resumable {
                    sent,
                    sinks: sinks_receiver,
                    moved_in: moved,
                }),
                Some(Box::new(resume)),
            )
        }
        _ => (None, None),
    };
    let mut writer = tokio::spawn(writer::run(
        outgoing,
        receiver,
        writer::Timing {
            keep_alive: context.settings.keep_alive,
            write_delay: context.settings.write_delay,
        },
        cancel.clone(),
        resumable,
        context.metrics.clone(),
    ));
    let session = connection::Session::new(
        incoming,
        connection,
        context,
        sender,
        cancel.clone(),
        resume,
    );
    // Chained rather than awaited inside an `async` block, which would hold the session's
    // future twice (once captured, once being awaited).
    session.run().then(move |forget| async move {
        let _running = running;
        // The writer ends once it has flushed the last frame (a Close message); do not wait
        // forever on a dead peer.
        cancel.cancel();
        if tokio::time::timeout(WRITER_GRACE, &mut writer)
            .await
            .is_err()
        {
            writer.abort();
        }
        // After the writer: nothing it records can bring the record back.
        if let Some(link) = forget
            && let Err(e) = link.store.forget(&link.hub, &link.token).await
        {
            tracing::debug!(connection = %link.connection, "its durable record stays until it expires: {e}");
        }
    })
}
