//! One hub invocation through hubhost's runtime, with criterion: the chat hub as Wasm with a
//! reused instance and with a fresh instance per call, and the same hub crate compiled natively.
//!
//! Needs `cargo xtask hubs` first (it reads `target/hubs/chat.wasm`). Run with
//! `cargo bench -p loadgen`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use hubhost::router::{ConnectionId, HubName};
use hubhost::runtime::{Call, Caller, HubRuntime, LoadedHub, RuntimeConfig};
use hubhost::state::memory::MemoryState;

fn chat_wasm() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/hubs/chat.wasm")
}

fn hub(reuse: bool, native: bool) -> Arc<LoadedHub> {
    let config = RuntimeConfig {
        reuse_instances: reuse,
        ..RuntimeConfig::default()
    };
    let runtime = HubRuntime::new(config, Arc::new(MemoryState::new())).expect("runtime");
    if native {
        let (name, code) = loadgen::native::chat();
        runtime.install_native(name, code);
    } else {
        let compiled = runtime
            .compile(HubName::new("chat"), &chat_wasm())
            .expect("target/hubs/chat.wasm (run `cargo xtask hubs` first)");
        runtime.install(compiled);
    }
    runtime.hub("chat").expect("installed")
}

fn hub_call(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let caller = Caller {
        hub: HubName::new("chat"),
        connection_id: ConnectionId::new("bench"),
        user_id: None,
        claims: Vec::new(),
    };
    let mut group = c.benchmark_group("hub_call");
    for (label, reuse, native) in [
        ("wasm_reused", true, false),
        ("wasm_fresh", false, false),
        ("native", true, true),
    ] {
        let hub = hub(reuse, native);
        for (method, arguments) in [("Echo", r#"["ping"]"#), ("Send", r#"["bench","hello"]"#)] {
            let call = Call::Invoke { method, arguments };
            group.bench_function(format!("{label}/{method}"), |b| {
                // Time the calls inside one block_on, so the executor's entry is not measured.
                b.iter_custom(|iterations| {
                    rt.block_on(async {
                        let started = Instant::now();
                        for _ in 0..iterations {
                            let outcome = hub.call(&caller, call).await;
                            assert!(outcome.result.is_ok(), "{:?}", outcome.result);
                            std::hint::black_box(outcome);
                        }
                        started.elapsed()
                    })
                });
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = hub_call
}
criterion_main!(benches);
