//! The wasmtime engine as hubhost uses it: component model, pooling allocator, epoch
//! interruption, and nothing else.

use std::time::Duration;

use anyhow::Context as _;
use wasmtime::{
    Cache, CacheConfig, Config, Enabled, Engine, InstanceAllocationStrategy, OptLevel,
    PoolingAllocationConfig,
};

use super::RuntimeConfig;

/// How often the epoch advances: the granularity of call deadlines and of the yields that let
/// other tasks run while a hub computes.
pub(super) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Core instances a component needs: a Rust hub has its module, the WASI adapter and a few
/// shims; the pool reserves this many per component instance.
const CORE_INSTANCES_PER_COMPONENT: u32 = 8;
const MEMORIES_PER_COMPONENT: u32 = 2;
const TABLES_PER_COMPONENT: u32 = 4;

/// Builds the engine and starts the thread that advances its epoch.
pub(super) fn build(config: &RuntimeConfig) -> anyhow::Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    let slots = config.total_instances;
    pool.total_component_instances(slots)
        .total_core_instances(slots.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
        .total_memories(slots.saturating_mul(MEMORIES_PER_COMPONENT))
        .total_tables(slots.saturating_mul(TABLES_PER_COMPONENT))
        .total_stacks(slots);
    if PoolingAllocationConfig::is_pagemap_scan_available() {
        // A slot given back is reset in place, rewriting only the pages the instance touched
        // (Linux 6.7's PAGEMAP_SCAN finds them), instead of being handed back to the kernel and
        // faulted in again by the next instance: a fresh instance then costs about half as
        // much (no page faults, no TLB shootdowns). The price: a slot that was used keeps the
        // pages its instances touched resident, up to 2 MiB (a small hub touches far less).
        // Without the ioctl, wasmtime would memset the whole span, slower than its default.
        pool.pagemap_scan(Enabled::Yes)
            .linear_memory_keep_resident(2 << 20)
            .table_keep_resident(64 << 10);
    }
    // Memory caps are per hub (the store limiter enforces them), so the pool's own bound stays
    // at its default, the size of a 32-bit memory.

    let mut wasm = Config::new();
    wasm.wasm_component_model(true)
        // Concurrency support costs on every call; hubs use no WIT `async func`.
        .concurrency_support(false)
        .epoch_interruption(true)
        .cranelift_opt_level(OptLevel::Speed)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    if let Some(dir) = &config.cache_dir {
        // Wasmtime's own cache: keyed by the component's bytes and the engine's settings, and
        // loaded without recompiling on the next start.
        let mut cache = CacheConfig::new();
        cache.with_directory(dir);
        let cache = Cache::new(cache)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("cannot use {} as the compilation cache", dir.display()))?;
        wasm.cache(Some(cache));
    }
    let engine = Engine::new(&wasm)
        .map_err(anyhow::Error::from)
        .context("cannot configure the WebAssembly engine")?;

    let weak = engine.weak();
    std::thread::Builder::new()
        .name("hubhost-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .context("cannot start the epoch thread")?;
    Ok(engine)
}
