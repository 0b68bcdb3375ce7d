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
//! `idle` and `fanout` speak WebSocket, or with `--transport xhr_streaming` pusher-js's HTTP
//! streaming fallback (one `xhr_streaming` response per session, `xhr_send` for its messages;
//! see [`xhr`]); "connection" then means a session. With `--transport sse` the subscribers
//! are Mercure `EventSource`s of the app's hub on the topic named as the channel (see [`sse`]),
//! which the REST triggers reach through the hub's Pusher bridge.
//!
//! With `--tls-ca PATH` (the CA that signed the server's certificate), WebSocket subscribers
//! connect with `wss://` and triggers go over `https://`.
//!
//! Source addresses are spread over 127.0.0.0/8 (20,000 connections per address) so the
//! ephemeral-port range never limits the connection count.
#![allow(
    clippy::disallowed_methods,
    reason = "a benchmark measures real time, so it reads the system clocks directly"
)]

mod deliveries;
mod sse;
mod ws;
mod xhr;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use serde_json::json;
use sha2::Sha256;
use tokio::net::TcpSocket;
use tokio::sync::{watch, Semaphore};

use deliveries::{micros_since, read_deliveries, Deliveries};

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
    /// How the subscribers of `idle` and `fanout` connect.
    #[arg(long, value_enum, default_value_t = Transport::Websocket)]
    transport: Transport,
    /// Speak TLS (`wss://`, `https://`), trusting the CA certificate in this PEM file.
    #[arg(long)]
    tls_ca: Option<std::path::PathBuf>,
}

impl Target {
    /// The TLS client setup, with `--tls-ca`.
    fn tls(&self) -> Result<Option<tokio_rustls::TlsConnector>> {
        use rustls_pki_types::pem::PemObject;
        let Some(path) = &self.tls_ca else {
            return Ok(None);
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_file_iter(path)? {
            roots.add(cert?)?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Some(tokio_rustls::TlsConnector::from(Arc::new(config))))
    }
}

/// A subscriber's transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
enum Transport {
    /// `ws://{addr}/app/{key}`.
    Websocket,
    /// pusher-js's HTTP streaming fallback: `POST /pusher/app/{key}/{server}/{session}/xhr_streaming`.
    XhrStreaming,
    /// A Mercure subscriber (`EventSource`): `GET /apps/{app_id}/.well-known/mercure?topic=`,
    /// with a subscriber JWT signed with `--secret`.
    Sse,
    /// `sse` whose connection first serves a keep-alive `GET /health`: the subscribe is then
    /// served by hyper, as every subscribe was before the direct path (an A/B of the two).
    SseAfterRequest,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Websocket => "websocket",
            Transport::XhrStreaming => "xhr_streaming",
            Transport::Sse => "sse",
            Transport::SseAfterRequest => "sse_after_request",
        }
    }
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
        /// Connections opened (and held) before the memory baseline is read: the first
        /// connections of a fresh server make its allocator give back memory left over from
        /// startup, which would hide what they cost.
        #[arg(long, default_value_t = 0)]
        warmup: usize,
        /// The channels' (and Mercure topics') names: this prefix and the connection's index
        /// modulo 100 (a long prefix measures what a subscription's selector text costs).
        #[arg(long, default_value = "idle-")]
        channel_prefix: String,
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

/// A TCP connection to the server from a source address chosen by `index` (20,000 connections
/// per address across 127.16.0.0 and up), so the ephemeral port range never runs out.
async fn source_stream(target: &Target, index: usize) -> Result<tokio::net::TcpStream> {
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
    Ok(stream)
}

/// One simulated client, subscribed.
enum Subscriber {
    WebSocket(ws::Socket),
    Tls(Box<ws::TlsSocket>),
    Stream(xhr::Stream),
    EventStream(sse::Stream),
}

impl Subscriber {
    async fn open(target: &Target, index: usize, channel: &str) -> Result<Subscriber> {
        Ok(match target.transport {
            Transport::Websocket if target.tls_ca.is_some() => Subscriber::Tls(Box::new(
                ws::open_subscribed_tls(target, index, channel).await?,
            )),
            Transport::Websocket => {
                Subscriber::WebSocket(ws::open_subscribed(target, index, channel).await?)
            }
            Transport::XhrStreaming => {
                Subscriber::Stream(xhr::open_subscribed(target, index, channel).await?)
            }
            Transport::Sse | Transport::SseAfterRequest => {
                let token = sse::token(target)?;
                let warm = target.transport == Transport::SseAfterRequest;
                Subscriber::EventStream(
                    sse::open_subscribed(target, index, channel, &token, warm).await?,
                )
            }
        })
    }

    /// Counts this subscriber's deliveries until `stop`.
    async fn read(self, deliveries: Deliveries, stop: watch::Receiver<bool>) {
        match self {
            Subscriber::WebSocket(socket) => {
                read_deliveries(socket.into_inner(), ws::Frames, deliveries, stop).await;
            }
            Subscriber::Tls(socket) => ws::read_tls_deliveries(*socket, deliveries, stop).await,
            Subscriber::Stream(stream) => {
                let (stream, frames) = stream.into_reader();
                read_deliveries(stream, frames, deliveries, stop).await;
            }
            Subscriber::EventStream(stream) => {
                let (stream, frames) = stream.into_reader();
                read_deliveries(stream, frames, deliveries, stop).await;
            }
        }
    }

