//! HTTPS through the library: TLS on one listener, plain HTTP on the other, a certificate that
//! a reload rotates, and session tickets that resume with the next process.
//!
//! The certificate comes from, in this order:
//! - `TLS_CERT` and `TLS_KEY`, PEM files ([`heird::tls::TlsSetup::from_files`]); with
//!   `TLS_OWN_CONFIG=1`, the example builds its own `rustls::ServerConfig` from them instead
//!   ([`heird::tls::TlsSetup::from_server_config`]: your own resolver, client authentication
//!   or protocol versions go there; this one offers HTTP/1.1 only);
//! - the systemd credentials `tls.crt` and `tls.key` (`LoadCredential=tls.crt:/etc/…` and
//!   `LoadCredential=tls.key:/etc/…` in the unit: [`heird::tls::TlsSetup::from_credentials`]).
//!
//! TLS is on the listener named `https` (a socket unit with `FileDescriptorName=https`), else
//! on the first address given; the other listeners speak plain HTTP. `GET /` answers with the
//! pid and whether the request came over TLS.
//!
//! The certificate is read before the runtime starts, so a bad one is a configuration error: a
//! first start exits 78, and a reload fails visibly (`tls reload` exits 1 with the reason) while
//! the old process serves on with the certificate it has. A reload after renewing the files
//! rotates the certificate, and clients' session tickets resume with the new process.
//!
//! Try: `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30
//! -subj /CN=localhost -addext subjectAltName=DNS:localhost -keyout /tmp/k.pem -out /tmp/c.pem`,
//! then `TLS_CERT=/tmp/c.pem TLS_KEY=/tmp/k.pem cargo run --example tls -- 127.0.0.1:8443
//! 127.0.0.1:8080`, `curl --cacert /tmp/c.pem https://localhost:8443/`, `curl
//! 127.0.0.1:8080/`, and `tls reload --pid <pid>`.
use std::process::ExitCode;
use std::sync::Arc;

use axum::extract::Extension;
use axum::{Router, routing::get};
use heird::tls::{TlsError, TlsSetup, rustls};

/// `TLS_CERT`/`TLS_KEY` (as files, or as the app's own rustls config), else the credentials.
fn load_tls() -> Result<TlsSetup, TlsError> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    match (var("TLS_CERT"), var("TLS_KEY")) {
        (Some(cert), Some(key)) if var("TLS_OWN_CONFIG").is_some() => own_config(cert.as_ref(), key.as_ref()),
        (Some(cert), Some(key)) => TlsSetup::from_files(cert, key),
        _ => TlsSetup::from_credentials()?.ok_or_else(|| TlsError::Spec {
            origin: "tls example".into(),
            message: "no certificate: set TLS_CERT and TLS_KEY, or load the systemd credentials tls.crt and tls.key".into(),
        }),
    }
}

/// What an app with its own needs does: build the rustls config itself (here with the pair in
/// the files, offering HTTP/1.1 only).
fn own_config(cert: &std::path::Path, key: &std::path::Path) -> Result<TlsSetup, TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |path: &std::path::Path, e: &dyn std::fmt::Display| TlsError::Spec {
        origin: path.display().to_string(),
        message: e.to_string(),
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad(cert, &e))?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, &e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(heird::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Rustls)?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(TlsError::Rustls)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsSetup::from_server_config(config)
}

/// Whether the request came over TLS: set per listener, as a request extension.
#[derive(Clone, Copy)]
struct OverTls(bool);

fn main() -> ExitCode {
    // `tls reload`, `tls stop`, `--help`, `--version`; an address is the app's own.
    let cli = heird::cli::Dispatch::new()
        .version(env!("CARGO_PKG_VERSION"))
        .serve_args("[HTTPS-ADDR [HTTP-ADDR]]");
    if let Some(code) = cli.run(std::env::args_os()) {
        return code;
    }
    let addrs: Vec<String> = std::env::args().skip(1).collect();
    let addrs: Vec<&str> = match addrs.is_empty() {
        true => vec!["127.0.0.1:8443", "127.0.0.1:8080"],
        false => addrs.iter().map(String::as_str).collect(),
    };
    // First what a predecessor passed, then the certificate: a bad one fails a reload with its
    // reason (the predecessor hears it) instead of a start with a certificate missing.
    let inherited = match heird::Inherited::from_env() {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(heird::EX_CONFIG);
        }
    };
    let tls = match load_tls() {
        Ok(t) => t,
        Err(e) => return inherited.fail(&e),
    };
    heird::start(inherited, &heird::Acquire::bind(&addrs), "info", |service| {
        serve(service, tls)
    })
}

async fn serve(service: heird::Service, tls: TlsSetup) -> Result<heird::Exit, heird::RunError> {
    let names: Vec<&str> = service.listeners().iter().map(|l| l.name()).collect();
    let https = match names.iter().find(|n| **n == "https") {
        Some(n) => n.to_string(),
        None => names[0].to_string(),
    };
    let page = |over: Extension<OverTls>| async move {
        let scheme = if over.0.0 { "https" } else { "http" };
        format!("pid {} over {scheme}\n", std::process::id())
    };
    let plain = Router::new()
        .route("/", get(page))
        .layer(Extension(OverTls(false)));
    let secure = Router::new()
        .route("/", get(page))
        .layer(Extension(OverTls(true)));
    let routes = heird::Routes::new(plain).listener(&https, secure);
    let mut options = heird::Options::default();
    options.serve.tls = Some(Arc::new(tls.on_listeners([https])));
    service.run_routes(routes, options).await
}
