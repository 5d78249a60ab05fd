//! The certificate and key as systemd credentials: `tls.crt` and `tls.key` in
//! `$CREDENTIALS_DIRECTORY` (`LoadCredential=` in the unit).

use std::path::{Path, PathBuf};

use super::{CREDENTIAL_CERT, CREDENTIAL_KEY, TlsError};

/// `tls.crt` and `tls.key` in the systemd credentials directory `dir`: both (`Some`), neither
/// (`None`), or an error for one without the other or one that cannot be looked at (HTTPS was
/// meant: serving plain HTTP instead would hide the mistake).
pub(super) fn pair(dir: &Path) -> Result<Option<(PathBuf, PathBuf)>, TlsError> {
    let look = |name: &str| -> Result<Option<PathBuf>, TlsError> {
        let p = dir.join(name);
        match std::fs::metadata(&p) {
            Ok(_) => Ok(Some(p)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(TlsError::Spec {
                origin: format!("systemd credential {}", p.display()),
                message: e.to_string(),
            }),
        }
    };
    match (look(CREDENTIAL_CERT)?, look(CREDENTIAL_KEY)?) {
        (Some(c), Some(k)) => Ok(Some((c, k))),
        (None, None) => Ok(None),
        (c, _) => Err(TlsError::Spec {
            origin: format!("systemd credentials in {}", dir.display()),
            message: format!(
                "{} without {}: load both or neither",
                if c.is_some() {
                    CREDENTIAL_CERT
                } else {
                    CREDENTIAL_KEY
                },
                if c.is_some() {
                    CREDENTIAL_KEY
                } else {
                    CREDENTIAL_CERT
                },
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_neither_or_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert!(pair(d).unwrap().is_none());
        std::fs::write(d.join(CREDENTIAL_CERT), "c").unwrap();
        let e = pair(d).unwrap_err().to_string();
        assert!(e.contains("tls.crt without tls.key"), "{e}");
        std::fs::write(d.join(CREDENTIAL_KEY), "k").unwrap();
        assert_eq!(
            pair(d).unwrap(),
            Some((d.join(CREDENTIAL_CERT), d.join(CREDENTIAL_KEY)))
        );
    }
}
