//! One hub invocation through hubhost's runtime, with criterion: the chat hub as Wasm with a
//! reused instance and with a fresh instance per call, and the same hub crate compiled natively.
//!
//! Needs `cargo xtask hubs` first (it reads `target/hubs/chat.wasm`). Run with
//! `cargo bench -p loadgen`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use hubhost::runtime::Call;
use loadgen::hub_call::{CALLS, Variant, caller, chat_hub};

fn hub_call(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let hubs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/hubs");
    let caller = caller();
    let mut group = c.benchmark_group("hub_call");
    for variant in Variant::ALL {
        let hub = chat_hub(&hubs, variant).expect("the chat hub");
        for (method, arguments) in CALLS {
            let call = Call::Invoke { method, arguments };
            group.bench_function(format!("{}/{method}", variant.id()), |b| {
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
