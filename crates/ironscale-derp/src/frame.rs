//! DERP frames: `type (u8) || length (u32 big-endian) || payload`.
//!
//! [`Frame`] is the typed form of every frame type the Go implementation knows
//! (tailscale `derp/derp.go`, protocol version 2). [`Frame::encode`] writes the
//! canonical bytes; [`Frame::parse`] checks a payload against its type's layout.
//! Length limits are applied as soon as a header is seen, by [`max_payload_len`].

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use bytes::{BufMut, Bytes, BytesMut};
use ironscale_keys::NodePublic;

use crate::error::DerpError;

/// `"DERP🔑"`, the first 8 bytes of a ServerKey frame's payload.
pub const MAGIC: [u8; 8] = *b"DERP\xF0\x9F\x94\x91";
/// The protocol version this crate speaks (the `version` in ClientInfo/ServerInfo).
pub const PROTOCOL_VERSION: u32 = 2;
/// Length of a raw node key on the wire.
pub const KEY_LEN: usize = 32;
/// Length of a NaCl box nonce.
pub const NONCE_LEN: usize = 24;
/// Size of the Poly1305 tag a NaCl box adds.
pub const BOX_OVERHEAD: usize = 16;
/// Length of a frame header.
pub const HEADER_LEN: usize = 5;
/// Largest data packet a client may send (excluding the 32-byte key), `MaxPacketSize`.
pub const MAX_PACKET_SIZE: usize = 64 << 10;
/// Largest ClientInfo frame the server accepts.
pub const MAX_CLIENT_INFO_LEN: usize = 256 << 10;
/// Largest frame of any type (`MaxInfoLen`; the Go client rejects bigger server frames).
pub const MAX_FRAME_LEN: usize = 1 << 20;
/// Smallest ClientInfo payload: key and nonce.
pub const MIN_CLIENT_INFO_LEN: usize = KEY_LEN + NONCE_LEN;
/// Ping payloads the server accepts (only the first 8 bytes are echoed).
pub const MAX_PING_LEN: usize = 1000;
/// Magic that starts a disco message (`"TS💬"`); the relay gives these priority.
pub const DISCO_MAGIC: [u8; 6] = *b"TS\xF0\x9F\x92\xAC";

/// A frame type byte. Unknown values are representable so they can be skipped.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrameType(pub u8);

impl FrameType {
    pub const SERVER_KEY: Self = Self(0x01);
    pub const CLIENT_INFO: Self = Self(0x02);
    pub const SERVER_INFO: Self = Self(0x03);
    pub const SEND_PACKET: Self = Self(0x04);
    pub const RECV_PACKET: Self = Self(0x05);
    pub const KEEP_ALIVE: Self = Self(0x06);
    pub const NOTE_PREFERRED: Self = Self(0x07);
    pub const PEER_GONE: Self = Self(0x08);
    pub const PEER_PRESENT: Self = Self(0x09);
    pub const FORWARD_PACKET: Self = Self(0x0a);
    pub const WATCH_CONNS: Self = Self(0x10);
    pub const CLOSE_PEER: Self = Self(0x11);
    pub const PING: Self = Self(0x12);
    pub const PONG: Self = Self(0x13);
    pub const HEALTH: Self = Self(0x14);
    pub const RESTARTING: Self = Self(0x15);

