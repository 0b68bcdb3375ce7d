//! A `redis-server` of a test's own (from PATH; the test fails without it), for the scripts'
//! tests.

use std::time::Duration;

/// The server, killed and waited for on drop.
pub(in crate::cluster) struct Server {
    child: std::process::Child,
    pub(in crate::cluster) url: String,
}

impl Server {
    /// A client of this server and a connection through it.
    pub(in crate::cluster) async fn connect(
        &self,
    ) -> (redis::Client, redis::aio::MultiplexedConnection) {
        let client = redis::Client::open(self.url.as_str()).expect("a URL");
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("conn");
        (client, conn)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts one on a free port, without persistence, and waits until it answers.
pub(in crate::cluster) async fn redis_server() -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    // Killed and waited for on drop, even when the test fails.
    let server = Server {
        child: std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("these tests need redis-server on PATH"),
        url: format!("redis://127.0.0.1:{port}/"),
    };
    let client = redis::Client::open(server.url.as_str()).expect("a URL");
    for _ in 0..100 {
        if client.get_multiplexed_async_connection().await.is_ok() {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("redis-server did not start");
}
