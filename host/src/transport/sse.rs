//! Server-Sent Events: frames go down as events of a streamed response, messages come up as
//! POSTs ([`inbox`](super::inbox)).
//!
//! The response starts with `:\r\n` (a comment: some browsers fire `open` only on a first
//! byte); each batch of frames is one event, a `data: ` line per line of it and an empty line.
//! Only text frames travel this way (negotiate offers it for the Text transfer format only).
//! When the client goes away the response stream is dropped, which closes the connection's
//! inbox and so ends its session. `X-Accel-Buffering: no` keeps nginx from buffering events.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{FutureExt, Sink};

use super::inbox::{InboxSender, Incoming};
use super::pipe::{Abandoned, ChunkStream, Pipe};
use crate::protocol::Frame;
use crate::session::{self, Connection, SessionContext};

/// Starts the session of an event-stream request and answers with the stream. `lease` is kept
/// until the session ends.
pub fn respond(
    connection: Connection,
    context: Arc<SessionContext>,
    incoming: Incoming,
    inbox: InboxSender,
    lease: impl Send + 'static,
) -> Response {
    let pipe = Pipe::new();
    // The comment that opens the stream.
    let _ = pipe.write(Bytes::from_static(b":\r\n"));
    let session = session::serve(
        incoming,
        EventSink { pipe: pipe.clone() },
        connection,
        context,
    )
    .map(move |()| drop(lease));
    tokio::spawn(session);
    let body = Body::from_stream(EventStream {
        chunks: ChunkStream::new(pipe),
        inbox,
    });
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache,no-store"),
            ),
            (header::PRAGMA, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_ENCODING,
                HeaderValue::from_static("identity"),
            ),
            // nginx would otherwise buffer the stream when it proxies it.
            (
                header::HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            ),
        ],
        body,
    )
        .into_response()
}

/// The response body; when the client goes away it is dropped, which ends the connection.
struct EventStream {
    chunks: ChunkStream,
    inbox: InboxSender,
}

impl futures_util::Stream for EventStream {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.chunks).poll_next(cx)
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.inbox.close();
    }
}

/// One batch of frames as an event: a `data: ` line for each line of it, then an empty line.
pub fn event(payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(payload.len() + 16);
    for line in payload.split(|&b| b == b'\n') {
        // A line ending in \r\n loses its \r (a lone \r is kept), as ASP.NET writes them.
        let line = match line {
            [rest @ .., b'\r'] if !rest.is_empty() => rest,
            other => other,
        };
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

/// The session's sink: frames as events into the pipe the response reads.
struct EventSink {
    pipe: Arc<Pipe>,
}

impl Sink<Frame> for EventSink {
    type Error = Abandoned;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Abandoned>> {
        self.pipe.poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, frame: Frame) -> Result<(), Abandoned> {
        self.pipe.write(event(frame.as_bytes()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Abandoned>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Abandoned>> {
        self.pipe.close();
        Poll::Ready(Ok(()))
    }
}

/// Frames wait for the writer: no direct path.
impl crate::session::Outlet for EventSink {}

#[cfg(test)]
mod tests {
    use super::event;

    #[test]
    fn events_have_a_data_line_per_line() {
        assert_eq!(
            &event(b"{\"type\":6}\x1e")[..],
            b"data: {\"type\":6}\x1e\r\n\r\n"
        );
        assert_eq!(
            &event(b"a\nb\r\nc")[..],
            b"data: a\r\ndata: b\r\ndata: c\r\n\r\n"
        );
        assert_eq!(&event(b"a\n")[..], b"data: a\r\ndata: \r\n\r\n");
        assert_eq!(&event(b"\r\nx")[..], b"data: \r\r\ndata: x\r\n\r\n");
    }
}
