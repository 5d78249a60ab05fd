//! TLS listeners: each connection does the handshake (bounded by `handshake_timeout`, from the
//! accept), then speaks what ALPN chose: `h2`, or HTTP/1.1 (with upgrades) otherwise.
//!
//! What arrives instead of a ClientHello is told apart by its first byte (a TLS handshake
//! record starts with 0x16): plain HTTP gets a `400` in plain text saying the port speaks HTTPS
//! (as nginx does), anything else is closed. Each case, a handshake that fails or times out, and
//! a server name (SNI) the certificate does not cover get one log line with the peer.
//!
//! A TLS connection never moves to a successor or into the fd store: rustls keeps the record
//! state (keys, sequence numbers) in this process, and the kernels here offer no kernel TLS to
//! carry it with the fd. At a drain, HTTP/1.1 over TLS answers its next request with
//! `Connection: close` and is closed once idle; h2 gets the two-step GOAWAY. A connection still
//! in its handshake when the drain starts finishes it (or times out) and is then drained the
//! same way; one that has sent nothing yet is closed after `idle_close_grace`.

use std::io as stdio;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tracing::{debug, info};

use super::conn::serve_proto;
use super::context::ConnCtx;
use super::io::{ConnIo, ConnState};
use super::peer::Peer;
use super::served::Servable;
use super::sniff::Proto;
use crate::listeners::Listener;
use crate::tls::TlsSetup;

/// The TLS settings of each listener (`None`: plain), in order. An error when `[tls] listeners`
/// names a listener this process does not have (a typo would otherwise serve plain HTTP where
/// HTTPS was meant). Logs the certificate and its warnings once.
pub(super) fn listener_settings(
    listeners: &[Listener],
    tls: Option<&Arc<TlsSetup>>,
) -> stdio::Result<Vec<Option<Arc<TlsSetup>>>> {
    let Some(tls) = tls else {
        return Ok(vec![None; listeners.len()]);
    };
    if let Some(names) = &tls.listeners
        && let Some(missing) = names.iter().find(|n| !listeners.iter().any(|l| &l.name == *n))
    {
        let have: Vec<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
        return Err(stdio::Error::other(format!(
            "[tls] listeners names {missing:?}, which is not a listener of this process (its listeners: {})",
            have.join(", ")
        )));
    }
    let on: Vec<&str> = listeners
        .iter()
        .filter(|l| tls.applies_to(&l.name))
        .map(|l| l.address.as_str())
        .collect();
    info!(
        cert = %tls.cert_path.display(),
        key = %tls.key_path.display(),
        source = ?tls.source,
        subject = %tls.cert.subject,
        names = ?tls.cert.dns_names,
        sha256 = %tls.cert.sha256,
        listeners = ?on,
        session_ticket_keys = %tls.tickets_origin,
        "tls: certificate loaded"
    );
    for w in tls.warnings(std::time::SystemTime::now()) {
        tracing::warn!("{w}");
    }
    Ok(listeners
        .iter()
        .map(|l| tls.applies_to(&l.name).then(|| tls.clone()))
        .collect())
}

/// Takes the session-ticket keys a previous process kept in the fd store (a restart or a
/// crash), so that its clients' tickets still resume. False when this process has no TLS or
/// the keys are unreadable (the stored copy is then removed).
pub(super) fn adopt_stored_tickets(tls: Option<&Arc<TlsSetup>>, fd: std::os::fd::OwnedFd) -> bool {
    let Some(tls) = tls else {
        info!("tls: session ticket keys in the fd store, but TLS is off; removed them");
        return false;
    };
    match tls.tickets.adopt(fd) {
        Ok(()) => {
            info!("tls: session ticket keys taken from the fd store");
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "tls: unreadable session ticket keys in the fd store; new ones are used");
            false
        }
    }
}

/// What the first byte of a connection on a TLS listener says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FirstByte {
    /// 0x16: a TLS handshake record (a ClientHello, if all is well).
    Handshake,
    /// An ASCII letter: an HTTP method, sent in plain text.
    PlainHttp,
    Other(u8),
}

fn classify(b: u8) -> FirstByte {
    match b {
        0x16 => FirstByte::Handshake,
        b'A'..=b'Z' => FirstByte::PlainHttp,
        other => FirstByte::Other(other),
    }
}

/// The answer to plain HTTP on a TLS port.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\
Content-Length: 39\r\nConnection: close\r\n\r\nThis port speaks HTTPS, not plain HTTP\n";

/// How long a plain-HTTP client may keep sending after its 400, before the socket is closed.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Serves one connection of a TLS listener: its first byte, the handshake, then h1 or h2.
/// `prefix`: bytes read past a PROXY header, and `client`, the address that header named (the
/// peer then).
pub(super) async fn serve<S: Servable>(
    stream: S,
    ctx: Arc<ConnCtx>,
    tls: Arc<TlsSetup>,
    open: crate::drain::ConnGuard,
    router: axum::Router,
    (prefix, client): (Bytes, Option<std::net::SocketAddr>),
) {
    let state = Arc::new(ConnState::default());
    let peer = client.map_or_else(|| stream.peer(), Peer::Tcp);
    let who = describe(&peer);
    let mut io = ConnIo::new(stream, prefix, state.clone(), open);
    let deadline = Instant::now() + tls.handshake_timeout;
    let Some(first) = read_first(&mut io, &ctx, &tls, deadline, &who).await else {
        return;
    };
    match classify(first) {
        FirstByte::Handshake => {}
        FirstByte::PlainHttp => {
            info!(peer = %who, "tls: plain HTTP sent to a TLS listener; answered 400");
            return answer_plain_http(io, deadline).await;
        }
        FirstByte::Other(b) => {
            info!(peer = %who, first_byte = format_args!("{b:#04x}"), "tls: not a TLS handshake; closed");
            return;
        }
    }
    io.unread(&[first]);
    let Some((stream, proto)) = handshake(io, &tls, deadline, &who).await else {
        return;
    };
    serve_proto(proto, S::served_tls(stream), ctx, state, peer, 0, router).await;
}

