//! A small async DERP client: for tests, probes (netcheck/doctor) and mesh dialing.
//!
//! It speaks the same wire protocol as Tailscale's client: HTTP/1.1 upgrade on
//! `/derp`, ServerKey, boxed ClientInfo, then frames. Reading and writing are
//! sequential on one `&mut self`; it is not meant to be a high-throughput client.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use ironscale_derp::{random_nonce, ClientInfo, Direction, Frame, FrameDecoder, ServerInfo};
use ironscale_keys::{NodePublic, PrivateKey};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::error::RelayError;

const MAX_RESPONSE_HEAD: usize = 16 << 10;

/// A connected, handshaken DERP client.
pub struct DerpClient<S> {
    io: S,
    decoder: FrameDecoder,
    rbuf: Box<[u8]>,
    key: PrivateKey,
    server_key: NodePublic,
    server_info: ServerInfo,
    pending: VecDeque<Frame>,
}

impl<S> std::fmt::Debug for DerpClient<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DerpClient")
            .field("key", &self.key.node_public())
            .field("server_key", &self.server_key)
            .finish_non_exhaustive()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl<S: AsyncRead + AsyncWrite + Unpin> DerpClient<S> {
    /// Upgrade `io` (a fresh TLS or TCP stream to the server) to DERP: send the
    /// HTTP request, expect 101, read ServerKey, send ClientInfo, and wait for
    /// ServerInfo. A server that refuses the client closes the connection
    /// instead, which shows up here as [`RelayError::Closed`].
    pub async fn handshake(
        mut io: S,
        host: &str,
        key: PrivateKey,
        info: ClientInfo,
    ) -> Result<Self, RelayError> {
        let req = format!(
            "GET /derp HTTP/1.1\r\nHost: {host}\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n"
        );
        io.write_all(req.as_bytes()).await?;
        io.flush().await?;
        let mut head = Vec::new();
        let mut buf = [0u8; 2048];
        let end = loop {
            if let Some(p) = find(&head, b"\r\n\r\n") {
                break p + 4;
            }
            if head.len() > MAX_RESPONSE_HEAD {
                return Err(RelayError::Handshake("HTTP response head too long".into()));
            }
            let n = io.read(&mut buf).await?;
            if n == 0 {
                return Err(RelayError::Closed);
            }
            head.extend_from_slice(&buf[..n]);
        };
        let status_line = head.split(|b| *b == b'\n').next().unwrap_or_default();
        if !status_line.starts_with(b"HTTP/1.1 101") {
            return Err(RelayError::Handshake(format!(
                "expected 101 Switching Protocols, got {:?}",
                String::from_utf8_lossy(status_line).trim()
            )));
        }
        let mut decoder = FrameDecoder::new(Direction::ServerToClient);
        decoder.feed(&head[end..]);
        let mut c = Self {
            io,
            decoder,
            rbuf: vec![0u8; 32 << 10].into_boxed_slice(),
            key,
            server_key: NodePublic::ZERO,
            server_info: ServerInfo::default(),
            pending: VecDeque::new(),
        };
        let Frame::ServerKey { key: server_key } = c.read_frame().await? else {
            return Err(RelayError::Handshake("first frame is not ServerKey".into()));
        };
        c.server_key = server_key;
        let nonce = random_nonce().ok_or_else(|| RelayError::Handshake("no randomness".into()))?;
        let ci = info.seal(&c.key, &server_key, nonce);
        c.send(&ci).await?;
        loop {
            match c.read_frame().await? {
                Frame::ServerInfo { sealed } => {
                    c.server_info = ServerInfo::open(&c.key, &server_key, &sealed)?;
                    break;
                }
                other => c.pending.push_back(other),
            }
        }
        Ok(c)
    }

    async fn read_frame(&mut self) -> Result<Frame, RelayError> {
        loop {
            if let Some(f) = self.decoder.next_frame()? {
                return Ok(f);
            }
            let n = self.io.read(&mut self.rbuf).await?;
            if n == 0 {
                return Err(RelayError::Closed);
            }
            self.decoder.feed(&self.rbuf[..n]);
        }
    }

    /// The next frame from the server (KeepAlive included).
    pub async fn recv(&mut self) -> Result<Frame, RelayError> {
        if let Some(f) = self.pending.pop_front() {
            return Ok(f);
        }
        self.read_frame().await
    }

    /// Send one frame (checked against the protocol limits first).
    pub async fn send(&mut self, frame: &Frame) -> Result<(), RelayError> {
        frame.check_limits()?;
        self.write_raw(&frame.to_bytes()).await
    }

    /// Write raw bytes (tests and diagnostics: malformed input on purpose).
    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), RelayError> {
        self.io.write_all(bytes).await?;
        self.io.flush().await?;
        Ok(())
    }

    pub async fn send_packet(&mut self, dst: NodePublic, packet: &[u8]) -> Result<(), RelayError> {
        self.send(&Frame::SendPacket {
            dst,
            packet: Bytes::copy_from_slice(packet),
        })
        .await
    }

    pub async fn note_preferred(&mut self, preferred: bool) -> Result<(), RelayError> {
        self.send(&Frame::NotePreferred { preferred }).await
    }

    pub async fn ping(&mut self, data: [u8; 8]) -> Result<(), RelayError> {
        self.send(&Frame::Ping { data }).await
    }

    /// This client's node key.
    pub fn public_key(&self) -> NodePublic {
        self.key.node_public()
    }

    /// The server's DERP key from its ServerKey frame.
    pub fn server_key(&self) -> NodePublic {
        self.server_key
    }

    pub fn server_info(&self) -> &ServerInfo {
        &self.server_info
    }

    /// The underlying stream.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }
}

