//! The `xhr_streaming` transport, as pusher-js speaks it (contract 7.2), over raw HTTP/1.1:
//!
//! - `POST {base}/xhr_streaming` opens the session: a chunked response of lines that stays
//!   open (`o`, then `a[...]` batches whose elements are Pusher messages as JSON strings, `h`
//!   heartbeats, `c[code,"reason"]` to close);
//! - `POST {base}/xhr_send` with a JSON array of message strings (`[]` answers a heartbeat), on
//!   a connection of its own that is closed once answered (204), from the stream's source
//!   address: Herald binds a session to the address that opened it.
//!
//! `{base}` is `/pusher/app/{key}/{server}/{session}`, unique per simulated client.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::deliveries::{Framing, Tally};
use crate::{source_stream, Target};

const TIMEOUT: Duration = Duration::from_secs(20);
const PONG: &str = r#"{"event":"pusher:pong","data":{}}"#;

/// An open `xhr_streaming` response, its session subscribed.
pub(crate) struct Stream {
    stream: TcpStream,
    lines: Lines,
    /// Lines decoded and not yet looked at.
    pending: VecDeque<Vec<u8>>,
    sender: Sender,
}

/// Opens a session from the source address of `index` and subscribes it to `channel`.
pub(crate) async fn open_subscribed(
    target: &Target,
    index: usize,
    channel: &str,
) -> Result<Stream> {
    let sender = Sender {
        target: target.clone(),
        index,
        base: format!(
            "/pusher/app/{}/{}/p{:x}i{index}",
            target.key,
            index % 1000,
            std::process::id()
        ),
        sent: 0,
    };
    let mut stream = source_stream(target, index).await?;
    let path = format!(
        "{}/xhr_streaming?protocol=7&client=js&version=8.6.0&t=0&n=0",
        sender.base
    );
    stream
        .write_all(post(target, &path, "", false).as_bytes())
        .await?;
    let (head, rest) = read_head(&mut stream).await?;
    if head.status != 200 {
        bail!("xhr_streaming answered {}", head.status);
    }
    if !head.chunked {
        // A refusal: one `c[code,"reason"]` line, then the response ends.
        bail!("session refused: {}", String::from_utf8_lossy(&rest).trim());
    }
    let mut stream = Stream {
        stream,
        lines: Lines::default(),
        pending: VecDeque::new(),
        sender,
    };
    stream.feed(&rest)?;
    let open = stream.next_line().await?;
    if open != b"o" {
        bail!("expected o, got {}", String::from_utf8_lossy(&open));
    }
    let first = messages(&stream.next_line().await?)?;
    if !first
        .first()
        .is_some_and(|m| m.contains("\"pusher:connection_established\""))
    {
        bail!("handshake refused: {first:?}");
    }
    let subscribe = json!({"event":"pusher:subscribe","data":{"channel":channel,"auth":""}});
    stream.sender.send(vec![subscribe.to_string()]).await?;
    loop {
        let line = stream.next_line().await?;
        if messages(&line)?
            .iter()
            .any(|m| m.contains("\"pusher_internal:subscription_succeeded\""))
        {
            return Ok(stream);
        }
    }
}

impl Stream {
    fn feed(&mut self, bytes: &[u8]) -> Result<()> {
        let pending = &mut self.pending;
        self.lines
            .feed(bytes, |line| pending.push_back(line.to_vec()))
    }

    /// The next line of the stream (without its `\n`); a `c` line or the end is an error.
    async fn next_line(&mut self) -> Result<Vec<u8>> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(line) = self.pending.pop_front() {
                if line.first() == Some(&b'c') {
                    bail!("session closed: {}", String::from_utf8_lossy(&line));
                }
                return Ok(line);
            }
            if self.lines.ended() {
                bail!("the stream ended");
            }
            let n = tokio::time::timeout(TIMEOUT, self.stream.read(&mut buf))
                .await
                .context("timed out waiting for a line")??;
            if n == 0 {
                bail!("the stream was closed");
            }
            self.feed(&buf[..n])?;
        }
    }

    /// The raw stream and its framing, for a fan-out reader (lines not yet looked at, from
    /// before any publish, are dropped).
    pub(crate) fn into_reader(self) -> (TcpStream, Frames) {
        let frames = Frames {
            lines: self.lines,
            sender: self.sender,
        };
        (self.stream, frames)
    }
}

/// A session's `xhr_send`s.
#[derive(Debug, Clone)]
struct Sender {
    target: Target,
    index: usize,
    /// `/pusher/app/{key}/{server}/{session}`.
    base: String,
    /// Sends so far (pusher-js numbers its requests: `n`).
    sent: u64,
}

