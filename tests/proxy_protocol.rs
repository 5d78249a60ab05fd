//! The PROXY protocol (`--proxy-protocol`, `proxy_protocol`, `proxy_from`): a real HAProxy in
//! front of the real binary (v2 and v1, health checks with `check-send-proxy`), curl from a
//! distinctive loopback address; the client's address surviving a handoff and a stop into the
//! (fake) fd store; and what happens to connections without a valid header.
//!
//! HAProxy comes from Debian (`tests/support/deps.sh haproxy`); every address is on loopback.

mod support;

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::proc::*;
use support::proxy::*;

/// The address curl connects from, and that heird must report instead of HAProxy's.
const CLIENT_IP: &str = "127.0.0.7";

/// Waits until heird answers through a v2 header, or panics with its stderr.
fn wait_serving_proxied(addr: SocketAddr, h: &Heird) {
    let hdr = v2_header("127.0.0.9:1".parse().unwrap(), addr);
    assert!(
        wait_until(Duration::from_secs(10), || matches!(
            get_with(addr, &hdr, "/healthz"),
            Ok((200, _))
        )),
        "heird never served through a PROXY header on {addr}\n{}",
        h.describe()
    );
}

fn start(dir: &Path, config: &str, args: &[&str]) -> (Heird, SocketAddr) {
    let cfg = dir.join("heird.toml");
    std::fs::write(&cfg, config).unwrap();
    let addr = free_addr();
    let (cfg, listen) = (cfg.to_str().unwrap().to_string(), addr.to_string());
    let mut all = vec!["serve", "--config", &cfg, "--listen", &listen];
    all.extend_from_slice(args);
    let h = Spawn::new(dir, &all).start();
    (h, addr)
}

fn curl_info(front: SocketAddr) -> Option<serde_json::Value> {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5", "--interface", CLIENT_IP])
        .arg(format!("http://{front}/info"))
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

fn through_haproxy(send_proxy: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (h, addr) = start(dir.path(), "", &["--proxy-protocol"]);
    wait_serving_proxied(addr, &h);
    let hp = haproxy(dir.path(), addr, send_proxy);
    let haproxy_log = || std::fs::read_to_string(dir.path().join("haproxy.stderr")).unwrap_or_default();
    // Health checks pass through the PROXY listener (`check-send-proxy`): HTTP 200 (L7OK).
    assert!(
        wait_until(Duration::from_secs(10), || {
            let st = server_stat(&hp);
            st.contains(",UP,") && st.contains("L7OK")
        }),
        "health checks never passed: {}\nhaproxy: {}\n{}",
        server_stat(&hp),
        haproxy_log(),
        h.describe()
    );
    let mut v = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            v = curl_info(hp.front);
            v.is_some()
        }),
        "curl through haproxy got no /info\nhaproxy: {}\n{}",
        haproxy_log(),
        h.describe()
    );
    let v = v.unwrap();
    let peer = v["peer"].as_str().unwrap_or("");
    assert!(
        peer.starts_with(&format!("{CLIENT_IP}:")),
        "peer {peer:?} is not curl's address ({send_proxy}): {v}\n{}",
        h.describe()
    );
}

#[test]
fn haproxy_send_proxy_v2_gives_the_clients_address() {
    through_haproxy("send-proxy-v2");
}

#[test]
fn haproxy_send_proxy_v1_gives_the_clients_address() {
    through_haproxy("send-proxy");
}

/// A keep-alive connection that sent a v2 header naming `client`: its writer and reader.
fn keepalive(addr: SocketAddr, client: SocketAddr) -> (TcpStream, BufReader<TcpStream>) {
    let mut w = TcpStream::connect(addr).unwrap();
    w.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    w.write_all(&v2_header(client, addr)).unwrap();
    let r = BufReader::new(w.try_clone().unwrap());
    (w, r)
}

