//! A typed client for `/api/v1` (cargo feature `client`): one method per
//! route, taking and returning the [`dto`] types the server writes.
//!
//! Transport: HTTP/1.1 on a fresh connection per request
//! ([`Endpoint::connect`]), every request through [`Client::send`]:
//!
//! * [`Endpoint::Unix`]: the local unix socket, no credentials (the server
//!   side's [`Auth::None`](crate::Auth::None)).
//! * [`Endpoint::Tcp`]: the server's main listener at a base URL
//!   ([`RemoteOptions`]: `cli.address`, `cli.api_key`, `cli.timeout`,
//!   `cli.insecure`), `Authorization: Bearer <API key>`, TLS for https
//!   ([`tcp`]), the whole exchange bounded by the timeout.
//!
//! Errors are [`ClientError`]: the server's own `{code, message}` with the
//! HTTP status, the server being absent or refusing the key, a certificate
//! it presents that is not trusted, a timeout, or an answer that does not
//! decode. None of them carries the API key.

pub mod tcp;

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{header, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};

pub use tcp::{ApiKey, Remote, RemoteOptions};

use crate::dto;

/// Where the server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// The server's local unix socket (`unix_socket` of its config).
    Unix(PathBuf),
    /// The server's main listener, with an API key (`cli.address`).
    Tcp(Remote),
}

/// A connection of either kind.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl Endpoint {
    fn describe(&self) -> String {
        match self {
            Endpoint::Unix(p) => p.display().to_string(),
            Endpoint::Tcp(r) => r.url().to_string(),
        }
    }

    async fn connect(&self) -> Result<TokioIo<Box<dyn Io>>, ClientError> {
        match self {
            Endpoint::Unix(p) => tokio::net::UnixStream::connect(p)
                .await
                .map(|s| TokioIo::new(Box::new(s) as Box<dyn Io>))
                .map_err(|e| ClientError::connect(p, e)),
            Endpoint::Tcp(r) => {
                let tcp = tokio::net::TcpStream::connect((r.host.as_str(), r.port))
                    .await
                    .map_err(|e| ClientError::Down {
                        url: r.url.clone(),
                        reason: e.to_string(),
                    })?;
                let _ = tcp.set_nodelay(true);
                let Some(tls) = &r.tls else {
                    return Ok(TokioIo::new(Box::new(tcp)));
                };
                let name = r.server_name()?;
                let s = tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| match tcp::describe_tls_error(&e) {
                        Some(reason) => ClientError::Certificate {
                            url: r.url.clone(),
                            reason,
                        },
                        None => ClientError::Down {
                            url: r.url.clone(),
                            reason: format!("TLS handshake failed: {e}"),
                        },
                    })?;
                Ok(TokioIo::new(Box::new(s)))
            }
        }
    }
}

