//! Connections: how many may be open, how long each may take, and the loop
//! that serves them over HTTP/1.
//!
//! - At most `max_connections` are open at once; the next one waits in the
//!   kernel's backlog until one closes. With HTTP/1 a connection carries one
//!   request at a time, so this also bounds the requests in flight, and so
//!   the memory and file descriptors a flood of clients can take.
//! - A connection that moves no byte either way for [`IDLE_TIMEOUT`] is
//!   closed, so idle keep-alive sockets cannot hold every slot.
//! - A request's headers must be complete within the header deadline,
//!   counted from the request's first byte; otherwise the connection is
//!   closed without an answer. A client sending a header byte every few
//!   seconds is never idle, and without this it would hold its slot forever
//!   (slowloris).
//! - A request's body must be complete within the body deadline, counted
//!   from when the server first waits for it (right after the headers).
//!   The body then ends with [`BodyTimedOut`], which the body reader turns
//!   into 408 `request_timeout`; the connection closes after that answer.
//!
//! The router itself (request timeout, body size) lives in [`crate::http`].

use std::convert::Infallible;
use std::error::Error;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::response::Response;
use axum::routing::future::RouteFuture;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};

/// How long a connection may stay silent both ways before it is closed:
/// well above the 10 s request timeout, so a request being served is never
/// cut, and far below what lets idle clients starve new ones.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// What [`serve`] enforces on every connection.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Most connections open at once (at least 1).
    pub max_connections: usize,
    /// Silence both ways after which a connection is closed.
    pub idle_timeout: Duration,
    /// Time from a request's first byte to the end of its headers.
    pub header_timeout: Duration,
    /// Time for a request's whole body to arrive.
    pub body_timeout: Duration,
    /// How long in-flight requests may finish after the shutdown signal
    /// before the remaining connections are cut.
    pub shutdown_grace: Duration,
}

/// Serves `router` on `listener` until `shutdown` completes, then stops
/// accepting, lets in-flight requests finish for at most
/// `limits.shutdown_grace`, and cuts the connections still open.
///
/// Every connection runs in a task of its own, owned by this function: none
/// outlives it.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let mut listener = LimitedListener::new(listener, limits.max_connections, limits.idle_timeout);
    let service = RouterService {
        router,
        body_timeout: limits.body_timeout,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            // Reaped as they end, so the set holds open connections only.
            Some(ended) = connections.join_next() => log_if_panicked(ended),
            (stream, _) = listener.accept() => {
                connections.spawn(serve_connection(
                    stream,
                    service.clone(),
                    limits.header_timeout,
                    stop_rx.clone(),
                ));
            }
        }
    }
    // Closing the socket refuses what waits in the backlog.
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while let Some(ended) = connections.join_next().await {
            log_if_panicked(ended);
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            grace = ?limits.shutdown_grace,
            open = connections.len(),
            "connections still open after the grace period; closing them"
        );
        connections.shutdown().await;
    }
}

fn log_if_panicked(ended: Result<(), tokio::task::JoinError>) {
    if let Err(e) = ended {
        tracing::error!(error = %e, "a connection task ended abnormally");
    }
}

/// One connection, from accept to close: hyper's HTTP/1 with the header
/// deadline, switched to a graceful close when `stop` turns true.
async fn serve_connection(
    stream: LimitedStream,
    service: RouterService,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let timer = FirstByteTimer {
        reads: stream.reads.clone(),
    };
    let mut builder = http1::Builder::new();
    builder.timer(timer).header_read_timeout(header_timeout);
    let mut conn = pin!(builder.serve_connection(TokioIo::new(stream), service));
    let ended = tokio::select! {
        ended = conn.as_mut() => ended,
        // Also when the sender is gone: `serve` has returned.
        () = async {
            let _ = stop.wait_for(|&stopping| stopping).await;
        } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    // Header deadlines, resets and idle timeouts all end here: the client's
    // doing, so no more than a debug line.
    if let Err(e) = ended {
        tracing::debug!(error = %e, "connection closed with an error");
    }
}

/// The router as hyper's per-connection service, every request body under
/// the body deadline.
#[derive(Clone)]
struct RouterService {
    router: Router,
    body_timeout: Duration,
}

impl hyper::service::Service<Request<Incoming>> for RouterService {
    type Response = Response;
    type Error = Infallible;
    type Future = RouteFuture<Infallible>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let body_timeout = self.body_timeout;
        let req = req.map(|body| DeadlineBody::new(body, body_timeout));
        // A `Router` is always ready, so `call` needs no `poll_ready`.
        tower::Service::call(&mut self.router.clone(), req)
    }
}

