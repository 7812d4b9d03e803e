use super::*;
use chacha20poly1305::aead::Aead;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use ironscale_keys::{MachinePublic, PrivateKey};
use proptest::prelude::*;

const VERSION: u16 = 130;

fn key(b: u8) -> PrivateKey {
    PrivateKey::from_bytes([b; 32])
}

/// Run a full handshake; returns (client transport, server transport, client key seen by server).
fn handshake(version: u16) -> (Transport, Transport, MachinePublic, MachinePublic) {
    let server = key(1);
    let client = key(2);
    let (init, msg) = Initiator::new(&client, &server.machine_public(), version).unwrap();
    assert_eq!(msg.len(), INITIATION_LEN);
    let parsed = parse_initiation(&msg).unwrap();
    assert_eq!(parsed.version, version);
    assert_eq!(parsed.to_bytes().as_slice(), msg.as_slice());
    let (resp, seen, server_t) = respond(&server, &parsed).unwrap();
    assert_eq!(resp.len(), RESPONSE_LEN);
    assert_eq!(&resp[..3], &[0x02, 0x00, 0x30]);
    let client_t = init.finish(&resp).unwrap();
    (client_t, server_t, seen, client.machine_public())
}

fn decode_all(t: &mut Transport, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    t.decode(bytes, &mut out).unwrap();
    out
}

