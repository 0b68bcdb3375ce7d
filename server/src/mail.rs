//! Outgoing email (sign-up verification, password resets, invitations): plain-text messages
//! branded by the server's public URL, sent through SMTP (`HERALD_SMTP_URL`, with `lettre` over
//! tokio and rustls) or, without it, written to the log at info level so a single-node trial
//! still gets its links.
//!
//! [`Mailer::send`] never waits for the network: it checks the message and puts it on a bounded
//! queue ([`QUEUE`]); one task sends the queue in order, each message with a timeout
//! ([`SEND_TIMEOUT`]) and one retry. A full queue refuses the message (logged). The SMTP URL's
//! password never appears in a log line or in `Debug` output: the mailer shows the URL without
//! it.
//!
//! A leaf module: it imports nothing from the rest of the crate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::sync::mpsc;

/// Messages waiting to be sent at most; past it [`Mailer::send`] refuses with
/// [`MailError::Full`].
pub const QUEUE: usize = 1_000;
/// How long one SMTP delivery (connect, TLS, the whole dialogue) may take.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the sender waits before its one retry of a failed delivery.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// The longest subject accepted, in bytes.
const MAX_SUBJECT_BYTES: usize = 200;
/// The longest body accepted, in bytes.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// Why a message was not queued, or the mailer not built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    /// `HERALD_SMTP_URL` (shown without its password) cannot be used.
    #[error("HERALD_SMTP_URL {url} cannot be used: {reason}")]
    Url {
        /// The URL, password removed.
        url: String,
        /// Why.
        reason: String,
    },
    /// The sender (`HERALD_SMTP_FROM`) is not an email address.
    #[error("HERALD_SMTP_FROM {0:?} is not an email address")]
    From(String),
    /// The recipient is not an email address.
    #[error("{0:?} is not an email address")]
    Address(String),
    /// The subject or the body is too long, or the message cannot be built.
    #[error("the message cannot be built: {0}")]
    Message(String),
    /// The queue is full (the SMTP server is slow or down): the message was dropped.
    #[error("the outgoing mail queue is full")]
    Full,
}

/// What the mailer has done since it started (tests and `/metrics` read it).
#[derive(Debug, Default)]
pub struct MailStats {
    /// Messages accepted by [`Mailer::send`].
    pub queued: AtomicU64,
    /// Messages the SMTP server accepted.
    pub sent: AtomicU64,
    /// Messages written to the log (no `HERALD_SMTP_URL`).
    pub logged: AtomicU64,
    /// Messages given up after the retry.
    pub failed: AtomicU64,
    /// Messages refused because the queue was full.
    pub dropped: AtomicU64,
}

/// Where messages go.
enum Transport {
    /// Into the log, at info level.
    Log,
    /// To this SMTP server.
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
}

/// One message on the queue.
struct Outgoing {
    to: String,
    subject: String,
    message: Message,
    body: String,
}

/// The server's mailer: cheap to clone, every clone feeding the same queue.
#[derive(Clone)]
pub struct Mailer {
    queue: mpsc::Sender<Outgoing>,
    from: Mailbox,
    public_url: String,
    /// The SMTP URL without its password (`None`: the log).
    shown_url: Option<String>,
    stats: Arc<MailStats>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("smtp", &self.shown_url.as_deref().unwrap_or("(log)"))
            .field("from", &self.from.to_string())
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

/// `url` without its password (`smtps://user:***@host:465`), for logs and errors; an
/// unparsable URL is not shown at all (it may hold a password in a place the parser missed).
pub fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "(unparsable URL)".to_owned(),
    }
}

/// The default sender: `Herald <no-reply@HOST>`, HOST the public URL's host name (`localhost`
/// when it is an IP address, which is no mail domain).
fn default_from(public_url: &str) -> Mailbox {
    let host = url::Url::parse(public_url)
        .ok()
        .and_then(|u| match u.host() {
            Some(url::Host::Domain(domain)) => Some(domain.to_owned()),
            _ => None,
        })
        .unwrap_or_else(|| "localhost".to_owned());
    format!("Herald <no-reply@{host}>")
        .parse()
        .unwrap_or_else(|_| Mailbox::new(None, "no-reply@localhost".parse().expect("valid")))
}

impl Mailer {
    /// Starts the mailer's sending task (call inside the runtime): SMTP through `smtp_url`
    /// (`smtp://` or `smtps://user:pass@host:port`; `?tls=required` for STARTTLS), or the log
    /// when it is `None`. Messages come from `from` (default `Herald <no-reply@HOST>`) and end
    /// with a line naming `public_url`.
    pub fn start(
        smtp_url: Option<&str>,
        from: Option<&str>,
        public_url: &str,
    ) -> Result<Mailer, MailError> {
        let transport = match smtp_url {
            None => Transport::Log,
            Some(url) => {
                let shown = redacted_url(url);
                let scheme_ok = url.starts_with("smtp://") || url.starts_with("smtps://");
                if !scheme_ok {
                    return Err(MailError::Url {
                        url: shown,
                        reason: "it must start with smtp:// or smtps://".into(),
                    });
                }
                let builder =
                    AsyncSmtpTransport::<Tokio1Executor>::from_url(url).map_err(|error| {
                        MailError::Url {
                            url: shown.clone(),
                            // lettre's errors name the URL's parts but never the credentials.
                            reason: error.to_string(),
                        }
                    })?;
                Transport::Smtp(builder.timeout(Some(SEND_TIMEOUT)).build())
            }
        };
        let from = match from {
            Some(from) => from
                .parse::<Mailbox>()
                .map_err(|_| MailError::From(from.to_owned()))?,
            None => default_from(public_url),
        };
        let (queue, receiver) = mpsc::channel(QUEUE);
        let stats = Arc::new(MailStats::default());
        tokio::spawn(deliver(transport, receiver, stats.clone()));
        Ok(Mailer {
            queue,
            from,
            public_url: public_url.trim_end_matches('/').to_owned(),
            shown_url: smtp_url.map(redacted_url),
            stats,
        })
    }

