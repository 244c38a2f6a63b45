//! The hub runtime: loads hub components and calls them in a sandbox.
//!
//! This is the only module that knows wasmtime, and its generated bindings stay inside it: what
//! it hands out are hubhost's own types. It narrows wasmtime to what hubhost needs: the
//! component model, a pooling allocator whose slots all hubs share ([`pool`]), epoch deadlines,
//! a memory cap per instance, and an empty WASI context (no files, environment or network to
//! speak of). A call returns the hub's answer and the [`Effect`]s it asked for; it never touches
//! sockets.

mod bindings;
mod engine;
mod host;
mod hub;
pub mod limits;
mod native;
mod pool;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use parking_lot::RwLock;
use wasmtime::Engine;
use wasmtime::component::{Component, HasSelf, Linker};

pub use hub::LoadedHub;
pub use limits::HubLimits;
pub use native::{NativeHost, NativeHub};

use crate::state::{Quota, StateStore};
use crate::types::{Envelope, GroupChange, HubName, hub_file_stem};
use host::HubState;

/// Limits and sizes of the runtime.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// How long one call may run before it is stopped.
    pub call_timeout: Duration,
    /// Linear memory cap of one instance, in bytes.
    pub memory_limit: usize,
    /// Instances of one hub alive at once; calls beyond wait for one.
    pub instances_per_hub: u32,
    /// Instance slots of the pooling allocator, over all hubs.
    pub total_instances: u32,
    /// Idle instances unused this long are dropped, giving their slot and memory back.
    pub idle_instance_timeout: Duration,
    /// Where compiled components are cached, so a restart does not recompile them.
    pub cache_dir: Option<PathBuf>,
    /// Bytes of sends and group changes one call may produce.
    pub max_effect_bytes: usize,
    /// Largest client message, unless a hub's settings say otherwise.
    pub max_message_size: usize,
    /// What each hub's shared state may hold, unless its settings say otherwise.
    pub state_quota: Quota,
    /// Reuse instances across calls (the fast path); `false` gives every call a fresh one.
    pub reuse_instances: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(5),
            memory_limit: 64 << 20,
            instances_per_hub: 64,
            total_instances: 1000,
            idle_instance_timeout: Duration::from_secs(60),
            cache_dir: None,
            max_effect_bytes: 16 << 20,
            max_message_size: 32 << 10,
            state_quota: Quota::default(),
            reuse_instances: true,
        }
    }
}

/// What the host asks of a hub.
#[derive(Debug, Clone, Copy)]
pub enum Call<'a> {
    Connected,
    Disconnected {
        error: Option<&'a str>,
    },
    Invoke {
        method: &'a str,
        arguments: &'a str,
    },
    /// One step of a streaming method: the first without a cursor, then with the cursor the
    /// previous step returned.
    Stream {
        method: &'a str,
        arguments: &'a str,
        cursor: Option<&'a str>,
    },
    /// An event of the stream a client sends to `method` (an upload), with the state the
    /// previous event returned (none for the first).
    Upload {
        method: &'a str,
        arguments: &'a str,
        event: UploadEvent<'a>,
        state: Option<&'a str>,
    },
    /// The hub's method list (contract 0.2).
    Describe,
}

/// What happened on a stream a client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadEvent<'a> {
    /// Its next item, one JSON value.
    Item(&'a str),
    /// Its end; with the client's error text if it failed.
    End(Option<&'a str>),
}

/// How a method taking an upload goes on after an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadStep {
    /// It waits for the next event, with this state.
    Pending(String),
    /// It is done, with its result (`None`: void).
    Done(Option<String>),
}

/// What a successful call answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A method's result (`None`: void), or the end of `on-connected`/`on-disconnected`.
    Value(Option<String>),
    /// One step of a stream.
    Step(StreamStep),
    /// What `describe` answered.
    Methods(Vec<MethodInfo>),
    /// How a method taking an upload goes on.
    Upload(UploadStep),
}

/// One step of a stream to the caller.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamStep {
    /// Items to send now, each one JSON value.
    pub items: Vec<String>,
    /// Where the stream goes on from; `None` completes it.
    pub next: Option<StreamNext>,
    /// The stream fails after these items.
    pub error: Option<HubError>,
}

/// Where a stream goes on from, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamNext {
    pub cursor: String,
    pub delay: Duration,
}

/// A hub method, as the hub describes it (contract 0.2; 0.1 hubs describe nothing).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MethodInfo {
    /// The name clients invoke.
    pub name: String,
    pub doc: Option<String>,
    pub params: Vec<ParamInfo>,
    /// The JSON Schema of the result or of each streamed item; `None` for a void method.
    pub returns: Option<String>,
    /// Called with `stream`, answered item by item.
    pub streaming: bool,
}

impl MethodInfo {
    /// How many streams the client sends it (its upload parameters).
    pub fn uploads(&self) -> usize {
        self.params.iter().filter(|p| p.upload).count()
    }
}

