//! Tailscale's transport record layer (protocol reference §2.4).
//!
//! `record = 0x04 || u16 BE ciphertext length || ChaCha20-Poly1305(k, nonce, ad = "", plaintext)`
//! with `nonce = 4 zero bytes || u64 BIG-endian counter` — not the little-endian
//! layout of standard Noise, which is why this is not `snow`'s transport mode.

use std::fmt;

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce, Tag};

use crate::{
    NoiseError, HEADER_LEN, MAX_CIPHERTEXT_LEN, MAX_PLAINTEXT_LEN, MSG_TYPE_RECORD, TAG_LEN,
};

/// The 12-byte ChaCha20-Poly1305 nonce for record number `counter`:
/// four zero bytes followed by the counter in big-endian order.
pub fn record_nonce(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    n
}

/// Validate a 3-byte record header and return the announced ciphertext length.
fn header_len(h: &[u8]) -> Result<usize, NoiseError> {
    if h[0] != MSG_TYPE_RECORD {
        return Err(NoiseError::BadRecordType(h[0]));
    }
    let len = usize::from(u16::from_be_bytes([h[1], h[2]]));
    if len > MAX_CIPHERTEXT_LEN {
        return Err(NoiseError::RecordTooLong(len));
    }
    Ok(len)
}

/// One direction's cipher state: key plus the next counter value.
struct CipherState {
    cipher: ChaCha20Poly1305,
    counter: u64,
}

impl CipherState {
    fn new(key: [u8; 32]) -> Self {
        CipherState {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
            counter: 0,
        }
    }

    /// Take the next nonce. `u64::MAX` is never used: reaching it is fatal.
    fn next_nonce(&mut self) -> Result<Nonce, NoiseError> {
        if self.counter == u64::MAX {
            return Err(NoiseError::NonceExhausted);
        }
        let n = record_nonce(self.counter);
        self.counter += 1;
        Ok(*Nonce::from_slice(&n))
    }
}

/// The sending half of a transport: turns plaintext into records.
pub struct RecordEncoder {
    state: CipherState,
    dead: bool,
}

impl fmt::Debug for RecordEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordEncoder")
            .field("key", &"<redacted>")
            .field("counter", &self.state.counter)
            .field("dead", &self.dead)
            .finish()
    }
}

impl RecordEncoder {
    /// An encoder for `key`, starting at record 0.
    pub fn new(key: [u8; 32]) -> Self {
        RecordEncoder {
            state: CipherState::new(key),
            dead: false,
        }
    }

    #[cfg(test)]
    pub(crate) fn set_counter(&mut self, counter: u64) {
        self.state.counter = counter;
    }

    /// Number of records sealed so far (the next nonce counter).
    pub fn records_sealed(&self) -> u64 {
        self.state.counter
    }

    /// True once an error has killed this encoder.
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// Seal `plaintext` into as many records as needed (each carrying at most
    /// [`MAX_PLAINTEXT_LEN`] bytes) and append them to `out`. Empty input appends
    /// nothing; use [`RecordEncoder::seal_record`] to send an empty record.
    pub fn seal(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), NoiseError> {
        if self.dead {
            return Err(NoiseError::Dead);
        }
        let records = plaintext.len().div_ceil(MAX_PLAINTEXT_LEN);
        out.reserve(plaintext.len() + records * (HEADER_LEN + TAG_LEN));
        for chunk in plaintext.chunks(MAX_PLAINTEXT_LEN) {
            self.seal_record(chunk, out)?;
        }
        Ok(())
    }

    /// Seal exactly one record (possibly empty) carrying `chunk` and append it to `out`.
    pub fn seal_record(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), NoiseError> {
        let r = self.seal_record_inner(chunk, out);
        if r.is_err() {
            self.dead = true;
        }
        r
    }

