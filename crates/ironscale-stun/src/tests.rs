#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
use super::*;
use proptest::prelude::*;

/// Parse the hex dumps below (whitespace separated bytes, `#` starts a comment).
fn hexdump(s: &str) -> Vec<u8> {
    s.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.split_whitespace())
        .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
        .collect()
}

// RFC 5769 §2.1, "Sample Request" (typed in from the RFC text).
const RFC5769_REQUEST: &str = "
00 01 00 58   # Binding Request, length 88
21 12 a4 42   # magic cookie
b7 e7 a7 01 bc 34 d6 86 fa 87 df ae   # transaction ID
80 22 00 10   # SOFTWARE, 16 bytes
53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74   # 'STUN test client'
00 24 00 04 6e 00 01 ff   # PRIORITY
80 29 00 08 93 2f f9 b1 51 26 3b 36   # ICE-CONTROLLED
00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20   # USERNAME 'evtj:h6vY' + padding
00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2   # MESSAGE-INTEGRITY
80 28 00 04 e5 7a 3b cf   # FINGERPRINT
";

// RFC 5769 §2.2, "Sample IPv4 Response".
const RFC5769_RESPONSE_V4: &str = "
01 01 00 3c 21 12 a4 42
b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20   # SOFTWARE 'test vector'
00 20 00 08 00 01 a1 47 e1 12 a6 43               # XOR-MAPPED-ADDRESS 192.0.2.1:32853
00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
80 28 00 04 c0 7d 4c 96
";

// RFC 5769 §2.3, "Sample IPv6 Response".
const RFC5769_RESPONSE_V6: &str = "
01 01 00 48 21 12 a4 42
b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
00 20 00 14 00 02 a1 47                           # XOR-MAPPED-ADDRESS, IPv6, port 32853
01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9   # 2001:db8:1234:5678:11:2233:4455:6677
00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
80 28 00 04 c8 fb 0b 4c
";

const RFC_TXID: [u8; 12] = [
    0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
];

#[test]
fn rfc5769_request_parses_with_valid_fingerprint() {
    let pkt = hexdump(RFC5769_REQUEST);
    assert_eq!(pkt.len(), 108);
    let req = parse_binding_request(&pkt).expect("RFC 5769 request");
    assert_eq!(req.txid, TxId(RFC_TXID));
    assert_eq!(req.software.as_deref(), Some(&b"STUN test client"[..]));
    assert!(req.has_fingerprint);
    // Not a Tailscale request: the strict parser refuses it.
    assert_eq!(
        parse_binding_request_strict(&pkt),
        Err(StunError::NotTailscale)
    );
}

#[test]
fn rfc5769_responses_give_the_mapped_address() {
    let (txid, addr) = parse_response(&hexdump(RFC5769_RESPONSE_V4)).expect("v4 response");
    assert_eq!(txid, TxId(RFC_TXID));
    assert_eq!(addr, "192.0.2.1:32853".parse().unwrap());
    let (_, addr) = parse_response(&hexdump(RFC5769_RESPONSE_V6)).expect("v6 response");
    assert_eq!(
        addr,
        "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
            .parse()
            .unwrap()
    );
}

#[test]
fn xor_mapped_address_matches_rfc5769_bytes() {
    // Our encoder must produce exactly the RFC's attribute bytes for the same input.
    let txid = TxId(RFC_TXID);
    let v4 = xor_address(&txid, "192.0.2.1:32853".parse().unwrap());
    assert_eq!(v4, hexdump("00 01 a1 47 e1 12 a6 43"));
    let v6 = xor_address(
        &txid,
        "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
            .parse()
            .unwrap(),
    );
    assert_eq!(
        v6,
        hexdump("00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9")
    );
}

#[test]
fn corrupted_fingerprint_is_rejected() {
    let mut pkt = hexdump(RFC5769_REQUEST);
    let n = pkt.len();
    pkt[n - 1] ^= 1;
    assert_eq!(parse_binding_request(&pkt), Err(StunError::BadFingerprint));
    let mut pkt = hexdump(RFC5769_REQUEST);
    pkt[30] ^= 0x20; // flip a bit in SOFTWARE: CRC no longer matches
    assert_eq!(parse_binding_request(&pkt), Err(StunError::BadFingerprint));
}

#[test]
fn tailscale_request_is_40_bytes_and_strictly_valid() {
    let txid = TxId([7; 12]);
    let pkt = request(txid);
    assert_eq!(pkt.len(), 40);
    assert_eq!(&pkt[..4], &[0x00, 0x01, 0x00, 0x14]);
    assert_eq!(&pkt[20..24], &[0x80, 0x22, 0x00, 0x08]);
    assert_eq!(&pkt[24..32], b"tailnode");
    assert_eq!(&pkt[32..36], &[0x80, 0x28, 0x00, 0x04]);
    let req = parse_binding_request_strict(&pkt).expect("strict");
    assert_eq!(req.txid, txid);
}

