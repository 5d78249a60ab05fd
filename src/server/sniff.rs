//! Which protocol a connection speaks: HTTP/2 with prior knowledge starts with a fixed
//! 24-byte preface; anything else is HTTP/1.x. The bytes read to tell are replayed to the
//! protocol's codec (or travel with the connection when it moves before it said enough).

use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tracing::debug;

use super::context::ConnCtx;
use super::moving::{self, Cargo};
use super::served::Served;

/// The client connection preface of HTTP/2 (RFC 9113 §3.4).
pub(super) const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Proto {
    Http1,
    Http2,
}

/// What the first bytes say; `None` while they are a proper prefix of the h2 preface (or none).
pub(super) fn classify(seen: &[u8]) -> Option<Proto> {
    if seen.is_empty() {
        None
    } else if !H2_PREFACE.starts_with(seen) {
        Some(Proto::Http1)
    } else if seen.len() == H2_PREFACE.len() {
        Some(Proto::Http2)
    } else {
        None
    }
}

/// Reads until the protocol is known (usually one read: the first byte of an h1 request is not
/// `P`), and gives the connection back with those bytes put back in front. `None` when the
/// connection closed, said nothing within `header_read_timeout`, or moved (a drain started
/// before it said enough; it goes on in the successor, where this runs again).
pub(super) async fn sniff(mut io: Served, ctx: &Arc<ConnCtx>, moves: u32) -> Option<(Proto, Served)> {
    let mut seen = [0u8; 24];
    let mut len = 0;
    let deadline = tokio::time::sleep(ctx.settings.header_read_timeout);
    tokio::pin!(deadline);
    let mut draining = false;
    // Its turn in the drain (at a handoff, turns come at a pace: see `super::pace`).
    let turn = ctx.pacer.turn(&ctx.drain);
    tokio::pin!(turn);
    loop {
        if let Some(p) = classify(&seen[..len]) {
            io.unread(&seen[..len]);
            return Some((p, io));
        }
        tokio::select! {
            // Cancel-safe: a read that did not complete consumed nothing.
            r = io.read(&mut seen[len..]) => match r {
                Ok(0) | Err(_) => return None,
                Ok(n) => len += n,
            },
            _ = &mut deadline => {
                debug!(bytes = len, "closed a connection that did not say which protocol in time");
                return None;
            }
            () = &mut turn, if !draining => {
                draining = true;
                if ctx.moves.to().is_some() {
                    io.unread(&seen[..len]);
                    moving::move_out(&ctx.moves, &ctx.drain, io, &[], Cargo::Conn, moves).await;
                    return None;
                }
                // Nobody to move to: a client that stays silent for the grace period is closed,
                // as an idle HTTP/1.1 connection would be.
                let grace = tokio::time::Instant::now() + ctx.settings.idle_close_grace;
                if grace < deadline.deadline() {
                    deadline.as_mut().reset(grace);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_by_the_preface() {
        assert_eq!(classify(b""), None);
        assert_eq!(classify(b"G"), Some(Proto::Http1));
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Proto::Http1));
        assert_eq!(classify(b"P"), None);
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n"), None);
        // An h1 request that happens to start with P is h1 as soon as it differs.
        assert_eq!(classify(b"POST"), Some(Proto::Http1));
        assert_eq!(classify(b"PRI * HTTP/1.1"), Some(Proto::Http1));
        assert_eq!(classify(H2_PREFACE), Some(Proto::Http2));
    }
}
