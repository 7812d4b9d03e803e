//! TLS material: certificates from PEM files, self-signed certificates (the
//! embedded DERP's own port, tests), server configs.

use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use sha2::{Digest, Sha256};

use crate::HttpError;

/// Lowercase hex SHA-256 of a certificate's DER bytes: the `<hex>` of a
/// DERPNode `CertName: "sha256-raw:<hex>"`.
pub fn cert_sha256_hex(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server config for `chain` and `key`.
///
/// ALPN offers only `http/1.1`: DERP and `/ts2021` are HTTP/1.1 upgrades, and a
/// client that offered both would otherwise be moved to h2, where upgrades do
/// not exist. (h2 with prior knowledge is still served.) Set
/// `alpn_protocols` on the result to change that.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, HttpError> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Generated certificate and key in PEM form.
struct SelfSigned {
    cert_pem: String,
    key_pem: String,
}

fn generate(names_and_ips: &[String]) -> Result<SelfSigned, HttpError> {
    let ck = rcgen::generate_simple_self_signed(names_and_ips.to_vec())?;
    Ok(SelfSigned {
        cert_pem: ck.cert.pem(),
        key_pem: ck.signing_key.serialize_pem(),
    })
}

/// A fresh self-signed certificate for the given DNS names and IP addresses
/// (IPs become IP SANs). Returns the TLS config and the SHA-256 hex of the leaf
/// DER, to advertise as `CertName: "sha256-raw:<hex>"` (or use
/// `InsecureForTests: true`).
pub fn self_signed(names_and_ips: &[String]) -> Result<(ServerConfig, String), HttpError> {
    let g = generate(names_and_ips)?;
    tls_config_from_pem(g.cert_pem.as_bytes(), g.key_pem.as_bytes(), "<generated>")
}

/// Load `cert_path`/`key_path` (PEM) if both exist; otherwise generate a
/// self-signed certificate for `names_and_ips` and write both files (the key
/// with mode 0600), so the fingerprint stays the same across restarts.
pub fn load_or_create_self_signed(
    cert_path: &Path,
    key_path: &Path,
    names_and_ips: &[String],
) -> Result<(ServerConfig, String), HttpError> {
    if cert_path.exists() && key_path.exists() {
        return load_pem_files(cert_path, key_path);
    }
    let g = generate(names_and_ips)?;
    if let Some(dir) = cert_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    if let Some(dir) = key_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    write_private(key_path, g.key_pem.as_bytes())?;
    std::fs::write(cert_path, g.cert_pem.as_bytes())?;
    tls_config_from_pem(
        g.cert_pem.as_bytes(),
        g.key_pem.as_bytes(),
        &cert_path.display().to_string(),
    )
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Load a certificate chain and private key from PEM files.
pub fn load_pem_files(
    cert_path: &Path,
    key_path: &Path,
) -> Result<(ServerConfig, String), HttpError> {
    let cert = std::fs::read(cert_path)?;
    let key = std::fs::read(key_path)?;
    let (chain, fp) = parse_chain(&cert, &cert_path.display().to_string())?;
    let key = parse_key(&key, &key_path.display().to_string())?;
    Ok((server_config(chain, key)?, fp))
}

/// A TLS config from PEM text (chain first, leaf first in the chain).
pub fn tls_config_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    what: &str,
) -> Result<(ServerConfig, String), HttpError> {
    let (chain, fp) = parse_chain(cert_pem, what)?;
    let key = parse_key(key_pem, what)?;
    Ok((server_config(chain, key)?, fp))
}

fn parse_chain(
    pem: &[u8],
    what: &str,
) -> Result<(Vec<CertificateDer<'static>>, String), HttpError> {
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut BufReader::new(pem))
        .collect::<Result<_, _>>()
        .map_err(|e| HttpError::Pem {
            path: what.into(),
            reason: e.to_string(),
        })?;
    let Some(leaf) = chain.first() else {
        return Err(HttpError::Pem {
            path: what.into(),
            reason: "no certificate found".into(),
        });
    };
    let fp = cert_sha256_hex(leaf);
    Ok((chain, fp))
}

fn parse_key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, HttpError> {
    rustls_pemfile::private_key(&mut BufReader::new(pem))
        .map_err(|e| HttpError::Pem {
            path: what.into(),
            reason: e.to_string(),
        })?
        .ok_or_else(|| HttpError::Pem {
            path: what.into(),
            reason: "no private key found".into(),
        })
}
