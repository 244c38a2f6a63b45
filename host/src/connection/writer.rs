//! The writing half of a connection: drains the outbox into the socket, batching what is
//! queued into one flush, and sends keep-alive pings when the connection has been quiet.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, close_code};
use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::protocol::json;
use crate::router::Outbound;

/// Most frames written before one flush.
const BATCH: usize = 64;

pub(super) async fn run(
    mut sink: SplitSink<WebSocket, Message>,
    mut outbox: mpsc::Receiver<Outbound>,
    keep_alive: Duration,
    cancel: CancellationToken,
) {
    // Fires `keep_alive` after the last write, so the client never waits longer than that.
    let idle = tokio::time::sleep(keep_alive);
    tokio::pin!(idle);
    let ping = Utf8Bytes::from_static(json::PING);
    loop {
        tokio::select! {
            message = outbox.recv() => {
                let Some(message) = message else {
                    // Every sender is gone: the connection ended without a Close message.
                    close(&mut sink).await;
                    break;
                };
                match write_batch(&mut sink, &mut outbox, message).await {
                    Ok(Flow::Continue) => idle.as_mut().reset(Instant::now() + keep_alive),
                    Ok(Flow::Closed) | Err(_) => {
                        cancel.cancel();
                        break;
                    }
                }
            }
            () = &mut idle => {
                if sink.send(Message::Text(ping.clone())).await.is_err() {
                    cancel.cancel();
                    break;
                }
                idle.as_mut().reset(Instant::now() + keep_alive);
            }
            _ = cancel.cancelled() => {
                // Flush what the reader queued last (its Close message) before closing.
                while let Ok(message) = outbox.try_recv() {
                    if !matches!(write_one(&mut sink, message).await, Ok(Flow::Continue)) {
                        return;
                    }
                }
                close(&mut sink).await;
                break;
            }
        }
    }
}

enum Flow {
    Continue,
    Closed,
}

async fn write_one(
    sink: &mut SplitSink<WebSocket, Message>,
    message: Outbound,
) -> Result<Flow, axum::Error> {
    match message {
        Outbound::Frame(frame) => {
            sink.send(Message::Text(frame)).await?;
            Ok(Flow::Continue)
        }
        Outbound::Close(frame) => {
            sink.send(Message::Text(frame)).await?;
            close(sink).await;
            Ok(Flow::Closed)
        }
    }
}

async fn write_batch(
    sink: &mut SplitSink<WebSocket, Message>,
    outbox: &mut mpsc::Receiver<Outbound>,
    first: Outbound,
) -> Result<Flow, axum::Error> {
    let mut next = Some(first);
    let mut written = 0;
    while let Some(message) = next.take() {
        match message {
            Outbound::Frame(frame) => sink.feed(Message::Text(frame)).await?,
            close_message @ Outbound::Close(_) => {
                sink.flush().await?;
                return write_one(sink, close_message).await;
            }
        }
        written += 1;
        if written < BATCH {
            next = outbox.try_recv().ok();
        }
    }
    sink.flush().await?;
    Ok(Flow::Continue)
}

/// A normal closure (1000): any other code shows as an error in the client.
async fn close(sink: &mut SplitSink<WebSocket, Message>) {
    let frame = CloseFrame {
        code: close_code::NORMAL,
        reason: Utf8Bytes::from_static(""),
    };
    let _ = sink.send(Message::Close(Some(frame))).await;
    let _ = sink.close().await;
}