impl Sender {
    /// Posts `messages` to the session and waits for its 204.
    async fn send(&mut self, messages: Vec<String>) -> Result<()> {
        self.sent += 1;
        let path = format!("{}/xhr_send?t=0&n={}", self.base, self.sent);
        let body = serde_json::to_string(&messages)?;
        let mut stream = source_stream(&self.target, self.index).await?;
        stream
            .write_all(post(&self.target, &path, &body, true).as_bytes())
            .await?;
        let (head, _) = read_head(&mut stream).await?;
        if head.status != 204 {
            bail!("xhr_send answered {}", head.status);
        }
        Ok(())
    }

    /// Sends `messages` in a task of its own (a reader never waits for a send).
    fn send_later(&mut self, messages: Vec<String>) {
        let mut sender = self.clone();
        self.sent += 1;
        tokio::spawn(async move {
            let _ = sender.send(messages).await;
        });
    }
}

/// The framing of a fan-out reader: chunked lines, each `a[...]` element one message; `h` is
/// answered with `[]` and `pusher:ping` with a pong, each in an `xhr_send` of its own.
pub(crate) struct Frames {
    lines: Lines,
    sender: Sender,
}

impl Framing for Frames {
    fn read(&mut self, bytes: &[u8], _stream: &TcpStream, tally: &mut Tally<'_>) -> Option<usize> {
        let mut closed = false;
        let mut replies = Vec::new();
        self.lines
            .feed(bytes, |line| match line.first() {
                Some(b'a' | b'm') => {
                    for message in messages(line).unwrap_or_default() {
                        if !tally.message(message.as_bytes()) && message.contains("\"pusher:ping\"")
                        {
                            replies.push(vec![PONG.to_owned()]);
                        }
                    }
                }
                Some(b'h') => replies.push(Vec::new()),
                Some(b'c') => closed = true,
                _ => {}
            })
            .ok()?;
        for reply in replies {
            self.sender.send_later(reply);
        }
        (!closed && !self.lines.ended()).then_some(bytes.len())
    }
}

/// The Pusher messages of an `a[...]` (or `m"..."`) line.
fn messages(line: &[u8]) -> Result<Vec<String>> {
    match line.split_first() {
        Some((b'a', batch)) => Ok(serde_json::from_slice(batch)?),
        Some((b'm', one)) => Ok(vec![serde_json::from_slice(one)?]),
        _ => bail!(
            "expected a message line, got {}",
            String::from_utf8_lossy(line)
        ),
    }
}

/// A `POST` request with `body`.
fn post(target: &Target, path: &str, body: &str, close: bool) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{}\r\n{body}",
        target.addr,
        body.len(),
        if close { "Connection: close\r\n" } else { "" },
    )
}

/// What matters of a response head.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) status: u16,
    pub(crate) chunked: bool,
}

/// Reads a response head; returns it and the body bytes read with it.
pub(crate) async fn read_head(stream: &mut TcpStream) -> Result<(Head, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(TIMEOUT, stream.read(&mut chunk))
            .await
            .context("timed out waiting for a response")??;
        if n == 0 {
            bail!("the connection closed before a response");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = parse_head(&buf[..end])?;
            return Ok((head, buf.split_off(end + 4)));
        }
        if buf.len() > 64 * 1024 {
            bail!("a response head over 64 KiB");
        }
    }
}

fn parse_head(head: &[u8]) -> Result<Head> {
    let text = std::str::from_utf8(head)?;
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .context("malformed status line")?;
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(name, value)| {
            name.eq_ignore_ascii_case("transfer-encoding")
                && value.trim().eq_ignore_ascii_case("chunked")
        })
    });
    Ok(Head { status, chunked })
}

/// A chunked response body decoded into lines.
#[derive(Debug, Default)]
pub(crate) struct Lines {
    state: Chunk,
    /// An incomplete chunk-size line or `\r\n`, read last.
    carry: Vec<u8>,
    /// The start of a line whose end is still to come.
    partial: Vec<u8>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Before a chunk-size line.
    #[default]
    Size,
    /// Inside a chunk, this many bytes left.
    Data(usize),
    /// The `\r\n` after a chunk's data.
    End,
    /// After the last (empty) chunk.
    Done,
}

impl Lines {
    /// Lines of a body that is not chunked: it runs until the connection closes.
    pub(crate) fn unchunked() -> Lines {
        Lines {
            state: Chunk::Data(usize::MAX),
            ..Lines::default()
        }
    }

    /// Decodes `bytes`, calling `on_line` with each complete line (without its `\n`); an
    /// incomplete chunk-size line or `\r\n` at the end is kept for the next call.
    pub(crate) fn feed(&mut self, bytes: &[u8], mut on_line: impl FnMut(&[u8])) -> Result<()> {
        if self.carry.is_empty() {
            let consumed = self.decode(bytes, &mut on_line)?;
            self.carry.extend_from_slice(&bytes[consumed..]);
        } else {
            let mut joined = std::mem::take(&mut self.carry);
            joined.extend_from_slice(bytes);
            let consumed = self.decode(&joined, &mut on_line)?;
            joined.drain(..consumed);
            self.carry = joined;
        }
        Ok(())
    }

