//! Incremental, sans-IO frame decoder: feed bytes as they arrive, take frames out.

use bytes::{Buf, BytesMut};

use crate::error::DerpError;
use crate::frame::{max_payload_len, Frame, FrameType, HEADER_LEN, MAX_FRAME_LEN};

/// Which side's frames a decoder reads.
///
/// A frame type that is not meant for this direction is skipped like an unknown
/// type, as the Go server and client do: a server never fails because a
/// client sent it, say, a malformed RecvPacket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The decoder runs in a server and reads what clients send.
    ClientToServer,
    /// The decoder runs in a client and reads what servers send.
    ServerToClient,
    /// Decode every known type (tools, tests, fuzzing).
    Any,
}

impl Direction {
    fn accepts(self, t: FrameType) -> bool {
        match self {
            Direction::ClientToServer => t.client_to_server(),
            Direction::ServerToClient => t.server_to_client(),
            Direction::Any => t.name().is_some(),
        }
    }
}

/// Incremental DERP frame decoder.
///
/// * Headers are checked as soon as their 5 bytes are in: a length over the
///   type's limit (or over [`MAX_FRAME_LEN`] for a type this direction does not
///   know) is an error at once, before any payload is buffered.
/// * Unknown frames are skipped without being buffered.
/// * Errors are sticky: after one, every call returns the same error.
///
/// Memory held is at most one frame of the largest allowed size plus whatever
/// the caller feeds in one call.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    dir: Direction,
    buf: BytesMut,
    /// Bytes of an unknown frame still to be thrown away.
    skip: usize,
    skipped_frames: u64,
    error: Option<DerpError>,
}

impl FrameDecoder {
    pub fn new(dir: Direction) -> Self {
        Self {
            dir,
            buf: BytesMut::new(),
            skip: 0,
            skipped_frames: 0,
            error: None,
        }
    }

    /// Append received bytes.
    pub fn feed(&mut self, mut data: &[u8]) {
        if self.error.is_some() {
            return;
        }
        if self.skip > 0 {
            let n = self.skip.min(data.len());
            self.skip -= n;
            data = &data[n..];
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes received but not yet turned into frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// How many frames of unknown (or wrong-direction) type were skipped.
    pub fn skipped_frames(&self) -> u64 {
        self.skipped_frames
    }

    /// Whether the decoder sits exactly on a frame boundary (nothing partial buffered).
    pub fn is_idle(&self) -> bool {
        self.buf.is_empty() && self.skip == 0
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DerpError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        match self.decode() {
            Err(e) => {
                self.error = Some(e.clone());
                self.buf = BytesMut::new();
                Err(e)
            }
            ok => ok,
        }
    }

    fn decode(&mut self) -> Result<Option<Frame>, DerpError> {
        loop {
            if self.skip > 0 {
                let n = self.skip.min(self.buf.len());
                self.buf.advance(n);
                self.skip -= n;
                if self.skip > 0 {
                    return Ok(None);
                }
            }
            if self.buf.len() < HEADER_LEN {
                return Ok(None);
            }
            let t = FrameType(self.buf[0]);
            let len32 = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
            let len = len32 as usize;
            let known = self.dir.accepts(t);
            let max = if known {
                max_payload_len(t)
            } else {
                MAX_FRAME_LEN
            };
            if len > max {
                return Err(DerpError::FrameTooLarge {
                    frame_type: t,
                    len: len32,
                    max: u32::try_from(max).unwrap_or(u32::MAX),
                });
            }
            if !known {
                self.buf.advance(HEADER_LEN);
                self.skip = len;
                self.skipped_frames += 1;
                continue;
            }
            if self.buf.len() < HEADER_LEN + len {
                self.buf.reserve(HEADER_LEN + len - self.buf.len());
                return Ok(None);
            }
            self.buf.advance(HEADER_LEN);
            let payload = self.buf.split_to(len).freeze();
            match Frame::parse(t, payload)? {
                Some(f) => return Ok(Some(f)),
                None => {
                    self.skipped_frames += 1;
                    continue;
                }
            }
        }
    }
}
