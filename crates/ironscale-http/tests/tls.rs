//! TLS material: a persisted self-signed certificate keeps its fingerprint.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use ironscale_http::self_signed;

#[test]
fn self_signed_cert_persists_and_fingerprint_is_stable() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("derp/cert.pem");
    let key = dir.path().join("derp/key.pem");
    let names = vec!["derp.example.com".to_string(), "10.1.2.3".to_string()];
    let (_, fp1) = ironscale_http::load_or_create_self_signed(&cert, &key, &names).unwrap();
    let (_, fp2) = ironscale_http::load_or_create_self_signed(&cert, &key, &names).unwrap();
    assert_eq!(fp1, fp2);
    assert_eq!(fp1.len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let der = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(&cert).unwrap(),
    ))
    .next()
    .unwrap()
    .unwrap();
    assert_eq!(ironscale_http::cert_sha256_hex(&der), fp1);
    // A fresh one differs.
    let (_, fp3) = self_signed(&names).unwrap();
    assert_ne!(fp1, fp3);
}
