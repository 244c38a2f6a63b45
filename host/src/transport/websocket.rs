//! The WebSocket transport: axum's WebSocket as a session's stream and sink.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};

use axum::extract::WebSocketUpgrade;
use axum::extract::ws::OnFailedUpgrade;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, close_code};
use axum::response::Response;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::protocol::{Frame, TransferFormat};
use crate::session::handoff::{HandoffSender, shut_handoff};
use crate::session::{
    self, Adopted, Attachment, Attachments, Connection, Direct, DirectWrite, Inbound,
    SessionContext, TransportError,
};
use crate::types::MoveOrder;

/// Where the new sockets of a connection that can resume (stateful reconnect) go: to its
/// session.
#[derive(Clone)]
pub struct Resumer(HandoffSender<Attachment<Incoming, Outgoing>>);

impl Resumer {
    /// A resumer and the session's end of it, which the session opens once the client's
    /// handshake asked for stateful reconnect: until then a second socket is refused (409).
    pub fn new() -> (Self, Attachments<Incoming, Outgoing>) {
        let (sender, receiver) = shut_handoff();
        (Self(sender), receiver)
    }

    /// Whether the session still takes sockets (it ended, or its client's handshake did not
    /// ask for stateful reconnect).
    pub fn is_open(&self) -> bool {
        !self.0.is_closed()
    }

    /// Upgrades the request and hands the socket to the connection's session, which carries
    /// on over it without a new handshake.
    pub fn resume(&self, upgrade: WebSocketUpgrade, max_message_size: usize) -> Response {
        let sender = self.0.clone();
        configure(upgrade, max_message_size).on_upgrade(move |socket| async move {
            let (sink, stream) = socket.split();
            if sender
                .send(Attachment::Transport(Incoming(stream), Outgoing::new(sink)))
                .is_err()
            {
                // The session ended as the socket opened; dropping the socket closes it, and
                // the client starts over.
                tracing::debug!("a resumed socket came after its connection ended");
            }
        })
    }

    /// Asks the connection to move to the server that claimed it; `false` if it ended.
    pub fn order(&self, order: MoveOrder) -> bool {
        self.0.send(Attachment::Move(order)).is_ok()
    }
}

/// The socket settings of every connection.
fn configure(
    upgrade: WebSocketUpgrade,
    max_message_size: usize,
) -> WebSocketUpgrade<impl OnFailedUpgrade> {
    // The socket accepts somewhat more than a message so an oversized one can be answered with
    // a proper Close message instead of a torn connection.
    let limit = max_message_size.saturating_mul(4).max(64 * 1024);
    upgrade
        // tungstenite keeps its read buffer allocated for the life of the connection (128 KiB
        // by default): a small one keeps idle connections cheap. Larger messages still arrive
        // in one piece: the buffer grows to the length announced in a frame's header.
        .read_buffer_size(1024)
        // Written frames are flushed to the socket past this size; tungstenite's write buffer
        // keeps the largest size it reached, so it is bounded for the same reason.
        .write_buffer_size(16 * 1024)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_failed_upgrade(|error| tracing::debug!("WebSocket upgrade failed: {error}"))
}

/// Upgrades the request and serves the connection on the socket. `lease` is kept until the
/// connection ends (or the upgrade fails), whatever way: dropping it releases what the
/// connection held (its negotiated token). With `attachments` (stateful reconnect) the
/// connection may resume on later sockets.
pub fn accept(
    upgrade: WebSocketUpgrade,
    connection: Connection,
    context: Arc<SessionContext>,
    lease: impl Send + 'static,
    attachments: Option<Attachments<Incoming, Outgoing>>,
) -> Response {
    let limit = connection.max_message_size;
    // One pointer in the callback: axum's upgrade task keeps the callback's room beside the
    // connection's future for the connection's whole life (184 bytes unboxed).
    let parts = Box::new((connection, context, lease, attachments));
    // A failed upgrade drops the callback below, and the lease with it.
    configure(upgrade, limit).on_upgrade(move |socket| {
        let (connection, context, lease, attachments) = *parts;
        // Taken apart before the future that lives as long as the connection.
        let (sink, stream) = socket.split();
        let (incoming, outgoing) = (Incoming(stream), Outgoing::new(sink));
        match attachments {
            Some(attachments) => {
                session::serve_resumable(incoming, outgoing, connection, context, attachments)
                    .map(move |()| drop(lease))
                    .left_future()
            }
            None => session::serve(incoming, outgoing, connection, context)
                .map(move |()| drop(lease))
                .right_future(),
        }
    })
}

/// Upgrades the request and carries on, over the socket, a connection that moved here from
/// another server ([`session::adopt`]).
pub fn accept_adopted(
    upgrade: WebSocketUpgrade,
    connection: Connection,
    context: Arc<SessionContext>,
    lease: impl Send + 'static,
    attachments: Attachments<Incoming, Outgoing>,
    adopted: Adopted,
) -> Response {
    configure(upgrade, connection.max_message_size).on_upgrade(move |socket| {
        let (sink, stream) = socket.split();
        let (incoming, outgoing) = (Incoming(stream), Outgoing::new(sink));
        session::serve_adopted(
            incoming,
            outgoing,
            connection,
            context,
            attachments,
            adopted,
        )
        .map(move |()| drop(lease))
    })
}

