//! `herald-loadgen`: load against any Pusher-protocol server (Herald, or a baseline such as
//! sockudo) on loopback. Every mode stops by itself and prints one JSON line:
//!
//! - `idle`: N subscribed connections; the server's RSS per connection (from `/proc/PID/status`)
//!   and connections opened per second;
//! - `fanout`: N subscribers on one channel, events of a fixed payload size published at a steady
//!   rate through the signed REST API; deliveries per second and per second of server CPU time
//!   (from `/proc/PID/stat`), messages lost, trigger-to-delivery latency p50/p99/max;
//! - `rest`: signed REST triggers as fast as C workers can send them; triggers per second and per
//!   second of server CPU time.
//!
//! Source addresses are spread over 127.0.0.0/8 (20,000 connections per address) so the
//! ephemeral-port range never limits the connection count.
#![allow(
    clippy::disallowed_methods,
    reason = "a benchmark measures real time, so it reads the system clocks directly"
)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::net::TcpSocket;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Parser)]
#[command(name = "herald-loadgen", about)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

/// Where the server is and which app to use.
#[derive(Debug, Clone, Args)]
struct Target {
    /// host:port of the server (WebSocket and REST on the same address).
    #[arg(long)]
    addr: String,
    /// App id.
    #[arg(long, default_value = "1")]
    app_id: String,
    /// App key.
    #[arg(long)]
    key: String,
    /// App secret (for the REST modes).
    #[arg(long, default_value = "")]
    secret: String,
    /// The server's pid, for its memory and CPU time.
    #[arg(long)]
    server_pid: Option<u32>,
    /// More processes whose CPU time counts as the server's (a cluster's other nodes and its
    /// Redis); repeat the flag for each.
    #[arg(long = "extra-pid")]
    extra_pids: Vec<u32>,
    /// host:port the REST triggers go to, when not `addr` (a cluster: subscribers on one node,
    /// publishes through another, so every delivery crosses Redis).
    #[arg(long)]
    publish_addr: Option<String>,
    /// host:port of the cluster's Redis: the fan-out reports the Redis commands per publish
    /// (from `INFO stats`, less the background rate measured just before).
    #[arg(long)]
    redis_addr: Option<String>,
    /// A label printed in the result line.
    #[arg(long, default_value = "server")]
    label: String,
    /// Connections opened at once.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Open N connections, subscribe each to a public channel, hold them, report memory.
    Idle {
        #[command(flatten)]
        target: Target,
        /// How many connections.
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Seconds to hold the connections once all are up.
        #[arg(long, default_value_t = 3)]
        hold: u64,
    },
    /// N subscribers on one channel; publish events at a steady rate; count and time deliveries.
    Fanout {
        #[command(flatten)]
        target: Target,
        /// Subscribers.
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        /// Events per second.
        #[arg(long, default_value_t = 10)]
        rate: u64,
        /// Seconds of publishing.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Bytes of each event's data.
        #[arg(long, default_value_t = 100)]
        payload: usize,
    },
    /// Signed REST triggers to an empty channel from C workers, for a duration.
    Rest {
        #[command(flatten)]
        target: Target,
        /// Seconds.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Requests in flight.
        #[arg(long, default_value_t = 32)]
        workers: usize,
    },
}

/// Resident memory of `pid` in KiB, from /proc.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line")?;
    let kib = line
        .split_whitespace()
        .nth(1)
        .context("malformed VmRSS")?
        .parse()?;
    Ok(kib)
}

/// User plus system CPU time of `pid` (all its threads), in seconds, from /proc/PID/stat.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').context("malformed stat")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11).context("no utime")?.parse()?;
    let stime: f64 = fields.get(12).context("no stime")?.parse()?;
    Ok((utime + stime) / clock_ticks())
}

/// CPU seconds of the server's process and its extra processes (`None` without a server pid).
fn server_cpu(target: &Target) -> Result<Option<f64>> {
    let Some(pid) = target.server_pid else {
        return Ok(None);
    };
    let mut total = cpu_seconds(pid)?;
    for extra in &target.extra_pids {
        total += cpu_seconds(*extra)?;
    }
    Ok(Some(total))
}

