//! Sans-IO STUN (RFC 5389) for the subset Tailscale uses: binding requests and
//! binding success responses with XOR-MAPPED-ADDRESS.
//!
//! * Server side: [`parse_binding_request`] (lenient: Tailscale's requests with
//!   SOFTWARE `tailnode` + FINGERPRINT, and plain RFC 5389 requests such as
//!   coturn's `turnutils_stunclient` sends) or [`parse_binding_request_strict`]
//!   (exactly what Go's `net/stun` server accepts), then [`response`].
//! * Client side: [`request`] and [`parse_response`].
//!
//! Nothing here panics on any input; see the proptest and the fuzz target.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The RFC 5389 magic cookie.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Length of a STUN header.
pub const HEADER_LEN: usize = 20;
/// Binding Request message type.
pub const BINDING_REQUEST: u16 = 0x0001;
/// Binding Success Response message type.
pub const BINDING_SUCCESS: u16 = 0x0101;
/// The SOFTWARE value Tailscale clients send.
pub const TAILSCALE_SOFTWARE: &[u8] = b"tailnode";

/// Attribute types used here.
pub mod attr {
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    /// Pre-RFC 5389 code point of XOR-MAPPED-ADDRESS, still accepted by Tailscale clients.
    pub const XOR_MAPPED_ADDRESS_ALT: u16 = 0x8020;
    pub const SOFTWARE: u16 = 0x8022;
    pub const FINGERPRINT: u16 = 0x8028;
}

const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// A 96-bit STUN transaction ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct TxId(pub [u8; 12]);

impl TxId {
    /// A random transaction ID from the OS RNG is the caller's job (sans-IO);
    /// this builds one from bytes.
    pub fn from_bytes(b: [u8; 12]) -> Self {
        Self(b)
    }
}

/// Why a packet was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    #[error("packet shorter than a STUN header")]
    TooShort,
    #[error("not a STUN message (first bits, cookie or length)")]
    NotStun,
    #[error("unexpected message type 0x{0:04x}")]
    WrongType(u16),
    #[error("malformed attribute list")]
    BadAttributes,
    #[error("FINGERPRINT does not match")]
    BadFingerprint,
    #[error("FINGERPRINT is not the last attribute")]
    FingerprintNotLast,
    #[error("request lacks SOFTWARE \"tailnode\" or FINGERPRINT")]
    NotTailscale,
    #[error("response has no (XOR-)MAPPED-ADDRESS")]
    NoAddress,
    #[error("malformed address attribute")]
    BadAddress,
}

/// A parsed binding request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindingRequest {
    pub txid: TxId,
    /// The SOFTWARE attribute, if present.
    pub software: Option<Vec<u8>>,
    /// Whether a (valid) FINGERPRINT was present.
    pub has_fingerprint: bool,
}

/// Quick check: could this be a STUN message (leading zero bits and magic cookie)?
pub fn is_stun(pkt: &[u8]) -> bool {
    pkt.len() >= HEADER_LEN && pkt[0] & 0xC0 == 0 && pkt[4..8] == MAGIC_COOKIE.to_be_bytes()
}

struct Attr<'a> {
    typ: u16,
    value: &'a [u8],
    /// Offset of the attribute header in the packet.
    offset: usize,
}

/// Check the header and walk the attributes; returns (type, txid, attributes).
fn parse_message(pkt: &[u8]) -> Result<(u16, TxId, Vec<Attr<'_>>), StunError> {
    if pkt.len() < HEADER_LEN {
        return Err(StunError::TooShort);
    }
    if !is_stun(pkt) {
        return Err(StunError::NotStun);
    }
    let typ = u16::from_be_bytes([pkt[0], pkt[1]]);
    let len = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
    if len % 4 != 0 || HEADER_LEN + len != pkt.len() {
        return Err(StunError::NotStun);
    }
    let mut txid = [0u8; 12];
    txid.copy_from_slice(&pkt[8..20]);
    let mut attrs = Vec::new();
    let mut off = HEADER_LEN;
    while off < pkt.len() {
        if pkt.len() - off < 4 {
            return Err(StunError::BadAttributes);
        }
        let at = u16::from_be_bytes([pkt[off], pkt[off + 1]]);
        let alen = usize::from(u16::from_be_bytes([pkt[off + 2], pkt[off + 3]]));
        let padded = alen.div_ceil(4) * 4;
        if pkt.len() - off - 4 < padded {
            return Err(StunError::BadAttributes);
        }
        attrs.push(Attr {
            typ: at,
            value: &pkt[off + 4..off + 4 + alen],
            offset: off,
        });
        off += 4 + padded;
    }
    Ok((typ, TxId(txid), attrs))
}