impl DerpClient<TlsStream<TcpStream>> {
    /// Connect over TLS to `addr`, with SNI/Host `server_name`.
    pub async fn connect_tls(
        addr: SocketAddr,
        server_name: &str,
        tls: Arc<ClientConfig>,
        key: PrivateKey,
        info: ClientInfo,
    ) -> Result<Self, RelayError> {
        let tcp = TcpStream::connect(addr).await?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|e| RelayError::Handshake(format!("bad server name {server_name:?}: {e}")))?;
        let stream = TlsConnector::from(tls).connect(name, tcp).await?;
        Self::handshake(stream, server_name, key, info).await
    }
}

impl DerpClient<TcpStream> {
    /// Connect over plain HTTP (what `TS_DEBUG_USE_DERP_HTTP=1` clients do).
    pub async fn connect_plain(
        addr: SocketAddr,
        host: &str,
        key: PrivateKey,
        info: ClientInfo,
    ) -> Result<Self, RelayError> {
        let tcp = TcpStream::connect(addr).await?;
        let _ = tcp.set_nodelay(true);
        Self::handshake(tcp, host, key, info).await
    }
}

/// Accepts a server certificate by the SHA-256 of its leaf (like a DERPNode's
/// `CertName: "sha256-raw:<hex>"`), or any certificate (`InsecureForTests`).
/// Signatures are still checked, so the server must hold the key.
#[derive(Debug)]
struct PinnedVerifier {
    sha256_hex: Option<String>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.sha256_hex {
            Some(want)
                if !hex::encode(<sha2::Sha256 as sha2::Digest>::digest(end_entity))
                    .eq_ignore_ascii_case(want) =>
            {
                Err(rustls::Error::General(
                    "server certificate does not match the pinned SHA-256".into(),
                ))
            }
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn config_with(verifier: PinnedVerifier) -> Result<ClientConfig, RelayError> {
    let provider = verifier.provider.clone();
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// A client TLS config that accepts only a leaf certificate with this SHA-256
/// (hex, as returned by [`crate::self_signed`]). Name and validity period are
/// not checked.
pub fn pinned_tls_config(sha256_hex: &str) -> Result<ClientConfig, RelayError> {
    config_with(PinnedVerifier {
        sha256_hex: Some(sha256_hex.to_string()),
        provider: Arc::new(rustls::crypto::ring::default_provider()),
    })
}

/// A client TLS config that accepts any certificate (Tailscale's
/// `InsecureForTests`). Only for tests and diagnostics.
pub fn insecure_tls_config() -> Result<ClientConfig, RelayError> {
    config_with(PinnedVerifier {
        sha256_hex: None,
        provider: Arc::new(rustls::crypto::ring::default_provider()),
    })
}
