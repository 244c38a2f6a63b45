//! Hot reload: watches the hubs directory and applies what changes there, without a restart.
//!
//! - A new `NAME.wasm` is compiled and served at `/NAME`.
//! - A replaced one takes over for new calls; calls in flight finish on the old version, which
//!   lives as long as they hold it. Connections stay open.
//! - A removed one is unloaded: its clients get a SignalR Close and new ones get 404.
//! - A file that is not a valid hub is rejected with one log line naming it and the reason; the
//!   previous version, if any, keeps serving.
//!
//! Events are debounced: a path is processed once it has been quiet for [`QUIET`]. Deploy by
//! writing elsewhere (or to a hidden or non-`.wasm` name in the same directory) and renaming onto
//! `NAME.wasm`: a rename is atomic, so the host never sees a half-written file. Files whose names
//! start with `.` or do not end in `.wasm` are ignored.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::registry::LocalRegistry;
use crate::runtime::HubRuntime;
use crate::types::{HubName, hub_file_stem};

/// How long a path must be quiet before it is (re)loaded.
pub const QUIET: Duration = Duration::from_millis(250);

/// Starts watching `dir`; changes are applied until `stop` is cancelled.
pub fn watch(
    dir: PathBuf,
    runtime: Arc<HubRuntime>,
    registry: Arc<LocalRegistry>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::unbounded_channel::<PathBuf>();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            // Reading a hub (a backup, a copy, or this host compiling it) changes nothing,
            // and reloading on it would reload forever: only writes, creations, renames and
            // removals count.
            Ok(event) if changes_files(&event.kind) => {
                for path in event.paths {
                    let _ = tx.send(path);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("watching the hubs directory: {e}"),
        })
        .context("cannot watch the hubs directory")?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("cannot watch {}", dir.display()))?;
    tokio::spawn(async move {
        // The watcher stops when dropped: keep it in the task.
        let _watcher = watcher;
        debounce(rx, runtime, registry, stop).await;
    });
    Ok(())
}

/// Whether an event can change what a hub file holds.
fn changes_files(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

async fn debounce(
    mut rx: mpsc::UnboundedReceiver<PathBuf>,
    runtime: Arc<HubRuntime>,
    registry: Arc<LocalRegistry>,
    stop: CancellationToken,
) {
    let mut pending: HashMap<PathBuf, Instant> = HashMap::new();
    loop {
        let next_due = pending.values().min().map(|t| *t + QUIET);
        tokio::select! {
            path = rx.recv() => match path {
                Some(path) => {
                    // A hub's settings file changes the hub: reload its component.
                    let path = if path.extension().is_some_and(|e| e == "toml") {
                        path.with_extension("wasm")
                    } else {
                        path
                    };
                    if hub_file_stem(&path).is_some() {
                        pending.insert(path, Instant::now());
                    }
                }
                None => return,
            },
            () = async { tokio::time::sleep_until(next_due.unwrap_or_else(Instant::now)).await }, if next_due.is_some() => {
                let now = Instant::now();
                let due: Vec<PathBuf> = pending
                    .iter()
                    .filter(|(_, t)| now.duration_since(**t) >= QUIET)
                    .map(|(p, _)| p.clone())
                    .collect();
                for path in due {
                    pending.remove(&path);
                    apply(&path, &runtime, &registry).await;
                }
            }
            () = stop.cancelled() => return,
        }
    }
}

/// Loads, replaces or removes the hub of one path, according to what is on disk now.
async fn apply(path: &Path, runtime: &Arc<HubRuntime>, registry: &LocalRegistry) {
    let Some(stem) = hub_file_stem(path) else {
        return;
    };
    if !HubName::is_valid(stem) {
        tracing::error!(file = %path.display(), "hub not loaded: its name must use only ASCII letters, digits, '-' and '_' (64 at most)");
        return;
    }
    let name = HubName::new(stem);
    if !path.is_file() {
        // A hub compiled into the binary keeps serving the name: its clients stay.
        if runtime.remove(&name).is_some() && runtime.hub(name.as_str()).is_none() {
            let text = format!("The hub '{name}' was removed from the server.");
            let told = registry.close_hub(&name, &text);
            tracing::info!(hub = %name, file = %path.display(), connections = told, "hub removed");
        }
        return;
    }
    let started = std::time::Instant::now();
    let compiled = {
        let runtime = runtime.clone();
        let (name, path) = (name.clone(), path.to_owned());
        tokio::task::spawn_blocking(move || runtime.compile(name, &path)).await
    };
    match compiled {
        Ok(Ok(hub)) => {
            let replaced = runtime.install(hub).is_some();
            registry.presence_reloaded(&name);
            tracing::info!(
                hub = %name,
                file = %path.display(),
                ms = started.elapsed().as_millis() as u64,
                "{}",
                if replaced { "hub replaced" } else { "hub loaded" }
            );
        }
        Ok(Err(e)) => {
            let previous = if runtime.hub(name.as_str()).is_some() {
                "; the previous version keeps serving"
            } else {
                ""
            };
            tracing::error!(hub = %name, file = %path.display(), "hub not loaded: {e:#}{previous}");
        }
        Err(e) => tracing::error!(file = %path.display(), "hub compilation failed: {e}"),
    }
}