    /// The Go name of a known type.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::SERVER_KEY => "ServerKey",
            Self::CLIENT_INFO => "ClientInfo",
            Self::SERVER_INFO => "ServerInfo",
            Self::SEND_PACKET => "SendPacket",
            Self::RECV_PACKET => "RecvPacket",
            Self::KEEP_ALIVE => "KeepAlive",
            Self::NOTE_PREFERRED => "NotePreferred",
            Self::PEER_GONE => "PeerGone",
            Self::PEER_PRESENT => "PeerPresent",
            Self::FORWARD_PACKET => "ForwardPacket",
            Self::WATCH_CONNS => "WatchConns",
            Self::CLOSE_PEER => "ClosePeer",
            Self::PING => "Ping",
            Self::PONG => "Pong",
            Self::HEALTH => "Health",
            Self::RESTARTING => "Restarting",
            _ => return None,
        })
    }

    /// Whether a client may send this type to a server.
    pub fn client_to_server(self) -> bool {
        matches!(
            self,
            Self::CLIENT_INFO
                | Self::SEND_PACKET
                | Self::NOTE_PREFERRED
                | Self::FORWARD_PACKET
                | Self::WATCH_CONNS
                | Self::CLOSE_PEER
                | Self::PING
                | Self::PONG
        )
    }

    /// Whether a server may send this type to a client.
    pub fn server_to_client(self) -> bool {
        matches!(
            self,
            Self::SERVER_KEY
                | Self::SERVER_INFO
                | Self::RECV_PACKET
                | Self::KEEP_ALIVE
                | Self::PEER_GONE
                | Self::PEER_PRESENT
                | Self::PING
                | Self::PONG
                | Self::HEALTH
                | Self::RESTARTING
        )
    }
}

impl fmt::Debug for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "Unknown(0x{:02x})", self.0),
        }
    }
}

/// Bounds on a frame type's payload length, `(min, max)`; `None` for unknown types.
pub fn payload_bounds(t: FrameType) -> Option<(usize, usize)> {
    let packet = |prefix: usize| (prefix, prefix + MAX_PACKET_SIZE);
    Some(match t {
        FrameType::SERVER_KEY => (MAGIC.len() + KEY_LEN, MAX_FRAME_LEN),
        FrameType::CLIENT_INFO => (MIN_CLIENT_INFO_LEN, MAX_CLIENT_INFO_LEN),
        FrameType::SERVER_INFO => (NONCE_LEN + BOX_OVERHEAD, MAX_FRAME_LEN),
        FrameType::SEND_PACKET | FrameType::RECV_PACKET => packet(KEY_LEN),
        FrameType::FORWARD_PACKET => packet(2 * KEY_LEN),
        FrameType::KEEP_ALIVE => (0, MAX_FRAME_LEN),
        FrameType::NOTE_PREFERRED => (1, 1),
        FrameType::PEER_GONE | FrameType::PEER_PRESENT => (KEY_LEN, MAX_FRAME_LEN),
        FrameType::WATCH_CONNS => (0, 0),
        FrameType::CLOSE_PEER => (KEY_LEN, KEY_LEN),
        FrameType::PING | FrameType::PONG => (8, MAX_PING_LEN),
        FrameType::HEALTH => (0, MAX_FRAME_LEN),
        FrameType::RESTARTING => (8, MAX_FRAME_LEN),
        _ => return None,
    })
}

/// The largest payload a frame of this type may announce in its header.
pub fn max_payload_len(t: FrameType) -> usize {
    payload_bounds(t).map_or(MAX_FRAME_LEN, |(_, max)| max)
}

/// Why a peer is gone (the byte after the key in a PeerGone frame).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerGoneReason {
    /// 0x00: the peer disconnected from this server.
    Disconnected,
    /// 0x01: the server does not know the destination of a (disco) packet.
    NotHere,
    /// Any other value, kept as is.
    Other(u8),
}

impl PeerGoneReason {
    pub fn to_byte(self) -> u8 {
        match self {
            Self::Disconnected => 0,
            Self::NotHere => 1,
            Self::Other(b) => b,
        }
    }
    pub fn from_byte(b: u8) -> Self {
        match b {
            0 => Self::Disconnected,
            1 => Self::NotHere,
            b => Self::Other(b),
        }
    }
}

/// Flags of a PeerPresent frame.
pub mod peer_present_flags {
    /// A regular client.
    pub const IS_REGULAR: u8 = 1;
    /// Another server of the mesh.
    pub const IS_MESH_PEER: u8 = 2;
    /// A prober.
    pub const IS_PROBER: u8 = 4;
    /// The client is not connected to the region's ideal node.
    pub const NOT_IDEAL: u8 = 8;
}