/// A raw `INFO SECTION` (RESP) from the Redis at `addr`.
async fn redis_info(addr: &str, section: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("*2\r\n$4\r\nINFO\r\n${}\r\n{section}\r\n", section.len());
    stream.write_all(request.as_bytes()).await?;
    // The reply is one bulk string: `$LEN\r\n` then LEN bytes and `\r\n`.
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await??;
        if n == 0 {
            bail!("redis closed the connection");
        }
        reply.extend_from_slice(&buf[..n]);
        let Some(end) = reply.windows(2).position(|w| w == b"\r\n") else {
            continue;
        };
        let header = std::str::from_utf8(&reply[..end])?;
        let len: usize = header
            .strip_prefix('$')
            .with_context(|| format!("unexpected INFO reply {header}"))?
            .parse()?;
        if reply.len() >= end + 2 + len {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// Redis's `total_commands_processed`.
async fn redis_commands(addr: &str) -> Result<u64> {
    let text = redis_info(addr, "stats").await?;
    let line = text
        .lines()
        .find(|l| l.starts_with("total_commands_processed:"))
        .context("no total_commands_processed in INFO stats")?;
    Ok(line["total_commands_processed:".len()..].trim().parse()?)
}

/// The `PUBLISH` (and `SPUBLISH`) calls Redis has run, from `INFO commandstats`.
async fn redis_publishes(addr: &str) -> Result<u64> {
    let text = redis_info(addr, "commandstats").await?;
    let mut calls = 0;
    for line in text.lines() {
        let Some(rest) = line
            .strip_prefix("cmdstat_publish:calls=")
            .or_else(|| line.strip_prefix("cmdstat_spublish:calls="))
        else {
            continue;
        };
        calls += rest
            .split(',')
            .next()
            .context("malformed commandstats")?
            .parse::<u64>()?;
    }
    Ok(calls)
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn next_json(socket: &mut Socket) -> Result<Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), socket.next()).await {
            Err(_) => bail!("timed out waiting for a frame"),
            Ok(None) => bail!("socket closed"),
            Ok(Some(Err(e))) => bail!("socket error: {e}"),
            Ok(Some(Ok(Message::Text(text)))) => return Ok(serde_json::from_str(&text)?),
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// Connects from a source address chosen by `index` (20,000 connections per address across
/// 127.16.0.0 and up), so the ephemeral port range never runs out.
async fn connect(target: &Target, index: usize) -> Result<Socket> {
    let server: SocketAddr = tokio::net::lookup_host(&target.addr)
        .await?
        .next()
        .context("the address does not resolve")?;
    // Each run starts at its own address (from the pid), so the ports a previous run left in
    // TIME_WAIT on its addresses cannot make this run's binds fail.
    let run = std::process::id() % 16_384;
    let block = u32::try_from(index / 20_000).unwrap_or(0);
    let source =
        Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 16, 0, 1)) + run.saturating_mul(64) + block);
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source.into(), 0))?;
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    let url = format!(
        "ws://{}/app/{}?protocol=7&client=js&version=8.6.0&flash=false",
        target.addr, target.key
    );
    let (socket, _) = tokio_tungstenite::client_async(url, stream).await?;
    Ok(socket)
}

async fn open_subscribed(target: &Target, index: usize, channel: &str) -> Result<Socket> {
    let mut socket = connect(target, index).await?;
    let first = next_json(&mut socket).await?;
    if first["event"] != "pusher:connection_established" {
        bail!("handshake refused: {first}");
    }
    let subscribe = json!({"event":"pusher:subscribe","data":{"channel":channel,"auth":""}});
    socket
        .send(Message::Text(subscribe.to_string().into()))
        .await?;
    loop {
        let frame = next_json(&mut socket).await?;
        if frame["event"] == "pusher_internal:subscription_succeeded" {
            return Ok(socket);
        }
    }
}

/// Opens `count` subscribed sockets, `concurrency` at a time; channel chosen by index.
async fn open_many(
    target: &Target,
    count: usize,
    channel: impl Fn(usize) -> String,
) -> (Vec<Socket>, usize, Option<String>, Duration) {
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(target.concurrency.max(1)));
    let mut opening = Vec::with_capacity(count);
    for index in 0..count {
        let gate = gate.clone();
        let target = target.clone();
        let channel = channel(index);
        opening.push(tokio::spawn(async move {
            let _permit = gate.acquire().await;
            open_subscribed(&target, index, &channel).await
        }));
    }
    let mut sockets = Vec::with_capacity(count);
    let mut failures = 0;
    let mut first_error = None;
    for task in opening {
        match task.await {
            Ok(Ok(socket)) => sockets.push(socket),
            Ok(Err(error)) => {
                failures += 1;
                first_error.get_or_insert(error.to_string());
            }
            Err(error) => {
                failures += 1;
                first_error.get_or_insert(error.to_string());
            }
        }
    }
    (sockets, failures, first_error, started.elapsed())
}

