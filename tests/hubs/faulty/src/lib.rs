//! A hub that misbehaves on purpose, for the host's fault tests. Never deploy it.

use hubhost_sdk::prelude::*;

pub struct Faulty;

#[hub]
impl Faulty {
    /// A well-behaved method, to show the hub still works after a fault.
    fn add(a: i64, b: i64) -> i64 {
        a + b
    }

    /// Panics (a Rust panic aborts: the call traps).
    fn panic(message: String) -> String {
        panic!("{message}")
    }

    /// Executes `unreachable`: a plain Wasm trap.
    fn trap() {
        std::process::abort()
    }

    /// Never returns: the host's call deadline must stop it.
    fn spin() -> u64 {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }

    /// Computes for `ms` milliseconds (by the monotonic clock), then returns how many loops it
    /// ran: a slow call that succeeds.
    fn busy(ms: u64) -> u64 {
        let start = std::time::Instant::now();
        let mut loops = 0;
        while start.elapsed() < std::time::Duration::from_millis(ms) {
            loops += 1;
        }
        loops
    }

    /// Allocates `mebibytes` MiB and touches every page; past the memory cap the call fails.
    fn allocate(mebibytes: u32) -> usize {
        let mut blocks: Vec<Vec<u8>> = Vec::new();
        for _ in 0..mebibytes {
            blocks.push(vec![1u8; 1 << 20]);
        }
        std::hint::black_box(&blocks).len()
    }

    /// Tries to read a file; returns what happened. The sandbox has no filesystem.
    fn read_file(path: String) -> String {
        match std::fs::read_to_string(&path) {
            Ok(text) => format!("read {} bytes", text.len()),
            Err(e) => format!("error: {e}"),
        }
    }

    /// Tries to list a directory; returns what happened.
    fn list_dir(path: String) -> String {
        match std::fs::read_dir(&path) {
            Ok(entries) => format!("listed {} entries", entries.count()),
            Err(e) => format!("error: {e}"),
        }
    }

    /// Reads an environment variable, and counts all of them; the sandbox has none.
    fn env(name: String) -> (Option<String>, usize) {
        (std::env::var(&name).ok(), std::env::vars().count())
    }

    /// Tries to open a TCP connection; returns what happened. The sandbox has no network.
    fn connect_tcp(address: String) -> String {
        match std::net::TcpStream::connect(&address) {
            Ok(_) => "connected".to_owned(),
            Err(e) => format!("error: {e}"),
        }
    }

    /// Refuses deliberately, like a SignalR `HubException`.
    fn reject(reason: String) -> HubResult {
        Err(HubError::new(reason))
    }

    /// Fails unexpectedly: the caller sees the generic text.
    fn fail() -> HubResult<u32> {
        let n: u32 = "not a number".parse()?;
        Ok(n)
    }

    /// Sends to everyone, then traps: the send was made before the fault.
    fn send_then_trap(message: String) -> HubResult {
        Clients::all().send("beforeTrap", (message,))?;
        std::process::abort()
    }
}
