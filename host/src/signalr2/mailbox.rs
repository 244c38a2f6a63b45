//! A connection's recent messages, numbered, so any transport request can take what came
//! after the cursor it holds.
//!
//! SignalR 2 clients keep the cursor (`C`) of the last persistent response and send it back
//! when they poll or reconnect; the server answers with everything after it. The mailbox
//! keeps the newest messages (up to [`KEEP_MESSAGES`] and [`KEEP_BYTES`]) for as long as a
//! client could still come back for them (its replay window: a client notices a dead
//! connection within the keep-alive timeout and has the disconnect timeout to come back); a
//! cursor older than that gets what is left, a cursor it does not know (another host's, a
//! restarted connection's) means "from now", as in SignalR 2. Messages of a fan-out share one
//! buffer among the mailboxes holding them.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use rand::Rng;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Messages kept for replay (SignalR 2 keeps 1000 per topic).
pub const KEEP_MESSAGES: usize = 1000;
/// Bytes of messages kept for replay, so large messages cannot hold much memory.
pub const KEEP_BYTES: usize = 512 * 1024;

/// A position in a connection's messages, as the client holds it: `<epoch>:<sequence>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    epoch: u32,
    sequence: u64,
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:08x}:{}", self.epoch, self.sequence)
    }
}

/// What a request takes: the messages after its cursor, and the cursor after them.
#[derive(Debug, Default)]
pub struct Batch {
    pub messages: Vec<Bytes>,
    pub cursor: Option<Cursor>,
}

pub struct Mailbox {
    /// Distinguishes this mailbox's cursors from any other's.
    epoch: u32,
    /// How long a message is kept.
    keep_for: Duration,
    inner: Mutex<Inner>,
    arrived: Notify,
}

#[derive(Default)]
struct Inner {
    /// The sequence number of the newest message (0: none yet).
    last: u64,
    /// Sequence number, arrival, message.
    kept: VecDeque<(u64, Instant, Bytes)>,
    kept_bytes: usize,
}

impl Mailbox {
    /// A mailbox keeping messages `keep_for` (and within the caps).
    pub fn new(keep_for: Duration) -> Self {
        Self {
            epoch: rand::rng().random(),
            keep_for,
            inner: Mutex::new(Inner::default()),
            arrived: Notify::new(),
        }
    }

    /// Adds a message and wakes the requests waiting for one.
    pub fn push(&self, message: Bytes) {
        {
            let now = Instant::now();
            let mut inner = self.inner.lock();
            inner.last += 1;
            let sequence = inner.last;
            inner.kept_bytes += message.len();
            inner.kept.push_back((sequence, now, message));
            // The oldest go while expired or over a cap; the newest always stays.
            while let Some((_, arrived, oldest)) = inner.kept.front() {
                let (expired, size) = (now.duration_since(*arrived) > self.keep_for, oldest.len());
                let over = inner.kept.len() > KEEP_MESSAGES || inner.kept_bytes > KEEP_BYTES;
                if !(expired || over) || inner.kept.len() == 1 {
                    break;
                }
                inner.kept_bytes -= size;
                inner.kept.pop_front();
            }
        }
        self.arrived.notify_waiters();
    }

