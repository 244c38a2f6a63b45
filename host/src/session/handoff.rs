//! A one-slot handoff: the newest value a sender put, for one receiver to take.
//!
//! Stateful reconnect hands a connection's new transport to its session, and the session hands
//! the new sink to its writer. Only the newest transport matters (a client that came back twice
//! uses its latest socket), and every resumable connection holds both handoffs for its whole
//! life, idle or not: a tokio mpsc channel would allocate a block of 32 slots up front (several
//! KiB for a socket's halves), this costs one small allocation.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use parking_lot::Mutex;

struct Slot<T> {
    value: Option<T>,
    senders: usize,
    receiving: bool,
}

struct Inner<T> {
    slot: Mutex<Slot<T>>,
    waker: AtomicWaker,
}

/// A handoff's two ends.
pub fn handoff<T>() -> (HandoffSender<T>, HandoffReceiver<T>) {
    with_receiving(true)
}

/// A handoff whose receiver takes nothing until it [opens](HandoffReceiver::open) it: until
/// then senders see it closed.
pub fn shut_handoff<T>() -> (HandoffSender<T>, HandoffReceiver<T>) {
    with_receiving(false)
}

fn with_receiving<T>(receiving: bool) -> (HandoffSender<T>, HandoffReceiver<T>) {
    let inner = Arc::new(Inner {
        slot: Mutex::new(Slot {
            value: None,
            senders: 1,
            receiving,
        }),
        waker: AtomicWaker::new(),
    });
    (
        HandoffSender {
            inner: inner.clone(),
        },
        HandoffReceiver { inner },
    )
}

/// Puts values; clones share the slot.
pub struct HandoffSender<T> {
    inner: Arc<Inner<T>>,
}

impl<T> HandoffSender<T> {
    /// Puts `value` for the receiver, in place of one it has not taken yet (which is dropped).
    /// Gives it back if the receiver is gone.
    pub fn send(&self, value: T) -> Result<(), T> {
        let replaced = {
            let mut slot = self.inner.slot.lock();
            if !slot.receiving {
                return Err(value);
            }
            slot.value.replace(value)
        };
        // Dropped outside the lock: a socket's drop does work.
        drop(replaced);
        self.inner.waker.wake();
        Ok(())
    }

    /// Whether the receiver is gone.
    pub fn is_closed(&self) -> bool {
        !self.inner.slot.lock().receiving
    }
}

impl<T> Clone for HandoffSender<T> {
    fn clone(&self) -> Self {
        self.inner.slot.lock().senders += 1;
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<T> Drop for HandoffSender<T> {
    fn drop(&mut self) {
        let last = {
            let mut slot = self.inner.slot.lock();
            slot.senders -= 1;
            slot.senders == 0
        };
        if last {
            self.inner.waker.wake();
        }
    }
}

/// Takes the values.
pub struct HandoffReceiver<T> {
    inner: Arc<Inner<T>>,
}

impl<T> HandoffReceiver<T> {
    /// Starts taking values (see [`shut_handoff`]).
    pub fn open(&self) {
        self.inner.slot.lock().receiving = true;
    }

    /// The value put since the last one taken; `None` once every sender is gone and nothing
    /// is left.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.inner.waker.register(cx.waker());
        let mut slot = self.inner.slot.lock();
        match slot.value.take() {
            Some(value) => Poll::Ready(Some(value)),
            None if slot.senders == 0 => Poll::Ready(None),
            None => Poll::Pending,
        }
    }

    pub async fn recv(&mut self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }
}

impl<T> Drop for HandoffReceiver<T> {
    fn drop(&mut self) {
        let left = {
            let mut slot = self.inner.slot.lock();
            slot.receiving = false;
            slot.value.take()
        };
        drop(left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_newest_value_is_taken_and_the_end_is_seen() {
        let (sender, mut receiver) = handoff();
        sender.send(1).expect("open");
        sender.send(2).expect("open");
        assert_eq!(
            receiver.recv().await,
            Some(2),
            "the newest replaces the older"
        );
        let waiting = tokio::spawn(async move {
            let got = receiver.recv().await;
            (got, receiver.recv().await)
        });
        tokio::task::yield_now().await;
        let clone = sender.clone();
        clone.send(3).expect("open");
        drop(clone);
        drop(sender);
        assert_eq!(waiting.await.expect("no panic"), (Some(3), None));
    }

    #[test]
    fn a_shut_handoff_takes_nothing_until_opened() {
        let (sender, receiver) = shut_handoff();
        assert!(sender.is_closed());
        assert_eq!(sender.send(1), Err(1));
        receiver.open();
        assert!(!sender.is_closed());
        sender.send(2).expect("open");
    }

    #[test]
    fn a_value_comes_back_once_the_receiver_is_gone() {
        let (sender, receiver) = handoff();
        assert!(!sender.is_closed());
        drop(receiver);
        assert!(sender.is_closed());
        assert_eq!(sender.send(7), Err(7));
    }
}
