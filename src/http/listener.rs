//! The accept loop's connection limit: at most `max` connections are open
//! at once; the next one waits in the kernel's backlog until one closes.
//! A connection that moves no byte either way for [`IDLE_TIMEOUT`] is
//! closed, so idle keep-alive sockets cannot hold every slot.
//!
//! With HTTP/1 a connection carries one request at a time, so this also
//! bounds the requests in flight, and so the memory and file descriptors a
//! flood of clients can take.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// How long a connection may stay silent both ways before it is closed:
/// well above the 10 s request timeout, so a request being served is never
/// cut, and far below what lets idle clients starve new ones.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A [`TcpListener`] that accepts only while fewer than `max` of its
/// connections are open.
#[derive(Debug)]
pub struct LimitedListener {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    idle: Duration,
}

impl LimitedListener {
    /// Wraps `inner`; `max` of at least 1, idle connections closed after
    /// [`IDLE_TIMEOUT`].
    pub fn new(inner: TcpListener, max: usize) -> Self {
        Self::with_idle_timeout(inner, max, IDLE_TIMEOUT)
    }

    /// Like [`LimitedListener::new`] with another idle timeout (tests).
    pub fn with_idle_timeout(inner: TcpListener, max: usize, idle: Duration) -> Self {
        Self {
            inner,
            slots: Arc::new(Semaphore::new(max.max(1))),
            idle,
        }
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = LimitedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // Waiting for a permit before `accept` leaves the excess in the
        // backlog, where TCP's own flow control holds it.
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        // Replies are small and written whole; Nagle would only delay them.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        (
            LimitedStream {
                stream,
                idle: self.idle,
                last_active: Instant::now(),
                timer: Box::pin(tokio::time::sleep(self.idle)),
                _permit: permit,
            },
            addr,
        )
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// An accepted connection; its slot is given back when it is dropped.
#[derive(Debug)]
pub struct LimitedStream {
    stream: TcpStream,
    idle: Duration,
    /// Last read or write progress. The timer is not reset on every byte
    /// (a timer-wheel update per read); when it fires, it is moved to
    /// `last_active + idle` if there was progress meanwhile.
    last_active: Instant,
    timer: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl LimitedStream {
    /// Ready with an error once the connection was silent for `idle`.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            ready!(self.timer.as_mut().poll(cx));
            let deadline = self.last_active + self.idle;
            if deadline <= Instant::now() {
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection idle for too long",
                ));
            }
            self.timer.as_mut().reset(deadline);
        }
    }

    fn progressed<T>(
        &mut self,
        poll: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(result) => {
                self.last_active = Instant::now();
                Poll::Ready(result)
            }
            Poll::Pending => self.poll_idle(cx).map(Err),
        }
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.stream).poll_read(cx, buf);
        self.progressed(poll, cx)
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.progressed(poll, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.progressed(poll, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::serve::Listener;
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn a_silent_connection_is_closed_and_its_slot_goes_to_the_next() {
        let inner = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = inner.local_addr().expect("addr");
        let mut listener = LimitedListener::with_idle_timeout(inner, 1, Duration::from_millis(100));
        let _first = TcpStream::connect(addr).await.expect("connect");
        let (mut served, _) = listener.accept().await;
        let mut buf = [0u8; 16];
        let err = tokio::time::timeout(Duration::from_secs(5), served.read(&mut buf))
            .await
            .expect("the idle timeout ends the read")
            .expect_err("an idle connection is an error");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(served);
        let _second = TcpStream::connect(addr).await.expect("connect");
        tokio::time::timeout(Duration::from_secs(5), listener.accept())
            .await
            .expect("the freed slot takes the next connection");
    }
}
