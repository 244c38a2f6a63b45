//! The outgoing half of the HTTP transports: the session's writer puts bytes in, the response
//! takes them out (a Server-Sent Events stream as they come, a poll all at once).
//!
//! Bounded in bytes: when the client does not take what it is sent, the writer waits, the
//! session's outbox fills, and the connection is cut off as a slow client, as on WebSockets.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use tokio::sync::Notify;

/// Bytes waiting for the client before the writer waits.
const LIMIT: usize = 256 * 1024;

#[derive(Default)]
struct State {
    chunks: VecDeque<Bytes>,
    bytes: usize,
    /// The writer finished: what is buffered is the last of it.
    closed: bool,
    /// The reader went away: writes fail.
    abandoned: bool,
}

/// A bounded queue of byte chunks between one writer and one reader.
#[derive(Default)]
pub(super) struct Pipe {
    state: Mutex<State>,
    /// Wakes a reader polling as a stream (the event stream's body).
    reader: AtomicWaker,
    /// Wakes readers waiting as futures (polls).
    readable: Notify,
    /// Wakes the writer when room was made or the reader went away.
    writer: AtomicWaker,
}

/// The reader is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the client is gone")]
pub struct Abandoned;

impl Pipe {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn wake_readers(&self) {
        self.reader.wake();
        self.readable.notify_waiters();
    }

    /// Wakes the readers waiting as futures, though nothing was written (a poll replaced).
    pub(super) fn wake_polls(&self) {
        self.readable.notify_waiters();
    }

    /// Whether a chunk can be written now; registers the writer's waker if not.
    pub(super) fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), Abandoned>> {
        self.writer.register(cx.waker());
        let state = self.state.lock();
        if state.abandoned {
            Poll::Ready(Err(Abandoned))
        } else if state.bytes >= LIMIT {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    }

    /// Appends a chunk (after `poll_ready` said there was room).
    pub(super) fn write(&self, chunk: Bytes) -> Result<(), Abandoned> {
        let mut state = self.state.lock();
        if state.abandoned {
            return Err(Abandoned);
        }
        state.bytes += chunk.len();
        state.chunks.push_back(chunk);
        drop(state);
        self.wake_readers();
        Ok(())
    }

    /// The writer is done.
    pub(super) fn close(&self) {
        self.state.lock().closed = true;
        self.wake_readers();
    }

    /// The reader is done: writes fail from now on.
    pub(super) fn abandon(&self) {
        let mut state = self.state.lock();
        state.abandoned = true;
        state.chunks.clear();
        state.bytes = 0;
        drop(state);
        self.writer.wake();
    }

    /// The next chunk, for a reader polling as a stream; `None` once closed and empty.
    pub(super) fn poll_chunk(&self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        self.reader.register(cx.waker());
        let mut state = self.state.lock();
        match state.chunks.pop_front() {
            Some(chunk) => {
                state.bytes -= chunk.len();
                drop(state);
                self.writer.wake();
                Poll::Ready(Some(chunk))
            }
            None if state.closed => Poll::Ready(None),
            None => Poll::Pending,
        }
    }

    /// Everything buffered, as one body; `None` when nothing is.
    pub(super) fn take_all(&self) -> Option<Bytes> {
        let mut state = self.state.lock();
        if state.chunks.is_empty() {
            return None;
        }
        let chunks = std::mem::take(&mut state.chunks);
        state.bytes = 0;
        drop(state);
        self.writer.wake();
        Some(if chunks.len() == 1 {
            chunks.into_iter().next().unwrap_or_default()
        } else {
            let mut body = Vec::with_capacity(chunks.iter().map(Bytes::len).sum());
            for chunk in &chunks {
                body.extend_from_slice(chunk);
            }
            Bytes::from(body)
        })
    }

    /// Whether the writer is done and everything was taken.
    pub(super) fn is_finished(&self) -> bool {
        let state = self.state.lock();
        state.closed && state.chunks.is_empty()
    }

    /// Resolves when something may have changed for a reader (a write or the close).
    pub(super) fn readable(&self) -> tokio::sync::futures::Notified<'_> {
        self.readable.notified()
    }
}

/// A reader of the pipe as a stream of chunks; dropping it abandons the pipe.
pub(super) struct ChunkStream {
    pipe: Arc<Pipe>,
}

impl ChunkStream {
    pub(super) fn new(pipe: Arc<Pipe>) -> Self {
        Self { pipe }
    }
}

impl futures_util::Stream for ChunkStream {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.pipe.poll_chunk(cx).map(|chunk| chunk.map(Ok))
    }
}

impl Drop for ChunkStream {
    fn drop(&mut self) {
        self.pipe.abandon();
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    #[tokio::test]
    async fn chunks_flow_in_order_then_end() {
        let pipe = Pipe::new();
        pipe.write(Bytes::from_static(b"a")).expect("open");
        pipe.write(Bytes::from_static(b"b")).expect("open");
        pipe.close();
        let chunks: Vec<_> = ChunkStream::new(pipe.clone()).collect().await;
        assert_eq!(chunks.len(), 2);
        assert!(pipe.is_finished());
    }

    #[tokio::test]
    async fn a_poll_takes_everything_at_once() {
        let pipe = Pipe::new();
        assert_eq!(pipe.take_all(), None);
        pipe.write(Bytes::from_static(b"ab")).expect("open");
        pipe.write(Bytes::from_static(b"c")).expect("open");
        assert_eq!(pipe.take_all(), Some(Bytes::from_static(b"abc")));
        assert_eq!(pipe.take_all(), None);
    }

    #[test]
    fn a_full_pipe_holds_the_writer_and_a_gone_reader_fails_it() {
        let pipe = Pipe::new();
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        pipe.write(Bytes::from(vec![0; LIMIT])).expect("open");
        assert!(pipe.poll_ready(&mut cx).is_pending());
        pipe.take_all();
        assert_eq!(pipe.poll_ready(&mut cx), Poll::Ready(Ok(())));
        drop(ChunkStream::new(pipe.clone()));
        assert_eq!(pipe.poll_ready(&mut cx), Poll::Ready(Err(Abandoned)));
        assert_eq!(pipe.write(Bytes::from_static(b"x")), Err(Abandoned));
    }
}
