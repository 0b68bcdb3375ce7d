//! The Mercure tests' helpers: tokens minted with `jsonwebtoken` (HS256 with the app's secret,
//! the default key), publishing over raw HTTP, and an SSE reader over a streamed response.
#![allow(dead_code)]

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{now, TestApp, APP_ID, SECRET, WAIT};

pub fn hub() -> String {
    format!("/apps/{APP_ID}/.well-known/mercure")
}

/// A token signed with `secret` carrying `claims`.
pub fn token_with(secret: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("token encodes")
}

/// A draft-07 token (the `mercure` claim) valid for an hour.
pub fn token07(subscribe: &[&str], publish: &[&str]) -> String {
    token_with(
        SECRET,
        json!({"mercure": {"subscribe": subscribe, "publish": publish}, "exp": now() + 3600}),
    )
}

/// A draft-08 access token (`at+jwt`) for `app`'s hub that reads every topic.
pub fn token08_reader(app: &TestApp) -> String {
    token08_reader_for(&format!("http://{}{}", app.address, hub()))
}

/// A draft-08 access token (`at+jwt`) for the hub at `aud` that reads every topic.
pub fn token08_reader_for(aud: &str) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    jsonwebtoken::encode(
        &header,
        &json!({
            "iss": "https://auth.example.com",
            "aud": aud,
            "exp": now() + 3600,
            "authorization_details": [{
                "type": "https://mercure.rocks/authorization-detail",
                "actions": ["subscribe"],
                "topics": [{"match": "*"}],
            }],
        }),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("token encodes")
}

/// A publisher's token for every topic.
pub fn publisher() -> String {
    token07(&[], &["*"])
}

/// Publishes `form` (already encoded pairs) with `token`; answers status and body.
pub async fn publish_as(
    app: &TestApp,
    token: Option<&str>,
    form: &[(&str, &str)],
) -> (u16, String) {
    let (status, _, body) = publish_full(app, &hub(), token, form).await;
    (status, body)
}

/// Publishes with the all-topics publisher token; panics unless 200; answers the id.
pub async fn publish(app: &TestApp, form: &[(&str, &str)]) -> String {
    let (status, body) = publish_as(app, Some(&publisher()), form).await;
    assert_eq!(status, 200, "publish answered {body}");
    body
}

pub async fn publish_full(
    app: &TestApp,
    path: &str,
    token: Option<&str>,
    form: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String) {
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let mut request = app
        .http
        .post(app.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("publish request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap_or_default())
}

/// One SSE event as read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: String,
    pub event: String,
    pub data: String,
    pub retry: Option<u64>,
}

/// An open SSE stream.
pub struct Sse {
    pub response: reqwest::Response,
    pub headers: reqwest::header::HeaderMap,
    buffer: String,
}

/// A subscribe request's outcome before it is read.
pub async fn subscribe_raw(
    app: &TestApp,
    query: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = app.http.get(app.url(&format!("{}?{query}", hub())));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    tokio::time::timeout(WAIT, request.send())
        .await
        .expect("subscribe answers in time")
        .expect("subscribe request")
}

/// Subscribes with `query` and `token` (and extra headers); panics unless 200.
pub async fn subscribe_with(
    app: &TestApp,
    query: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> Sse {
    let response = subscribe_raw(app, query, token, headers).await;
    assert_eq!(response.status().as_u16(), 200, "subscribe refused");
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut sse = Sse {
        headers: response.headers().clone(),
        response,
        buffer: String::new(),
    };
    sse.await_open().await;
    sse
}

/// Subscribes with a token that reads every topic.
/// (A draft-08 query, with `match*` or `last_event_id`, gets a draft-08 token.)
pub async fn subscribe(app: &TestApp, query: &str) -> Sse {
    let draft08 = query
        .split('&')
        .any(|pair| pair.starts_with("match") || pair.starts_with("last_event_id"));
    let token = if draft08 {
        token08_reader(app)
    } else {
        token07(&["*"], &[])
    };
    subscribe_with(app, query, Some(&token), &[]).await
}

impl Sse {
    /// Subscribes at `url` (a node run as a process) with `token`; panics unless 200.
    pub async fn open(http: &reqwest::Client, url: &str, token: &str) -> Sse {
        let response = tokio::time::timeout(WAIT, http.get(url).bearer_auth(token).send())
            .await
            .expect("subscribe answers in time")
            .expect("subscribe request");
        assert_eq!(response.status().as_u16(), 200, "subscribe refused");
        let mut sse = Sse {
            headers: response.headers().clone(),
            response,
            buffer: String::new(),
        };
        sse.await_open().await;
        sse
    }

    /// The stream of an accepted subscribe (200), once it is open.
    pub async fn from_response(response: reqwest::Response) -> Sse {
        let mut sse = Sse {
            headers: response.headers().clone(),
            response,
            buffer: String::new(),
        };
        sse.await_open().await;
        sse
    }

    /// Reads until the opening comment (the subscription is registered once it is sent).
    async fn await_open(&mut self) {
        while !self.buffer.contains("\n\n") {
            self.read().await.expect("the stream opens");
        }
    }

    async fn read(&mut self) -> Option<()> {
        let chunk = tokio::time::timeout(WAIT, self.response.chunk())
            .await
            .expect("a chunk in time")
            .ok()??;
        self.buffer
            .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        Some(())
    }

    /// The next event (comments skipped).
    pub async fn next(&mut self) -> Event {
        self.try_next()
            .await
            .expect("an event before the stream ends")
    }

    /// The next event, or `None` when the stream ends first.
    pub async fn try_next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.buffered() {
                return Some(event);
            }
            self.read().await?;
        }
    }

    /// The next event within `limit` (which may be longer than [`WAIT`]: heartbeats are 20 s
    /// apart), or `None` when none came in time or the stream ended.
    pub async fn next_within(&mut self, limit: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(event) = self.buffered() {
                return Some(event);
            }
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Ok(Ok(Some(chunk))) => self
                    .buffer
                    .push_str(std::str::from_utf8(&chunk).expect("UTF-8")),
                _ => return None,
            }
        }
    }

    /// The first whole event in the buffer, taken out (comments skipped).
    fn buffered(&mut self) -> Option<Event> {
        while let Some(end) = self.buffer.find("\n\n") {
            let block: String = self.buffer.drain(..end + 2).collect();
            let mut event = Event::default();
            let mut data = Vec::new();
            let mut any = false;
            for line in block.lines() {
                let Some((name, value)) = line.split_once(':') else {
                    continue;
                };
                let value = value.strip_prefix(' ').unwrap_or(value);
                match name {
                    "" => continue,
                    "id" => event.id = value.to_owned(),
                    "event" => event.event = value.to_owned(),
                    "data" => data.push(value.to_owned()),
                    "retry" => event.retry = value.parse().ok(),
                    other => panic!("unknown SSE field {other}"),
                }
                any = true;
            }
            if any {
                event.data = data.join("\n");
                return Some(event);
            }
        }
        None
    }

    /// The data of the next `n` events.
    pub async fn data(&mut self, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(self.next().await.data);
        }
        out
    }

    /// Nothing but comments arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Ok(event) = tokio::time::timeout(wait, self.try_next()).await {
            panic!("expected silence, got {event:?}");
        }
    }

    /// The stream ends (within [`WAIT`]).
    pub async fn expect_end(&mut self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Ok(Ok(Some(_))) => continue,
                Ok(_) => return,
                Err(_) => panic!("the stream did not end"),
            }
        }
    }
}
