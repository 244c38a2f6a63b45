//! A `redis-server` process of a test's own, for tests of the real broker.

use std::process::{Child, Command, Stdio};

use tokio::net::TcpStream;

use super::direct::Endpoint;

/// A `redis-server` of this test's own, on a free port, killed when dropped.
pub(super) struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    pub(super) async fn start(password: Option<&str>) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = spawn(port, password);
        // Killed by its drop if it does not come up.
        let server = Self { child, port };
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return server;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("redis-server did not start");
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