    /// The server's public URL, links in messages are built on (no trailing `/`).
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// Whether messages go to an SMTP server (`false`: to the log).
    pub fn uses_smtp(&self) -> bool {
        self.shown_url.is_some()
    }

    /// What the mailer has done.
    pub fn stats(&self) -> &MailStats {
        &self.stats
    }

    /// Queues a plain-text message to `to`; `body` gets a signature line naming the public URL.
    /// Returns once the message is on the queue (never waits for the network); a full queue or a
    /// bad address is an error, logged by the caller as it sees fit.
    pub async fn send(&self, to: &str, subject: &str, body: &str) -> Result<(), MailError> {
        let recipient: Mailbox = to
            .trim()
            .parse()
            .map_err(|_| MailError::Address(to.to_owned()))?;
        if subject.len() > MAX_SUBJECT_BYTES || body.len() > MAX_BODY_BYTES {
            return Err(MailError::Message("subject or body too long".into()));
        }
        let body = format!(
            "{}\n\n-- \nHerald at {}\n",
            body.trim_end(),
            self.public_url
        );
        let message = Message::builder()
            .from(self.from.clone())
            .to(recipient)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body.clone())
            .map_err(|error| MailError::Message(error.to_string()))?;
        let outgoing = Outgoing {
            to: to.trim().to_owned(),
            subject: subject.to_owned(),
            message,
            body,
        };
        match self.queue.try_send(outgoing) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(_) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    queue = QUEUE,
                    "the outgoing mail queue is full: a message was dropped"
                );
                Err(MailError::Full)
            }
        }
    }
}

/// The sending task: one message at a time, in order, until every mailer clone is gone.
async fn deliver(
    transport: Transport,
    mut receiver: mpsc::Receiver<Outgoing>,
    stats: Arc<MailStats>,
) {
    while let Some(outgoing) = receiver.recv().await {
        match &transport {
            Transport::Log => {
                stats.logged.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    to = %outgoing.to,
                    subject = %outgoing.subject,
                    body = ?outgoing.body,
                    "email not sent (no HERALD_SMTP_URL): here it is"
                );
            }
            Transport::Smtp(smtp) => {
                let mut attempt = 1;
                loop {
                    let result =
                        tokio::time::timeout(SEND_TIMEOUT, smtp.send(outgoing.message.clone()))
                            .await;
                    let error = match result {
                        Ok(Ok(_)) => {
                            stats.sent.fetch_add(1, Ordering::Relaxed);
                            tracing::info!(to = %outgoing.to, subject = %outgoing.subject, "email sent");
                            break;
                        }
                        Ok(Err(error)) => {
                            let permanent = error.is_permanent();
                            let error = error.to_string();
                            if permanent {
                                // A 5xx answer (no such mailbox, refused): trying again gets
                                // the same answer and only holds up the messages behind it.
                                stats.failed.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(to = %outgoing.to, subject = %outgoing.subject, %error, "an email was refused for good");
                                break;
                            }
                            error
                        }
                        Err(_) => format!("no answer within {}s", SEND_TIMEOUT.as_secs()),
                    };
                    if attempt >= 2 {
                        stats.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(to = %outgoing.to, subject = %outgoing.subject, %error, "an email could not be sent");
                        break;
                    }
                    tracing::info!(%error, "an email could not be sent: retrying");
                    attempt += 1;
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smtp_password_is_never_shown() {
        let shown = redacted_url("smtps://mailer:s3cret-pass@smtp.example.com:465");
        assert_eq!(shown, "smtps://mailer:***@smtp.example.com:465");
        assert_eq!(
            redacted_url("smtp://127.0.0.1:2525"),
            "smtp://127.0.0.1:2525"
        );
        assert!(!redacted_url("smtps://u:p%40ss@[bad").contains("p%40ss"));
    }

    #[tokio::test]
    async fn a_bad_url_or_sender_is_refused_without_its_password() {
        let error = Mailer::start(Some("http://u:hunter22@mail.test"), None, "http://x.test")
            .unwrap_err()
            .to_string();
        assert!(error.contains("smtp://"), "{error}");
        assert!(!error.contains("hunter22"), "{error}");
        let error = Mailer::start(None, Some("not an address"), "http://x.test").unwrap_err();
        assert!(matches!(error, MailError::From(_)));
        let mailer = Mailer::start(
            Some("smtps://u:hunter22@mail.test:465"),
            None,
            "https://push.example.com/",
        )
        .unwrap();
        let debug = format!("{mailer:?}");
        assert!(!debug.contains("hunter22"), "{debug}");
        assert!(debug.contains("no-reply@push.example.com"), "{debug}");
        assert_eq!(mailer.public_url(), "https://push.example.com");
    }

    #[tokio::test]
    async fn bad_recipients_and_a_full_queue_are_errors_not_waits() {
        // An SMTP server nobody answers on: the queue fills while the first delivery waits.
        let mailer = Mailer::start(Some("smtp://10.255.255.1:25"), None, "http://x.test").unwrap();
        assert!(matches!(
            mailer.send("nobody", "Hi", "body").await,
            Err(MailError::Address(_))
        ));
        let started = tokio::time::Instant::now();
        let mut full = 0;
        for _ in 0..QUEUE + 5 {
            if mailer.send("a@example.test", "Hi", "body").await == Err(MailError::Full) {
                full += 1;
            }
        }
        assert!(full >= 4, "{full}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(mailer.stats().dropped.load(Ordering::Relaxed), full);
    }
}