#[test]
fn handshake_round_trip_both_directions() {
    let (mut c, mut s, seen, client_pub) = handshake(VERSION);
    assert_eq!(seen, client_pub);

    let mut wire = Vec::new();
    c.seal(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", &mut wire)
        .unwrap();
    assert_eq!(wire[0], MSG_TYPE_RECORD);
    assert_eq!(
        decode_all(&mut s, &wire),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    );

    let mut wire = Vec::new();
    s.seal(b"server hello", &mut wire).unwrap();
    s.seal(b" and more", &mut wire).unwrap();
    assert_eq!(decode_all(&mut c, &wire), b"server hello and more");

    // A record sealed by a side cannot be opened by that same side (keys differ per direction).
    let mut wire = Vec::new();
    s.seal(b"x", &mut wire).unwrap();
    let (_, mut s_dec) = s.split();
    assert!(matches!(
        s_dec.push(&wire, &mut Vec::new()),
        Err(NoiseError::Decrypt)
    ));
}

#[test]
fn server_uses_the_clients_version_in_the_prologue() {
    // Different versions work as long as both sides agree ...
    for v in [1u16, 39, 130, u16::MAX] {
        let (mut c, mut s, _, _) = handshake(v);
        let mut wire = Vec::new();
        c.seal(b"hi", &mut wire).unwrap();
        assert_eq!(decode_all(&mut s, &wire), b"hi");
    }
    // ... and rewriting the version in the header breaks the handshake.
    let server = key(1);
    let (_, mut msg) = Initiator::new(&key(2), &server.machine_public(), 130).unwrap();
    msg[1] = 131;
    let parsed = parse_initiation(&msg).unwrap();
    assert_eq!(parsed.version, 131);
    assert!(matches!(
        respond(&server, &parsed),
        Err(NoiseError::Handshake(_))
    ));
}

#[test]
fn wrong_server_key_is_rejected() {
    let (_, msg) = Initiator::new(&key(2), &key(1).machine_public(), VERSION).unwrap();
    let parsed = parse_initiation(&msg).unwrap();
    assert!(matches!(
        respond(&key(3), &parsed),
        Err(NoiseError::Handshake(_))
    ));
}

#[test]
fn parse_initiation_errors_are_precise() {
    let (_, msg) = Initiator::new(&key(2), &key(1).machine_public(), VERSION).unwrap();

    let e = parse_initiation(&msg[..4]).unwrap_err();
    assert!(
        matches!(
            e,
            NoiseError::Truncated {
                need: 5,
                got: 4,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.peer_hint(), Some("wrong handshake initiation size"));

    let mut bad = msg.clone();
    bad[2] = 0x04;
    let e = parse_initiation(&bad).unwrap_err();
    assert!(
        matches!(
            e,
            NoiseError::UnexpectedType {
                expected: 1,
                got: 4,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.peer_hint(), Some("unexpected handshake message type"));

    let mut bad = msg.clone();
    bad[4] = 95;
    let e = parse_initiation(&bad).unwrap_err();
    assert!(
        matches!(
            e,
            NoiseError::BadPayloadLength {
                expected: 96,
                got: 95,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.peer_hint(), Some("wrong handshake initiation length"));

    let e = parse_initiation(&msg[..100]).unwrap_err();
    assert!(
        matches!(
            e,
            NoiseError::WrongSize {
                expected: 101,
                got: 100,
                ..
            }
        ),
        "{e}"
    );
    let mut long = msg.clone();
    long.push(0);
    let e = parse_initiation(&long).unwrap_err();
    assert!(
        matches!(
            e,
            NoiseError::WrongSize {
                expected: 101,
                got: 102,
                ..
            }
        ),
        "{e}"
    );
    assert!(NoiseError::Decrypt.peer_hint().is_none());
}

#[test]
fn tampered_initiation_and_response_are_rejected() {
    let server = key(1);
    // Flip a bit in the encrypted static key, then in the tag.
    for idx in [5 + 40, 5 + 90] {
        let (_, mut msg) = Initiator::new(&key(2), &server.machine_public(), VERSION).unwrap();
        msg[idx] ^= 0x01;
        let parsed = parse_initiation(&msg).unwrap();
        assert!(matches!(
            respond(&server, &parsed),
            Err(NoiseError::Handshake(_))
        ));
    }
    // Flip a bit in the response tag.
    let (init, msg) = Initiator::new(&key(2), &server.machine_public(), VERSION).unwrap();
    let (mut resp, _, _) = respond(&server, &parse_initiation(&msg).unwrap()).unwrap();
    resp[50] ^= 0x80;
    assert!(matches!(init.finish(&resp), Err(NoiseError::Handshake(_))));
}

#[test]
fn low_order_keys_are_rejected() {
    let server = key(1);
    let (_, mut msg) = Initiator::new(&key(2), &server.machine_public(), VERSION).unwrap();
    msg[5..37].fill(0); // ephemeral = the zero point (low order)
    let parsed = parse_initiation(&msg).unwrap();
    assert!(matches!(
        respond(&server, &parsed),
        Err(NoiseError::LowOrderKey)
    ));

    let (init, msg) = Initiator::new(&key(2), &server.machine_public(), VERSION).unwrap();
    let (mut resp, _, _) = respond(&server, &parse_initiation(&msg).unwrap()).unwrap();
    resp[3..35].fill(0);
    resp[3] = 1; // the point u = 1 has order 4
    assert!(matches!(init.finish(&resp), Err(NoiseError::LowOrderKey)));
}

#[test]
fn initiator_reports_server_errors_and_bad_responses() {
    let server = key(1);
    let mk = || {
        Initiator::new(&key(2), &server.machine_public(), VERSION)
            .unwrap()
            .0
    };

    let e = mk()
        .finish(&error_message("unexpected handshake message type"))
        .unwrap_err();
    match e {
        NoiseError::ServerError(t) => assert_eq!(t, "unexpected handshake message type"),
        e => panic!("{e}"),
    }
    assert!(matches!(
        mk().finish(&[2, 0]),
        Err(NoiseError::Truncated { .. })
    ));
    assert!(matches!(
        mk().finish(&[9, 0, 48]),
        Err(NoiseError::UnexpectedType {
            expected: 2,
            got: 9,
            ..
        })
    ));
    assert!(matches!(
        mk().finish(&[2, 0, 47]),
        Err(NoiseError::BadPayloadLength { .. })
    ));
    assert!(matches!(
        mk().finish(&[2, 0, 48, 1]),
        Err(NoiseError::WrongSize {
            expected: 51,
            got: 4,
            ..
        })
    ));
}

#[test]
fn error_message_framing_and_truncation() {
    assert_eq!(error_message("no"), vec![3, 0, 2, b'n', b'o']);
    let long = "é".repeat(40_000); // 80_000 bytes of 2-byte characters
    let m = error_message(&long);
    let len = usize::from(u16::from_be_bytes([m[1], m[2]]));
    assert_eq!(len, m.len() - 3);
    assert_eq!(len, 65_534, "cut below 64 KiB at a character boundary");
    assert!(std::str::from_utf8(&m[3..]).is_ok());
}

#[test]
fn flipped_bit_in_a_record_is_detected_and_kills_the_transport() {
    let (mut c, mut s, _, _) = handshake(VERSION);
    let mut wire = Vec::new();
    c.seal(b"first", &mut wire).unwrap();
    c.seal(b"second", &mut wire).unwrap();
    let first_len = HEADER_LEN + 5 + TAG_LEN;
    // Flip one bit in the body of the second record.
    wire[first_len + HEADER_LEN + 2] ^= 0x10;
    let mut out = Vec::new();
    assert!(matches!(
        s.decode(&wire, &mut out),
        Err(NoiseError::Decrypt)
    ));
    assert_eq!(
        out, b"first",
        "records before the bad one are genuine and kept"
    );
    assert!(s.is_dead());
    // Every later call fails, in both directions.
    assert!(matches!(s.decode(&[], &mut out), Err(NoiseError::Dead)));
    assert!(matches!(
        s.seal(b"x", &mut Vec::new()),
        Err(NoiseError::Dead)
    ));
    assert!(matches!(
        s.open_record(&wire[..first_len]),
        Err(NoiseError::Dead)
    ));
}

#[test]
fn flipped_tag_bit_and_flipped_length_are_detected() {
    let (mut c, mut s, _, _) = handshake(VERSION);
    let mut wire = Vec::new();
    c.seal(b"payload", &mut wire).unwrap();
    let last = wire.len() - 1;
    wire[last] ^= 1;
    assert!(matches!(s.open_record(&wire), Err(NoiseError::Decrypt)));

    let (mut c, mut s, _, _) = handshake(VERSION);
    let mut wire = Vec::new();
    c.seal(b"payload", &mut wire).unwrap();
    wire.push(0);
    wire[2] += 1; // announce one more byte than the real ciphertext
    assert!(matches!(s.open_record(&wire), Err(NoiseError::Decrypt)));
}

#[test]
fn record_size_boundary() {
    let mut enc = RecordEncoder::new([7; 32]);
    let mut dec = RecordDecoder::new([7; 32]);

    // Exactly 4077 bytes of plaintext fit in one 4096-byte record.
    let max = vec![0xa5u8; MAX_PLAINTEXT_LEN];
    assert_eq!(MAX_PLAINTEXT_LEN, 4077);
    let mut wire = Vec::new();
    enc.seal(&max, &mut wire).unwrap();
    assert_eq!(wire.len(), 4096);
    assert_eq!(&wire[..3], &[0x04, 0x0f, 0xfd]); // 4093
    let mut out = Vec::new();
    dec.push(&wire, &mut out).unwrap();
    assert_eq!(out, max);

    // 4078 bytes need two records.
    let mut wire = Vec::new();
    enc.seal(&vec![1u8; MAX_PLAINTEXT_LEN + 1], &mut wire)
        .unwrap();
    assert_eq!(wire.len(), 4096 + HEADER_LEN + 1 + TAG_LEN);
    assert_eq!(enc.records_sealed(), 3);
    // A single record refuses it outright.
    let mut enc2 = RecordEncoder::new([7; 32]);
    assert!(matches!(
        enc2.seal_record(&[0; MAX_PLAINTEXT_LEN + 1], &mut Vec::new()),
        Err(NoiseError::PlaintextTooLong(4078))
    ));
    assert!(enc2.is_dead());

    // A header announcing 4093 bytes is fine and waits for the body ...
    let mut dec = RecordDecoder::new([7; 32]);
    assert_eq!(dec.push(&[0x04, 0x0f, 0xfd], &mut Vec::new()).unwrap(), 0);
    assert!(dec.has_partial());
    // ... one announcing 4094 is rejected as soon as its header is complete.
    let mut dec = RecordDecoder::new([7; 32]);
    assert_eq!(dec.push(&[0x04, 0x0f], &mut Vec::new()).unwrap(), 0);
    assert!(matches!(
        dec.push(&[0xfe], &mut Vec::new()),
        Err(NoiseError::RecordTooLong(4094))
    ));
    assert!(matches!(
        dec.push(&[], &mut Vec::new()),
        Err(NoiseError::Dead)
    ));
}

#[test]
fn bad_type_and_short_records_are_rejected() {
    let mut dec = RecordDecoder::new([7; 32]);
    assert!(matches!(
        dec.push(&[0x03, 0, 16], &mut Vec::new()),
        Err(NoiseError::BadRecordType(3))
    ));
    let mut dec = RecordDecoder::new([7; 32]);
    let mut rec = vec![0x04, 0, 15];
    rec.extend_from_slice(&[0; 15]);
    assert!(matches!(
        dec.push(&rec, &mut Vec::new()),
        Err(NoiseError::RecordTooShort(15))
    ));
    let mut dec = RecordDecoder::new([7; 32]);
    assert!(matches!(
        dec.open_record(&[0x04, 0, 20, 1, 2], &mut Vec::new()),
        Err(NoiseError::RecordSize {
            announced: 20,
            got: 2
        })
    ));
}

#[test]
fn nonce_is_big_endian() {
    let k = [0x42u8; 32];
    let mut enc = RecordEncoder::new(k);
    let mut wire = Vec::new();
    enc.seal(b"record zero", &mut wire).unwrap();
    let first = wire.len();
    enc.seal(b"record one", &mut wire).unwrap();
    let rec1 = &wire[first + HEADER_LEN..];

    let aead = ChaCha20Poly1305::new_from_slice(&k).unwrap();
    let be = [0u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let le = [0u8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(record_nonce(1), be);
    assert_eq!(aead.decrypt((&be).into(), rec1).unwrap(), b"record one");
    assert!(
        aead.decrypt((&le).into(), rec1).is_err(),
        "little-endian layout must not work"
    );

    // And our decoder accepts records produced with the BE layout by another implementation.
    let nonce = record_nonce(0x0102_0304_0506_0708);
    assert_eq!(nonce, [0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
    let ct = aead.encrypt((&nonce).into(), &b"far away"[..]).unwrap();
    let mut rec = vec![0x04];
    rec.extend_from_slice(&(ct.len() as u16).to_be_bytes());
    rec.extend_from_slice(&ct);
    let mut dec = RecordDecoder::new(k);
    dec.set_counter(0x0102_0304_0506_0708);
    let mut out = Vec::new();
    dec.open_record(&rec, &mut out).unwrap();
    assert_eq!(out, b"far away");
}

#[test]
fn zero_length_records_are_legal_and_skipped() {
    let (mut c, mut s, _, _) = handshake(VERSION);
    let mut wire = Vec::new();
    c.seal_record(&[], &mut wire).unwrap();
    assert_eq!(wire.len(), HEADER_LEN + TAG_LEN);
    c.seal(b"after", &mut wire).unwrap();
    c.seal(&[], &mut wire).unwrap(); // seal of nothing appends nothing
    assert_eq!(wire.len(), 2 * (HEADER_LEN + TAG_LEN) + 5);
    assert_eq!(decode_all(&mut s, &wire), b"after");
    assert_eq!(
        s.open_record(&{
            let mut w = Vec::new();
            c.seal_record(&[], &mut w).unwrap();
            w
        })
        .unwrap(),
        b""
    );
}

#[test]
fn nonce_exhaustion_is_fatal() {
    let mut enc = RecordEncoder::new([9; 32]);
    let mut dec = RecordDecoder::new([9; 32]);
    enc.set_counter(u64::MAX - 1);
    dec.set_counter(u64::MAX - 1);
    let mut wire = Vec::new();
    enc.seal(b"last one", &mut wire).unwrap();
    let mut out = Vec::new();
    dec.push(&wire, &mut out).unwrap();
    assert_eq!(out, b"last one");
    assert!(matches!(
        enc.seal(b"x", &mut Vec::new()),
        Err(NoiseError::NonceExhausted)
    ));
    assert!(matches!(
        enc.seal(b"x", &mut Vec::new()),
        Err(NoiseError::Dead)
    ));
    // The decoder refuses a record at the invalid counter value even before decrypting.
    let mut fake = vec![0x04, 0, 16];
    fake.extend_from_slice(&[0; 16]);
    assert!(matches!(
        dec.push(&fake, &mut out),
        Err(NoiseError::NonceExhausted)
    ));
    assert!(dec.is_dead());
}

#[test]
fn transport_errors_on_one_side_kill_both() {
    let (_, mut s, _, _) = handshake(VERSION);
    {
        let (enc, _) = s.halves_mut();
        enc.set_counter(u64::MAX);
    }
    assert!(matches!(
        s.seal(b"x", &mut Vec::new()),
        Err(NoiseError::NonceExhausted)
    ));
    assert!(matches!(
        s.decode(&[], &mut Vec::new()),
        Err(NoiseError::Dead)
    ));
}

#[test]
fn early_payload_format() {
    let chal = key(5).challenge_public();
    let p = early_payload(&chal);
    assert_eq!(&p[..5], b"\xff\xff\xffTS");
    let hdr: [u8; 9] = p[..9].try_into().unwrap();
    let n = early_payload_json_len(&hdr).unwrap() as usize;
    assert_eq!(n, p.len() - 9);
    let v: serde_json::Value = serde_json::from_slice(&p[9..]).unwrap();
    assert_eq!(v["nodeKeyChallenge"], format!("chalpub:{}", chal.hex()));
    assert_eq!(v.as_object().unwrap().len(), 1);
    // An HTTP/2 SETTINGS frame header is not mistaken for it.
    assert_eq!(early_payload_json_len(&[0, 0, 0, 4, 0, 0, 0, 0, 0]), None);
}

#[test]
fn debug_output_has_no_key_material() {
    let t = Transport::new([0xab; 32], [0xcd; 32]);
    let d = format!("{t:?}");
    assert!(d.contains("redacted"), "{d}");
    assert!(
        !d.contains("171") && !d.contains("205") && !d.contains("ab, ab"),
        "{d}"
    );
    let (init, _) = Initiator::new(&key(2), &key(1).machine_public(), VERSION).unwrap();
    let d = format!("{init:?}");
    assert!(!d.contains("2, 2, 2"), "{d}");
}

/// Split `bytes` into chunks at the given cut points (taken modulo the length).
fn chunked(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    points
        .windows(2)
        .map(|w| bytes[w[0]..w[1]].to_vec())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn round_trip_random_sizes_and_chunking(
        messages in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..10_000), 1..5),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        let mut enc = RecordEncoder::new([3; 32]);
        let mut dec = RecordDecoder::new([3; 32]);
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        for m in &messages {
            enc.seal(m, &mut wire).unwrap();
            expected.extend_from_slice(m);
        }
        let mut out = Vec::new();
        for chunk in chunked(&wire, &cuts) {
            dec.push(&chunk, &mut out).unwrap();
        }
        prop_assert!(!dec.has_partial());
        prop_assert_eq!(dec.records_opened(), enc.records_sealed());
        prop_assert_eq!(out, expected);
    }

    #[test]
    fn any_single_bit_flip_is_fatal(
        len in 0usize..9_000,
        bit in any::<usize>(),
        cuts in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        let mut enc = RecordEncoder::new([4; 32]);
        let mut wire = Vec::new();
        enc.seal_record(&[], &mut wire).unwrap();
        enc.seal(&vec![0x5a; len], &mut wire).unwrap();
        let bit = bit % (wire.len() * 8);
        wire[bit / 8] ^= 1 << (bit % 8);
        let mut dec = RecordDecoder::new([4; 32]);
        let mut result = Ok(0);
        for chunk in chunked(&wire, &cuts) {
            result = dec.push(&chunk, &mut Vec::new());
            if result.is_err() { break; }
        }
        // Either an error, or (a flipped length made the decoder wait for more) a
        // truncated stream: never silently accepted data.
        prop_assert!(result.is_err() || dec.has_partial());
    }
}

#[test]
fn responder_interoperates_with_a_from_the_spec_initiator() {
    use crate::spec_ik::SpecInitiator;
    let server = key(11);
    let client = key(12);
    for version in [68u16, 130] {
        let (spec, msg) = SpecInitiator::new(&client, &server.machine_public(), version);
        let (resp, seen, mut server_t) =
            respond(&server, &parse_initiation(&msg).unwrap()).unwrap();
        assert_eq!(seen, client.machine_public());
        let (k1, k2) = spec
            .finish(&resp)
            .expect("spec initiator accepts our response");

        // k1 is client→server, k2 server→client, with the big-endian record layer.
        let mut c_enc = RecordEncoder::new(k1);
        let mut c_dec = RecordDecoder::new(k2);
        let mut wire = Vec::new();
        c_enc.seal(b"from the client", &mut wire).unwrap();
        assert_eq!(decode_all(&mut server_t, &wire), b"from the client");
        let mut wire = Vec::new();
        server_t.seal(b"from the server", &mut wire).unwrap();
        let mut out = Vec::new();
        c_dec.push(&wire, &mut out).unwrap();
        assert_eq!(out, b"from the server");
    }

    // The responder builds its prologue from the header's version: a rewritten
    // version no longer matches the spec initiator's transcript.
    let (_, mut msg) = SpecInitiator::new(&client, &server.machine_public(), 130);
    msg[1] = 129;
    assert!(respond(&server, &parse_initiation(&msg).unwrap()).is_err());
}
