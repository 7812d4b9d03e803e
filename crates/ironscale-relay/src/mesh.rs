//! Meshing: this relay connects to each other relay of its region as a mesh
//! client (the pre-shared key in ClientInfo, then WatchConns), learns from
//! their PeerPresent / PeerGone frames which clients are connected where, and
//! forwards a packet for a client that is not here to the relay it is on
//! (ForwardPacket). The other direction is the same code on the other relay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ironscale_derp::{ClientInfo, Frame, MeshKey};
use rustls::ClientConfig;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::client::DerpClient;
use crate::DerpServer;

/// Frames waiting to be forwarded to one mesh peer (dropped beyond it).
const FORWARD_QUEUE: usize = 1024;

/// Another relay of this region.
#[derive(Clone, Debug)]
pub struct MeshPeer {
    /// Name for TLS (SNI, certificate check) and logs.
    pub host: String,
    pub addr: SocketAddr,
}

/// Keep a mesh connection to `peer` for as long as `server` runs:
/// reconnects with a backoff (1 s doubling to 30 s) when it drops.
pub async fn run_mesh_peer(
    server: Arc<DerpServer>,
    peer: MeshPeer,
    key: MeshKey,
    tls: Arc<ClientConfig>,
) {
    let mut shutdown = server.subscribe_shutdown();
    let mut backoff = Duration::from_secs(1);
    loop {
        let id = server.next_conn_id();
        let result = tokio::select! {
            _ = shutdown.changed() => return,
            r = session(&server, &peer, &key, tls.clone(), id) => r,
        };
        server.forget_peer(id);
        match result {
            Ok(()) => backoff = Duration::from_secs(1),
            Err(e) => {
                warn!(peer = %peer.host, addr = %peer.addr, "mesh connection: {e}; retrying in {backoff:?}")
            }
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

async fn session(
    server: &Arc<DerpServer>,
    peer: &MeshPeer,
    key: &MeshKey,
    tls: Arc<ClientConfig>,
    id: u64,
) -> Result<(), String> {
    let info = ClientInfo {
        mesh_key: Some(key.clone()),
        ..Default::default()
    };
    let mut c = tokio::time::timeout(
        Duration::from_secs(10),
        DerpClient::connect_tls(
            peer.addr,
            &peer.host,
            tls,
            server.private_key().clone(),
            info,
        ),
    )
    .await
    .map_err(|_| "connect timed out".to_string())?
    .map_err(|e| format!("connect: {e}"))?;
    c.send(&Frame::WatchConns)
        .await
        .map_err(|e| format!("WatchConns: {e}"))?;
    info!(peer = %peer.host, addr = %peer.addr, "mesh peer connected");
    let (tx, mut rx) = mpsc::channel::<Frame>(FORWARD_QUEUE);
    loop {
        tokio::select! {
            f = c.recv() => match f.map_err(|e| format!("read: {e}"))? {
                Frame::PeerPresent { peer: k, .. } => {
                    if k != server.public_key() {
                        server.add_remote(k, id, tx.clone());
                    }
                }
                Frame::PeerGone { peer: k, .. } => server.remove_remote(&k, id),
                Frame::Ping { data } => {
                    c.send(&Frame::Pong { data }).await.map_err(|e| format!("pong: {e}"))?;
                }
                other => debug!(peer = %peer.host, frame = ?other.frame_type(), "mesh frame ignored"),
            },
            Some(f) = rx.recv() => {
                c.send(&f).await.map_err(|e| format!("forward: {e}"))?;
            }
        }
    }
}
