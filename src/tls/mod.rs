//! HTTPS: a [`TlsSetup`] in [`ServeSettings::tls`](crate::ServeSettings::tls) makes every
//! listener, or those it names, speak TLS 1.2 and 1.3 with ALPN `h2` and `http/1.1`.
//!
//! The certificate comes from one of three places:
//! - a certificate and key in PEM files: [`TlsSetup::from_files`];
//! - the systemd credentials `tls.crt` and `tls.key` (`LoadCredential=tls.crt:…` in the unit,
//!   read from `$CREDENTIALS_DIRECTORY`): [`TlsSetup::from_credentials`];
//! - the app's own [`rustls::ServerConfig`] (a certificate resolver of its own, client
//!   authentication, other protocol versions): [`TlsSetup::from_server_config`].
//!
//! [`TlsSetup::on_listeners`] limits TLS to the listeners it names (`LISTEN_FDNAMES`, i.e.
//! `FileDescriptorName=`), so that one process serves HTTPS on one socket and plain HTTP on
//! another; a name that is not a listener of the process is an error at the start.
//!
//! Rotation: each process reads its certificate when it starts, so a reload (a handoff to a new
//! process) puts a renewed certificate into service while the old process drains; a successor
//! that cannot load it fails its handoff, and the old process serves on with the one it has.
//!
//! Session tickets survive handoffs and restarts: heird encrypts them with keys of its own,
//! which a process hands to its successor at a handoff and keeps in systemd's fd store, so a
//! client holding a ticket from the old process resumes with the new one (an abbreviated
//! handshake). That holds for all three sources: heird sets its own ticketer in the app's
//! `ServerConfig` too. 0-RTT (early data, replayable) stays off.
//!
//! TLS connections do not move to a successor (rustls keeps their record state in the
//! process): at a drain, HTTP/1.1 over TLS is answered with `Connection: close` and h2 gets the
//! two-step GOAWAY.
//!
//! - `cert`: the PEM pair → a checked rustls key, and what the leaf says ([`CertInfo`]).
//! - `credentials`: the pair in `$CREDENTIALS_DIRECTORY`.
//! - `tickets`: session-ticket keys that survive handoffs and restarts.

use std::fmt;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

mod cert;
mod credentials;
pub(crate) mod tickets;

pub use cert::CertInfo;
use cert::{certified_key, httpdate};
/// The rustls that heird uses, for [`TlsSetup::from_server_config`]: build the `ServerConfig`
/// with this one, so that the versions match.
pub use rustls;
use tickets::Ticketer;

/// File names looked up in `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=tls.crt:…`).
pub const CREDENTIAL_CERT: &str = "tls.crt";
/// The key's credential name, beside [`CREDENTIAL_CERT`].
pub const CREDENTIAL_KEY: &str = "tls.key";
/// Default bound on a TLS handshake, from accept to the end of the handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// [`TlsSetup::warnings`] warns when the certificate expires within this long.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// The crypto provider heird builds its own configs with (rustls's `ring` provider), for an app
/// that builds its own [`rustls::ServerConfig`] with `builder_with_provider` (rather than
/// `builder()`, which needs a process-wide default when the build has more than one provider).
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(cert::provider())
}

/// Why a certificate, a key or a TLS setting cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
// Each variant is documented by its message.
#[allow(missing_docs)]
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
#[non_exhaustive]
pub enum Source {
    /// PEM files ([`TlsSetup::from_files`]).
    Paths,
    /// `$CREDENTIALS_DIRECTORY/tls.crt` and `tls.key` ([`TlsSetup::from_credentials`]).
    Credentials,
    /// The app's own `ServerConfig` ([`TlsSetup::from_server_config`]).
    ServerConfig,
}

