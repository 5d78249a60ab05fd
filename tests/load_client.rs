//! Tests for the load client in `tests/support/load.rs` against in-process servers.

mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::get;
use support::load::{self, LoadConfig, Stats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A server on its own runtime; dropping it stops the server.
struct TestServer {
    addr: SocketAddr,
    _rt: tokio::runtime::Runtime,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn axum_server(app: Router) -> TestServer {
    let rt = runtime();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move { axum::serve(listener, app).await });
    TestServer { addr, _rt: rt }
}

/// A hand-written server: `handle` gets every accepted connection.
fn raw_server<F, Fut>(handle: F) -> TestServer
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let rt = runtime();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            stream.set_nodelay(true).unwrap();
            tokio::spawn(handle(stream));
        }
    });
    TestServer { addr, _rt: rt }
}

/// Read one request head from `stream` (buffering leftovers in `buf`); returns its
/// request target, or None at EOF/error.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..pos]).into_owned();
            buf.drain(..pos + 4);
            return head.split(' ').nth(1).map(str::to_string);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn config(addr: SocketAddr, keepalive: usize, newconn: usize) -> LoadConfig {
    LoadConfig {
        addr,
        path: "/".to_string(),
        keepalive_clients: keepalive,
        newconn_clients: newconn,
        request_timeout: Duration::from_secs(2),
        tls: None,
    }
}

/// Run a load for `duration` and return the final stats (printed for failing asserts).
fn run_for(cfg: LoadConfig, duration: Duration) -> Stats {
    let handle = load::start(cfg);
    std::thread::sleep(duration);
    let stats = handle.stop();
    println!(
        "{}",
        serde_json::to_string(&Stats {
            samples: Vec::new(),
            failure_times: Vec::new(),
            reconnect_times: Vec::new(),
            ..stats.clone()
        })
        .unwrap()
    );
    stats
}

fn healthy_app() -> Router {
    Router::new().route("/", get(|| async { ([("x-heird-pid", "4242")], "hello") }))
}

#[test]
fn healthy_server_has_no_failures() {
    let server = axum_server(healthy_app());
    let stats = run_for(config(server.addr, 4, 2), Duration::from_millis(400));
    assert!(stats.ok > 0);
    assert_eq!(stats.failed(), 0, "{:?}", stats.errors);
    assert_eq!(stats.reconnects, 0);
    assert_eq!(stats.connection_close_seen, 0);
    assert_eq!(stats.pids.get(&4242), Some(&stats.ok));
    assert_eq!(stats.samples.len() as u64, stats.ok);
    assert!(stats.samples.iter().all(|s| s.2 == 4242));
    let (p50, max) = (stats.percentile_us(50.0), stats.percentile_us(100.0));
    assert!(p50 > 0 && p50 <= max, "p50={p50} max={max}");
    assert_eq!(max, stats.samples.iter().map(|s| s.1).max().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_inside_a_tokio_runtime() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, healthy_app()).await });
    let handle = load::start(config(addr, 2, 1));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stats = tokio::task::spawn_blocking(move || handle.stop()).await.unwrap();
    assert!(stats.ok > 0);
    assert_eq!(stats.failed(), 0, "{:?}", stats.errors);
}

#[test]
fn nothing_listening_is_refused() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // The listener is dropped: nothing listens on `addr` any more.
    let stats = run_for(config(addr, 2, 2), Duration::from_millis(200));
    assert!(stats.refused > 0);
    assert_eq!(stats.ok, 0);
    assert_eq!(stats.failed(), stats.refused);
    assert_eq!(stats.reconnects, 0);
    assert!(
        stats.errors[0].contains("refused: connect:"),
        "{:?}",
        stats.errors
    );
    // The 5 ms back-off keeps 4 clients well below 1000 attempts in 200 ms.
    assert!(stats.refused < 1000, "refused={}", stats.refused);
}

#[test]
fn connection_close_server_reconnects_without_failures() {
    let app = Router::new().route("/", get(|| async { ([(header::CONNECTION, "close")], "bye") }));
    let server = axum_server(app);
    let stats = run_for(config(server.addr, 4, 0), Duration::from_millis(300));
    assert!(stats.ok > 4);
    assert_eq!(stats.failed(), 0, "{:?}", stats.errors);
    assert!(stats.reconnects > 0);
    assert_eq!(stats.connection_close_seen, stats.ok);
    // Every response closed the connection: all but each client's first were reconnects.
    assert!(stats.reconnects + 4 >= stats.ok);
}

#[test]
fn accept_then_close_is_closed_before_response() {
    let server = raw_server(|mut stream| async move {
        // Read the request first, so that closing sends FIN rather than RST.
        let _ = read_request(&mut stream, &mut Vec::new()).await;
    });
    let stats = run_for(config(server.addr, 2, 2), Duration::from_millis(200));
    assert!(stats.closed_before_response > 0);
    assert_eq!(stats.ok, 0);
    assert!(
        stats.errors[0].contains("closed_before_response: connection closed before any"),
        "{:?}",
        stats.errors
    );
}

#[test]
fn reset_after_request_is_reset() {
    let server = raw_server(|mut stream| async move {
        let _ = read_request(&mut stream, &mut Vec::new()).await;
        // SO_LINGER 0: close() sends RST.
        let _ = stream.set_zero_linger();
    });
    let stats = run_for(config(server.addr, 2, 2), Duration::from_millis(200));
    assert!(stats.reset > 0);
    assert_eq!(stats.ok, 0);
    assert_eq!(stats.failed(), stats.reset, "{:?}", stats.errors);
}