/// One DERP frame in typed form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// 0x01, S→C: the server's public key after the magic.
    ServerKey { key: NodePublic },
    /// 0x02, C→S: the client's key and `nonce || box(JSON ClientInfo)`.
    ClientInfo { key: NodePublic, sealed: Bytes },
    /// 0x03, S→C: `nonce || box(JSON ServerInfo)`.
    ServerInfo { sealed: Bytes },
    /// 0x04, C→S: a packet for `dst`.
    SendPacket { dst: NodePublic, packet: Bytes },
    /// 0x05, S→C: a packet from `src`.
    RecvPacket { src: NodePublic, packet: Bytes },
    /// 0x06, S→C: keep-alive, no payload.
    KeepAlive,
    /// 0x07, C→S: whether this server is the client's home.
    NotePreferred { preferred: bool },
    /// 0x08, S→C: `peer` is gone.
    PeerGone {
        peer: NodePublic,
        reason: PeerGoneReason,
    },
    /// 0x09, S→mesh watcher: `peer` connected. `endpoint` is `None` when the
    /// frame carries no address (old servers) or the zero address.
    PeerPresent {
        peer: NodePublic,
        endpoint: Option<SocketAddr>,
        flags: u8,
    },
    /// 0x0a, mesh→S: a packet from `src` (on another server) for `dst`.
    ForwardPacket {
        src: NodePublic,
        dst: NodePublic,
        packet: Bytes,
    },
    /// 0x10, mesh→S: subscribe to PeerPresent/PeerGone.
    WatchConns,
    /// 0x11, mesh→S: close every connection of `peer`.
    ClosePeer { peer: NodePublic },
    /// 0x12, both: ping with 8 bytes of data.
    Ping { data: [u8; 8] },
    /// 0x13, both: the data of the ping being answered.
    Pong { data: [u8; 8] },
    /// 0x14, S→C: a health problem text; empty clears it.
    Health { problem: String },
    /// 0x15, S→C: the server is restarting.
    Restarting {
        reconnect_in_ms: u32,
        try_for_ms: u32,
    },
}

fn key_at(p: &[u8], at: usize) -> NodePublic {
    let mut k = [0u8; KEY_LEN];
    k.copy_from_slice(&p[at..at + KEY_LEN]);
    NodePublic(k)
}

