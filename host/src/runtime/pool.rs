//! Instance slots, shared by every hub.
//!
//! The pooling allocator reserves a fixed number of component-instance slots for the whole
//! process (`--total-instances`). Every live instance, busy or idle, holds one. Idle instances
//! are kept for reuse (the fast path) but never at the price of another hub's call: when no
//! slot is free, the least recently used idle instance of any hub gives its slot up, and a call
//! waits only when every slot is busy, up to its deadline. Instances idle longer than the idle
//! timeout are dropped by a background thread, so a hub used once in a burst gives its memory
//! back.
//!
//! Generic over what an instance is, so the bookkeeping is tested without wasmtime.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Every hub's idle instances and the slots they hold.
pub(super) struct Slots<T> {
    permits: Arc<Semaphore>,
    total: u32,
    pools: Mutex<Vec<Weak<IdlePool<T>>>>,
    idle_timeout: Duration,
    /// Calls waiting for a slot (shared with every pool).
    waiting: Arc<AtomicUsize>,
}

/// A value that holds an instance slot until it is dropped.
pub(super) struct Slotted<T> {
    pub(super) value: T,
    _slot: OwnedSemaphorePermit,
}

/// One hub's idle instances, most recently used last.
pub(super) struct IdlePool<T> {
    idle: Mutex<VecDeque<(Slotted<T>, Instant)>>,
    /// [`Slots::waiting`]: an instance done while a call waits for a slot gives its slot to
    /// that call instead of being kept, since a waiting call evicts nothing.
    waiting: Arc<AtomicUsize>,
}

impl<T: Send + 'static> Slots<T> {
    /// `total` slots; instances idle longer than `idle_timeout` are dropped (checked a few times
    /// per timeout by a thread that ends with the last reference).
    pub(super) fn new(total: u32, idle_timeout: Duration) -> Arc<Self> {
        let slots = Arc::new(Self {
            permits: Arc::new(Semaphore::new(total as usize)),
            total,
            pools: Mutex::new(Vec::new()),
            idle_timeout,
            waiting: Arc::new(AtomicUsize::new(0)),
        });
        let weak = Arc::downgrade(&slots);
        let period = (idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(10));
        let spawned = std::thread::Builder::new()
            .name("hubhost-trim".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(period);
                    let Some(slots) = weak.upgrade() else { return };
                    slots.trim(Instant::now());
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("idle hub instances will not be trimmed: cannot start a thread ({e})");
        }
        slots
    }

    /// A new, empty pool for one hub (or one version of it).
    pub(super) fn pool(&self) -> Arc<IdlePool<T>> {
        let pool = Arc::new(IdlePool {
            idle: Mutex::new(VecDeque::new()),
            waiting: self.waiting.clone(),
        });
        let mut pools = self.pools.lock();
        pools.retain(|p| p.strong_count() > 0);
        pools.push(Arc::downgrade(&pool));
        pool
    }

    /// Slots over all hubs.
    pub(super) fn total(&self) -> u32 {
        self.total
    }

    /// A slot for a new instance: a free one, else one an idle instance gives up, else the next
    /// to be freed, waiting no later than `deadline`. `None` when every slot stayed busy.
    pub(super) async fn acquire(&self, deadline: tokio::time::Instant) -> Option<Slot> {
        if let Some(slot) = self.free_or_evicted() {
            return Some(slot);
        }
        // Counted before looking again: an instance put idle from here on frees its slot for
        // this call (see `IdlePool::put`), and one put idle before is evicted by the look.
        // Otherwise instances finishing while every caller waits would keep their slots idle,
        // and the callers would wait out their deadlines.
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _counted = Waiting(&self.waiting);
        if let Some(slot) = self.free_or_evicted() {
            return Some(slot);
        }
        match tokio::time::timeout_at(deadline, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Some(Slot(permit)),
            _ => None,
        }
    }

    /// A free slot, else one an idle instance gives up; `None` when every slot is busy.
    fn free_or_evicted(&self) -> Option<Slot> {
        loop {
            if let Ok(permit) = self.permits.clone().try_acquire_owned() {
                return Some(Slot(permit));
            }
            if !self.evict_least_recently_used() {
                return None;
            }
        }
    }

    /// Drops the idle instance unused the longest, over all hubs; `false` if none is idle.
    fn evict_least_recently_used(&self) -> bool {
        let pools: Vec<Arc<IdlePool<T>>> =
            self.pools.lock().iter().filter_map(Weak::upgrade).collect();
        let oldest = pools
            .iter()
            .filter_map(|p| p.oldest().map(|since| (since, p)))
            .min_by_key(|(since, _)| *since)
            .map(|(_, p)| p);
        match oldest {
            // Dropped outside the pool's lock; its slot is free once it is gone.
            Some(pool) => pool.pop_oldest().is_some(),
            None => false,
        }
    }

    /// Drops the instances idle since before `now - idle_timeout`; returns how many.
    pub(super) fn trim(&self, now: Instant) -> usize {
        let pools: Vec<Arc<IdlePool<T>>> =
            self.pools.lock().iter().filter_map(Weak::upgrade).collect();
        let mut dropped = 0;
        for pool in pools {
            while pool
                .oldest()
                .is_some_and(|since| now.duration_since(since) >= self.idle_timeout)
            {
                if pool.pop_oldest().is_some() {
                    dropped += 1;
                }
            }
        }
        dropped
    }

    /// Slots free right now (for tests and diagnostics).
    pub(super) fn available(&self) -> usize {
        self.permits.available_permits()
    }
}