/// What went wrong with a call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No server listens at the socket (no file, or a stale one).
    #[error("cannot reach the ironscale server at {}: is `ironscale serve` running?", .socket.display())]
    Unreachable { socket: PathBuf },
    /// The socket exists but this user may not connect to it.
    #[error("permission denied on the server socket {}: run as the server's user or a member of the socket's group", .socket.display())]
    PermissionDenied { socket: PathBuf },
    /// Any other failure to connect.
    #[error("cannot reach the ironscale server at {}: {source}", .socket.display())]
    Connect {
        socket: PathBuf,
        source: std::io::Error,
    },
    /// `cli.address` is no `host:port` or http(s) URL.
    #[error("cli.address {address:?} is not host:port or an http(s):// URL: {reason}")]
    Address { address: String, reason: String },
    /// A TCP endpoint without an API key.
    #[error("no API key for the server at {url}: set cli.api_key (or HEADSCALE_CLI_API_KEY) to a key made with `ironscale apikeys create` on the server")]
    NoApiKey { url: String },
    /// An API key with characters no header can carry (its text is not shown).
    #[error("cli.api_key is not an API key: it has spaces or characters outside ASCII (expected hskey-api-<prefix>-<secret>)")]
    BadApiKey,
    /// The TLS client could not be set up (no CA certificates).
    #[error("cannot connect to {url} over TLS: {reason}")]
    TlsSetup { url: String, reason: String },
    /// Nobody answers at the address (refused, no route, no such host).
    #[error("cannot reach the ironscale server at {url}: {reason} (is cli.address the host:port of its server_url, and is it running?)")]
    Down { url: String, reason: String },
    /// A plain http:// endpoint whose answer is no HTTP (a TLS port).
    #[error("the server at {url} does not answer HTTP: is it https:// (its server_url)?")]
    NotHttp { url: String },
    /// The server's certificate is not trusted.
    #[error("the server at {url} is not trusted: {reason} (or set cli.insecure: true to skip the check)")]
    Certificate { url: String, reason: String },
    /// No answer within `cli.timeout`.
    #[error("the server at {url} did not answer within {} (cli.timeout)", humanize(*.after))]
    Timeout { url: String, after: Duration },
    /// The server refused the API key (missing, wrong, expired or deleted).
    #[error("the server at {url} refused the API key (401): it is wrong, expired or deleted; create one with `ironscale apikeys create` on the server")]
    Unauthorized { url: String },
    /// A request that could not be built (a path that is no URI).
    #[error("invalid request {path:?}: {source}")]
    Request { path: String, source: http::Error },
    /// The HTTP exchange failed (the connection closed, a malformed answer).
    #[error("{context} with the server at {endpoint}: {source}")]
    Http {
        endpoint: String,
        context: &'static str,
        source: hyper::Error,
    },
    /// The server refused the request: its HTTP status and error body.
    #[error("{}", server_message(*.status, .message))]
    Server {
        status: StatusCode,
        /// The gRPC status code of the error body (0 when the body had none).
        code: i32,
        message: String,
    },
    /// A request body that could not be encoded.
    #[error("encoding the request: {0}")]
    Encode(#[source] serde_json::Error),
    /// A 2xx answer that is not the JSON expected.
    #[error("unexpected answer from the server: {0}")]
    Decode(#[source] serde_json::Error),
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

fn server_message(status: StatusCode, message: &str) -> String {
    if message.is_empty() {
        format!("the server answered {status}")
    } else {
        message.to_string()
    }
}

impl ClientError {
    fn connect(socket: &Path, e: std::io::Error) -> Self {
        let socket = socket.to_path_buf();
        match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                ClientError::Unreachable { socket }
            }
            std::io::ErrorKind::PermissionDenied => ClientError::PermissionDenied { socket },
            _ => ClientError::Connect { socket, source: e },
        }
    }

    /// The local socket has no server behind it (as opposed to refusing).
    /// A remote server that cannot be reached is not "unreachable" here:
    /// callers that fall back to local work do so only for the socket.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            ClientError::Unreachable { .. } | ClientError::Connect { .. }
        )
    }

    /// The HTTP status of a server's refusal.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Server { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// `GET /api/v1/user` filters; a user must match every one given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserFilter {
    pub id: Option<u64>,
    pub name: Option<String>,
    pub email: Option<String>,
}

/// A client of one server.
#[derive(Debug, Clone)]
pub struct Client {
    endpoint: Endpoint,
}

impl Client {
    /// A client of a server's main listener (`cli.address`), checked here:
    /// the address parses, the key is set, TLS has roots to verify with.
    pub fn remote(o: RemoteOptions) -> Result<Self> {
        Ok(Client {
            endpoint: Endpoint::Tcp(Remote::new(o)?),
        })
    }

