//! Shared state of a DERP server: who is connected, and routing between them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ironscale_derp::frame::peer_present_flags;
use ironscale_derp::{
    Frame, MeshKey, PacketQueue, PeerGoneReason, Pushed, ServerConnConfig, ServerInfo,
};
use ironscale_keys::{NodePublic, PrivateKey};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, Notify};

/// Admission control for non-mesh clients (`verify_clients`).
///
/// The control server implements this to admit only nodes of its tailnet
/// (an in-memory lookup, the closure impl below); `ironscale derper` asks a
/// `--verify-client-url`. Called once per connection, right after the
/// ClientInfo box was opened, on the connection's task: reading from that
/// client pauses until it answers, other clients are not held up. An answer
/// that takes longer than [`ADMISSION_TIMEOUT`] refuses the client.
pub trait ClientVerifier: Send + Sync {
    /// `source`: the client's address as the relay sees it.
    fn allowed<'a>(
        &'a self,
        node: &'a NodePublic,
        source: Option<std::net::IpAddr>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>>;
}

impl<F: Fn(&NodePublic) -> bool + Send + Sync> ClientVerifier for F {
    fn allowed<'a>(
        &'a self,
        node: &'a NodePublic,
        _source: Option<std::net::IpAddr>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>> {
        let ok = self(node);
        Box::pin(std::future::ready(ok))
    }
}

/// The longest a [`ClientVerifier`] may take before the client is refused.
pub const ADMISSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Tunables of a [`DerpServer`]; the defaults are those of Tailscale's derper.
#[derive(Clone, Debug)]
pub struct DerpServerConfig {
    /// KeepAlive interval (a random 0..`keepalive_jitter` is added per connection).
    pub keepalive: Duration,
    pub keepalive_jitter: Duration,
    /// Time a client has to send ClientInfo after the upgrade.
    pub handshake_timeout: Duration,
    /// A connection whose pending output makes no progress for this long is closed.
    pub write_timeout: Duration,
    /// Packets queued per client and class (disco / other) before the oldest is dropped.
    pub queue_len: usize,
    /// Mesh pre-shared key. Clients presenting it skip verification and may use
    /// mesh frames (WatchConns, ClosePeer, ForwardPacket).
    pub mesh_key: Option<MeshKey>,
    /// Per-client receive rate limit (0 = none): advertised to clients in
    /// ServerInfo and enforced, a client's reading paused while it is over
    /// it (TCP then slows the sender; nothing is dropped). Mesh peers are exempt.
    pub token_bucket_bytes_per_second: u64,
    pub token_bucket_bytes_burst: u64,
}

impl Default for DerpServerConfig {
    fn default() -> Self {
        Self {
            keepalive: Duration::from_secs(60),
            keepalive_jitter: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(2),
            queue_len: ironscale_derp::queue::DEFAULT_QUEUE_LEN,
            mesh_key: None,
            token_bucket_bytes_per_second: 0,
            token_bucket_bytes_burst: 0,
        }
    }
}

/// Counters of a [`DerpServer`] (a snapshot; see [`DerpServer::stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DerpStats {
    /// Connections currently registered (after admission).
    pub clients_current: u64,
    /// Connections ever admitted.
    pub clients_total: u64,
    /// Clients refused by the verifier.
    pub clients_rejected: u64,
    /// Clients that currently say this server is their home.
    pub home_clients: u64,
    /// Connections closed because of a protocol error (malformed, oversized, …).
    pub protocol_errors: u64,
    /// Connections that never completed the handshake.
    pub handshake_failures: u64,
    /// Packets queued for a destination.
    pub packets_relayed: u64,
    pub bytes_relayed: u64,
    /// Packets dropped because the destination's queue was full.
    pub packets_dropped_queue_full: u64,
    /// Packets dropped because the destination is not connected.
    pub packets_dropped_unknown_dest: u64,
    /// Packets forwarded to a mesh peer the destination is connected to.
    pub packets_forwarded: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub clients_current: AtomicU64,
    pub clients_total: AtomicU64,
    pub clients_rejected: AtomicU64,
    pub home_clients: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub handshake_failures: AtomicU64,
    pub packets_relayed: AtomicU64,
    pub bytes_relayed: AtomicU64,
    pub packets_dropped_queue_full: AtomicU64,
    pub packets_dropped_unknown_dest: AtomicU64,
    pub packets_forwarded: AtomicU64,
}

