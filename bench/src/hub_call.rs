//! The setup shared by the two measurements of one hub call: `loadgen --scenarios hub-call`
//! (HDR percentiles) and `cargo bench -p loadgen` (criterion).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use hubhost::runtime::{HubRuntime, LoadedHub, RuntimeConfig};
use hubhost::state::memory::MemoryState;
use hubhost::types::{Caller, ConnectionId, HubName};

/// How the chat hub runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// As Wasm, reusing instances across calls (the default).
    WasmReused,
    /// As Wasm, with a fresh instance for every call.
    WasmFresh,
    /// The same crate compiled into the process.
    Native,
}

impl Variant {
    pub const ALL: [Variant; 3] = [Variant::WasmReused, Variant::WasmFresh, Variant::Native];

    /// A row label for tables.
    pub fn label(self) -> &'static str {
        match self {
            Variant::WasmReused => "reused instance",
            Variant::WasmFresh => "fresh instance",
            Variant::Native => "native (no sandbox)",
        }
    }

    /// A benchmark id.
    pub fn id(self) -> &'static str {
        match self {
            Variant::WasmReused => "wasm_reused",
            Variant::WasmFresh => "wasm_fresh",
            Variant::Native => "native",
        }
    }
}

/// The measured invocations: `(method, arguments)`. `Echo` returns its argument; `Send` is the
/// chat hub's broadcast (one recorded send).
pub const CALLS: [(&str, &str); 2] = [("Echo", r#"["ping"]"#), ("Send", r#"["bench","hello"]"#)];

/// The chat hub as `variant` runs it, in a runtime of its own; the Wasm variants load
/// `chat.wasm` from `hubs`.
pub fn chat_hub(hubs: &Path, variant: Variant) -> anyhow::Result<Arc<LoadedHub>> {
    let config = RuntimeConfig {
        reuse_instances: variant != Variant::WasmFresh,
        ..RuntimeConfig::default()
    };
    let runtime = HubRuntime::new(config, Arc::new(MemoryState::new()))?;
    if variant == Variant::Native {
        let (name, code) = crate::native::chat();
        runtime.install_native(name, code);
    } else {
        let path = hubs.join("chat.wasm");
        let hub = runtime
            .compile(HubName::new("chat"), &path)
            .with_context(|| format!("{} (run `cargo xtask hubs` first)", path.display()))?;
        runtime.install(hub);
    }
    runtime.hub("chat").context("chat hub not installed")
}

/// The caller of every measured call.
pub fn caller() -> Caller {
    Caller {
        hub: HubName::new("chat"),
        connection_id: ConnectionId::new("bench"),
        user_id: None,
        claims: Vec::new(),
        request: None,
    }
}