    /// A client of the server listening on this unix socket.
    pub fn unix(socket: impl Into<PathBuf>) -> Self {
        Client {
            endpoint: Endpoint::Unix(socket.into()),
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    // ----- users -----

    pub async fn list_users(&self, filter: &UserFilter) -> Result<Vec<dto::User>> {
        let mut q = Vec::new();
        if let Some(id) = filter.id {
            q.push(("id", id.to_string()));
        }
        if let Some(n) = &filter.name {
            q.push(("name", n.clone()));
        }
        if let Some(e) = &filter.email {
            q.push(("email", e.clone()));
        }
        let r: dto::ListUsersResponse = self.get(&with_query("/api/v1/user", &q)).await?;
        Ok(r.users)
    }

    pub async fn create_user(&self, req: &dto::CreateUserRequest) -> Result<dto::User> {
        let r: dto::UserResponse = self.send(Method::POST, "/api/v1/user", Some(req)).await?;
        Ok(r.user)
    }

    pub async fn rename_user(&self, id: u64, new_name: &str) -> Result<dto::User> {
        let path = format!("/api/v1/user/{id}/rename/{}", enc(new_name));
        let r: dto::UserResponse = self.post(&path).await?;
        Ok(r.user)
    }

    pub async fn delete_user(&self, id: u64) -> Result<()> {
        let _: dto::Empty = self.delete(&format!("/api/v1/user/{id}")).await?;
        Ok(())
    }

    // ----- pre-auth keys -----

    /// Every key, or only those of `user` (a name or an id).
    pub async fn list_preauth_keys(&self, user: Option<&str>) -> Result<Vec<dto::PreAuthKey>> {
        let q: Vec<(&str, String)> = user.map(|u| ("user", u.to_string())).into_iter().collect();
        let r: dto::ListPreAuthKeysResponse =
            self.get(&with_query("/api/v1/preauthkey", &q)).await?;
        Ok(r.pre_auth_keys)
    }

    /// The new key; its `key` is the full secret, shown only in this answer.
    pub async fn create_preauth_key(
        &self,
        req: &dto::CreatePreAuthKeyRequest,
    ) -> Result<dto::PreAuthKey> {
        let r: dto::PreAuthKeyResponse = self
            .send(Method::POST, "/api/v1/preauthkey", Some(req))
            .await?;
        Ok(r.pre_auth_key)
    }

    pub async fn expire_preauth_key(&self, id: u64) -> Result<()> {
        let req = dto::ExpirePreAuthKeyRequest {
            id: Some(dto::LooseId(id.to_string())),
            ..Default::default()
        };
        let _: dto::Empty = self
            .send(Method::POST, "/api/v1/preauthkey/expire", Some(&req))
            .await?;
        Ok(())
    }

    // ----- API keys -----

    /// Every API key (prefixes only).
    pub async fn list_api_keys(&self) -> Result<Vec<dto::ApiKey>> {
        let r: dto::ListApiKeysResponse = self.get("/api/v1/apikey").await?;
        Ok(r.api_keys)
    }

    /// A new API key; the answer is the key itself, shown only now.
    pub async fn create_api_key(&self, expiration: Option<dto::Timestamp>) -> Result<String> {
        let req = dto::CreateApiKeyRequest { expiration };
        let r: dto::CreateApiKeyResponse = self
            .send(Method::POST, "/api/v1/apikey", Some(&req))
            .await?;
        Ok(r.api_key)
    }

    /// Expire a key by its prefix (bare or as listed) or its id.
    pub async fn expire_api_key(&self, prefix: Option<&str>, id: Option<u64>) -> Result<()> {
        let req = dto::ExpireApiKeyRequest {
            prefix: prefix.map(str::to_owned),
            id: id.map(|i| dto::LooseId(i.to_string())),
        };
        let _: dto::Empty = self
            .send(Method::POST, "/api/v1/apikey/expire", Some(&req))
            .await?;
        Ok(())
    }

    /// Delete a key by its prefix (bare or as listed) or its id.
    pub async fn delete_api_key(&self, prefix: Option<&str>, id: Option<u64>) -> Result<()> {
        let path = match (prefix, id) {
            (Some(p), _) => format!("/api/v1/apikey/{}", enc(p)),
            (None, Some(i)) => format!("/api/v1/apikey/?id={i}"),
            (None, None) => "/api/v1/apikey/".to_string(),
        };
        let _: dto::Empty = self.delete(&path).await?;
        Ok(())
    }

    // ----- nodes -----

    /// Every node, or only those owned by `user` (a name or an id).
    pub async fn list_nodes(&self, user: Option<&str>) -> Result<Vec<dto::Node>> {
        let q: Vec<(&str, String)> = user.map(|u| ("user", u.to_string())).into_iter().collect();
        let r: dto::ListNodesResponse = self.get(&with_query("/api/v1/node", &q)).await?;
        Ok(r.nodes)
    }

    pub async fn get_node(&self, id: u64) -> Result<dto::Node> {
        let r: dto::NodeResponse = self.get(&format!("/api/v1/node/{id}")).await?;
        Ok(r.node)
    }

    pub async fn delete_node(&self, id: u64) -> Result<()> {
        let _: dto::Empty = self.delete(&format!("/api/v1/node/{id}")).await?;
        Ok(())
    }

    /// Expire the node's key at `expiry` (now when `None`).
    pub async fn expire_node(&self, id: u64, expiry: Option<dto::Timestamp>) -> Result<dto::Node> {
        let q: Vec<(&str, String)> = expiry
            .map(|ts| ("expiry", dto::format_ts(&ts)))
            .into_iter()
            .collect();
        let path = with_query(&format!("/api/v1/node/{id}/expire"), &q);
        let r: dto::NodeResponse = self.post(&path).await?;
        Ok(r.node)
    }

    /// Device approval: let the node in (`POST /api/v1/node/{id}/approve`).
    pub async fn approve_node(&self, id: u64) -> Result<dto::Node> {
        let r: dto::NodeResponse = self.post(&format!("/api/v1/node/{id}/approve")).await?;
        Ok(r.node)
    }

    pub async fn rename_node(&self, id: u64, new_name: &str) -> Result<dto::Node> {
        let path = format!("/api/v1/node/{id}/rename/{}", enc(new_name));
        let r: dto::NodeResponse = self.post(&path).await?;
        Ok(r.node)
    }

    pub async fn set_tags(&self, id: u64, tags: Vec<String>) -> Result<dto::Node> {
        let req = dto::SetTagsRequest { tags };
        let path = format!("/api/v1/node/{id}/tags");
        let r: dto::NodeResponse = self.send(Method::POST, &path, Some(&req)).await?;
        Ok(r.node)
    }

    pub async fn approve_routes(&self, id: u64, routes: Vec<String>) -> Result<dto::Node> {
        let req = dto::ApproveRoutesRequest { routes };
        let path = format!("/api/v1/node/{id}/approve_routes");
        let r: dto::NodeResponse = self.send(Method::POST, &path, Some(&req)).await?;
        Ok(r.node)
    }

    /// `POST /api/v1/node/{id}/user` `{"user": <user id>}`: give the node
    /// to another user.
    pub async fn move_node(&self, id: u64, user_id: u64) -> Result<dto::Node> {
        let req = dto::MoveNodeRequest {
            user: Some(dto::LooseId(user_id.to_string())),
        };
        let path = format!("/api/v1/node/{id}/user");
        let r: dto::NodeResponse = self.send(Method::POST, &path, Some(&req)).await?;
        Ok(r.node)
    }

    /// `POST /api/v1/node/backfillips?confirmed=true`: give every node an
    /// address of each configured family it lacks; what changed.
    pub async fn backfill_node_ips(&self) -> Result<Vec<String>> {
        let r: dto::BackfillNodeIpsResponse =
            self.post("/api/v1/node/backfillips?confirmed=true").await?;
        Ok(r.changes)
    }

    // ----- interactive registrations -----

    /// Complete the pending registration `key` (the id of its login URL) for
    /// `user` (a name): the new node (`nodes register --user U --key K`).
    pub async fn register_node(&self, user: &str, key: &str) -> Result<dto::Node> {
        let q = [("user", user.to_string()), ("key", key.to_string())];
        let r: dto::NodeResponse = self.post(&with_query("/api/v1/node/register", &q)).await?;
        Ok(r.node)
    }

    /// The same through Headscale 0.27+'s `POST /api/v1/auth/register`.
    pub async fn auth_register(&self, user: &str, auth_id: &str) -> Result<dto::Node> {
        let req = dto::AuthRegisterRequest {
            user: user.to_string(),
            auth_id: auth_id.to_string(),
        };
        let r: dto::NodeResponse = self
            .send(Method::POST, "/api/v1/auth/register", Some(&req))
            .await?;
        Ok(r.node)
    }

    /// The registrations waiting to be completed, oldest first.
    pub async fn list_pending_registrations(&self) -> Result<Vec<dto::PendingRegistration>> {
        let r: dto::ListPendingRegistrationsResponse = self.get("/api/v1/auth/pending").await?;
        Ok(r.registrations)
    }

    /// Deny the pending registration `auth_id`; its client is told.
    pub async fn auth_reject(&self, auth_id: &str) -> Result<()> {
        let req = dto::AuthIdRequest {
            auth_id: auth_id.to_string(),
        };
        let _: dto::Empty = self
            .send(Method::POST, "/api/v1/auth/reject", Some(&req))
            .await?;
        Ok(())
    }

    // ----- policy -----

    pub async fn get_policy(&self) -> Result<dto::PolicyResponse> {
        self.get("/api/v1/policy").await
    }

    /// Install `policy` (HuJSON; policy.mode: database): the policy now in force.
    pub async fn set_policy(&self, policy: &str) -> Result<dto::PolicyResponse> {
        let req = dto::PolicyRequest {
            policy: policy.to_string(),
        };
        self.send(Method::PUT, "/api/v1/policy", Some(&req)).await
    }

    /// Check `policy` against the live tailnet without installing it.
    pub async fn check_policy(&self, policy: &str) -> Result<()> {
        let req = dto::PolicyRequest {
            policy: policy.to_string(),
        };
        let _: dto::Empty = self
            .send(Method::POST, "/api/v1/policy/check", Some(&req))
            .await?;
        Ok(())
    }

    // ----- health -----

    /// The server's health; an unhealthy server (503) answers it too.
    pub async fn health(&self) -> Result<dto::HealthResponse> {
        let (status, bytes) = self
            .exchange(Method::GET, "/api/v1/health", Bytes::new())
            .await?;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            if let Ok(h) = serde_json::from_slice::<dto::HealthResponse>(&bytes) {
                return Ok(h);
            }
        }
        parse_answer(status, &bytes)
    }

    // ----- transport -----

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send::<(), T>(Method::GET, path, None).await
    }

