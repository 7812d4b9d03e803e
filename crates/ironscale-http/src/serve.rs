//! Accept loops (TCP, TLS, unix socket) and per-connection serving with
//! header-read and idle timeouts and graceful shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::{debug, warn};

/// The time limits of a listener's connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Time a client has to send a complete request head (HTTP/1, hyper's
    /// `header_read_timeout`): a slow or stalled request line is cut.
    pub header_read: Duration,
    /// A connection with no request in flight and no byte read or written for
    /// this long is closed: a client that never sends anything, an idle
    /// HTTP/1 keep-alive, an HTTP/2 connection without streams. Upgraded
    /// connections (`/ts2021`, `/derp`) have left the HTTP server and are
    /// not affected: their protocols keep them alive (map-stream keep-alives
    /// from the control server, DERP keep-alive frames every 60 s).
    pub idle: Duration,
    /// Time a client has to finish the TLS handshake.
    pub tls_handshake: Duration,
    /// On shutdown, time connections get to finish requests in flight
    /// before they are aborted.
    pub shutdown_grace: Duration,
}

impl Default for Timeouts {
    /// Production defaults: header read 20 s, idle 3 min, TLS handshake 10 s,
    /// shutdown grace 2 s.
    fn default() -> Self {
        Timeouts {
            header_read: Duration::from_secs(20),
            idle: Duration::from_secs(180),
            tls_handshake: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(2),
        }
    }
}

