//! Duplicate detection: which packets of each sender were delivered already.
//!
//! Every packet carries its sender and a sequence number ([`wire::Header`](crate::backplane::wire::Header)).
//! Copies come from a publish retried after a pipeline failed half-way: the publisher waits for
//! the retry, so a copy is never more than one batch behind the newest packet of its sender.
//! On one Redis packets arrive in order; on a cluster a sender's packets to different shards
//! travel on different connections and may arrive out of order. So each sender has a window of
//! the last [`WINDOW`] numbers below its highest: a number in it is delivered once; a number
//! below it is older than any copy can be, and is delivered.

use std::collections::HashMap;

/// Sequence numbers remembered per sender, below its highest.
pub(super) const WINDOW: u64 = 4096;
/// Senders remembered; beyond it the longest silent is forgotten.
pub(super) const MAX_ORIGINS: usize = 1024;

const WORDS: usize = (WINDOW / 64) as usize;

/// One sender's recent numbers.
struct Window {
    highest: u64,
    /// Bit `seq % WINDOW` is set when `seq` (within the window) was delivered.
    bits: Box<[u64; WORDS]>,
    /// When it was last heard from (see [`Seen::clock`]).
    heard: u64,
}

impl Window {
    fn new(seq: u64, heard: u64) -> Self {
        let mut window = Self {
            highest: seq,
            bits: Box::new([0; WORDS]),
            heard,
        };
        window.set(seq);
        window
    }

    fn slot(seq: u64) -> (usize, u64) {
        let bit = seq % WINDOW;
        ((bit / 64) as usize, 1 << (bit % 64))
    }

    fn set(&mut self, seq: u64) {
        let (word, mask) = Self::slot(seq);
        self.bits[word] |= mask;
    }

    fn is_set(&self, seq: u64) -> bool {
        let (word, mask) = Self::slot(seq);
        self.bits[word] & mask != 0
    }

    fn clear(&mut self, seq: u64) {
        let (word, mask) = Self::slot(seq);
        self.bits[word] &= !mask;
    }

    fn accept(&mut self, seq: u64) -> bool {
        if seq > self.highest {
            if seq - self.highest >= WINDOW {
                self.bits.fill(0);
            } else {
                for skipped in self.highest + 1..seq {
                    self.clear(skipped);
                }
            }
            self.highest = seq;
            self.set(seq);
            return true;
        }
        if self.highest - seq >= WINDOW {
            return true;
        }
        if self.is_set(seq) {
            return false;
        }
        self.set(seq);
        true
    }
}

/// The recent sequence numbers of each other server.
#[derive(Default)]
pub(super) struct Seen {
    windows: HashMap<u64, Window>,
    /// Increases per packet: how recently each origin was heard from.
    clock: u64,
}

impl Seen {
    /// Whether a packet is new (and records it), or a copy of one already delivered.
    pub(super) fn accept(&mut self, origin: u64, seq: u64) -> bool {
        self.clock += 1;
        if let Some(window) = self.windows.get_mut(&origin) {
            window.heard = self.clock;
            return window.accept(seq);
        }
        if self.windows.len() >= MAX_ORIGINS
            && let Some(oldest) = self
                .windows
                .iter()
                .min_by_key(|(_, w)| w.heard)
                .map(|(o, _)| *o)
        {
            self.windows.remove(&oldest);
        }
        self.windows.insert(origin, Window::new(seq, self.clock));
        true
    }

    /// Whether `origin` is remembered (for tests).
    #[cfg(test)]
    pub(super) fn knows(&self, origin: u64) -> bool {
        self.windows.contains_key(&origin)
    }

    #[cfg(test)]
    pub(super) fn senders(&self) -> usize {
        self.windows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_told_apart_per_sender() {
        let mut seen = Seen::default();
        assert!(seen.accept(1, 1));
        assert!(seen.accept(1, 2));
        assert!(!seen.accept(1, 2), "a copy");
        assert!(!seen.accept(1, 1), "an older copy");
        assert!(seen.accept(2, 1), "another sender has its own sequence");
        assert!(
            seen.accept(1, 5),
            "gaps are fine (channels not subscribed to)"
        );
    }

    #[test]
    fn packets_from_several_shards_may_arrive_out_of_order() {
        let mut seen = Seen::default();
        for seq in [10, 12, 11, 15, 13, 14] {
            assert!(seen.accept(7, seq), "{seq} arrives late, once");
        }
        for seq in [10, 11, 12, 13, 14, 15] {
            assert!(!seen.accept(7, seq), "{seq} again is a copy");
        }
        assert!(seen.accept(7, 9), "never seen, within the window");
    }

    #[test]
    fn the_window_moves_with_the_highest_number() {
        let mut seen = Seen::default();
        assert!(seen.accept(1, 5));
        assert!(seen.accept(1, 5 + WINDOW), "a jump past the window");
        assert!(
            seen.accept(1, 5 + WINDOW - 1),
            "a slot the jump reused is not taken for a copy"
        );
        assert!(!seen.accept(1, 5 + WINDOW), "a copy of the newest");
        assert!(seen.accept(1, 5), "older than any copy can be");
        assert!(seen.accept(1, 6 + 2 * WINDOW));
        assert!(
            seen.accept(1, 7 + WINDOW),
            "its bit was cleared by the move"
        );
    }

    #[test]
    fn the_longest_silent_sender_is_forgotten_first() {
        let mut seen = Seen::default();
        for origin in 0..MAX_ORIGINS as u64 {
            assert!(seen.accept(origin, 1));
        }
        assert!(seen.accept(0, 2), "origin 0 heard from again");
        assert!(seen.accept(u64::MAX, 1), "a new sender past the limit");
        assert_eq!(seen.senders(), MAX_ORIGINS);
        assert!(seen.knows(0), "recently heard");
        assert!(!seen.knows(1), "the longest silent");
    }
}
