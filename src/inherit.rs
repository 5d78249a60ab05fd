//! What a process inherits from the predecessor that started it, read (and unset) from the
//! environment before any thread exists: its generation, its end of the handoff channel, and
//! the control socket.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::sys::socket::{MsgFlags, send};

use crate::channel::MAX_MSG;
use crate::metrics::region::FD_VAR as METRICS_FD_VAR;
use crate::sys;
use crate::tls::tickets::KEYS_FD_VAR;
use crate::wire::ChannelMsg;

/// The successor's end of the handoff channel (`3 + number of listeners`).
pub const HANDOFF_FD_VAR: &str = "HEIRD_HANDOFF_FD";
/// The successor's generation: 1 for a process started by systemd or by hand.
pub const GENERATION_VAR: &str = "HEIRD_GENERATION";
/// The control socket's listening fd, passed down so its file never changes hands.
pub const CONTROL_FD_VAR: &str = "HEIRD_CONTROL_FD";

/// What a successor inherits from its parent, read from the environment at start.
#[derive(Debug)]
pub struct Inherited {
    /// 1 for a process started by systemd or by hand; parent's + 1 for a successor.
    pub generation: u64,
    /// The channel to the parent, when this process is a successor.
    pub channel: Option<OwnedFd>,
    /// The control socket's listening fd, when the parent passed it.
    pub control: Option<OwnedFd>,
    /// The predecessor's TLS session-ticket keys (a memfd), or why they cannot be read; taken
    /// by the service when it serves TLS.
    pub(crate) tls_ticket_keys: Option<Result<OwnedFd, String>>,
    /// The predecessor's metrics counters (a memfd), or why they cannot be read.
    pub(crate) metrics: Option<Result<OwnedFd, String>>,
}

#[derive(Debug, thiserror::Error)]
// Each variant is documented by its message.
#[allow(missing_docs)]
#[non_exhaustive]
pub enum InheritError {
    #[error("{var}={value:?} is not a valid fd number")]
    BadFd { var: &'static str, value: String },
    #[error("{var}={value:?} is not a valid generation")]
    BadGeneration { var: &'static str, value: String },
    #[error("{var}={fd}: fd is not open")]
    NotOpen { var: &'static str, fd: RawFd },
    #[error("{var}={fd}: {error}")]
    Io {
        var: &'static str,
        fd: RawFd,
        error: io::Error,
    },
}

impl Inherited {
    /// Reads and unsets `HEIRD_GENERATION`, `HEIRD_HANDOFF_FD`, `HEIRD_CONTROL_FD` and
    /// `HEIRD_TLS_TICKET_KEYS_FD` and `HEIRD_METRICS_FD`. Must run before any thread exists.
    pub fn from_env() -> Result<Inherited, InheritError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let gen_s = var(GENERATION_VAR);
        let chan_s = var(HANDOFF_FD_VAR);
        let ctl_s = var(CONTROL_FD_VAR);
        let keys_s = var(KEYS_FD_VAR);
        let metrics_s = var(METRICS_FD_VAR);
        let all = [
            GENERATION_VAR,
            HANDOFF_FD_VAR,
            CONTROL_FD_VAR,
            KEYS_FD_VAR,
            METRICS_FD_VAR,
        ];
        sys::remove_env(&all).map_err(|error| InheritError::Io {
            var: GENERATION_VAR,
            fd: -1,
            error,
        })?;
        let generation = match gen_s {
            None => 1,
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|g| *g >= 1)
                .ok_or(InheritError::BadGeneration {
                    var: GENERATION_VAR,
                    value: v,
                })?,
        };
        let take = |var: &'static str, value: Option<String>| -> Result<Option<OwnedFd>, InheritError> {
            let Some(v) = value else { return Ok(None) };
            let fd: RawFd = v
                .parse()
                .ok()
                .filter(|fd| *fd >= 3)
                .ok_or_else(|| InheritError::BadFd {
                    var,
                    value: v.clone(),
                })?;
            let owned = sys::take_inherited_fd(fd)
                .map_err(|error| InheritError::Io { var, fd, error })?
                .ok_or(InheritError::NotOpen { var, fd })?;
            use nix::fcntl::{FcntlArg, FdFlag, fcntl};
            fcntl(owned.as_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|e| InheritError::Io {
                var,
                fd,
                error: e.into(),
            })?;
            Ok(Some(owned))
        };
        // Lenient: without the predecessor's keys, TLS starts with fresh ones (and says why).
        let tls_ticket_keys = take(KEYS_FD_VAR, keys_s).map_err(|e| e.to_string()).transpose();
        // Lenient too: without them, the metrics start from zero (and say why).
        let metrics = take(METRICS_FD_VAR, metrics_s)
            .map_err(|e| e.to_string())
            .transpose();
        Ok(Inherited {
            generation,
            channel: take(HANDOFF_FD_VAR, chan_s)?,
            control: take(CONTROL_FD_VAR, ctl_s)?,
            tls_ticket_keys,
            metrics,
        })
    }

    /// Reports a startup failure (a configuration error, say) to the predecessor waiting for
    /// this process, prints it, and returns exit code 78 (EX_CONFIG): the predecessor's reload
    /// fails with this reason and it keeps serving.
    pub fn fail(&self, error: &dyn std::error::Error) -> std::process::ExitCode {
        let mut text = error.to_string();
        let mut cur = error.source();
        while let Some(e) = cur {
            text += &format!(": {e}");
            cur = e.source();
        }
        self.report_error(&text);
        eprintln!("error: {text}");
        std::process::ExitCode::from(78)
    }

    /// Reports a startup failure to the parent (best effort, blocking, before any runtime).
    pub fn report_error(&self, message: &str) {
        if let Some(ch) = &self.channel {
            let msg = ChannelMsg::Error(message.to_string()).encode();
            let bytes = &msg[..msg.len().min(MAX_MSG)];
            let _ = send(ch.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL);
        }
    }
}