fn ask(w: &mut TcpStream, r: &mut BufReader<TcpStream>) -> serde_json::Value {
    w.write_all(b"GET /info HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    serde_json::from_str(&read_response(r).1).unwrap()
}

#[test]
fn a_moved_connection_keeps_the_clients_address() {
    let dir = tempfile::tempdir().unwrap();
    let (h, addr) = start(dir.path(), "proxy_protocol = true\n", &[]);
    wait_serving_proxied(addr, &h);
    let client: SocketAddr = "127.0.0.9:41000".parse().unwrap();
    let (mut w, mut r) = keepalive(addr, client);
    let v1 = ask(&mut w, &mut r);
    assert_eq!(v1["pid"].as_u64().unwrap() as u32, h.pid(), "{v1}");
    assert_eq!(v1["peer"], "127.0.0.9:41000", "{v1}");
    let (ok, out) = reload(dir.path());
    assert!(ok, "{out}\n{}", h.describe());
    // The old process exits once it has moved its connections.
    assert!(wait_gone(h.pid(), Duration::from_secs(10)), "{}", h.describe());
    // The same connection, now served by the successor, still names the header's client.
    let v2 = ask(&mut w, &mut r);
    assert_ne!(
        v2["pid"].as_u64().unwrap() as u32,
        h.pid(),
        "{v2}\n{}",
        h.describe()
    );
    assert_eq!(v2["connection_moves"], 1, "{v2}");
    assert_eq!(v2["peer"], "127.0.0.9:41000", "{v2}\n{}", h.describe());
}

#[test]
fn a_stored_connection_keeps_the_clients_address_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = FakeNotify::new(dir.path());
    let addr = free_addr();
    let args = ["serve", "--proxy-protocol", "--listen", &addr.to_string()];
    let mut h = Spawn::new(dir.path(), &args)
        .env("NOTIFY_SOCKET", n.path.to_str().unwrap())
        .env("FDSTORE", "128")
        .start();
    wait_serving_proxied(addr, &h);
    let client: SocketAddr = "127.0.0.9:41001".parse().unwrap();
    let (mut w, mut r) = keepalive(addr, client);
    assert_eq!(ask(&mut w, &mut r)["peer"], "127.0.0.9:41001");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(h.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(
        h.wait_timeout(Duration::from_secs(10)).unwrap().success(),
        "{}",
        h.describe()
    );
    n.wait_for(Duration::from_secs(5), |_, m| m.contains("FDNAME=conn-tcp-"))
        .unwrap_or_else(|| panic!("connection never stored: {:?}\n{}", n.seen, h.describe()));
    let stored: Vec<(String, std::os::fd::OwnedFd)> = std::mem::take(&mut *n.store.lock().unwrap());
    let names: Vec<&str> = stored.iter().map(|(k, _)| k.as_str()).collect();
    assert!(names.iter().all(|k| !k.contains(':')), "{names:?}");
    let mut sp = Spawn::new(dir.path(), &args);
    sp.fds = stored.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
    sp.listen_pid_self = true;
    let h2 = sp
        .env("LISTEN_FDS", &stored.len().to_string())
        .env("LISTEN_FDNAMES", &names.join(":"))
        .env("NOTIFY_SOCKET", n.path.to_str().unwrap())
        .start();
    drop(stored);
    let v = ask(&mut w, &mut r);
    assert_eq!(
        v["pid"].as_u64().unwrap() as u32,
        h2.pid(),
        "{v}\n{}",
        h2.describe()
    );
    assert_eq!(v["connection_moves"], 1, "{v}");
    assert_eq!(v["peer"], "127.0.0.9:41001", "{v}\n{}", h2.describe());
}

/// Sends `bytes` (maybe nothing) and reads until the connection closes; what came back.
fn closed_after(addr: SocketAddr, bytes: &[u8], within: Duration) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(within)).unwrap();
    s.write_all(bytes).unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("not closed within {within:?} ({:?}): {e}", start.elapsed()),
    }
    got
}

fn wait_log(h: &Heird, what: &str) -> bool {
    wait_until(Duration::from_secs(5), || h.stderr().contains(what))
}

#[test]
fn connections_without_a_valid_header_are_closed_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = "proxy_protocol = true\nproxy_header_timeout = \"300ms\"\n";
    let (h, addr) = start(dir.path(), cfg, &[]);
    wait_serving_proxied(addr, &h);
    // A silent client: closed at the header timeout, and logged with its address.
    let got = closed_after(addr, b"", Duration::from_secs(5));
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    assert!(wait_log(&h, "no complete header in time"), "{}", h.describe());
    // A request without a header: closed, nothing served.
    let got = closed_after(
        addr,
        b"GET /info HTTP/1.1\r\nHost: t\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(got.is_empty(), "served: {}", String::from_utf8_lossy(&got));
    assert!(wait_log(&h, "no valid header"), "{}", h.describe());
    // A malformed v2 header (version 1), then a request.
    let mut bad = v2_header("127.0.0.9:1".parse().unwrap(), addr);
    bad[12] = 0x11;
    bad.extend_from_slice(b"GET /info HTTP/1.1\r\nHost: t\r\n\r\n");
    let got = closed_after(addr, &bad, Duration::from_secs(5));
    assert!(got.is_empty(), "served: {}", String::from_utf8_lossy(&got));
    assert!(wait_log(&h, "v2: "), "{}", h.describe());
    let log = h.stderr();
    let warned = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("peer=127.0.0.1:"))
        .count();
    assert!(warned >= 3, "{log}");
}

