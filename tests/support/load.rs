//! A small HTTP/1.1 load client with exact failure classification.
//!
//! Used by the integration tests (`mod support;` then `support::load`) and by the
//! `heird-load` example (benchmarks, systemd sandbox tests). It talks HTTP/1.1 by hand
//! over `tokio::net::TcpStream` so that every failure can be attributed to one kind.
//!
//! [`start`] runs `keepalive_clients` + `newconn_clients` concurrent clients on a private
//! two-worker tokio runtime on a background thread, so it works from a plain `#[test]`
//! and from inside a multi-thread tokio runtime alike (`stop` blocks while joining).
//!
//! * **Keep-alive clients** keep one connection and send `GET` requests back-to-back on
//!   it. When a response carries `Connection: close` (or is close-delimited), or after any
//!   failure, they open a new connection for the next request (counted in `reconnects`).
//! * **New-connection clients** connect, send one request with `Connection: close`, read
//!   the response, close, and repeat.
//!
//! With [`LoadConfig::tls`] every connection does a TLS handshake first (rustls; server name
//! `localhost`); a failed handshake counts as `other` (or `reset`/`closed_before_response`
//! when the socket says so).
//!
//! After any failure a client backs off 5 ms, so a dead server does not make it spin.
//! Every request ends in exactly one outcome; a failure is counted once, by kind:
//!
//! | kind                     | meaning                                                          |
//! |--------------------------|------------------------------------------------------------------|
//! | `refused`                | `connect()` failed with `ECONNREFUSED`                           |
//! | `reset`                  | `ECONNRESET` / `ECONNABORTED` / `EPIPE` while writing or reading |
//! | `closed_before_response` | EOF before a complete response (also right after sending a request on a reused keep-alive connection) |
//! | `timeout`                | no complete response within `request_timeout`; the connect time counts too |
//! | `non_200`                | a complete response whose final status is not 200               |
//! | `other`                  | any other I/O error, or a malformed response                     |
//!
//! The first [`MAX_ERRORS`] failures are described in [`Stats::errors`] as
//! `"[<ms since start>ms] <kind>: <detail>"`.
//!
//! Latency is measured from the start of the request (including the connect when a new
//! connection is needed) until the last byte of the response body has been read.

// This file is shared by several test binaries and the example; each uses a subset.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::JoinSet;

/// Default for [`LoadConfig::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this many entries are kept in [`Stats::samples`].
pub const MAX_SAMPLES: usize = 5_000_000;
/// At most this many failure descriptions are kept in [`Stats::errors`].
pub const MAX_ERRORS: usize = 20;
/// Pause after a failure before the client tries again.
const ERROR_BACKOFF: Duration = Duration::from_millis(5);
/// How long a new-connection client waits for the server's FIN after a complete
/// response (so that TIME_WAIT lands on the server side); never counted as a failure.
const EOF_GRACE: Duration = Duration::from_millis(50);
/// Largest accepted response head (status line + headers), and chunk-size/trailer line.
const MAX_HEAD: usize = 64 * 1024;
const MAX_LINE: usize = 8 * 1024;
const READ_CHUNK: usize = 16 * 1024;

/// What to load and how hard.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub addr: SocketAddr,
    /// Request target, e.g. `"/sleep?duration=10ms"`.
    pub path: String,
    /// Number of keep-alive clients (C).
    pub keepalive_clients: usize,
    /// Number of new-connection-per-request clients (K).
    pub newconn_clients: usize,
    /// Bound on one request, connect included.
    pub request_timeout: Duration,
    /// Speak HTTPS with this client config (server name `localhost`).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl LoadConfig {
    /// `GET /` with one keep-alive client, no new-connection clients, 5 s timeout.
    pub fn new(addr: SocketAddr) -> Self {
        LoadConfig {
            addr,
            path: "/".to_string(),
            keepalive_clients: 1,
            newconn_clients: 0,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            tls: None,
        }
    }
}

