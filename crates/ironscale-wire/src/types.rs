use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ironscale_keys::{DiscoPublic, MachinePublic, NodePublic};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::gotime;

/// Deserialize `null` as the type's default (Go encodes nil slices/maps as null).
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn is_false(b: &bool) -> bool {
    !*b
}
fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

/// `tailcfg.SSHAction`: what control answers at an SSH rule's
/// `holdAndDelegate` URL (fetched by the destination's `tailscaled` over
/// Noise). `accept` or `reject` is final; otherwise `holdAndDelegate` is the
/// next URL to poll. `message` is shown to the SSH user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshAction {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub reject: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub accept: bool,
    /// Nanoseconds (Go's `time.Duration`); zero: no limit.
    #[serde(
        rename = "sessionDuration",
        default,
        skip_serializing_if = "is_zero_i64"
    )]
    pub session_duration: i64,
    #[serde(
        rename = "allowAgentForwarding",
        default,
        skip_serializing_if = "is_false"
    )]
    pub allow_agent_forwarding: bool,
    #[serde(
        rename = "holdAndDelegate",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub hold_and_delegate: String,
    #[serde(
        rename = "allowLocalPortForwarding",
        default,
        skip_serializing_if = "is_false"
    )]
    pub allow_local_port_forwarding: bool,
    #[serde(
        rename = "allowRemotePortForwarding",
        default,
        skip_serializing_if = "is_false"
    )]
    pub allow_remote_port_forwarding: bool,
}

/// `GET /key` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OverTlsPublicKeyResponse {
    #[serde(rename = "legacyPublicKey")]
    pub legacy_public_key: MachinePublic,
    #[serde(rename = "publicKey")]
    pub public_key: MachinePublic,
}

#[derive(Clone, Default, Serialize, Deserialize)]
pub struct RegisterResponseAuth {
    #[serde(rename = "AuthKey", default, deserialize_with = "nullable")]
    pub auth_key: String,
}

/// The pre-auth key is a secret: `Debug` (and so any `{:?}` of a
/// RegisterRequest) shows only whether one is there.
impl std::fmt::Debug for RegisterResponseAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterResponseAuth")
            .field(
                "auth_key",
                &if self.auth_key.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .finish()
    }
}

/// `POST /machine/register` body.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RegisterRequest {
    #[serde(rename = "Version", default)]
    pub version: u32,
    #[serde(rename = "NodeKey", default)]
    pub node_key: NodePublic,
    #[serde(rename = "OldNodeKey", default)]
    pub old_node_key: NodePublic,
    #[serde(rename = "Auth", default)]
    pub auth: Option<RegisterResponseAuth>,
    #[serde(rename = "Expiry", default, with = "gotime::opt")]
    pub expiry: Option<DateTime<Utc>>,
    #[serde(rename = "Followup", default, deserialize_with = "nullable")]
    pub followup: String,
    #[serde(rename = "Hostinfo", alias = "HostInfo", default)]
    pub hostinfo: Option<Value>,
    #[serde(rename = "Ephemeral", default, deserialize_with = "nullable")]
    pub ephemeral: bool,
}

impl RegisterRequest {
    pub fn auth_key(&self) -> Option<&str> {
        self.auth
            .as_ref()
            .map(|a| a.auth_key.as_str())
            .filter(|k| !k.is_empty())
    }
}

/// `User` in RegisterResponse.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    #[serde(rename = "ID")]
    pub id: i64,
    #[serde(rename = "DisplayName")]
    pub display_name: String,
    #[serde(rename = "ProfilePicURL")]
    pub profile_pic_url: String,
    #[serde(rename = "Created", with = "gotime::opt")]
    pub created: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Login {
    #[serde(rename = "ID")]
    pub id: i64,
    #[serde(rename = "Provider")]
    pub provider: String,
    #[serde(rename = "LoginName")]
    pub login_name: String,
    #[serde(rename = "DisplayName")]
    pub display_name: String,
    #[serde(rename = "ProfilePicURL")]
    pub profile_pic_url: String,
}

