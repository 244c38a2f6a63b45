//! One loaded hub: its compiled component, its idle instances and the call path (or, for a
//! [`NativeHub`], the code to call directly).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use tokio::sync::Semaphore;
use wasmtime::{Store, UpdateDeadline};

use super::bindings::{self, HubPre};
use super::host::HubState;
use super::native::{self, NativeHub};
use super::pool::{IdlePool, Slots};
use super::{Call, CallError, CallOutcome, HubLimits, RuntimeConfig};
use crate::state::StateStore;
use crate::types::{Caller, HubName};

/// Instances are recycled after this many calls so slow leaks in a hub's memory are bounded.
const CALLS_PER_INSTANCE: u32 = 10_000;

/// A live instance of a hub component.
pub(super) struct Instance {
    store: Store<HubState>,
    bindings: bindings::Hub,
    calls: u32,
}

/// A hub ready to be called.
pub struct LoadedHub {
    name: HubName,
    code: Code,
    limits: HubLimits,
    state: Arc<dyn StateStore>,
}

enum Code {
    Wasm(Wasm),
    Native(Arc<dyn NativeHub>),
}

struct Wasm {
    path: PathBuf,
    pre: HubPre<HubState>,
    config: Arc<RuntimeConfig>,
    /// Instances kept for reuse, each holding one of the slots all hubs share.
    idle: Arc<IdlePool<Instance>>,
    slots: Arc<Slots<Instance>>,
    /// Bounds this hub's calls in progress (so its instances alive at once).
    permits: Semaphore,
}

impl LoadedHub {
    pub(super) fn wasm(
        name: HubName,
        path: PathBuf,
        pre: HubPre<HubState>,
        limits: HubLimits,
        config: Arc<RuntimeConfig>,
        state: Arc<dyn StateStore>,
        slots: Arc<Slots<Instance>>,
    ) -> Self {
        Self {
            name,
            code: Code::Wasm(Wasm {
                path,
                pre,
                config,
                idle: slots.pool(),
                slots,
                permits: Semaphore::new(limits.instances as usize),
            }),
            limits,
            state,
        }
    }

    pub(super) fn native(
        name: HubName,
        code: Arc<dyn NativeHub>,
        limits: HubLimits,
        state: Arc<dyn StateStore>,
    ) -> Self {
        Self {
            name,
            code: Code::Native(code),
            limits,
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
            Code::Wasm(wasm) => Some(&wasm.path),
            Code::Native(_) => None,
        }
    }

    /// Idle instances kept for reuse (for tests and diagnostics).
    pub fn idle_instances(&self) -> usize {
        match &self.code {
            Code::Wasm(wasm) => wasm.idle.len(),
            Code::Native(_) => 0,
        }
    }

    /// Runs one call and returns its result with the effects the hub recorded.
    pub async fn call(&self, caller: &Caller, call: Call<'_>) -> CallOutcome {
        let mut outcome = match &self.code {
            Code::Native(code) => native::call(
                code.as_ref(),
                &self.name,
                &self.state,
                self.limits.state,
                caller,
                call,
            ),
            Code::Wasm(wasm) => self.call_wasm(wasm, caller, call).await,
        };
        if let Ok(Some(result)) = &outcome.result
            && let Err(e) = serde_json::from_str::<&RawValue>(result)
        {
            outcome.result = Err(CallError::InvalidResult(e.to_string()));
        }
        outcome
    }

    async fn call_wasm(&self, wasm: &Wasm, caller: &Caller, call: Call<'_>) -> CallOutcome {
        let timeout = self.limits.call_timeout;
        // Waiting for an instance counts against the call's deadline.
        let deadline = tokio::time::Instant::now() + timeout;
        let Ok(Ok(_permit)) = tokio::time::timeout_at(deadline, wasm.permits.acquire()).await
        else {
            return CallOutcome::failed(CallError::Unavailable(format!(
                "all {} instances of the hub are busy",
                self.limits.instances
            )));
        };
        let mut instance = match wasm.idle.take() {
            Some(instance) => instance,
            None => {
                let Some(slot) = wasm.slots.acquire(deadline).await else {
                    return CallOutcome::failed(CallError::Unavailable(format!(
                        "all {} instance slots of the host are busy (--total-instances)",
                        wasm.slots.total()
                    )));
                };
                match self.instantiate(wasm).await {
                    Ok(instance) => slot.hold(instance),
                    Err(e) => {
                        return CallOutcome::failed(CallError::Unavailable(format!(
                            "cannot instantiate the hub: {e:#}"
                        )));
                    }
                }
            }
        };

        let live = &mut instance.value;
        live.store
            .data_mut()
            .begin_call(caller.connection_id.as_str(), Instant::now() + timeout);
        live.store.set_epoch_deadline(1);
        let ctx = bindings::Context::from(caller);
        // The epoch deadline stops a computing hub; this outer bound also covers any time spent
        // outside wasm (it cannot normally be reached).
        let outer = timeout + Duration::from_secs(1);
        let result = tokio::time::timeout(outer, run(live, &ctx, call)).await;

        let state = live.store.data_mut();
        let effects = std::mem::take(&mut state.effects);
        match result {
            Ok(Ok(result)) => {
                live.calls += 1;
                if wasm.config.reuse_instances && live.calls < CALLS_PER_INSTANCE {
                    wasm.idle.put(instance);
                }
                CallOutcome {
                    result: result.map_err(|e| CallError::Hub(e.into())),
                    effects,
                }
            }
            Ok(Err(trap)) => {
                // A trap leaves the instance in an unknown state: drop it (and its slot).
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

    async fn instantiate(&self, wasm: &Wasm) -> wasmtime::Result<Instance> {
        let engine = wasm.pre.engine();
        let state = HubState::new(
            self.name.clone(),
            self.limits.memory_limit,
            wasm.config.max_effect_bytes,
            self.state.clone(),
            self.limits.state,
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
        let bindings = wasm.pre.instantiate_async(&mut store).await?;
        Ok(Instance {
            store,
            bindings,
            calls: 0,
        })
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