    /// Keeps the subscriber alive (answering the server's keepalives) until the server closes.
    async fn hold(self) {
        match self {
            Subscriber::WebSocket(socket) => ws::hold(socket).await,
            Subscriber::Tls(socket) => ws::hold(*socket).await,
            stream => {
                let (_never, stop) = watch::channel(false);
                stream.read(Deliveries::new(Instant::now()), stop).await;
            }
        }
    }
}

/// Opens the subscribers of `indices`, `concurrency` at a time; channel chosen by index.
async fn open_many(
    target: &Target,
    indices: std::ops::Range<usize>,
    channel: impl Fn(usize) -> String,
) -> (Vec<Subscriber>, usize, Option<String>, Duration) {
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(target.concurrency.max(1)));
    let count = indices.len();
    let mut opening = Vec::with_capacity(count);
    for index in indices {
        let gate = gate.clone();
        let target = target.clone();
        let channel = channel(index);
        opening.push(tokio::spawn(async move {
            let _permit = gate.acquire().await;
            Subscriber::open(&target, index, &channel).await
        }));
    }
    let mut subscribers = Vec::with_capacity(count);
    let mut failures = 0;
    let mut first_error = None;
    for task in opening {
        match task.await {
            Ok(Ok(subscriber)) => subscribers.push(subscriber),
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
    (subscribers, failures, first_error, started.elapsed())
}

async fn idle(
    target: Target,
    connections: usize,
    hold_secs: u64,
    warmup: usize,
    prefix: &str,
) -> Result<()> {
    let channel = |i| format!("{prefix}{}", i % 100);
    let mut holders = Vec::new();
    if warmup > 0 {
        let (subscribers, failures, first_error, _) = open_many(&target, 0..warmup, channel).await;
        if failures > 0 {
            bail!("{failures} warm-up connections failed: {first_error:?}");
        }
        holders.extend(subscribers.into_iter().map(|s| tokio::spawn(s.hold())));
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let before = target.server_pid.map(rss_kib).transpose()?;
    let (subscribers, failures, first_error, elapsed) =
        open_many(&target, warmup..warmup + connections, channel).await;
    let opened = subscribers.len();
    holders.extend(subscribers.into_iter().map(|s| tokio::spawn(s.hold())));
    // Let the server settle before reading its memory.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = target.server_pid.map(rss_kib).transpose()?;
    let per_connection = match (before, after) {
        (Some(b), Some(a)) if opened > 0 => Some((a.saturating_sub(b)) as f64 / opened as f64),
        _ => None,
    };
    println!(
        "{}",
        json!({
            "label": target.label,
            "mode": "idle",
            "transport": target.transport.name(),
            "connections": opened,
            "warmup": warmup,
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
        let mut client = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true);
        if let Some(ca) = &target.tls_ca {
            client =
                client.add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca)?)?);
        }
        Ok(Publisher {
            client: client.build()?,
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
        let scheme = if self.target.tls_ca.is_some() {
            "https"
        } else {
            "http"
        };
        let url = format!(
            "{scheme}://{}{path}?{query}&auth_signature={signature}",
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
    let (opened, failures, first_error, open_time) =
        open_many(&target, 0..subscribers, |_| channel.to_owned()).await;
    if failures > 0 {
        bail!("{failures} subscribers failed: {first_error:?}");
    }
    let start = Instant::now();
    let deliveries = Deliveries::new(start);
    let (stop_tx, stop_rx) = watch::channel(false);
    let readers: Vec<_> = opened
        .into_iter()
        .map(|s| tokio::spawn(s.read(deliveries.clone(), stop_rx.clone())))
        .collect();
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
    while deliveries.received() < expected && Instant::now() < deadline {
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
    let got = deliveries.received();
    let sorted = deliveries.sorted_latencies();
    let cpu = match (cpu_before, cpu_after) {
        (Some(b), Some(a)) => Some(a - b),
        _ => None,
    };
    println!(
        "{}",
        json!({
            "label": target.label,
            "mode": "fanout",
            "transport": target.transport.name(),
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
            warmup,
            channel_prefix,
        } => idle(target, connections, hold, warmup, &channel_prefix).await,
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
    fn percentiles_are_in_milliseconds() {
        assert_eq!(percentile(&[1000, 2000, 3000], 50.0), 2.0);
        assert_eq!(percentile(&[], 99.0), 0.0);
    }

    #[test]
    fn transports_are_named_as_pusher_js_names_them() {
        let cli = Cli::parse_from([
            "herald-loadgen",
            "idle",
            "--addr",
            "127.0.0.1:1",
            "--key",
            "k",
            "--transport",
            "xhr_streaming",
        ]);
        let Mode::Idle { target, .. } = cli.mode else {
            panic!("not idle");
        };
        assert_eq!(target.transport, Transport::XhrStreaming);
        assert_eq!(target.transport.name(), "xhr_streaming");
    }

    #[test]
    fn the_sse_transport_is_named_sse() {
        let cli = Cli::parse_from([
            "herald-loadgen",
            "fanout",
            "--addr",
            "127.0.0.1:1",
            "--key",
            "k",
            "--transport",
            "sse",
        ]);
        let Mode::Fanout { target, .. } = cli.mode else {
            panic!("not fanout");
        };
        assert_eq!(target.transport, Transport::Sse);
        assert_eq!(target.transport.name(), "sse");
    }
}