/// `POST /machine/register` answer. Every field is always emitted (tailscale-rs needs them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterResponse {
    #[serde(rename = "User")]
    pub user: User,
    #[serde(rename = "Login")]
    pub login: Login,
    #[serde(rename = "NodeKeyExpired")]
    pub node_key_expired: bool,
    #[serde(rename = "MachineAuthorized")]
    pub machine_authorized: bool,
    #[serde(rename = "AuthURL")]
    pub auth_url: String,
    #[serde(rename = "NodeKeySignature")]
    pub node_key_signature: Option<String>,
    #[serde(rename = "Error")]
    pub error: String,
}

impl RegisterResponse {
    pub fn empty() -> Self {
        RegisterResponse {
            user: User {
                id: 0,
                display_name: String::new(),
                profile_pic_url: String::new(),
                created: None,
            },
            login: Login {
                id: 0,
                provider: String::new(),
                login_name: String::new(),
                display_name: String::new(),
                profile_pic_url: String::new(),
            },
            node_key_expired: false,
            machine_authorized: false,
            auth_url: String::new(),
            node_key_signature: None,
            error: String::new(),
        }
    }
    pub fn error(msg: impl Into<String>) -> Self {
        RegisterResponse {
            error: msg.into(),
            ..Self::empty()
        }
    }
}

/// `POST /machine/map` body.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct MapRequest {
    #[serde(rename = "Version", default)]
    pub version: u32,
    #[serde(rename = "Compress", default, deserialize_with = "nullable")]
    pub compress: String,
    #[serde(rename = "KeepAlive", default, deserialize_with = "nullable")]
    pub keep_alive: bool,
    #[serde(rename = "NodeKey", default)]
    pub node_key: NodePublic,
    #[serde(rename = "DiscoKey", default)]
    pub disco_key: DiscoPublic,
    #[serde(rename = "Stream", default, deserialize_with = "nullable")]
    pub stream: bool,
    #[serde(rename = "OmitPeers", default, deserialize_with = "nullable")]
    pub omit_peers: bool,
    #[serde(rename = "Hostinfo", alias = "HostInfo", default)]
    pub hostinfo: Option<Value>,
    #[serde(rename = "Endpoints", default)]
    pub endpoints: Option<Vec<String>>,
    #[serde(rename = "EndpointTypes", default)]
    pub endpoint_types: Option<Vec<i32>>,
    #[serde(rename = "DebugFlags", default, deserialize_with = "nullable")]
    pub debug_flags: Vec<String>,
}

/// A node as sent to clients (self or peer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    #[serde(rename = "ID")]
    pub id: i64,
    #[serde(rename = "StableID")]
    pub stable_id: String,
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "User")]
    pub user: i64,
    #[serde(rename = "Key")]
    pub key: NodePublic,
    #[serde(rename = "KeyExpiry", with = "gotime::opt")]
    pub key_expiry: Option<DateTime<Utc>>,
    #[serde(rename = "Machine")]
    pub machine: MachinePublic,
    #[serde(rename = "DiscoKey")]
    pub disco_key: DiscoPublic,
    #[serde(rename = "Addresses")]
    pub addresses: Vec<String>,
    #[serde(rename = "AllowedIPs")]
    pub allowed_ips: Vec<String>,
    #[serde(rename = "Endpoints", default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    /// Legacy home DERP, `127.3.3.40:<region>` (capver < 111).
    #[serde(rename = "DERP", default, skip_serializing_if = "String::is_empty")]
    pub derp: String,
    #[serde(rename = "HomeDERP", default, skip_serializing_if = "is_zero_i32")]
    pub home_derp: i32,
    #[serde(rename = "Hostinfo")]
    pub hostinfo: Value,
    #[serde(rename = "Created", with = "gotime::opt")]
    pub created: Option<DateTime<Utc>>,
    #[serde(rename = "Cap", default)]
    pub cap: u32,
    #[serde(rename = "Tags", default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(
        rename = "PrimaryRoutes",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub primary_routes: Vec<String>,
    #[serde(
        rename = "LastSeen",
        default,
        with = "gotime::ptr",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_seen: Option<DateTime<Utc>>,
    #[serde(rename = "Online", default, skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
    #[serde(
        rename = "MachineAuthorized",
        default,
        skip_serializing_if = "is_false"
    )]
    pub machine_authorized: bool,
    #[serde(rename = "CapMap", default, skip_serializing_if = "Option::is_none")]
    pub cap_map: Option<BTreeMap<String, Value>>,
    #[serde(rename = "Expired", default, skip_serializing_if = "is_false")]
    pub expired: bool,
}

