//! The library as a user sees it: only the public API, in-process, inside `#[tokio::test]`
//! (a plain bind needs no environment edit, so it can be prepared from a running runtime).
//! A change that breaks users breaks this file's build.

use std::time::Duration;

use axum::{Router, routing::get};
use heird::{Acquire, Exit, Options, Service, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get_body(addr: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_driven_by_its_handle() {
    let mut service = Service::prepare(&Acquire::bind(&["127.0.0.1:0"])).expect("bind");
    let addr = service.listeners()[0].address().to_string();
    assert_eq!(service.generation(), 1);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    // The gate holds readiness until the app says so.
    service.ready_when(async move { rx.await.map_err(|_| "gate dropped".to_string()) });
    let handle = service.handle();
    assert_eq!(handle.status(), Status::Starting);
    let mut opts = Options::default();
    opts.handle_signals = false;
    opts.control_socket = None;
    opts.drain_timeout = Duration::from_secs(5);
    let app = Router::new().route("/", get(|| async { "from the library" }));
    let run = tokio::spawn(service.run(app, opts));
    tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), handle.primary())
        .await
        .expect("became primary");
    assert!(handle.status().is_primary());
    assert!(get_body(&addr).await.contains("from the library"));
    handle.stop();
    tokio::time::timeout(Duration::from_secs(5), handle.leaving())
        .await
        .expect("left");
    let exit = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("run ended")
        .unwrap()
        .unwrap();
    assert_eq!(exit, Exit::Stopped);
    assert_eq!(handle.status(), Status::Exited);
    // Stopped: the address is released.
    assert!(tokio::net::TcpStream::connect(&addr).await.is_err());
}

/// A readiness gate may fail with any error that displays (here `std::io::Error`, not a
/// `String`): the run ends with `NotReady` and that error's text.
#[tokio::test(flavor = "multi_thread")]
async fn a_gate_failing_with_any_displayable_error() {
    let mut service = Service::prepare(&Acquire::bind(&["127.0.0.1:0"])).expect("bind");
    service.ready_when(async { Err(std::io::Error::other("the database is down")) });
    let mut opts = Options::default();
    opts.handle_signals = false;
    opts.control_socket = None;
    let app = Router::new().route("/", get(|| async { "never served" }));
    let result = tokio::time::timeout(Duration::from_secs(10), service.run(app, opts))
        .await
        .expect("the run ended");
    match result {
        Err(heird::RunError::NotReady(reason)) => assert_eq!(reason, "the database is down"),
        other => panic!("expected NotReady with the io error's text, got {other:?}"),
    }
}

#[test]
fn a_bad_address_is_a_clear_start_error() {
    let err = Service::prepare(&Acquire::bind(&["localhost"])).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("\"localhost\"") && text.contains("HOST:PORT"),
        "{text}"
    );
}

/// A resumable WebSocket handler (`heird::ws`), written as the README shows it. A frame sent in
/// the same write as the upgrade request is answered (the bytes read past the request reach the
/// codec); a stop with nowhere to move the connection closes it with 1012.
#[tokio::test(flavor = "multi_thread")]
async fn a_resumable_websocket_handler() {
    use heird::ws::{Event, Message, WebSocket, WsUpgrade};

    async fn counter(upgrade: WsUpgrade) -> axum::response::Response {
        upgrade.on_upgrade(|mut ws: WebSocket| async move {
            let mut n: u64 = ws
                .restored()
                .and_then(|b| std::str::from_utf8(b).ok()?.parse().ok())
                .unwrap_or(0);
            loop {
                match ws.next().await {
                    Event::Message(Message::Text(t)) => {
                        n += 1;
                        if ws.send(Message::text(format!("{n} {t}"))).await.is_err() {
                            return;
                        }
                    }
                    Event::Message(_) => {}
                    Event::Move => return ws.hand_over(n.to_string()).await,
                    Event::Closed => return,
                }
            }
        })
    }

    let service = Service::prepare(&Acquire::bind(&["127.0.0.1:0"])).expect("bind");
    let addr = service.listeners()[0].address().to_string();
    let handle = service.handle();
    let mut opts = Options::default();
    opts.handle_signals = false;
    opts.control_socket = None;
    opts.drain_timeout = Duration::from_secs(5);
    let run = tokio::spawn(service.run(Router::new().route("/counter", get(counter)), opts));
    tokio::time::timeout(Duration::from_secs(5), handle.primary())
        .await
        .expect("became primary");

    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut out = b"GET /counter HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
        Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        .to_vec();
    out.extend_from_slice(&[0x81, 0x82, 0, 0, 0, 0, b'h', b'i']); // a masked "hi", same write
    s.write_all(&out).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(s.read_u8().await.unwrap());
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    let mut frame = [0u8; 6];
    s.read_exact(&mut frame).await.unwrap();
    assert_eq!(&frame, &[0x81, 4, b'1', b' ', b'h', b'i']);

    handle.stop();
    let mut close = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut close))
        .await
        .expect("close frame")
        .unwrap();
    assert_eq!(close[0], 0x88, "{close:?}");
    assert_eq!(&close[2..4], &1012u16.to_be_bytes(), "{close:?}");
    drop(s);
    let exit = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("exited");
    assert!(matches!(exit, Ok(Ok(Exit::Stopped))), "{exit:?}");
}

/// HTTPS through the public API (`heird::tls`), set up inside a running runtime: TLS on the
/// listener it names, plain HTTP on the other.
#[tokio::test(flavor = "multi_thread")]
async fn https_on_the_listener_it_names() {
    use heird::tls::{Source, TlsSetup, rustls};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let pair = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert, pair.cert.pem()).unwrap();
    std::fs::write(&key, pair.signing_key.serialize_pem()).unwrap();

    let service = Service::prepare(&Acquire::bind(&["127.0.0.1:0", "127.0.0.2:0"])).expect("bind");
    let (secure, plain) = (&service.listeners()[0], &service.listeners()[1]);
    let (https, http) = (secure.address().to_string(), plain.address().to_string());
    let tls = TlsSetup::from_files(&cert, &key)
        .expect("the pair loads")
        .on_listeners([secure.name()]);
    assert_eq!(tls.source(), Source::Paths);
    assert_eq!(
        tls.certificate().expect("read from the file").dns_names,
        ["localhost"]
    );
    let handle = service.handle();
    let mut opts = Options::default();
    opts.handle_signals = false;
    opts.control_socket = None;
    opts.serve.tls = Some(Arc::new(tls));
    let app = Router::new().route("/", get(|| async { "from the library" }));
    let run = tokio::spawn(service.run(app, opts));
    tokio::time::timeout(Duration::from_secs(5), handle.primary())
        .await
        .expect("became primary");

    assert!(get_body(&http).await.contains("from the library"));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pair.cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(heird::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(&https).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut s = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(name, tcp)
        .await
        .expect("a TLS handshake on the listener named");
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await; // a close without close_notify is fine here
    assert!(out.contains("from the library"), "{out}");

    handle.stop();
    let exit = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("run ended")
        .unwrap()
        .unwrap();
    assert_eq!(exit, Exit::Stopped);
}
