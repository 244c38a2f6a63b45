//! Client results in flight on this server: questions its hubs asked and wait for (by
//! invocation id), and questions delivered to its connections and not answered yet (by
//! connection, so a connection that leaves answers "gone" for each).

use std::collections::HashMap;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::types::{Answered, Reply};

#[derive(Default)]
pub struct Asks {
    /// Questions asked here: invocation id -> the connection asked and who waits.
    waiting: Mutex<HashMap<String, (String, oneshot::Sender<Reply>)>>,
    /// Questions delivered to local connections: connection -> invocation ids.
    delivered: Mutex<HashMap<String, Vec<String>>>,
}

impl std::fmt::Debug for Asks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Asks")
            .field("waiting", &self.waiting.lock().len())
            .field("delivered", &self.delivered.lock().len())
            .finish()
    }
}

impl Asks {
    /// Waits for the answer to `invocation_id` from `connection`.
    pub fn expect(&self, invocation_id: String, connection: String) -> oneshot::Receiver<Reply> {
        let (sender, receiver) = oneshot::channel();
        self.waiting
            .lock()
            .insert(invocation_id, (connection, sender));
        receiver
    }

    /// Stops waiting (the asker gave up).
    pub fn forget(&self, invocation_id: &str) {
        self.waiting.lock().remove(invocation_id);
    }

    /// Hands an answer to whoever waits for it here; an answer from another connection than
    /// the one asked is ignored (a client cannot answer for another).
    pub fn resolve(&self, answered: Answered) -> bool {
        let mut waiting = self.waiting.lock();
        match waiting.get(&answered.invocation_id) {
            Some((connection, _)) if *connection == answered.connection => {}
            _ => return false,
        }
        match waiting.remove(&answered.invocation_id) {
            Some((_, sender)) => sender.send(answered.reply).is_ok(),
            None => false,
        }
    }

    /// Remembers a question delivered to a local connection.
    pub fn delivered(&self, connection: &str, invocation_id: &str) {
        self.delivered
            .lock()
            .entry(connection.to_owned())
            .or_default()
            .push(invocation_id.to_owned());
    }

    /// A local connection answered: whether it had been asked this.
    pub fn answered(&self, connection: &str, invocation_id: &str) -> bool {
        let mut delivered = self.delivered.lock();
        let Some(ids) = delivered.get_mut(connection) else {
            return false;
        };
        let Some(at) = ids.iter().position(|id| id == invocation_id) else {
            return false;
        };
        ids.swap_remove(at);
        if ids.is_empty() {
            delivered.remove(connection);
        }
        true
    }

    /// A local connection moves to another server: the questions it was delivered here and has
    /// not answered, which it answers there.
    pub fn moving(&self, connection: &str) -> Vec<String> {
        self.delivered.lock().remove(connection).unwrap_or_default()
    }

    /// A local connection left: the questions it will never answer.
    pub fn left(&self, connection: &str) -> Vec<Answered> {
        self.delivered
            .lock()
            .remove(connection)
            .unwrap_or_default()
            .into_iter()
            .map(|invocation_id| Answered {
                invocation_id,
                connection: connection.to_owned(),
                reply: Reply::Gone,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_asked_connection_can_answer() {
        let asks = Asks::default();
        let mut receiver = asks.expect("s.1".into(), "c1".into());
        let answer = |connection: &str| Answered {
            invocation_id: "s.1".into(),
            connection: connection.into(),
            reply: Reply::Result("42".into()),
        };
        assert!(!asks.resolve(answer("c2")));
        assert!(receiver.try_recv().is_err());
        assert!(asks.resolve(answer("c1")));
        assert_eq!(receiver.try_recv(), Ok(Reply::Result("42".into())));
    }

    #[test]
    fn a_connection_that_leaves_answers_gone_for_what_it_was_asked() {
        let asks = Asks::default();
        asks.delivered("c1", "s.1");
        asks.delivered("c1", "s.2");
        assert!(asks.answered("c1", "s.1"));
        assert!(!asks.answered("c1", "s.1"), "only once");
        let gone = asks.left("c1");
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].invocation_id, "s.2");
        assert_eq!(gone[0].reply, Reply::Gone);
    }
}
