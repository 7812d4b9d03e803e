//! The policy as written: every section of a Tailscale policy file, each
//! reference with the position it came from.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::Pos;

/// A value and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned<T> {
    pub value: T,
    pub pos: Pos,
}

impl<T> Spanned<T> {
    pub fn new(value: T, pos: Pos) -> Self {
        Spanned { value, pos }
    }
}

/// The autogroups Tailscale knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AutoGroup {
    /// Every address outside the tailnet, reached through exit nodes.
    Internet,
    /// Devices owned by users (not tagged).
    Member,
    /// Tagged devices.
    Tagged,
    /// The user's own devices (destination side only).
    SelfDevices,
    /// Non-root local users (SSH `users` only).
    NonRoot,
    /// Every address, including ones outside the tailnet (sources only).
    DangerAll,
    /// Devices of tailnet admins.
    Admin,
    /// Devices of the tailnet owner.
    Owner,
    /// Devices of users from other tailnets the node was shared with.
    Shared,
}

impl AutoGroup {
    pub fn parse(name: &str) -> Option<AutoGroup> {
        Some(match name {
            "autogroup:internet" => AutoGroup::Internet,
            "autogroup:member" => AutoGroup::Member,
            "autogroup:members" => AutoGroup::Member,
            "autogroup:tagged" => AutoGroup::Tagged,
            "autogroup:self" => AutoGroup::SelfDevices,
            "autogroup:nonroot" => AutoGroup::NonRoot,
            "autogroup:danger-all" => AutoGroup::DangerAll,
            "autogroup:admin" => AutoGroup::Admin,
            "autogroup:owner" => AutoGroup::Owner,
            "autogroup:shared" => AutoGroup::Shared,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            AutoGroup::Internet => "autogroup:internet",
            AutoGroup::Member => "autogroup:member",
            AutoGroup::Tagged => "autogroup:tagged",
            AutoGroup::SelfDevices => "autogroup:self",
            AutoGroup::NonRoot => "autogroup:nonroot",
            AutoGroup::DangerAll => "autogroup:danger-all",
            AutoGroup::Admin => "autogroup:admin",
            AutoGroup::Owner => "autogroup:owner",
            AutoGroup::Shared => "autogroup:shared",
        }
    }
}

/// One entry of a `src`, `dst`, `target`, group, owner or approver list.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Alias {
    /// `*`: every address of the tailnet (and, as a source, approved subnets).
    Wildcard,
    /// A login name: `alice@example.com`, or `alice@` for a user without
    /// a domain.
    User(String),
    /// A bare word that is not a host name: taken as a user name, with a
    /// warning that suggests `name@`.
    BareUser(String),
    /// `user:*@example.com`: every user of a domain.
    UserDomain(String),
    /// `group:name`.
    Group(String),
    /// `tag:name`.
    Tag(String),
    /// A name from the `hosts` section.
    Host(String),
    /// An IP address or CIDR.
    Prefix(IpNet),
    /// An inclusive address range `a-b`.
    Range(IpAddr, IpAddr),
    /// `autogroup:...`.
    AutoGroup(AutoGroup),
    /// `ipset:name`.
    IpSet(String),
    /// `oidc-group:name`: the users whose identity provider lists them in
    /// the group `name` (exact match). Only a member of a group in `groups`.
    OidcGroup(String),
}

/// The prefix of an identity-provider group.
pub const OIDC_GROUP_PREFIX: &str = "oidc-group:";

impl fmt::Display for Alias {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Alias::Wildcard => f.write_str("*"),
            Alias::User(u) | Alias::BareUser(u) => f.write_str(u),
            Alias::UserDomain(d) => write!(f, "user:*@{d}"),
            Alias::Group(g) | Alias::Tag(g) | Alias::Host(g) | Alias::IpSet(g) => f.write_str(g),
            Alias::Prefix(p) => f.write_str(&crate::ipset::prefix_string(p)),
            Alias::Range(a, b) => write!(f, "{a}-{b}"),
            Alias::AutoGroup(a) => f.write_str(a.name()),
            Alias::OidcGroup(g) => write!(f, "{OIDC_GROUP_PREFIX}{g}"),
        }
    }
}

/// An inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
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
    pub fn contains(&self, p: u16) -> bool {
        self.first <= p && p <= self.last
    }
}

/// `alias:ports` from an ACL `dst` or a test destination.
#[derive(Debug, Clone, PartialEq)]
pub struct AliasPorts {
    pub alias: Spanned<Alias>,
    pub ports: Vec<PortRange>,
}

/// IP protocol numbers a rule applies to; empty means Tailscale's default
/// (TCP, UDP, ICMP).
pub type Protocols = Vec<u8>;

#[derive(Debug, Clone, PartialEq)]
pub struct Acl {
    pub pos: Pos,
    pub src: Vec<Spanned<Alias>>,
    pub dst: Vec<AliasPorts>,
    pub proto: Option<Spanned<Protocols>>,
}

/// One element of a grant's `ip` list.
#[derive(Debug, Clone, PartialEq)]
pub struct IpGrant {
    pub protocols: Protocols,
    pub ports: Vec<PortRange>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub pos: Pos,
    pub src: Vec<Spanned<Alias>>,
    pub dst: Vec<Spanned<Alias>>,
    pub ip: Vec<IpGrant>,
    /// Application capabilities: name to list of JSON values.
    pub app: Vec<(String, Vec<serde_json::Value>)>,
    pub has_app: bool,
    pub via: Vec<Spanned<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SshAction {
    Accept,
    Check,
}

/// `checkPeriod` of an SSH check rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckPeriod {
    Always,
    /// Nanoseconds, as Go's time.Duration.
    Duration(i64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SshRule {
    pub pos: Pos,
    pub action: SshAction,
    pub src: Vec<Spanned<Alias>>,
    pub dst: Vec<Spanned<Alias>>,
    pub users: Vec<Spanned<String>>,
    pub check_period: Option<CheckPeriod>,
    pub accept_env: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeAttr {
    pub pos: Pos,
    pub target: Vec<Spanned<Alias>>,
    pub attr: Vec<String>,
    pub ip_pool: Vec<IpNet>,
    pub app: Vec<(String, Vec<serde_json::Value>)>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct AutoApprovers {
    pub routes: Vec<(Spanned<IpNet>, Vec<Spanned<Alias>>)>,
    pub exit_node: Vec<Spanned<Alias>>,
}

/// One entry of `tests`.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyTest {
    pub pos: Pos,
    pub src: Spanned<String>,
    pub proto: Option<Protocols>,
    pub accept: Vec<Spanned<String>>,
    pub deny: Vec<Spanned<String>>,
}

/// One entry of `sshTests`.
#[derive(Debug, Clone, PartialEq)]
pub struct SshTest {
    pub pos: Pos,
    pub src: Spanned<String>,
    pub dst: Vec<Spanned<String>>,
    pub accept: Vec<String>,
    pub check: Vec<String>,
    pub deny: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupDef {
    pub name: Spanned<String>,
    pub members: Vec<Spanned<Alias>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HostDef {
    pub name: Spanned<String>,
    pub value: Spanned<Alias>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TagOwnerDef {
    pub tag: Spanned<String>,
    pub owners: Vec<Spanned<Alias>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IpSetDef {
    pub name: Spanned<String>,
    /// Entries; an entry prefixed with `remove ` is subtracted.
    pub items: Vec<(bool, Spanned<Alias>)>,
}