/// What a connection did last, for the idle timeout.
struct Activity {
    start: Instant,
    /// Milliseconds after `start` of the last byte read or written.
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Counts a request in flight while it lives.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(a: Arc<Activity>) -> Self {
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(a)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// An IO stream that records when bytes move.
struct Tracked<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
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

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
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

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serve `router` on one accepted stream: HTTP/1.1 (with upgrades) or h2,
/// with `t`'s header-read and idle timeouts, until the client leaves, the
/// connection is upgraded (the upgraded protocol owns it from then on), it
/// idles out, or `stop` turns true (then it is shut down gracefully).
///
/// With `remote`, requests carry `ConnectInfo<SocketAddr>`.
pub async fn serve_connection<I>(
    io: I,
    router: Router,
    remote: Option<SocketAddr>,
    t: Timeouts,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = Tracked {
        inner: io,
        activity: activity.clone(),
    };
    let a = activity.clone();
    let svc = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
        if let Some(r) = remote {
            req.extensions_mut().insert(ConnectInfo(r));
        }
        let guard = InFlight::new(a.clone());
        let fut = router.clone().oneshot(req);
        async move {
            let r = fut.await;
            drop(guard);
            r
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(t.header_read);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        let idle_at = if activity.in_flight.load(Ordering::Relaxed) > 0 {
            Instant::now() + t.idle
        } else {
            activity.last() + t.idle
        };
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    debug!(remote = ?remote, error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            _ = tokio::time::sleep_until(idle_at) => {
                let idle = activity.in_flight.load(Ordering::Relaxed) == 0
                    && activity.last() + t.idle <= Instant::now();
                if idle {
                    debug!(remote = ?remote, "closing an idle HTTP connection");
                    return;
                }
            }
            r = stop.wait_for(|v| *v), if !stopping => {
                stopping = true;
                if r.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// A listener the accept loop can take connections from.
trait Listen: Send {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept_one(&self)
        -> impl Future<Output = io::Result<(Self::Io, Option<SocketAddr>)>> + Send;
}

impl Listen for TcpListener {
    type Io = TcpStream;
    async fn accept_one(&self) -> io::Result<(TcpStream, Option<SocketAddr>)> {
        let (tcp, remote) = self.accept().await?;
        let _ = tcp.set_nodelay(true);
        Ok((tcp, Some(remote)))
    }
}

impl Listen for UnixListener {
    type Io = UnixStream;
    async fn accept_one(&self) -> io::Result<(UnixStream, Option<SocketAddr>)> {
        let (s, _) = self.accept().await?;
        Ok((s, None))
    }
}

async fn accept_loop<L, F, Fut>(
    listener: L,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
    per_conn: F,
) where
    L: Listen,
    F: Fn(L::Io, Option<SocketAddr>, watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while conns.try_join_next().is_some() {}
        tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept_one() => match r {
                Ok((io, remote)) => {
                    conns.spawn(per_conn(io, remote, stop_rx.clone()));
                }
                Err(e) => {
                    // Usually EMFILE or a connection reset before accept: back off briefly.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained =
        tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        conns.abort_all();
    }
}

/// Accept TLS connections on `listener` and serve `router` on each (HTTP/1.1
/// with upgrades, or h2) with the default [`Timeouts`], until `shutdown`
/// completes. Every connection runs on its own task: a failing handshake or
/// a broken client affects nobody else.
///
/// On shutdown, connections are shut down gracefully and aborted after the
/// grace period; connections that were already upgraded (DERP, `/ts2021`)
/// belong to their protocol's server: stop it to close them.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: Router,
    shutdown: impl Future<Output = ()>,
) {
    serve_tls_with(listener, tls, router, Timeouts::default(), shutdown).await
}

/// [`serve_tls`] with the given timeouts.
pub async fn serve_tls_with(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: Router,
    t: Timeouts,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    accept_loop(
        listener,
        t.shutdown_grace,
        shutdown,
        move |tcp, remote, stop| {
            let acceptor = acceptor.clone();
            let router = router.clone();
            async move {
                match tokio::time::timeout(t.tls_handshake, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => serve_connection(tls, router, remote, t, stop).await,
                    Ok(Err(e)) => debug!(remote = ?remote, error = %e, "TLS handshake failed"),
                    Err(_) => debug!(remote = ?remote, "TLS handshake timed out"),
                }
            }
        },
    )
    .await
}

/// Like [`serve_tls`] without TLS (for clients with `TS_DEBUG_USE_DERP_HTTP=1`,
/// or behind a TLS-terminating proxy).
pub async fn serve_plain(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()>,
) {
    serve_plain_with(listener, router, Timeouts::default(), shutdown).await
}

/// [`serve_plain`] with the given timeouts.
pub async fn serve_plain_with(
    listener: TcpListener,
    router: Router,
    t: Timeouts,
    shutdown: impl Future<Output = ()>,
) {
    accept_loop(
        listener,
        t.shutdown_grace,
        shutdown,
        move |tcp, remote, stop| serve_connection(tcp, router.clone(), remote, t, stop),
    )
    .await
}

/// Bind a unix socket at `path` with mode `permission` (e.g. `0o770`).
///
/// A stale socket left by a crashed server is replaced; a socket on which a
/// server still answers, or a path that is not a socket, is an error (that
/// names the path).
pub fn bind_unix(path: &Path, permission: u32) -> io::Result<UnixListener> {
    prepare_socket_path(path)?;
    let listener = UnixListener::bind(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot bind the unix socket {}: {e}", path.display()),
        )
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(permission)).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot set mode {permission:o} on {}: {e}", path.display()),
        )
    })?;
    Ok(listener)
}

/// Serve `router` over HTTP on a unix socket bound by [`bind_unix`] at
/// `path` until `shutdown` resolves, then remove the socket file.
pub async fn serve_unix_listener(
    listener: UnixListener,
    path: &Path,
    router: Router,
    t: Timeouts,
    shutdown: impl Future<Output = ()>,
) {
    accept_loop(listener, t.shutdown_grace, shutdown, move |s, _, stop| {
        serve_connection(s, router.clone(), None, t, stop)
    })
    .await;
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            warn!(socket = %path.display(), "cannot remove the unix socket: {e}");
        }
    }
}

/// [`bind_unix`], then [`serve_unix_listener`] with the default timeouts.
pub async fn serve_unix<F>(
    path: &Path,
    permission: u32,
    router: Router,
    shutdown: F,
) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let listener = bind_unix(path, permission)?;
    tracing::info!(socket = %path.display(), mode = format!("{permission:o}"), "listening on the unix socket");
    serve_unix_listener(listener, path, router, Timeouts::default(), shutdown).await;
    Ok(())
}

/// Make `path` free for a new socket: create its directory, remove a stale
/// socket, refuse to touch a live socket or a non-socket file.
fn prepare_socket_path(path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot create the socket directory {}: {e}", dir.display()),
            )
        })?;
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        Ok(m) if !m.file_type().is_socket() => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a unix socket; refusing to replace it",
                path.display()
            ),
        )),
        Ok(_) => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("another server is already listening on {}", path.display()),
                ));
            }
            debug!(socket = %path.display(), "removing a stale unix socket");
            std::fs::remove_file(path)
        }
    }
}