/// CRC-32 of `data` XOR `0x5354554E`, the FINGERPRINT value.
pub fn fingerprint(data: &[u8]) -> u32 {
    crc32fast::hash(data) ^ FINGERPRINT_XOR
}

/// Validate a FINGERPRINT attribute if present: it must be last and match.
fn check_fingerprint(pkt: &[u8], attrs: &[Attr<'_>]) -> Result<bool, StunError> {
    let Some(pos) = attrs.iter().position(|a| a.typ == attr::FINGERPRINT) else {
        return Ok(false);
    };
    if pos != attrs.len() - 1 {
        return Err(StunError::FingerprintNotLast);
    }
    let a = &attrs[pos];
    if a.value.len() != 4 {
        return Err(StunError::BadFingerprint);
    }
    let got = u32::from_be_bytes([a.value[0], a.value[1], a.value[2], a.value[3]]);
    // The CRC covers the message up to the attribute, with the header length
    // already counting the FINGERPRINT attribute (it does: it is the last one).
    if fingerprint(&pkt[..a.offset]) != got {
        return Err(StunError::BadFingerprint);
    }
    Ok(true)
}

/// Parse a binding request leniently: any well-formed RFC 5389 binding request
/// (magic cookie, valid attribute list, FINGERPRINT last and correct if present).
/// Other attributes (USERNAME, MESSAGE-INTEGRITY, ICE, …) are ignored.
pub fn parse_binding_request(pkt: &[u8]) -> Result<BindingRequest, StunError> {
    let (typ, txid, attrs) = parse_message(pkt)?;
    if typ != BINDING_REQUEST {
        return Err(StunError::WrongType(typ));
    }
    let has_fingerprint = check_fingerprint(pkt, &attrs)?;
    let software = attrs
        .iter()
        .find(|a| a.typ == attr::SOFTWARE)
        .map(|a| a.value.to_vec());
    Ok(BindingRequest {
        txid,
        software,
        has_fingerprint,
    })
}

/// Parse a binding request as Tailscale's Go server does: SOFTWARE must be
/// `tailnode` and a correct FINGERPRINT must be the last attribute.
pub fn parse_binding_request_strict(pkt: &[u8]) -> Result<BindingRequest, StunError> {
    let req = parse_binding_request(pkt)?;
    if req.software.as_deref() != Some(TAILSCALE_SOFTWARE) || !req.has_fingerprint {
        return Err(StunError::NotTailscale);
    }
    Ok(req)
}

fn put_header(out: &mut Vec<u8>, typ: u16, txid: &TxId) {
    out.extend_from_slice(&typ.to_be_bytes());
    out.extend_from_slice(&[0, 0]); // length, patched later
    out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    out.extend_from_slice(&txid.0);
}

fn put_attr(out: &mut Vec<u8>, typ: u16, value: &[u8]) {
    out.extend_from_slice(&typ.to_be_bytes());
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn set_len(out: &mut [u8], len: usize) {
    let l = (len as u16).to_be_bytes();
    out[2] = l[0];
    out[3] = l[1];
}

/// Append FINGERPRINT, fixing the header length first so the CRC covers it.
fn put_fingerprint(out: &mut Vec<u8>) {
    let len = out.len() - HEADER_LEN + 8;
    set_len(out, len);
    let fp = fingerprint(out);
    put_attr(out, attr::FINGERPRINT, &fp.to_be_bytes());
}

/// The value of an XOR-MAPPED-ADDRESS attribute for `addr`.
fn xor_address(txid: &TxId, addr: SocketAddr) -> Vec<u8> {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    let mut v = vec![0u8];
    match unmap(addr.ip()) {
        IpAddr::V4(ip) => {
            v.push(0x01);
            v.extend_from_slice(&port.to_be_bytes());
            v.extend(ip.octets().iter().zip(cookie.iter()).map(|(a, b)| a ^ b));
        }
        IpAddr::V6(ip) => {
            v.push(0x02);
            v.extend_from_slice(&port.to_be_bytes());
            let key = cookie.iter().chain(txid.0.iter());
            v.extend(ip.octets().iter().zip(key).map(|(a, b)| a ^ b));
        }
    }
    v
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Build a binding success response telling the client its address `addr`
/// (IPv4-mapped IPv6 addresses are unmapped first), with XOR-MAPPED-ADDRESS
/// and a FINGERPRINT.
pub fn response(txid: TxId, addr: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + 24 + 8);
    put_header(&mut out, BINDING_SUCCESS, &txid);
    put_attr(
        &mut out,
        attr::XOR_MAPPED_ADDRESS,
        &xor_address(&txid, addr),
    );
    put_fingerprint(&mut out);
    out
}

/// Build a binding request as Tailscale clients send it: SOFTWARE `tailnode`
/// and FINGERPRINT (40 bytes).
pub fn request(txid: TxId) -> Vec<u8> {
    let mut out = Vec::with_capacity(40);
    put_header(&mut out, BINDING_REQUEST, &txid);
    put_attr(&mut out, attr::SOFTWARE, TAILSCALE_SOFTWARE);
    put_fingerprint(&mut out);
    out
}

fn parse_address(v: &[u8], xor: bool, txid: &TxId) -> Result<SocketAddr, StunError> {
    if v.len() < 4 {
        return Err(StunError::BadAddress);
    }
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let mut port = u16::from_be_bytes([v[2], v[3]]);
    if xor {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    let ip = match (v[1], v.len()) {
        (0x01, 8) => {
            let mut o = [v[4], v[5], v[6], v[7]];
            if xor {
                o.iter_mut().zip(cookie.iter()).for_each(|(a, b)| *a ^= b);
            }
            IpAddr::V4(Ipv4Addr::from(o))
        }
        (0x02, 20) => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&v[4..20]);
            if xor {
                let key = cookie.iter().chain(txid.0.iter());
                o.iter_mut().zip(key).for_each(|(a, b)| *a ^= b);
            }
            unmap(IpAddr::V6(Ipv6Addr::from(o)))
        }
        _ => return Err(StunError::BadAddress),
    };
    Ok(SocketAddr::new(ip, port))
}

/// Parse a binding success response: its transaction ID and mapped address.
///
/// XOR-MAPPED-ADDRESS (0x0020) is preferred, then the old 0x8020 code point,
/// then MAPPED-ADDRESS, as Tailscale clients do. A FINGERPRINT, if present,
/// must be correct.
pub fn parse_response(pkt: &[u8]) -> Result<(TxId, SocketAddr), StunError> {
    let (typ, txid, attrs) = parse_message(pkt)?;
    if typ != BINDING_SUCCESS {
        return Err(StunError::WrongType(typ));
    }
    check_fingerprint(pkt, &attrs)?;
    for (want, xor) in [
        (attr::XOR_MAPPED_ADDRESS, true),
        (attr::XOR_MAPPED_ADDRESS_ALT, true),
        (attr::MAPPED_ADDRESS, false),
    ] {
        if let Some(a) = attrs.iter().find(|a| a.typ == want) {
            return Ok((txid, parse_address(a.value, xor, &txid)?));
        }
    }
    Err(StunError::NoAddress)
}

#[cfg(test)]
mod tests;
