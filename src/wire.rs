//! The typed messages of heird's two small protocols, each with an encoder and a parser, so that
//! no string literal of a protocol appears anywhere else.
//!
//! - [`ChannelMsg`]: one datagram on the handoff channel between a process and its successor
//!   (see [`crate::channel`]).
//! - [`ControlAnswer`]: the one-line answer of the control socket to `reload` (see
//!   [`crate::control`]).
//!
//! Both stay readable text on the wire, and both must stay compatible across versions: during a
//! package upgrade the old binary talks to the new one.

use std::fmt;
use std::net::SocketAddr;

/// What kind of socket a moved connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnKind {
    /// A TCP connection (inet or inet6).
    Tcp,
    /// A Unix stream connection.
    Unix,
}

impl ConnKind {
    /// The word used on the wire and in fd-store names.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnKind::Tcp => "tcp",
            ConnKind::Unix => "unix",
        }
    }

    /// Parses [`ConnKind::as_str`]'s output.
    pub fn parse(s: &str) -> Option<ConnKind> {
        match s {
            "tcp" => Some(ConnKind::Tcp),
            "unix" => Some(ConnKind::Unix),
            _ => None,
        }
    }
}

/// One message on the handoff channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelMsg<'a> {
    /// Successor → parent: serving, waiting to be made primary (`ready <pid>`; older versions
    /// sent a bare `ready`).
    Ready { pid: Option<u32> },
    /// Successor → parent: it cannot start, and why (a config error, say).
    Error(String),
    /// The forked child → parent: exec failed with this errno (written by `sys::spawn` after
    /// the fork, so its text is built by hand there: `exec-failed <errno>`).
    ExecFailed(i32),
    /// Parent → successor: systemd has processed `MAINPID=`; you are the primary now.
    Primary,
    /// Successor → parent: `Primary` arrived.
    PrimaryAck,
    /// Parent → successor, just before `Primary`: the app's state (see
    /// `crate::Service::save_state`).
    State(&'a [u8]),
    /// Parent → successor: an idle connection (its fd rides along as `SCM_RIGHTS`), with how
    /// often it has moved, the client's address from its PROXY header (if it had one that named
    /// a client: `conn tcp 2 192.0.2.7:41000\n`; without one the header is as older versions
    /// wrote it), and the bytes read from it but not parsed yet.
    Conn {
        kind: ConnKind,
        moves: u32,
        client: Option<SocketAddr>,
        unread: &'a [u8],
    },
    /// Parent → successor (and, encoded, beside a WebSocket in the fd store): a live WebSocket
    /// stopped at a message boundary; its fd rides along as `SCM_RIGHTS`.
    Ws(WsConn<'a>),
}

/// A moved WebSocket: header `ws <tcp|unix> <moves> <path length> <headers length> <state
/// length>[ <client>]\n`, then the path, the headers, the state and the unread bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsConn<'a> {
    pub kind: ConnKind,
    /// How often it has moved (this move included).
    pub moves: u32,
    /// Path and query of the request that opened it: the successor's router finds the handler
    /// by it.
    pub path: &'a str,
    /// That request's headers, `name: value\r\n` each (what its handler and middleware saw).
    pub headers: &'a [u8],
    /// The handler's state.
    pub state: &'a [u8],
    /// Bytes read but not parsed yet (a partial frame included).
    pub unread: &'a [u8],
    /// The client's address from the connection's PROXY header, when it named one.
    pub client: Option<SocketAddr>,
}

/// ` <client>` for a message header, or nothing.
fn client_word(client: Option<SocketAddr>) -> String {
    client.map(|c| format!(" {c}")).unwrap_or_default()
}

impl ChannelMsg<'_> {
    /// The datagram's bytes.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ChannelMsg::Ready { pid: Some(pid) } => format!("ready {pid}").into_bytes(),
            ChannelMsg::Ready { pid: None } => b"ready".to_vec(),
            ChannelMsg::Error(text) => format!("error {text}").into_bytes(),
            ChannelMsg::ExecFailed(errno) => format!("exec-failed {errno}").into_bytes(),
            ChannelMsg::Primary => b"primary".to_vec(),
            ChannelMsg::PrimaryAck => b"primary-ack".to_vec(),
            ChannelMsg::State(bytes) => {
                let mut v = b"state\n".to_vec();
                v.extend_from_slice(bytes);
                v
            }
            ChannelMsg::Conn {
                kind,
                moves,
                client,
                unread,
            } => {
                let head = format!("conn {} {moves}{}\n", kind.as_str(), client_word(*client));
                let mut v = Vec::with_capacity(head.len() + unread.len());
                v.extend_from_slice(head.as_bytes());
                v.extend_from_slice(unread);
                v
            }
            ChannelMsg::Ws(w) => {
                let head = format!(
                    "ws {} {} {} {} {}{}\n",
                    w.kind.as_str(),
                    w.moves,
                    w.path.len(),
                    w.headers.len(),
                    w.state.len(),
                    client_word(w.client)
                );
                let parts = [head.as_bytes(), w.path.as_bytes(), w.headers, w.state, w.unread];
                let mut v = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
                for p in parts {
                    v.extend_from_slice(p);
                }
                v
            }
        }
    }
}

