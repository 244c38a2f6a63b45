//! A `redis-server` process of a test's own, for tests of the real broker.

use std::process::{Child, Command, Stdio};

use parking_lot::Mutex;
use tokio::net::TcpStream;

use super::direct::Endpoint;

/// A `redis-server` of this test's own, on a free port, killed when dropped.
pub(super) struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    pub(super) async fn start(password: Option<&str>) -> Self {
        for _ in 0..5 {
            let port = free_port();
            // Killed by its drop if it does not come up.
            let mut server = Self {
                child: spawn(port, password),
                port,
            };
            if server.came_up().await {
                return server;
            }
        }
        panic!("redis-server did not start on any of 5 ports");
    }

    /// Waits until it listens; false if it exited first (its port was taken meanwhile).
    async fn came_up(&mut self) -> bool {
        for _ in 0..500 {
            if !self.running() {
                return false;
            }
            if TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                // If this one has exited meanwhile, another process answered.
                return self.running();
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        false
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops it, as a crash would.
    pub(super) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port (after [`kill`](Self::kill)), without a password.
    pub(super) fn restart(&mut self) {
        self.child = spawn(self.port, None);
    }

    /// Its URL, with `password` if given.
    pub(super) fn url(&self, password: Option<&str>) -> String {
        match password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    pub(super) fn endpoint(&self, password: Option<&str>) -> Endpoint {
        let info =
            redis::IntoConnectionInfo::into_connection_info(self.url(password)).expect("a URL");
        Endpoint::of(&info).expect("plain TCP")
    }
}

/// A port free now that no other test of this process was given: the tests run in parallel,
/// and the kernel may hand the same free port to two of them, whose second `redis-server` then
/// fails to bind while its test talks to the first one's (and is reset when that one stops).
fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut given = GIVEN.lock();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

fn spawn(port: u16, password: Option<&str>) -> Child {
    let mut command = Command::new("redis-server");
    command.args(["--port", &port.to_string(), "--bind", "127.0.0.1"]);
    command.args(["--save", "", "--appendonly", "no"]);
    if let Some(password) = password {
        command.args(["--requirepass", password]);
    }
    command
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server on the PATH")
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