/// A hub method's argument.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ParamInfo {
    pub name: String,
    /// Its JSON Schema, as JSON text (of each item, for an upload).
    pub schema: String,
    /// A stream the client sends, not part of the arguments.
    pub upload: bool,
}

/// Why a hub refused or failed a call, as the hub said it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubError {
    /// No hub method has that name.
    MethodNotFound,
    /// The arguments do not fit the method; the text says how.
    InvalidArguments(String),
    /// The hub refused on purpose (SignalR's `HubException`): the text is for the caller.
    Rejected(String),
    /// The hub failed unexpectedly: for the log, and for callers only with detailed errors.
    Failed(Exception),
}

/// An unexpected failure, named as .NET names exception types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exception {
    pub type_name: String,
    pub message: String,
}

impl Exception {
    /// A failure without a type of its own (contract 0.1 hubs, traps): .NET's base `Exception`.
    pub fn plain(message: impl Into<String>) -> Self {
        Self {
            type_name: "Exception".into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Exception {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.type_name, self.message)
    }
}

/// Something a hub asked the host to do during a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Send(Envelope),
    Group(GroupChange),
    /// Close the caller's connection after the call, without letting it reconnect.
    Abort,
}

/// Why a call produced no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The hub answered with an error of its own.
    #[error("the hub returned an error: {0:?}")]
    Hub(HubError),
    /// The call ran past its deadline.
    #[error("The call exceeded its deadline of {0:?}.")]
    Deadline(Duration),
    /// The hub tried to grow its memory past the cap.
    #[error("The hub exceeded its memory limit of {} MiB.", .0 >> 20)]
    Memory(usize),
    /// The hub trapped (a panic, `unreachable`, an out-of-bounds access, misuse of an import).
    #[error("{0}")]
    Trap(String),
    /// The hub answered against the contract: a result or stream item that is not one JSON
    /// value (spliced into a frame, it would corrupt the caller's stream), an oversized stream
    /// state. The text says which.
    #[error("{0}")]
    InvalidResult(String),
    /// The hub could not be instantiated, or no instance was free in time.
    #[error("{0}")]
    Unavailable(String),
    /// A group change the hub asked for could not be carried out (no server acknowledged it).
    #[error("{0}")]
    Backplane(String),
}

/// A call's answer and the effects recorded before it ended, in order. Effects are kept even
/// when the call failed: like awaited sends in SignalR, what the hub sent before failing was sent.
#[derive(Debug)]
pub struct CallOutcome {
    pub result: Result<Answer, CallError>,
    pub effects: Vec<Effect>,
}

impl CallOutcome {
    fn failed(error: CallError) -> Self {
        Self {
            result: Err(error),
            effects: Vec::new(),
        }
    }
}

/// The loaded hubs and the engine that runs them.
pub struct HubRuntime {
    engine: Engine,
    linker: Linker<HubState>,
    config: Arc<RuntimeConfig>,
    slots: Arc<pool::Slots<hub::Instance>>,
    hubs: RwLock<HashMap<HubName, Arc<LoadedHub>>>,
    /// Hubs compiled into the binary: looked up before components, untouched by reloads.
    natives: RwLock<HashMap<HubName, Arc<LoadedHub>>>,
    state: Arc<dyn StateStore>,
    /// Where hubs' client-result questions go ([`HubRuntime::set_router`]).
    router: Arc<std::sync::OnceLock<crate::router::Router>>,
}

impl HubRuntime {
    /// A runtime whose hubs keep their shared state in `state`.
    pub fn new(config: RuntimeConfig, state: Arc<dyn StateStore>) -> anyhow::Result<Self> {
        anyhow::ensure!(
            config.instances_per_hub <= config.total_instances,
            "--instances-per-hub ({}) cannot exceed --total-instances ({}): one hub could never have that many",
            config.instances_per_hub,
            config.total_instances
        );
        let engine = engine::build(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)
            .context("cannot link WASI into the hub linker")?;
        bindings::v2::Hub::add_to_linker::<HubState, HasSelf<HubState>>(&mut linker, |s| s)
            .map_err(anyhow::Error::from)
            .context("cannot link the hub imports")?;
        bindings::v1::Hub::add_to_linker::<HubState, HasSelf<HubState>>(&mut linker, |s| s)
            .map_err(anyhow::Error::from)
            .context("cannot link the hub imports of contract 0.1")?;
        Ok(Self {
            engine,
            linker,
            slots: pool::Slots::new(config.total_instances, config.idle_instance_timeout),
            config: Arc::new(config),
            hubs: RwLock::new(HashMap::new()),
            natives: RwLock::new(HashMap::new()),
            state,
            router: Arc::new(std::sync::OnceLock::new()),
        })
    }

    /// Lets hubs ask clients for results (`results.ask`) through `router`. Without it (a
    /// runtime on its own, as `hubhost describe` makes), every question finds the client gone.
    pub fn set_router(&self, router: crate::router::Router) {
        let _ = self.router.set(router);
    }

