//! TLS settings: the certificate and key (from `--tls-cert`/`--tls-key`, `[tls]` in the config
//! file, or systemd credentials `tls.crt` + `tls.key`), loaded and checked into a rustls
//! [`ServerConfig`] (TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`, the `ring` provider).
//!
//! Loading happens with the rest of the configuration, so a bad or mismatched pair is a config
//! error: `heird check` reports it, and a successor that meets it fails its handoff (the old
//! process keeps serving with the certificate it has). Serving TLS is `server`'s job.
//!
//! - `source`: which pair ([`resolve`]: command line, `[tls]`, systemd credentials).
//! - [`tickets`]: session-ticket keys that survive handoffs and restarts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

mod source;
pub mod tickets;
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

/// What heird reads from the leaf certificate (for warnings, logs and SNI checks).
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub subject: String,
    /// DNS names of subjectAltName (lowercase; may start with `*.`).
    pub dns_names: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// SHA-256 of the leaf's DER, hex (what `openssl x509 -fingerprint -sha256` prints).
    pub sha256: String,
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

impl CertInfo {
    fn warnings(&self, path: &Path, now: SystemTime) -> Vec<String> {
        let mut out = Vec::new();
        let path = path.display();
        let after = httpdate(self.not_after);
        match self.not_after.duration_since(now) {
            Err(_) => out.push(format!(
                "tls certificate {path} expired on {after} (it is served anyway; clients will reject it)"
            )),
            Ok(left) if left < EXPIRY_WARNING => out.push(format!(
                "tls certificate {path} expires in {} days, on {after}",
                left.as_secs() / 86_400
            )),
            Ok(_) => {}
        }
        if self.not_before > now {
            out.push(format!(
                "tls certificate {path} is not valid before {}",
                httpdate(self.not_before)
            ));
        }
        out
    }

    fn matches(&self, sni: &str) -> bool {
        let sni = sni.trim_end_matches('.').to_ascii_lowercase();
        self.dns_names.iter().any(|n| match n.strip_prefix("*.") {
            Some(suffix) => sni
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
            None => *n == sni,
        })
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

/// `2026-12-02T10:00:00Z`.
fn httpdate(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// Parses the PEM pair, checks that the key belongs to the leaf certificate, and reads the leaf.
fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<(CertifiedKey, CertInfo), TlsError> {
    let cert_err = |reason: String| TlsError::Cert {
        path: cert_path.into(),
        reason,
    };
    let key_err = |reason: String| TlsError::Key {
        path: key_path.into(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(format!("not PEM: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(cert_err(
            "no certificate in it (expected PEM \"BEGIN CERTIFICATE\")".into(),
        ));
    };
    let info = cert_info(leaf).map_err(cert_err)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            key_err("no private key in it (expected PEM \"BEGIN PRIVATE KEY\", \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\")".into())
        }
        e => key_err(format!("not PEM: {e}")),
    })?;
    let provider: &CryptoProvider = &rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| key_err(format!("unusable private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => Ok((certified, info)),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::Mismatch {
                cert: cert_path.into(),
                key: key_path.into(),
            })
        }
        Err(e) => Err(cert_err(e.to_string())),
    }
}

fn cert_info(der: &CertificateDer<'_>) -> Result<CertInfo, String> {
    use x509_parser::prelude::*;
    let (_, x) =
        X509Certificate::from_der(der.as_ref()).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let time = |t: ASN1Time| UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64);
    let mut dns_names = Vec::new();
    if let Ok(Some(san)) = x.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                dns_names.push(d.to_ascii_lowercase());
            }
        }
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, der.as_ref());
    let sha256 = digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    Ok(CertInfo {
        subject: x.subject().to_string(),
        dns_names,
        not_before: time(x.validity().not_before),
        not_after: time(x.validity().not_after),
        sha256,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(names: &[&str]) -> (String, String) {
        let c = rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    fn load(cert: &str, key: &str) -> Result<(CertifiedKey, CertInfo), TlsError> {
        certified_key(
            cert.as_bytes(),
            key.as_bytes(),
            Path::new("c.pem"),
            Path::new("k.pem"),
        )
    }

    #[test]
    fn a_matching_pair_loads_and_names_match() {
        let (c, k) = pair(&["localhost", "*.example.org"]);
        let (_, info) = load(&c, &k).unwrap();
        assert!(info.matches("localhost"));
        assert!(info.matches("LocalHost."));
        assert!(info.matches("a.example.org"));
        assert!(!info.matches("example.org"));
        assert!(!info.matches("a.b.example.org"));
        assert!(!info.matches("other"));
        assert_eq!(info.sha256.len(), 32 * 3 - 1);
    }

    #[test]
    fn errors_name_the_file_and_the_fact() {
        let (c, k) = pair(&["localhost"]);
        let (_, k2) = pair(&["localhost"]);
        let e = load(&c, &k2).unwrap_err().to_string();
        assert!(
            e.contains("does not match") && e.contains("k.pem") && e.contains("c.pem"),
            "{e}"
        );
        let e = load("", &k).unwrap_err().to_string();
        assert!(e.contains("c.pem") && e.contains("no certificate"), "{e}");
        let e = load(&c, "").unwrap_err().to_string();
        assert!(e.contains("k.pem") && e.contains("no private key"), "{e}");
        // The pair swapped: a key where the certificate belongs.
        let e = load(&k, &c).unwrap_err().to_string();
        assert!(e.contains("c.pem"), "{e}");
        let e = load(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            &k,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("c.pem"), "{e}");
    }

    #[test]
    fn expiry_warnings() {
        let (c, k) = pair(&["localhost"]);
        let (_, info) = load(&c, &k).unwrap();
        let p = Path::new("c.pem");
        assert!(
            info.warnings(p, info.not_before + Duration::from_secs(60))
                .is_empty()
        );
        let w = info.warnings(p, info.not_after - Duration::from_secs(3 * 86_400 + 60));
        assert!(w.len() == 1 && w[0].contains("expires in 3 days"), "{w:?}");
        let w = info.warnings(p, info.not_after + Duration::from_secs(1));
        assert!(w.len() == 1 && w[0].contains("expired"), "{w:?}");
        let w = info.warnings(p, info.not_before - Duration::from_secs(1));
        assert!(w.iter().any(|w| w.contains("not valid before")), "{w:?}");
    }
}
