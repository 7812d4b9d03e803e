//! Tokio adapter for the sans-IO ts2021 transport in `ironscale-noise`.
//!
//! Dependencies (ironscale-control/Cargo.toml): `tokio` (io-util; `macros` and
//! `rt` for the tests), `ironscale-noise`, `ironscale-keys`.
//!
//! [`accept`] runs the server side of the handshake on a raw (upgraded) stream:
//! it writes the 51-byte response plus the optional early payload in one write
//! and returns a [`NoiseStream`], an `AsyncRead + AsyncWrite` byte stream over
//! Noise records on which HTTP/2 (h2c, prior knowledge) runs.
//! [`NoiseStream::connect`] and [`NoiseStream::read_early_payload`] are the
//! client side, for tests and in-process clients.

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use ironscale_keys::{MachinePublic, PrivateKey};
use ironscale_noise::{
    early_payload, early_payload_json_len, error_message, parse_initiation, respond, Initiator,
    NoiseError, RecordDecoder, RecordEncoder, EARLY_PAYLOAD_HEADER_LEN, HEADER_LEN,
    MAX_EARLY_PAYLOAD_JSON_LEN, MAX_PLAINTEXT_LEN, MSG_TYPE_ERROR, MSG_TYPE_RESPONSE, RESPONSE_LEN,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Most plaintext sealed per `poll_write` call (16 full records, ~64 KiB).
const WRITE_CHUNK: usize = 16 * MAX_PLAINTEXT_LEN;
/// Ciphertext read from the inner stream per `poll_read` of it.
const READ_CHUNK: usize = 16 * 1024;

/// A remembered fatal error, replayed (as a fresh `io::Error`) on every later call.
#[derive(Debug, Clone)]
struct Failure {
    kind: io::ErrorKind,
    msg: String,
}

impl Failure {
    fn of(e: &io::Error) -> Self {
        Failure {
            kind: e.kind(),
            msg: e.to_string(),
        }
    }
    fn to_io(&self) -> io::Error {
        io::Error::new(
            self.kind,
            format!("noise stream unusable after an earlier error: {}", self.msg),
        )
    }
}

fn noise_io(e: NoiseError) -> io::Error {
    match e {
        NoiseError::Io(e) => e,
        e => io::Error::new(io::ErrorKind::InvalidData, e),
    }
}

/// A byte stream carried in ts2021 Noise records over `S`.
///
/// Writes are sealed into records of at most 4096 bytes; a write returns once its
/// data is sealed, and `poll_flush` pushes out what the inner stream has not taken
/// yet. After any write error every later write (and flush) fails; after any read
/// error (I/O, bad record, failed decryption) every later read fails.
pub struct NoiseStream<S> {
    inner: S,
    enc: RecordEncoder,
    dec: RecordDecoder,
    /// Sealed records not yet accepted by `inner`: `wbuf[wpos..]`.
    wbuf: Vec<u8>,
    wpos: usize,
    write_failed: Option<Failure>,
    /// Decrypted plaintext not yet handed out: `rbuf[rpos..]`.
    rbuf: Vec<u8>,
    rpos: usize,
    scratch: Box<[u8]>,
    read_eof: bool,
    read_failed: Option<Failure>,
}

impl<S> fmt::Debug for NoiseStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoiseStream")
            .field("enc", &self.enc)
            .field("dec", &self.dec)
            .field("pending_write", &(self.wbuf.len() - self.wpos))
            .field("buffered_read", &(self.rbuf.len() - self.rpos))
            .field("write_failed", &self.write_failed.is_some())
            .field("read_failed", &self.read_failed.is_some())
            .finish_non_exhaustive()
    }
}

