//! `herald-loadgen`: opens many idle Pusher connections (and reports the server's memory per
//! connection when given its pid). Any Pusher-compatible server works as a target, so the same
//! run can measure a baseline. Loopback only by intent; every mode stops by itself.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Parser)]
#[command(name = "herald-loadgen", about)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Open N connections, subscribe each to a public channel, hold them, report.
    Idle {
        /// WebSocket URL up to the key, e.g. ws://127.0.0.1:6001/app/KEY
        #[arg(long)]
        url: String,
        /// How many connections.
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Seconds to hold the connections once all are up.
        #[arg(long, default_value_t = 3)]
        hold: u64,
        /// The server's pid: its resident memory is read before and after.
        #[arg(long)]
        server_pid: Option<u32>,
        /// Connections opened at once.
        #[arg(long, default_value_t = 100)]
        concurrency: usize,
        /// A label printed in the result line.
        #[arg(long, default_value = "server")]
        label: String,
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

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_json(socket: &mut Socket) -> Result<Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
            Err(_) => bail!("timed out waiting for a frame"),
            Ok(None) => bail!("socket closed"),
            Ok(Some(Err(e))) => bail!("socket error: {e}"),
            Ok(Some(Ok(Message::Text(text)))) => return Ok(serde_json::from_str(&text)?),
            Ok(Some(Ok(_))) => continue,
        }
    }
}

async fn open_idle(url: String, index: usize) -> Result<Socket> {
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await?;
    let first = next_json(&mut socket).await?;
    if first["event"] != "pusher:connection_established" {
        bail!("handshake refused: {first}");
    }
    let channel = format!("idle-{}", index % 100);
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

async fn idle(
    url: String,
    connections: usize,
    hold_secs: u64,
    server_pid: Option<u32>,
    concurrency: usize,
    label: String,
) -> Result<()> {
    let url = if url.contains('?') {
        url
    } else {
        format!("{url}?protocol=7&client=js&version=8.6.0&flash=false")
    };
    let before = server_pid.map(rss_kib).transpose()?;
    let started = Instant::now();
    let gate = std::sync::Arc::new(Semaphore::new(concurrency.max(1)));
    let mut opening = Vec::with_capacity(connections);
    for index in 0..connections {
        let gate = gate.clone();
        let url = url.clone();
        opening.push(tokio::spawn(async move {
            let _permit = gate.acquire().await;
            open_idle(url, index).await
        }));
    }
    let mut holders = Vec::with_capacity(connections);
    let mut failures = 0usize;
    let mut first_error = None;
    for task in opening {
        match task.await? {
            Ok(socket) => holders.push(tokio::spawn(hold(socket))),
            Err(error) => {
                failures += 1;
                first_error.get_or_insert(error.to_string());
            }
        }
    }
    let elapsed = started.elapsed();
    // Let the server settle before reading its memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = server_pid.map(rss_kib).transpose()?;
    let opened = holders.len();
    let per_connection = match (before, after) {
        (Some(b), Some(a)) if opened > 0 => Some((a.saturating_sub(b)) as f64 / opened as f64),
        _ => None,
    };
    println!(
        "{}",
        json!({
            "label": label,
            "mode": "idle",
            "connections": opened,
            "failures": failures,
            "first_error": first_error,
            "connect_seconds": elapsed.as_secs_f64(),
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

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().mode {
        Mode::Idle {
            url,
            connections,
            hold,
            server_pid,
            concurrency,
            label,
        } => idle(url, connections, hold, server_pid, concurrency, label).await,
    }
}
