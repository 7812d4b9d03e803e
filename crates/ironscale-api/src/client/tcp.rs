//! The TCP endpoint of the client: the server's main listener (`server_url`
//! port) reached at a base URL, with a bearer API key, a timeout and TLS
//! (tokio-rustls, the system's CA certificates as `rustls-native-certs` finds
//! them: `SSL_CERT_FILE` / `SSL_CERT_DIR` when set, else the platform store).
//!
//! The API key is held in an [`ApiKey`], whose `Debug` never shows it; no
//! error built here contains it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use super::ClientError;

/// An API key (`hskey-api-<prefix>-<secret>`): `Debug` shows only that one is set.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into().trim().to_string())
    }
    pub(super) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// How to reach a server over TCP (`cli.address`, `cli.api_key`,
/// `cli.timeout`, `cli.insecure`).
#[derive(Clone, Debug)]
pub struct RemoteOptions {
    /// `host:port` (HTTPS assumed, as Headscale's gRPC address), or an
    /// `http://` / `https://` URL with an optional path prefix.
    pub address: String,
    pub api_key: ApiKey,
    /// For the whole exchange: connecting, TLS, the request and the answer.
    pub timeout: Duration,
    /// Skip certificate verification (anyone on the path can then read the key).
    pub insecure: bool,
}

/// A parsed, ready TCP endpoint.
#[derive(Clone)]
pub struct Remote {
    /// `scheme://host:port[/prefix]`, what messages name.
    pub(super) url: String,
    pub(super) host: String,
    pub(super) port: u16,
    /// The `Host` header: `host` with the port unless it is the scheme's default.
    pub(super) authority: String,
    /// Prepended to every request path (no trailing slash; may be empty).
    pub(super) prefix: String,
    pub(super) key: ApiKey,
    pub(super) timeout: Duration,
    pub(super) insecure: bool,
    /// `Some` for https.
    pub(super) tls: Option<Arc<ClientConfig>>,
}

impl fmt::Debug for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remote")
            .field("url", &self.url)
            .field("key", &self.key)
            .field("timeout", &self.timeout)
            .field("insecure", &self.insecure)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Remote {
    fn eq(&self, o: &Self) -> bool {
        (&self.url, &self.key, self.timeout, self.insecure)
            == (&o.url, &o.key, o.timeout, o.insecure)
    }
}
impl Eq for Remote {}

/// The address as a URL: `host:port` gets `https://`.
fn parse_address(address: &str) -> Result<url::Url, String> {
    let a = address.trim();
    if a.is_empty() {
        return Err("it is empty".into());
    }
    let text = if a.contains("://") {
        a.to_string()
    } else {
        format!("https://{a}")
    };
    let u = url::Url::parse(&text).map_err(|e| e.to_string())?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!(
            "the scheme {:?} is neither http nor https",
            u.scheme()
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("it names no host".into());
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("it carries a user name or password (give the API key as cli.api_key)".into());
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err("it has a query or fragment".into());
    }
    Ok(u)
}

impl Remote {
    pub fn new(o: RemoteOptions) -> Result<Remote, ClientError> {
        let bad = |reason: String| ClientError::Address {
            address: o.address.trim().to_string(),
            reason,
        };
        let u = parse_address(&o.address).map_err(bad)?;
        if o.api_key.0.is_empty() {
            return Err(ClientError::NoApiKey {
                url: u.as_str().trim_end_matches('/').to_string(),
            });
        }
        if !o.api_key.0.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ClientError::BadApiKey);
        }
        let https = u.scheme() == "https";
        let host = u.host_str().unwrap_or_default().to_string();
        let port = u.port_or_known_default().unwrap_or(443);
        let authority = match u.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let prefix = u.path().trim_end_matches('/').to_string();
        let url = format!("{}://{authority}{prefix}", u.scheme());
        let tls = if https {
            Some(Arc::new(tls_config(o.insecure, &url)?))
        } else {
            None
        };
        Ok(Remote {
            url,
            host: host.trim_matches(['[', ']']).to_string(),
            port,
            authority,
            prefix,
            key: o.api_key,
            timeout: o.timeout,
            insecure: o.insecure,
            tls,
        })
    }

    /// The base URL (`https://host:port[/prefix]`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the server's certificate goes unchecked (https with `insecure`).
    pub fn skips_verification(&self) -> bool {
        self.insecure && self.tls.is_some()
    }

    pub(super) fn server_name(&self) -> Result<ServerName<'static>, ClientError> {
        ServerName::try_from(self.host.clone()).map_err(|_| ClientError::Address {
            address: self.url.clone(),
            reason: format!("{:?} is no valid TLS server name", self.host),
        })
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The system's CA certificates as `rustls-native-certs` finds them
/// (`SSL_CERT_FILE` / `SSL_CERT_DIR` when set). `Err`: none could be used,
/// with what went wrong loading them (possibly empty).
pub fn system_roots() -> Result<rustls::RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(found
            .errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "));
    }
    Ok(roots)
}