/// Counters collected by a running load. Cheap to reason about: every request attempt
/// increments exactly one of `ok`, `refused`, `reset`, `closed_before_response`,
/// `timeout`, `non_200`, `other`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    pub ok: u64,
    pub refused: u64,
    pub reset: u64,
    pub closed_before_response: u64,
    pub timeout: u64,
    pub non_200: u64,
    pub other: u64,
    /// New connections opened by keep-alive clients after their first one.
    pub reconnects: u64,
    /// Responses to keep-alive clients that carried `Connection: close` (new-connection
    /// clients ask for `close` themselves, so their responses are not counted).
    pub connection_close_seen: u64,
    /// Complete responses (200 or not) per value of the `x-heird-pid` header.
    pub pids: BTreeMap<u32, u64>,
    /// One entry per OK response (capped at [`MAX_SAMPLES`]):
    /// (ms since start at completion, latency in µs, `x-heird-pid` or 0).
    pub samples: Vec<(u64, u64, u32)>,
    /// The first [`MAX_ERRORS`] failures, `"[<ms>ms] <kind>: <detail>"`.
    pub errors: Vec<String>,
    /// ms since start of every failure (capped at [`MAX_SAMPLES`]), for plots.
    pub failure_times: Vec<u64>,
    /// ms since start of every reconnect of a keep-alive client (capped at [`MAX_SAMPLES`]).
    pub reconnect_times: Vec<u64>,
}

impl Stats {
    /// All failed requests, of any kind.
    pub fn failed(&self) -> u64 {
        self.refused + self.reset + self.closed_before_response + self.timeout + self.non_200 + self.other
    }

    /// Latency percentile (`p` in 0..=100, nearest rank) over OK responses, in µs;
    /// 0 when there are none. `percentile_us(100.0)` is the maximum.
    pub fn percentile_us(&self, p: f64) -> u64 {
        self.percentiles_us(&[p])[0]
    }

    /// Several percentiles at once (sorts the samples only once).
    pub fn percentiles_us(&self, ps: &[f64]) -> Vec<u64> {
        let mut lat: Vec<u64> = self.samples.iter().map(|s| s.1).collect();
        lat.sort_unstable();
        ps.iter()
            .map(|&p| {
                if lat.is_empty() {
                    return 0;
                }
                let p = if p.is_nan() { 100.0 } else { p.clamp(0.0, 100.0) };
                let rank = ((p / 100.0) * lat.len() as f64).ceil() as usize;
                lat[rank.clamp(1, lat.len()) - 1]
            })
            .collect()
    }
}

/// Kind of a failed request; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    Refused,
    Reset,
    ClosedBeforeResponse,
    Timeout,
    Non200,
    Other,
}

impl FailureKind {
    /// The name used in [`Stats`] fields and in [`Stats::errors`].
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::Refused => "refused",
            FailureKind::Reset => "reset",
            FailureKind::ClosedBeforeResponse => "closed_before_response",
            FailureKind::Timeout => "timeout",
            FailureKind::Non200 => "non_200",
            FailureKind::Other => "other",
        }
    }
}

