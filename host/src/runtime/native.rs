//! Hubs compiled into the host binary instead of loaded as Wasm.
//!
//! No sandbox, no deadline, no memory cap: a native hub is trusted code. It exists so the cost
//! of the sandbox can be measured against the very same hub logic (the load generator's
//! `hubhost-native` serves the chat hub this way); operators deploy hubs as components.

use std::sync::Arc;

use super::{Answer, Call, CallError, CallOutcome, Effect, HubError};
use crate::presence::{Answer as PresenceAnswer, Presence, PresenceError, Query};
use crate::state::{self, Quota, StateError, StateOp, StateStore, StateValue};
use crate::types::{Caller, ConnectionId, Envelope, GroupChange, HubName, Target};

/// A hub whose code runs in the host process.
pub trait NativeHub: Send + Sync + 'static {
    /// Handles one event, asking `host` for what the Wasm imports would provide. A hub without
    /// streams answers [`Call::Stream`] and [`Call::Describe`] with
    /// [`HubError::MethodNotFound`].
    fn call(
        &self,
        caller: &Caller,
        call: Call<'_>,
        host: &mut NativeHost,
    ) -> Result<Answer, HubError>;
}

/// The imports of a native hub's call: effects are recorded exactly as the Wasm imports record
/// them, so the dispatcher carries them out the same way.
pub struct NativeHost {
    hub: HubName,
    connection: ConnectionId,
    state: Arc<dyn StateStore>,
    quota: Quota,
    /// Where presence queries go; none in a runtime without a router.
    presence: Option<Arc<dyn Presence>>,
    effects: Vec<Effect>,
    /// A misuse of an import. Like a trap, it ends what the call does: nothing recorded after it
    /// is carried out.
    fault: Option<String>,
}

impl NativeHost {
    /// `clients.send`. Arguments that are not a JSON array fail the call, as they trap a
    /// component.
    pub fn send(&mut self, target: Target, method: &str, arguments: &str) {
        if !super::host::is_json_array(arguments) {
            self.fault.get_or_insert_with(|| {
                format!("clients.send('{method}') was given arguments that are not a JSON array")
            });
            return;
        }
        self.record(Effect::Send(Envelope {
            hub: self.hub.clone(),
            target,
            method: method.to_owned(),
            arguments: arguments.to_owned(),
        }));
    }

    /// `groups.add`.
    pub fn add_to_group(&mut self, connection: &str, group: &str) {
        self.record(Effect::Group(GroupChange::Add {
            hub: self.hub.clone(),
            connection: connection.to_owned(),
            group: group.to_owned(),
        }));
    }

    /// `groups.remove`.
    pub fn remove_from_group(&mut self, connection: &str, group: &str) {
        self.record(Effect::Group(GroupChange::Remove {
            hub: self.hub.clone(),
            connection: connection.to_owned(),
            group: group.to_owned(),
        }));
    }

    fn record(&mut self, effect: Effect) {
        if self.fault.is_none() {
            self.effects.push(effect);
        }
    }

    /// One `state` operation. Hub code is synchronous, so this blocks the calling worker thread
    /// (tokio's `block_in_place`) until the store answers; a current-thread runtime cannot do
    /// that, and gets an `unavailable` error instead.
    pub fn state(&mut self, key: &str, op: StateOp) -> Result<StateValue, StateError> {
        state::check(key, &op)?;
        let handle = blocking_handle().map_err(StateError::Unavailable)?;
        tokio::task::block_in_place(|| {
            handle.block_on(self.state.run(&self.hub, key, op, self.quota))
        })
    }

    /// One `presence` query, blocking like [`NativeHost::state`].
    pub fn presence(&mut self, query: Query) -> Result<PresenceAnswer, PresenceError> {
        let presence = self
            .presence
            .clone()
            .ok_or_else(|| PresenceError::Unavailable("this runtime has no presence".into()))?;
        let handle = blocking_handle().map_err(PresenceError::Unavailable)?;
        tokio::task::block_in_place(|| handle.block_on(presence.read(&self.hub, query)))
    }

    /// `caller.abort`: the caller's connection closes after the call, without reconnecting.
    pub fn abort(&mut self) {
        self.record(Effect::Abort);
    }

    /// `log.write`, as the Wasm import writes it.
    pub fn log(&self, level: tracing::Level, message: &str) {
        super::host::hub_log(level, self.hub.as_str(), self.connection.as_str(), message);
    }
}

/// The runtime a native hub's call may block on while the host answers it.
fn blocking_handle() -> Result<tokio::runtime::Handle, String> {
    let handle =
        tokio::runtime::Handle::try_current().map_err(|_| "no tokio runtime".to_owned())?;
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return Err("native hubs reach the host's stores only on a multi-thread runtime".into());
    }
    Ok(handle)
}

/// Runs one call of a native hub; a panic fails the call (as a trap would) instead of the
/// connection's task.
pub(super) fn call(
    code: &dyn NativeHub,
    hub: &HubName,
    state: &Arc<dyn StateStore>,
    presence: Option<Arc<dyn Presence>>,
    quota: Quota,
    caller: &Caller,
    call: Call<'_>,
) -> CallOutcome {
    let mut host = NativeHost {
        hub: hub.clone(),
        connection: caller.connection_id.clone(),
        state: state.clone(),
        presence,
        quota,
        effects: Vec::new(),
        fault: None,
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        code.call(caller, call, &mut host)
    }));
    let result = match (result, host.fault) {
        (_, Some(fault)) => Err(CallError::Trap(fault)),
        (Ok(result), None) => result.map_err(CallError::Hub),
        (Err(panic), None) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(CallError::Trap(format!(
                "the native hub panicked: {message}"
            )))
        }
    };
    CallOutcome {
        result,
        effects: host.effects,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::memory::MemoryState;

    fn caller() -> Caller {
        Caller {
            hub: HubName::new("t"),
            connection_id: ConnectionId::new("c"),
            user_id: None,
            claims: Vec::new(),
            request: None,
        }
    }

    fn run(code: &dyn NativeHub) -> CallOutcome {
        let state: Arc<dyn StateStore> = Arc::new(MemoryState::new());
        let call = Call::Invoke {
            method: "m",
            arguments: "[]",
        };
        super::call(
            code,
            &HubName::new("t"),
            &state,
            None,
            Quota::default(),
            &caller(),
            call,
        )
    }

    struct BadSend;
    impl NativeHub for BadSend {
        fn call(&self, _: &Caller, _: Call<'_>, host: &mut NativeHost) -> Result<Answer, HubError> {
            host.send(Target::All, "first", "[1]");
            host.send(Target::All, "broken", "{}");
            host.send(Target::All, "after", "[2]");
            Ok(Answer::Value(None))
        }
    }

    #[test]
    fn a_misused_import_fails_the_call_and_drops_later_effects() {
        let outcome = run(&BadSend);
        assert!(
            matches!(&outcome.result, Err(CallError::Trap(t)) if t.contains("'broken'")),
            "{:?}",
            outcome.result
        );
        assert_eq!(outcome.effects.len(), 1, "only the send before the fault");
    }

    struct Panics;
    impl NativeHub for Panics {
        fn call(&self, _: &Caller, _: Call<'_>, _: &mut NativeHost) -> Result<Answer, HubError> {
            panic!("boom");
        }
    }

    #[test]
    fn a_panic_fails_the_call_with_its_message() {
        let outcome = run(&Panics);
        assert!(
            matches!(&outcome.result, Err(CallError::Trap(t)) if t.ends_with("panicked: boom")),
            "{:?}",
            outcome.result
        );
    }
}
