//! The server side of one DERP connection as a sans-IO state machine.
//!
//! The IO layer moves bytes and time in and out:
//!
//! ```text
//! conn = ServerConn::new(config, key, now)     // ServerKey frame queued
//! loop {
//!     write conn.transmit(); conn.advance_transmit(n)
//!     on bytes:    conn.handle_input(bytes, now)?
//!     on timeout:  conn.handle_timeout(now)?       (deadline from conn.poll_timeout())
//!     while let Some(ev) = conn.poll_event() { … }  // ClientInfo → admission → conn.accept(…)
//!     to deliver:  conn.queue_frame(&Frame::RecvPacket { … })
//! }
//! ```
//!
//! The machine handles the handshake (ClientInfo first, within a deadline, box
//! opened with the server key), mesh permission checks, Ping→Pong, and
//! keep-alives. Routing between clients is the caller's job.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use ironscale_keys::{NodePublic, PrivateKey};

use crate::decoder::{Direction, FrameDecoder};
use crate::error::DerpError;
use crate::frame::{Frame, FrameType, NONCE_LEN};
use crate::info::{ClientInfo, MeshKey, ServerInfo};

/// Settings of a [`ServerConn`].
#[derive(Clone, Debug)]
pub struct ServerConnConfig {
    /// Interval between KeepAlive frames (Go: 60 s plus jitter; add the jitter here).
    pub keepalive: Duration,
    /// Time allowed between the start and the ClientInfo frame (Go: 10 s).
    pub handshake_timeout: Duration,
    /// Mesh pre-shared key; clients presenting it may use mesh frames.
    pub mesh_key: Option<MeshKey>,
    /// Above this many unwritten bytes, Pongs are dropped (the client is not reading).
    pub max_pending_transmit: usize,
}

impl Default for ServerConnConfig {
    fn default() -> Self {
        Self {
            keepalive: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            mesh_key: None,
            max_pending_transmit: 1 << 20,
        }
    }
}

/// What the connection asks the caller to act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerEvent {
    /// A valid ClientInfo arrived. Decide admission, then call
    /// [`ServerConn::accept`] (or drop the connection). No further frames are
    /// processed until then.
    ClientInfo {
        key: NodePublic,
        info: ClientInfo,
        is_mesh: bool,
    },
    /// The client wants `packet` delivered to `dst`.
    SendPacket { dst: NodePublic, packet: Bytes },
    /// A mesh peer forwards a packet from `src` (on its server) to `dst`.
    ForwardPacket {
        src: NodePublic,
        dst: NodePublic,
        packet: Bytes,
    },
    /// The client says whether this server is its home.
    NotePreferred(bool),
    /// A mesh peer subscribes to PeerPresent/PeerGone.
    WatchConns,
    /// A mesh peer asks to close every connection of `peer`.
    ClosePeer(NodePublic),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitClientInfo { deadline: Instant },
    AwaitAdmission,
    Established,
}

/// Server side of one DERP connection. See the module docs.
///
/// `Clone` copies the whole state (handy to fork a connection in tests and fuzzing).
#[derive(Debug, Clone)]
pub struct ServerConn {
    config: ServerConnConfig,
    key: PrivateKey,
    state: State,
    decoder: FrameDecoder,
    out: BytesMut,
    events: VecDeque<ServerEvent>,
    client: Option<NodePublic>,
    is_mesh: bool,
    next_keepalive: Option<Instant>,
    dropped_pongs: u64,
}

impl ServerConn {
    /// Start a connection; the ServerKey frame is queued for transmission at once.
    pub fn new(config: ServerConnConfig, key: PrivateKey, now: Instant) -> Self {
        let mut out = BytesMut::new();
        Frame::ServerKey {
            key: key.node_public(),
        }
        .encode(&mut out);
        let deadline = now + config.handshake_timeout;
        Self {
            config,
            key,
            state: State::AwaitClientInfo { deadline },
            decoder: FrameDecoder::new(Direction::ClientToServer),
            out,
            events: VecDeque::new(),
            client: None,
            is_mesh: false,
            next_keepalive: None,
            dropped_pongs: 0,
        }
    }

    /// The client's node key, once its ClientInfo has been opened.
    pub fn client_key(&self) -> Option<NodePublic> {
        self.client
    }

    /// Whether the client presented the mesh key.
    pub fn is_mesh(&self) -> bool {
        self.is_mesh
    }

