//! The certificate and key as PEM → a checked rustls [`CertifiedKey`], and what heird reads
//! from the leaf certificate ([`CertInfo`]: names, validity, fingerprint).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::{EXPIRY_WARNING, TlsError};

/// What heird reads from the leaf certificate (for warnings, logs and SNI checks).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CertInfo {
    /// The subject's distinguished name, e.g. `CN=example.org`.
    pub subject: String,
    /// DNS names of subjectAltName (lowercase; may start with `*.`).
    pub dns_names: Vec<String>,
    /// Start of the validity period.
    pub not_before: SystemTime,
    /// End of the validity period.
    pub not_after: SystemTime,
    /// SHA-256 of the leaf's DER, hex (what `openssl x509 -fingerprint -sha256` prints).
    pub sha256: String,
}

impl CertInfo {
    /// For a config whose certificate heird does not see (the app's own resolver).
    pub(super) fn unknown() -> CertInfo {
        CertInfo {
            subject: "-".into(),
            dns_names: Vec::new(),
            not_before: UNIX_EPOCH,
            not_after: UNIX_EPOCH,
            sha256: "-".into(),
        }
    }

    pub(super) fn warnings(&self, path: &Path, now: SystemTime) -> Vec<String> {
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

    pub(super) fn matches(&self, sni: &str) -> bool {
        let sni = sni.trim_end_matches('.').to_ascii_lowercase();
        self.dns_names.iter().any(|n| match n.strip_prefix("*.") {
            Some(suffix) => sni
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
            None => *n == sni,
        })
    }
}

/// `2026-12-02T10:00:00Z`.
pub(super) fn httpdate(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// The `ring` crypto provider.
pub(super) fn provider() -> CryptoProvider {
    // rustls 0.23.48 deprecates the ring provider as a whole ("no support for post-quantum
    // algorithms"), with no replacement inside ring; the alternative is the aws-lc-rs provider
    // (a C and cmake build). heird stays on ring until that choice is made, without a warning
    // in every build on the newest rustls (0.23.46 and 0.23.48 both build clean).
    #[allow(deprecated)]
    rustls::crypto::ring::default_provider()
}

/// Parses the PEM pair, checks that the key belongs to the leaf certificate, and reads the leaf.
pub(super) fn certified_key(
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
    let provider = provider();
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
