//! The STUN server: answers binding requests on a UDP socket.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ironscale_stun::{parse_binding_request, response};
use tokio::net::UdpSocket;
use tracing::{debug, trace};

/// Counters of a STUN server.
#[derive(Debug, Default)]
pub struct StunStats {
    /// Binding requests answered.
    pub requests: AtomicU64,
    /// Packets ignored (not a binding request, malformed).
    pub ignored: AtomicU64,
    /// Responses that could not be sent.
    pub send_errors: AtomicU64,
}

impl StunStats {
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
    pub fn ignored(&self) -> u64 {
        self.ignored.load(Ordering::Relaxed)
    }
    pub fn send_errors(&self) -> u64 {
        self.send_errors.load(Ordering::Relaxed)
    }
}

/// Answer STUN binding requests on `socket` until `shutdown` completes.
/// Malformed packets are ignored; receive errors (e.g. ICMP-induced) are logged
/// and the loop goes on.
pub async fn run_stun(socket: UdpSocket, shutdown: impl Future<Output = ()>) {
    run_stun_with_stats(socket, Arc::new(StunStats::default()), shutdown).await
}

/// [`run_stun`] with caller-held counters.
pub async fn run_stun_with_stats(
    socket: UdpSocket,
    stats: Arc<StunStats>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, src) = tokio::select! {
            _ = &mut shutdown => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    debug!(error = %e, "STUN recv error");
                    continue;
                }
            },
        };
        let req = match parse_binding_request(&buf[..n]) {
            Ok(r) => r,
            Err(e) => {
                stats.ignored.fetch_add(1, Ordering::Relaxed);
                trace!(from = %src, error = %e, "ignoring non-STUN packet");
                continue;
            }
        };
        let resp = response(req.txid, src);
        match socket.send_to(&resp, src).await {
            Ok(_) => {
                stats.requests.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                stats.send_errors.fetch_add(1, Ordering::Relaxed);
                debug!(to = %src, error = %e, "STUN send error");
            }
        }
    }
}