/// A running load. Dropping it stops the load too (like [`LoadHandle::stop`]).
pub struct LoadHandle {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Start the load on a private tokio runtime (2 worker threads) on a background thread.
///
/// Works with or without a surrounding tokio runtime. Panics only if the runtime or the
/// thread cannot be created.
pub fn start(cfg: LoadConfig) -> LoadHandle {
    let shared = Arc::new(Shared {
        cfg,
        started: Instant::now(),
        stop: AtomicBool::new(false),
        stop_notify: Notify::new(),
        stats: Mutex::new(Stats::default()),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("heird-load-worker")
        .enable_all()
        .build()
        .expect("heird-load: cannot build tokio runtime");
    let sh = shared.clone();
    let thread = std::thread::Builder::new()
        .name("heird-load".to_string())
        .spawn(move || run(runtime, sh))
        .expect("heird-load: cannot spawn thread");
    LoadHandle {
        shared,
        thread: Some(thread),
    }
}

impl LoadHandle {
    /// A copy of the statistics so far (includes a copy of all samples).
    pub fn snapshot(&self) -> Stats {
        self.shared.stats().clone()
    }

    /// Time since [`start`].
    pub fn elapsed(&self) -> Duration {
        self.shared.started.elapsed()
    }

    /// Poll (every 5 ms, without copying the stats) until `pred` holds or `timeout`
    /// passes; returns whether `pred` held.
    pub fn wait_until(&self, timeout: Duration, pred: impl Fn(&Stats) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&self.shared.stats()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stop all clients, let in-flight requests finish (each bounded by
    /// `request_timeout`), and return the final statistics. Blocks the calling thread
    /// for at most about `request_timeout + 50 ms`.
    pub fn stop(mut self) -> Stats {
        self.shutdown();
        self.snapshot()
    }

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.stop_notify.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for LoadHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Shared {
    cfg: LoadConfig,
    started: Instant,
    stop: AtomicBool,
    stop_notify: Notify,
    stats: Mutex<Stats>,
}

impl Shared {
    fn stats(&self) -> MutexGuard<'_, Stats> {
        // A poisoned lock only means some thread panicked while counting; the counters
        // are still usable.
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn record_response(&self, resp: &Response, latency: Duration, count_close: bool) {
        let at = self.now_ms();
        let mut s = self.stats();
        if let Some(pid) = resp.pid {
            *s.pids.entry(pid).or_default() += 1;
        }
        if count_close && resp.close_header {
            s.connection_close_seen += 1;
        }
        if resp.status == 200 {
            s.ok += 1;
            if s.samples.len() < MAX_SAMPLES {
                let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                s.samples.push((at, us, resp.pid.unwrap_or(0)));
            }
        } else {
            drop(s);
            self.record_failure(Failure::new(
                FailureKind::Non200,
                format!("status {}", resp.status),
            ));
        }
    }

    fn record_failure(&self, f: Failure) {
        let at = self.now_ms();
        let mut s = self.stats();
        match f.kind {
            FailureKind::Refused => s.refused += 1,
            FailureKind::Reset => s.reset += 1,
            FailureKind::ClosedBeforeResponse => s.closed_before_response += 1,
            FailureKind::Timeout => s.timeout += 1,
            FailureKind::Non200 => s.non_200 += 1,
            FailureKind::Other => s.other += 1,
        }
        if s.errors.len() < MAX_ERRORS {
            s.errors.push(format!("[{at}ms] {}: {}", f.kind.name(), f.detail));
        }
        if s.failure_times.len() < MAX_SAMPLES {
            s.failure_times.push(at);
        }
    }

    fn record_reconnect(&self) {
        let at = self.now_ms();
        let mut s = self.stats();
        s.reconnects += 1;
        if s.reconnect_times.len() < MAX_SAMPLES {
            s.reconnect_times.push(at);
        }
    }

    /// Back off after a failure; returns early if the load is being stopped.
    async fn backoff(&self) {
        if !self.stopping() {
            tokio::time::sleep(ERROR_BACKOFF).await;
        }
    }
}

fn run(runtime: tokio::runtime::Runtime, sh: Arc<Shared>) {
    runtime.block_on(async {
        let mut tasks = JoinSet::new();
        for _ in 0..sh.cfg.keepalive_clients {
            tasks.spawn(keepalive_client(sh.clone()));
        }
        for _ in 0..sh.cfg.newconn_clients {
            tasks.spawn(newconn_client(sh.clone()));
        }
        // `notify_one` stores a permit, so a stop requested before we get here is not lost.
        sh.stop_notify.notified().await;
        // Every client checks the stop flag between requests, and every request is bounded
        // by request_timeout; the margin covers the EOF grace and the back-off.
        let grace = sh.cfg.request_timeout + EOF_GRACE;
        let _ = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        tasks.abort_all();
    });
    runtime.shutdown_timeout(Duration::from_millis(20));
}

async fn keepalive_client(sh: Arc<Shared>) {
    let cfg = &sh.cfg;
    let request = format!("GET {} HTTP/1.1\r\nHost: {}\r\n\r\n", cfg.path, cfg.addr);
    let mut conn: Option<Conn> = None;
    let mut opened_before = false;
    while !sh.stopping() {
        let t0 = Instant::now();
        let attempt = tokio::time::timeout(cfg.request_timeout, async {
            if conn.is_none() {
                conn = Some(Conn::connect(cfg.addr, cfg.tls.as_ref()).await?);
                if opened_before {
                    sh.record_reconnect();
                }
                opened_before = true;
            }
            let Some(c) = conn.as_mut() else {
                return Err(Failure::new(FailureKind::Other, "internal: no connection"));
            };
            c.send(request.as_bytes()).await?;
            c.read_response().await
        })
        .await;
        let latency = t0.elapsed();
        match attempt {
            Ok(Ok(resp)) => {
                if resp.must_close {
                    conn = None;
                }
                sh.record_response(&resp, latency, true);
                if resp.status != 200 {
                    sh.backoff().await;
                }
            }
            Ok(Err(failure)) => {
                conn = None;
                sh.record_failure(failure);
                sh.backoff().await;
            }
            Err(_elapsed) => {
                conn = None;
                sh.record_failure(Failure::timeout(cfg.request_timeout));
                sh.backoff().await;
            }
        }
    }
}

async fn newconn_client(sh: Arc<Shared>) {
    let cfg = &sh.cfg;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        cfg.path, cfg.addr
    );
    while !sh.stopping() {
        let t0 = Instant::now();
        let attempt = tokio::time::timeout(cfg.request_timeout, async {
            let mut c = Conn::connect(cfg.addr, cfg.tls.as_ref()).await?;
            c.send(request.as_bytes()).await?;
            let resp = c.read_response().await?;
            Ok::<_, Failure>((c, resp))
        })
        .await;
        let latency = t0.elapsed();
        match attempt {
            Ok(Ok((c, resp))) => {
                sh.record_response(&resp, latency, false);
                c.wait_for_eof().await;
                if resp.status != 200 {
                    sh.backoff().await;
                }
            }
            Ok(Err(failure)) => {
                sh.record_failure(failure);
                sh.backoff().await;
            }
            Err(_elapsed) => {
                sh.record_failure(Failure::timeout(cfg.request_timeout));
                sh.backoff().await;
            }
        }
    }
}

#[derive(Debug)]
struct Failure {
    kind: FailureKind,
    detail: String,
}

impl Failure {
    fn new(kind: FailureKind, detail: impl Into<String>) -> Self {
        Failure {
            kind,
            detail: detail.into(),
        }
    }

    fn timeout(limit: Duration) -> Self {
        Failure::new(
            FailureKind::Timeout,
            format!(
                "no complete response within {}",
                humantime::format_duration(limit)
            ),
        )
    }

    fn io(phase: &str, e: &io::Error) -> Self {
        use io::ErrorKind as K;
        let kind = match e.kind() {
            K::ConnectionRefused => FailureKind::Refused,
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => FailureKind::Reset,
            K::UnexpectedEof => FailureKind::ClosedBeforeResponse,
            K::TimedOut => FailureKind::Timeout,
            _ => FailureKind::Other,
        };
        Failure::new(kind, format!("{phase}: {e}"))
    }

    fn closed(what: &str) -> Self {
        Failure::new(
            FailureKind::ClosedBeforeResponse,
            format!("connection closed {what}"),
        )
    }

    fn protocol(detail: impl std::fmt::Display) -> Self {
        Failure::new(FailureKind::Other, format!("bad response: {detail}"))
    }
}

/// The parts of a complete response the statistics need.
#[derive(Debug)]
struct Response {
    status: u16,
    /// The response carried `Connection: close`.
    close_header: bool,
    /// The connection cannot be reused (close header, HTTP/1.0, or close-delimited body).
    must_close: bool,
    pid: Option<u32>,
}

/// The parsed response head.
#[derive(Debug, Default)]
struct Head {
    status: u16,
    http10: bool,
    close: bool,
    keep_alive: bool,
    /// `Some(true)`: chunked; `Some(false)`: other transfer coding (close-delimited).
    transfer_chunked: Option<bool>,
    content_length: Option<u64>,
    pid: Option<u32>,
}

/// A plain or a TLS connection.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

struct Conn {
    stream: Box<dyn Stream>,
    buf: BytesMut,
}

impl Conn {
    async fn connect(addr: SocketAddr, tls: Option<&Arc<rustls::ClientConfig>>) -> Result<Conn, Failure> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| Failure::io("connect", &e))?;
        // Requests are a single write; best effort only.
        let _ = stream.set_nodelay(true);
        let stream: Box<dyn Stream> = match tls {
            None => Box::new(stream),
            Some(cfg) => {
                let name = rustls::pki_types::ServerName::try_from("localhost")
                    .map_err(|e| Failure::protocol(e.to_string()))?;
                let s = tokio_rustls::TlsConnector::from(cfg.clone())
                    .connect(name, stream)
                    .await
                    .map_err(|e| Failure::io("tls handshake", &e))?;
                Box::new(s)
            }
        };
        Ok(Conn {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
        })
    }

    async fn send(&mut self, request: &[u8]) -> Result<(), Failure> {
        self.stream
            .write_all(request)
            .await
            .map_err(|e| Failure::io("write", &e))
    }

    /// Read more bytes into `buf`; returns 0 at EOF.
    async fn fill(&mut self) -> Result<usize, Failure> {
        self.buf.reserve(READ_CHUNK);
        self.stream
            .read_buf(&mut self.buf)
            .await
            .map_err(|e| Failure::io("read", &e))
    }

    /// Read one complete final response (skipping 1xx interim responses but 101).
    async fn read_response(&mut self) -> Result<Response, Failure> {
        loop {
            let head = self.read_head().await?;
            if (100..200).contains(&head.status) && head.status != 101 {
                continue;
            }
            let mut close_delimited = false;
            if head.status == 101 || head.status == 204 || head.status == 304 {
                // No body.
            } else if head.transfer_chunked == Some(true) {
                self.read_chunked().await?;
            } else if head.transfer_chunked == Some(false) {
                self.read_to_eof().await?;
                close_delimited = true;
            } else if let Some(len) = head.content_length {
                self.discard(len).await?;
            } else {
                self.read_to_eof().await?;
                close_delimited = true;
            }
            return Ok(Response {
                status: head.status,
                close_header: head.close,
                must_close: head.close
                    || (head.http10 && !head.keep_alive)
                    || close_delimited
                    || head.status == 101,
                pid: head.pid,
            });
        }
    }

    async fn read_head(&mut self) -> Result<Head, Failure> {
        let mut searched = 0;
        loop {
            if let Some(pos) = find(&self.buf[searched..], b"\r\n\r\n") {
                let end = searched + pos;
                let head = parse_head(&self.buf[..end])?;
                self.buf.advance(end + 4);
                return Ok(head);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(Failure::protocol(format!(
                    "response head larger than {MAX_HEAD} bytes"
                )));
            }
            searched = self.buf.len().saturating_sub(3);
            if self.fill().await? == 0 {
                return Err(if self.buf.is_empty() {
                    Failure::closed("before any response byte")
                } else {
                    Failure::closed(&format!(
                        "in the response head ({} bytes received)",
                        self.buf.len()
                    ))
                });
            }
        }
    }

    /// Read one CRLF-terminated line (without the CRLF).
    async fn read_line(&mut self) -> Result<Vec<u8>, Failure> {
        let mut searched = 0;
        loop {
            if let Some(pos) = find(&self.buf[searched..], b"\r\n") {
                let end = searched + pos;
                let line = self.buf[..end].to_vec();
                self.buf.advance(end + 2);
                return Ok(line);
            }
            if self.buf.len() > MAX_LINE {
                return Err(Failure::protocol("chunked body line too long"));
            }
            searched = self.buf.len().saturating_sub(1);
            if self.fill().await? == 0 {
                return Err(Failure::closed("in a chunked body"));
            }
        }
    }

    /// Consume exactly `len` body bytes.
    async fn discard(&mut self, len: u64) -> Result<(), Failure> {
        let mut remaining = len;
        loop {
            let take = remaining.min(self.buf.len() as u64);
            // `take` <= buf.len(), so it fits in usize.
            self.buf.advance(take as usize);
            remaining -= take;
            if remaining == 0 {
                return Ok(());
            }
            if self.fill().await? == 0 {
                return Err(Failure::closed(&format!(
                    "in the body ({} of {len} bytes received)",
                    len - remaining
                )));
            }
        }
    }

    async fn read_chunked(&mut self) -> Result<(), Failure> {
        loop {
            let line = self.read_line().await?;
            let size_part = line.split(|&b| b == b';').next().unwrap_or_default();
            let size_str = std::str::from_utf8(size_part)
                .map_err(|_| Failure::protocol("non-ASCII chunk size"))?
                .trim();
            let size = u64::from_str_radix(size_str, 16)
                .map_err(|_| Failure::protocol(format!("bad chunk size {size_str:?}")))?;
            if size == 0 {
                // Trailer section, ended by an empty line.
                while !self.read_line().await?.is_empty() {}
                return Ok(());
            }
            self.discard(size).await?;
            if !self.read_line().await?.is_empty() {
                return Err(Failure::protocol("missing CRLF after chunk data"));
            }
        }
    }

    async fn read_to_eof(&mut self) -> Result<(), Failure> {
        loop {
            self.buf.clear();
            if self.fill().await? == 0 {
                return Ok(());
            }
        }
    }

    /// After a `Connection: close` exchange, give the server a moment to close first.
    async fn wait_for_eof(mut self) {
        let _ = tokio::time::timeout(EOF_GRACE, self.read_to_eof()).await;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(raw: &[u8]) -> Result<Head, Failure> {
    let mut lines = raw
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line = lines.next().unwrap_or_default();
    let status_line =
        std::str::from_utf8(status_line).map_err(|_| Failure::protocol("non-UTF-8 status line"))?;
    let mut head = Head::default();
    let mut parts = status_line.splitn(3, ' ');
    match parts.next() {
        Some("HTTP/1.1") => {}
        Some("HTTP/1.0") => head.http10 = true,
        _ => {
            return Err(Failure::protocol(format!(
                "bad status line {:?}",
                truncate(status_line)
            )));
        }
    }
    head.status = parts
        .next()
        .filter(|s| s.len() == 3)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Failure::protocol(format!("bad status line {:?}", truncate(status_line))))?;
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(Failure::protocol(format!(
                "bad header line {:?}",
                truncate(&String::from_utf8_lossy(line))
            )));
        };
        let name = line[..colon].trim_ascii();
        let value = line[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    head.close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    head.keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let last = value.split(|&b| b == b',').next_back().unwrap_or_default();
            head.transfer_chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let len = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| {
                    Failure::protocol(format!("bad content-length {:?}", String::from_utf8_lossy(value)))
                })?;
            if head.content_length.is_some_and(|prev| prev != len) {
                return Err(Failure::protocol("conflicting content-length headers"));
            }
            head.content_length = Some(len);
        } else if name.eq_ignore_ascii_case(b"x-heird-pid") {
            head.pid = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
        }
    }
    Ok(head)
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}