    async fn post<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send::<(), T>(Method::POST, path, None).await
    }

    async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send::<(), T>(Method::DELETE, path, None).await
    }

    /// One request with an optional JSON body; the decoded 2xx answer.
    async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T> {
        let body = match body {
            Some(b) => Bytes::from(serde_json::to_vec(b).map_err(ClientError::Encode)?),
            None => Bytes::new(),
        };
        let (status, bytes) = self.exchange(method, path, body).await?;
        parse_answer(status, &bytes)
    }

    /// One HTTP/1.1 exchange on a fresh connection: the status and body.
    /// Over TCP: bounded by the timeout, and a 401 is [`ClientError::Unauthorized`].
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes)> {
        let Endpoint::Tcp(r) = &self.endpoint else {
            return self.exchange_once(method, path, body).await;
        };
        let (status, bytes) =
            match tokio::time::timeout(r.timeout, self.exchange_once(method, path, body)).await {
                Ok(res) => res?,
                Err(_) => {
                    return Err(ClientError::Timeout {
                        url: r.url.clone(),
                        after: r.timeout,
                    })
                }
            };
        if status == StatusCode::UNAUTHORIZED {
            return Err(ClientError::Unauthorized { url: r.url.clone() });
        }
        Ok((status, bytes))
    }

    async fn exchange_once(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes)> {
        let io = self.endpoint.connect().await?;
        let http = |context: &'static str| {
            let endpoint = &self.endpoint;
            move |source: hyper::Error| match endpoint {
                Endpoint::Tcp(r) if r.tls.is_none() && source.is_parse() => {
                    ClientError::NotHttp { url: r.url.clone() }
                }
                _ => ClientError::Http {
                    endpoint: endpoint.describe(),
                    context,
                    source,
                },
            }
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(http("HTTP handshake"))?;
        let driver = tokio::spawn(conn);
        let mut req = Request::builder().method(method);
        req = match &self.endpoint {
            Endpoint::Unix(_) => req.uri(path).header(header::HOST, "localhost"),
            Endpoint::Tcp(r) => {
                let mut auth = header::HeaderValue::try_from(format!("Bearer {}", r.key.expose()))
                    .map_err(|_| ClientError::BadApiKey)?;
                auth.set_sensitive(true);
                req.uri(format!("{}{path}", r.prefix))
                    .header(header::HOST, r.authority.as_str())
                    .header(header::AUTHORIZATION, auth)
            }
        };
        let req = req
            .header(header::ACCEPT, "application/json")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body));
        let req = req.map_err(|source| ClientError::Request {
            path: path.to_string(),
            source,
        })?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(http("sending the request"))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(http("reading the answer"))?
            .to_bytes();
        driver.abort();
        Ok((status, bytes))
    }

    // ----- audit log -----

    /// Audit log entries written at or after `since` (all when `None`),
    /// newest first, at most `limit` (the server's default, 100, when `None`).
    /// `GET /api/v1/policy/explain`.
    pub async fn explain_policy(
        &self,
        src: &str,
        dst: &str,
        port: u16,
    ) -> Result<dto::ExplainResponse> {
        let q = [
            ("src", src.to_string()),
            ("dst", dst.to_string()),
            ("port", port.to_string()),
        ];
        self.get(&with_query("/api/v1/policy/explain", &q)).await
    }

    /// `GET /api/v1/doctor[?node=ID]`.
    pub async fn doctor(&self, node: Option<u64>) -> Result<dto::DoctorResponse> {
        let q: Vec<(&str, String)> = node.map(|n| ("node", n.to_string())).into_iter().collect();
        self.get(&with_query("/api/v1/doctor", &q)).await
    }

    /// `GET /api/v1/netcheck`: every node's reported network and the DERP regions.
    pub async fn netcheck(&self) -> Result<dto::NetcheckResponse> {
        self.get("/api/v1/netcheck").await
    }

    pub async fn list_audit(
        &self,
        since: Option<dto::Timestamp>,
        limit: Option<u32>,
    ) -> Result<Vec<dto::AuditEntry>> {
        let mut q: Vec<(&str, String)> = Vec::new();
        if let Some(t) = since {
            q.push(("since", dto::format_ts(&t)));
        }
        if let Some(n) = limit {
            q.push(("limit", n.to_string()));
        }
        let r: dto::ListAuditResponse = self.get(&with_query("/api/v1/audit", &q)).await?;
        Ok(r.entries)
    }
}