/// The TLS settings of one process, loaded and checked: see the [module doc](self).
///
/// ```no_run
/// # fn f() -> Result<(), heird::tls::TlsError> {
/// use std::sync::Arc;
/// let mut options = heird::Options::default();
/// let tls = heird::tls::TlsSetup::from_files("/etc/myapp/tls.crt", "/etc/myapp/tls.key")?
///     .on_listeners(["https"]);
/// options.serve.tls = Some(Arc::new(tls));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct TlsSetup {
    pub(crate) cert_path: PathBuf,
    pub(crate) key_path: PathBuf,
    pub(crate) source: Source,
    /// Listener names (`LISTEN_FDNAMES`) that speak TLS; `None`: every listener.
    pub(crate) listeners: Option<Vec<String>>,
    /// Accept to end of handshake (the ClientHello included).
    pub(crate) handshake_timeout: Duration,
    pub(crate) server_config: Arc<ServerConfig>,
    /// What the leaf says; for [`Source::ServerConfig`], nothing is known (see `known_cert`).
    pub(crate) cert: CertInfo,
    known_cert: bool,
    /// Session-ticket keys (handed to a successor at a handoff).
    pub(crate) tickets: Arc<Ticketer>,
    /// Where the ticket keys came from, for the start's log line.
    pub(crate) tickets_origin: TicketsOrigin,
}

impl TlsSetup {
    /// Reads and checks the PEM certificate chain at `cert` and the private key at `key`
    /// (PKCS#8, PKCS#1 or SEC1): both readable, the key the leaf's.
    pub fn from_files(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<TlsSetup, TlsError> {
        TlsSetup::load(cert.as_ref(), key.as_ref(), Source::Paths)
    }

    /// The systemd credentials `tls.crt` and `tls.key` in `$CREDENTIALS_DIRECTORY` (the unit's
    /// `LoadCredential=tls.crt:/etc/…` and `LoadCredential=tls.key:/etc/…`): `None` when
    /// neither is there (or there is no credentials directory); an error for one without the
    /// other, or a pair that does not load.
    pub fn from_credentials() -> Result<Option<TlsSetup>, TlsError> {
        match std::env::var_os("CREDENTIALS_DIRECTORY").filter(|v| !v.is_empty()) {
            Some(dir) => TlsSetup::from_credentials_in(Path::new(&dir)),
            None => Ok(None),
        }
    }

    /// Like [`TlsSetup::from_credentials`], in the directory `dir`.
    pub fn from_credentials_in(dir: &Path) -> Result<Option<TlsSetup>, TlsError> {
        match credentials::pair(dir)? {
            Some((c, k)) => TlsSetup::load(&c, &k, Source::Credentials).map(Some),
            None => Ok(None),
        }
    }

    /// The app's own rustls config, as it is, except for two things: heird's session-ticket
    /// keys replace its ticketer (so that tickets resume across handoffs), and early data is
    /// off. Its ALPN list decides the protocols: `h2` is served as HTTP/2, anything else (or no
    /// ALPN) as HTTP/1.1; leave it empty for HTTP/1.1 only. Build it with [`rustls`] (this
    /// module's re-export), e.g. with `ServerConfig::builder()`.
    pub fn from_server_config(mut config: ServerConfig) -> Result<TlsSetup, TlsError> {
        let tickets = Arc::new(Ticketer::new().map_err(|e| TlsError::Tickets(e.to_string()))?);
        config.ticketer = tickets.clone();
        config.max_early_data_size = 0;
        Ok(TlsSetup {
            cert_path: PathBuf::from("(the app's rustls ServerConfig)"),
            key_path: PathBuf::from("-"),
            source: Source::ServerConfig,
            listeners: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            server_config: Arc::new(config),
            cert: CertInfo::unknown(),
            known_cert: false,
            tickets,
            tickets_origin: TicketsOrigin::new("new"),
        })
    }

    /// TLS only on the listeners named here (`LISTEN_FDNAMES`, or heird's `bound-…` names);
    /// the others serve plain HTTP. Without it, every listener speaks TLS.
    pub fn on_listeners<I, S>(mut self, names: I) -> TlsSetup
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.listeners = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// How long a connection may take from its accept to the end of its handshake (the
    /// default is [`DEFAULT_HANDSHAKE_TIMEOUT`]).
    pub fn handshake_timeout(mut self, timeout: Duration) -> TlsSetup {
        self.handshake_timeout = timeout;
        self
    }

    /// Where the certificate came from.
    pub fn source(&self) -> Source {
        self.source
    }

    /// The certificate file (for [`Source::ServerConfig`], `None`).
    pub fn cert_path(&self) -> Option<&Path> {
        self.known_cert.then_some(self.cert_path.as_path())
    }

    /// What the leaf certificate says (for [`Source::ServerConfig`], `None`: heird does not
    /// know which certificate the app's resolver picks).
    pub fn certificate(&self) -> Option<&CertInfo> {
        self.known_cert.then_some(&self.cert)
    }

    /// The rustls config connections are served with (heird's ticketer in it).
    pub fn server_config(&self) -> &Arc<ServerConfig> {
        &self.server_config
    }

    fn load(cert_path: &Path, key_path: &Path, source: Source) -> Result<TlsSetup, TlsError> {
        let cert_pem = std::fs::read(cert_path).map_err(|source| TlsError::ReadCert {
            path: cert_path.into(),
            source,
        })?;
        let key_pem = std::fs::read(key_path).map_err(|source| TlsError::ReadKey {
            path: key_path.into(),
            source,
        })?;
        let (certified, cert) = certified_key(&cert_pem, &key_pem, cert_path, key_path)?;
        let provider = crypto_provider();
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(TlsError::Rustls)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(OneCert(Arc::new(certified))));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut setup = TlsSetup::from_server_config(config)?;
        setup.cert_path = cert_path.into();
        setup.key_path = key_path.into();
        setup.source = source;
        setup.cert = cert;
        setup.known_cert = true;
        Ok(setup)
    }

