//! Helpers of tests/proxy_protocol.rs: a PROXY v2 header written by hand, HAProxy in front of
//! heird, a connection from a chosen loopback address, and a bare WebSocket client's frames.
#![allow(dead_code)]

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::deps;
use super::proc::free_addr;

/// A v2 header (PROXY, TCP over IPv4) naming `client`, written by hand as a balancer would.
pub fn v2_header(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(c), SocketAddr::V4(s)) = (client, server) else {
        panic!("IPv4 only here")
    };
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&c.ip().octets());
    h.extend_from_slice(&s.ip().octets());
    h.extend_from_slice(&c.port().to_be_bytes());
    h.extend_from_slice(&s.port().to_be_bytes());
    h
}

/// A fresh connection that sends `header`, then GET `path`; (status, response).
pub fn get_with(addr: SocketAddr, header: &[u8], path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(header)?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, out))
}

/// HAProxy in the foreground; killed on drop.
pub struct Haproxy {
    child: Child,
    pub front: SocketAddr,
    stats: std::path::PathBuf,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn haproxy(dir: &Path, backend: SocketAddr, send_proxy: &str) -> Haproxy {
    deps::require("haproxy", &["haproxy"], || {
        deps::succeeds(Command::new("haproxy").arg("-v"))
    });
    let front = free_addr();
    let stats = dir.join("haproxy.sock");
    let cfg = format!(
        "global\n  stats socket {stats} mode 600 level admin\n  nbthread 1\n\
         defaults\n  mode http\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\
         frontend fe\n  bind {front}\n  default_backend be\n\
         backend be\n  option httpchk GET /healthz\n  \
         server s1 {backend} {send_proxy} check check-send-proxy inter 100ms\n",
        stats = stats.display()
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    let child = Command::new("haproxy")
        .args(["-db", "-f"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("haproxy.stderr")).unwrap())
        .spawn()
        .expect("haproxy");
    Haproxy { child, front, stats }
}

/// HAProxy's `show stat` line of the server, from its stats socket.
pub fn server_stat(hp: &Haproxy) -> String {
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(&hp.stats) else {
        return String::new();
    };
    let _ = s.write_all(b"show stat\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines()
        .find(|l| l.starts_with("be,s1,"))
        .unwrap_or("")
        .to_string()
}

/// A TCP connection to `to` from `from` (a loopback address), bound before connecting.
pub fn connect_from(from: &str, to: SocketAddr) -> Option<TcpStream> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket};
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ok()?;
    let local: std::net::SocketAddrV4 = format!("{from}:0").parse().ok()?;
    bind(fd.as_raw_fd(), &SockaddrIn::from(local)).ok()?;
    let SocketAddr::V4(to) = to else { return None };
    connect(fd.as_raw_fd(), &SockaddrIn::from(to)).ok()?;
    Some(TcpStream::from(fd))
}

/// Reads one unmasked server frame (a text message under 126 bytes, as `/ws` replies).
pub fn read_frame(r: &mut BufReader<TcpStream>) -> serde_json::Value {
    let mut head = [0u8; 2];
    r.read_exact(&mut head).unwrap();
    assert_eq!(head[0], 0x81, "not a final text frame: {head:?}");
    let mut body = vec![0u8; usize::from(head[1] & 0x7f)];
    assert!(body.len() < 126);
    r.read_exact(&mut body).unwrap();
    serde_json::from_slice(&body).unwrap()
}

/// Sends `text` as one masked text frame (a client's).
pub fn send_text(w: &mut TcpStream, text: &str) {
    let mask = [1u8, 2, 3, 4];
    let mut f = vec![0x81, 0x80 | text.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    w.write_all(&f).unwrap();
}
