//! # ironscale-policy
//!
//! The policy engine: it reads a Tailscale policy file (HuJSON) and computes,
//! for every node of a tailnet, what Tailscale's control plane would send it:
//! the packet filter, the peers it may see, the routes it may use through
//! each peer, its SSH policy and its capability map.
//!
//! The crate is a pure core: no IO, no clock, no randomness, no wire types.
//! It takes `ironscale_types::{User, Node}` as input and returns its own
//! policy-level output types whose serde field names are Tailscale's, so
//! that the mapper can embed or convert them.
//!
//! ## Use
//!
//! ```
//! use ironscale_policy::{Policy, CompiledPolicy, Tailnet};
//! let text = r#"{
//!     // HuJSON: comments and trailing commas are fine
//!     "groups": {"group:admins": ["alice@example.com"]},
//!     "acls": [{"action": "accept", "src": ["group:admins"], "dst": ["*:*"]},],
//! }"#;
//! let policy = Policy::parse(text, "policy.hujson").expect("valid policy");
//! assert!(policy.warnings().is_empty());
//! let compiled = CompiledPolicy::compile(&policy, &[], &[], &Tailnet::default()).expect("compiles");
//! assert_eq!(compiled.node_count(), 0);
//! ```
//!
//! ## API
//!
//! * [`Policy::parse`] parses and validates the text on its own (HuJSON:
//!   comments and trailing commas, nothing else; unknown keys rejected).
//!   Errors carry `file:line:col` and a kind ([`PolicyError`],
//!   [`ErrorKind`]); accepted-but-suspicious input (bare user names such as
//!   `"admin"`, taken as the user named `admin`) comes back as
//!   [`PolicyWarning`]s from [`Policy::warnings`]. A group in `groups` may
//!   hold identity-provider groups, `oidc-group:NAME` (the users whose
//!   `User::idp_groups` contain NAME, exactly); anywhere else they are an
//!   error ([`ErrorKind::Invalid`]) that says to put them in a group.
//! * [`Policy::allow_all`] is the policy in force when none is configured;
//!   a policy with neither `acls` nor `grants` also allows everything.
//! * [`CompiledPolicy::compile`] binds the policy to users and nodes
//!   (with [`Tailnet`] facts: owner, admins, domains, control URL), builds
//!   the indexes and runs the policy's `tests` and `sshTests`: a failing
//!   test rejects the policy ([`ErrorKind::TestFailed`]). This is "loading"
//!   a policy; do it on every policy change.
//! * Per node (by `NodeId`): [`CompiledPolicy::filter_rules`] (the packet
//!   filter, `tailcfg.FilterRule` shape, CapGrant included),
//!   [`CompiledPolicy::peers`] / [`CompiledPolicy::can_see`],
//!   [`CompiledPolicy::peer_addresses`], [`CompiledPolicy::allowed_ips`],
//!   [`CompiledPolicy::primary_routes`], [`CompiledPolicy::self_allowed_ips`],
//!   [`CompiledPolicy::ssh_policy`] (`tailcfg.SSHPolicy` shape),
//!   [`CompiledPolicy::node_cap_map`], [`CompiledPolicy::peer_cap_map`],
//!   [`CompiledPolicy::whois_caps`].
//! * Tags: [`CompiledPolicy::may_own_tags`] checks a registration or a
//!   `nodes tag` request against `tagOwners` (tags may own tags).
//! * Changes: [`CompiledPolicy::update_node`] applies one node joining,
//!   leaving or changing (tags, user, addresses) without recompiling, and
//!   returns the nodes whose results may have changed;
//!   [`CompiledPolicy::affected`] computes that set without applying it.
//!   Route changes and [`CompiledPolicy::update_user`] rebuild.
//! * [`conformance`] runs the shared Tailscale conformance corpus
//!   ([`conformance::run_dir`] returns a [`conformance::Report`]).
//!
//! ## How it is built
//!
//! Compilation resolves every distinct source list and destination alias
//! once (memoised), into *groups* shared by all rules that use them. A group
//! holds its node list (through the topology's indexes: nodes by user, by
//! tag, by sorted address) and a predicate (identity matcher plus address
//! set). Per-node indexes map each node to the source and destination
//! groups naming it, so a node's filter is assembled from the rules that
//! reach it, and its peers from the groups it shares rules with, without
//! scanning other nodes. A node change is tested against each group's
//! predicate once; only groups whose membership changed are touched.
//!
//! Invariants: no IO, clock, randomness or wire types in this crate; output
//! does not depend on hash-map iteration order (lists are sorted or follow
//! policy order); HA primaries are elected by lowest `NodeId`.

