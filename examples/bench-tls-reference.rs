//! `bench-tls-reference`: the TLS baseline of `bench/tls.sh`, a plain tokio-rustls + hyper
//! server (the TLS sibling of `bench-plain-axum`), configured as heird configures its own.
//!
//! ```text
//! bench-tls-reference ADDR CERT KEY [--accept-on-main]   # PEM certificate chain and key
//! ```
//!
//! What it shares with heird (`heird serve --tls-cert CERT --tls-key KEY`), so that a
//! comparison measures heird's connection layer and not the TLS settings:
//! - the crypto provider: [`heird::tls::crypto_provider`] (rustls's `ring`);
//! - TLS 1.3 and 1.2, no client authentication, ALPN `h2` then `http/1.1`;
//! - resumption: session tickets for TLS 1.2 and 1.3 from a ChaCha20-Poly1305 ticketer
//!   (rustls's `ring` one here, heird's own there, which only adds the handoff of its keys),
//!   rustls's default session cache (`ServerSessionMemoryCache`, 256 entries) and two TLS 1.3
//!   tickets per handshake (rustls's defaults, which heird keeps), no 0-RTT;
//! - `TCP_NODELAY` on every accepted socket;
//! - the accept loop is a task on a worker thread, as heird's are, so that a connection's task
//!   starts on the worker that accepted it. `--accept-on-main` runs the loop in `block_on` on
//!   the main thread instead (the layout of `#[tokio::main]` and of `bench-plain-axum`), so
//!   that every connection is handed to a worker: 4 to 5 more context switches and 6–39 %
//!   more CPU per TLS 1.3 connection here (bench/README.md, TLS).
//!
//! What it leaves out: everything heird adds around the handshake (the first-byte sniff, the
//! ClientHello read apart by `LazyConfigAcceptor`, the handshake timeout, the drain, hyper's
//! header-read timer, logging). `GET /healthz` answers `ok` (heird's answers `ok` too, through
//! its app state). The runtime is built the way `heird serve` builds its own (multi-thread,
//! default worker count). Prints `listening on ADDR` once bound; SIGTERM or SIGINT stops it.

use std::process::ExitCode;
use std::sync::Arc;

use axum::{Router, routing::get};
use heird::tls::rustls;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// heird's settings (see the module doc), with rustls's own ticketer.
fn server_config(cert: &str, key: &str) -> Result<rustls::ServerConfig, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{cert}: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{key}: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(heird::tls::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // The ring provider is deprecated as a whole in rustls 0.23.48 (see src/tls/cert.rs).
    #[allow(deprecated)]
    let ticketer = rustls::crypto::ring::Ticketer::new();
    config.ticketer = ticketer.map_err(|e| e.to_string())?;
    Ok(config)
}

/// Accepts for ever, one task per connection: the TLS handshake, then hyper (h2 if ALPN chose
/// it, else HTTP/1.1).
async fn accept_loop(listener: tokio::net::TcpListener, acceptor: tokio_rustls::TlsAcceptor, app: Router) {
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(_) => {
                // EMFILE and the like: a later accept may work.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let (io, service) = (TokioIo::new(tls), TowerToHyperService::new(app));
            let _ = if h2 {
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(io, service)
                    .await
            } else {
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .with_upgrades()
                    .await
            };
        });
    }
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let on_main = args.iter().any(|a| a == "--accept-on-main");
    args.retain(|a| a != "--accept-on-main");
    let [addr, cert, key] = args.as_slice() else {
        eprintln!("usage: bench-tls-reference ADDR CERT KEY [--accept-on-main]");
        return ExitCode::from(2);
    };
    let acceptor = match server_config(cert, key) {
        Ok(c) => tokio_rustls::TlsAcceptor::from(Arc::new(c)),
        Err(e) => {
            eprintln!("bench-tls-reference: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench-tls-reference: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("bench-tls-reference: cannot bind {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        println!("listening on {addr}");
        let app = Router::new().route("/healthz", get(|| async { "ok" }));
        let stop = async {
            use tokio::signal::unix::{SignalKind, signal};
            match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => std::future::pending::<()>().await,
            }
        };
        let serve = accept_loop(listener, acceptor, app);
        if on_main {
            tokio::select! {
                _ = serve => {}
                _ = stop => {}
            }
        } else {
            let task = tokio::spawn(serve);
            stop.await;
            task.abort();
        }
        ExitCode::SUCCESS
    })
}
