//! ts2021 framing on arbitrary bytes: the initiation parser, the responder and
//! initiator on parsed frames, and the record decoder (with a fixed key) on raw
//! bytes and on a genuine record stream cut at fuzzer-chosen points. Nothing may
//! panic; a decoder that failed once must stay dead; genuine streams round-trip.
#![no_main]

use ironscale_keys::PrivateKey;
use ironscale_noise::{
    parse_initiation, respond, Initiator, NoiseError, RecordDecoder, RecordEncoder,
};
use libfuzzer_sys::fuzz_target;

const KEY: [u8; 32] = [0x42; 32];

fn feed(chunks: impl Iterator<Item = Vec<u8>>) -> Result<Vec<u8>, NoiseError> {
    let mut dec = RecordDecoder::new(KEY);
    let mut out = Vec::new();
    for chunk in chunks {
        if let Err(e) = dec.push(&chunk, &mut out) {
            assert!(dec.is_dead());
            assert!(matches!(
                dec.push(b"\x04\x00\x10", &mut out),
                Err(NoiseError::Dead)
            ));
            return Err(e);
        }
    }
    Ok(out)
}

fuzz_target!(|data: &[u8]| {
    // Handshake messages.
    if let Ok(init) = parse_initiation(data) {
        assert_eq!(init.to_bytes().as_slice(), data);
        let server = PrivateKey::from_bytes([7; 32]);
        let _ = respond(&server, &init);
    }
    // A response or server error (only these reach the handshake; building an
    // initiator costs Diffie-Hellman operations, so skip it for other inputs).
    if matches!(data.first(), Some(2 | 3)) {
        let client = PrivateKey::from_bytes([9; 32]);
        let server_pub = PrivateKey::from_bytes([7; 32]).machine_public();
        if let Ok((initiator, _)) = Initiator::new(&client, &server_pub, 130) {
            let _ = initiator.finish(data);
        }
    }

    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(step) + 1;

    // Raw bytes: whole, and in chunks. Both ways must agree.
    let whole = feed(std::iter::once(rest.to_vec()));
    let chunked = feed(rest.chunks(step).map(<[u8]>::to_vec));
    match (&whole, &chunked) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        // A chunked feed can fail no later than a whole one, nor succeed where it fails.
        _ => panic!("whole {whole:?} vs chunked {chunked:?}"),
    }

    // A genuine stream: the input is the plaintext, sealed with record sizes taken
    // from the input, then fed back in chunks of `step` bytes.
    let mut enc = RecordEncoder::new(KEY);
    let mut wire = Vec::new();
    for piece in rest.chunks(step * 41) {
        if piece.len() % 3 == 0 {
            enc.seal_record(&[], &mut wire).expect("empty record");
        }
        enc.seal(piece, &mut wire).expect("seal");
    }
    let out = feed(wire.chunks(step).map(<[u8]>::to_vec)).expect("genuine stream decodes");
    assert_eq!(out, rest);
});