    /// The cursor of the newest message.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            epoch: self.epoch,
            sequence: self.inner.lock().last,
        }
    }

    /// Reads a cursor a client sent: `None` (from now) unless it is one of this mailbox's.
    pub fn parse(&self, text: &str) -> Option<Cursor> {
        let (epoch, sequence) = text.split_once(':')?;
        let epoch = u32::from_str_radix(epoch, 16).ok()?;
        let sequence = sequence.parse().ok()?;
        (epoch == self.epoch && sequence <= self.inner.lock().last)
            .then_some(Cursor { epoch, sequence })
    }

    /// The messages after `from` (none if there are none yet).
    pub fn after(&self, from: Cursor) -> Batch {
        let inner = self.inner.lock();
        if from.sequence >= inner.last {
            return Batch::default();
        }
        if let Some((first, _, _)) = inner.kept.front()
            && *first > from.sequence + 1
        {
            tracing::debug!(
                lost = first - from.sequence - 1,
                "a client asked for messages no longer kept"
            );
        }
        // Sequence numbers are consecutive: the first one wanted is found by arithmetic, not
        // by scanning what is kept (up to 1,000 messages, on every response).
        let first = inner
            .kept
            .front()
            .map_or(inner.last, |(sequence, _, _)| *sequence);
        let skip = usize::try_from((from.sequence + 1).saturating_sub(first))
            .map_or(inner.kept.len(), |skip| skip.min(inner.kept.len()));
        let messages = inner
            .kept
            .range(skip..)
            .map(|(_, _, message)| message.clone())
            .collect();
        Batch {
            messages,
            cursor: Some(Cursor {
                epoch: self.epoch,
                sequence: inner.last,
            }),
        }
    }

    /// Waits until there are messages after `from`.
    pub async fn wait_after(&self, from: Cursor) {
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            // Registered before looking, so a message pushed in between is not missed.
            arrived.as_mut().enable();
            if self.inner.lock().last > from.sequence {
                return;
            }
            arrived.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(3600);

    fn texts(batch: &Batch) -> Vec<&[u8]> {
        batch.messages.iter().map(|m| &m[..]).collect()
    }

    #[tokio::test]
    async fn a_cursor_gets_what_came_after_it() {
        let mailbox = Mailbox::new(LONG);
        let start = mailbox.cursor();
        assert!(mailbox.after(start).messages.is_empty());
        mailbox.push(Bytes::from_static(b"1"));
        mailbox.push(Bytes::from_static(b"2"));
        let batch = mailbox.after(start);
        assert_eq!(texts(&batch), [&b"1"[..], b"2"]);
        let cursor = batch.cursor.unwrap();
        assert_eq!(mailbox.parse(&cursor.to_string()), Some(cursor));
        mailbox.push(Bytes::from_static(b"3"));
        assert_eq!(texts(&mailbox.after(cursor)), [&b"3"[..]]);
        // The wait returns at once when something is there already.
        mailbox.wait_after(start).await;
    }

    #[test]
    fn unknown_cursors_mean_from_now() {
        let mailbox = Mailbox::new(LONG);
        mailbox.push(Bytes::from_static(b"1"));
        let other = Mailbox::new(LONG);
        assert_eq!(mailbox.parse(&other.cursor().to_string()), None);
        assert_eq!(mailbox.parse("d-1B6FE5B1-B,3"), None);
        assert_eq!(mailbox.parse(""), None);
        // A cursor from this mailbox's future is not one it gave.
        let future = Cursor {
            epoch: mailbox.epoch,
            sequence: 99,
        };
        assert_eq!(mailbox.parse(&future.to_string()), None);
    }

    #[test]
    fn keeps_the_newest_messages_only() {
        let mailbox = Mailbox::new(LONG);
        let start = mailbox.cursor();
        for i in 0..KEEP_MESSAGES + 5 {
            mailbox.push(Bytes::from(i.to_string()));
        }
        let batch = mailbox.after(start);
        assert_eq!(batch.messages.len(), KEEP_MESSAGES);
        assert_eq!(&batch.messages[0][..], b"5");
        let big = Mailbox::new(LONG);
        let start = big.cursor();
        for _ in 0..10 {
            big.push(Bytes::from(vec![b'x'; KEEP_BYTES / 4]));
        }
        assert_eq!(big.after(start).messages.len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn messages_older_than_the_replay_window_go() {
        let mailbox = Mailbox::new(Duration::from_secs(45));
        let start = mailbox.cursor();
        mailbox.push(Bytes::from_static(b"old"));
        tokio::time::advance(Duration::from_secs(30)).await;
        mailbox.push(Bytes::from_static(b"recent"));
        tokio::time::advance(Duration::from_secs(20)).await;
        mailbox.push(Bytes::from_static(b"new"));
        assert_eq!(texts(&mailbox.after(start)), [&b"recent"[..], b"new"]);
    }

    #[tokio::test]
    async fn a_waiting_request_wakes_on_a_message() {
        let mailbox = std::sync::Arc::new(Mailbox::new(LONG));
        let start = mailbox.cursor();
        let waiting = tokio::spawn({
            let mailbox = mailbox.clone();
            async move { mailbox.wait_after(start).await }
        });
        tokio::task::yield_now().await;
        mailbox.push(Bytes::from_static(b"1"));
        waiting.await.unwrap();
    }
}