    /// Decodes what it can of `bytes`; returns the bytes consumed (all but an incomplete
    /// chunk-size line or `\r\n`).
    fn decode(&mut self, bytes: &[u8], on_line: &mut impl FnMut(&[u8])) -> Result<usize> {
        let mut at = 0;
        loop {
            match self.state {
                Chunk::Done => return Ok(bytes.len()),
                Chunk::Size => {
                    let Some(eol) = bytes[at..].windows(2).position(|w| w == b"\r\n") else {
                        if bytes.len() - at > 64 {
                            bail!("a malformed chunk-size line");
                        }
                        return Ok(at);
                    };
                    let line = std::str::from_utf8(&bytes[at..at + eol])?;
                    let hex = line.split(';').next().unwrap_or_default().trim();
                    let size = usize::from_str_radix(hex, 16)
                        .with_context(|| format!("a malformed chunk size {line:?}"))?;
                    at += eol + 2;
                    self.state = if size == 0 {
                        Chunk::Done
                    } else {
                        Chunk::Data(size)
                    };
                }
                Chunk::Data(left) => {
                    let take = left.min(bytes.len() - at);
                    if take == 0 {
                        return Ok(at);
                    }
                    self.split(&bytes[at..at + take], on_line);
                    at += take;
                    self.state = if take == left {
                        Chunk::End
                    } else {
                        Chunk::Data(left - take)
                    };
                }
                Chunk::End => {
                    if bytes.len() - at < 2 {
                        return Ok(at);
                    }
                    if &bytes[at..at + 2] != b"\r\n" {
                        bail!("a chunk not followed by CRLF");
                    }
                    at += 2;
                    self.state = Chunk::Size;
                }
            }
        }
    }

    fn split(&mut self, mut data: &[u8], on_line: &mut impl FnMut(&[u8])) {
        while let Some(eol) = data.iter().position(|&b| b == b'\n') {
            if self.partial.is_empty() {
                on_line(&data[..eol]);
            } else {
                self.partial.extend_from_slice(&data[..eol]);
                on_line(&self.partial);
                self.partial.clear();
            }
            data = &data[eol + 1..];
        }
        self.partial.extend_from_slice(data);
    }

    /// Whether the response ended (its last chunk came).
    pub(crate) fn ended(&self) -> bool {
        self.state == Chunk::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(pieces: &[&[u8]]) -> (Vec<String>, bool) {
        let mut lines = Lines::default();
        let mut got = Vec::new();
        for piece in pieces {
            lines
                .feed(piece, |l| got.push(String::from_utf8_lossy(l).into_owned()))
                .unwrap();
        }
        (got, lines.ended())
    }

    #[test]
    fn chunked_lines_are_decoded_whatever_the_reads_split() {
        let body: &[u8] =
            b"2\r\no\n\r\n9;ext=1\r\na[\"x\"]\nh\n\r\n4\r\na[\"y\r\n3\r\n\"]\n\r\n0\r\n\r\n";
        let want: Vec<String> = ["o", "a[\"x\"]", "h", "a[\"y\"]"].map(String::from).into();
        assert_eq!(decode(&[body]), (want.clone(), true));
        // Every split point, including inside chunk sizes and CRLFs.
        for cut in 1..body.len() {
            assert_eq!(decode(&[&body[..cut], &body[cut..]]), (want.clone(), true));
        }
        let bytewise: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(decode(&bytewise), (want, true));
        assert_eq!(decode(&[b"2\r\no\n"]), (vec!["o".to_owned()], false));
    }

    #[test]
    fn bad_chunks_are_errors() {
        assert!(Lines::default().feed(b"zz\r\n", |_| {}).is_err());
        assert!(Lines::default().feed(b"1\r\nox\r\n", |_| {}).is_err());
        assert!(Lines::default().feed(&[b'1'; 100], |_| {}).is_err());
    }

    #[test]
    fn a_batch_line_holds_one_message_per_element() {
        let line = br#"a["{\"event\":\"bench\",\"data\":\"{\\\"t\\\":7}\"}","{\"event\":\"x\"}"]"#;
        let got = messages(line).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(crate::deliveries::sent_at(got[0].as_bytes()), Some(7));
        assert_eq!(messages(br#"m"{}""#).unwrap(), vec!["{}".to_owned()]);
        assert!(messages(b"h").is_err());
    }

    #[test]
    fn response_heads_give_the_status_and_chunking() {
        let head =
            parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nvary: origin").unwrap();
        assert_eq!(
            head,
            Head {
                status: 200,
                chunked: true
            }
        );
        let head = parse_head(b"HTTP/1.1 204 No Content\r\ncontent-length: 0").unwrap();
        assert!(!head.chunked && head.status == 204);
        assert!(parse_head(b"garbage").is_err());
    }
}