    /// Compiles and links a component, checking that it implements the hub world; its limits
    /// come from the flags and an optional `NAME.toml` beside it.
    pub fn compile(&self, name: HubName, path: &Path) -> anyhow::Result<LoadedHub> {
        let limits = HubLimits::load(&self.config, &path.with_extension("toml"))?;
        let component = Component::from_file(&self.engine, path)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("{} is not a valid WebAssembly component", path.display()))?;
        // Connections keep their opening request only for hubs that can read it, and presence
        // is written only for hubs that read it: a component imports `caller` or `presence`
        // only if its code calls into it.
        let mut imports = hub::Imports::default();
        for (name, _) in component.component_type().imports(&self.engine) {
            imports.caller |= name.starts_with("hubhost:hub/caller@");
            imports.presence |= name.starts_with("hubhost:hub/presence@");
        }
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .with_context(|| {
                format!("{} needs imports hubhost does not provide", path.display())
            })?;
        // The newest contract first; a component built against 0.1 has only its exports.
        let pre = match bindings::v2::HubPre::new(pre.clone()) {
            Ok(pre) => hub::Pre::V2(pre),
            Err(newest) => bindings::v1::HubPre::new(pre)
                .map(hub::Pre::V1)
                .map_err(|_| anyhow::Error::from(newest))
                .with_context(|| {
                    format!(
                        "{} does not implement the hub world (hubhost:hub/handler@0.2.0 or @0.1.0)",
                        path.display()
                    )
                })?,
        };
        Ok(LoadedHub::wasm(
            name,
            path.to_owned(),
            pre,
            limits,
            imports,
            hub::Shared {
                config: self.config.clone(),
                state: self.state.clone(),
                slots: self.slots.clone(),
                router: self.router.clone(),
            },
        ))
    }

    /// Loads every `*.wasm` in `dir`; a file that fails is logged and skipped.
    pub fn load_dir(&self, dir: &Path) -> anyhow::Result<Vec<HubName>> {
        let entries = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read the hubs directory {}", dir.display()))?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
            .collect();
        paths.sort();
        let mut loaded = Vec::new();
        for path in paths {
            let Some(stem) = hub_file_stem(&path) else {
                continue;
            };
            if !HubName::is_valid(stem) {
                tracing::error!(file = %path.display(), "hub not loaded: its name must use only ASCII letters, digits, '-' and '_' (64 at most)");
                continue;
            }
            let name = HubName::new(stem);
            let started = std::time::Instant::now();
            match self.compile(name.clone(), &path) {
                Ok(hub) => {
                    tracing::info!(hub = %name, file = %path.display(), ms = started.elapsed().as_millis() as u64, "hub loaded");
                    self.install(hub);
                    loaded.push(name);
                }
                Err(e) => tracing::error!(file = %path.display(), "hub not loaded: {e:#}"),
            }
        }
        Ok(loaded)
    }

    /// Serves `hub` under its name from now on; returns the version it replaces, which stays
    /// alive for the calls still running on it.
    pub fn install(&self, hub: LoadedHub) -> Option<Arc<LoadedHub>> {
        self.hubs.write().insert(hub.name().clone(), Arc::new(hub))
    }

    /// Serves a hub compiled into the host binary under `name` (see [`NativeHub`]), with the
    /// global limits (only the message size, authentication and the state quota apply to
    /// native code). It takes precedence over a component of the same name, and reloads of the
    /// hubs directory leave it alone.
    pub fn install_native(&self, name: HubName, code: Arc<dyn NativeHub>) {
        let limits = HubLimits::from_config(&self.config);
        let hub = LoadedHub::native(
            name.clone(),
            code,
            limits,
            self.state.clone(),
            self.router.clone(),
        );
        self.natives.write().insert(name, Arc::new(hub));
    }

    /// Stops serving `name`; returns the version removed.
    pub fn remove(&self, name: &HubName) -> Option<Arc<LoadedHub>> {
        self.hubs.write().remove(name)
    }

    /// The hub serving `name`, if loaded. Names match whatever their case, as ASP.NET's routes
    /// do (`/Chat` reaches `chat.wasm`); an exact match wins over one that differs in case.
    pub fn hub(&self, name: &str) -> Option<Arc<LoadedHub>> {
        let find = |hubs: &HashMap<HubName, Arc<LoadedHub>>| {
            hubs.get(name).cloned().or_else(|| {
                hubs.iter()
                    .find(|(n, _)| n.as_str().eq_ignore_ascii_case(name))
                    .map(|(_, hub)| hub.clone())
            })
        };
        find(&self.natives.read()).or_else(|| find(&self.hubs.read()))
    }

    /// The names of the loaded hubs.
    pub fn hub_names(&self) -> Vec<HubName> {
        let mut names: Vec<_> = self.hubs.read().keys().cloned().collect();
        names.extend(self.natives.read().keys().cloned());
        names.sort();
        names.dedup();
        names
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Instance slots free right now, over all hubs.
    pub fn free_instance_slots(&self) -> usize {
        self.slots.available()
    }

    /// Idle instances kept for reuse, over the hubs being served.
    pub fn idle_instances(&self) -> usize {
        self.hubs.read().values().map(|h| h.idle_instances()).sum()
    }
}
