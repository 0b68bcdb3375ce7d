//! TCP proxies the tests put between a node and Redis or PostgreSQL: [`CutProxy`] drops every
//! connection and refuses new ones until restored (the server went away); [`StallProxy`] keeps
//! connections open but forwards nothing more on them (packets dropped, no reset).
#![allow(dead_code)] // Each proxy test uses a different subset.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::cluster_helpers::Redis;
use crate::helpers::pause;

/// A TCP proxy to `upstream` the test cuts (every connection dropped, the port closed, so new
/// ones are refused) and restores (the same port listens again).
pub struct CutProxy {
    pub port: u16,
    upstream: String,
    running: Mutex<Option<CancellationToken>>,
}

impl CutProxy {
    pub async fn start(upstream: String) -> Arc<CutProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Arc::new(CutProxy {
            port: listener.local_addr().unwrap().port(),
            upstream,
            running: Mutex::new(None),
        });
        proxy.serve(listener).await;
        proxy
    }

    async fn serve(&self, listener: TcpListener) {
        let token = CancellationToken::new();
        *self.running.lock().await = Some(token.clone());
        let upstream = self.upstream.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = token.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut client, _)) = accepted else {
                    return;
                };
                let upstream = upstream.clone();
                let token = token.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        () = token.cancelled() => {}
                    }
                });
            }
        });
    }

    /// Drops every connection and closes the port.
    pub async fn cut(&self) {
        if let Some(token) = self.running.lock().await.take() {
            token.cancel();
        }
    }

    /// Listens on the same port again.
    pub async fn restore(&self) {
        let address = format!("127.0.0.1:{}", self.port);
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(&address).await {
                Ok(listener) => break listener,
                Err(error) => {
                    tries += 1;
                    assert!(tries < 50, "the proxy's port is taken: {error}");
                    pause(Duration::from_millis(100)).await;
                }
            }
        };
        self.serve(listener).await;
    }
}

/// Per connection of a [`StallProxy`]: whether its client sent what the proxy marks, and
/// whether it is stalled.
#[derive(Default)]
struct Flags {
    marked: AtomicBool,
    stalled: AtomicBool,
}

/// A TCP proxy to a Redis that can stall connections open at a given moment: nothing is
/// forwarded on them any more, in either direction, but they stay open (no reset, as when
/// packets are dropped, a partition or a lost NAT entry); connections made later, and those not
/// chosen, are forwarded normally.
pub struct StallProxy {
    pub port: u16,
    connections: Mutex<Vec<Arc<Flags>>>,
}

impl StallProxy {
    /// A proxy to `redis`; a connection whose client ever sends a chunk that `mark` accepts is
    /// marked (for [`StallProxy::stall_marked`]).
    pub async fn to_redis(redis: &Redis, mark: Option<fn(&str) -> bool>) -> Arc<StallProxy> {
        let upstream = format!("127.0.0.1:{}", redis.port);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Arc::new(StallProxy {
            port: listener.local_addr().unwrap().port(),
            connections: Mutex::new(Vec::new()),
        });
        let shared = proxy.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let flags = Arc::new(Flags::default());
                shared.connections.lock().await.push(flags.clone());
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(Self::pipe(client_read, server_write, flags.clone(), mark));
                tokio::spawn(Self::pipe(server_read, client_write, flags, None));
            }
        });
        proxy
    }

    /// The Redis URL through this proxy.
    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Copies `from` to `to` until either closes; stalled, it reads and drops everything.
    async fn pipe(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        flags: Arc<Flags>,
        mark: Option<fn(&str) -> bool>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let Ok(read) = from.read(&mut buffer).await else {
                return;
            };
            if read == 0 {
                return;
            }
            let chunk = &buffer[..read];
            if let Some(mark) = mark {
                if mark(&String::from_utf8_lossy(chunk)) {
                    flags.marked.store(true, Ordering::SeqCst);
                }
            }
            if flags.stalled.load(Ordering::SeqCst) {
                continue;
            }
            if to.write_all(chunk).await.is_err() {
                return;
            }
        }
    }

    /// Stalls every connection open now; answers how many.
    pub async fn stall_all(&self) -> usize {
        let connections = self.connections.lock().await;
        for flags in connections.iter() {
            flags.stalled.store(true, Ordering::SeqCst);
        }
        connections.len()
    }

    /// Stalls every marked connection open now.
    pub async fn stall_marked(&self) {
        for flags in self.connections.lock().await.iter() {
            if flags.marked.load(Ordering::SeqCst) {
                flags.stalled.store(true, Ordering::SeqCst);
            }
        }
    }
}

/// A TCP proxy to a Redis that can hold back what clients send (in order, nothing dropped)
/// until released: Redis then answers late, as a loaded or distant Redis does, without any
/// connection failing.
pub struct HoldProxy {
    pub port: u16,
    held: tokio::sync::watch::Sender<bool>,
}

impl HoldProxy {
    pub async fn to_redis(redis: &Redis) -> Arc<HoldProxy> {
        let upstream = format!("127.0.0.1:{}", redis.port);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (held, _) = tokio::sync::watch::channel(false);
        let proxy = Arc::new(HoldProxy {
            port: listener.local_addr().unwrap().port(),
            held,
        });
        let shared = proxy.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let mut held = shared.held.subscribe();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buffer = vec![0u8; 16 * 1024];
                    loop {
                        let Ok(read) = client_read.read(&mut buffer).await else {
                            return;
                        };
                        if read == 0 || held.wait_for(|held| !*held).await.is_err() {
                            return;
                        }
                        if server_write.write_all(&buffer[..read]).await.is_err() {
                            return;
                        }
                    }
                });
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                });
            }
        });
        proxy
    }

    /// The Redis URL through this proxy.
    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// From now on, what clients send waits in the proxy.
    pub fn hold(&self) {
        self.held.send_replace(true);
    }

    /// Forwards what waited, and everything after it.
    pub fn release(&self) {
        self.held.send_replace(false);
    }
}