/// One call counted in [`Slots::waiting`] until it stops waiting.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A reserved slot, to be given to the instance made with it.
pub(super) struct Slot(OwnedSemaphorePermit);

impl Slot {
    pub(super) fn hold<T>(self, value: T) -> Slotted<T> {
        Slotted {
            value,
            _slot: self.0,
        }
    }
}

impl<T> IdlePool<T> {
    /// The most recently used idle instance (its memory is the most likely to be warm).
    pub(super) fn take(&self) -> Option<Slotted<T>> {
        self.idle.lock().pop_back().map(|(item, _)| item)
    }

    /// Keeps an instance for reuse, unless a call waits for a slot: then the instance is
    /// dropped and its slot goes to that call.
    pub(super) fn put(&self, item: Slotted<T>) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            drop(item);
            return;
        }
        self.idle.lock().push_back((item, Instant::now()));
    }

    /// Idle instances (for tests and diagnostics).
    pub(super) fn len(&self) -> usize {
        self.idle.lock().len()
    }

    fn oldest(&self) -> Option<Instant> {
        self.idle.lock().front().map(|(_, since)| *since)
    }

    fn pop_oldest(&self) -> Option<Slotted<T>> {
        self.idle.lock().pop_front().map(|(item, _)| item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn soon() -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_millis(100)
    }

    #[tokio::test]
    async fn a_hub_takes_an_idle_slot_of_another_hub_when_none_is_free() {
        let slots = Slots::<u32>::new(2, Duration::from_secs(60));
        let (a, b) = (slots.pool(), slots.pool());
        for n in 0..2 {
            let slot = slots.acquire(soon()).await.expect("free slot");
            a.put(slot.hold(n));
        }
        assert_eq!(slots.available(), 0);
        // Hub b needs one: a's least recently used instance (0) gives its slot up.
        let slot = slots.acquire(soon()).await.expect("an evicted slot");
        b.put(slot.hold(10));
        assert_eq!(a.len(), 1);
        assert_eq!(
            a.take().map(|s| s.value),
            Some(1),
            "the most recent one stayed"
        );
    }

    /// A call for a slot (5 s deadline), once it waits: whether it got one.
    async fn waiting_call(slots: &Arc<Slots<u32>>) -> tokio::task::JoinHandle<bool> {
        let call = {
            let slots = slots.clone();
            tokio::spawn(async move {
                slots
                    .acquire(tokio::time::Instant::now() + Duration::from_secs(5))
                    .await
                    .is_some()
            })
        };
        while slots.waiting.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        call
    }

    #[tokio::test]
    async fn waits_for_a_busy_slot_until_the_deadline() {
        let slots = Slots::<u32>::new(1, Duration::from_secs(60));
        let busy = slots.acquire(soon()).await.expect("free slot").hold(1);
        assert!(slots.acquire(soon()).await.is_none(), "every slot busy");
        let waiter = waiting_call(&slots).await;
        drop(busy);
        assert!(
            waiter.await.expect("joined"),
            "the freed slot goes to the waiter"
        );
    }

    #[tokio::test]
    async fn an_instance_done_while_a_call_waits_gives_that_call_its_slot() {
        let slots = Slots::<u32>::new(1, Duration::from_secs(60));
        let pool = slots.pool();
        let busy = slots.acquire(soon()).await.expect("free slot").hold(1);
        let waiter = waiting_call(&slots).await;
        // Done with, not dropped: kept idle, it would hold the slot while the call waits.
        pool.put(busy);
        assert!(waiter.await.expect("joined"), "the slot went to the waiter");
        assert_eq!(pool.len(), 0, "not kept idle");
        assert_eq!(slots.waiting.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn trims_instances_idle_too_long() {
        let slots = Slots::<u32>::new(4, Duration::from_secs(30));
        let pool = slots.pool();
        for n in 0..3 {
            pool.put(slots.acquire(soon()).await.expect("slot").hold(n));
        }
        let now = Instant::now();
        assert_eq!(slots.trim(now), 0, "not idle long enough");
        assert_eq!(slots.trim(now + Duration::from_secs(31)), 3);
        assert_eq!(pool.len(), 0);
        assert_eq!(slots.available(), 4, "their slots are free");
    }

    #[tokio::test]
    async fn a_dropped_pool_gives_its_slots_back() {
        let slots = Slots::<u32>::new(2, Duration::from_secs(60));
        let pool = slots.pool();
        pool.put(slots.acquire(soon()).await.expect("slot").hold(1));
        assert_eq!(slots.available(), 1);
        drop(pool);
        assert_eq!(slots.available(), 2);
        assert!(!slots.evict_least_recently_used());
    }
}
