//! An in-process broker with Redis's pub/sub semantics, for tests: links subscribe to channels
//! and receive, in publish order, what is published on them. Outages and partial publish
//! failures can be staged, so the backplane's handling of them is tested deterministically.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::broker::{Broker, BrokerError, Link, LogStart, Payloads, Publication};

/// A shared in-memory broker; clones are the same broker (one per simulated Redis).
#[derive(Clone, Default)]
pub struct MemoryBroker {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    links: Vec<LinkState>,
    next_link: u64,
    /// Down: connects and publishes fail, and links are broken.
    down: bool,
    /// The next publish carries out this many messages, then fails.
    fail_after: Option<usize>,
    /// Publishes that fail outright, before carrying out anything.
    failing: usize,
    /// Messages carried out, over all publishes.
    published: u64,
}

struct LinkState {
    id: u64,
    channels: HashSet<String>,
    sender: mpsc::UnboundedSender<Bytes>,
}

impl MemoryBroker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the broker down (every link breaks, connects and publishes fail) or brings it
    /// back up.
    pub fn set_down(&self, down: bool) {
        let mut state = self.state.lock();
        state.down = down;
        if down {
            // Dropping the senders ends every link's stream, as a closed socket would.
            state.links.clear();
        }
    }

    /// The next publish carries out its first `count` messages, then fails, as a Redis
    /// connection that breaks in the middle of a pipeline.
    pub fn fail_next_publish_after(&self, count: usize) {
        self.state.lock().fail_after = Some(count);
    }

    /// The next `times` publishes fail outright while links stay up, as a publishing
    /// connection that broke on its own.
    pub fn fail_publishes(&self, times: usize) {
        self.state.lock().failing = times;
    }

    /// The channels of every open link, each list sorted.
    pub fn subscriptions(&self) -> Vec<Vec<String>> {
        self.state
            .lock()
            .links
            .iter()
            .map(|l| {
                let mut channels: Vec<String> = l.channels.iter().cloned().collect();
                channels.sort();
                channels
            })
            .collect()
    }

    /// Messages carried out so far.
    pub fn published(&self) -> u64 {
        self.state.lock().published
    }

    fn unavailable() -> BrokerError {
        BrokerError::Unavailable("the broker is down".into())
    }
}

impl Broker for MemoryBroker {
    type Link = MemoryLink;

    async fn connect(&self) -> Result<(MemoryLink, Payloads), BrokerError> {
        let mut state = self.state.lock();
        if state.down {
            return Err(Self::unavailable());
        }
        state.next_link += 1;
        let id = state.next_link;
        let (sender, mut receiver) = mpsc::unbounded_channel();
        state.links.push(LinkState {
            id,
            channels: HashSet::new(),
            sender,
        });
        let payloads = futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx));
        Ok((
            MemoryLink {
                broker: self.clone(),
                id,
            },
            Box::pin(payloads),
        ))
    }

    async fn publish(
        &self,
        messages: &[Publication],
        _log_start: LogStart,
    ) -> Result<u64, BrokerError> {
        let mut state = self.state.lock();
        if state.down {
            return Err(Self::unavailable());
        }
        if state.failing > 0 {
            state.failing -= 1;
            return Err(BrokerError::Unavailable(
                "the publishing connection broke".into(),
            ));
        }
        let fail_after = state.fail_after.take();
        for (
            i,
            Publication {
                channel, payload, ..
            },
        ) in messages.iter().enumerate()
        {
            if fail_after == Some(i) {
                return Err(BrokerError::Unavailable(
                    "the connection broke during the pipeline".into(),
                ));
            }
            state.published += 1;
            for link in state.links.iter().filter(|l| l.channels.contains(channel)) {
                let _ = link.sender.send(payload.clone());
            }
        }
        Ok(0)
    }

    async fn check(&self) -> Result<(), BrokerError> {
        if self.state.lock().down {
            Err(Self::unavailable())
        } else {
            Ok(())
        }
    }

    fn describe(&self) -> &str {
        "memory"
    }
}

/// A link of a [`MemoryBroker`].
pub struct MemoryLink {
    broker: MemoryBroker,
    id: u64,
}

impl MemoryLink {
    fn with<T>(&self, change: impl FnOnce(&mut LinkState) -> T) -> Result<T, BrokerError> {
        let mut state = self.broker.state.lock();
        if state.down {
            return Err(MemoryBroker::unavailable());
        }
        match state.links.iter_mut().find(|l| l.id == self.id) {
            Some(link) => Ok(change(link)),
            None => Err(BrokerError::Unavailable("the link is closed".into())),
        }
    }
}

impl Link for MemoryLink {
    async fn subscribe(&mut self, channels: &[String]) -> Result<(), BrokerError> {
        self.with(|link| link.channels.extend(channels.iter().cloned()))
    }

    async fn unsubscribe(&mut self, channels: &[String]) -> Result<(), BrokerError> {
        self.with(|link| {
            for channel in channels {
                link.channels.remove(channel);
            }
        })
    }

    async fn ping(&mut self) -> Result<(), BrokerError> {
        self.with(|_| ())
    }
}
