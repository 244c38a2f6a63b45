//! One loaded hub: its compiled component, its idle instances and the call path (or, for a
//! [`NativeHub`], the code to call directly).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use tokio::sync::Semaphore;
use wasmtime::{Store, UpdateDeadline};

use super::bindings::{v1, v2};
use super::host::HubState;
use super::native::{self, NativeHub};
use super::pool::{IdlePool, Slots};
use super::{
    Answer, Call, CallError, CallOutcome, HubLimits, MethodInfo, RuntimeConfig, UploadStep,
};
use crate::state::StateStore;
use crate::types::{Caller, HubName};

/// Largest stream cursor or upload state a hub may hand back: the host keeps one per open
/// stream.
const MAX_CURSOR_BYTES: usize = 64 << 10;

/// Instances are recycled after this many calls so slow leaks in a hub's memory are bounded.
const CALLS_PER_INSTANCE: u32 = 10_000;

/// A live instance of a hub component.
pub(super) struct Instance {
    store: Store<HubState>,
    bindings: Bindings,
    calls: u32,
}

/// An instance's exports, by the contract version its component was built against.
enum Bindings {
    V1(v1::Hub),
    V2(v2::Hub),
}

/// A component ready to instantiate, by contract version.
pub(super) enum Pre {
    V1(v1::HubPre<HubState>),
    V2(v2::HubPre<HubState>),
}

impl Pre {
    fn engine(&self) -> &wasmtime::Engine {
        match self {
            Self::V1(pre) => pre.engine(),
            Self::V2(pre) => pre.engine(),
        }
    }

    /// The contract version, as its WIT package names it.
    pub(super) fn version(&self) -> &'static str {
        match self {
            Self::V1(_) => "0.1",
            Self::V2(_) => "0.2",
        }
    }
}

/// A hub ready to be called.
pub struct LoadedHub {
    name: HubName,
    code: Code,
    limits: HubLimits,
    state: Arc<dyn StateStore>,
    /// Whether its code can read the request that opened a connection (it imports `caller`):
    /// connections keep the request only for such hubs.
    reads_request: bool,
    /// Whether its code can read presence (it imports `presence`): this server writes its share
    /// of a hub's presence only for such hubs.
    uses_presence: bool,
    /// What `describe` answered, asked once on first need; `None` for a hub that describes
    /// nothing (contract 0.1, a native hub) or failed to.
    methods: tokio::sync::OnceCell<Option<Arc<[MethodInfo]>>>,
}

enum Code {
    Wasm(Box<Wasm>),
    /// With where its presence queries go, once the server has a router.
    Native(
        Arc<dyn NativeHub>,
        Arc<std::sync::OnceLock<crate::router::Router>>,
    ),
}

struct Wasm {
    path: PathBuf,
    pre: Pre,
    config: Arc<RuntimeConfig>,
    /// Where client-result questions go, once the server has a router.
    router: Arc<std::sync::OnceLock<crate::router::Router>>,
    /// Instances kept for reuse, each holding one of the slots all hubs share.
    idle: Arc<IdlePool<Instance>>,
    slots: Arc<Slots<Instance>>,
    /// Bounds this hub's calls in progress (so its instances alive at once).
    permits: Semaphore,
}

/// Which of the host's optional imports a component uses (it imports only those its code calls).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Imports {
    pub(super) caller: bool,
    pub(super) presence: bool,
}

/// What every Wasm hub of a runtime shares.
pub(super) struct Shared {
    pub(super) config: Arc<RuntimeConfig>,
    pub(super) state: Arc<dyn StateStore>,
    pub(super) slots: Arc<Slots<Instance>>,
    pub(super) router: Arc<std::sync::OnceLock<crate::router::Router>>,
}