#[test]
fn a_source_outside_proxy_from_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = "proxy_protocol = true\nproxy_from = [\"127.0.0.5/32\"]\n";
    let (h, addr) = start(dir.path(), cfg, &[]);
    let hdr = v2_header("127.0.0.9:7".parse().unwrap(), addr);
    // From the balancer's address: served, with the header's client.
    let from_balancer = || -> Option<String> {
        let sock = connect_from("127.0.0.5", addr)?;
        let mut s = sock;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(&hdr).ok()?;
        s.write_all(b"GET /info HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    };
    let mut out = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            out = from_balancer().filter(|o| o.starts_with("HTTP/1.1 200"));
            out.is_some()
        }),
        "never served from the trusted source\n{}",
        h.describe()
    );
    assert!(
        out.unwrap().contains("\"peer\":\"127.0.0.9:7\""),
        "{}",
        h.describe()
    );
    // From anywhere else (127.0.0.1), even with a valid header: closed, nothing served.
    let mut with_req = hdr.clone();
    with_req.extend_from_slice(b"GET /info HTTP/1.1\r\nHost: t\r\n\r\n");
    let got = closed_after(addr, &with_req, Duration::from_secs(5));
    assert!(got.is_empty(), "served: {}", String::from_utf8_lossy(&got));
    assert!(wait_log(&h, "not in proxy_from"), "{}", h.describe());
}

#[test]
fn a_bad_proxy_from_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("heird.toml");
    std::fs::write(&cfg, "proxy_protocol = true\nproxy_from = [\"10.0.0.0/40\"]\n").unwrap();
    let addr = free_addr().to_string();
    let mut h = Spawn::new(
        dir.path(),
        &["serve", "--listen", &addr, "--config", cfg.to_str().unwrap()],
    )
    .start();
    let st = h.wait_timeout(Duration::from_secs(10));
    let err = h.stderr();
    assert_eq!(st.and_then(|s| s.code()), Some(78), "{}", h.describe());
    assert!(err.contains("proxy_from") && err.contains("10.0.0.0/40"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_moved_websocket_keeps_the_clients_address() {
    let dir = tempfile::tempdir().unwrap();
    let (h, addr) = start(dir.path(), "proxy_protocol = true\n", &[]);
    wait_serving_proxied(addr, &h);
    let (mut w, mut r) = keepalive(addr, "127.0.0.9:41002".parse().unwrap());
    w.write_all(
        b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        let mut line = String::new();
        assert!(
            std::io::BufRead::read_line(&mut r, &mut line).unwrap() > 0,
            "{head}"
        );
        head += &line;
    }
    assert!(head.starts_with("HTTP/1.1 101"), "{head}\n{}", h.describe());
    send_text(&mut w, "one");
    let v1 = read_frame(&mut r);
    assert_eq!(v1["pid"].as_u64().unwrap() as u32, h.pid(), "{v1}");
    assert_eq!(v1["peer"], "127.0.0.9:41002", "{v1}");
    let (ok, out) = reload(dir.path());
    assert!(ok, "{out}\n{}", h.describe());
    assert!(wait_gone(h.pid(), Duration::from_secs(10)), "{}", h.describe());
    // The same WebSocket, resumed by the successor: still the header's client.
    send_text(&mut w, "two");
    let v2 = read_frame(&mut r);
    assert_ne!(
        v2["pid"].as_u64().unwrap() as u32,
        h.pid(),
        "{v2}\n{}",
        h.describe()
    );
    assert_eq!(v2["n"], 2, "{v2}");
    assert_eq!(v2["peer"], "127.0.0.9:41002", "{v2}\n{}", h.describe());
}

/// HTTPS behind a PROXY header: the header comes first, TLS after it.
#[test]
fn the_header_comes_before_tls() {
    use support::tls::{TlsConn, client_config, make_pair, request};
    let dir = tempfile::tempdir().unwrap();
    let pair = make_pair(dir.path(), "srv", 30);
    let (cert, key) = (pair.cert.to_str().unwrap(), pair.key.to_str().unwrap());
    let args = ["--proxy-protocol", "--tls-cert", cert, "--tls-key", key];
    let (h, addr) = start(dir.path(), "", &args);
    let cfg = client_config(&[&pair.cert_pem], &[b"http/1.1"]);
    let info = || -> std::io::Result<serde_json::Value> {
        let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        tcp.write_all(&v2_header("127.0.0.9:41003".parse().unwrap(), addr))?;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(cfg.clone(), name).map_err(std::io::Error::other)?;
        let mut s: TlsConn = rustls::StreamOwned::new(conn, tcp);
        let (_, body) = request(&mut s, "/info")?;
        serde_json::from_str(&body).map_err(std::io::Error::other)
    };
    let mut v = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            v = info().ok();
            v.is_some()
        }),
        "no HTTPS answer after a PROXY header: {:?}\n{}",
        info().err(),
        h.describe()
    );
    let v = v.unwrap();
    assert_eq!(v["peer"], "127.0.0.9:41003", "{v}\n{}", h.describe());
}