/// Server side of ts2021 on a stream whose initiation message (`init_bytes`, the
/// decoded `X-Tailscale-Handshake` header) was already received.
///
/// Writes the handshake response (and, if `send_early_payload`, the early payload
/// with a fresh random challenge key) in one write, then returns the Noise stream
/// and the client's authenticated machine key. A malformed initiation is answered
/// with an error message (best effort) before the error is returned.
pub async fn accept<S>(
    mut stream: S,
    server_key: &PrivateKey,
    init_bytes: &[u8],
    send_early_payload: bool,
) -> Result<(NoiseStream<S>, MachinePublic), NoiseError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let init = match parse_initiation(init_bytes) {
        Ok(init) => init,
        Err(e) => {
            if let Some(hint) = e.peer_hint() {
                // Only a hint for the client's log: ignore failures to send it.
                let _ = stream.write_all(&error_message(hint)).await;
                let _ = stream.flush().await;
            }
            return Err(e);
        }
    };
    let (mut out, client, transport) = respond(server_key, &init)?;
    let (mut enc, dec) = transport.split();
    if send_early_payload {
        let challenge = PrivateKey::generate().challenge_public();
        enc.seal(&early_payload(&challenge), &mut out)?;
    }
    stream.write_all(&out).await?;
    stream.flush().await?;
    Ok((NoiseStream::new(stream, enc, dec), client))
}

