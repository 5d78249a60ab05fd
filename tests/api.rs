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

#[test]
fn a_bad_address_is_a_clear_start_error() {
    let err = Service::prepare(&Acquire::bind(&["localhost"])).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("\"localhost\"") && text.contains("HOST:PORT"),
        "{text}"
    );
}