/// Keeps a connection alive: answers the server's pings, ignores everything else.
async fn hold(mut socket: Socket) {
    while let Some(Ok(message)) = socket.next().await {
        if let Message::Text(text) = message {
            if text.contains("\"pusher:ping\"") {
                let pong = r#"{"event":"pusher:pong","data":{}}"#;
                if socket.send(Message::Text(pong.into())).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn idle(target: Target, connections: usize, hold_secs: u64) -> Result<()> {
    let before = target.server_pid.map(rss_kib).transpose()?;
    let (sockets, failures, first_error, elapsed) =
        open_many(&target, connections, |i| format!("idle-{}", i % 100)).await;
    let holders: Vec<_> = sockets.into_iter().map(|s| tokio::spawn(hold(s))).collect();
    // Let the server settle before reading its memory.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = target.server_pid.map(rss_kib).transpose()?;
    let opened = holders.len();
    let per_connection = match (before, after) {
        (Some(b), Some(a)) if opened > 0 => Some((a.saturating_sub(b)) as f64 / opened as f64),
        _ => None,
    };
    println!(
        "{}",
        json!({
            "label": target.label,
            "mode": "idle",
            "connections": opened,
            "failures": failures,
            "first_error": first_error,
            "connect_seconds": elapsed.as_secs_f64(),
            "connections_per_second": opened as f64 / elapsed.as_secs_f64().max(1e-9),
            "rss_before_kib": before,
            "rss_after_kib": after,
            "kib_per_connection": per_connection,
        })
    );
    tokio::time::sleep(Duration::from_secs(hold_secs)).await;
    for holder in holders {
        holder.abort();
    }
    if failures > 0 {
        bail!("{failures} connections failed");
    }
    Ok(())
}

/// Signs and sends one trigger.
struct Publisher {
    client: reqwest::Client,
    target: Target,
}

impl Publisher {
    fn new(target: &Target) -> Result<Publisher> {
        Ok(Publisher {
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .tcp_nodelay(true)
                .build()?,
            target: target.clone(),
        })
    }

    async fn trigger(&self, channel: &str, data: &str) -> Result<u16> {
        let body = json!({"name":"bench","channel":channel,"data":data}).to_string();
        let path = format!("/apps/{}/events", self.target.app_id);
        let md5 = hex::encode(Md5::digest(body.as_bytes()));
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let query = format!(
            "auth_key={}&auth_timestamp={timestamp}&auth_version=1.0&body_md5={md5}",
            self.target.key
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(self.target.secret.as_bytes())?;
        mac.update(format!("POST\n{path}\n{query}").as_bytes());
        let signature = hex::encode(mac.finalize().into_bytes());
        let url = format!(
            "http://{}{path}?{query}&auth_signature={signature}",
            self.target
                .publish_addr
                .as_ref()
                .unwrap_or(&self.target.addr)
        );
        let response = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        let _ = response.bytes().await;
        Ok(status)
    }
}

fn micros_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Reads the `"t":N` sent-at stamp out of a delivered event frame (the data is double-encoded).
/// The send stamp (`"t":MICROS` inside the event's JSON-encoded data) of a delivery.
fn sent_at(text: &[u8]) -> Option<u64> {
    let pattern = b"t\\\":";
    let at = text.windows(pattern.len()).position(|w| w == pattern)? + pattern.len();
    let digits = text[at..].iter().take_while(|b| b.is_ascii_digit());
    let mut value: u64 = 0;
    let mut any = false;
    for digit in digits {
        value = value
            .checked_mul(10)?
            .checked_add(u64::from(digit - b'0'))?;
        any = true;
    }
    any.then_some(value)
}

/// Reads one subscriber's frames off the raw socket (server frames are unmasked), recording the
/// latency of every stamped delivery and answering `pusher:ping`, until `stop`.
async fn read_deliveries(
    stream: tokio::net::TcpStream,
    start: Instant,
    received: Arc<AtomicU64>,
    latencies: Arc<Mutex<Vec<u64>>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut filled = 0;
    let mut mine = Vec::new();
    'read: loop {
        tokio::select! {
            ready = stream.readable() => if ready.is_err() { break },
            _ = stop.changed() => break,
        }
        match stream.try_read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => break,
        }
        let now = micros_since(start);
        let mut at = 0;
        while filled - at >= 2 {
            let op = buf[at] & 0x0F;
            let (len, header) = match buf[at + 1] & 0x7F {
                126 if filled - at >= 4 => (
                    usize::from(u16::from_be_bytes([buf[at + 2], buf[at + 3]])),
                    4,
                ),
                127 if filled - at >= 10 => {
                    let mut b = [0; 8];
                    b.copy_from_slice(&buf[at + 2..at + 10]);
                    (u64::from_be_bytes(b) as usize, 10)
                }
                126 | 127 => break,
                n => (usize::from(n), 2),
            };
            if filled - at < header + len {
                if header + len > buf.len() {
                    buf.resize(header + len, 0);
                }
                break;
            }
            let payload = &buf[at + header..at + header + len];
            if op == 0x8 {
                break 'read;
            }
            if op == 0x1 {
                if let Some(sent) = sent_at(payload) {
                    mine.push(now.saturating_sub(sent));
                    received.fetch_add(1, Ordering::Relaxed);
                } else if payload.windows(13).any(|w| w == b"\"pusher:ping\"") {
                    // A masked client frame; a zero mask leaves the payload as it is.
                    let pong = br#"{"event":"pusher:pong","data":{}}"#;
                    let mut frame = vec![0x81, 0x80 | pong.len() as u8, 0, 0, 0, 0];
                    frame.extend_from_slice(pong);
                    let _ = stream.try_write(&frame);
                }
            }
            at += header + len;
        }
        buf.copy_within(at..filled, 0);
        filled -= at;
        if mine.len() >= 256 {
            latencies
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .append(&mut mine);
        }
    }
    latencies
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .append(&mut mine);
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64 / 1000.0
}

async fn fanout(
    target: Target,
    subscribers: usize,
    rate: u64,
    duration: u64,
    payload: usize,
) -> Result<()> {
    let channel = "fanout-bench";
    let (sockets, failures, first_error, open_time) =
        open_many(&target, subscribers, |_| channel.to_owned()).await;
    if failures > 0 {
        bail!("{failures} subscribers failed: {first_error:?}");
    }
    let start = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::<u64>::new()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut readers = Vec::new();
    for socket in sockets {
        let received = received.clone();
        let latencies = latencies.clone();
        let stop = stop_rx.clone();
        // Past the handshake, frames are read straight off the socket: the reader must cost
        // far less than the server it measures, or the latencies are its own.
        let stream = socket.into_inner();
        readers.push(tokio::spawn(read_deliveries(
            stream, start, received, latencies, stop,
        )));
    }
    let publisher = Arc::new(Publisher::new(&target)?);
    let redis_before = match &target.redis_addr {
        Some(addr) => Some(redis_commands(addr).await?),
        None => None,
    };
    let publishes_before = match &target.redis_addr {
        Some(addr) => Some(redis_publishes(addr).await?),
        None => None,
    };
    let cpu_before = server_cpu(&target)?;
    let total = rate * duration;
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sends = Vec::new();
    let refused = Arc::new(AtomicU64::new(0));
    let publish_started = Instant::now();
    for seq in 0..total {
        ticker.tick().await;
        let publisher = publisher.clone();
        let refused = refused.clone();
        let pad = payload.saturating_sub(40);
        sends.push(tokio::spawn(async move {
            let data = format!(
                "{{\"seq\":{seq},\"t\":{},\"p\":\"{}\"}}",
                micros_since(start),
                "x".repeat(pad)
            );
            match publisher.trigger(channel, &data).await {
                Ok(200) => {}
                _ => {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for send in sends {
        let _ = send.await;
    }
    let publish_time = publish_started.elapsed();
    let expected = (total - refused.load(Ordering::Relaxed)) * subscribers as u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    while received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivery_time = publish_started.elapsed();
    let cpu_after = server_cpu(&target)?;
    // Redis's background rate (heartbeats, watchdog pings and the like), measured over 2 s
    // once the deliveries are in and the subscribers still connected (not before the
    // publishes: the subscribers' joins may still be going through Redis then), is taken off
    // the commands counted during the publishes.
    let publishes_per_publish = match (&target.redis_addr, publishes_before) {
        (Some(addr), Some(before)) => {
            let after = redis_publishes(addr).await?;
            Some(after.saturating_sub(before) as f64 / total.max(1) as f64)
        }
        _ => None,
    };
    let redis_per_publish = match (&target.redis_addr, redis_before) {
        (Some(addr), Some(before)) => {
            let after = redis_commands(addr).await?;
            let idle_start = Instant::now();
            tokio::time::sleep(Duration::from_secs(2)).await;
            let idle_after = redis_commands(addr).await?;
            // Each INFO of ours is a command too.
            let idle =
                idle_after.saturating_sub(after + 1) as f64 / idle_start.elapsed().as_secs_f64();
            let counted = after.saturating_sub(before + 1) as f64;
            let background = idle * delivery_time.as_secs_f64();
            Some(((counted - background).max(0.0)) / total.max(1) as f64)
        }
        _ => None,
    };
    // Readers stop and hand over the latencies they still hold.
    let _ = stop_tx.send(true);
    for reader in readers {
        let _ = reader.await;
    }
    let got = received.load(Ordering::Relaxed);
    let mut sorted = std::mem::take(&mut *latencies.lock().unwrap_or_else(|p| p.into_inner()));
    sorted.sort_unstable();
    let cpu = match (cpu_before, cpu_after) {
        (Some(b), Some(a)) => Some(a - b),
        _ => None,
    };
    println!(
        "{}",
        json!({
            "label": target.label,
            "mode": "fanout",
            "subscribers": subscribers,
            "connect_seconds": open_time.as_secs_f64(),
            "events_published": total,
            "events_refused": refused.load(Ordering::Relaxed),
            "rate": rate,
            "payload_bytes": payload,
            "deliveries_expected": expected,
            "deliveries_received": got,
            "lost": expected.saturating_sub(got),
            "publish_seconds": publish_time.as_secs_f64(),
            "deliveries_per_second": got as f64 / delivery_time.as_secs_f64().max(1e-9),
            "server_cpu_seconds": cpu,
            "deliveries_per_cpu_second": cpu.map(|c| got as f64 / c.max(1e-9)),
            "latency_ms_p50": percentile(&sorted, 50.0),
            "latency_ms_p99": percentile(&sorted, 99.0),
            "latency_ms_max": percentile(&sorted, 100.0),
            "redis_commands_per_publish": redis_per_publish,
            "redis_publish_commands_per_publish": publishes_per_publish,
        })
    );
    Ok(())
}

async fn rest(target: Target, duration: u64, workers: usize) -> Result<()> {
    let publisher = Arc::new(Publisher::new(&target)?);
    // Warm the connection pool and check the credentials.
    let status = publisher.trigger("rest-bench", "{}").await?;
    if status != 200 {
        bail!("a signed trigger was refused with {status}");
    }
    let ok = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let cpu_before = server_cpu(&target)?;
    let started = Instant::now();
    let end = started + Duration::from_secs(duration);
    let mut tasks = Vec::new();
    for _ in 0..workers.max(1) {
        let publisher = publisher.clone();
        let ok = ok.clone();
        let refused = refused.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                match publisher.trigger("rest-bench", "{\"n\":1}").await {
                    Ok(200) => ok.fetch_add(1, Ordering::Relaxed),
                    _ => refused.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = started.elapsed();
    let cpu = match (cpu_before, server_cpu(&target)?) {
        (Some(b), Some(a)) => Some(a - b),
        _ => None,
    };
    let done = ok.load(Ordering::Relaxed);
    println!(
        "{}",
        json!({
            "label": target.label,
            "mode": "rest",
            "workers": workers,
            "triggers": done,
            "refused": refused.load(Ordering::Relaxed),
            "seconds": elapsed.as_secs_f64(),
            "triggers_per_second": done as f64 / elapsed.as_secs_f64().max(1e-9),
            "server_cpu_seconds": cpu,
            "triggers_per_cpu_second": cpu.map(|c| done as f64 / c.max(1e-9)),
        })
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().mode {
        Mode::Idle {
            target,
            connections,
            hold,
        } => idle(target, connections, hold).await,
        Mode::Fanout {
            target,
            subscribers,
            rate,
            duration,
            payload,
        } => fanout(target, subscribers, rate, duration, payload).await,
        Mode::Rest {
            target,
            duration,
            workers,
        } => rest(target, duration, workers).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sent_stamp_is_read_from_a_double_encoded_frame() {
        let frame =
            r#"{"event":"bench","channel":"c","data":"{\"seq\":3,\"t\":12345,\"p\":\"xx\"}"}"#;
        assert_eq!(sent_at(frame.as_bytes()), Some(12345));
        assert_eq!(sent_at(b"no stamp"), None);
        assert_eq!(percentile(&[1000, 2000, 3000], 50.0), 2.0);
    }
}
