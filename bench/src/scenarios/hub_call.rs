//! `hub-call`: one invocation through the runtime, in process.

use std::time::Instant;

use hdrhistogram::Histogram;

use crate::Args;
use crate::client::table;

pub(crate) async fn hub_call(args: &Args) -> anyhow::Result<()> {
    use hubhost::runtime::Call;
    use loadgen::hub_call::{CALLS, Variant, caller, chat_hub};

    let calls = if args.quick {
        2_000
    } else {
        args.calls.max(20_000)
    };
    let caller = caller();
    let mut rows = Vec::new();
    for variant in Variant::ALL {
        let hub = chat_hub(&args.hubs, variant)?;
        for (method, arguments) in CALLS {
            let call = Call::Invoke { method, arguments };
            for _ in 0..200 {
                hub.call(&caller, call)
                    .await
                    .result
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            let mut h = Histogram::<u64>::new_with_bounds(10, 10_000_000_000, 3)?;
            let n = if variant == Variant::WasmFresh {
                calls / 4
            } else {
                calls
            };
            for _ in 0..n {
                let t = Instant::now();
                let outcome = hub.call(&caller, call).await;
                h.record(t.elapsed().as_nanos() as u64)?;
                outcome.result.map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            let us = |q: f64| format!("{:.2} µs", h.value_at_quantile(q) as f64 / 1e3);
            rows.push((
                format!("{method}, {}", variant.label()),
                format!("p50 {}, p99 {} ({n} calls)", us(0.5), us(0.99)),
            ));
        }
    }
    let rows: Vec<(&str, String)> = rows.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    table(
        "hub-call: one invocation of the chat hub, in process",
        &rows,
    );
    Ok(())
}
