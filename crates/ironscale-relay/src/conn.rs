//! The task that drives one DERP connection: moves bytes between the socket and
//! the sans-IO [`ServerConn`], and between the connection and the shared
//! [`DerpServer`] registry.

use std::collections::HashMap;
use std::future::pending;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use ironscale_derp::{
    is_disco, random_nonce, ClientInfo, DerpError, Frame, PeerGoneReason, ServerConn, ServerEvent,
};
use ironscale_keys::NodePublic;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::sleep_until;
use tracing::{debug, trace};

use crate::server::{inc, Client, DerpServer};

/// Pull queued packets only while less than this is waiting to be written.
const HIGH_WATER: usize = 64 << 10;
/// Stop reading from the client while this much output is stuck.
const READ_PAUSE: usize = 1 << 20;
const READ_BUF: usize = 32 << 10;

#[derive(Debug)]
enum Close {
    Eof,
    Shutdown,
    ClosedByMesh,
    Rejected,
    Io(std::io::Error),
    WriteTimeout,
    Protocol(DerpError),
}

/// PeerGone(NotHere) replies to disco packets for unknown peers: 1/s, burst 3.
struct NotHereLimiter {
    tokens: f64,
    last: Instant,
}

impl NotHereLimiter {
    fn allow(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt).min(3.0);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct Session {
    server: Arc<DerpServer>,
    conn: ServerConn,
    remote: Option<SocketAddr>,
    client: Option<Arc<Client>>,
    /// Destinations this client sent to, with their connection id (for PeerGone).
    sent_to: HashMap<NodePublic, u64>,
    not_here: NotHereLimiter,
    /// A ClientInfo waiting for the verifier's answer.
    admission: Option<(NodePublic, ClientInfo, bool)>,
    /// The receive rate limit, when configured.
    bucket: Option<TokenBucket>,
}

/// Bytes a client may send: refills at `rate` per second up to `burst`.
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(rate: u64, burst: u64, now: Instant) -> TokenBucket {
        // A burst below one read would never let a read through.
        let burst = (burst as f64).max(READ_BUF as f64);
        TokenBucket {
            rate: rate as f64,
            burst,
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.at = now;
    }

    /// `None`: read now; else wait until then.
    fn wait(&mut self, now: Instant) -> Option<Instant> {
        self.refill(now);
        if self.tokens >= READ_BUF as f64 {
            return None;
        }
        let short = READ_BUF as f64 - self.tokens;
        Some(now + std::time::Duration::from_secs_f64(short / self.rate))
    }

    fn take(&mut self, n: usize) {
        self.tokens -= n as f64;
    }
}

pub(crate) async fn run<S>(server: Arc<DerpServer>, io: S, remote: Option<SocketAddr>)
where
    S: AsyncRead + AsyncWrite + Send + Unpin,
{
    let now = Instant::now();
    let conn = ServerConn::new(server.conn_config(), server.private_key().clone(), now);
    let mut s = Session {
        server,
        conn,
        remote,
        client: None,
        sent_to: HashMap::new(),
        not_here: NotHereLimiter {
            tokens: 3.0,
            last: now,
        },
        admission: None,
        bucket: None,
    };
    let cfg = s.server.config();
    if cfg.token_bucket_bytes_per_second > 0 {
        s.bucket = Some(TokenBucket::new(
            cfg.token_bucket_bytes_per_second,
            cfg.token_bucket_bytes_burst,
            now,
        ));
    }
    let reason = s.drive(io).await;
    let who = s
        .client
        .as_ref()
        .map(|c| c.key.short())
        .unwrap_or_else(|| "-".into());
    match &reason {
        Close::Eof | Close::Shutdown => {
            debug!(client = %who, remote = ?s.remote, "DERP connection closed")
        }
        Close::Protocol(e) => {
            if s.client.is_some() {
                inc(&s.server.counters.protocol_errors);
            } else {
                inc(&s.server.counters.handshake_failures);
            }
            debug!(client = %who, remote = ?s.remote, error = %e, "DERP connection dropped: protocol error");
        }
        Close::Io(e) => {
            debug!(client = %who, remote = ?s.remote, error = %e, "DERP connection dropped: I/O error")
        }
        other => {
            debug!(client = %who, remote = ?s.remote, reason = ?other, "DERP connection dropped")
        }
    }
    s.cleanup();
}

impl Session {
    async fn drive<S>(&mut self, io: S) -> Close
    where
        S: AsyncRead + AsyncWrite + Send + Unpin,
    {
        let (mut rd, mut wr) = tokio::io::split(io);
        let mut shutdown = self.server.subscribe_shutdown();
        if *shutdown.borrow_and_update() {
            return Close::Shutdown;
        }
        let mut rbuf = vec![0u8; READ_BUF];
        let write_timeout = self.server.config().write_timeout;
        let mut stalled_since: Option<Instant> = None;
        let mut need_flush = false;
        loop {
            if let Err(c) = self.handle_events() {
                return c;
            }
            if let Some((key, info, is_mesh)) = self.admission.take() {
                // The verifier may ask over the network; only this connection waits.
                let source = self.remote.map(|a| a.ip());
                let admitted = tokio::select! {
                    biased;
                    _ = shutdown.changed() => return Close::Shutdown,
                    ok = self.server.admit(&key, is_mesh, source) => ok,
                };
                if let Err(c) = self.admitted(key, info, is_mesh, admitted) {
                    return c;
                }
                continue;
            }
            if let Some(c) = &self.client {
                if c.closed.load(Ordering::Relaxed) {
                    return Close::ClosedByMesh;
                }
                let mut q = c.queue.lock();
                while self.conn.transmit_len() < HIGH_WATER {
                    match q.pop() {
                        Some(f) => self.conn.queue_frame(&f),
                        None => break,
                    }
                }
            }
            let want_write = self.conn.transmit_len() > 0;
            if !want_write && !need_flush {
                stalled_since = None;
            } else if stalled_since.is_none() {
                stalled_since = Some(Instant::now());
            }
            // The per-client receive rate limit (admitted non-mesh clients): reading pauses
            // until the bucket has refilled, so TCP slows the sender down.
            let throttled = match (&mut self.bucket, &self.client) {
                (Some(b), Some(c)) if !c.is_mesh => b.wait(Instant::now()),
                _ => None,
            };
            let can_read = self.conn.transmit_len() < READ_PAUSE
                && !self.conn.awaiting_admission()
                && throttled.is_none();
            let timer = self.conn.poll_timeout();
            let stall_deadline = stalled_since.map(|t| t + write_timeout);
            let client = self.client.clone();
            tokio::select! {
                biased;
                _ = shutdown.changed() => return Close::Shutdown,
                r = async {
                    if want_write {
                        wr.write(self.conn.transmit()).await.map(Some)
                    } else {
                        wr.flush().await.map(|()| None)
                    }
                }, if want_write || need_flush => match r {
                    Ok(Some(0)) => return Close::Eof,
                    Ok(Some(n)) => {
                        self.conn.advance_transmit(n);
                        stalled_since = None;
                        need_flush = true;
                    }
                    Ok(None) => need_flush = false,
                    Err(e) => return Close::Io(e),
                },
                _ = async { match throttled { Some(t) => sleep_until(t.into()).await, None => pending().await } } => {}
                r = rd.read(&mut rbuf), if can_read => match r {
                    Ok(0) => return Close::Eof,
                    Ok(n) => {
                        trace!(bytes = n, "DERP read");
                        if let Some(b) = &mut self.bucket {
                            b.take(n);
                        }
                        if let Err(e) = self.conn.handle_input(&rbuf[..n], Instant::now()) {
                            return Close::Protocol(e);
                        }
                    }
                    Err(e) => return Close::Io(e),
                },
                _ = async { match &client { Some(c) => c.notify.notified().await, None => pending().await } } => {}
                _ = async { match timer { Some(t) => sleep_until(t.into()).await, None => pending().await } } => {
                    if let Err(e) = self.conn.handle_timeout(Instant::now()) {
                        return Close::Protocol(e);
                    }
                }
                _ = async { match stall_deadline { Some(t) => sleep_until(t.into()).await, None => pending().await } } => {
                    return Close::WriteTimeout;
                }
            }
        }
    }

