//! Checks that need the whole policy but not the tailnet: every group,
//! tag and host referenced is defined, autogroups are used where they make
//! sense, capability names are well formed, and so on. Messages follow
//! Tailscale's wording (see `api_response_body` in the conformance corpus)
//! and add a hint where a fix is obvious.

use crate::ast::*;
use crate::error::{ErrorKind, PolicyError, Pos};
use crate::parse::{
    oidc_group_misplaced, oidc_group_name, oidc_group_ported, parse_alias, suggest, Parser,
};
use crate::Policy;

type R = Result<(), PolicyError>;

struct V<'p, 'a> {
    p: &'p mut Parser<'a>,
    groups: Vec<String>,
    tags: Vec<String>,
    hosts: Vec<String>,
    ipsets: Vec<String>,
}

/// Which side of a rule an alias is on, for autogroup checks and messages.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Src,
    Dst,
}

/// Capabilities under tailscale.com that a policy may grant.
const TAILSCALE_GRANTABLE: &[&str] = &[
    "tailscale.com/cap/drive",
    "tailscale.com/cap/relay",
    "tailscale.com/cap/webui",
    "tailscale.com/cap/kubernetes",
    "tailscale.com/cap/tsidp",
    "tailscale.com/cap/secrets",
];

impl V<'_, '_> {
    fn err(&self, pos: Pos, msg: impl Into<String>) -> PolicyError {
        PolicyError::new(self.p.file, Some(pos), ErrorKind::Invalid, msg)
    }

    fn group_defined(&self, g: &str, pos: Pos, prefix: &str) -> R {
        if self.groups.iter().any(|x| x == g) {
            return Ok(());
        }
        let hint = match suggest(g, self.groups.iter().map(String::as_str)) {
            Some(s) => format!(" (did you mean {s:?}?)"),
            None => " (define it in \"groups\")".to_string(),
        };
        Err(self.err(pos, format!("{prefix}group not found: {g:?}{hint}")))
    }

    fn tag_defined(&self, t: &str, pos: Pos, prefix: &str) -> R {
        if self.tags.iter().any(|x| x == t) {
            return Ok(());
        }
        let hint = match suggest(t, self.tags.iter().map(String::as_str)) {
            Some(s) => format!(" (did you mean {s:?}?)"),
            None => " (add it to \"tagOwners\" first)".to_string(),
        };
        Err(self.err(pos, format!("{prefix}tag not found: {t:?}{hint}")))
    }

    fn ipset_defined(&self, s: &str, pos: Pos) -> R {
        if self.ipsets.iter().any(|x| x == s) {
            return Ok(());
        }
        Err(self.err(
            pos,
            format!("ipset not found: {s:?} (define it in \"ipsets\")"),
        ))
    }

    /// Warn about a bare user name once per position.
    fn bare_user(&mut self, name: &str, pos: Pos) {
        let msg = format!(
            "{name:?} is neither a host nor a login name; taken as the user named {name:?}. \
             Write {:?} (or the user's e-mail) as Tailscale policies expect",
            format!("{name}@")
        );
        if !self.p.warnings.iter().any(|w| w.pos == pos) {
            self.p.warn(pos, msg);
        }
    }

    /// Common checks for aliases naming something defined elsewhere.
    fn defined(&mut self, a: &Spanned<Alias>, side_prefix: &str) -> R {
        match &a.value {
            Alias::Group(g) => self.group_defined(g, a.pos, side_prefix),
            Alias::Tag(t) => {
                let prefix = if side_prefix.starts_with("dst") {
                    format!("dst={t:?}: ")
                } else {
                    side_prefix.to_string()
                };
                self.tag_defined(t, a.pos, &prefix)
            }
            Alias::IpSet(s) => self.ipset_defined(s, a.pos),
            Alias::OidcGroup(g) => Err(self.err(a.pos, oidc_group_misplaced(g))),
            Alias::BareUser(u) => {
                let u = u.clone();
                self.bare_user(&u, a.pos);
                Ok(())
            }
            Alias::Host(h) if !self.hosts.iter().any(|x| x == h) => {
                Err(self.err(a.pos, format!("host not found: {h:?}")))
            }
            _ => Ok(()),
        }
    }

