//! Map stream framing: `u32 little-endian length || payload`, where the payload
//! is one zstd frame of the JSON MapResponse when the client asked for
//! `Compress: "zstd"` (all Go clients), else plain JSON.

use bytes::Bytes;
use ironscale_wire::MapResponse;

/// How frames are encoded for one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameCodec {
    Zstd,
    Plain,
}

impl FrameCodec {
    pub fn for_request(compress: &str) -> Self {
        if compress.eq_ignore_ascii_case("zstd") {
            FrameCodec::Zstd
        } else {
            FrameCodec::Plain
        }
    }
}

/// zstd level: 1 is what Tailscale's control server uses for map frames
/// (fast, and maps compress well anyway).
const ZSTD_LEVEL: i32 = 1;

thread_local! {
    /// One compression context per worker thread, reused for every frame that
    /// thread encodes. Creating a context per frame cost more than compressing
    /// (an mmap/munmap of its tables each time, with TLB shootdowns, in a
    /// profile of 400 sessions); keeping one per session would cost its memory
    /// once per client.
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

fn zstd_compress(data: &[u8]) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with(|slot| {
        let mut slot = slot.borrow_mut();
        let c = match &mut *slot {
            Some(c) => c,
            None => slot.insert(zstd::bulk::Compressor::new(ZSTD_LEVEL)?),
        };
        c.compress(data)
    })
}

/// Encode one MapResponse as a length-prefixed frame.
pub fn encode_frame(resp: &MapResponse, codec: FrameCodec) -> std::io::Result<Bytes> {
    let json = serde_json::to_vec(resp).map_err(std::io::Error::other)?;
    let payload = match codec {
        FrameCodec::Zstd => zstd_compress(&json)?,
        FrameCodec::Plain => json,
    };
    let len = u32::try_from(payload.len()).map_err(std::io::Error::other)?;
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zstd_frame_round_trip() {
        let f = encode_frame(&MapResponse::keep_alive(), FrameCodec::Zstd).unwrap();
        let len = u32::from_le_bytes(f[..4].try_into().unwrap()) as usize;
        assert_eq!(len, f.len() - 4);
        let json = zstd::bulk::decompress(&f[4..], 1 << 20).unwrap();
        assert_eq!(json, br#"{"KeepAlive":true}"#);
        let p = encode_frame(&MapResponse::keep_alive(), FrameCodec::Plain).unwrap();
        assert_eq!(&p[4..], br#"{"KeepAlive":true}"#);
    }

    /// The reused context yields independent frames: each decodes on its own,
    /// whatever was compressed before it on the same thread.
    #[test]
    fn reused_context_frames_are_independent() {
        let mut big = MapResponse::keep_alive();
        big.keep_alive = false;
        big.domain = "x".repeat(100_000);
        let frames: Vec<Bytes> = [&big, &MapResponse::keep_alive(), &big]
            .iter()
            .map(|r| encode_frame(r, FrameCodec::Zstd).unwrap())
            .collect();
        for (f, want) in frames.iter().zip([&big, &MapResponse::keep_alive(), &big]) {
            let json = zstd::bulk::decompress(&f[4..], 1 << 20).unwrap();
            assert_eq!(json, serde_json::to_vec(want).unwrap());
        }
    }
}