    fn seal_record_inner(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), NoiseError> {
        if self.dead {
            return Err(NoiseError::Dead);
        }
        if chunk.len() > MAX_PLAINTEXT_LEN {
            return Err(NoiseError::PlaintextTooLong(chunk.len()));
        }
        let nonce = self.state.next_nonce()?;
        let ct_len = u16::try_from(chunk.len() + TAG_LEN)
            .map_err(|_| NoiseError::PlaintextTooLong(chunk.len()))?;
        let record_start = out.len();
        out.push(MSG_TYPE_RECORD);
        out.extend_from_slice(&ct_len.to_be_bytes());
        let body = out.len();
        out.extend_from_slice(chunk);
        match self
            .state
            .cipher
            .encrypt_in_place_detached(&nonce, b"", &mut out[body..])
        {
            Ok(tag) => {
                out.extend_from_slice(&tag);
                Ok(())
            }
            Err(_) => {
                out.truncate(record_start);
                Err(NoiseError::Encrypt)
            }
        }
    }
}

/// The receiving half of a transport: a sans-IO decoder that is fed arbitrary
/// chunks of the ciphertext byte stream and yields the decrypted plaintext.
///
/// It buffers at most one incomplete record (< 4096 bytes). Headers are checked as
/// soon as their three bytes arrive, so a bad type byte or an oversized length is
/// reported without waiting for the body.
pub struct RecordDecoder {
    state: CipherState,
    /// Bytes of an incomplete record (header included).
    partial: Vec<u8>,
    dead: bool,
}

impl fmt::Debug for RecordDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordDecoder")
            .field("key", &"<redacted>")
            .field("counter", &self.state.counter)
            .field("partial_len", &self.partial.len())
            .field("dead", &self.dead)
            .finish()
    }
}

impl RecordDecoder {
    /// A decoder for `key`, expecting record 0 first.
    pub fn new(key: [u8; 32]) -> Self {
        RecordDecoder {
            state: CipherState::new(key),
            partial: Vec::new(),
            dead: false,
        }
    }

    #[cfg(test)]
    pub(crate) fn set_counter(&mut self, counter: u64) {
        self.state.counter = counter;
    }

    /// Number of records opened so far (the next nonce counter).
    pub fn records_opened(&self) -> u64 {
        self.state.counter
    }

    /// True once an error has killed this decoder.
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// True if bytes of an incomplete record are buffered. At end of stream this
    /// means the peer cut a record short.
    pub fn has_partial(&self) -> bool {
        !self.partial.is_empty()
    }

    /// Feed the next chunk of the ciphertext stream. The plaintext of every record
    /// completed by it is appended to `out`; the number of plaintext bytes appended
    /// is returned (0 is normal: an incomplete or an empty record).
    ///
    /// On error the decoder is dead. `out` then still holds the plaintext of the
    /// records that authenticated before the bad one (they are genuine).
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<usize, NoiseError> {
        if self.dead {
            return Err(NoiseError::Dead);
        }
        let start = out.len();
        match self.push_inner(data, out) {
            Ok(()) => Ok(out.len() - start),
            Err(e) => {
                self.dead = true;
                self.partial = Vec::new();
                Err(e)
            }
        }
    }