    /// Whether [`ServerConn::accept`] has been called.
    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }

    /// Feed bytes read from the client.
    pub fn handle_input(&mut self, data: &[u8], now: Instant) -> Result<(), DerpError> {
        self.decoder.feed(data);
        self.process(now)
    }

    /// Whether the machine is waiting for the caller's admission decision
    /// (the IO layer should stop reading until then).
    pub fn awaiting_admission(&self) -> bool {
        self.state == State::AwaitAdmission
    }

    /// Admit the client: ServerInfo is queued and buffered frames are processed.
    pub fn accept(
        &mut self,
        info: &ServerInfo,
        nonce: [u8; NONCE_LEN],
        now: Instant,
    ) -> Result<(), DerpError> {
        let Some(client) = self.client else {
            return Err(DerpError::Closed("accept before ClientInfo"));
        };
        if self.state != State::AwaitAdmission {
            return Err(DerpError::Closed("accept called twice"));
        }
        info.seal(&self.key, &client, nonce).encode(&mut self.out);
        self.state = State::Established;
        self.next_keepalive = Some(now + self.config.keepalive);
        self.process(now)
    }

    /// The next event for the caller.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// Queue a frame for the client (RecvPacket, PeerGone, PeerPresent, Health, …).
    pub fn queue_frame(&mut self, frame: &Frame) {
        frame.encode(&mut self.out);
    }

    /// Bytes waiting to be written to the client.
    pub fn transmit(&self) -> &[u8] {
        &self.out
    }

    /// Number of bytes waiting to be written.
    pub fn transmit_len(&self) -> usize {
        self.out.len()
    }

    /// Mark `n` bytes of [`ServerConn::transmit`] as written.
    pub fn advance_transmit(&mut self, n: usize) {
        let n = n.min(self.out.len());
        self.out.advance(n);
    }

    /// When [`ServerConn::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::AwaitClientInfo { deadline } => Some(deadline),
            State::AwaitAdmission => None,
            State::Established => self.next_keepalive,
        }
    }

    /// Advance time: fails the handshake after its deadline, queues keep-alives.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), DerpError> {
        match self.state {
            State::AwaitClientInfo { deadline } if now >= deadline => {
                Err(DerpError::HandshakeTimeout)
            }
            State::Established => {
                if let Some(at) = self.next_keepalive {
                    if now >= at {
                        Frame::KeepAlive.encode(&mut self.out);
                        self.next_keepalive = Some(now + self.config.keepalive);
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Pongs not sent because the client was not reading.
    pub fn dropped_pongs(&self) -> u64 {
        self.dropped_pongs
    }

    /// Frames of unknown type that were skipped.
    pub fn skipped_frames(&self) -> u64 {
        self.decoder.skipped_frames()
    }

    fn process(&mut self, _now: Instant) -> Result<(), DerpError> {
        loop {
            if self.state == State::AwaitAdmission {
                return Ok(());
            }
            let Some(frame) = self.decoder.next_frame()? else {
                return Ok(());
            };
            if let State::AwaitClientInfo { .. } = self.state {
                self.handle_client_info(frame)?;
                continue;
            }
            self.handle_frame(frame)?;
        }
    }

    fn handle_client_info(&mut self, frame: Frame) -> Result<(), DerpError> {
        let Frame::ClientInfo { key, sealed } = frame else {
            return Err(DerpError::Unexpected {
                frame_type: frame.frame_type(),
                reason: "first frame must be ClientInfo",
            });
        };
        let info = ClientInfo::open(&self.key, &key, &sealed)?;
        let is_mesh = match (&self.config.mesh_key, &info.mesh_key) {
            (Some(ours), Some(theirs)) => ours.ct_eq(theirs),
            _ => false,
        };
        self.client = Some(key);
        self.is_mesh = is_mesh;
        self.state = State::AwaitAdmission;
        self.events
            .push_back(ServerEvent::ClientInfo { key, info, is_mesh });
        Ok(())
    }

    fn mesh_only(&self, t: FrameType) -> Result<(), DerpError> {
        if self.is_mesh {
            Ok(())
        } else {
            Err(DerpError::Unexpected {
                frame_type: t,
                reason: "mesh frame from a client without the mesh key",
            })
        }
    }

    fn handle_frame(&mut self, frame: Frame) -> Result<(), DerpError> {
        let t = frame.frame_type();
        let ev = match frame {
            Frame::SendPacket { dst, packet } => ServerEvent::SendPacket { dst, packet },
            Frame::NotePreferred { preferred } => ServerEvent::NotePreferred(preferred),
            Frame::ForwardPacket { src, dst, packet } => {
                self.mesh_only(t)?;
                ServerEvent::ForwardPacket { src, dst, packet }
            }
            Frame::WatchConns => {
                self.mesh_only(t)?;
                ServerEvent::WatchConns
            }
            Frame::ClosePeer { peer } => {
                self.mesh_only(t)?;
                ServerEvent::ClosePeer(peer)
            }
            Frame::Ping { data } => {
                if self.out.len() > self.config.max_pending_transmit {
                    self.dropped_pongs += 1;
                } else {
                    Frame::Pong { data }.encode(&mut self.out);
                }
                return Ok(());
            }
            // Answers to server pings (which this server does not send) and
            // anything else are ignored.
            Frame::Pong { .. } => return Ok(()),
            Frame::ClientInfo { .. } => {
                return Err(DerpError::Unexpected {
                    frame_type: t,
                    reason: "second ClientInfo",
                });
            }
            _ => return Ok(()),
        };
        self.events.push_back(ev);
        Ok(())
    }
}