/// The socket's messages as the session's incoming stream: text and binary messages are
/// messages, pings and pongs are the WebSocket's business, a close ends the stream; a socket
/// that ends without a close (cut) is an error.
pub struct Incoming(SplitStream<WebSocket>);

impl Stream for Incoming {
    type Item = Inbound;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Inbound>> {
        loop {
            return Poll::Ready(match ready!(self.0.poll_next_unpin(cx)) {
                Some(Ok(Message::Text(text))) => Some(Ok(text.into())),
                Some(Ok(Message::Binary(data))) => Some(Ok(data)),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Close(_))) | None => None,
                Some(Err(e)) => Some(Err(TransportError(e.to_string()))),
            });
        }
    }
}

/// The socket as the session's sink of frames: text frames go as Text messages, binary ones
/// as Binary; closing sends a normal Close (1000), since any other code shows as an error in
/// the client. The writer and the connection's outbox (for direct writes) share it.
pub struct Outgoing(Arc<Mutex<Socket>>);

struct Socket {
    sink: SplitSink<WebSocket, Message>,
    close_sent: bool,
    /// The writer's last call on the sink returned `Pending`: its task waits on the socket, and
    /// a direct write (which polls without a task to wake) would take its place there.
    writer_waiting: bool,
    /// The writer was told the sink is ready and has not sent yet (a ping goes out while
    /// direct writes may): the sink's one slot is the writer's, and a direct frame put there
    /// meanwhile would be overwritten.
    writer_sending: bool,
    last_direct: Option<Instant>,
}

impl Outgoing {
    fn new(sink: SplitSink<WebSocket, Message>) -> Self {
        Self(Arc::new(Mutex::new(Socket {
            sink,
            close_sent: false,
            writer_waiting: false,
            writer_sending: false,
            last_direct: None,
        })))
    }

    /// Runs one of the writer's calls on the sink, noting whether it left the writer waiting.
    fn poll_with<T>(
        &self,
        cx: &mut Context<'_>,
        call: impl FnOnce(&mut Socket, &mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        let mut socket = self.0.lock();
        let poll = call(&mut socket, cx);
        socket.writer_waiting = poll.is_pending();
        poll
    }
}

fn message(frame: Frame) -> Message {
    match frame.format() {
        TransferFormat::Text => match Utf8Bytes::try_from(frame.bytes()) {
            Ok(text) => Message::Text(text),
            // Text frames are made from `String`s: this cannot happen, but a binary message is
            // still better than a panic.
            Err(_) => Message::Binary(frame.bytes()),
        },
        TransferFormat::Binary => Message::Binary(frame.bytes()),
    }
}

impl Sink<Frame> for Outgoing {
    type Error = axum::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.poll_with(cx, |socket, cx| {
            let ready = socket.sink.poll_ready_unpin(cx);
            socket.writer_sending = matches!(ready, Poll::Ready(Ok(())));
            ready
        })
    }

    fn start_send(self: Pin<&mut Self>, frame: Frame) -> Result<(), Self::Error> {
        let mut socket = self.0.lock();
        socket.writer_sending = false;
        socket.sink.start_send_unpin(message(frame))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.poll_with(cx, |socket, cx| socket.sink.poll_flush_unpin(cx))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.poll_with(cx, |socket, cx| {
            if !socket.close_sent {
                ready!(socket.sink.poll_ready_unpin(cx))?;
                let close = CloseFrame {
                    code: close_code::NORMAL,
                    reason: Utf8Bytes::from_static(""),
                };
                socket.sink.start_send_unpin(Message::Close(Some(close)))?;
                socket.close_sent = true;
            }
            socket.sink.poll_close_unpin(cx)
        })
    }
}

impl session::Outlet for Outgoing {
    fn direct(&self) -> Option<Arc<dyn DirectWrite>> {
        Some(Arc::new(DirectSocket(self.0.clone())))
    }
}

/// The outbox's way to the socket: one frame, written only if the socket takes it at once.
struct DirectSocket(Arc<Mutex<Socket>>);

impl DirectWrite for DirectSocket {
    fn try_write(&self, frame: &Frame) -> Direct {
        // The writer or the reader (answering a ping) is at the socket: not now.
        let Some(mut socket) = self.0.try_lock() else {
            return Direct::NotNow;
        };
        if socket.writer_waiting || socket.writer_sending || socket.close_sent {
            return Direct::NotNow;
        }
        // No task waits on what these polls register: the writer's own next poll registers
        // its waker again, and it is woken to flush whatever is left (`Unflushed`).
        let mut cx = Context::from_waker(Waker::noop());
        match socket.sink.poll_ready_unpin(&mut cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(_)) | Poll::Pending => return Direct::NotNow,
        }
        if socket
            .sink
            .start_send_unpin(message(frame.clone()))
            .is_err()
        {
            // Nothing taken; the writer meets the same error.
            return Direct::NotNow;
        }
        socket.last_direct = Some(Instant::now());
        match socket.sink.poll_flush_unpin(&mut cx) {
            Poll::Ready(Ok(())) => Direct::Written,
            // The writer's flush finishes the write, or reports the error.
            Poll::Ready(Err(_)) | Poll::Pending => Direct::Unflushed,
        }
    }

    fn last_write(&self) -> Option<Instant> {
        self.0.lock().last_direct
    }
}
