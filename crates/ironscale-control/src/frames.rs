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

/// Encode one MapResponse as a length-prefixed frame.
pub fn encode_frame(resp: &MapResponse, codec: FrameCodec) -> std::io::Result<Bytes> {
    let json = serde_json::to_vec(resp).map_err(std::io::Error::other)?;
    let payload = match codec {
        FrameCodec::Zstd => zstd::bulk::compress(&json, 1)?,
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
}
