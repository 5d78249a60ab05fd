//! The handoff channel: a connected `SOCK_SEQPACKET` socket pair between a process and its
//! successor (fd `3 + n` in the successor, named by `HEIRD_HANDOFF_FD`). Seqpacket keeps message
//! boundaries and carries fds (`SCM_RIGHTS`), so one datagram is one [`ChannelMsg`], and a moved
//! connection travels as one message with its fd.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::sys;
use crate::wire::ChannelMsg;

/// Largest message on the channel (a moved connection carries its unparsed bytes).
pub const MAX_MSG: usize = 128 * 1024;

/// One end of the handoff channel, usable from async code.
#[derive(Debug)]
pub struct Channel {
    fd: AsyncFd<OwnedFd>,
    /// The receive buffer, [`MAX_MSG`] bytes once the first message came, kept for the next
    /// (a moved connection is one message: a fresh zeroed buffer each was an mmap, a munmap and
    /// page faults per connection). Locked only inside the synchronous receive.
    rbuf: Mutex<Vec<u8>>,
}

impl Channel {
    /// Wraps a connected seqpacket socket (made nonblocking here).
    pub fn new(fd: OwnedFd) -> io::Result<Channel> {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        let fl = OFlag::from_bits_truncate(fcntl(fd.as_fd(), FcntlArg::F_GETFL)?);
        fcntl(fd.as_fd(), FcntlArg::F_SETFL(fl | OFlag::O_NONBLOCK))?;
        Ok(Channel {
            fd: sys::async_fd(fd, Interest::READABLE | Interest::WRITABLE)?,
            rbuf: Mutex::new(Vec::new()),
        })
    }

    /// Receives one message; `None` at EOF (the other process closed its end or exited).
    pub async fn recv(&self) -> io::Result<Option<Vec<u8>>> {
        Ok(self.recv_with_fd().await?.map(|(m, _)| m))
    }

    /// Receives one message and the fd that came with it, if any; `None` at EOF.
    pub async fn recv_with_fd(&self) -> io::Result<Option<(Vec<u8>, Option<OwnedFd>)>> {
        loop {
            let mut guard = self.fd.readable().await?;
            let got = guard.try_io(|fd| {
                let mut buf = self.rbuf.lock().unwrap_or_else(|p| p.into_inner());
                if buf.len() < MAX_MSG {
                    buf.resize(MAX_MSG, 0);
                }
                let (n, passed) = sys::recv_with_fd(fd.get_ref().as_fd(), &mut buf)?;
                Ok((buf[..n].to_vec(), passed))
            });
            match got {
                Ok(Ok((m, _))) if m.is_empty() => return Ok(None),
                Ok(Ok((m, fd))) => return Ok(Some((m, fd))),
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ECONNRESET) => return Ok(None),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Sends one message.
    pub async fn send(&self, msg: &ChannelMsg<'_>) -> io::Result<()> {
        self.send_with_fd(msg, None).await
    }

    /// Sends one message, with `fd` attached (SCM_RIGHTS) when given.
    pub async fn send_with_fd(&self, msg: &ChannelMsg<'_>, fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
        let bytes = msg.encode();
        if bytes.len() > MAX_MSG {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "handoff message too long",
            ));
        }
        loop {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|sock| sys::send_with_fd(sock.get_ref().as_fd(), &bytes, fd)) {
                Ok(r) => return r.map(|_| ()),
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};

    use super::*;

    #[tokio::test]
    async fn each_message_comes_whole_and_alone_through_the_kept_buffer() {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let (tx, rx) = (Channel::new(a).unwrap(), Channel::new(b).unwrap());
        let long = vec![b'x'; 100_000];
        tx.send(&ChannelMsg::State(&long)).await.unwrap();
        tx.send(&ChannelMsg::State(b"short")).await.unwrap();
        let (null_r, _null_w) = nix::unistd::pipe().unwrap();
        tx.send_with_fd(&ChannelMsg::Primary, Some(null_r.as_fd()))
            .await
            .unwrap();
        let (m, fd) = rx.recv_with_fd().await.unwrap().unwrap();
        assert!(fd.is_none());
        assert_eq!(ChannelMsg::parse(&m), Some(ChannelMsg::State(&long)));
        // Shorter than the one before: nothing of it is left over.
        let m = rx.recv().await.unwrap().unwrap();
        assert_eq!(ChannelMsg::parse(&m), Some(ChannelMsg::State(b"short")));
        let (m, fd) = rx.recv_with_fd().await.unwrap().unwrap();
        assert_eq!(ChannelMsg::parse(&m), Some(ChannelMsg::Primary));
        assert!(fd.is_some(), "the fd came with its message");
        drop(tx);
        assert!(
            rx.recv().await.unwrap().is_none(),
            "EOF once the other end is gone"
        );
    }
}