pub(crate) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// One registered connection.
pub(crate) struct Client {
    pub id: u64,
    pub key: NodePublic,
    pub remote: Option<SocketAddr>,
    pub is_mesh: bool,
    pub is_prober: bool,
    pub queue: Mutex<PacketQueue>,
    pub notify: Notify,
    pub closed: AtomicBool,
    pub preferred: AtomicBool,
}

impl Client {
    pub fn push_control(&self, f: Frame) {
        self.queue.lock().push_control(f);
        self.notify.notify_one();
    }
    fn present_frame(&self) -> Frame {
        let mut flags = if self.is_mesh {
            peer_present_flags::IS_MESH_PEER
        } else {
            peer_present_flags::IS_REGULAR
        };
        if self.is_prober {
            flags |= peer_present_flags::IS_PROBER;
        }
        Frame::PeerPresent {
            peer: self.key,
            endpoint: self.remote,
            flags,
        }
    }
}

#[derive(Default)]
struct Registry {
    /// Connections per key, oldest first; the last one receives traffic.
    clients: HashMap<NodePublic, Vec<Arc<Client>>>,
    /// Mesh peers that sent WatchConns.
    watchers: Vec<Arc<Client>>,
    /// Clients connected to a mesh peer of ours (learned from its PeerPresent
    /// frames): where to forward packets for keys not connected here.
    remote: HashMap<NodePublic, RemoteRoute>,
}

/// A route to a client of another relay of the mesh.
#[derive(Clone)]
pub(crate) struct RemoteRoute {
    /// Which mesh connection announced it (several may; the newest wins).
    pub peer: u64,
    pub tx: tokio::sync::mpsc::Sender<Frame>,
}

/// A DERP server: shared state of all its connections.
///
/// Create one per process, wrap it in an `Arc`, and serve it with
/// [`crate::router`] (HTTP upgrade on `/derp`) or [`DerpServer::serve_conn`]
/// (any already-upgraded byte stream).
pub struct DerpServer {
    key: PrivateKey,
    public: NodePublic,
    config: DerpServerConfig,
    verifier: Option<Arc<dyn ClientVerifier>>,
    registry: Mutex<Registry>,
    pub(crate) counters: Counters,
    shutdown: watch::Sender<bool>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for DerpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DerpServer")
            .field("public", &self.public)
            .field("verify_clients", &self.verifier.is_some())
            .finish_non_exhaustive()
    }
}

impl DerpServer {
    /// A server with the given private DERP key and default settings.
    pub fn new(key: PrivateKey) -> Self {
        Self::with_config(key, DerpServerConfig::default())
    }

    pub fn with_config(key: PrivateKey, config: DerpServerConfig) -> Self {
        let (shutdown, _) = watch::channel(false);
        Self {
            public: key.node_public(),
            key,
            config,
            verifier: None,
            registry: Mutex::new(Registry::default()),
            counters: Counters::default(),
            shutdown,
            next_id: AtomicU64::new(1),
        }
    }

    /// Enable admission control: non-mesh clients must be `allowed`.
    pub fn with_verifier(mut self, verifier: Arc<dyn ClientVerifier>) -> Self {
        self.verifier = Some(verifier);
        self
    }

    /// The server's public DERP key (sent in ServerKey and `Derp-Public-Key`).
    pub fn public_key(&self) -> NodePublic {
        self.public
    }

    pub fn config(&self) -> &DerpServerConfig {
        &self.config
    }

    /// Whether a client with this key is connected.
    pub fn is_connected(&self, key: &NodePublic) -> bool {
        self.registry.lock().clients.contains_key(key)
    }

    /// Keys of the connected clients, sorted.
    pub fn connected_clients(&self) -> Vec<NodePublic> {
        let mut v: Vec<NodePublic> = self.registry.lock().clients.keys().copied().collect();
        v.sort();
        v
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> DerpStats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DerpStats {
            clients_current: l(&c.clients_current),
            clients_total: l(&c.clients_total),
            clients_rejected: l(&c.clients_rejected),
            home_clients: l(&c.home_clients),
            protocol_errors: l(&c.protocol_errors),
            handshake_failures: l(&c.handshake_failures),
            packets_relayed: l(&c.packets_relayed),
            bytes_relayed: l(&c.bytes_relayed),
            packets_dropped_queue_full: l(&c.packets_dropped_queue_full),
            packets_dropped_unknown_dest: l(&c.packets_dropped_unknown_dest),
            packets_forwarded: l(&c.packets_forwarded),
        }
    }