/// A 2xx JSON body (empty reads as `{}`), or the server's error.
fn parse_answer<T: DeserializeOwned>(status: StatusCode, bytes: &[u8]) -> Result<T> {
    if status.is_success() {
        let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { bytes };
        return serde_json::from_slice(bytes).map_err(ClientError::Decode);
    }
    Err(match serde_json::from_slice::<dto::ErrorBody>(bytes) {
        Ok(e) if !e.message.is_empty() => ClientError::Server {
            status,
            code: e.code,
            message: e.message,
        },
        _ => ClientError::Server {
            status,
            code: 0,
            message: String::from_utf8_lossy(bytes).trim().to_string(),
        },
    })
}

/// Percent-encode everything but RFC 3986's unreserved characters.
fn enc(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn with_query(path: &str, q: &[(&str, String)]) -> String {
    if q.is_empty() {
        return path.to_string();
    }
    let qs: Vec<String> = q
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect();
    format!("{path}?{}", qs.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn queries_are_encoded() {
        assert_eq!(
            with_query("/u", &[("name", "a+b@x y".into())]),
            "/u?name=a%2Bb%40x%20y"
        );
        assert_eq!(with_query("/u", &[]), "/u");
    }

    #[test]
    fn server_errors_carry_the_message() {
        let e = parse_answer::<Value>(
            StatusCode::NOT_FOUND,
            br#"{"code":5,"message":"user \"bob\" not found","details":[]}"#,
        )
        .expect_err("an error");
        assert_eq!(e.to_string(), "user \"bob\" not found");
        assert_eq!(e.status(), Some(StatusCode::NOT_FOUND));
        assert!(matches!(e, ClientError::Server { code: 5, .. }), "{e:?}");
        let e = parse_answer::<Value>(StatusCode::BAD_GATEWAY, b"").expect_err("an error");
        assert_eq!(e.to_string(), "the server answered 502 Bad Gateway");
        assert_eq!(
            parse_answer::<Value>(StatusCode::OK, b"").expect("ok"),
            json!({})
        );
        let e = parse_answer::<dto::UserResponse>(StatusCode::OK, b"{\"user\": 3}")
            .expect_err("not a user");
        assert!(matches!(e, ClientError::Decode(_)), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("unexpected answer from the server"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn missing_socket_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("nope.sock");
        let c = Client::unix(&sock);
        let e = c
            .list_users(&UserFilter::default())
            .await
            .expect_err("no server");
        assert_eq!(
            e.to_string(),
            format!(
                "cannot reach the ironscale server at {}: is `ironscale serve` running?",
                sock.display()
            )
        );
        assert!(e.is_unreachable());
        // A stale socket file with nobody listening: the same message.
        drop(std::os::unix::net::UnixListener::bind(&sock).expect("bind"));
        let e = c.health().await.expect_err("no server");
        assert!(
            e.to_string().contains("is `ironscale serve` running?"),
            "{e}"
        );
        assert!(matches!(e, ClientError::Unreachable { .. }), "{e:?}");
    }

    /// The client against the real router served on a temporary socket.
    mod live {
        use super::*;
        use ironscale_keys::PrivateKey;
        use ironscale_state::State;
        use ironscale_types::UserRef;
        use ironscale_wire as wire;

        struct Server {
            _dir: tempfile::TempDir,
            state: State,
            client: Client,
            stop: Option<tokio::sync::oneshot::Sender<()>>,
        }

        impl Drop for Server {
            fn drop(&mut self) {
                if let Some(s) = self.stop.take() {
                    let _ = s.send(());
                }
            }
        }

        async fn server() -> Server {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = ironscale_store::Store::open(&ironscale_store::sqlite_config(
                dir.path().join("db.sqlite"),
            ))
            .await
            .expect("store");
            let settings = ironscale_state::Settings {
                policy_in_database: true,
                ..Default::default()
            };
            let state = State::load(store, settings, Default::default())
                .await
                .expect("state");
            let sock = dir.path().join("ironscale.sock");
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn({
                let (sock, app) = (sock.clone(), crate::router(state.clone()));
                async move {
                    let _ = ironscale_http::serve_unix(&sock, 0o700, app, async {
                        let _ = rx.await;
                    })
                    .await;
                }
            });
            let client = Client::unix(&sock);
            for _ in 0..500 {
                if client.health().await.is_ok() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Server {
                _dir: dir,
                state,
                client,
                stop: Some(tx),
            }
        }

        /// Register a node named `host` with a key of `user`.
        async fn register(state: &State, host: &str, user: &str) -> u64 {
            let (_, key) = state
                .create_preauth_key(
                    Some(&UserRef::Name(user.into())),
                    false,
                    false,
                    None,
                    vec![],
                )
                .await
                .expect("key");
            let req = wire::RegisterRequest {
                version: 100,
                node_key: PrivateKey::generate().node_public(),
                auth: Some(wire::RegisterResponseAuth { auth_key: key }),
                hostinfo: Some(json!({"Hostname": host})),
                ..Default::default()
            };
            let out = state
                .register(PrivateKey::generate().machine_public(), &req)
                .await;
            out.node()
                .unwrap_or_else(|| panic!("registration refused: {out:?}"))
                .id
                .0
        }

        #[tokio::test]
        async fn users_and_keys() {
            let s = server().await;
            let c = &s.client;
            assert!(c.health().await.expect("health").database_connectivity);
            let alice = c
                .create_user(&dto::CreateUserRequest {
                    name: "alice".into(),
                    email: "a@example.com".into(),
                    ..Default::default()
                })
                .await
                .expect("create");
            assert_eq!((alice.id, alice.name.as_str()), (1, "alice"));
            let e = c
                .create_user(&dto::CreateUserRequest {
                    name: "alice".into(),
                    ..Default::default()
                })
                .await
                .expect_err("duplicate");
            assert_eq!(e.status(), Some(StatusCode::CONFLICT), "{e}");
            assert!(
                matches!(&e, ClientError::Server { code: dto::code::ALREADY_EXISTS, message, .. } if message.contains("already exists")),
                "{e:?}"
            );
            let bob = c
                .create_user(&dto::CreateUserRequest {
                    name: "bob".into(),
                    ..Default::default()
                })
                .await
                .expect("create");

            let all = c.list_users(&UserFilter::default()).await.expect("list");
            assert_eq!(all.iter().map(|u| u.id).collect::<Vec<_>>(), [1, 2]);
            let by_name = UserFilter {
                name: Some("bob".into()),
                ..Default::default()
            };
            assert_eq!(
                c.list_users(&by_name).await.expect("list"),
                std::slice::from_ref(&bob)
            );
            let by_email = UserFilter {
                email: Some("a@example.com".into()),
                ..Default::default()
            };
            assert_eq!(
                c.list_users(&by_email).await.expect("list"),
                std::slice::from_ref(&alice)
            );
            let none = UserFilter {
                id: Some(1),
                name: Some("bob".into()),
                ..Default::default()
            };
            assert!(c.list_users(&none).await.expect("list").is_empty());

            // A new name that needs percent-encoding in the path.
            let renamed = c
                .rename_user(bob.id, "rob ert")
                .await
                .expect_err("bad name");
            assert_eq!(renamed.status(), Some(StatusCode::BAD_REQUEST), "{renamed}");
            let robert = c.rename_user(bob.id, "robert").await.expect("rename");
            assert_eq!((robert.id, robert.name.as_str()), (bob.id, "robert"));

            let key = c
                .create_preauth_key(&dto::CreatePreAuthKeyRequest {
                    user: Some(dto::LooseId(alice.id.to_string())),
                    reusable: true,
                    ..Default::default()
                })
                .await
                .expect("key");
            assert!(key.reusable && key.key.len() > 20, "{key:?}");
            assert_eq!(key.user.as_ref().map(|u| u.id), Some(alice.id));
            let tagged = c
                .create_preauth_key(&dto::CreatePreAuthKeyRequest {
                    acl_tags: vec!["tag:web".into()],
                    ..Default::default()
                })
                .await
                .expect("tagged key");
            let keys = c.list_preauth_keys(None).await.expect("list");
            assert_eq!(
                keys.iter().map(|k| k.id).collect::<Vec<_>>(),
                [key.id, tagged.id]
            );
            assert!(
                keys.iter().all(|k| k.key.ends_with("-***")),
                "listings mask keys"
            );
            let mine = c.list_preauth_keys(Some("alice")).await.expect("list");
            assert_eq!(mine.iter().map(|k| k.id).collect::<Vec<_>>(), [key.id]);
            let by_id = c.list_preauth_keys(Some("1")).await.expect("list");
            assert_eq!(by_id.iter().map(|k| k.id).collect::<Vec<_>>(), [key.id]);
            c.expire_preauth_key(key.id).await.expect("expire");
            let k = c.list_preauth_keys(Some("alice")).await.expect("list");
            assert!(
                k[0].expiration.is_some_and(|e| e <= chrono::Utc::now()),
                "{k:?}"
            );
            let e = c.expire_preauth_key(99).await.expect_err("no key");
            assert_eq!(e.status(), Some(StatusCode::NOT_FOUND), "{e}");

            c.delete_user(robert.id).await.expect("delete");
            let e = c.delete_user(robert.id).await.expect_err("gone");
            assert_eq!(e.status(), Some(StatusCode::NOT_FOUND), "{e}");
            assert_eq!(
                c.list_users(&UserFilter::default()).await.expect("list"),
                [alice]
            );
        }

        #[tokio::test]
        async fn nodes_and_policy() {
            let s = server().await;
            let c = &s.client;
            s.state.create_user("alice", "", "").await.expect("user");
            s.state.create_user("bob", "", "").await.expect("user");
            let a = register(&s.state, "laptop", "alice").await;
            let b = register(&s.state, "desktop", "bob").await;

            let all = c.list_nodes(None).await.expect("list");
            assert_eq!(all.iter().map(|n| n.id).collect::<Vec<_>>(), [a, b]);
            let bobs = c.list_nodes(Some("bob")).await.expect("list");
            assert_eq!(bobs.iter().map(|n| n.id).collect::<Vec<_>>(), [b]);
            let e = c.list_nodes(Some("ghost")).await.expect_err("no user");
            assert_eq!(e.status(), Some(StatusCode::NOT_FOUND), "{e}");

            let n = c.get_node(a).await.expect("get");
            assert_eq!(
                (n.name.as_str(), n.user.as_ref().map(|u| u.name.as_str())),
                ("laptop", Some("alice"))
            );
            assert_eq!(n.register_method, dto::REGISTER_METHOD_AUTH_KEY);
            let e = c.get_node(99).await.expect_err("no node");
            assert!(
                matches!(
                    &e,
                    ClientError::Server {
                        status: StatusCode::NOT_FOUND,
                        code: dto::code::NOT_FOUND,
                        ..
                    }
                ),
                "{e:?}"
            );

            let n = c.rename_node(a, "web-1").await.expect("rename");
            assert_eq!(n.given_name, "web-1");
            let when = chrono::Utc::now() + chrono::Duration::hours(1);
            let n = c.expire_node(a, Some(when)).await.expect("expire");
            assert_eq!(n.expiry.map(|t| t.timestamp()), Some(when.timestamp()));
            let n = c.expire_node(a, None).await.expect("expire now");
            assert!(n.expiry.is_some_and(|t| t <= chrono::Utc::now()), "{n:?}");
            let n = c.approve_routes(b, vec![]).await.expect("routes");
            assert!(n.approved_routes.is_empty());
            let n = c.approve_node(b).await.expect("approve");
            assert_eq!(n.id, b);
            let e = c.approve_node(99).await.expect_err("no node");
            assert_eq!(e.status(), Some(StatusCode::NOT_FOUND), "{e}");
            let e = c
                .approve_routes(b, vec!["not-a-route".into()])
                .await
                .expect_err("bad route");
            assert_eq!(e.status(), Some(StatusCode::BAD_REQUEST), "{e}");

            // Policy: nothing stored (Headscale's "acl policy not found"), then a
            // policy defining tag:web.
            let e = c.get_policy().await.expect_err("no policy stored");
            assert_eq!(e.status(), Some(StatusCode::NOT_FOUND), "{e}");
            assert!(e.to_string().contains("acl policy not found"), "{e}");
            let text = r#"{"tagOwners": {"tag:web": ["alice@"]}, "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#;
            let bad = r#"{"acls": [{"action": "accept", "src": ["group:nope"], "dst": ["*:*"]}]}"#;
            c.check_policy(text).await.expect("valid");
            let e = c.check_policy(bad).await.expect_err("invalid");
            assert!(e.to_string().contains("group:nope"), "{e}");
            let e = c.get_policy().await.expect_err("a check installs nothing");
            assert_eq!(e.status(), Some(StatusCode::NOT_FOUND), "{e}");
            let set = c.set_policy(text).await.expect("set");
            assert_eq!(set.policy, text);
            assert!(set.updated_at.is_some());
            assert_eq!(c.get_policy().await.expect("policy"), set);
            let e = c.set_policy(bad).await.expect_err("refused");
            assert_eq!(e.status(), Some(StatusCode::BAD_REQUEST), "{e}");

            let n = c.set_tags(a, vec!["tag:web".into()]).await.expect("tags");
            assert_eq!(n.tags, ["tag:web"]);
            assert!(n.user.is_none(), "a tagged node has no owner");
            let e = c
                .set_tags(a, vec!["tag:undefined".into()])
                .await
                .expect_err("undefined tag");
            assert!(e.to_string().contains("tagOwners"), "{e}");

            c.delete_node(b).await.expect("delete");
            let e = c.delete_node(b).await.expect_err("gone");
            assert_eq!(e.status(), Some(StatusCode::NOT_FOUND), "{e}");
            assert_eq!(c.list_nodes(None).await.expect("list").len(), 1);
        }
    }
}
