//! The fan-out readers: one task per subscriber reads its deliveries straight off the raw TCP
//! stream (the reader must cost far less than the server it measures, or the latencies are its
//! own) and records the latency of every stamped delivery. What differs between transports is
//! only the framing ([`Framing`]): WebSocket frames, or `xhr_streaming`'s chunked lines.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::net::TcpStream;

/// How a transport's bytes become Pusher messages.
pub(crate) trait Framing: Send + 'static {
    /// Reads the complete frames at the start of `bytes`, handing each Pusher message to
    /// `tally` (and answering the server's keepalives, on `stream` or otherwise); returns the
    /// bytes consumed, or `None` once the server closed the session or sent something unreadable.
    fn read(&mut self, bytes: &[u8], stream: &TcpStream, tally: &mut Tally<'_>) -> Option<usize>;
}

/// What the readers of one fan-out run share: the clock the send stamps count from, the
/// deliveries counted and their latencies (µs).
#[derive(Clone)]
pub(crate) struct Deliveries {
    pub(crate) start: Instant,
    pub(crate) received: Arc<AtomicU64>,
    pub(crate) latencies: Arc<Mutex<Vec<u64>>>,
}

impl Deliveries {
    pub(crate) fn new(start: Instant) -> Deliveries {
        Deliveries {
            start,
            received: Arc::new(AtomicU64::new(0)),
            latencies: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub(crate) fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// The latencies recorded so far, sorted.
    pub(crate) fn sorted_latencies(&self) -> Vec<u64> {
        let mut sorted =
            std::mem::take(&mut *self.latencies.lock().unwrap_or_else(|p| p.into_inner()));
        sorted.sort_unstable();
        sorted
    }

    /// Counts `message` if it is a stamped event (its latency into `mine`); whether it was.
    pub(crate) fn count(&self, message: &[u8], mine: &mut Vec<u64>) -> bool {
        let mut tally = Tally {
            now: micros_since(self.start),
            mine,
            received: &self.received,
        };
        let counted = tally.message(message);
        if mine.len() >= 256 {
            self.hand_over(mine);
        }
        counted
    }

    pub(crate) fn hand_over(&self, mine: &mut Vec<u64>) {
        self.latencies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .append(mine);
    }
}

/// One read's worth of messages: the time they were read at and one reader's own latencies.
pub(crate) struct Tally<'a> {
    now: u64,
    mine: &'a mut Vec<u64>,
    received: &'a AtomicU64,
}

impl Tally<'_> {
    /// Counts `message` (the text of one Pusher message) as a delivery if it carries a send
    /// stamp; returns whether it did.
    pub(crate) fn message(&mut self, message: &[u8]) -> bool {
        let Some(sent) = sent_at(message) else {
            return false;
        };
        self.stamped(sent);
        true
    }

    /// Counts one delivery sent at `sent` (µs since the start).
    pub(crate) fn stamped(&mut self, sent: u64) {
        self.mine.push(self.now.saturating_sub(sent));
        self.received.fetch_add(1, Ordering::Relaxed);
    }
}

pub(crate) fn micros_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// The send stamp (`"t":MICROS` inside the event's JSON-encoded data) of a delivered message.
pub(crate) fn sent_at(text: &[u8]) -> Option<u64> {
    stamp_after(text, b"t\\\":")
}

/// The send stamp (`"t":MICROS`) of the event's data as such (an SSE `data:` line).
pub(crate) fn sent_at_in(data: &[u8]) -> Option<u64> {
    stamp_after(data, b"\"t\":")
}

fn stamp_after(text: &[u8], pattern: &[u8]) -> Option<u64> {
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

/// Reads one subscriber's messages until the server closes or `stop` changes, counting the
/// stamped deliveries into `deliveries`.
pub(crate) async fn read_deliveries(
    stream: TcpStream,
    mut framing: impl Framing,
    deliveries: Deliveries,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut filled = 0;
    let mut mine = Vec::new();
    loop {
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
        let mut tally = Tally {
            now: micros_since(deliveries.start),
            mine: &mut mine,
            received: &deliveries.received,
        };
        let Some(consumed) = framing.read(&buf[..filled], &stream, &mut tally) else {
            break;
        };
        buf.copy_within(consumed..filled, 0);
        filled -= consumed;
        if filled == buf.len() {
            // One frame larger than the buffer.
            buf.resize(buf.len() * 2, 0);
        }
        if mine.len() >= 256 {
            deliveries.hand_over(&mut mine);
        }
    }
    deliveries.hand_over(&mut mine);
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
    }
}
