//! What the sign-up tests share: a small SMTP sink on loopback (enough of RFC 5321 for lettre:
//! EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT) that keeps every message, and the signed-out forms
//! as a browser fills them (the login CSRF double submit included).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use herald::locks::MutexExt;

use crate::dashboard_helpers::{hidden, Browser, Form, Page};

/// One message the sink received.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: Vec<String>,
    /// Headers and body as sent (dot-unstuffed; quoted-printable soft breaks undone).
    pub data: String,
}

impl Mail {
    /// The token of the first link to `path` (`/dashboard/verify`...) in the message.
    pub fn link_token(&self, path: &str) -> String {
        let marker = format!("{path}?token=");
        let start = self
            .data
            .find(&marker)
            .unwrap_or_else(|| panic!("a {path} link in {}", self.data))
            + marker.len();
        self.data[start..]
            .chars()
            .take_while(|c| c.is_ascii_hexdigit())
            .collect()
    }

    /// The whole link to `path`.
    pub fn link(&self, path: &str) -> String {
        let token = self.link_token(path);
        let end = self.data.find(&token).expect("the token") + token.len();
        let start = self.data[..end].rfind("http").expect("the link starts");
        self.data[start..end].to_owned()
    }
}

/// An SMTP server on 127.0.0.1 that accepts everything and keeps it.
#[derive(Clone)]
pub struct SmtpSink {
    pub url: String,
    mails: Arc<Mutex<Vec<Mail>>>,
    arrived: Arc<Notify>,
    /// RCPT commands refused for good (`550`): addresses starting with `rejected`.
    pub rejected: Arc<std::sync::atomic::AtomicUsize>,
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("smtp://{}", listener.local_addr().expect("address"));
        let sink = SmtpSink {
            url,
            mails: Arc::default(),
            arrived: Arc::new(Notify::new()),
            rejected: Arc::default(),
        };
        let serving = sink.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let sink = serving.clone();
                tokio::spawn(async move {
                    let _ = sink.session(socket).await;
                });
            }
        });
        sink
    }

    async fn session(&self, socket: tokio::net::TcpStream) -> std::io::Result<()> {
        let (read, mut write) = socket.into_split();
        let mut lines = BufReader::new(read);
        write.write_all(b"220 sink ESMTP\r\n").await?;
        let mut to = Vec::new();
        loop {
            let mut line = String::new();
            if lines.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let command = line.trim_end().to_ascii_uppercase();
            if command.starts_with("EHLO") || command.starts_with("HELO") {
                write.write_all(b"250-sink\r\n250 8BITMIME\r\n").await?;
            } else if command.starts_with("RCPT TO:") {
                let address = line.trim_end()[8..]
                    .trim()
                    .trim_matches(|c| c == '<' || c == '>');
                if address.starts_with("rejected") {
                    self.rejected
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    write.write_all(b"550 no such mailbox\r\n").await?;
                    continue;
                }
                to.push(address.to_owned());
                write.write_all(b"250 OK\r\n").await?;
            } else if command == "DATA" {
                write.write_all(b"354 go on\r\n").await?;
                let mut data = String::new();
                loop {
                    let mut line = String::new();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                    data.push_str(line.strip_prefix('.').unwrap_or(&line));
                }
                if data.contains("quoted-printable") {
                    data = data.replace("=\r\n", "").replace("=3D", "=");
                }
                self.mails.lock_or_recover().push(Mail {
                    to: std::mem::take(&mut to),
                    data,
                });
                self.arrived.notify_waiters();
                write.write_all(b"250 kept\r\n").await?;
            } else if command == "QUIT" {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            } else if command == "RSET" {
                to.clear();
                write.write_all(b"250 OK\r\n").await?;
            } else {
                // MAIL FROM, NOOP and anything else.
                write.write_all(b"250 OK\r\n").await?;
            }
        }
    }

    /// Every message so far.
    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock_or_recover().clone()
    }

    /// Messages to `address` so far.
    pub fn to(&self, address: &str) -> Vec<Mail> {
        self.mails()
            .into_iter()
            .filter(|m| m.to.iter().any(|t| t == address))
            .collect()
    }

    /// Waits (10 s at most) until `address` has received `count` messages; the last one.
    pub async fn wait_for(&self, address: &str, count: usize) -> Mail {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let arrived = self.arrived.notified();
            let mails = self.to(address);
            if mails.len() >= count {
                return mails[count - 1].clone();
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "{address} got {} messages, not {count}: {:?}",
                    mails.len(),
                    self.mails()
                );
            }
        }
    }
}

/// Opens `get_path` (a signed-out form) and posts `form` to `post_path` with its CSRF token
/// (field and cookie), as a browser does.
pub async fn fill(browser: &Browser<'_>, get_path: &str, post_path: &str, form: &Form) -> Page {
    let page = browser.get(None, get_path).await;
    assert_eq!(page.status, 200, "{get_path}: {}", page.body);
    let token = page
        .cookie("herald_login_csrf")
        .expect("the form sets its CSRF cookie");
    assert_eq!(hidden(&page.body, "csrf"), token, "double-submit token");
    let mut form = form.clone();
    form.push(("csrf", token.clone()));
    let cookie = format!("herald_login_csrf={token}");
    browser.post(Some(&cookie), post_path, &form).await
}

pub async fn sign_up(browser: &Browser<'_>, email: &str, password: &str) -> Page {
    let form: Form = vec![
        ("email", email.to_owned()),
        ("password", password.to_owned()),
        ("confirm", password.to_owned()),
    ];
    fill(browser, "/dashboard/signup", "/dashboard/signup", &form).await
}

pub async fn forgot(browser: &Browser<'_>, email: &str) -> Page {
    let form: Form = vec![("email", email.to_owned())];
    fill(browser, "/dashboard/forgot", "/dashboard/forgot", &form).await
}

/// Follows verification link `token` (the page, then its button) with `password` typed.
pub async fn verify(browser: &Browser<'_>, token: &str, password: &str) -> Page {
    let path = format!("/dashboard/verify?token={token}");
    let form: Form = vec![
        ("token", token.to_owned()),
        ("password", password.to_owned()),
    ];
    fill(browser, &path, "/dashboard/verify", &form).await
}

/// Follows reset link `token` with `password`.
pub async fn reset(browser: &Browser<'_>, token: &str, password: &str) -> Page {
    let path = format!("/dashboard/reset?token={token}");
    let form: Form = vec![
        ("token", token.to_owned()),
        ("new", password.to_owned()),
        ("confirm", password.to_owned()),
    ];
    fill(browser, &path, "/dashboard/reset", &form).await
}