impl<'a> ChannelMsg<'a> {
    /// Parses one datagram; `None` for anything heird does not send.
    pub fn parse(msg: &'a [u8]) -> Option<ChannelMsg<'a>> {
        if let Some(bytes) = msg.strip_prefix(b"state\n") {
            return Some(ChannelMsg::State(bytes));
        }
        if let Some(rest) = msg.strip_prefix(b"conn ") {
            let nl = rest.iter().position(|b| *b == b'\n')?;
            let head = std::str::from_utf8(&rest[..nl]).ok()?;
            let mut words = head.split(' ');
            let kind = ConnKind::parse(words.next()?)?;
            let moves = words.next()?.parse().ok()?;
            let client = words.next().map(str::parse).transpose().ok()?;
            if words.next().is_some() {
                return None;
            }
            return Some(ChannelMsg::Conn {
                kind,
                moves,
                client,
                unread: &rest[nl + 1..],
            });
        }
        if let Some(rest) = msg.strip_prefix(b"ws ") {
            let nl = rest.iter().position(|b| *b == b'\n')?;
            let head = std::str::from_utf8(&rest[..nl]).ok()?;
            let mut words = head.split(' ');
            let kind = ConnKind::parse(words.next()?)?;
            let moves = words.next()?.parse().ok()?;
            let mut lens = [0usize; 3];
            for l in &mut lens {
                *l = words.next()?.parse().ok()?;
            }
            let client = words.next().map(str::parse).transpose().ok()?;
            if words.next().is_some() {
                return None;
            }
            let body = &rest[nl + 1..];
            let path_end = lens[0];
            let headers_end = path_end.checked_add(lens[1])?;
            let state_end = headers_end.checked_add(lens[2])?;
            if state_end > body.len() {
                return None;
            }
            return Some(ChannelMsg::Ws(WsConn {
                kind,
                moves,
                path: std::str::from_utf8(&body[..path_end]).ok()?,
                headers: &body[path_end..headers_end],
                state: &body[headers_end..state_end],
                unread: &body[state_end..],
                client,
            }));
        }
        let text = std::str::from_utf8(msg).ok()?.trim_end_matches(['\n', '\0']);
        let (word, rest) = text.split_once(' ').unwrap_or((text, ""));
        match word {
            "ready" if rest.is_empty() => Some(ChannelMsg::Ready { pid: None }),
            "ready" => rest
                .trim()
                .parse()
                .ok()
                .map(|pid| ChannelMsg::Ready { pid: Some(pid) }),
            "error" => Some(ChannelMsg::Error(rest.to_string())),
            "exec-failed" => rest.trim().parse().ok().map(ChannelMsg::ExecFailed),
            "primary" if rest.is_empty() => Some(ChannelMsg::Primary),
            "primary-ack" if rest.is_empty() => Some(ChannelMsg::PrimaryAck),
            _ => None,
        }
    }
}

/// The control socket's request line (`reload`).
pub const RELOAD_REQUEST: &str = "reload";

/// The control socket's one-line answer (what [`crate::cli::reload`] returns).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ControlAnswer {
    /// The handoff succeeded: `ok pid=<new> generation=<g>`.
    Ok {
        /// The successor's pid: the service's main pid now.
        pid: u32,
        /// The successor's generation (1 for the first process, one more per handoff).
        generation: u64,
    },
    /// The handoff failed, and why; the old process keeps serving.
    Failed(String),
    /// This process can no longer take requests (it has just handed over): ask again, and the
    /// successor answers.
    Retry(String),
    /// The request itself was wrong (unknown command, permission).
    Error(String),
}

impl fmt::Display for ControlAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlAnswer::Ok { pid, generation } => write!(f, "ok pid={pid} generation={generation}"),
            ControlAnswer::Failed(r) => write!(f, "failed {r}"),
            ControlAnswer::Retry(r) => write!(f, "retry {r}"),
            ControlAnswer::Error(r) => write!(f, "error {r}"),
        }
    }
}

impl ControlAnswer {
    /// Parses one answer line (without its newline). An unknown line is kept as an error.
    pub(crate) fn parse(line: &str) -> ControlAnswer {
        let line = line.trim_end();
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let field = |k: &str| {
            rest.split(' ')
                .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
                .map(str::to_string)
        };
        match word {
            "ok" => match (
                field("pid").and_then(|p| p.parse().ok()),
                field("generation").and_then(|g| g.parse().ok()),
            ) {
                (Some(pid), Some(generation)) => ControlAnswer::Ok { pid, generation },
                _ => ControlAnswer::Error(format!("malformed answer {line:?}")),
            },
            "failed" => ControlAnswer::Failed(rest.to_string()),
            "retry" => ControlAnswer::Retry(rest.to_string()),
            "error" => ControlAnswer::Error(rest.to_string()),
            _ => ControlAnswer::Error(format!("unknown answer {line:?}")),
        }
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