pub mod ast;
mod compile;
pub mod conformance;
pub mod error;
mod godur;
pub mod hujson;
mod incremental;
pub mod ipset;
mod json;
mod nodeattrs;
pub mod output;
mod parse;
mod peers;
mod policytests;
mod resolve;
mod ssh;
mod tags;
mod topology;
mod validate;

pub use compile::{Change, CompiledPolicy, Tailnet};
pub use error::{ErrorKind, PolicyError, PolicyWarning, Pos};
pub use output::{
    CapGrant, FilterRule, NetPortRange, SshAction as SshActionOut, SshPolicy, SshPrincipal,
    SshRule as SshRuleOut,
};

use ast::*;

/// A parsed and validated policy (not yet bound to any tailnet).
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub file: String,
    pub groups: Vec<GroupDef>,
    pub hosts: Vec<HostDef>,
    pub tag_owners: Vec<TagOwnerDef>,
    pub acls: Vec<Acl>,
    pub grants: Vec<Grant>,
    pub ssh: Vec<ast::SshRule>,
    pub node_attrs: Vec<NodeAttr>,
    pub auto_approvers: AutoApprovers,
    pub tests: Vec<PolicyTest>,
    pub ssh_tests: Vec<SshTest>,
    pub randomize_client_port: bool,
    pub ipsets: Vec<IpSetDef>,
    /// Whether an `acls` section was present (even empty).
    pub has_acls: bool,
    /// Whether a `grants` section was present (even empty).
    pub has_grants: bool,
    /// True only for [`Policy::allow_all`].
    pub allow_all: bool,
    pub(crate) warnings: Vec<PolicyWarning>,
}

impl Policy {
    pub(crate) fn empty(file: &str) -> Policy {
        Policy {
            file: file.to_string(),
            groups: Vec::new(),
            hosts: Vec::new(),
            tag_owners: Vec::new(),
            acls: Vec::new(),
            grants: Vec::new(),
            ssh: Vec::new(),
            node_attrs: Vec::new(),
            auto_approvers: AutoApprovers::default(),
            tests: Vec::new(),
            ssh_tests: Vec::new(),
            randomize_client_port: false,
            ipsets: Vec::new(),
            has_acls: false,
            has_grants: false,
            allow_all: false,
            warnings: Vec::new(),
        }
    }

    /// Parse and validate HuJSON policy text. `file_name` is used in error
    /// positions (`file:line:col: message`).
    pub fn parse(text: &str, file_name: &str) -> Result<Policy, PolicyError> {
        parse::parse_policy(text, file_name)
    }

    /// The policy in force when none is configured: every node may reach
    /// every other on every port.
    pub fn allow_all() -> Policy {
        let mut p = Policy::empty("<default>");
        p.allow_all = true;
        p
    }

    /// Warnings from parsing (for example bare user names).
    pub fn warnings(&self) -> &[PolicyWarning] {
        &self.warnings
    }

    /// Whether the packet filter is "allow everything" because the policy
    /// has neither `acls` nor `grants`.
    pub fn is_allow_all(&self) -> bool {
        self.allow_all || (!self.has_acls && !self.has_grants)
    }
}