    fn push_inner(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<(), NoiseError> {
        // First complete a record left over from earlier calls.
        if !self.partial.is_empty() {
            if self.partial.len() < HEADER_LEN {
                let take = (HEADER_LEN - self.partial.len()).min(data.len());
                self.partial.extend_from_slice(&data[..take]);
                data = &data[take..];
                if self.partial.len() < HEADER_LEN {
                    return Ok(());
                }
            }
            let total = HEADER_LEN + header_len(&self.partial[..HEADER_LEN])?;
            let take = (total - self.partial.len()).min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() < total {
                return Ok(());
            }
            let record = std::mem::take(&mut self.partial);
            self.open_body(&record[HEADER_LEN..], out)?;
            // Keep the allocation for the next partial record.
            self.partial = record;
            self.partial.clear();
        }
        // Then every complete record straight from the input, without copying.
        while data.len() >= HEADER_LEN {
            let len = header_len(&data[..HEADER_LEN])?;
            if data.len() < HEADER_LEN + len {
                break;
            }
            self.open_body(&data[HEADER_LEN..HEADER_LEN + len], out)?;
            data = &data[HEADER_LEN + len..];
        }
        // Whatever is left is the start of one record; its header (if complete)
        // has been checked above.
        self.partial.extend_from_slice(data);
        Ok(())
    }

    /// Open exactly one complete record (header included) that the caller framed
    /// itself, appending its plaintext to `out`. Do not mix with [`Self::push`]
    /// while a partial record is buffered.
    pub fn open_record(&mut self, record: &[u8], out: &mut Vec<u8>) -> Result<usize, NoiseError> {
        if self.dead {
            return Err(NoiseError::Dead);
        }
        let start = out.len();
        let r = (|| {
            if record.len() < HEADER_LEN {
                return Err(NoiseError::Truncated {
                    what: "transport record",
                    need: HEADER_LEN,
                    got: record.len(),
                });
            }
            let announced = header_len(&record[..HEADER_LEN])?;
            let got = record.len() - HEADER_LEN;
            if got != announced {
                return Err(NoiseError::RecordSize { announced, got });
            }
            self.open_body(&record[HEADER_LEN..], out)
        })();
        match r {
            Ok(()) => Ok(out.len() - start),
            Err(e) => {
                self.dead = true;
                Err(e)
            }
        }
    }

    /// Decrypt one record body (ciphertext + tag), appending the plaintext to `out`.
    fn open_body(&mut self, ct: &[u8], out: &mut Vec<u8>) -> Result<(), NoiseError> {
        if ct.len() < TAG_LEN {
            return Err(NoiseError::RecordTooShort(ct.len()));
        }
        let nonce = self.state.next_nonce()?;
        let (msg, tag) = ct.split_at(ct.len() - TAG_LEN);
        let start = out.len();
        out.extend_from_slice(msg);
        let tag = Tag::from_slice(tag);
        if self
            .state
            .cipher
            .decrypt_in_place_detached(&nonce, b"", &mut out[start..], tag)
            .is_err()
        {
            out.truncate(start);
            return Err(NoiseError::Decrypt);
        }
        Ok(())
    }
}

/// Both directions of an established ts2021 connection.
///
/// Any error from any method kills both directions.
#[derive(Debug)]
pub struct Transport {
    enc: RecordEncoder,
    dec: RecordDecoder,
}

impl Transport {
    /// A transport that seals with `send_key` and opens with `recv_key`.
    pub fn new(send_key: [u8; 32], recv_key: [u8; 32]) -> Self {
        Transport {
            enc: RecordEncoder::new(send_key),
            dec: RecordDecoder::new(recv_key),
        }
    }

    fn kill_on_err<T>(&mut self, r: Result<T, NoiseError>) -> Result<T, NoiseError> {
        if r.is_err() {
            self.enc.dead = true;
            self.dec.dead = true;
        }
        r
    }

    /// See [`RecordEncoder::seal`].
    pub fn seal(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), NoiseError> {
        let r = self.enc.seal(plaintext, out);
        self.kill_on_err(r)
    }

    /// See [`RecordEncoder::seal_record`].
    pub fn seal_record(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), NoiseError> {
        let r = self.enc.seal_record(chunk, out);
        self.kill_on_err(r)
    }

    /// Open one complete record (header included) and return its plaintext.
    /// See [`RecordDecoder::open_record`].
    pub fn open_record(&mut self, record: &[u8]) -> Result<Vec<u8>, NoiseError> {
        let mut out = Vec::new();
        let r = self.dec.open_record(record, &mut out).map(|_| out);
        self.kill_on_err(r)
    }

    /// Feed ciphertext stream bytes; see [`RecordDecoder::push`].
    pub fn decode(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<usize, NoiseError> {
        let r = self.dec.push(data, out);
        self.kill_on_err(r)
    }

    /// True once an error has killed this transport.
    pub fn is_dead(&self) -> bool {
        self.enc.dead || self.dec.dead
    }

    /// Split into independently owned halves (e.g. for a reader and a writer).
    /// After the split, an error in one half no longer kills the other.
    pub fn split(self) -> (RecordEncoder, RecordDecoder) {
        (self.enc, self.dec)
    }

    #[cfg(test)]
    pub(crate) fn halves_mut(&mut self) -> (&mut RecordEncoder, &mut RecordDecoder) {
        (&mut self.enc, &mut self.dec)
    }
}