#[test]
fn chunked_close_delimited_and_interim_responses_are_ok() {
    let server = raw_server(|mut stream| async move {
        let mut buf = Vec::new();
        while let Some(target) = read_request(&mut stream, &mut buf).await {
            let ok = match target.as_str() {
                "/chunked" => {
                    // Split writes exercise partial reads.
                    let a = stream
                        .write_all(b"HTTP/1.1 200 OK\r\nx-heird-pid: 7\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhel")
                        .await;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    let b = stream
                        .write_all(b"lo\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-trailer: t\r\n\r\n")
                        .await;
                    a.is_ok() && b.is_ok()
                }
                "/continue" => stream
                    .write_all(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await
                    .is_ok(),
                "/eof" => {
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\nx-heird-pid: 9\r\n\r\nuntil the end")
                        .await;
                    false
                }
                _ => false,
            };
            if !ok {
                break;
            }
        }
    });

    let mut cfg = config(server.addr, 2, 1);
    cfg.path = "/chunked".to_string();
    let stats = run_for(cfg.clone(), Duration::from_millis(200));
    assert!(stats.ok > 0);
    assert_eq!(stats.failed(), 0, "{:?}", stats.errors);
    assert_eq!(stats.reconnects, 0);
    assert_eq!(stats.pids.get(&7), Some(&stats.ok));

    cfg.path = "/continue".to_string();
    let stats = run_for(cfg.clone(), Duration::from_millis(200));
    assert!(stats.ok > 0);
    assert_eq!(stats.failed(), 0, "{:?}", stats.errors);
    assert_eq!(stats.reconnects, 0);

    cfg.path = "/eof".to_string();
    let stats = run_for(cfg, Duration::from_millis(200));
    assert!(stats.ok > 0);
    assert_eq!(stats.failed(), 0, "{:?}", stats.errors);
    assert!(
        stats.reconnects > 0,
        "close-delimited bodies force a new connection"
    );
    assert_eq!(stats.connection_close_seen, 0);
}

#[test]
fn non_200_and_malformed_responses() {
    let app = Router::new().route("/", get(|| async { StatusCode::SERVICE_UNAVAILABLE }));
    let server = axum_server(app);
    let stats = run_for(config(server.addr, 2, 1), Duration::from_millis(200));
    assert!(stats.non_200 > 0);
    assert_eq!(stats.ok, 0);
    assert_eq!(stats.failed(), stats.non_200);
    assert!(
        stats.errors[0].contains("non_200: status 503"),
        "{:?}",
        stats.errors
    );

    let server = raw_server(|mut stream| async move {
        let _ = read_request(&mut stream, &mut Vec::new()).await;
        let _ = stream.write_all(b"garbage\r\n\r\n").await;
    });
    let stats = run_for(config(server.addr, 2, 1), Duration::from_millis(200));
    assert!(stats.other > 0);
    assert_eq!(stats.ok, 0);
    assert_eq!(stats.failed(), stats.other, "{:?}", stats.errors);
    assert!(
        stats.errors[0].contains("other: bad response"),
        "{:?}",
        stats.errors
    );
}

/// `stop()` against a server that reads each request and then neither answers nor closes:
/// every request in flight at the stop is waited for (each ends at `request_timeout`) and
/// counted, and the stop returns although the server never lets go. How long it takes is a
/// figure, measured by `bench/load-stop.sh`.
#[test]
fn silent_server_times_out_and_stop_is_prompt() {
    let received = Arc::new(AtomicU64::new(0));
    let count = received.clone();
    let server = raw_server(move |mut stream| {
        let count = count.clone();
        async move {
            if read_request(&mut stream, &mut Vec::new()).await.is_some() {
                count.fetch_add(1, Ordering::SeqCst);
                // Hold the connection without answering until the client closes it.
                let mut sink = [0u8; 256];
                while let Ok(1..) = stream.read(&mut sink).await {}
            }
        }
    });
    let mut cfg = config(server.addr, 2, 2);
    cfg.request_timeout = Duration::from_millis(300);
    let clients = 4;
    let handle = load::start(cfg);
    assert!(handle.wait_until(Duration::from_secs(5), |s| s.timeout >= clients));
    // Stop when every client has a request in flight: the server has read one request more per
    // client than the clients have counted (the count read twice around it, so that no client
    // finished one in between).
    let mut counted_at_stop = 0;
    let all_in_flight = support::proc::wait_until(Duration::from_secs(5), || {
        counted_at_stop = handle.snapshot().timeout;
        let r = received.load(Ordering::SeqCst);
        r == counted_at_stop + clients && handle.snapshot().timeout == counted_at_stop
    });
    assert!(all_in_flight, "the clients never all had a request in flight");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(handle.stop());
    });
    let stats = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("stop() did not return while the server held its requests");
    // No request the server read went uncounted (one that timed out before the server read it
    // counts without being read; the server may read the last ones a moment after the stop).
    support::proc::wait_until(Duration::from_secs(2), || {
        received.load(Ordering::SeqCst) == stats.timeout
    });
    let read = received.load(Ordering::SeqCst);
    assert!(
        read <= stats.timeout,
        "the server read {read} requests, the client counted {} timeouts",
        stats.timeout
    );
    assert!(
        stats.timeout >= counted_at_stop + clients,
        "in flight at the stop: {clients}, counted before it: {counted_at_stop}, after: {}",
        stats.timeout
    );
    assert_eq!(stats.ok, 0);
    assert_eq!(stats.failed(), stats.timeout, "{:?}", stats.errors);
}