fn tls_config(insecure: bool, url: &str) -> Result<ClientConfig, ClientError> {
    let tls_err = |e: rustls::Error| ClientError::TlsSetup {
        url: url.to_string(),
        reason: e.to_string(),
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?;
    let mut cfg = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate {
                provider: provider(),
            }))
            .with_no_client_auth()
    } else {
        let roots = system_roots().map_err(|why| ClientError::TlsSetup {
            url: url.to_string(),
            reason: format!(
                "no CA certificate to verify the server with{}: install the system's CA certificates or set SSL_CERT_FILE to the server's CA",
                if why.is_empty() { String::new() } else { format!(" ({why})") }
            ),
        })?;
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// `cli.insecure`: any certificate is accepted; the handshake signatures are
/// still checked (the server holds the certificate's key, whoever it is).
#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS handshake failure in words: what is wrong with the certificate.
pub(super) fn describe_tls_error(e: &std::io::Error) -> Option<String> {
    use rustls::CertificateError as C;
    let inner = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(match inner {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => "its certificate is not signed by a CA this client trusts (unknown issuer): set SSL_CERT_FILE to the server's CA certificate".into(),
            C::Expired | C::ExpiredContext { .. } => "its certificate has expired".into(),
            C::NotValidYet | C::NotValidYetContext { .. } => "its certificate is not valid yet (check the clocks)".into(),
            C::NotValidForName | C::NotValidForNameContext { .. } => "its certificate is not valid for this host name (connect with a name or address it names)".into(),
            C::Revoked => "its certificate is revoked".into(),
            // Also a certificate from another CA of the same name as a trusted one.
            C::BadSignature => "its certificate is not signed by a CA this client trusts (bad signature): set SSL_CERT_FILE to the server's CA certificate".into(),
            other => format!("its certificate is refused ({other:?})"),
        },
        other => format!("TLS handshake failed: {other}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(address: &str) -> RemoteOptions {
        RemoteOptions {
            address: address.into(),
            api_key: ApiKey::new("hskey-api-abcdefghijkl-sekrit"),
            timeout: Duration::from_secs(5),
            insecure: true,
        }
    }

    #[test]
    fn addresses() {
        let r = Remote::new(opts("h.example:50443")).expect("host:port");
        assert_eq!(
            (r.url(), r.authority.as_str(), r.port, r.tls.is_some()),
            ("https://h.example:50443", "h.example:50443", 50443, true)
        );
        let r = Remote::new(opts("http://10.1.2.3:8080/hs/")).expect("http URL");
        assert_eq!(
            (r.url(), r.prefix.as_str(), r.tls.is_some()),
            ("http://10.1.2.3:8080/hs", "/hs", false)
        );
        let r = Remote::new(opts("https://h.example")).expect("https URL");
        assert_eq!(
            (r.url(), r.port, r.authority.as_str()),
            ("https://h.example", 443, "h.example")
        );
        let r = Remote::new(opts("[::1]:8443")).expect("v6");
        assert_eq!(
            (r.host.as_str(), r.authority.as_str()),
            ("::1", "[::1]:8443")
        );
        assert!(r.server_name().is_ok());
        for bad in [
            "",
            "ftp://h:1",
            "https://u:p@h:1",
            "https://h:1/?x=1",
            "h:99999",
        ] {
            let e = Remote::new(opts(bad)).expect_err(bad);
            assert!(matches!(e, ClientError::Address { .. }), "{bad}: {e:?}");
        }
    }

    #[test]
    fn the_key_stays_secret() {
        let r = Remote::new(opts("h:1")).expect("remote");
        let shown = format!("{r:?} {:?}", opts("h:1"));
        assert!(!shown.contains("sekrit"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
        let mut o = opts("h:1");
        o.api_key = ApiKey::new("  ");
        let e = Remote::new(o).expect_err("no key");
        assert!(e.to_string().contains("cli.api_key"), "{e}");
        let mut o = opts("h:1");
        o.api_key = ApiKey::new("hskey-api-a b\u{e9}-sekrit");
        let e = Remote::new(o).expect_err("bad key");
        assert!(!format!("{e} {e:?}").contains("sekrit"), "{e:?}");
    }
}
