//! TLS for the integration tests: certificates made by the test (rcgen), a rustls client that
//! trusts them, a blocking HTTPS client, and `openssl s_client` as a client nobody here wrote.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::proc::{Heird, Spawn};

/// A certificate and its key, written as PEM files.
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub cert_pem: String,
    /// SHA-256 of the certificate's DER, `AB:CD:…` (as `openssl x509 -fingerprint -sha256`).
    pub sha256: String,
}

/// A self-signed certificate for `localhost` and 127.0.0.1, valid from a day ago for `days`
/// days from now (negative: expired), written to `dir/<stem>.crt` and `dir/<stem>.key`.
pub fn make_pair(dir: &Path, stem: &str, days: i64) -> Pair {
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(30);
    params.not_after = now + time::Duration::days(days);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("heird test {stem}"));
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let pair = Pair {
        cert: dir.join(format!("{stem}.crt")),
        key: dir.join(format!("{stem}.key")),
        cert_pem: cert.pem(),
        sha256: fingerprint(cert.der()),
    };
    std::fs::write(&pair.cert, cert.pem()).unwrap();
    std::fs::write(&pair.key, key.serialize_pem()).unwrap();
    pair
}

fn fingerprint(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    d.as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A rustls client config that trusts the certificates in `ca_pems`, offering `alpn`.
pub fn client_config(ca_pems: &[&str], alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for pem in ca_pems {
        for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
    }
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// A blocking HTTPS/1.1 connection (server name `localhost`).
pub type TlsConn = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

pub fn connect(addr: SocketAddr, cfg: &Arc<rustls::ClientConfig>) -> std::io::Result<TlsConn> {
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    tcp.set_read_timeout(Some(Duration::from_secs(15)))?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(cfg.clone(), name).map_err(std::io::Error::other)?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    // Drive the handshake now, so that its errors show here.
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

/// Sends `GET path` on `conn`; returns (head, body). `Err` when the connection closed first.
pub fn request(conn: &mut TlsConn, path: &str) -> std::io::Result<(String, String)> {
    write!(conn, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    conn.flush()?;
    let mut r = BufReader::new(conn);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("closed; got {head:?}"),
            ));
        }
        if line == "\r\n" {
            break;
        }
        head += &line;
    }
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok((head, String::from_utf8_lossy(&body).into_owned()))
}

/// `GET path` on a fresh HTTPS connection: (head, body).
pub fn https_get(
    addr: SocketAddr,
    cfg: &Arc<rustls::ClientConfig>,
    path: &str,
) -> std::io::Result<(String, String)> {
    let mut c = connect(addr, cfg)?;
    request(&mut c, path)
}

/// `/info` over HTTPS as JSON.
pub fn https_info(addr: SocketAddr, cfg: &Arc<rustls::ClientConfig>) -> serde_json::Value {
    let (head, body) = https_get(addr, cfg, "/info").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    serde_json::from_str(&body).unwrap()
}

/// Waits until `/healthz` answers over HTTPS, or panics with the process's stderr.
pub fn wait_serving_tls(addr: SocketAddr, cfg: &Arc<rustls::ClientConfig>, h: &Heird) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = String::new();
    while Instant::now() < deadline {
        match https_get(addr, cfg, "/healthz") {
            Ok((head, _)) if head.starts_with("HTTP/1.1 200") => return,
            Ok((head, _)) => last = head,
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "heird never served HTTPS on {addr} (last: {last})\n{}",
        h.describe()
    );
}

/// Runs `openssl s_client` against `addr` with `args`, stdin `input`; returns stdout+stderr.
///
/// s_client quits at the end of its stdin (unless `-quiet` or `-ign_eof`), so stdin stays open
/// until its output shows what the caller reads: the handshake's summary when `input` is empty
/// (see [`handshake_reported`]), else a whole HTTP response (see [`response_complete`]).
pub fn s_client(addr: SocketAddr, args: &[&str], input: &[u8]) -> String {
    let done = if input.is_empty() {
        handshake_reported
    } else {
        response_complete
    };
    s_client_until(addr, args, input, done)
}

