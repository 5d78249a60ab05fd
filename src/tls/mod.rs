//! TLS settings: the certificate and key (from `--tls-cert`/`--tls-key`, `[tls]` in the config
//! file, or systemd credentials `tls.crt` + `tls.key`), loaded and checked into a rustls
//! [`ServerConfig`] (TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`, the `ring` provider).
//!
//! Loading happens with the rest of the configuration, so a bad or mismatched pair is a config
//! error: `heird check` reports it, and a successor that meets it fails its handoff (the old
//! process keeps serving with the certificate it has). Serving TLS is `server`'s job.
//!
//! - `source`: which pair ([`resolve`]: command line, `[tls]`, systemd credentials).
//! - `cert`: the PEM pair → a checked rustls key, and what the leaf says ([`CertInfo`]).
//! - [`tickets`]: session-ticket keys that survive handoffs and restarts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

mod cert;
mod source;
pub mod tickets;
pub use cert::CertInfo;
use cert::{certified_key, httpdate};
pub use source::{TlsSpec, resolve};
use tickets::Ticketer;

/// File names looked up in `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=tls.crt:…`).
pub const CREDENTIAL_CERT: &str = "tls.crt";
pub const CREDENTIAL_KEY: &str = "tls.key";
/// Default bound on a TLS handshake, from accept to the end of the handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// `heird check` and the start warn when the certificate expires within this long.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read tls certificate {path}: {source}")]
    ReadCert { path: PathBuf, source: std::io::Error },
    #[error("cannot read tls key {path}: {source}")]
    ReadKey { path: PathBuf, source: std::io::Error },
    #[error("tls certificate {path}: {reason}")]
    Cert { path: PathBuf, reason: String },
    #[error("tls key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("tls key {key} does not match the certificate {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("tls: {0}")]
    Rustls(rustls::Error),
    #[error("tls session tickets: {0}")]
    Tickets(String),
    #[error("{origin}: {message}")]
    Spec { origin: String, message: String },
}

/// Where the certificate and key come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `--tls-cert`/`--tls-key` or `[tls] cert`/`key`.
    Paths,
    /// `$CREDENTIALS_DIRECTORY/tls.crt` and `tls.key`.
    Credentials,
}

/// Loaded, checked TLS settings of one process.
#[derive(Debug)]
pub struct TlsSetup {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub source: Source,
    /// Listener names (`LISTEN_FDNAMES`) that speak TLS; `None`: every listener.
    pub listeners: Option<Vec<String>>,
    /// Accept to end of handshake (the ClientHello included).
    pub handshake_timeout: Duration,
    pub server_config: Arc<ServerConfig>,
    pub cert: CertInfo,
    /// Session-ticket keys (handed to a successor at a handoff).
    pub tickets: Arc<Ticketer>,
    /// Where the ticket keys came from, for the start's log line.
    pub tickets_origin: String,
}

impl TlsSetup {
    /// Reads and checks the pair; builds the rustls config.
    pub fn load(
        cert_path: &Path,
        key_path: &Path,
        source: Source,
        listeners: Option<Vec<String>>,
        handshake_timeout: Duration,
    ) -> Result<TlsSetup, TlsError> {
        let cert_pem = std::fs::read(cert_path).map_err(|source| TlsError::ReadCert {
            path: cert_path.into(),
            source,
        })?;
        let key_pem = std::fs::read(key_path).map_err(|source| TlsError::ReadKey {
            path: key_path.into(),
            source,
        })?;
        let (certified, cert) = certified_key(&cert_pem, &key_pem, cert_path, key_path)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(TlsError::Rustls)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(OneCert(Arc::new(certified))));
        let (tickets, tickets_origin) = inherited_ticketer()?;
        let tickets = Arc::new(tickets);
        config.ticketer = tickets.clone();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // No 0-RTT (replayable requests): rustls's default, said out loud.
        config.max_early_data_size = 0;
        Ok(TlsSetup {
            cert_path: cert_path.into(),
            key_path: key_path.into(),
            source,
            listeners,
            handshake_timeout,
            server_config: Arc::new(config),
            cert,
            tickets,
            tickets_origin,
        })
    }

    /// One line for `heird check`: what was loaded and until when it is valid.
    pub fn describe(&self) -> String {
        format!(
            "tls: certificate {} and key {} match; subject {}, names [{}], valid until {}, sha256 {}",
            self.cert_path.display(),
            self.key_path.display(),
            self.cert.subject,
            self.cert.dns_names.join(", "),
            httpdate(self.cert.not_after),
            self.cert.sha256
        )
    }

    /// Whether the listener named `name` speaks TLS.
    pub fn applies_to(&self, name: &str) -> bool {
        self.listeners
            .as_ref()
            .is_none_or(|l| l.iter().any(|n| n == name))
    }

    /// Warnings about the certificate at `now`: expired, expiring within 14 days, not yet valid.
    pub fn warnings(&self, now: SystemTime) -> Vec<String> {
        self.cert.warnings(&self.cert_path, now)
    }

    /// True when `sni` is one of the certificate's DNS names (a `*.` wildcard matches one label).
    pub fn serves_name(&self, sni: &str) -> bool {
        self.cert.matches(sni)
    }
}

/// The ticket keys a predecessor passed (`HEIRD_TLS_TICKET_KEYS_FD`), else fresh ones; with a
/// note on where they came from. Runs before any thread exists (it unsets the variable).
fn inherited_ticketer() -> Result<(Ticketer, String), TlsError> {
    let fresh = |why: String| {
        Ticketer::new()
            .map(|t| (t, why))
            .map_err(|e| TlsError::Tickets(e.to_string()))
    };
    let Some(v) = std::env::var_os(tickets::KEYS_FD_VAR) else {
        return fresh("new".into());
    };
    if let Err(e) = crate::sys::remove_env(&[tickets::KEYS_FD_VAR]) {
        return fresh(format!("new ({} not unset: {e})", tickets::KEYS_FD_VAR));
    }
    let fd = v
        .to_str()
        .and_then(|s| s.parse::<i32>().ok())
        .filter(|fd| *fd >= 3);
    let Some(fd) = fd else {
        return fresh(format!("new ({}={v:?} is not an fd)", tickets::KEYS_FD_VAR));
    };
    match crate::sys::take_inherited_fd(fd) {
        Ok(Some(owned)) => match Ticketer::from_fd(owned) {
            Ok(t) => Ok((t, "the predecessor".into())),
            Err(e) => fresh(format!("new (fd {fd}: {e})")),
        },
        Ok(None) => fresh(format!("new (fd {fd} is not open)")),
        Err(e) => fresh(format!("new (fd {fd}: {e})")),
    }
}

/// Serves the one certificate whatever the client asked for (an unknown SNI is logged by the
/// connection, which sees the peer).
#[derive(Debug)]
struct OneCert(Arc<CertifiedKey>);

impl ResolvesServerCert for OneCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}
