//! A plain-HTTP request head read before the connection takes an active slot.
//!
//! On a listener without TLS (the local one: Motion's Reply URL, health, metrics) the
//! request head can be read before any HTTP state is made. A connection takes one of
//! the listener's active slots only once its head is whole; a client that trickles its
//! head waits as a cheap idle connection until the request timeout closes it, and never
//! stands in line before Motion's call, whose head arrives in one piece. (1,500 such
//! clients took every slot and made half of Motion's calls fail.) The bytes read are then
//! given to HTTP first, as if unread.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Most bytes read while looking for the end of a head: hyper's own bound on a head.
pub const MAX_HEAD: usize = 16 * 1024;

/// Reads from `stream` until the bytes read hold a whole request head (`\r\n\r\n`), the
/// bound is reached (HTTP then refuses it), or the client closes or goes quiet until
/// `deadline` (`None`: the connection is closed).
pub async fn read_head(stream: &mut TcpStream, deadline: tokio::time::Instant) -> Option<Bytes> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        // Where the end may lie: within what came, or across the previous chunk's end.
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&chunk[..n]);
        if head[from..].windows(4).any(|w| w == b"\r\n\r\n") || head.len() >= MAX_HEAD {
            return Some(Bytes::from(head));
        }
    }
}

/// A stream that yields `read` first, then what follows on `inner`.
pub struct Rewind<T> {
    read: Bytes,
    inner: T,
}

impl<T> Rewind<T> {
    pub fn new(read: Bytes, inner: T) -> Rewind<T> {
        Rewind { read, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.read.has_remaining() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read[..n]);
            self.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_head_is_read_whole_then_given_back_first() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            for piece in [
                &b"GET /healthz HTTP/1.1\r"[..],
                b"\nhost: x\r\n\r",
                b"\nbody",
            ] {
                s.write_all(piece).await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        });
        let (mut stream, _) = listener.accept().await.unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        let head = read_head(&mut stream, deadline).await.unwrap();
        assert!(head.windows(4).any(|w| w == b"\r\n\r\n"), "{head:?}");
        client.await.unwrap();
        let mut all = Vec::new();
        Rewind::new(head, stream)
            .read_to_end(&mut all)
            .await
            .unwrap();
        assert_eq!(all, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\nbody");
    }
}
