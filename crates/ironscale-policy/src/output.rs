//! What the engine computes for a node, in policy-level types whose JSON
//! field names are Tailscale's (`tailcfg.FilterRule`, `tailcfg.SSHPolicy`),
//! so that callers can serialise them directly or convert them.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Serialize, Serializer};

use crate::ast::PortRange;

/// `tailcfg.NetPortRange`: an address (IP, CIDR, `a-b` range or `*`) and
/// a port range.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct NetPortRange {
    #[serde(rename = "IP")]
    pub ip: Arc<str>,
    #[serde(rename = "Ports")]
    pub ports: PortRange,
}

/// A capability map: capability name to a list of JSON values (`null` when
/// the capability carries no values).
pub type CapMap = BTreeMap<String, Option<Vec<serde_json::Value>>>;

/// `tailcfg.CapGrant`: capabilities granted to the rule's sources at the
/// destinations `dsts` (CIDR prefixes).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CapGrant {
    #[serde(rename = "Dsts")]
    pub dsts: Vec<String>,
    #[serde(rename = "CapMap")]
    pub cap_map: Arc<CapMap>,
}

fn ser_arc_strs<S: Serializer>(v: &Arc<[Arc<str>]>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|x| &**x))
}

/// `tailcfg.FilterRule`: traffic from `src_ips` is allowed to `dst_ports`
/// (for protocols `ip_proto`, default TCP/UDP/ICMP when empty), or, for
/// application grants, `cap_grant` lists capabilities instead.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FilterRule {
    #[serde(rename = "SrcIPs", serialize_with = "ser_arc_strs")]
    pub src_ips: Arc<[Arc<str>]>,
    #[serde(rename = "DstPorts", skip_serializing_if = "Vec::is_empty")]
    pub dst_ports: Vec<NetPortRange>,
    #[serde(rename = "IPProto", skip_serializing_if = "Vec::is_empty")]
    pub ip_proto: Vec<u8>,
    #[serde(rename = "CapGrant", skip_serializing_if = "Vec::is_empty")]
    pub cap_grant: Vec<CapGrant>,
}

/// `tailcfg.SSHPrincipal` (only the node-address form is produced).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SshPrincipal {
    #[serde(rename = "nodeIP")]
    pub node_ip: String,
}

/// `tailcfg.SSHAction`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct SshAction {
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub accept: bool,
    #[serde(rename = "holdAndDelegate", skip_serializing_if = "String::is_empty")]
    pub hold_and_delegate: String,
    #[serde(
        rename = "allowAgentForwarding",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub allow_agent_forwarding: bool,
    #[serde(
        rename = "allowLocalPortForwarding",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub allow_local_port_forwarding: bool,
    #[serde(
        rename = "allowRemotePortForwarding",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub allow_remote_port_forwarding: bool,
}

/// `tailcfg.SSHRule`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SshRule {
    pub principals: Vec<SshPrincipal>,
    /// Requested login user to local user; `"="` maps a user to itself and
    /// `""` refuses it.
    #[serde(rename = "sshUsers")]
    pub ssh_users: BTreeMap<String, String>,
    pub action: SshAction,
    #[serde(rename = "acceptEnv", skip_serializing_if = "Vec::is_empty")]
    pub accept_env: Vec<String>,
}

/// `tailcfg.SSHPolicy`: rules in the order `tailscaled` tries them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct SshPolicy {
    pub rules: Vec<SshRule>,
}