    /// Close every DERP connection (now and any accepted later).
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Run the DERP protocol on an already-upgraded stream (after the HTTP 101,
    /// or for a custom transport) until the client goes away. `remote` is
    /// reported to mesh watchers in PeerPresent.
    pub async fn serve_conn<S>(self: &Arc<Self>, io: S, remote: Option<SocketAddr>)
    where
        S: AsyncRead + AsyncWrite + Send + Unpin,
    {
        crate::conn::run(self.clone(), io, remote).await
    }

    // ---- crate-internal API used by the connection task ----

    pub(crate) fn subscribe_shutdown(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub(crate) fn private_key(&self) -> &PrivateKey {
        &self.key
    }

    pub(crate) fn conn_config(&self) -> ServerConnConfig {
        let jitter_ms = u64::try_from(self.config.keepalive_jitter.as_millis()).unwrap_or(0);
        let mut r = [0u8; 8];
        let rand = if getrandom::fill(&mut r).is_ok() {
            u64::from_le_bytes(r)
        } else {
            0
        };
        let jitter = if jitter_ms == 0 { 0 } else { rand % jitter_ms };
        ServerConnConfig {
            keepalive: self.config.keepalive + Duration::from_millis(jitter),
            handshake_timeout: self.config.handshake_timeout,
            mesh_key: self.config.mesh_key.clone(),
            ..ServerConnConfig::default()
        }
    }

    pub(crate) fn server_info(&self) -> ServerInfo {
        ServerInfo {
            token_bucket_bytes_per_second: self.config.token_bucket_bytes_per_second,
            token_bucket_bytes_burst: self.config.token_bucket_bytes_burst,
            ..ServerInfo::default()
        }
    }

    pub(crate) async fn admit(
        &self,
        key: &NodePublic,
        is_mesh: bool,
        source: Option<std::net::IpAddr>,
    ) -> bool {
        if is_mesh {
            return true;
        }
        match &self.verifier {
            Some(v) => tokio::time::timeout(ADMISSION_TIMEOUT, v.allowed(key, source))
                .await
                .unwrap_or(false),
            None => true,
        }
    }

    pub(crate) fn new_client(
        &self,
        key: NodePublic,
        remote: Option<SocketAddr>,
        is_mesh: bool,
        is_prober: bool,
    ) -> Arc<Client> {
        Arc::new(Client {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            key,
            remote,
            is_mesh,
            is_prober,
            queue: Mutex::new(PacketQueue::new(self.config.queue_len)),
            notify: Notify::new(),
            closed: AtomicBool::new(false),
            preferred: AtomicBool::new(false),
        })
    }

    /// Register a connection; watchers hear PeerPresent.
    pub(crate) fn register(&self, c: &Arc<Client>) {
        let watchers = {
            let mut r = self.registry.lock();
            r.clients.entry(c.key).or_default().push(c.clone());
            r.watchers.clone()
        };
        inc(&self.counters.clients_current);
        inc(&self.counters.clients_total);
        for w in watchers.iter().filter(|w| w.key != c.key) {
            w.push_control(c.present_frame());
        }
    }

    /// Unregister a connection. Returns true if no other connection of its key remains.
    pub(crate) fn unregister(&self, c: &Arc<Client>) -> bool {
        let (gone, watchers) = {
            let mut r = self.registry.lock();
            let mut gone = false;
            if let Some(v) = r.clients.get_mut(&c.key) {
                v.retain(|x| x.id != c.id);
                if v.is_empty() {
                    r.clients.remove(&c.key);
                    gone = true;
                }
            }
            r.watchers.retain(|w| w.id != c.id);
            (gone, r.watchers.clone())
        };
        self.counters
            .clients_current
            .fetch_sub(1, Ordering::Relaxed);
        if c.preferred.swap(false, Ordering::Relaxed) {
            self.counters.home_clients.fetch_sub(1, Ordering::Relaxed);
        }
        if gone {
            for w in &watchers {
                w.push_control(Frame::PeerGone {
                    peer: c.key,
                    reason: PeerGoneReason::Disconnected,
                });
            }
        }
        gone
    }

    /// The connection that receives traffic for `key`.
    pub(crate) fn active(&self, key: &NodePublic) -> Option<Arc<Client>> {
        self.registry
            .lock()
            .clients
            .get(key)
            .and_then(|v| v.last().cloned())
    }

    /// Queue a packet for `dst`; returns the destination connection's id if it exists.
    pub(crate) fn deliver(
        &self,
        src: NodePublic,
        dst: &NodePublic,
        packet: bytes::Bytes,
    ) -> Option<u64> {
        self.deliver_via(src, dst, packet, true)
    }

    /// A packet a mesh peer forwarded: delivered here or dropped, never
    /// forwarded again (two relays cannot bounce it between them).
    pub(crate) fn deliver_forwarded(
        &self,
        src: NodePublic,
        dst: &NodePublic,
        packet: bytes::Bytes,
    ) {
        self.deliver_via(src, dst, packet, false);
    }

    fn deliver_via(
        &self,
        src: NodePublic,
        dst: &NodePublic,
        packet: bytes::Bytes,
        may_forward: bool,
    ) -> Option<u64> {
        let Some(d) = self.active(dst) else {
            // Not here: connected to a mesh peer? Forward it there.
            let route = may_forward
                .then(|| self.registry.lock().remote.get(dst).cloned())
                .flatten();
            if let Some(r) = route {
                let len = packet.len() as u64;
                let f = Frame::ForwardPacket {
                    src,
                    dst: *dst,
                    packet,
                };
                if r.tx.try_send(f).is_ok() {
                    inc(&self.counters.packets_forwarded);
                    self.counters
                        .bytes_relayed
                        .fetch_add(len, Ordering::Relaxed);
                } else {
                    inc(&self.counters.packets_dropped_queue_full);
                }
                return Some(0);
            }
            inc(&self.counters.packets_dropped_unknown_dest);
            return None;
        };
        let len = packet.len() as u64;
        let pushed = d.queue.lock().push_packet(src, packet);
        d.notify.notify_one();
        inc(&self.counters.packets_relayed);
        self.counters
            .bytes_relayed
            .fetch_add(len, Ordering::Relaxed);
        if pushed != Pushed::Queued {
            inc(&self.counters.packets_dropped_queue_full);
        }
        Some(d.id)
    }

    pub(crate) fn set_preferred(&self, c: &Client, preferred: bool) {
        let was = c.preferred.swap(preferred, Ordering::Relaxed);
        match (was, preferred) {
            (false, true) => inc(&self.counters.home_clients),
            (true, false) => {
                self.counters.home_clients.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// A mesh peer (connection `peer`) says `key` is connected to it.
    pub(crate) fn add_remote(
        &self,
        key: NodePublic,
        peer: u64,
        tx: tokio::sync::mpsc::Sender<Frame>,
    ) {
        self.registry
            .lock()
            .remote
            .insert(key, RemoteRoute { peer, tx });
    }

    /// `key` left mesh peer `peer` (a route another peer announced since stays).
    pub(crate) fn remove_remote(&self, key: &NodePublic, peer: u64) {
        let mut r = self.registry.lock();
        if r.remote.get(key).is_some_and(|x| x.peer == peer) {
            r.remote.remove(key);
        }
    }

    /// Mesh connection `peer` is down: forget every route it announced.
    pub(crate) fn forget_peer(&self, peer: u64) {
        self.registry.lock().remote.retain(|_, r| r.peer != peer);
    }

    /// Keys reachable through mesh peers now.
    pub fn remote_clients(&self) -> usize {
        self.registry.lock().remote.len()
    }

    pub(crate) fn next_conn_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A mesh peer subscribes: it hears PeerPresent for everyone connected now.
    pub(crate) fn add_watcher(&self, w: &Arc<Client>) {
        let present: Vec<Frame> = {
            let mut r = self.registry.lock();
            if !r.watchers.iter().any(|x| x.id == w.id) {
                r.watchers.push(w.clone());
            }
            let mut keys: Vec<&NodePublic> = r.clients.keys().filter(|k| **k != w.key).collect();
            keys.sort();
            keys.iter()
                .filter_map(|k| r.clients.get(*k).and_then(|v| v.last()))
                .map(|c| c.present_frame())
                .collect()
        };
        for f in present {
            w.push_control(f);
        }
    }

    /// Close every connection of `key` (mesh ClosePeer).
    pub(crate) fn close_peer(&self, key: &NodePublic) {
        let conns = self
            .registry
            .lock()
            .clients
            .get(key)
            .cloned()
            .unwrap_or_default();
        for c in conns {
            c.closed.store(true, Ordering::Relaxed);
            c.notify.notify_one();
        }
    }
}