    fn handle_events(&mut self) -> Result<(), Close> {
        while let Some(ev) = self.conn.poll_event() {
            match ev {
                ServerEvent::ClientInfo { key, info, is_mesh } => {
                    // Decided in `drive` (the verifier is async); the
                    // connection reads nothing more until then.
                    self.admission = Some((key, info, is_mesh));
                    return Ok(());
                }
                ServerEvent::SendPacket { dst, packet } => {
                    let Some(src) = self.conn.client_key() else {
                        continue;
                    };
                    let disco = is_disco(&packet);
                    match self.server.deliver(src, &dst, packet) {
                        Some(id) => {
                            self.sent_to.insert(dst, id);
                        }
                        None => {
                            if disco && self.not_here.allow(Instant::now()) {
                                self.conn.queue_frame(&Frame::PeerGone {
                                    peer: dst,
                                    reason: PeerGoneReason::NotHere,
                                });
                            }
                        }
                    }
                }
                ServerEvent::ForwardPacket { src, dst, packet } => {
                    self.server.deliver_forwarded(src, &dst, packet);
                }
                ServerEvent::NotePreferred(p) => {
                    if let Some(c) = &self.client {
                        self.server.set_preferred(c, p);
                    }
                }
                ServerEvent::WatchConns => {
                    if let Some(c) = &self.client {
                        self.server.add_watcher(c);
                    }
                }
                ServerEvent::ClosePeer(k) => self.server.close_peer(&k),
            }
        }
        Ok(())
    }

    /// The verifier's answer for the client that sent ClientInfo.
    fn admitted(
        &mut self,
        key: NodePublic,
        info: ClientInfo,
        is_mesh: bool,
        admitted: bool,
    ) -> Result<(), Close> {
        if !admitted {
            inc(&self.server.counters.clients_rejected);
            debug!(client = %key.short(), remote = ?self.remote, "DERP client refused by verifier");
            return Err(Close::Rejected);
        }
        let c = self
            .server
            .new_client(key, self.remote, is_mesh, info.is_prober);
        self.server.register(&c);
        self.client = Some(c);
        let nonce = random_nonce().ok_or(Close::Protocol(DerpError::Closed("no randomness")))?;
        self.conn
            .accept(&self.server.server_info(), nonce, Instant::now())
            .map_err(Close::Protocol)?;
        debug!(client = %key.short(), remote = ?self.remote, mesh = is_mesh, "DERP client connected");
        Ok(())
    }

    fn cleanup(&mut self) {
        let Some(c) = self.client.take() else { return };
        if !self.server.unregister(&c) {
            return; // another connection of the same key is still here
        }
        for (dst, id) in self.sent_to.drain() {
            if let Some(d) = self.server.active(&dst) {
                if d.id == id {
                    d.push_control(Frame::PeerGone {
                        peer: c.key,
                        reason: PeerGoneReason::Disconnected,
                    });
                }
            }
        }
    }
}