/// A request body that fails with [`BodyTimedOut`] once it has kept the
/// server waiting for `limit` in all. The timer starts the first time the
/// body is not already there, so a body that came with its headers (nearly
/// all of them) costs no timer at all.
#[derive(Debug)]
struct DeadlineBody<B> {
    inner: B,
    limit: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<B> DeadlineBody<B> {
    fn new(inner: B, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            timer: None,
        }
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body + Unpin,
    B::Error: Into<Box<dyn Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        let limit = this.limit;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Some(Err(Box::new(BodyTimedOut(limit)))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body did not arrive within the body deadline (the duration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTimedOut(pub Duration);

impl fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the request body did not arrive within {:?}", self.0)
    }
}

impl Error for BodyTimedOut {}

/// The body deadline that `err` or one of its sources reports, if any:
/// how the body reader tells a stalled body from one too large.
pub fn body_timed_out(err: &(dyn Error + 'static)) -> Option<Duration> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(timed_out) = e.downcast_ref::<BodyTimedOut>() {
            return Some(timed_out.0);
        }
        next = e.source();
    }
    None
}

/// hyper's header timer, made to start at a request's first byte.
///
/// hyper arms its header timer as soon as it waits for a request, which on
/// a keep-alive connection is right after the previous answer: on its own
/// it would close every keep-alive connection that pauses longer than the
/// header deadline. This timer's sleeps stay unarmed until the connection
/// has read a byte since the sleep was made, so the deadline runs from the
/// request's first byte (bytes already buffered with the previous request
/// start it at the next read), and a silent connection is left to the idle
/// timeout.
#[derive(Clone, Debug)]
struct FirstByteTimer {
    reads: Arc<AtomicU64>,
}

impl hyper::rt::Timer for FirstByteTimer {
    fn sleep(&self, budget: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(FirstByteSleep {
            seen: self.reads.load(Ordering::Relaxed),
            reads: self.reads.clone(),
            budget,
            armed: None,
        })
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep(deadline.saturating_duration_since(std::time::Instant::now()))
    }
}

/// A sleep of `budget` that starts once `reads` moves past `seen`.
struct FirstByteSleep {
    reads: Arc<AtomicU64>,
    seen: u64,
    budget: Duration,
    armed: Option<Pin<Box<Sleep>>>,
}

impl Future for FirstByteSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let armed = match &mut this.armed {
            Some(armed) => armed,
            // No waker is kept, and none is needed: hyper polls this sleep
            // only while it waits for header bytes, right after each read of
            // the connection, whose waker is this task's. The first read
            // that brings a byte arms the sleep.
            None if this.reads.load(Ordering::Relaxed) == this.seen => return Poll::Pending,
            None => this.armed.insert(Box::pin(tokio::time::sleep(this.budget))),
        };
        armed.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for FirstByteSleep {}

/// A [`TcpListener`] that accepts only while fewer than `max` of its
/// connections are open.
#[derive(Debug)]
struct LimitedListener {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    idle: Duration,
}

impl LimitedListener {
    /// Wraps `inner`: `max` of at least 1, connections silent both ways for
    /// `idle` closed.
    fn new(inner: TcpListener, max: usize, idle: Duration) -> Self {
        Self {
            inner,
            slots: Arc::new(Semaphore::new(max.max(1))),
            idle,
        }
    }

    /// The next connection, once a slot is free. Errors from `accept`
    /// (e.g. out of file descriptors) are retried as axum's listener does.
    async fn accept(&mut self) -> (LimitedStream, SocketAddr) {
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
                reads: Arc::new(AtomicU64::new(0)),
                _permit: permit,
            },
            addr,
        )
    }
}

/// An accepted connection; its slot is given back when it is dropped.
#[derive(Debug)]
struct LimitedStream {
    stream: TcpStream,
    idle: Duration,
    /// Last read or write progress. The timer is not reset on every byte
    /// (a timer-wheel update per read); when it fires, it is moved to
    /// `last_active + idle` if there was progress meanwhile.
    last_active: Instant,
    timer: Pin<Box<Sleep>>,
    /// Reads that brought bytes: what arms the header deadline.
    reads: Arc<AtomicU64>,
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
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.reads.fetch_add(1, Ordering::Relaxed);
        }
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

    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn a_silent_connection_is_closed_and_its_slot_goes_to_the_next() {
        let inner = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = inner.local_addr().expect("addr");
        let mut listener = LimitedListener::new(inner, 1, Duration::from_millis(100));
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

    #[tokio::test(start_paused = true)]
    async fn a_first_byte_sleep_starts_counting_at_the_next_read() {
        let timer = FirstByteTimer {
            reads: Arc::new(AtomicU64::new(0)),
        };
        let mut sleep = hyper::rt::Timer::sleep(&timer, Duration::from_millis(300));
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        // No byte yet: however long the wait, the deadline does not run.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        timer.reads.fetch_add(1, Ordering::Relaxed);
        assert!(sleep.as_mut().poll(&mut cx).is_pending(), "armed, not due");
        tokio::time::advance(Duration::from_millis(299)).await;
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(sleep.as_mut().poll(&mut cx).is_ready());
    }

    /// A body whose bytes never come.
    struct Stalled;

    impl Body for Stalled {
        type Data = axum::body::Bytes;
        type Error = Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
            Poll::Pending
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_fails_with_its_deadline_through_axum() {
        let body = axum::body::Body::new(DeadlineBody::new(Stalled, Duration::from_millis(300)));
        let started = Instant::now();
        let err = axum::body::to_bytes(body, 1024)
            .await
            .expect_err("a stalled body cannot be read whole");
        assert_eq!(body_timed_out(&err), Some(Duration::from_millis(300)));
        assert_eq!(started.elapsed(), Duration::from_millis(300));
    }

    #[tokio::test]
    async fn a_body_that_is_there_reads_whole_and_is_no_timeout() {
        let inner = http_body_util::Full::new(axum::body::Bytes::from_static(b"{}"));
        let body = axum::body::Body::new(DeadlineBody::new(inner, Duration::from_millis(1)));
        let bytes = axum::body::to_bytes(body, 1024).await.expect("whole");
        assert_eq!(&bytes[..], b"{}");
        let too_large = axum::body::Body::new(DeadlineBody::new(
            http_body_util::Full::new(axum::body::Bytes::from_static(b"0123456789")),
            Duration::from_secs(5),
        ));
        let err = axum::body::to_bytes(too_large, 4)
            .await
            .expect_err("over the limit");
        assert_eq!(body_timed_out(&err), None);
    }
}