/// Partial update of an existing peer. Only `Some` fields are applied by the client.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerChange {
    #[serde(rename = "NodeID")]
    pub node_id: i64,
    #[serde(
        rename = "DERPRegion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub derp_region: Option<i32>,
    #[serde(rename = "Cap", default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<u32>,
    #[serde(rename = "Endpoints", default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<String>>,
    #[serde(rename = "Key", default, skip_serializing_if = "Option::is_none")]
    pub key: Option<NodePublic>,
    #[serde(rename = "DiscoKey", default, skip_serializing_if = "Option::is_none")]
    pub disco_key: Option<DiscoPublic>,
    #[serde(rename = "Online", default, skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
    #[serde(
        rename = "LastSeen",
        default,
        with = "gotime::ptr",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_seen: Option<DateTime<Utc>>,
    #[serde(
        rename = "KeyExpiry",
        default,
        with = "gotime::ptr",
        skip_serializing_if = "Option::is_none"
    )]
    pub key_expiry: Option<DateTime<Utc>>,
}

impl PeerChange {
    /// True when the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.derp_region.is_none()
            && self.cap.is_none()
            && self.endpoints.is_none()
            && self.key.is_none()
            && self.disco_key.is_none()
            && self.online.is_none()
            && self.last_seen.is_none()
            && self.key_expiry.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserProfile {
    #[serde(rename = "ID")]
    pub id: i64,
    #[serde(rename = "LoginName")]
    pub login_name: String,
    #[serde(rename = "DisplayName")]
    pub display_name: String,
    #[serde(
        rename = "ProfilePicURL",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub profile_pic_url: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DerpMap {
    #[serde(rename = "Regions")]
    pub regions: BTreeMap<i32, DerpRegion>,
    #[serde(
        rename = "omitDefaultRegions",
        default,
        skip_serializing_if = "is_false"
    )]
    pub omit_default_regions: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DerpRegion {
    #[serde(rename = "RegionID")]
    pub region_id: i32,
    #[serde(rename = "RegionCode", default)]
    pub region_code: String,
    #[serde(rename = "RegionName", default)]
    pub region_name: String,
    #[serde(rename = "Latitude", default, skip_serializing_if = "is_zero_f64")]
    pub latitude: f64,
    #[serde(rename = "Longitude", default, skip_serializing_if = "is_zero_f64")]
    pub longitude: f64,
    #[serde(rename = "Avoid", default, skip_serializing_if = "is_false")]
    pub avoid: bool,
    #[serde(rename = "NoMeasureNoHome", default, skip_serializing_if = "is_false")]
    pub no_measure_no_home: bool,
    #[serde(rename = "Nodes", default, deserialize_with = "nullable")]
    pub nodes: Vec<DerpNode>,
}

fn is_zero_f64(v: &f64) -> bool {
    *v == 0.0
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DerpNode {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "RegionID")]
    pub region_id: i32,
    #[serde(rename = "HostName")]
    pub host_name: String,
    #[serde(rename = "CertName", default, skip_serializing_if = "String::is_empty")]
    pub cert_name: String,
    #[serde(rename = "IPv4", default, skip_serializing_if = "String::is_empty")]
    pub ipv4: String,
    #[serde(rename = "IPv6", default, skip_serializing_if = "String::is_empty")]
    pub ipv6: String,
    #[serde(rename = "STUNPort", default, skip_serializing_if = "is_zero_i32")]
    pub stun_port: i32,
    #[serde(rename = "STUNOnly", default, skip_serializing_if = "is_false")]
    pub stun_only: bool,
    #[serde(rename = "DERPPort", default, skip_serializing_if = "is_zero_i32")]
    pub derp_port: i32,
    #[serde(rename = "InsecureForTests", default, skip_serializing_if = "is_false")]
    pub insecure_for_tests: bool,
    #[serde(
        rename = "STUNTestIP",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub stun_test_ip: String,
    #[serde(rename = "CanPort80", default, skip_serializing_if = "is_false")]
    pub can_port80: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DnsResolver {
    #[serde(rename = "Addr")]
    pub addr: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DnsRecord {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Type", default, skip_serializing_if = "String::is_empty")]
    pub r#type: String,
    #[serde(rename = "Value")]
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DnsConfig {
    #[serde(rename = "Resolvers", default, skip_serializing_if = "Vec::is_empty")]
    pub resolvers: Vec<DnsResolver>,
    /// Domain (with trailing dot) → its resolvers; a route without
    /// resolvers is written `null` (Go's nil slice): the client answers it
    /// itself (the MagicDNS domain).
    #[serde(
        rename = "Routes",
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        serialize_with = "routes_ser",
        deserialize_with = "routes_de"
    )]
    pub routes: BTreeMap<String, Vec<DnsResolver>>,
    #[serde(
        rename = "FallbackResolvers",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub fallback_resolvers: Vec<DnsResolver>,
    #[serde(rename = "Domains", default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    #[serde(rename = "Proxied", default, skip_serializing_if = "is_false")]
    pub proxied: bool,
    #[serde(
        rename = "ExtraRecords",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub extra_records: Vec<DnsRecord>,
}

fn routes_ser<S: serde::Serializer>(
    m: &BTreeMap<String, Vec<DnsResolver>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(m.len()))?;
    for (k, v) in m {
        if v.is_empty() {
            map.serialize_entry(k, &Option::<()>::None)?;
        } else {
            map.serialize_entry(k, v)?;
        }
    }
    map.end()
}