    fn rule_alias(&mut self, a: &Spanned<Alias>, side: Side, grant: bool) -> R {
        let prefix = if side == Side::Src { "src=" } else { "dst=" };
        self.defined(a, prefix)?;
        if let Alias::AutoGroup(ag) = a.value {
            match (side, ag) {
                (Side::Src, AutoGroup::Internet) => {
                    return Err(self.err(
                        a.pos,
                        "autogroup:internet can only be used as a destination (dst)",
                    ))
                }
                (Side::Src, AutoGroup::SelfDevices) => {
                    return Err(self.err(
                        a.pos,
                        "\"autogroup:self\" not valid on the src side of a rule",
                    ))
                }
                (Side::Dst, AutoGroup::DangerAll) => {
                    return Err(self.err(a.pos, "cannot use autogroup:danger-all as a dst"))
                }
                (_, AutoGroup::NonRoot) => {
                    return Err(
                        self.err(a.pos, "autogroup:nonroot can only be used in SSH \"users\"")
                    )
                }
                _ => {}
            }
        }
        if let (Side::Dst, Alias::Prefix(p), true) = (side, &a.value, grant) {
            if p.prefix_len() == 0 {
                return Err(self.err(
                    a.pos,
                    format!(
                        "dst {:?}: to allow all IP addresses, use \"*\" or \"autogroup:internet\"",
                        p.to_string()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `autogroup:self` in dst needs sources that are users or groups.
    fn self_sources(
        &self,
        src: &[Spanned<Alias>],
        dst_has_self: Option<Pos>,
        allow_wildcard: bool,
    ) -> R {
        let Some(pos) = dst_has_self else {
            return Ok(());
        };
        for s in src {
            let ok = match &s.value {
                Alias::User(_) | Alias::BareUser(_) | Alias::Group(_) | Alias::UserDomain(_) => {
                    true
                }
                Alias::AutoGroup(AutoGroup::Member) => true,
                Alias::Wildcard => allow_wildcard,
                _ => false,
            };
            if !ok {
                let _ = pos;
                return Err(self.err(
                    s.pos,
                    format!(
                        "autogroup:self can only be used with users, groups, or supported autogroups (source {:?} is not one)",
                        s.value.to_string()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn acl(&mut self, acl: &Acl) -> R {
        for s in &acl.src {
            self.rule_alias(s, Side::Src, false)?;
        }
        let mut self_pos = None;
        for d in &acl.dst {
            self.rule_alias(&d.alias, Side::Dst, false)?;
            if d.alias.value == Alias::AutoGroup(AutoGroup::SelfDevices) {
                self_pos = Some(d.alias.pos);
            }
        }
        if let Some(proto) = &acl.proto {
            let ported =
                proto.value.is_empty() || proto.value.iter().any(|p| matches!(p, 6 | 17 | 132));
            if !ported {
                for d in &acl.dst {
                    if d.ports.iter().any(|r| *r != PortRange::ANY) {
                        return Err(self.err(
                            d.alias.pos,
                            "protocol does not support specific ports; only \"*\" is allowed"
                                .to_string(),
                        ));
                    }
                }
            }
        }
        self.self_sources(&acl.src, self_pos, true)
    }

    fn grant(&mut self, g: &Grant) -> R {
        if g.ip.is_empty() && g.app.is_empty() {
            return Err(self.err(g.pos, "ip and app can not both be empty"));
        }
        for (name, _) in &g.app {
            if name.contains("://") || !name.contains('/') {
                return Err(self.err(
                    g.pos,
                    format!(
                        "capability name must have the form {{domain}}/{{path}} (got {name:?})"
                    ),
                ));
            }
            if name.starts_with("tailscale.com/") && !TAILSCALE_GRANTABLE.contains(&name.as_str()) {
                return Err(self.err(
                    g.pos,
                    format!(
                        "capability name must not be in the tailscale.com domain (got {name:?})"
                    ),
                ));
            }
        }
        for s in &g.src {
            self.rule_alias(s, Side::Src, true)?;
        }
        let mut self_pos = None;
        for d in &g.dst {
            self.rule_alias(d, Side::Dst, true)?;
            match d.value {
                Alias::AutoGroup(AutoGroup::SelfDevices) => self_pos = Some(d.pos),
                Alias::AutoGroup(AutoGroup::Internet) if !g.app.is_empty() => {
                    return Err(self.err(d.pos, "cannot use app grants with autogroup:internet"))
                }
                _ => {}
            }
        }
        for v in &g.via {
            if !self.tags.contains(&v.value) {
                return Err(self.err(v.pos, format!("tag {:?} not found", v.value)));
            }
        }
        self.self_sources(&g.src, self_pos, false)
    }

    fn ssh(&mut self, r: &SshRule) -> R {
        if r.users.is_empty() {
            return Err(self.err(r.pos, "users must be specified"));
        }
        for u in &r.users {
            if u.value.is_empty() || u.value == "*" {
                return Err(self.err(u.pos, format!("user {:?} is not valid", u.value)));
            }
        }
        if r.accept_env.iter().any(String::is_empty) {
            return Err(self.err(r.pos, "acceptEnv values cannot be empty"));
        }
        for s in &r.src {
            self.defined(s, "")?;
            match &s.value {
                Alias::AutoGroup(
                    AutoGroup::Member | AutoGroup::Tagged | AutoGroup::Admin | AutoGroup::Owner,
                ) => {}
                Alias::AutoGroup(AutoGroup::Internet) => {
                    return Err(self.err(
                        s.pos,
                        "autogroup:internet can only be used in ACL destinations",
                    ))
                }
                Alias::AutoGroup(ag) => {
                    return Err(self.err(
                        s.pos,
                        format!("{} is not valid as an SSH source", ag.name()),
                    ))
                }
                Alias::Host(h) => return Err(self.err(s.pos, format!("invalid src {h:?}"))),
                _ => {}
            }
        }
        for d in &r.dst {
            self.defined(d, "")?;
            match &d.value {
                Alias::Host(h) => return Err(self.err(d.pos, format!("invalid dst {h:?}"))),
                Alias::Wildcard => {
                    return Err(self.err(
                        d.pos,
                        "wildcard (*) is not supported as SSH destination; use autogroup:member, autogroup:tagged, or tags",
                    ))
                }
                Alias::AutoGroup(AutoGroup::Member | AutoGroup::Tagged | AutoGroup::SelfDevices) => {}
                Alias::AutoGroup(ag) => {
                    return Err(self.err(d.pos, format!("{} is not valid as an SSH destination", ag.name())))
                }
                _ => {}
            }
        }
        if let Some(CheckPeriod::Duration(d)) = r.check_period {
            const MAX: i64 = 168 * 3600 * 1_000_000_000;
            if d < 0 {
                return Err(self.err(
                    r.pos,
                    format!(
                        "checkPeriod {} must be a positive duration",
                        crate::godur::format(d)
                    ),
                ));
            }
            if d > MAX {
                return Err(self.err(
                    r.pos,
                    format!(
                        "checkPeriod {} is above the max (168h)",
                        crate::godur::format(d)
                    ),
                ));
            }
        }
        Ok(())
    }

    fn node_attr(&mut self, na: &NodeAttr) -> R {
        for t in &na.target {
            self.defined(t, "")?;
            if let Alias::AutoGroup(ag) = t.value {
                match ag {
                    AutoGroup::Member | AutoGroup::Tagged | AutoGroup::Admin | AutoGroup::Owner => {}
                    _ => {
                        return Err(self.err(
                            t.pos,
                            format!("{} cannot be a nodeAttrs target (use users, groups, tags, hosts, IPs, autogroup:member or autogroup:tagged)", ag.name()),
                        ))
                    }
                }
            }
        }
        for p in &na.ip_pool {
            let cg = crate::ipset::cgnat();
            if p.prefix_len() < cg.prefix_len() || !cg.contains(&p.network()) {
                return Err(self.err(na.pos, format!("IPPool({p}): network must be within {cg}")));
            }
            for r in ["100.100.100.0/24", "100.115.92.0/23"] {
                let r: ipnet::IpNet = r.parse().unwrap_or(cg);
                if r.contains(&p.network()) || p.contains(&r.network()) {
                    return Err(self.err(
                        na.pos,
                        format!("IPPool({p}): network within reserved range"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// A test source (or SSH test destination) is not an identity-provider
    /// group.
    fn test_src(&self, s: &Spanned<String>) -> R {
        match parse_alias(&s.value) {
            Ok(Alias::OidcGroup(g)) => Err(self.err(s.pos, oidc_group_misplaced(&g))),
            // Other problems are reported when the tests run.
            _ => Ok(()),
        }
    }

    /// A test destination (`alias:port`) is not an identity-provider group.
    fn test_dst(&self, d: &Spanned<String>) -> R {
        match oidc_group_ported(&d.value) {
            Some(g) => Err(self.err(
                d.pos,
                oidc_group_name(g).map_or_else(|m| m, oidc_group_misplaced),
            )),
            None => Ok(()),
        }
    }

    fn approver(&mut self, a: &Spanned<Alias>) -> R {
        self.defined(a, "")?;
        match &a.value {
            Alias::User(_)
            | Alias::BareUser(_)
            | Alias::Group(_)
            | Alias::Tag(_)
            | Alias::UserDomain(_) => Ok(()),
            Alias::AutoGroup(
                AutoGroup::Member | AutoGroup::Tagged | AutoGroup::Admin | AutoGroup::Owner,
            ) => Ok(()),
            Alias::Host(_) | Alias::Prefix(_) | Alias::Range(_, _) | Alias::IpSet(_) => Ok(()),
            other => Err(self.err(a.pos, format!("{other} cannot approve routes"))),
        }
    }
}

pub(crate) fn validate(p: &mut Parser<'_>, pol: &mut Policy) -> Result<(), PolicyError> {
    let groups: Vec<String> = pol.groups.iter().map(|g| g.name.value.clone()).collect();
    let tags: Vec<String> = pol.tag_owners.iter().map(|t| t.tag.value.clone()).collect();
    let hosts: Vec<String> = pol.hosts.iter().map(|h| h.name.value.clone()).collect();
    let ipsets: Vec<String> = pol.ipsets.iter().map(|s| s.name.value.clone()).collect();
    let mut v = V {
        p,
        groups,
        tags,
        hosts,
        ipsets,
    };

    // Groups: members are users; nesting is refused (reported like
    // Tailscale, walking group names from the last in sort order).
    let mut sorted: Vec<&GroupDef> = pol.groups.iter().collect();
    sorted.sort_by(|a, b| b.name.value.cmp(&a.name.value));
    for g in &sorted {
        for m in &g.members {
            if let Alias::Group(inner) = &m.value {
                return Err(v.err(
                    m.pos,
                    format!(
                        "groups[{:?}]: {:?}: group members cannot be recursive",
                        g.name.value, inner
                    ),
                ));
            }
        }
    }
    for g in &pol.groups {
        for m in &g.members {
            match &m.value {
                // Identity-provider groups belong here and nowhere else.
                Alias::User(_) | Alias::UserDomain(_) | Alias::OidcGroup(_) => {}
                Alias::BareUser(u) | Alias::Host(u) => {
                    // A group can only hold users, so a bare word here is a
                    // user name even if a host of that name exists.
                    let u = u.clone();
                    v.bare_user(&u, m.pos);
                }
                other => {
                    return Err(v.err(
                        m.pos,
                        format!(
                            "groups[{:?}]: {:?}: group members must be users (login names)",
                            g.name.value,
                            other.to_string()
                        ),
                    ))
                }
            }
        }
    }
    for t in &pol.tag_owners {
        for o in &t.owners {
            match &o.value {
                Alias::User(_) | Alias::UserDomain(_) => {}
                Alias::BareUser(u) | Alias::Host(u) => {
                    let u = u.clone();
                    v.bare_user(&u, o.pos);
                }
                Alias::Group(g) => {
                    v.group_defined(g, o.pos, &format!("tagOwners[{:?}]: ", t.tag.value))?
                }
                Alias::Tag(tag) => {
                    v.tag_defined(tag, o.pos, &format!("tagOwners[{:?}]: ", t.tag.value))?
                }
                Alias::OidcGroup(g) => return Err(v.err(o.pos, oidc_group_misplaced(g))),
                Alias::AutoGroup(
                    AutoGroup::Admin | AutoGroup::Owner | AutoGroup::Member | AutoGroup::Tagged,
                ) => {}
                other => {
                    return Err(v.err(
                        o.pos,
                        format!(
                            "tagOwners[{:?}]: {:?} cannot own a tag (use users, groups or tags)",
                            t.tag.value,
                            other.to_string()
                        ),
                    ))
                }
            }
        }
    }
    for s in &pol.ipsets {
        for (_, a) in &s.items {
            v.defined(a, "")?;
        }
    }
    for acl in &pol.acls {
        v.acl(acl)?;
    }
    for g in &pol.grants {
        v.grant(g)?;
    }
    for r in &pol.ssh {
        v.ssh(r)?;
    }
    for na in &pol.node_attrs {
        v.node_attr(na)?;
    }
    for (_, approvers) in &pol.auto_approvers.routes {
        for a in approvers {
            v.approver(a)?;
        }
    }
    for a in &pol.auto_approvers.exit_node {
        v.approver(a)?;
    }
    // Tests name their sources and destinations as text, resolved when the
    // policy is compiled; an identity-provider group is refused here, with
    // the other misplaced ones.
    for t in &pol.tests {
        v.test_src(&t.src)?;
        for d in t.accept.iter().chain(&t.deny) {
            v.test_dst(d)?;
        }
    }
    for t in &pol.ssh_tests {
        v.test_src(&t.src)?;
        for d in &t.dst {
            v.test_src(d)?;
        }
    }
    // Bare words in group members were warned about above; make the AST
    // say what they mean.
    for g in &mut pol.groups {
        for m in &mut g.members {
            if let Alias::Host(u) = &m.value {
                m.value = Alias::BareUser(u.clone());
            }
        }
    }
    for t in &mut pol.tag_owners {
        for o in &mut t.owners {
            if let Alias::Host(u) = &o.value {
                o.value = Alias::BareUser(u.clone());
            }
        }
    }
    Ok(())
}