impl LoadedHub {
    pub(super) fn wasm(
        name: HubName,
        path: PathBuf,
        pre: Pre,
        limits: HubLimits,
        imports: Imports,
        shared: Shared,
    ) -> Self {
        let Shared {
            config,
            state,
            slots,
            router,
        } = shared;
        Self {
            name,
            code: Code::Wasm(Box::new(Wasm {
                path,
                pre,
                config,
                router,
                idle: slots.pool(),
                slots,
                permits: Semaphore::new(limits.instances as usize),
            })),
            limits,
            state,
            reads_request: imports.caller,
            uses_presence: imports.presence,
            methods: tokio::sync::OnceCell::new(),
        }
    }

    pub(super) fn native(
        name: HubName,
        code: Arc<dyn NativeHub>,
        limits: HubLimits,
        state: Arc<dyn StateStore>,
        router: Arc<std::sync::OnceLock<crate::router::Router>>,
    ) -> Self {
        Self {
            name,
            code: Code::Native(code, router),
            limits,
            state,
            // Native hubs (loadgen's) read no request; what they read of presence is not known.
            reads_request: false,
            uses_presence: true,
            methods: tokio::sync::OnceCell::new(),
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
            Code::Native(..) => None,
        }
    }

    /// Whether the hub's code can read a connection's opening request (`ctx.request()`).
    pub fn reads_request(&self) -> bool {
        self.reads_request
    }

    /// Whether the hub's code can read presence (`Presence::…`).
    pub fn uses_presence(&self) -> bool {
        self.uses_presence
    }

