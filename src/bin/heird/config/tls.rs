//! Where the binary's certificate and key come from: `--tls-cert`/`--tls-key`, else `[tls]`
//! `cert`/`key` (already parsed into a [`TlsSpec`] by `config::file`), else the systemd
//! credentials `tls.crt` and `tls.key` in `$CREDENTIALS_DIRECTORY`; then the library's
//! [`TlsSetup`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use heird::tls::{CREDENTIAL_CERT, CREDENTIAL_KEY, DEFAULT_HANDSHAKE_TIMEOUT, TlsError, TlsSetup};

/// `[tls]` of the file, validated, before the files are read (paths relative to the file's
/// directory).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TlsSpec {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub listeners: Option<Vec<String>>,
    pub handshake_timeout: Option<Duration>,
}

/// Finds the certificate and key (command line, then `[tls]`, then systemd credentials in
/// `credentials`) and loads them; `None` when none is given anywhere.
pub fn resolve(
    spec: &TlsSpec,
    cli: (Option<&Path>, Option<&Path>),
    config_path: Option<&Path>,
    credentials: Option<&Path>,
) -> Result<Option<TlsSetup>, TlsError> {
    let file = || {
        config_path.map_or("[tls]".to_string(), |p| {
            format!("config file {}: [tls]", p.display())
        })
    };
    let setup = match (cli.0, cli.1, &spec.cert, &spec.key) {
        (Some(c), Some(k), _, _) => TlsSetup::from_files(c, k)?,
        (Some(_), None, _, _) | (None, Some(_), _, _) => {
            return Err(TlsError::Spec {
                origin: "--tls-cert/--tls-key".into(),
                message: "give both or neither".into(),
            });
        }
        (None, None, Some(c), Some(k)) => TlsSetup::from_files(c, k)?,
        (None, None, Some(_), None) | (None, None, None, Some(_)) => {
            return Err(TlsError::Spec {
                origin: file(),
                message: "cert and key go together: give both or neither".into(),
            });
        }
        (None, None, None, None) => {
            let found = match credentials {
                Some(d) => TlsSetup::from_credentials_in(d)?,
                None => None,
            };
            match found {
                Some(setup) => setup,
                _ if spec.listeners.is_some() || spec.handshake_timeout.is_some() => {
                    return Err(TlsError::Spec {
                        origin: file(),
                        message: format!(
                            "no certificate: set cert and key, pass --tls-cert and --tls-key, or load the systemd credentials {} and {}",
                            CREDENTIAL_CERT, CREDENTIAL_KEY
                        ),
                    });
                }
                _ => return Ok(None),
            }
        }
    };
    let setup = setup.handshake_timeout(spec.handshake_timeout.unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT));
    Ok(Some(match &spec.listeners {
        Some(names) => setup.on_listeners(names.iter().cloned()),
        None => setup,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ConfigError};
    use heird::tls::Source;

    fn parse(t: &str) -> Result<Config, ConfigError> {
        Config::parse(t, Path::new("/etc/heird/heird.toml"))
    }

    fn resolve_with(
        text: &str,
        cli: (Option<&Path>, Option<&Path>),
        credentials: Option<&Path>,
    ) -> Result<Option<TlsSetup>, TlsError> {
        let c = parse(text).unwrap();
        resolve(&c.tls_spec, cli, c.path.as_deref(), credentials)
    }

    fn write_pair(dir: &Path, cert: &str, key: &str) {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(dir.join(cert), c.cert.pem()).unwrap();
        std::fs::write(dir.join(key), c.signing_key.serialize_pem()).unwrap();
    }

    #[test]
    fn where_the_pair_comes_from() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_pair(d, "a.crt", "a.key");
        write_pair(d, "tls.crt", "tls.key");
        let none: (Option<&Path>, Option<&Path>) = (None, None);
        // Nothing anywhere: plain HTTP.
        assert!(resolve_with("", none, None).unwrap().is_none());
        // Credentials alone.
        let t = resolve_with("", none, Some(d)).unwrap().unwrap();
        assert_eq!(t.source(), Source::Credentials);
        assert_eq!(t.cert_path(), Some(d.join("tls.crt").as_path()));
        // The config file's paths win over credentials; the command line over both.
        let text = format!("[tls]\ncert = \"{0}/a.crt\"\nkey = \"{0}/a.key\"\n", d.display());
        let t = resolve_with(&text, none, Some(d)).unwrap().unwrap();
        assert_eq!(t.cert_path(), Some(d.join("a.crt").as_path()));
        let (c, k) = (d.join("tls.crt"), d.join("tls.key"));
        let cli = (Some(c.as_path()), Some(k.as_path()));
        let t = resolve_with(&text, cli, None).unwrap().unwrap();
        assert_eq!(t.cert_path(), Some(d.join("tls.crt").as_path()));
        // Half a pair of credentials is an error.
        let half = tempfile::tempdir().unwrap();
        std::fs::copy(d.join("tls.crt"), half.path().join("tls.crt")).unwrap();
        let e = resolve_with("", none, Some(half.path())).unwrap_err();
        assert!(e.to_string().contains("tls.crt without tls.key"), "{e}");
        // Half a pair, or listeners without any certificate, are errors.
        let e = resolve_with("[tls]\ncert = \"/c\"\n", none, Some(d)).unwrap_err();
        assert!(e.to_string().contains("cert and key go together"), "{e}");
        let e = resolve_with("[tls]\nlisteners = [\"https\"]\n", none, None).unwrap_err();
        assert!(e.to_string().contains("no certificate"), "{e}");
        // Mismatched pair from the two files.
        let text = format!(
            "[tls]\ncert = \"{0}/a.crt\"\nkey = \"{0}/tls.key\"\n",
            d.display()
        );
        let e = resolve_with(&text, none, None).unwrap_err().to_string();
        assert!(e.contains("does not match"), "{e}");
    }
}
