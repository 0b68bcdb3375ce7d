//! The `sse` transport: a Mercure subscriber as the browser's `EventSource` is one, over raw
//! HTTP/1.1: `GET /apps/{app_id}/.well-known/mercure?topic={channel}` with a draft-07 JWT
//! (HS256 with the app's secret, `mercure.subscribe: ["*"]`) in `Authorization: Bearer`, then
//! a `text/event-stream` that stays open (close-delimited, or chunked). The topic is the channel's name, so the
//! fan-out's REST triggers reach it through the hub's Pusher bridge (`event:` the event name,
//! `data:` the event's data string, stamped as for WebSocket).

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::deliveries::{sent_at_in, Framing, Tally};
use crate::xhr::{read_head, Lines};
use crate::{source_stream, Target};

/// An open event stream.
pub(crate) struct Stream {
    stream: TcpStream,
    frames: Frames,
}

/// A subscriber token for every topic, valid for a day.
pub(crate) fn token(target: &Target) -> Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = json!({"mercure": {"subscribe": ["*"]}, "iat": now, "exp": now + 86_400});
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(target.secret.as_bytes()),
    )?)
}

/// Subscribes from the source address of `index` to the topic `channel` (`warm`: after a
/// `GET /health` on the same connection).
pub(crate) async fn open_subscribed(
    target: &Target,
    index: usize,
    channel: &str,
    token: &str,
    warm: bool,
) -> Result<Stream> {
    let mut stream = source_stream(target, index).await?;
    if warm {
        let health = format!("GET /health HTTP/1.1\r\nHost: {}\r\n\r\n", target.addr);
        stream.write_all(health.as_bytes()).await?;
        let (head, mut body) = read_head(&mut stream).await?;
        if head.status != 200 {
            bail!("/health answered {}", head.status);
        }
        // The body is `ok\n`.
        while body.len() < 3 {
            let mut more = [0u8; 16];
            let n = stream.read(&mut more).await?;
            if n == 0 {
                bail!("the connection closed after /health");
            }
            body.extend_from_slice(&more[..n]);
        }
    }
    let request = format!(
        "GET /apps/{}/.well-known/mercure?topic={channel} HTTP/1.1\r\nHost: {}\r\n\
         Accept: text/event-stream\r\nAuthorization: Bearer {token}\r\n\r\n",
        target.app_id, target.addr,
    );
    stream.write_all(request.as_bytes()).await?;
    let (head, rest) = read_head(&mut stream).await?;
    if head.status != 200 {
        bail!("the hub answered {}", head.status);
    }
    // Chunked (a subscribe served by hyper), or close-delimited (Herald's direct path).
    let mut frames = Frames {
        lines: if head.chunked {
            Lines::default()
        } else {
            Lines::unchunked()
        },
    };
    frames.lines.feed(&rest, |_| {})?;
    Ok(Stream { stream, frames })
}

impl Stream {
    pub(crate) fn into_reader(self) -> (TcpStream, Frames) {
        (self.stream, self.frames)
    }
}

/// The event stream's framing: each `data:` line carrying a send stamp is one delivery (the
/// fan-out's data is one line); comments, ids and event names are skipped.
#[derive(Default)]
pub(crate) struct Frames {
    lines: Lines,
}

impl Framing for Frames {
    fn read(&mut self, bytes: &[u8], _stream: &TcpStream, tally: &mut Tally<'_>) -> Option<usize> {
        self.lines
            .feed(bytes, |line| {
                if let Some(data) = line.strip_prefix(b"data:") {
                    if let Some(sent) = sent_at_in(data) {
                        tally.stamped(sent);
                    }
                }
            })
            .ok()?;
        (!self.lines.ended()).then_some(bytes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stamp_is_read_from_a_data_line() {
        assert_eq!(sent_at_in(br#" {"seq":3,"t":12345,"p":"xx"}"#), Some(12345));
        assert_eq!(sent_at_in(b" no stamp"), None);
    }
}
