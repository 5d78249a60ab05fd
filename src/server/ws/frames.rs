//! The IO under a resumable WebSocket's codec: it hands the codec at most the rest of the
//! current frame, so that between frames the codec has nothing buffered, and it can park at the
//! next frame boundary. Every byte read but not handed on then sits here, and travels with the
//! socket's fd to the next process (a partial frame included).
//!
//! It reads each frame header itself (RFC 6455 §5.2: FIN and opcode, the 7/16/64-bit length, the
//! mask) to know where the frame ends, whether a fragmented message is under way (a data frame
//! without FIN, until a continuation frame with FIN), and whether a close frame came in. A
//! connection parks only where the next process can start afresh: at a frame boundary, outside
//! a fragmented message, with no close handshake under way.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How much is read from the socket at a time (what is not handed on yet waits in `buf`).
const CHUNK: usize = 16 * 1024;

/// See the module doc.
pub(in crate::server) struct FrameIo<T> {
    inner: T,
    /// Read from `inner`, not yet handed to the codec.
    buf: BytesMut,
    /// Bytes of the current frame (header included) not yet handed to the codec; 0 at a
    /// frame boundary.
    left: u64,
    /// Inside a fragmented data message.
    fragmented: bool,
    /// A close frame came in: the close handshake finishes here.
    closing: bool,
    /// Park at the next boundary that may move.
    hold: bool,
    /// Parked: a read was refused at a boundary because of `hold`.
    parked: bool,
    /// `inner` said end of file.
    eof: bool,
}

/// What one frame header says: its whole length (header + payload), FIN, the opcode.
#[derive(Debug, PartialEq, Eq)]
pub(in crate::server) struct Header {
    pub total: u64,
    pub fin: bool,
    pub opcode: u8,
}

/// Parses the frame header at the start of `b`; `None` while it is incomplete.
pub(in crate::server) fn parse_header(b: &[u8]) -> Option<Header> {
    if b.len() < 2 {
        return None;
    }
    let fin = b[0] & 0x80 != 0;
    let opcode = b[0] & 0x0f;
    let masked = b[1] & 0x80 != 0;
    let (len, mut head) = match b[1] & 0x7f {
        126 => (u64::from(u16::from_be_bytes(b.get(2..4)?.try_into().ok()?)), 4u64),
        127 => (u64::from_be_bytes(b.get(2..10)?.try_into().ok()?), 10),
        n => (u64::from(n), 2),
    };
    if masked {
        head += 4;
    }
    if (b.len() as u64) < head {
        return None;
    }
    Some(Header {
        total: head.saturating_add(len),
        fin,
        opcode,
    })
}

impl<T> FrameIo<T> {
    /// `read`: bytes already read from `inner` (what hyper read past the upgrade request).
    pub fn new(inner: T, read: &[u8]) -> FrameIo<T> {
        FrameIo {
            inner,
            buf: BytesMut::from(read),
            left: 0,
            fragmented: false,
            closing: false,
            hold: false,
            parked: false,
            eof: false,
        }
    }

    /// Parks at the next boundary where the connection may move (or stops holding).
    pub fn set_hold(&mut self, hold: bool) {
        self.hold = hold;
        if !hold {
            self.parked = false;
        }
    }

    /// True once a read was refused at a movable boundary (see [`FrameIo::set_hold`]).
    pub fn parked(&self) -> bool {
        self.parked
    }

    /// True while a fragmented message or a close handshake is under way.
    pub fn busy(&self) -> bool {
        self.fragmented || self.closing
    }

    /// The IO, and the bytes read from it but not handed to the codec.
    pub fn into_parts(self) -> (T, BytesMut) {
        (self.inner, self.buf)
    }

