//! TLS for both listeners (`HERALD_TLS_CERT` / `HERALD_TLS_KEY`): the certificate store every
//! handshake reads, and its reload.
//!
//! The current certificate and key sit in an [`ArcSwap`]: a handshake takes the pair in force
//! when it starts, and a reload swaps in a new one without touching connections already made
//! (their keys were agreed at their handshake). A reload happens on SIGHUP or when either file's
//! inode, modification time or length changes (polled); a pair that does not load (unreadable,
//! not PEM, key not matching the certificate) is logged and the old one kept.
//!
//! A leaf module: it knows files and rustls, not the node.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The environment variable naming the certificate chain file.
pub const CERT_VAR: &str = "HERALD_TLS_CERT";
/// The environment variable naming the private key file.
pub const KEY_VAR: &str = "HERALD_TLS_KEY";

/// The certificate in force, swapped whole on reload.
#[derive(Debug)]
pub struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: ArcSwap<CertifiedKey>,
    /// The files' modification times and lengths when last loaded.
    stamp: ArcSwap<Stamp>,
}

/// Per file: inode, modification time (s, ns) and length; all zero when it cannot be read.
type Stamp = [(u64, i64, i64, u64); 2];

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// TLS for a node: the certificate store and the acceptor both listeners share.
#[derive(Clone)]
pub struct Tls {
    store: Arc<CertStore>,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.store.cert_path)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The files' stamps (a file that cannot be read is reported by the load). A file replaced by a
/// rename has a new inode, even with the same time and length.
fn stamp(cert: &Path, key: &Path) -> Stamp {
    [cert, key].map(|path| match std::fs::metadata(path) {
        #[cfg(unix)]
        Ok(meta) => {
            use std::os::unix::fs::MetadataExt;
            (meta.ino(), meta.mtime(), meta.mtime_nsec(), meta.len())
        }
        #[cfg(not(unix))]
        Ok(meta) => (0, 0, 0, meta.len()),
        Err(_) => (0, 0, 0, 0),
    })
}

/// Loads and checks a certificate chain and its key. The error names the variable at fault and
/// never quotes the key file's content.
pub fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let chain = std::fs::read(cert)
        .map_err(|error| format!("{CERT_VAR}: cannot read {}: {error}", cert.display()))?;
    let chain = CertificateDer::pem_slice_iter(&chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("{CERT_VAR}: {} is not PEM: {error}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{CERT_VAR}: no CERTIFICATE in {}", cert.display()));
    }
    let pem = std::fs::read(key)
        .map_err(|error| format!("{KEY_VAR}: cannot read {}: {error}", key.display()))?;
    // The parser's error may quote a line of the file: it is not passed on.
    let private = PrivateKeyDer::from_pem_slice(&pem).map_err(|_| {
        format!(
            "{KEY_VAR}: no PEM private key (PKCS#8, PKCS#1 or SEC1) in {}",
            key.display()
        )
    })?;
    CertifiedKey::from_der(chain, private, &provider()).map_err(|error| match error {
        rustls::Error::InconsistentKeys(_) => format!(
            "{KEY_VAR}: the key in {} does not match the certificate in {CERT_VAR} ({})",
            key.display(),
            cert.display()
        ),
        _ => format!(
            "{KEY_VAR}: the key in {} cannot be used: {error}",
            key.display()
        ),
    })
}

impl Tls {
    /// Loads the pair and builds the acceptor; an error names the variable at fault.
    pub fn new(cert: &Path, key: &Path) -> Result<Tls, String> {
        let before = stamp(cert, key);
        let certified = load(cert, key)?;
        let store = Arc::new(CertStore {
            cert_path: cert.to_owned(),
            key_path: key.to_owned(),
            current: ArcSwap::from_pointee(certified),
            stamp: ArcSwap::from_pointee(before),
        });
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| format!("TLS: {error}"))?
            .with_no_client_auth()
            .with_cert_resolver(store.clone());
        Ok(Tls {
            store,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// The acceptor handshakes go through.
    pub fn acceptor(&self) -> &tokio_rustls::TlsAcceptor {
        &self.acceptor
    }

    /// Loads the files again and, if they load, puts the new pair in force for handshakes from
    /// now on; otherwise the old pair stays, and the error says why.
    pub fn reload(&self) -> Result<(), String> {
        let store = &self.store;
        let now = stamp(&store.cert_path, &store.key_path);
        // Recorded even when the load fails, so a bad pair is reported once, not every poll.
        store.stamp.store(Arc::new(now));
        let certified = load(&store.cert_path, &store.key_path)?;
        store.current.store(Arc::new(certified));
        Ok(())
    }

    /// [`Tls::reload`], logged: the new pair at info level, a refused one at error level.
    pub fn reload_logged(&self, why: &str) {
        match self.reload() {
            Ok(()) => tracing::info!(why, "TLS certificate reloaded"),
            Err(error) => tracing::error!(
                why,
                %error,
                "TLS certificate not reloaded: the previous one stays in force"
            ),
        }
    }

    /// Whether either file changed since the last load.
    fn changed(&self) -> bool {
        let now = stamp(&self.store.cert_path, &self.store.key_path);
        **self.store.stamp.load() != now
    }

    /// Reloads on SIGHUP and whenever a file changes (checked every `poll`), until `stop`.
    pub async fn watch(self, poll: Duration, stop: tokio_util::sync::CancellationToken) {
        #[cfg(unix)]
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let hung_up = async {
                match hangup.as_mut() {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hung_up = std::future::pending::<()>();
            tokio::select! {
                () = stop.cancelled() => return,
                () = hung_up => self.reload_logged("SIGHUP"),
                _ = tick.tick() => {
                    if self.changed() {
                        self.reload_logged("file changed");
                    }
                }
            }
        }
    }
}
