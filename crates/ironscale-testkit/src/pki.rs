//! A throwaway certificate authority for TLS tests: a CA certificate that
//! clients are told to trust (`SSL_CERT_FILE`), and a server certificate it
//! signed for the lab's names and addresses.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

use crate::error::{Error, Result};
use crate::util;

/// Files of a test PKI.
#[derive(Clone, Debug)]
pub struct TestPki {
    /// The CA certificate (PEM): what clients trust.
    pub ca_cert: PathBuf,
    /// The server certificate (PEM), for `names`.
    pub cert: PathBuf,
    /// The server's private key (PEM, mode 0600).
    pub key: PathBuf,
}

fn e(what: &str, err: rcgen::Error) -> Error {
    Error::msg(format!("test PKI: {what}: {err}"))
}

impl TestPki {
    /// Creates `ca.pem`, `server.pem` and `server.key` in `dir` for `names`
    /// (DNS names or IP addresses).
    pub fn create(dir: &Path, names: &[String]) -> Result<TestPki> {
        util::mkdir_private(dir)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(|x| e("CA", x))?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ironscale test CA");
        let ca_key = KeyPair::generate().map_err(|x| e("CA key", x))?;
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(|x| e("CA", x))?;
        let params = CertificateParams::new(names.to_vec()).map_err(|x| e("server", x))?;
        let key = KeyPair::generate().map_err(|x| e("server key", x))?;
        let cert = params.signed_by(&key, &ca).map_err(|x| e("server", x))?;
        let pki = TestPki {
            ca_cert: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        };
        std::fs::write(&pki.ca_cert, ca.pem())?;
        std::fs::write(&pki.cert, cert.pem())?;
        util::write_private(&pki.key, key.serialize_pem().as_bytes())?;
        Ok(pki)
    }
}
