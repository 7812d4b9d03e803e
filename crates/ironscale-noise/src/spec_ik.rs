//! A from-the-spec Noise IK initiator (protocol reference §2.3), written without
//! `snow`, to check that our `snow`-based responder really speaks ts2021 (protocol
//! name, prologue format, order of mixing, key split direction). A snow-to-snow
//! round trip alone cannot catch a mistake shared by both ends.

use blake2::{Blake2s256, Digest};
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use ironscale_keys::{MachinePublic, PrivateKey};

fn hash(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Blake2s256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// HMAC (RFC 2104) over BLAKE2s with its 64-byte block; keys here are 32 bytes.
fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut ipad = [0x36u8; 64];
    let mut opad = [0x5cu8; 64];
    for (i, k) in key.iter().enumerate() {
        ipad[i] ^= k;
        opad[i] ^= k;
    }
    let mut inner_parts: Vec<&[u8]> = vec![&ipad];
    inner_parts.extend_from_slice(parts);
    let inner = hash(&inner_parts);
    hash(&[&opad, &inner])
}

struct Symmetric {
    h: [u8; 32],
    ck: [u8; 32],
    k: Option<[u8; 32]>,
}

impl Symmetric {
    fn new(prologue: &[u8]) -> Self {
        let name = b"Noise_IK_25519_ChaChaPoly_BLAKE2s";
        assert_eq!(name.len(), 33, "longer than HASHLEN, so it is hashed");
        let h = hash(&[name]);
        let mut s = Symmetric { h, ck: h, k: None };
        s.mix_hash(prologue);
        s
    }
    fn mix_hash(&mut self, data: &[u8]) {
        self.h = hash(&[&self.h, data]);
    }
    fn mix_key(&mut self, ikm: &[u8; 32]) {
        let tmp = hmac(&self.ck, &[ikm]);
        self.ck = hmac(&tmp, &[&[1]]);
        self.k = Some(hmac(&tmp, &[&self.ck, &[2]]));
    }
    fn encrypt_and_hash(&mut self, p: &[u8]) -> Vec<u8> {
        let k = self.k.expect("key set");
        let c = ChaCha20Poly1305::new_from_slice(&k)
            .unwrap()
            .encrypt(
                (&[0u8; 12]).into(),
                Payload {
                    msg: p,
                    aad: &self.h,
                },
            )
            .unwrap();
        self.mix_hash(&c);
        c
    }
    fn decrypt_and_hash(&mut self, c: &[u8]) -> Option<Vec<u8>> {
        let k = self.k.expect("key set");
        let p = ChaCha20Poly1305::new_from_slice(&k)
            .unwrap()
            .decrypt(
                (&[0u8; 12]).into(),
                Payload {
                    msg: c,
                    aad: &self.h,
                },
            )
            .ok()?;
        self.mix_hash(c);
        Some(p)
    }
    fn split(&self) -> ([u8; 32], [u8; 32]) {
        let tmp = hmac(&self.ck, &[]);
        let k1 = hmac(&tmp, &[&[1]]);
        let k2 = hmac(&tmp, &[&k1, &[2]]);
        (k1, k2)
    }
}

pub(crate) struct SpecInitiator {
    sym: Symmetric,
    e: PrivateKey,
    s: PrivateKey,
}

impl SpecInitiator {
    /// Build the 101-byte initiation message by hand.
    pub(crate) fn new(s: &PrivateKey, server: &MachinePublic, version: u16) -> (Self, Vec<u8>) {
        let prologue = format!("Tailscale Control Protocol v{version}");
        let mut sym = Symmetric::new(prologue.as_bytes());
        sym.mix_hash(server.as_bytes());
        let e = PrivateKey::generate();
        let e_pub = e.machine_public();
        let mut msg = Vec::with_capacity(101);
        msg.extend_from_slice(&version.to_be_bytes());
        msg.push(1);
        msg.extend_from_slice(&96u16.to_be_bytes());
        msg.extend_from_slice(e_pub.as_bytes());
        sym.mix_hash(e_pub.as_bytes());
        sym.mix_key(&e.shared_secret(server.as_bytes())); // es
        msg.extend_from_slice(&sym.encrypt_and_hash(s.machine_public().as_bytes()));
        sym.mix_key(&s.shared_secret(server.as_bytes())); // ss
        msg.extend_from_slice(&sym.encrypt_and_hash(&[]));
        assert_eq!(msg.len(), 101);
        (
            SpecInitiator {
                sym,
                e,
                s: s.clone(),
            },
            msg,
        )
    }

    /// Read the 51-byte response; returns (k1 client→server, k2 server→client).
    pub(crate) fn finish(mut self, resp: &[u8]) -> Option<([u8; 32], [u8; 32])> {
        if resp.len() != 51 || resp[..3] != [2, 0, 48] {
            return None;
        }
        let re: [u8; 32] = resp[3..35].try_into().ok()?;
        self.sym.mix_hash(&re);
        self.sym.mix_key(&self.e.shared_secret(&re)); // ee
        self.sym.mix_key(&self.s.shared_secret(&re)); // se
        let p = self.sym.decrypt_and_hash(&resp[35..])?;
        p.is_empty().then(|| self.sym.split())
    }
}