impl<S> NoiseStream<S> {
    /// Wrap `inner` with the two halves of an established transport.
    pub fn new(inner: S, enc: RecordEncoder, dec: RecordDecoder) -> Self {
        NoiseStream {
            inner,
            enc,
            dec,
            wbuf: Vec::new(),
            wpos: 0,
            write_failed: None,
            rbuf: Vec::new(),
            rpos: 0,
            scratch: vec![0u8; READ_CHUNK].into_boxed_slice(),
            read_eof: false,
            read_failed: None,
        }
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn buffered(&self) -> &[u8] {
        &self.rbuf[self.rpos..]
    }

    fn consume(&mut self, n: usize) {
        self.rpos += n;
        if self.rpos >= self.rbuf.len() {
            self.rbuf.clear();
            self.rpos = 0;
        }
    }

    fn fail_read(&mut self, e: io::Error) -> io::Error {
        self.read_failed = Some(Failure::of(&e));
        e
    }

    fn fail_write(&mut self, e: io::Error) -> io::Error {
        self.write_failed = Some(Failure::of(&e));
        e
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> NoiseStream<S> {
    /// Client side: send nothing (the initiation went in the HTTP upgrade request),
    /// read the server's handshake response (or error message) from `stream` and
    /// finish the handshake.
    pub async fn connect(mut stream: S, initiator: Initiator) -> Result<Self, NoiseError> {
        let mut hdr = [0u8; HEADER_LEN];
        stream.read_exact(&mut hdr).await?;
        let body_len = match hdr[0] {
            MSG_TYPE_RESPONSE => RESPONSE_LEN - HEADER_LEN,
            MSG_TYPE_ERROR => usize::from(u16::from_be_bytes([hdr[1], hdr[2]])),
            // Let `finish` report the bad type.
            _ => 0,
        };
        let mut msg = hdr.to_vec();
        msg.resize(HEADER_LEN + body_len, 0);
        stream.read_exact(&mut msg[HEADER_LEN..]).await?;
        let (enc, dec) = initiator.finish(&msg)?.split();
        Ok(NoiseStream::new(stream, enc, dec))
    }

    /// Client side: consume the server's early payload if the stream starts with one
    /// and return its JSON; otherwise leave the stream untouched and return `None`.
    pub async fn read_early_payload(&mut self) -> io::Result<Option<Vec<u8>>> {
        if !self.fill_to(EARLY_PAYLOAD_HEADER_LEN).await? {
            return Ok(None);
        }
        let mut hdr = [0u8; EARLY_PAYLOAD_HEADER_LEN];
        hdr.copy_from_slice(&self.buffered()[..EARLY_PAYLOAD_HEADER_LEN]);
        let Some(len) = early_payload_json_len(&hdr) else {
            return Ok(None);
        };
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > MAX_EARLY_PAYLOAD_JSON_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("early payload of {len} bytes is too large"),
            ));
        }
        if !self.fill_to(EARLY_PAYLOAD_HEADER_LEN + len).await? {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let json =
            self.buffered()[EARLY_PAYLOAD_HEADER_LEN..EARLY_PAYLOAD_HEADER_LEN + len].to_vec();
        self.consume(EARLY_PAYLOAD_HEADER_LEN + len);
        Ok(Some(json))
    }

    /// Read until at least `n` plaintext bytes are buffered; `false` on a clean EOF
    /// before that.
    async fn fill_to(&mut self, n: usize) -> io::Result<bool> {
        while self.buffered().len() < n {
            if !poll_fn(|cx| self.poll_fill(cx)).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Read one chunk of ciphertext from the inner stream and decrypt what it
    /// completes into `rbuf`. `Ok(false)` means a clean end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        if let Some(f) = &self.read_failed {
            return Poll::Ready(Err(f.to_io()));
        }
        if self.read_eof {
            return Poll::Ready(Ok(false));
        }
        let mut rb = ReadBuf::new(&mut self.scratch);
        match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(self.fail_read(e))),
            Poll::Ready(Ok(())) => {}
        }
        let got = rb.filled().len();
        if got == 0 {
            self.read_eof = true;
            if self.dec.has_partial() {
                let e = io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "stream ended inside a noise record",
                );
                return Poll::Ready(Err(self.fail_read(e)));
            }
            return Poll::Ready(Ok(false));
        }
        if self.rpos > 0 {
            // Compact before appending so the buffer does not grow without bound.
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
        if let Err(e) = self.dec.push(&self.scratch[..got], &mut self.rbuf) {
            let e = self.fail_read(noise_io(e));
            // Records before the bad one are genuine: hand them out first; the
            // failure is reported once they are consumed.
            if self.buffered().is_empty() {
                return Poll::Ready(Err(e));
            }
        }
        Poll::Ready(Ok(true))
    }

    /// Write pending ciphertext to the inner stream until it has taken all of it.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.wpos < self.wbuf.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.wbuf[self.wpos..]) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    let e =
                        io::Error::new(io::ErrorKind::WriteZero, "inner stream accepted no bytes");
                    return Poll::Ready(Err(self.fail_write(e)));
                }
                Poll::Ready(Ok(n)) => self.wpos += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(self.fail_write(e))),
            }
        }
        self.wbuf.clear();
        self.wpos = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for NoiseStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            let avail = this.buffered();
            if !avail.is_empty() {
                let n = avail.len().min(buf.remaining());
                buf.put_slice(&avail[..n]);
                this.consume(n);
                return Poll::Ready(Ok(()));
            }
            match this.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                // Clean EOF: read nothing.
                Poll::Ready(Ok(false)) => return Poll::Ready(Ok(())),
                // Maybe only part of a record, or an empty record: go round.
                Poll::Ready(Ok(true)) => {}
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for NoiseStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(f) = &this.write_failed {
            return Poll::Ready(Err(f.to_io()));
        }
        // Bounded buffering: take new data only once the previous batch is out.
        match this.poll_drain(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other.map(|r| r.map(|()| 0)),
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = buf.len().min(WRITE_CHUNK);
        if let Err(e) = this.enc.seal(&buf[..n], &mut this.wbuf) {
            return Poll::Ready(Err(this.fail_write(noise_io(e))));
        }
        // Hand it to the inner stream right away if it takes it; if not, the data
        // is accepted all the same and goes out on the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(f) = &this.write_failed {
            return Poll::Ready(Err(f.to_io()));
        }
        match this.poll_drain(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(this.fail_write(e))),
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(f) = &this.write_failed {
            return Poll::Ready(Err(f.to_io()));
        }
        match this.poll_drain(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        match Pin::new(&mut this.inner).poll_shutdown(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(this.fail_write(e))),
            other => other,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ironscale_noise::{RecordEncoder, Transport, INITIATION_LEN};
    use tokio::io::{duplex, DuplexStream};

    const VERSION: u16 = 130;

    fn keys() -> (PrivateKey, PrivateKey) {
        (
            PrivateKey::from_bytes([1; 32]),
            PrivateKey::from_bytes([2; 32]),
        )
    }

    /// Handshake over a duplex pipe; returns (client stream, server stream, client key seen).
    async fn pair(
        early: bool,
        cap: usize,
    ) -> (
        NoiseStream<DuplexStream>,
        NoiseStream<DuplexStream>,
        MachinePublic,
    ) {
        let (server_key, client_key) = keys();
        let (c_io, s_io) = duplex(cap);
        let (initiator, init) =
            Initiator::new(&client_key, &server_key.machine_public(), VERSION).unwrap();
        let server = tokio::spawn(async move { accept(s_io, &server_key, &init, early).await });
        let mut client = NoiseStream::connect(c_io, initiator).await.unwrap();
        let (server, seen) = server.await.unwrap().unwrap();
        assert_eq!(seen, client_key.machine_public());
        // Without an early payload the client would wait for the server's first
        // bytes (its HTTP/2 SETTINGS), so only look when one was sent.
        if early {
            let json = client.read_early_payload().await.unwrap().unwrap();
            let json = String::from_utf8(json).unwrap();
            assert!(
                json.starts_with("{\"nodeKeyChallenge\":\"chalpub:"),
                "{json}"
            );
            assert!(
                json.ends_with("\"}") && json.len() == 21 + 8 + 64 + 2,
                "{json}"
            );
        }
        (client, server, seen)
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[tokio::test]
    async fn handshake_early_payload_and_data_both_ways() {
        for early in [true, false] {
            // A small pipe forces partial writes and reads of the inner stream.
            let (mut client, mut server, _) = pair(early, 1000).await;
            let data = pattern(200_000);
            let expect = data.clone();
            let writer = tokio::spawn(async move {
                client.write_all(&data).await.unwrap();
                client.flush().await.unwrap();
                let mut back = vec![0u8; 6];
                client.read_exact(&mut back).await.unwrap();
                assert_eq!(&back, b"thanks");
                client.shutdown().await.unwrap();
                client
            });
            let mut got = vec![0u8; expect.len()];
            server.read_exact(&mut got).await.unwrap();
            assert_eq!(got, expect);
            server.write_all(b"thanks").await.unwrap();
            server.flush().await.unwrap();
            // After the client shuts down, the server sees a clean EOF.
            let mut rest = Vec::new();
            server.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty());
            writer.await.unwrap();
        }
    }

    #[tokio::test]
    async fn without_early_payload_first_bytes_stay_readable() {
        let (mut client, mut server, _) = pair(false, 64 * 1024).await;
        // Nine bytes that look like an HTTP/2 SETTINGS header, not the magic.
        server
            .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0, b'!'])
            .await
            .unwrap();
        server.flush().await.unwrap();
        assert!(client.read_early_payload().await.unwrap().is_none());
        let mut got = [0u8; 10];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [0, 0, 0, 4, 0, 0, 0, 0, 0, b'!']);
    }

    #[tokio::test]
    async fn bad_initiation_gets_an_error_message() {
        let (server_key, client_key) = keys();
        let (mut c_io, s_io) = duplex(4096);
        let (_, mut init) =
            Initiator::new(&client_key, &server_key.machine_public(), VERSION).unwrap();
        assert_eq!(init.len(), INITIATION_LEN);
        init[2] = 7;
        let err = accept(s_io, &server_key, &init, true).await.unwrap_err();
        assert!(matches!(err, NoiseError::UnexpectedType { got: 7, .. }));
        let mut got = Vec::new();
        c_io.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, error_message("unexpected handshake message type"));
        // A client sees it as a server error.
        let (initiator, _) =
            Initiator::new(&client_key, &server_key.machine_public(), VERSION).unwrap();
        let (c2, mut s2) = duplex(4096);
        s2.write_all(&got).await.unwrap();
        let e = NoiseStream::connect(c2, initiator).await.unwrap_err();
        assert!(
            matches!(e, NoiseError::ServerError(t) if t == "unexpected handshake message type")
        );
    }

    /// An inner stream that takes at most 7 bytes per write, returns Pending on
    /// every other call, and can be told to fail writes.
    struct Trickle {
        written: Vec<u8>,
        calls: usize,
        fail_from_call: Option<usize>,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            this.calls += 1;
            if this.fail_from_call.is_some_and(|n| this.calls >= n) {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionReset, "boom")));
            }
            if this.calls.is_multiple_of(2) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = buf.len().min(7);
            this.written.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn transports() -> (Transport, Transport) {
        let t = Transport::new([5; 32], [6; 32]);
        let peer = Transport::new([6; 32], [5; 32]);
        (t, peer)
    }

    #[tokio::test]
    async fn partial_writes_of_the_inner_stream_lose_nothing() {
        let (t, mut peer) = transports();
        let (enc, dec) = t.split();
        let inner = Trickle {
            written: Vec::new(),
            calls: 0,
            fail_from_call: None,
        };
        let mut s = NoiseStream::new(inner, enc, dec);
        let data = pattern(30_000);
        for chunk in data.chunks(1234) {
            s.write_all(chunk).await.unwrap();
        }
        s.write_all(b"").await.unwrap();
        s.flush().await.unwrap();
        let mut out = Vec::new();
        peer.decode(&s.get_ref().written, &mut out).unwrap();
        assert_eq!(out, data);
    }

    #[tokio::test]
    async fn a_write_error_is_sticky() {
        // The inner stream fails on its first write.
        let (t, _) = transports();
        let (enc, dec) = t.split();
        let inner = Trickle {
            written: Vec::new(),
            calls: 0,
            fail_from_call: Some(1),
        };
        let mut s = NoiseStream::new(inner, enc, dec);
        let first = s.write(&pattern(10_000)).await.unwrap_err();
        assert_eq!(first.kind(), io::ErrorKind::ConnectionReset);
        assert!(!first.to_string().contains("earlier error"), "{first}");
        for _ in 0..2 {
            let again = s.write(b"x").await.unwrap_err();
            assert_eq!(again.kind(), io::ErrorKind::ConnectionReset);
            assert!(again.to_string().contains("earlier error"), "{again}");
        }
        assert!(s.flush().await.is_err());
        assert!(s.shutdown().await.is_err());

        // The inner stream fails while accepted data is still pending: the flush
        // reports it, and later writes fail too.
        let (t, _) = transports();
        let (enc, dec) = t.split();
        let inner = Trickle {
            written: Vec::new(),
            calls: 0,
            fail_from_call: Some(3),
        };
        let mut s = NoiseStream::new(inner, enc, dec);
        s.write_all(&pattern(10_000)).await.unwrap();
        let e = s.flush().await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
        let e = s.write(b"x").await.unwrap_err();
        assert!(e.to_string().contains("earlier error"), "{e}");
        assert_eq!(s.get_ref().written.len(), 7);
    }

    fn sealed(enc: &mut RecordEncoder, parts: &[&[u8]]) -> Vec<u8> {
        let mut wire = Vec::new();
        for p in parts {
            enc.seal_record(p, &mut wire).unwrap();
        }
        wire
    }

    #[tokio::test]
    async fn tampered_record_fails_the_read_side_after_genuine_data() {
        let (t, peer) = transports();
        let (enc, dec) = t.split();
        let (mut peer_enc, _) = peer.split();
        let mut wire = sealed(&mut peer_enc, &[b"genuine", b"", b"forged"]);
        let last = wire.len() - 1;
        wire[last] ^= 1;
        let (mut far, near) = duplex(64 * 1024);
        far.write_all(&wire).await.unwrap();
        let mut s = NoiseStream::new(near, enc, dec);
        let mut got = [0u8; 7];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"genuine");
        let e = s.read(&mut [0u8; 16]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("decrypt"), "{e}");
        let e = s.read(&mut [0u8; 16]).await.unwrap_err();
        assert!(e.to_string().contains("earlier error"), "{e}");
        // The write side is unaffected by a read failure.
        s.write_all(b"still ok").await.unwrap();
    }

    #[tokio::test]
    async fn eof_inside_a_record_is_an_error_and_clean_eof_is_not() {
        let (t, peer) = transports();
        let (enc, dec) = t.split();
        let (mut peer_enc, _) = peer.split();
        let wire = sealed(&mut peer_enc, &[b"whole", b"cut short"]);
        let (mut far, near) = duplex(64 * 1024);
        far.write_all(&wire[..wire.len() - 4]).await.unwrap();
        drop(far);
        let mut s = NoiseStream::new(near, enc, dec);
        let mut got = Vec::new();
        let e = s.read_to_end(&mut got).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(got, b"whole");

        let (t, peer) = transports();
        let (enc, dec) = t.split();
        let (mut peer_enc, _) = peer.split();
        let wire = sealed(&mut peer_enc, &[b"whole", b""]);
        let (mut far, near) = duplex(64 * 1024);
        far.write_all(&wire).await.unwrap();
        drop(far);
        let mut s = NoiseStream::new(near, enc, dec);
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"whole");
    }
}