    /// One line: what was loaded and until when it is valid (`heird check` prints it).
    pub fn describe(&self) -> String {
        if !self.known_cert {
            return "tls: the app's own rustls ServerConfig".into();
        }
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
    pub(crate) fn applies_to(&self, name: &str) -> bool {
        self.listeners
            .as_ref()
            .is_none_or(|l| l.iter().any(|n| n == name))
    }

    /// Warnings about the certificate at `now`: expired, expiring within [`EXPIRY_WARNING`],
    /// not yet valid. heird logs them at the start.
    pub fn warnings(&self, now: SystemTime) -> Vec<String> {
        if !self.known_cert {
            return Vec::new();
        }
        self.cert.warnings(&self.cert_path, now)
    }

    /// True when `sni` is one of the certificate's DNS names (a `*.` wildcard matches one
    /// label); always true for the app's own config (its resolver decides).
    pub(crate) fn serves_name(&self, sni: &str) -> bool {
        !self.known_cert || self.cert.matches(sni)
    }

    /// Takes the session-ticket keys a predecessor handed over (`Ok(fd)`), or notes why they
    /// could not be taken (`Err`), before the server starts.
    pub(crate) fn take_predecessor_keys(&self, keys: Result<OwnedFd, String>) {
        let origin = match keys.map(|fd| self.tickets.adopt(fd)) {
            Ok(Ok(())) => "the predecessor".to_string(),
            Ok(Err(e)) => format!("new (the predecessor's: {e})"),
            Err(why) => format!("new ({why})"),
        };
        self.tickets_origin.set(origin);
    }
}

/// Where the session-ticket keys came from, for the log line; set once the predecessor's keys
/// are read.
#[derive(Debug)]
pub(crate) struct TicketsOrigin(Mutex<String>);

impl TicketsOrigin {
    fn new(s: &str) -> TicketsOrigin {
        TicketsOrigin(Mutex::new(s.into()))
    }

    fn set(&self, s: String) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = s;
    }
}

impl fmt::Display for TicketsOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.lock().unwrap_or_else(|e| e.into_inner()))
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