fn eight(p: &[u8]) -> [u8; 8] {
    let mut d = [0u8; 8];
    d.copy_from_slice(&p[..8]);
    d
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

impl Frame {
    /// The type byte of this frame.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Frame::ServerKey { .. } => FrameType::SERVER_KEY,
            Frame::ClientInfo { .. } => FrameType::CLIENT_INFO,
            Frame::ServerInfo { .. } => FrameType::SERVER_INFO,
            Frame::SendPacket { .. } => FrameType::SEND_PACKET,
            Frame::RecvPacket { .. } => FrameType::RECV_PACKET,
            Frame::KeepAlive => FrameType::KEEP_ALIVE,
            Frame::NotePreferred { .. } => FrameType::NOTE_PREFERRED,
            Frame::PeerGone { .. } => FrameType::PEER_GONE,
            Frame::PeerPresent { .. } => FrameType::PEER_PRESENT,
            Frame::ForwardPacket { .. } => FrameType::FORWARD_PACKET,
            Frame::WatchConns => FrameType::WATCH_CONNS,
            Frame::ClosePeer { .. } => FrameType::CLOSE_PEER,
            Frame::Ping { .. } => FrameType::PING,
            Frame::Pong { .. } => FrameType::PONG,
            Frame::Health { .. } => FrameType::HEALTH,
            Frame::Restarting { .. } => FrameType::RESTARTING,
        }
    }

    /// Length of the payload [`Frame::encode`] writes.
    pub fn payload_len(&self) -> usize {
        match self {
            Frame::ServerKey { .. } => MAGIC.len() + KEY_LEN,
            Frame::ClientInfo { sealed, .. } => KEY_LEN + sealed.len(),
            Frame::ServerInfo { sealed } => sealed.len(),
            Frame::SendPacket { packet, .. } | Frame::RecvPacket { packet, .. } => {
                KEY_LEN + packet.len()
            }
            Frame::ForwardPacket { packet, .. } => 2 * KEY_LEN + packet.len(),
            Frame::KeepAlive | Frame::WatchConns => 0,
            Frame::NotePreferred { .. } => 1,
            Frame::PeerGone { .. } => KEY_LEN + 1,
            Frame::PeerPresent {
                endpoint, flags, ..
            } => {
                if endpoint.is_none() && *flags == 0 {
                    KEY_LEN
                } else {
                    KEY_LEN + 16 + 2 + 1
                }
            }
            Frame::ClosePeer { .. } => KEY_LEN,
            Frame::Ping { .. } | Frame::Pong { .. } | Frame::Restarting { .. } => 8,
            Frame::Health { problem } => problem.len(),
        }
    }

    /// Append the frame (header and payload) to `out`.
    ///
    /// Encoding never fails; a frame whose payload breaks the limits of its type
    /// (e.g. a packet over [`MAX_PACKET_SIZE`]) is written anyway and will be
    /// refused by the receiver. Use [`Frame::check_limits`] before sending
    /// data that came from elsewhere.
    pub fn encode(&self, out: &mut BytesMut) {
        let len = self.payload_len();
        out.reserve(HEADER_LEN + len);
        out.put_u8(self.frame_type().0);
        out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
        match self {
            Frame::ServerKey { key } => {
                out.put_slice(&MAGIC);
                out.put_slice(key.as_bytes());
            }
            Frame::ClientInfo { key, sealed } => {
                out.put_slice(key.as_bytes());
                out.put_slice(sealed);
            }
            Frame::ServerInfo { sealed } => out.put_slice(sealed),
            Frame::SendPacket { dst: k, packet } | Frame::RecvPacket { src: k, packet } => {
                out.put_slice(k.as_bytes());
                out.put_slice(packet);
            }
            Frame::ForwardPacket { src, dst, packet } => {
                out.put_slice(src.as_bytes());
                out.put_slice(dst.as_bytes());
                out.put_slice(packet);
            }
            Frame::KeepAlive | Frame::WatchConns => {}
            Frame::NotePreferred { preferred } => out.put_u8(u8::from(*preferred)),
            Frame::PeerGone { peer, reason } => {
                out.put_slice(peer.as_bytes());
                out.put_u8(reason.to_byte());
            }
            Frame::PeerPresent {
                peer,
                endpoint,
                flags,
            } => {
                out.put_slice(peer.as_bytes());
                if endpoint.is_some() || *flags != 0 {
                    let (ip, port) = match endpoint {
                        Some(sa) => {
                            let v6 = match sa.ip() {
                                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                                IpAddr::V6(v6) => v6,
                            };
                            (v6, sa.port())
                        }
                        None => (Ipv6Addr::UNSPECIFIED, 0),
                    };
                    out.put_slice(&ip.octets());
                    out.put_u16(port);
                    out.put_u8(*flags);
                }
            }
            Frame::ClosePeer { peer } => out.put_slice(peer.as_bytes()),
            Frame::Ping { data } | Frame::Pong { data } => out.put_slice(data),
            Frame::Health { problem } => out.put_slice(problem.as_bytes()),
            Frame::Restarting {
                reconnect_in_ms,
                try_for_ms,
            } => {
                out.put_u32(*reconnect_in_ms);
                out.put_u32(*try_for_ms);
            }
        }
    }

    /// The frame as a fresh byte vector.
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(HEADER_LEN + self.payload_len());
        self.encode(&mut b);
        b.freeze()
    }

    /// Check the frame against the limits the receiver enforces.
    pub fn check_limits(&self) -> Result<(), DerpError> {
        let t = self.frame_type();
        let len = self.payload_len();
        let (min, max) = payload_bounds(t).unwrap_or((0, MAX_FRAME_LEN));
        if len > max {
            return Err(DerpError::FrameTooLarge {
                frame_type: t,
                len: u32::try_from(len).unwrap_or(u32::MAX),
                max: u32::try_from(max).unwrap_or(u32::MAX),
            });
        }
        if len < min {
            return Err(DerpError::Malformed {
                frame_type: t,
                reason: "payload too short",
            });
        }
        Ok(())
    }

    /// Parse the payload of a frame of type `t`.
    ///
    /// Returns `Ok(None)` for an unknown type (the caller skips it, as Go does),
    /// and an error when the payload breaks the layout of a known type. Trailing
    /// bytes that the Go implementation ignores (after the ServerKey, after the
    /// PeerGone reason, after the 8 ping bytes) are ignored here too.
    pub fn parse(t: FrameType, payload: Bytes) -> Result<Option<Frame>, DerpError> {
        let Some((min, max)) = payload_bounds(t) else {
            return Ok(None);
        };
        let len = payload.len();
        if len > max {
            return Err(DerpError::FrameTooLarge {
                frame_type: t,
                len: u32::try_from(len).unwrap_or(u32::MAX),
                max: u32::try_from(max).unwrap_or(u32::MAX),
            });
        }
        if len < min {
            return Err(DerpError::Malformed {
                frame_type: t,
                reason: "payload too short",
            });
        }
        let p = &payload[..];
        let frame = match t {
            FrameType::SERVER_KEY => {
                if p[..MAGIC.len()] != MAGIC {
                    return Err(DerpError::BadMagic);
                }
                Frame::ServerKey {
                    key: key_at(p, MAGIC.len()),
                }
            }
            FrameType::CLIENT_INFO => Frame::ClientInfo {
                key: key_at(p, 0),
                sealed: payload.slice(KEY_LEN..),
            },
            FrameType::SERVER_INFO => Frame::ServerInfo { sealed: payload },
            FrameType::SEND_PACKET => Frame::SendPacket {
                dst: key_at(p, 0),
                packet: payload.slice(KEY_LEN..),
            },
            FrameType::RECV_PACKET => Frame::RecvPacket {
                src: key_at(p, 0),
                packet: payload.slice(KEY_LEN..),
            },
            FrameType::FORWARD_PACKET => Frame::ForwardPacket {
                src: key_at(p, 0),
                dst: key_at(p, KEY_LEN),
                packet: payload.slice(2 * KEY_LEN..),
            },
            FrameType::KEEP_ALIVE => Frame::KeepAlive,
            FrameType::NOTE_PREFERRED => Frame::NotePreferred {
                preferred: p[0] != 0,
            },
            FrameType::PEER_GONE => Frame::PeerGone {
                peer: key_at(p, 0),
                reason: p.get(KEY_LEN).map_or(PeerGoneReason::Disconnected, |b| {
                    PeerGoneReason::from_byte(*b)
                }),
            },
            FrameType::PEER_PRESENT => {
                let peer = key_at(p, 0);
                let mut endpoint = None;
                let mut flags = 0;
                if len >= KEY_LEN + 18 {
                    let mut ip = [0u8; 16];
                    ip.copy_from_slice(&p[KEY_LEN..KEY_LEN + 16]);
                    let port = u16::from_be_bytes([p[KEY_LEN + 16], p[KEY_LEN + 17]]);
                    let ip = unmap(IpAddr::V6(Ipv6Addr::from(ip)));
                    if !(ip.is_unspecified() && port == 0) {
                        endpoint = Some(SocketAddr::new(ip, port));
                    }
                    flags = p.get(KEY_LEN + 18).copied().unwrap_or(0);
                }
                Frame::PeerPresent {
                    peer,
                    endpoint,
                    flags,
                }
            }
            FrameType::WATCH_CONNS => Frame::WatchConns,
            FrameType::CLOSE_PEER => Frame::ClosePeer { peer: key_at(p, 0) },
            FrameType::PING => Frame::Ping { data: eight(p) },
            FrameType::PONG => Frame::Pong { data: eight(p) },
            FrameType::HEALTH => Frame::Health {
                problem: String::from_utf8_lossy(p).into_owned(),
            },
            FrameType::RESTARTING => Frame::Restarting {
                reconnect_in_ms: u32::from_be_bytes([p[0], p[1], p[2], p[3]]),
                try_for_ms: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
            },
            _ => return Ok(None),
        };
        Ok(Some(frame))
    }
}

/// Whether a packet payload is a disco message (starts with `"TS💬"`).
pub fn is_disco(packet: &[u8]) -> bool {
    packet.starts_with(&DISCO_MAGIC)
}