/// Like [`s_client`], closing stdin once `done` holds for the stdout so far, or when s_client
/// has exited by itself; at most 20 s (then the output says so, for the caller's assertion).
pub fn s_client_until(addr: SocketAddr, args: &[&str], input: &[u8], done: fn(&str) -> bool) -> String {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is needed (apt-get install openssl)");
    let collect = |mut from: Box<dyn Read + Send>| {
        let buf = Arc::new(std::sync::Mutex::new(Vec::new()));
        let to = buf.clone();
        let reader = std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = from.read(&mut chunk) {
                to.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        (buf, reader)
    };
    let (out, out_reader) = collect(Box::new(child.stdout.take().unwrap()));
    let (err, err_reader) = collect(Box::new(child.stderr.take().unwrap()));
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(input);
    let _ = stdin.flush();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut note = "";
    loop {
        if done(&String::from_utf8_lossy(&out.lock().unwrap())) || child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            note = "\n(s_client_until: after 20 s the output still lacked what the test waits for)\n";
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            note = "\n(s_client_until: s_client did not quit within 10 s of its stdin's end: killed)\n";
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.wait();
    let _ = (out_reader.join(), err_reader.join());
    let (out, err) = (out.lock().unwrap(), err.lock().unwrap());
    format!(
        "{}{}{note}",
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&err)
    )
}

/// s_client has printed the summary it prints once the handshake is done (the certificate,
/// ALPN, the session); "Verify return code:" is its last line.
pub fn handshake_reported(stdout: &str) -> bool {
    stdout.contains("Verify return code:")
}

/// `stdout` holds a whole HTTP/1.1 response: its head and as many body bytes as its
/// Content-Length says.
pub fn response_complete(stdout: &str) -> bool {
    let Some(start) = stdout.find("HTTP/1.1 ") else {
        return false;
    };
    let Some((head, body)) = stdout[start..].split_once("\r\n\r\n") else {
        return false;
    };
    let len = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    });
    len.is_some_and(|n| body.len() >= n)
}

/// The SHA-256 fingerprint of the certificate the server at `addr` presents, as seen by
/// `openssl s_client` (piped into `openssl x509 -fingerprint`).
pub fn served_fingerprint(addr: SocketAddr) -> String {
    let out = s_client(addr, &["-servername", "localhost"], b"");
    let start = out
        .find("-----BEGIN CERTIFICATE-----")
        .unwrap_or_else(|| panic!("no certificate in: {out}"));
    let end = out.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----".len();
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    x509.stdin
        .take()
        .unwrap()
        .write_all(&out.as_bytes()[start..end])
        .unwrap();
    let fp = x509.wait_with_output().unwrap();
    let fp = String::from_utf8_lossy(&fp.stdout);
    fp.trim()
        .rsplit_once('=')
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| panic!("openssl x509 said: {fp}"))
}

/// A heird serving HTTPS with `pair` on a free port (config file `config`), with the test's
/// directory as its runtime directory.
pub struct Https {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub cfg_path: PathBuf,
    pub client: Arc<rustls::ClientConfig>,
    pub h: Heird,
}

/// Starts heird with `--tls-cert`/`--tls-key` of a fresh `pair` ("a", valid 90 days) and
/// `config`; waits until it serves HTTPS.
pub fn start_tls(config: &str) -> (Https, Pair) {
    let dir = tempfile::tempdir().unwrap();
    let pair = make_pair(dir.path(), "a", 90);
    let cfg_path = dir.path().join("heird.toml");
    std::fs::write(&cfg_path, config).unwrap();
    let addr = super::proc::free_addr();
    let h = Spawn::new(
        dir.path(),
        &[
            "serve",
            "--config",
            cfg_path.to_str().unwrap(),
            "--listen",
            &addr.to_string(),
            "--tls-cert",
            pair.cert.to_str().unwrap(),
            "--tls-key",
            pair.key.to_str().unwrap(),
        ],
    )
    .start();
    let client = client_config(&[&pair.cert_pem], &[b"http/1.1"]);
    wait_serving_tls(addr, &client, &h);
    (
        Https {
            dir,
            addr,
            cfg_path,
            client,
            h,
        },
        pair,
    )
}