#[test]
fn plain_rfc5389_request_without_attributes_is_accepted_leniently() {
    // What turnutils_stunclient and most STUN tools send: a bare binding request.
    let mut pkt = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    pkt.extend_from_slice(&[9; 12]);
    let req = parse_binding_request(&pkt).expect("lenient");
    assert_eq!(req.txid, TxId([9; 12]));
    assert!(!req.has_fingerprint && req.software.is_none());
    assert_eq!(
        parse_binding_request_strict(&pkt),
        Err(StunError::NotTailscale)
    );
}

#[test]
fn response_round_trips_v4_v6_and_unmaps() {
    let txid = TxId([3; 12]);
    for a in [
        "1.2.3.4:41641",
        "[2001:db8::1]:3478",
        "[fd7a:115c:a1e0::1]:65535",
        "0.0.0.0:0",
    ] {
        let addr: SocketAddr = a.parse().unwrap();
        let pkt = response(txid, addr);
        assert_eq!(parse_response(&pkt), Ok((txid, addr)), "{a}");
    }
    let mapped: SocketAddr = "[::ffff:10.1.2.3]:999".parse().unwrap();
    let (_, got) = parse_response(&response(txid, mapped)).unwrap();
    assert_eq!(got, "10.1.2.3:999".parse::<SocketAddr>().unwrap());
    // The v4 response is 20 + 12 + 8 bytes and carries a valid fingerprint.
    let pkt = response(txid, "1.2.3.4:5".parse().unwrap());
    assert_eq!(pkt.len(), 40);
    let mut bad = pkt.clone();
    bad[25] ^= 1;
    assert_eq!(parse_response(&bad), Err(StunError::BadFingerprint));
}

#[test]
fn malformed_inputs_are_rejected() {
    assert_eq!(parse_binding_request(&[]), Err(StunError::TooShort));
    let mut pkt = request(TxId([1; 12]));
    pkt[4] = 0; // cookie
    assert_eq!(parse_binding_request(&pkt), Err(StunError::NotStun));
    let mut pkt = request(TxId([1; 12]));
    pkt.push(0); // length mismatch
    assert_eq!(parse_binding_request(&pkt), Err(StunError::NotStun));
    let pkt = response(TxId([1; 12]), "1.2.3.4:5".parse().unwrap());
    assert_eq!(
        parse_binding_request(&pkt),
        Err(StunError::WrongType(BINDING_SUCCESS))
    );
    // Attribute running past the end.
    let mut pkt = vec![0x00, 0x01, 0x00, 0x04, 0x21, 0x12, 0xa4, 0x42];
    pkt.extend_from_slice(&[0; 12]);
    pkt.extend_from_slice(&[0x80, 0x22, 0x00, 0x08]);
    assert_eq!(parse_binding_request(&pkt), Err(StunError::BadAttributes));
    // FINGERPRINT not last.
    let mut pkt = request(TxId([1; 12]));
    pkt.extend_from_slice(&[0x80, 0x22, 0x00, 0x00]);
    let len = (pkt.len() - HEADER_LEN) as u16;
    pkt[2..4].copy_from_slice(&len.to_be_bytes());
    assert_eq!(
        parse_binding_request(&pkt),
        Err(StunError::FingerprintNotLast)
    );
}

proptest! {
    #[test]
    fn parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_binding_request(&data);
        let _ = parse_binding_request_strict(&data);
        let _ = parse_response(&data);
        let _ = is_stun(&data);
    }

    #[test]
    fn parsers_never_panic_on_stun_looking_input(
        typ in prop_oneof![Just(0x0001u16), Just(0x0101u16), any::<u16>()],
        body in proptest::collection::vec(any::<u8>(), 0..120),
    ) {
        // A valid header so the attribute walker gets exercised.
        let mut pkt = typ.to_be_bytes().to_vec();
        pkt.extend_from_slice(&(body.len() as u16).to_be_bytes());
        pkt.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        pkt.extend_from_slice(&[0; 12]);
        pkt.extend_from_slice(&body);
        let _ = parse_binding_request(&pkt);
        let _ = parse_response(&pkt);
    }

    #[test]
    fn response_round_trip(txid in any::<[u8; 12]>(), v6 in any::<bool>(), ip in any::<u128>(), port in any::<u16>()) {
        let ip = if v6 {
            unmap(IpAddr::V6(Ipv6Addr::from(ip)))
        } else {
            IpAddr::V4(Ipv4Addr::from(ip as u32))
        };
        let addr = SocketAddr::new(ip, port);
        prop_assert_eq!(parse_response(&response(TxId(txid), addr)), Ok((TxId(txid), addr)));
        let req = request(TxId(txid));
        prop_assert_eq!(parse_binding_request_strict(&req).map(|r| r.txid), Ok(TxId(txid)));
    }
}