/// The connection's first byte (what it is: a ClientHello, plain HTTP, or something else);
/// `None` when it closed, failed, sent nothing within the handshake timeout, or sent nothing
/// and the drain started (it is closed after the grace an idle connection gets).
async fn read_first<S: Servable>(
    io: &mut ConnIo<S>,
    ctx: &ConnCtx,
    tls: &TlsSetup,
    deadline: Instant,
    who: &str,
) -> Option<u8> {
    let timeout = tls.handshake_timeout;
    let mut first = [0u8; 1];
    let read = tokio::select! {
        r = io.read(&mut first) => r,
        _ = tokio::time::sleep_until(deadline) => {
            info!(peer = %who, ?timeout, "tls: no ClientHello within the handshake timeout; closed");
            return None;
        }
        // Silent at the drain: gone after the grace an idle connection gets.
        _ = async {
            ctx.drain.started().await;
            let grace = Instant::now() + ctx.settings.idle_close_grace;
            tokio::time::sleep_until(grace.min(deadline)).await;
        } => {
            debug!(peer = %who, "tls: closed a connection that sent nothing before the drain");
            return None;
        }
    };
    match read {
        Ok(0) => {
            debug!(peer = %who, "tls: closed before the handshake");
            None
        }
        Err(e) => {
            debug!(peer = %who, error = %e, "tls: read failed before the handshake");
            None
        }
        Ok(_) => Some(first[0]),
    }
}

/// Answers plain HTTP with a 400, then closes lingering: reads (and drops) what the client
/// still sends for a moment after our FIN, so that closing with its request unread does not
/// reset the connection before the client has read the answer.
async fn answer_plain_http<S: Servable>(mut io: ConnIo<S>, deadline: Instant) {
    let linger = deadline.min(Instant::now() + LINGER);
    let _ = tokio::time::timeout_at(linger, async {
        io.write_all(PLAIN_HTTP_ANSWER).await?;
        io.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut left: usize = 64 * 1024;
        while left > 0 {
            match io.read(&mut sink).await? {
                0 => break,
                n => left = left.saturating_sub(n),
            }
        }
        Ok::<_, stdio::Error>(())
    })
    .await;
}

/// The ClientHello, then the rest of the handshake, within one deadline; the stream and what
/// ALPN chose. `None` (logged) when the handshake fails or times out.
async fn handshake<S: Servable>(
    io: ConnIo<S>,
    tls: &TlsSetup,
    deadline: Instant,
    who: &str,
) -> Option<(TlsStream<ConnIo<S>>, Proto)> {
    let timeout = tls.handshake_timeout;
    let acceptor = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
    let start = match tokio::time::timeout_at(deadline, acceptor).await {
        Err(_) => {
            info!(peer = %who, ?timeout, "tls: ClientHello incomplete at the handshake timeout; closed");
            return None;
        }
        Ok(Err(e)) => {
            info!(peer = %who, error = %e, "tls: not a valid ClientHello; closed");
            return None;
        }
        Ok(Ok(start)) => start,
    };
    let hello = start.client_hello();
    let sni = hello.server_name().map(str::to_string);
    if let Some(name) = &sni
        && !tls.serves_name(name)
    {
        info!(
            peer = %who,
            sni = %name,
            names = ?tls.cert.dns_names,
            "tls: server name not in the certificate; serving it anyway"
        );
    }
    let sni_field = sni.as_deref().unwrap_or("-");
    let stream = match tokio::time::timeout_at(deadline, start.into_stream(tls.server_config.clone())).await {
        Err(_) => {
            info!(peer = %who, sni = %sni_field, ?timeout, "tls: handshake timed out; closed");
            return None;
        }
        Ok(Err(e)) => {
            info!(peer = %who, sni = %sni_field, error = %e, "tls: handshake failed");
            return None;
        }
        Ok(Ok(s)) => s,
    };
    let (_, conn) = stream.get_ref();
    let proto = match conn.alpn_protocol() {
        Some(b"h2") => Proto::Http2,
        _ => Proto::Http1,
    };
    debug!(
        peer = %who,
        sni = %sni_field,
        version = ?conn.protocol_version(),
        alpn = ?proto,
        "tls: handshake done"
    );
    Some((stream, proto))
}

/// A peer, for the log.
pub(super) fn describe(peer: &Peer) -> String {
    match peer {
        Peer::Tcp(a) => a.to_string(),
        Peer::Unix(p) => match p.pid {
            Some(pid) => format!("unix pid {pid}"),
            None => "unix".into(),
        },
        Peer::Unknown => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes() {
        assert_eq!(classify(0x16), FirstByte::Handshake);
        assert_eq!(classify(b'G'), FirstByte::PlainHttp);
        assert_eq!(classify(b'P'), FirstByte::PlainHttp);
        assert_eq!(classify(0), FirstByte::Other(0));
        assert_eq!(classify(b'g'), FirstByte::Other(b'g'));
        let text = std::str::from_utf8(PLAIN_HTTP_ANSWER).unwrap();
        let (_, body) = text.split_once("\r\n\r\n").unwrap();
        assert_eq!(body.len(), 39, "Content-Length");
    }
}