fn routes_de<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, Vec<DnsResolver>>, D::Error> {
    let m: BTreeMap<String, Option<Vec<DnsResolver>>> = Deserialize::deserialize(d)?;
    Ok(m.into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect())
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRange {
    #[serde(rename = "First")]
    pub first: u16,
    #[serde(rename = "Last")]
    pub last: u16,
}

impl PortRange {
    pub const ANY: PortRange = PortRange {
        first: 0,
        last: 65535,
    };
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetPortRange {
    #[serde(rename = "IP")]
    pub ip: String,
    #[serde(rename = "Ports")]
    pub ports: PortRange,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapGrant {
    #[serde(rename = "Dsts")]
    pub dsts: Vec<String>,
    #[serde(rename = "CapMap", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cap_map: BTreeMap<String, Value>,
}

/// One packet filter rule (`tailcfg.FilterRule`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilterRule {
    #[serde(rename = "SrcIPs")]
    pub src_ips: Vec<String>,
    #[serde(rename = "DstPorts", default, skip_serializing_if = "Vec::is_empty")]
    pub dst_ports: Vec<NetPortRange>,
    #[serde(rename = "IPProto", default, skip_serializing_if = "Vec::is_empty")]
    pub ip_proto: Vec<i32>,
    #[serde(rename = "CapGrant", default, skip_serializing_if = "Vec::is_empty")]
    pub cap_grant: Vec<CapGrant>,
}

impl FilterRule {
    /// The allow-all rule used when there is no policy.
    pub fn allow_all() -> Self {
        FilterRule {
            src_ips: vec!["*".into()],
            dst_ports: vec![NetPortRange {
                ip: "*".into(),
                ports: PortRange::ANY,
            }],
            ip_proto: vec![],
            cap_grant: vec![],
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Debug {
    #[serde(rename = "DisableLogTail", default, skip_serializing_if = "is_false")]
    pub disable_log_tail: bool,
}

/// One frame of the map stream. `None` = unchanged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MapResponse {
    #[serde(rename = "KeepAlive", default, skip_serializing_if = "is_false")]
    pub keep_alive: bool,
    /// Ask the client to prove it is alive (`HEAD URL`); see [`PingRequest`].
    #[serde(
        rename = "PingRequest",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ping_request: Option<PingRequest>,
    #[serde(rename = "Node", default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Node>,
    #[serde(rename = "DERPMap", default, skip_serializing_if = "Option::is_none")]
    pub derp_map: Option<DerpMap>,
    /// Non-empty = the complete peer list.
    #[serde(rename = "Peers", default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<Node>>,
    #[serde(
        rename = "PeersChanged",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub peers_changed: Option<Vec<Node>>,
    #[serde(
        rename = "PeersRemoved",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub peers_removed: Option<Vec<i64>>,
    #[serde(
        rename = "PeersChangedPatch",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub peers_changed_patch: Option<Vec<PeerChange>>,
    #[serde(rename = "DNSConfig", default, skip_serializing_if = "Option::is_none")]
    pub dns_config: Option<DnsConfig>,
    #[serde(rename = "Domain", default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(
        rename = "CollectServices",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub collect_services: Option<bool>,
    #[serde(
        rename = "PacketFilter",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub packet_filter: Option<Vec<FilterRule>>,
    #[serde(
        rename = "PacketFilters",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub packet_filters: Option<BTreeMap<String, Option<Vec<FilterRule>>>>,
    #[serde(
        rename = "UserProfiles",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub user_profiles: Option<Vec<UserProfile>>,
    #[serde(rename = "SSHPolicy", default, skip_serializing_if = "Option::is_none")]
    pub ssh_policy: Option<Value>,
    #[serde(
        rename = "ControlTime",
        default,
        with = "gotime::ptr",
        skip_serializing_if = "Option::is_none"
    )]
    pub control_time: Option<DateTime<Utc>>,
    #[serde(rename = "Debug", default, skip_serializing_if = "Option::is_none")]
    pub debug: Option<Debug>,
    #[serde(rename = "Health", default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Vec<String>>,
}

/// `tailcfg.PingRequest`. With no `Types` the client answers by sending
/// `HEAD URL` (plain HTTP(S) unless `URLIsNoise`); each URL is answered once.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PingRequest {
    #[serde(rename = "URL")]
    pub url: String,
    #[serde(rename = "URLIsNoise", default, skip_serializing_if = "is_false")]
    pub url_is_noise: bool,
    #[serde(rename = "Log", default, skip_serializing_if = "is_false")]
    pub log: bool,
    #[serde(rename = "Types", default, skip_serializing_if = "String::is_empty")]
    pub types: String,
}

impl MapResponse {
    /// A frame that only carries a ping request.
    pub fn ping(url: String) -> Self {
        MapResponse {
            ping_request: Some(PingRequest {
                url,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub fn keep_alive() -> Self {
        MapResponse {
            keep_alive: true,
            ..Default::default()
        }
    }
    /// True when the frame carries no information (nothing to send).
    pub fn is_empty(&self) -> bool {
        *self == MapResponse::default()
    }
}

/// `POST /machine/update-health` body (accepted and logged).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HealthChangeRequest {
    #[serde(rename = "Subsys", default, deserialize_with = "nullable")]
    pub subsys: String,
    #[serde(rename = "Error", default, deserialize_with = "nullable")]
    pub error: String,
}

/// Fields of a client's Hostinfo the server acts on. Parsed case-insensitively
/// where Tailscale's own clients disagree on case.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostinfoView {
    pub hostname: String,
    pub os: String,
    pub routable_ips: Vec<String>,
    pub request_tags: Vec<String>,
    pub preferred_derp: i32,
}

fn get_ci<'a>(obj: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn str_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => vec![],
    }
}

impl HostinfoView {
    pub fn from_value(v: &Value) -> Self {
        let Some(obj) = v.as_object() else {
            return Self::default();
        };
        let s = |k: &str| {
            get_ci(obj, k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let preferred_derp = get_ci(obj, "NetInfo")
            .and_then(Value::as_object)
            .and_then(|ni| get_ci(ni, "PreferredDERP"))
            .and_then(Value::as_i64)
            .unwrap_or(0) as i32;
        HostinfoView {
            hostname: s("Hostname"),
            os: s("OS"),
            routable_ips: str_list(get_ci(obj, "RoutableIPs")),
            request_tags: str_list(get_ci(obj, "RequestTags")),
            preferred_derp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_actions_use_tailcfg_names_and_omit_zero_fields() {
        let a = SshAction {
            accept: true,
            allow_agent_forwarding: true,
            allow_local_port_forwarding: true,
            allow_remote_port_forwarding: true,
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&a).unwrap_or_default(),
            r#"{"accept":true,"allowAgentForwarding":true,"allowLocalPortForwarding":true,"allowRemotePortForwarding":true}"#
        );
        let hold = SshAction {
            message: "visit\n".into(),
            hold_and_delegate: "https://x/machine/ssh/wait/abc".into(),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&hold).unwrap_or_default(),
            r#"{"message":"visit\n","holdAndDelegate":"https://x/machine/ssh/wait/abc"}"#
        );
        let back: SshAction =
            serde_json::from_str(r#"{"reject":true,"message":"no","sessionDuration":5}"#)
                .unwrap_or_default();
        assert!(back.reject && !back.accept);
        assert_eq!((back.message.as_str(), back.session_duration), ("no", 5));
    }

    const LITE: &str = include_str!("../testdata/MapRequest-lite-with-endpoints-netinfo.json");
    const REG: &str = include_str!("../testdata/RegisterRequest.json");

    #[test]
    fn debug_of_a_register_request_hides_the_auth_key() {
        let r = RegisterRequest {
            auth: Some(RegisterResponseAuth {
                auth_key: "hskey-auth-SECRETSECRET".into(),
            }),
            ..Default::default()
        };
        let d = format!("{r:?}");
        assert!(!d.contains("SECRETSECRET"), "{d}");
        assert!(d.contains("<redacted>"), "{d}");
    }

    #[test]
    fn parses_captured_requests() {
        let m: MapRequest = serde_json::from_str(LITE).unwrap();
        assert!(m.omit_peers && !m.stream);
        assert_eq!(m.endpoints.as_ref().unwrap().len(), 2);
        let hi = HostinfoView::from_value(m.hostinfo.as_ref().unwrap());
        assert_eq!(hi.preferred_derp, 900);
        assert_eq!(hi.hostname, "alpha");
        let r: RegisterRequest = serde_json::from_str(REG).unwrap();
        assert_eq!(r.auth_key(), Some("k"));
        assert!(r.expiry.is_none());
        assert!(r.old_node_key.is_zero());
    }

    #[test]
    fn tolerates_nulls_and_rust_client_casing() {
        let j = r#"{"Version":100,"NodeKey":null,"Endpoints":null,"DebugFlags":null,"HostInfo":{"Hostname":"x","NetInfo":{"PreferredDerp":7}}}"#;
        let m: MapRequest = serde_json::from_str(j).unwrap();
        assert!(m.endpoints.is_none());
        assert_eq!(
            HostinfoView::from_value(m.hostinfo.as_ref().unwrap()).preferred_derp,
            7
        );
    }

    #[test]
    fn register_response_emits_every_field() {
        let v = serde_json::to_value(RegisterResponse::error("invalid auth key")).unwrap();
        for k in [
            "User",
            "Login",
            "NodeKeyExpired",
            "MachineAuthorized",
            "AuthURL",
            "NodeKeySignature",
            "Error",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
    }

    #[test]
    fn map_response_omits_unchanged_and_keeps_empty_removals() {
        let r = MapResponse {
            peers_removed: Some(vec![3]),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"PeersRemoved":[3]}"#
        );
        assert_eq!(
            serde_json::to_string(&MapResponse::keep_alive()).unwrap(),
            r#"{"KeepAlive":true}"#
        );
        let p = PeerChange {
            node_id: 4,
            derp_region: Some(900),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"NodeID":4,"DERPRegion":900}"#
        );
    }
}
