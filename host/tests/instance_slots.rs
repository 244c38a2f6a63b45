//! Hub instances share the pool's slots fairly: many hubs under bursts never run out for good,
//! idle instances are trimmed, and a hub asking for more instances than the host has is refused.
//!
//! Uses the chat hub built by `cargo xtask hubs` (`target/hubs/chat.wasm`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hubhost::runtime::{Answer, Call, HubRuntime, LoadedHub, RuntimeConfig};
use hubhost::state::memory::MemoryState;
use hubhost::types::{Caller, ConnectionId, HubName};

fn chat_wasm() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/hubs/chat.wasm");
    assert!(
        path.exists(),
        "{} is missing: build the hubs first (cargo xtask hubs; cargo xtask test does it)",
        path.display()
    );
    path
}

fn caller(hub: &HubName) -> Caller {
    Caller {
        hub: hub.clone(),
        connection_id: ConnectionId::new("c"),
        user_id: None,
        claims: Vec::new(),
        request: None,
    }
}

/// A hubs directory with the chat hub under `names`, with `settings` as every `NAME.toml`.
fn hubs_dir(tag: &str, names: &[String], settings: Option<&str>) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hubhost-slots-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    for name in names {
        std::fs::copy(chat_wasm(), dir.join(format!("{name}.wasm"))).expect("copy");
        if let Some(text) = settings {
            std::fs::write(dir.join(format!("{name}.toml")), text).expect("settings");
        }
    }
    dir
}

async fn echo(hub: Arc<LoadedHub>, n: usize) -> Result<Answer, String> {
    let arguments = format!("[\"{n}\"]");
    let call = Call::Invoke {
        method: "Echo",
        arguments: &arguments,
    };
    hub.call(&caller(hub.name()), call)
        .await
        .result
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_hubs_under_bursts_share_the_slots() {
    const HUBS: usize = 20;
    const PER_HUB: u32 = 4;
    let names: Vec<String> = (0..HUBS).map(|i| format!("chat{i}")).collect();
    let dir = hubs_dir("bursts", &names, None);
    // 20 hubs of 4 instances would need 80 slots; the host has 16.
    let runtime = HubRuntime::new(
        RuntimeConfig {
            total_instances: 16,
            instances_per_hub: PER_HUB,
            call_timeout: Duration::from_secs(10),
            ..RuntimeConfig::default()
        },
        Arc::new(MemoryState::new()),
    )
    .expect("runtime");
    assert_eq!(runtime.load_dir(&dir).expect("loaded").len(), HUBS);
    for round in 0..3 {
        let mut calls = Vec::new();
        for name in &names {
            let hub = runtime.hub(name).expect("hub");
            for n in 0..PER_HUB as usize {
                calls.push(tokio::spawn(echo(hub.clone(), n)));
            }
        }
        for (i, call) in calls.into_iter().enumerate() {
            let answer = call.await.expect("joined");
            let n = i % PER_HUB as usize;
            assert_eq!(
                answer,
                Ok(Answer::Value(Some(format!("\"{n}\"")))),
                "round {round}, call {i}"
            );
        }
        // Idle instances hold every slot the bursts used, and more than a few hubs' worth.
        assert!(runtime.free_instance_slots() <= 16);
    }
    let idle: usize = names
        .iter()
        .map(|n| runtime.hub(n).expect("hub").idle_instances())
        .sum();
    assert!(idle <= 16, "never more idle instances than slots ({idle})");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_instances_are_trimmed() {
    let names = vec!["chat".to_owned()];
    let dir = hubs_dir("trim", &names, None);
    let runtime = HubRuntime::new(
        RuntimeConfig {
            total_instances: 8,
            instances_per_hub: 4,
            idle_instance_timeout: Duration::from_millis(400),
            ..RuntimeConfig::default()
        },
        Arc::new(MemoryState::new()),
    )
    .expect("runtime");
    runtime.load_dir(&dir).expect("loaded");
    let hub = runtime.hub("chat").expect("hub");
    let calls: Vec<_> = (0..4).map(|n| tokio::spawn(echo(hub.clone(), n))).collect();
    for call in calls {
        call.await.expect("joined").expect("answered");
    }
    assert!(hub.idle_instances() >= 1);
    assert!(runtime.free_instance_slots() < 8);
    // The trimmer runs a few times per timeout; give it two timeouts.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(hub.idle_instances(), 0);
    assert_eq!(runtime.free_instance_slots(), 8);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_hub_asking_for_more_instances_than_the_host_has_is_refused() {
    let names = vec!["greedy".to_owned()];
    let dir = hubs_dir("greedy", &names, Some("instances = 50\n"));
    let runtime = HubRuntime::new(
        RuntimeConfig {
            total_instances: 40,
            instances_per_hub: 8,
            ..RuntimeConfig::default()
        },
        Arc::new(MemoryState::new()),
    )
    .expect("runtime");
    let error = runtime
        .compile(HubName::new("greedy"), &dir.join("greedy.wasm"))
        .err()
        .expect("refused");
    let text = format!("{error:#}");
    assert!(
        text.ends_with("instances = 50 cannot fit: the host has 40 instance slots for all hubs (--total-instances)"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn only_hubs_whose_code_reads_the_request_get_it_kept() {
    let runtime =
        HubRuntime::new(RuntimeConfig::default(), Arc::new(MemoryState::new())).expect("runtime");
    let chat = runtime
        .compile(HubName::new("chat"), &chat_wasm())
        .expect("chat");
    assert!(!chat.reads_request(), "chat never calls ctx.request()");
    let features = chat_wasm().with_file_name("../test-hubs/features.wasm");
    let features = runtime
        .compile(HubName::new("features"), &features)
        .expect("features (cargo xtask hubs builds it)");
    assert!(features.reads_request());
}
