//! One loaded hub: its compiled component, a pool of idle instances, and the call path (or,
//! for a [`NativeHub`], the code to call directly).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Semaphore;
use wasmtime::{Store, UpdateDeadline};

use super::bindings::{self, HubPre};
use super::host::HubState;
use super::native::{self, NativeHub};
use super::{CallError, CallOutcome, Caller, HubLimits, RuntimeConfig};
use crate::router::HubName;
use crate::state::StateStore;

/// Instances are recycled after this many calls so slow leaks in a hub's memory are bounded.
const CALLS_PER_INSTANCE: u32 = 10_000;

/// What the host asks of a hub.
#[derive(Debug, Clone, Copy)]
pub enum Call<'a> {
    Connected,
    Disconnected { error: Option<&'a str> },
    Invoke { method: &'a str, arguments: &'a str },
}

struct Instance {
    store: Store<HubState>,
    bindings: bindings::Hub,
    calls: u32,
}

/// A hub ready to be called.
pub struct LoadedHub {
    name: HubName,
    code: Code,
    limits: HubLimits,
    config: Arc<RuntimeConfig>,
    state: Arc<dyn StateStore>,
}

enum Code {
    Wasm {
        path: PathBuf,
        pre: HubPre<HubState>,
        idle: Mutex<Vec<Instance>>,
        /// Bounds the instances of this hub alive at once (busy and idle).
        permits: Semaphore,
    },
    Native(Arc<dyn NativeHub>),
}

impl LoadedHub {
    pub(super) fn new(
        name: HubName,
        path: PathBuf,
        pre: HubPre<HubState>,
        limits: HubLimits,
        config: Arc<RuntimeConfig>,
        state: Arc<dyn StateStore>,
    ) -> Self {
        Self {
            name,
            code: Code::Wasm {
                path,
                pre,
                idle: Mutex::new(Vec::new()),
                permits: Semaphore::new(limits.instances as usize),
            },
            limits,
            config,
            state,
        }
    }

    pub(super) fn native(
        name: HubName,
        code: Arc<dyn NativeHub>,
        limits: HubLimits,
        config: Arc<RuntimeConfig>,
        state: Arc<dyn StateStore>,
    ) -> Self {
        Self {
            name,
            code: Code::Native(code),
            limits,
            config,
            state,
        }
    }

    /// The limits this hub runs with.
    pub fn limits(&self) -> &HubLimits {
        &self.limits
    }

    pub fn name(&self) -> &HubName {
        &self.name
    }

    /// The component file, for a Wasm hub.
    pub fn path(&self) -> Option<&std::path::Path> {
        match &self.code {
            Code::Wasm { path, .. } => Some(path),
            Code::Native(_) => None,
        }
    }

    async fn instantiate(&self, pre: &HubPre<HubState>) -> wasmtime::Result<Instance> {
        let engine = pre.engine();
        let state = HubState::new(
            self.name.clone(),
            self.limits.memory_limit,
            self.config.max_effect_bytes,
            self.state.clone(),
        );
        let mut store = Store::new(engine, state);
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_callback(|mut ctx| {
            let state = ctx.data_mut();
            if Instant::now() >= state.deadline {
                state.faults.deadline_hit = true;
                return Ok(UpdateDeadline::Interrupt);
            }
            // Let other tasks run between ticks of a long computation.
            Ok(UpdateDeadline::Yield(1))
        });
        // Instantiation runs the component's start functions: bound it too.
        store
            .data_mut()
            .begin_call("", Instant::now() + self.limits.call_timeout);
        store.set_epoch_deadline(1);
        let bindings = pre.instantiate_async(&mut store).await?;
        Ok(Instance {
            store,
            bindings,
            calls: 0,
        })
    }

    /// Runs one call and returns its result with the effects the hub recorded.
    pub async fn call(&self, caller: &Caller, call: Call<'_>) -> CallOutcome {
        let (pre, idle, permits) = match &self.code {
            Code::Wasm {
                pre, idle, permits, ..
            } => (pre, idle, permits),
            Code::Native(code) => {
                return native::call(code.as_ref(), &self.name, &self.state, caller, call);
            }
        };
        let Ok(_permit) = permits.acquire().await else {
            return CallOutcome::failed(CallError::Unavailable("the hub is shutting down".into()));
        };
        let reused = idle.lock().pop();
        let mut instance = match reused {
            Some(instance) => instance,
            None => match self.instantiate(pre).await {
                Ok(instance) => instance,
                Err(e) => {
                    return CallOutcome::failed(CallError::Unavailable(format!(
                        "cannot instantiate the hub: {e:#}"
                    )));
                }
            },
        };

        let timeout = self.limits.call_timeout;
        instance
            .store
            .data_mut()
            .begin_call(caller.connection_id.as_str(), Instant::now() + timeout);
        instance.store.set_epoch_deadline(1);
        let ctx = caller.to_wit();
        // The epoch deadline stops a computing hub; this outer bound also covers any time spent
        // outside wasm (it cannot normally be reached).
        let outer = timeout + Duration::from_secs(1);
        let result = tokio::time::timeout(outer, run(&mut instance, &ctx, call)).await;

        let state = instance.store.data_mut();
        let effects = std::mem::take(&mut state.effects);
        match result {
            Ok(Ok(result)) => {
                instance.calls += 1;
                if self.config.reuse_instances && instance.calls < CALLS_PER_INSTANCE {
                    idle.lock().push(instance);
                }
                CallOutcome {
                    result: result.map_err(CallError::Hub),
                    effects,
                }
            }
            Ok(Err(trap)) => {
                // A trap leaves the instance in an unknown state: drop it.
                let error = if state.faults.deadline_hit {
                    CallError::Deadline(timeout)
                } else if state.limiter.memory_denied {
                    CallError::Memory(self.limits.memory_limit)
                } else {
                    CallError::Trap(describe_trap(&trap))
                };
                CallOutcome {
                    result: Err(error),
                    effects,
                }
            }
            Err(_) => CallOutcome {
                result: Err(CallError::Deadline(timeout)),
                effects,
            },
        }
    }
}

/// The trap's cause first, then its contexts (the Wasm backtrace with function names when the
/// component kept its name section). The host's own stack is left out: it says nothing about
/// the hub.
fn describe_trap(trap: &wasmtime::Error) -> String {
    let root = trap.root_cause().to_string();
    let mut text = root.clone();
    for context in trap.chain().map(|c| c.to_string()) {
        if context != root {
            text.push('\n');
            text.push_str(&context);
        }
    }
    text
}

async fn run(
    instance: &mut Instance,
    ctx: &bindings::Context,
    call: Call<'_>,
) -> wasmtime::Result<Result<Option<String>, bindings::HubError>> {
    let handler = instance.bindings.hubhost_hub_handler();
    let store = &mut instance.store;
    match call {
        Call::Connected => Ok(handler.call_on_connected(store, ctx).await?.map(|()| None)),
        Call::Disconnected { error } => Ok(handler
            .call_on_disconnected(store, ctx, error)
            .await?
            .map(|()| None)),
        Call::Invoke { method, arguments } => {
            handler.call_invoke(store, ctx, method, arguments).await
        }
    }
}