    /// Bytes read but not handed to the codec yet.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead + Unpin> FrameIo<T> {
    /// Reads more from `inner` into `buf`; `Ready(Ok(false))` at end of file.
    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let mut chunk = [0u8; CHUNK];
        let mut rb = ReadBuf::new(&mut chunk);
        match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                self.eof = true;
                Poll::Ready(Ok(false))
            }
            Poll::Ready(Ok(())) => {
                self.buf.extend_from_slice(rb.filled());
                Poll::Ready(Ok(true))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for FrameIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.left == 0 {
            if this.hold && !this.busy() {
                // The owner polls again (or takes the socket away) once it lifts the hold.
                this.parked = true;
                return Poll::Pending;
            }
            // The next frame's header, whole, before anything of it is handed on.
            let header = loop {
                if let Some(h) = parse_header(&this.buf) {
                    break h;
                }
                if this.eof {
                    // The end of the stream inside a header: hand on what is left (the codec
                    // reports the truncated frame), then the end.
                    let n = this.buf.len().min(out.remaining());
                    out.put_slice(&this.buf[..n]);
                    this.buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                match this.fill(cx) {
                    Poll::Ready(Ok(_)) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            };
            this.left = header.total;
            match header.opcode {
                0x1 | 0x2 => this.fragmented = !header.fin,
                0x0 if header.fin => this.fragmented = false,
                0x8 => this.closing = true,
                _ => {}
            }
        }
        if this.buf.is_empty() && !this.eof {
            match this.fill(cx) {
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = (this.buf.len() as u64).min(this.left).min(out.remaining() as u64) as usize;
        out.put_slice(&this.buf[..n]);
        this.buf.advance(n);
        this.left -= n as u64;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for FrameIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;

    /// A masked client frame.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => v.push(0x80 | n as u8),
            n if n < 65536 => {
                v.push(0x80 | 126);
                v.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                v.push(0x80 | 127);
                v.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        v.extend_from_slice(&[0, 0, 0, 0]); // a zero mask leaves the payload as it is
        v.extend_from_slice(payload);
        v
    }

    async fn read_some(io: &mut FrameIo<DuplexStream>) -> Option<Vec<u8>> {
        let mut b = vec![0u8; 1 << 20];
        match tokio::time::timeout(Duration::from_millis(50), io.read(&mut b)).await {
            Ok(Ok(n)) => Some(b[..n].to_vec()),
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => None,
        }
    }

    #[test]
    fn headers_of_every_length_form() {
        assert_eq!(parse_header(&[0x81]), None);
        assert_eq!(
            parse_header(&frame(true, 1, b"hi")),
            Some(Header {
                total: 8,
                fin: true,
                opcode: 1
            })
        );
        let big = frame(false, 2, &[7; 300]);
        assert_eq!(parse_header(&big[..5]), None, "16-bit length, mask missing");
        assert_eq!(
            parse_header(&big),
            Some(Header {
                total: 308,
                fin: false,
                opcode: 2
            })
        );
        let huge = frame(true, 2, &[7; 70000]);
        assert_eq!(parse_header(&huge).map(|h| h.total), Some(70014));
        // Unmasked, as a server sends.
        assert_eq!(parse_header(&[0x8a, 0]).map(|h| h.total), Some(2));
        // A length no frame has does not overflow.
        let mut absurd = vec![0x82, 0xff];
        absurd.extend_from_slice(&u64::MAX.to_be_bytes());
        absurd.extend_from_slice(&[0; 4]);
        assert_eq!(parse_header(&absurd).map(|h| h.total), Some(u64::MAX));
    }

    #[tokio::test]
    async fn hands_on_one_frame_at_a_time_and_parks_with_the_rest_buffered() {
        let (a, mut peer) = tokio::io::duplex(1 << 20);
        let mut io = FrameIo::new(a, b"");
        let (f1, f2) = (frame(true, 1, b"one"), frame(true, 1, b"two"));
        let mut both = f1.clone();
        both.extend_from_slice(&f2);
        both.extend_from_slice(&f2[..3]); // a partial third frame
        peer.write_all(&both).await.unwrap();
        assert_eq!(read_some(&mut io).await.unwrap(), f1);
        io.set_hold(true);
        assert_eq!(read_some(&mut io).await, None, "parked at the boundary");
        assert!(io.parked());
        let (_, rest) = io.into_parts();
        let mut expect = f2.clone();
        expect.extend_from_slice(&f2[..3]);
        assert_eq!(
            &rest[..],
            &expect[..],
            "the unread bytes travel, the partial frame included"
        );
    }

    #[tokio::test]
    async fn a_fragmented_message_and_a_close_finish_before_parking() {
        let (a, mut peer) = tokio::io::duplex(1 << 20);
        let mut io = FrameIo::new(a, b"");
        io.set_hold(true);
        let first = frame(false, 1, b"par");
        peer.write_all(&first).await.unwrap();
        // At the start nothing is under way: parked.
        assert_eq!(read_some(&mut io).await, None);
        io.set_hold(false);
        assert_eq!(read_some(&mut io).await.unwrap(), first);
        io.set_hold(true);
        assert!(io.busy());
        // A ping in between and the continuation: handed on despite the hold.
        let (ping, cont, last) = (frame(true, 9, b""), frame(false, 0, b"t"), frame(true, 0, b"s"));
        for f in [&ping, &cont, &last] {
            peer.write_all(f).await.unwrap();
            assert_eq!(&read_some(&mut io).await.unwrap(), f);
        }
        assert!(!io.busy());
        assert_eq!(read_some(&mut io).await, None, "parked once the message is whole");
        // A close handshake under way is never parked.
        io.set_hold(false);
        let close = frame(true, 8, &[0x03, 0xe8]);
        peer.write_all(&close).await.unwrap();
        assert_eq!(read_some(&mut io).await.unwrap(), close);
        io.set_hold(true);
        peer.write_all(&frame(true, 1, b"late")).await.unwrap();
        assert!(read_some(&mut io).await.is_some());
        assert!(!io.parked());
    }

    #[tokio::test]
    async fn a_frame_split_across_reads_is_handed_on_as_it_arrives() {
        let (a, mut peer) = tokio::io::duplex(1 << 20);
        let mut io = FrameIo::new(a, b"");
        let f = frame(true, 2, &[5; 1000]);
        peer.write_all(&f[..1]).await.unwrap();
        assert_eq!(read_some(&mut io).await, None, "half a header is not handed on");
        peer.write_all(&f[1..500]).await.unwrap();
        let got = read_some(&mut io).await.unwrap();
        assert_eq!(&got[..], &f[..500]);
        io.set_hold(true);
        peer.write_all(&f[500..]).await.unwrap();
        assert_eq!(
            &read_some(&mut io).await.unwrap()[..],
            &f[500..],
            "mid-frame: no parking"
        );
        assert_eq!(read_some(&mut io).await, None);
        drop(peer);
        io.set_hold(false);
        assert_eq!(read_some(&mut io).await.unwrap(), b"", "end of file");
    }
}
