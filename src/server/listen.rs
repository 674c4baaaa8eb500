//! Serving one listener with bounds on what a connection may hold: at most
//! `server.max_connections` open at once (further ones wait unaccepted in the kernel's backlog,
//! costing the daemon no descriptor), `server.header_read_timeout_seconds` to send a request's
//! headers (also how long a kept-alive connection may wait for its next request),
//! `server.idle_timeout_seconds` without a byte moving, and `server.request_timeout_seconds` to
//! handle a request (its body read and its response's head produced; a log stream's body is
//! not bounded). Each listener has its own cap, so a flood on the TCP listener never takes the
//! Unix socket's places.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use crate::config::ServerConfig;

/// The connection bounds of a listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Time to send a request's headers (and to start the next one on a kept-alive connection).
    pub header_read: Duration,
    /// Time without a byte read or written before the connection is closed.
    pub idle: Duration,
    /// Time to handle one request.
    pub request: Duration,
}

impl ConnectionLimits {
    /// The bounds the settings give.
    pub fn from_settings(s: &ServerConfig) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: s.max_connections.max(1),
            header_read: Duration::from_secs(s.header_read_timeout_seconds.max(1)),
            idle: Duration::from_secs(s.idle_timeout_seconds.max(1)),
            request: Duration::from_secs(s.request_timeout_seconds.max(1)),
        }
    }
}

/// Milliseconds since `base` of the last byte moved on a connection.
struct Activity {
    base: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Resolves once nothing moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        loop {
            let quiet = self
                .now_ms()
                .saturating_sub(self.last_ms.load(Ordering::Relaxed));
            if quiet >= idle_ms {
                return;
            }
            tokio::time::sleep(Duration::from_millis(idle_ms - quiet)).await;
        }
    }
}

/// A connection's I/O that notes when bytes move.
struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn too_slow(limit: Duration) -> Response<Body> {
    let mut r = Response::new(Body::from(format!(
        "the request was not handled within {} s (server.request_timeout_seconds)\n",
        limit.as_secs()
    )));
    *r.status_mut() = StatusCode::REQUEST_TIMEOUT;
    r
}

/// Serves `app` on `listener` within `limits` until `stop` fires; then stops accepting, lets
/// each open connection finish its request, and returns when all are closed.
pub async fn serve<L: Listener>(
    mut listener: L,
    app: Router,
    limits: ConnectionLimits,
    stop: CancellationToken,
) {
    let places = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    loop {
        // A place first: past the cap, connections stay in the backlog, unaccepted.
        let place = tokio::select! {
            p = places.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = stop.cancelled() => break,
        };
        let (io, _addr) = tokio::select! {
            c = listener.accept() => c,
            () = stop.cancelled() => break,
        };
        let app = app.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            let _place = place;
            let activity = Arc::new(Activity::new());
            activity.touch();
            let io = Watched {
                inner: io,
                activity: activity.clone(),
            };
            let request_limit = limits.request;
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let app = app.clone();
                async move {
                    let handled =
                        tokio::time::timeout(request_limit, app.oneshot(req.map(Body::new)));
                    Ok::<_, Infallible>(match handled.await {
                        Ok(Ok(resp)) => resp,
                        Ok(Err(never)) => match never {},
                        Err(_) => too_slow(request_limit),
                    })
                }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read);
            let conn = builder.serve_connection(TokioIo::new(io), service);
            let mut conn = std::pin::pin!(conn);
            let mut stopping = false;
            loop {
                tokio::select! {
                    _ = conn.as_mut() => break,
                    () = stop.cancelled(), if !stopping => {
                        conn.as_mut().graceful_shutdown();
                        stopping = true;
                    }
                    // Dropping the connection closes it.
                    () = activity.idle_for(limits.idle) => break,
                }
            }
        });
    }
    connections.close();
    connections.wait().await;
}

/// Raises the soft limit of open files to the hard one, so that the connection caps, not the
/// descriptor limit, bound what clients can hold.
pub fn raise_file_limit() {
    // SAFETY: an all-zero rlimit is valid for getrlimit(2) to overwrite.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