    /// The contract version the hub was built against (`native` for a native hub).
    pub fn contract(&self) -> &'static str {
        match &self.code {
            Code::Wasm(wasm) => wasm.pre.version(),
            Code::Native(..) => "native",
        }
    }

    /// The hub's methods as it describes them: asked once (a call like any other, with its
    /// deadline), then kept. `None` when the hub describes nothing (contract 0.1) or failed to.
    pub async fn methods(&self, caller: &Caller) -> Option<Arc<[MethodInfo]>> {
        self.methods
            .get_or_init(|| async {
                if matches!(&self.code, Code::Wasm(w) if matches!(w.pre, Pre::V1(_))) {
                    return None;
                }
                match self.call(caller, Call::Describe).await.result {
                    Ok(Answer::Methods(methods)) => Some(methods.into()),
                    Ok(_) | Err(CallError::Hub(super::HubError::MethodNotFound)) => None,
                    Err(e) => {
                        tracing::error!(hub = %self.name, "the hub failed to describe its methods: {e}");
                        None
                    }
                }
            })
            .await
            .clone()
    }

    /// Idle instances kept for reuse (for tests and diagnostics).
    pub fn idle_instances(&self) -> usize {
        match &self.code {
            Code::Wasm(wasm) => wasm.idle.len(),
            Code::Native(..) => 0,
        }
    }

    /// Runs one call and returns its result with the effects the hub recorded.
    pub async fn call(&self, caller: &Caller, call: Call<'_>) -> CallOutcome {
        let mut outcome = match &self.code {
            Code::Native(code, router) => native::call(
                code.as_ref(),
                &self.name,
                &self.state,
                router.get().map(|r| r.presence().clone()),
                self.limits.state,
                caller,
                call,
            ),
            Code::Wasm(wasm) => self.call_wasm(wasm, caller, call).await,
        };
        if let Some(e) = outcome.result.as_ref().ok().and_then(invalid_json) {
            outcome.result = Err(CallError::InvalidResult(format!(
                "The hub returned a result that is not one JSON value: {e}"
            )));
        }
        let state = match &outcome.result {
            Ok(Answer::Step(step)) => step.next.as_ref().map(|n| n.cursor.len()),
            Ok(Answer::Upload(UploadStep::Pending(state))) => Some(state.len()),
            _ => None,
        };
        if state.is_some_and(|len| len > MAX_CURSOR_BYTES) {
            outcome.result = Err(CallError::InvalidResult(format!(
                "The hub returned a stream state over {MAX_CURSOR_BYTES} bytes."
            )));
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
        live.store.data_mut().begin_call(
            caller.connection_id.as_str(),
            caller.request.clone(),
            Instant::now() + timeout,
        );
        live.store.set_epoch_deadline(1);
        // The epoch deadline stops a computing hub; this outer bound also covers any time spent
        // outside wasm (it cannot normally be reached).
        let outer = timeout + Duration::from_secs(1);
        let result = tokio::time::timeout(outer, run(live, caller, call)).await;

        let state = live.store.data_mut();
        let effects = std::mem::take(&mut state.effects);
        match result {
            Ok(Ok(result)) => {
                live.calls += 1;
                if wasm.config.reuse_instances && live.calls < CALLS_PER_INSTANCE {
                    wasm.idle.put(instance);
                }
                CallOutcome {
                    result: result.map_err(CallError::Hub),
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
            wasm.router.get().cloned(),
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
            .begin_call("", None, Instant::now() + self.limits.call_timeout);
        store.set_epoch_deadline(1);
        let bindings = match &wasm.pre {
            Pre::V1(pre) => Bindings::V1(pre.instantiate_async(&mut store).await?),
            Pre::V2(pre) => Bindings::V2(pre.instantiate_async(&mut store).await?),
        };
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

/// A result or stream item that is not one JSON value, which the contract forbids (spliced into
/// a frame, it would corrupt the caller's stream).
fn invalid_json(answer: &Answer) -> Option<serde_json::Error> {
    let check = |text: &str| serde_json::from_str::<&RawValue>(text).err();
    match answer {
        Answer::Value(Some(result)) => check(result),
        Answer::Step(step) => step.items.iter().find_map(|item| check(item)),
        Answer::Upload(UploadStep::Done(Some(result))) => check(result),
        Answer::Value(None) | Answer::Methods(_) | Answer::Upload(_) => None,
    }
}

/// The calls both contract versions answer alike, then the version's own (`$rest`).
macro_rules! calls {
    ($handler:ident, $store:ident, $ctx:ident, $call:expr, { $($rest:tt)* }) => {
        match $call {
            Call::Connected => $handler
                .call_on_connected($store, &$ctx)
                .await?
                .map(|()| Answer::Value(None)),
            Call::Disconnected { error } => $handler
                .call_on_disconnected($store, &$ctx, error)
                .await?
                .map(|()| Answer::Value(None)),
            Call::Invoke { method, arguments } => $handler
                .call_invoke($store, &$ctx, method, arguments)
                .await?
                .map(Answer::Value),
            $($rest)*
        }
    };
}

async fn run(
    instance: &mut Instance,
    caller: &Caller,
    call: Call<'_>,
) -> wasmtime::Result<Result<Answer, super::HubError>> {
    let store = &mut instance.store;
    match &instance.bindings {
        Bindings::V2(bindings) => {
            let handler = bindings.hubhost_hub_handler();
            let ctx = v2::Context::from(caller);
            let answer = calls!(handler, store, ctx, call, {
                Call::Stream {
                    method,
                    arguments,
                    cursor,
                } => handler
                    .call_stream_items(store, &ctx, method, arguments, cursor)
                    .await?
                    .map(|step| Answer::Step(step.into())),
                Call::Upload {
                    method,
                    arguments,
                    event,
                    state,
                } => handler
                    .call_upload(store, &ctx, method, arguments, &event.into(), state)
                    .await?
                    .map(|step| Answer::Upload(step.into())),
                Call::Describe => Ok(Answer::Methods(
                    handler
                        .call_describe(store)
                        .await?
                        .into_iter()
                        .map(Into::into)
                        .collect(),
                )),
            });
            Ok(answer.map_err(Into::into))
        }
        Bindings::V1(bindings) => {
            let handler = bindings.hubhost_hub_handler();
            let ctx = v1::Context::from(caller);
            let answer = calls!(handler, store, ctx, call, {
                // Contract 0.1 has no streams and describes nothing: the dispatcher does not ask.
                Call::Stream { .. } | Call::Upload { .. } => Err(v1::HubError::MethodNotFound),
                Call::Describe => Ok(Answer::Methods(Vec::new())),
            });
            Ok(answer.map_err(Into::into))
        }
    }
}
