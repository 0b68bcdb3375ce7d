//! Reading a pusher-js HTTP fallback answer (an `xhr_streaming` stream or an `xhr` poll) line by
//! line, shared by the one-node and the cluster fallback tests.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::WAIT;

/// An open stream (or poll) response, read line by line.
pub struct Lines {
    pub response: reqwest::Response,
    /// What was read past the last whole line.
    pub buffer: Vec<u8>,
}

impl Lines {
    /// `POST url` (with `origin`, if any), which must answer 200.
    pub async fn open(client: &reqwest::Client, url: String, origin: Option<&str>) -> Lines {
        let mut request = client.post(url).header("content-type", "application/json");
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        let response = request.send().await.expect("request is sent");
        assert_eq!(response.status(), 200);
        Lines {
            response,
            buffer: Vec::new(),
        }
    }

    /// The next line within `limit`, `None` once the response ended (cut short counts as
    /// ended).
    pub async fn next_within(&mut self, limit: Duration) -> Option<String> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                return Some(String::from_utf8(line[..end].to_vec()).expect("UTF-8"));
            }
            let chunk = tokio::time::timeout(limit, self.response.chunk())
                .await
                .expect("a line (or the end) arrives in time");
            match chunk {
                Ok(Some(chunk)) => self.buffer.extend_from_slice(&chunk),
                Ok(None) => {
                    assert!(self.buffer.is_empty(), "an unfinished line");
                    return None;
                }
                Err(_) => return None,
            }
        }
    }

    /// The next line within [`WAIT`], `None` once the response ended.
    pub async fn next(&mut self) -> Option<String> {
        self.next_within(WAIT).await
    }

    pub async fn line(&mut self) -> String {
        self.next().await.expect("a line, not the end")
    }

    /// The Pusher events of the next line, which must be an `a` line.
    pub async fn events(&mut self) -> Vec<Value> {
        let line = self.line().await;
        events_of(&line)
    }

    /// Reads lines until an event named `event`; `h` lines are skipped.
    pub async fn expect_event(&mut self, event: &str) -> Value {
        loop {
            let line = self.line().await;
            if line == "h" {
                continue;
            }
            if let Some(found) = events_of(&line).into_iter().find(|e| e["event"] == event) {
                return found;
            }
        }
    }
}

/// The Pusher events in an `a[...]` line.
pub fn events_of(line: &str) -> Vec<Value> {
    let array = line
        .strip_prefix('a')
        .unwrap_or_else(|| panic!("an a line: {line}"));
    let strings: Vec<String> = serde_json::from_str(array).expect("a JSON array of strings");
    strings
        .iter()
        .map(|s| serde_json::from_str(s).expect("each element is a Pusher event"))
        .collect()
}
