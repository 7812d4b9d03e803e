//! From HuJSON text to the [`Policy`] AST, rejecting unknown keys and
//! values of the wrong type with the position of the offending text.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::ast::*;
use crate::error::{ErrorKind, PolicyError, PolicyWarning, Pos};
use crate::json::{self, Key, Kind, Node};
use crate::Policy;

/// Maps byte offsets to line and column quickly.
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(
            text.bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i + 1),
        );
        LineIndex { text, starts }
    }

    pub(crate) fn pos(&self, offset: usize) -> Pos {
        let offset = offset.min(self.text.len());
        let line = self
            .starts
            .partition_point(|&s| s <= offset)
            .saturating_sub(1);
        let start = self.starts[line];
        let col = String::from_utf8_lossy(&self.text.as_bytes()[start..offset])
            .chars()
            .count()
            + 1;
        Pos {
            line: line as u32 + 1,
            col: col as u32,
        }
    }
}

pub(crate) struct Parser<'a> {
    pub file: &'a str,
    pub lines: LineIndex<'a>,
    pub warnings: Vec<PolicyWarning>,
    pub hosts: Vec<String>,
}

type R<T> = Result<T, PolicyError>;

/// Edit distance, for "did you mean" hints.
pub(crate) fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = cur;
    }
    prev[b.len()]
}

pub(crate) fn suggest<'b>(
    word: &str,
    choices: impl IntoIterator<Item = &'b str>,
) -> Option<&'b str> {
    let lw = word.to_ascii_lowercase();
    choices
        .into_iter()
        .map(|c| (distance(&lw, &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4) && *d > 0)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

const TOP_KEYS: &[&str] = &[
    "groups",
    "hosts",
    "tagOwners",
    "acls",
    "grants",
    "ssh",
    "nodeAttrs",
    "autoApprovers",
    "tests",
    "sshTests",
    "randomizeClientPort",
    "ipsets",
];

impl<'a> Parser<'a> {
    fn err(&self, offset: usize, kind: ErrorKind, msg: impl Into<String>) -> PolicyError {
        PolicyError::new(self.file, Some(self.lines.pos(offset)), kind, msg)
    }

    fn schema(&self, n: &Node, msg: impl Into<String>) -> PolicyError {
        self.err(n.start, ErrorKind::Schema, msg)
    }

    pub(crate) fn invalid(&self, offset: usize, msg: impl Into<String>) -> PolicyError {
        self.err(offset, ErrorKind::Invalid, msg)
    }

    fn pos(&self, off: usize) -> Pos {
        self.lines.pos(off)
    }

    /// Check an object's keys against `allowed` (matched case-insensitively,
    /// as Go's encoding/json does) and return them by canonical name.
    fn fields<'n>(
        &self,
        n: &'n Node,
        what: &str,
        allowed: &[&'static str],
    ) -> R<Vec<(&'static str, &'n Key, &'n Node)>> {
        let Kind::Obj(members) = &n.kind else {
            return Err(self.schema(n, format!("{what} must be an object, not {}", article(n))));
        };
        let mut out: Vec<(&'static str, &Key, &Node)> = Vec::with_capacity(members.len());
        for (k, v) in members {
            // headscale-admin and others annotate with "#..." keys; ignore.
            if k.name.starts_with('#') {
                continue;
            }
            let canon = allowed
                .iter()
                .find(|a| **a == k.name)
                .or_else(|| allowed.iter().find(|a| a.eq_ignore_ascii_case(&k.name)));
            let Some(canon) = canon else {
                let mut msg = format!("unknown key {:?} in {what}", k.name);
                if let Some(s) = suggest(&k.name, allowed.iter().copied()) {
                    msg.push_str(&format!(" (did you mean {s:?}?)"));
                } else {
                    msg.push_str(&format!("; allowed keys: {}", allowed.join(", ")));
                }
                return Err(self.err(k.start, ErrorKind::Schema, msg));
            };
            if out.iter().any(|(c, _, _)| c == canon) {
                return Err(self.err(
                    k.start,
                    ErrorKind::Schema,
                    format!("duplicate key {:?} in {what}", k.name),
                ));
            }
            out.push((canon, k, v));
        }
        Ok(out)
    }

    fn string(&self, n: &Node, what: &str) -> R<Spanned<String>> {
        match &n.kind {
            Kind::Str(s) => Ok(Spanned::new(s.clone(), self.pos(n.start))),
            _ => Err(self.schema(n, format!("{what} must be a string, not {}", article(n)))),
        }
    }

    /// A list of strings; `null` counts as an empty list (as in Go).
    fn strings(&self, n: &Node, what: &str) -> R<Vec<(usize, String)>> {
        match &n.kind {
            Kind::Null => Ok(Vec::new()),
            Kind::Arr(items) => items
                .iter()
                .map(|i| match &i.kind {
                    Kind::Str(s) => Ok((i.start, s.clone())),
                    _ => Err(self.schema(
                        i,
                        format!("{what} must be a list of strings; found {}", article(i)),
                    )),
                })
                .collect(),
            _ => Err(self.schema(
                n,
                format!("{what} must be a list of strings, not {}", article(n)),
            )),
        }
    }

    fn list<'n>(&self, n: &'n Node, what: &str) -> R<&'n [Node]> {
        match &n.kind {
            Kind::Null => Ok(&[]),
            Kind::Arr(items) => Ok(items),
            _ => Err(self.schema(n, format!("{what} must be a list, not {}", article(n)))),
        }
    }

    fn aliases(&self, n: &Node, what: &str) -> R<Vec<Spanned<Alias>>> {
        self.strings(n, what)?
            .into_iter()
            .map(|(off, s)| self.alias(off, &s, what))
            .collect()
    }

    /// Parse one alias; `off` is the offset of its string literal.
    pub(crate) fn alias(&self, off: usize, raw: &str, what: &str) -> R<Spanned<Alias>> {
        let pos = self.pos(off);
        let s = raw.trim();
        let a = parse_alias(s).map_err(|m| self.invalid(off, format!("{what}: {m}")))?;
        let a = match a {
            Alias::BareUser(name) if self.hosts.contains(&name) => Alias::Host(name),
            other => other,
        };
        Ok(Spanned::new(a, pos))
    }

    pub(crate) fn warn(&mut self, pos: Pos, msg: String) {
        self.warnings.push(PolicyWarning {
            file: self.file.to_string(),
            pos,
            message: msg,
        });
    }

    pub(crate) fn policy(&mut self, root: &Node) -> R<Policy> {
        let mut pol = Policy::empty(self.file);
        let fields = self.fields(root, "the policy", TOP_KEYS)?;
        // Hosts first: bare words elsewhere are host names only if defined.
        if let Some((_, _, v)) = fields.iter().find(|(c, _, _)| *c == "hosts") {
            pol.hosts = self.hosts_section(v)?;
            self.hosts = pol.hosts.iter().map(|h| h.name.value.clone()).collect();
        }
        for (canon, _k, v) in &fields {
            match *canon {
                "hosts" => {}
                "groups" => pol.groups = self.groups_section(v)?,
                "tagOwners" => pol.tag_owners = self.tag_owners_section(v)?,
                "acls" => {
                    pol.has_acls = true;
                    for item in self.list(v, "acls")? {
                        pol.acls.push(self.acl(item)?);
                    }
                }
                "grants" => {
                    pol.has_grants = true;
                    for item in self.list(v, "grants")? {
                        pol.grants.push(self.grant(item)?);
                    }
                }
                "ssh" => {
                    for item in self.list(v, "ssh")? {
                        pol.ssh.push(self.ssh_rule(item)?);
                    }
                }
                "nodeAttrs" => {
                    for item in self.list(v, "nodeAttrs")? {
                        pol.node_attrs.push(self.node_attr(item)?);
                    }
                }
                "autoApprovers" => pol.auto_approvers = self.auto_approvers(v)?,
                "tests" => {
                    for item in self.list(v, "tests")? {
                        pol.tests.push(self.test(item)?);
                    }
                }
                "sshTests" => {
                    for item in self.list(v, "sshTests")? {
                        pol.ssh_tests.push(self.ssh_test(item)?);
                    }
                }
                "randomizeClientPort" => match v.kind {
                    Kind::Bool(b) => pol.randomize_client_port = b,
                    Kind::Null => {}
                    _ => {
                        return Err(self.schema(
                            v,
                            format!(
                                "randomizeClientPort must be true or false, not {}",
                                article(v)
                            ),
                        ))
                    }
                },
                "ipsets" => pol.ipsets = self.ipsets_section(v)?,
                _ => {}
            }
        }
        Ok(pol)
    }

    fn map<'n>(&self, n: &'n Node, what: &str) -> R<&'n [(Key, Node)]> {
        match &n.kind {
            Kind::Null => Ok(&[]),
            Kind::Obj(m) => {
                for (i, (k, _)) in m.iter().enumerate() {
                    if m[..i].iter().any(|(k2, _)| k2.name == k.name) {
                        return Err(self.err(
                            k.start,
                            ErrorKind::Schema,
                            format!("duplicate key {:?} in {what}", k.name),
                        ));
                    }
                }
                Ok(m)
            }
            _ => Err(self.schema(n, format!("{what} must be an object, not {}", article(n)))),
        }
    }

    fn hosts_section(&self, n: &Node) -> R<Vec<HostDef>> {
        let mut out = Vec::new();
        for (k, v) in self.map(n, "hosts")? {
            let name = k.name.clone();
            if name.is_empty()
                || name.contains(':')
                || name.contains('@')
                || name == "*"
                || !name
                    .chars()
                    .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(self.invalid(k.start, format!("hosts: invalid host name {name:?}")));
            }
            if parse_ip_or_cidr(&name).is_some() {
                return Err(self.invalid(
                    k.start,
                    format!("hosts: host name {name:?} must not be an IP address"),
                ));
            }
            let val = self.string(v, &format!("hosts[{name:?}]"))?;
            let t = val.value.trim();
            let alias = match parse_ip_or_cidr(t) {
                Some(Ok(a)) => a,
                Some(Err(m)) => return Err(self.invalid(v.start, format!("hosts[{name:?}]: {m}"))),
                None => {
                    return Err(self.invalid(
                        v.start,
                        format!("hosts[{name:?}]: {t:?} is not an IP address or CIDR"),
                    ))
                }
            };
            out.push(HostDef {
                name: Spanned::new(name, self.pos(k.start)),
                value: Spanned::new(alias, val.pos),
            });
        }
        Ok(out)
    }

    fn groups_section(&self, n: &Node) -> R<Vec<GroupDef>> {
        let mut out = Vec::new();
        for (k, v) in self.map(n, "groups")? {
            if !k.name.starts_with("group:") || k.name.len() <= "group:".len() {
                return Err(self.invalid(
                    k.start,
                    format!("groups: group name {:?} must start with \"group:\"", k.name),
                ));
            }
            let what = format!("groups[{:?}]", k.name);
            if let Kind::Str(_) = v.kind {
                return Err(self.schema(v, format!("{what} must be a list of users, not a string")));
            }
            let mut members = Vec::new();
            for (off, s) in self.strings(v, &what)? {
                members.push(self.alias(off, &s, &what)?);
            }
            out.push(GroupDef {
                name: Spanned::new(k.name.clone(), self.pos(k.start)),
                members,
            });
        }
        Ok(out)
    }

    fn tag_owners_section(&self, n: &Node) -> R<Vec<TagOwnerDef>> {
        let mut out = Vec::new();
        for (k, v) in self.map(n, "tagOwners")? {
            check_tag_name(&k.name)
                .map_err(|m| self.invalid(k.start, format!("tagOwners[{:?}]: {m}", k.name)))?;
            let what = format!("tagOwners[{:?}]", k.name);
            let mut owners = Vec::new();
            for (off, s) in self.strings(v, &what)? {
                owners.push(self.alias(off, &s, &what)?);
            }
            out.push(TagOwnerDef {
                tag: Spanned::new(k.name.clone(), self.pos(k.start)),
                owners,
            });
        }
        Ok(out)
    }

    fn ipsets_section(&self, n: &Node) -> R<Vec<IpSetDef>> {
        let mut out = Vec::new();
        for (k, v) in self.map(n, "ipsets")? {
            if !k.name.starts_with("ipset:") {
                return Err(self.invalid(
                    k.start,
                    format!("ipsets: name {:?} must start with \"ipset:\"", k.name),
                ));
            }
            let what = format!("ipsets[{:?}]", k.name);
            let mut items = Vec::new();
            for (off, s) in self.strings(v, &what)? {
                let t = s.trim();
                let (remove, rest) = match t.strip_prefix("remove ") {
                    Some(r) => (true, r),
                    None => (false, t.strip_prefix("add ").unwrap_or(t)),
                };
                items.push((remove, self.alias(off, rest, &what)?));
            }
            out.push(IpSetDef {
                name: Spanned::new(k.name.clone(), self.pos(k.start)),
                items,
            });
        }
        Ok(out)
    }

    fn acl(&self, n: &Node) -> R<Acl> {
        let f = self.fields(
            n,
            "acls entry",
            &["action", "src", "dst", "proto", "users", "ports"],
        )?;
        let mut action = None;
        let mut src = None;
        let mut dst = None;
        let mut proto = None;
        for (c, _, v) in &f {
            match *c {
                "action" => action = Some(self.string(v, "action")?),
                "src" | "users" => {
                    if src.is_some() {
                        return Err(self.schema(v, "acls entry has both \"src\" and \"users\""));
                    }
                    src = Some(self.aliases(v, "src")?);
                }
                "dst" | "ports" => {
                    if dst.is_some() {
                        return Err(self.schema(v, "acls entry has both \"dst\" and \"ports\""));
                    }
                    let mut d = Vec::new();
                    for (off, s) in self.strings(v, "dst")? {
                        d.push(self.alias_ports(off, &s)?);
                    }
                    dst = Some(d);
                }
                "proto" => {
                    let s = self.string(v, "proto")?;
                    let p = parse_proto(s.value.trim()).map_err(|m| self.invalid(v.start, m))?;
                    proto = Some(Spanned::new(p, s.pos));
                }
                _ => {}
            }
        }
        match action.as_ref().map(|a| a.value.trim()) {
            Some("accept") => {}
            None | Some("") => {
                return Err(self.invalid(n.start, "action must be specified (\"accept\")"))
            }
            Some(other) => {
                let off = f
                    .iter()
                    .find(|(c, _, _)| *c == "action")
                    .map_or(n.start, |(_, _, v)| v.start);
                return Err(self.invalid(
                    off,
                    format!("action={other:?} is not supported (only \"accept\" exists)"),
                ));
            }
        }
        Ok(Acl {
            pos: self.pos(n.start),
            src: src.unwrap_or_default(),
            dst: dst.unwrap_or_default(),
            proto,
        })
    }

    /// `alias:ports` (ACL dst or test destination).
    pub(crate) fn alias_ports(&self, off: usize, raw: &str) -> R<AliasPorts> {
        let s = raw.trim();
        if let Some(name) = oidc_group_ported(s) {
            // Before the port split: a name may hold colons, and without a
            // port the message would be about ports.
            oidc_group_name(name).map_err(|m| self.invalid(off, format!("dst={s:?}: {m}")))?;
            return Err(self.invalid(off, oidc_group_misplaced(name)));
        }
        let (alias_s, ports_s) = split_host_port(s).ok_or_else(|| {
            self.invalid(
                off,
                format!(
                    "dst={s:?}: missing port (write {:?} for every port)",
                    format!("{s}:*")
                ),
            )
        })?;
        let ports = parse_ports(ports_s).map_err(|m| {
            let mut msg = format!("dst={s:?}: port range {ports_s:?}: {m}");
            if AutoGroup::parse(s).is_some() || s.starts_with("tag:") || s.starts_with("group:") {
                msg.push_str(&format!(" (did you mean {:?}?)", format!("{s}:*")));
            }
            self.invalid(off, msg)
        })?;
        let alias = self.alias(off, alias_s, &format!("dst={s:?}"))?;
        Ok(AliasPorts { alias, ports })
    }

    fn grant(&self, n: &Node) -> R<Grant> {
        let f = self.fields(
            n,
            "grants entry",
            &["src", "dst", "ip", "app", "via", "srcPosture"],
        )?;
        let mut g = Grant {
            pos: self.pos(n.start),
            src: Vec::new(),
            dst: Vec::new(),
            ip: Vec::new(),
            app: Vec::new(),
            has_app: false,
            via: Vec::new(),
        };
        for (c, _, v) in &f {
            match *c {
                "src" => g.src = self.aliases(v, "src")?,
                "dst" => g.dst = self.aliases(v, "dst")?,
                "ip" => {
                    for (off, s) in self.strings(v, "ip")? {
                        g.ip.push(parse_ip_grant(s.trim()).map_err(|m| self.invalid(off, m))?);
                    }
                }
                "app" => {
                    g.has_app = !matches!(v.kind, Kind::Null);
                    g.app = self.app_map(v)?;
                }
                "via" => {
                    let Kind::Arr(items) = &v.kind else {
                        if let Kind::Null = v.kind {
                            continue;
                        }
                        return Err(self.schema(v, "via must be a list of tags"));
                    };
                    for i in items {
                        match &i.kind {
                            Kind::Str(s) if s.trim().starts_with("tag:") => g
                                .via
                                .push(Spanned::new(s.trim().to_string(), self.pos(i.start))),
                            _ => return Err(self.invalid(i.start, "via can only be a tag")),
                        }
                    }
                }
                "srcPosture" => {
                    return Err(self.invalid(
                        v.start,
                        "srcPosture is not supported (device posture is not implemented)",
                    ))
                }
                _ => {}
            }
        }
        Ok(g)
    }

    fn app_map(&self, v: &Node) -> R<Vec<(String, Vec<serde_json::Value>)>> {
        let mut out = Vec::new();
        for (k, val) in self.map(v, "app")? {
            let vals = match &val.kind {
                Kind::Arr(items) => items.iter().map(Node::to_value).collect(),
                Kind::Null => Vec::new(),
                _ => {
                    return Err(
                        self.schema(val, format!("app[{:?}] must be a list of objects", k.name))
                    )
                }
            };
            out.push((k.name.clone(), vals));
        }
        Ok(out)
    }

    fn ssh_rule(&self, n: &Node) -> R<SshRule> {
        let f = self.fields(
            n,
            "ssh entry",
            &[
                "action",
                "src",
                "dst",
                "users",
                "checkPeriod",
                "acceptEnv",
                "srcPosture",
            ],
        )?;
        let mut action: Option<(usize, String)> = None;
        let mut rule = SshRule {
            pos: self.pos(n.start),
            action: SshAction::Accept,
            src: Vec::new(),
            dst: Vec::new(),
            users: Vec::new(),
            check_period: None,
            accept_env: Vec::new(),
        };
        let mut period: Option<(usize, String)> = None;
        for (c, _, v) in &f {
            match *c {
                "action" => {
                    let s = self.string(v, "action")?;
                    action = Some((v.start, s.value.trim().to_string()));
                }
                "src" => rule.src = self.aliases(v, "src")?,
                "dst" => rule.dst = self.aliases(v, "dst")?,
                "users" => {
                    rule.users = self
                        .strings(v, "users")?
                        .into_iter()
                        .map(|(off, s)| Spanned::new(s.trim().to_string(), self.pos(off)))
                        .collect()
                }
                "checkPeriod" => {
                    let s = self.string(v, "checkPeriod")?;
                    period = Some((v.start, s.value.trim().to_string()));
                }
                "acceptEnv" => {
                    rule.accept_env = self
                        .strings(v, "acceptEnv")?
                        .into_iter()
                        .map(|(_, s)| s)
                        .collect()
                }
                "srcPosture" => {
                    return Err(self.invalid(
                        v.start,
                        "srcPosture is not supported (device posture is not implemented)",
                    ))
                }
                _ => {}
            }
        }
        rule.action = match action.as_ref().map(|(o, s)| (*o, s.as_str())) {
            Some((_, "accept")) => SshAction::Accept,
            Some((_, "check")) => SshAction::Check,
            None | Some((_, "")) => {
                return Err(self.invalid(
                    n.start,
                    "action must be specified (\"accept\" or \"check\")",
                ))
            }
            Some((o, other)) => {
                return Err(self.invalid(
                    o,
                    format!("{other:?} is not a valid action (use \"accept\" or \"check\")"),
                ))
            }
        };
        if let Some((off, p)) = period {
            let cp = if p == "always" {
                CheckPeriod::Always
            } else {
                CheckPeriod::Duration(crate::godur::parse(&p).map_err(|m| self.invalid(off, m))?)
            };
            rule.check_period = Some(cp);
        }
        Ok(rule)
    }

    fn node_attr(&self, n: &Node) -> R<NodeAttr> {
        let f = self.fields(n, "nodeAttrs entry", &["target", "attr", "ipPool", "app"])?;
        let mut na = NodeAttr {
            pos: self.pos(n.start),
            target: Vec::new(),
            attr: Vec::new(),
            ip_pool: Vec::new(),
            app: Vec::new(),
        };
        for (c, _, v) in &f {
            match *c {
                "target" => na.target = self.aliases(v, "target")?,
                "attr" => {
                    na.attr = self
                        .strings(v, "attr")?
                        .into_iter()
                        .map(|(_, s)| s)
                        .collect()
                }
                "ipPool" => {
                    for (off, s) in self.strings(v, "ipPool")? {
                        let p: IpNet = s.trim().parse().map_err(|_| {
                            self.invalid(off, format!("ipPool: {s:?} is not a CIDR"))
                        })?;
                        na.ip_pool.push(p);
                    }
                }
                "app" => na.app = self.app_map(v)?,
                _ => {}
            }
        }
        Ok(na)
    }

    fn auto_approvers(&self, n: &Node) -> R<AutoApprovers> {
        let f = self.fields(n, "autoApprovers", &["routes", "exitNode", "services"])?;
        let mut aa = AutoApprovers::default();
        for (c, _, v) in &f {
            match *c {
                "routes" => {
                    for (k, list) in self.map(v, "autoApprovers.routes")? {
                        let p: IpNet = match parse_ip_or_cidr(k.name.trim()) {
                            Some(Ok(Alias::Prefix(p))) => p,
                            _ => {
                                return Err(self.invalid(
                                    k.start,
                                    format!("autoApprovers.routes: {:?} is not a CIDR", k.name),
                                ))
                            }
                        };
                        let what = format!("autoApprovers.routes[{:?}]", k.name);
                        aa.routes.push((Spanned::new(p, self.pos(k.start)), self.aliases(list, &what)?));
                    }
                }
                "exitNode" => aa.exit_node = self.aliases(v, "autoApprovers.exitNode")?,
                "services" => {
                    return Err(self.invalid(v.start, "autoApprovers.services is not supported (Tailscale Services are not implemented)"))
                }
                _ => {}
            }
        }
        Ok(aa)
    }

    fn test(&self, n: &Node) -> R<PolicyTest> {
        let f = self.fields(
            n,
            "tests entry",
            &["src", "proto", "accept", "deny", "srcPostureAttrs"],
        )?;
        let mut t = PolicyTest {
            pos: self.pos(n.start),
            src: Spanned::new(String::new(), self.pos(n.start)),
            proto: None,
            accept: Vec::new(),
            deny: Vec::new(),
        };
        let mut has_src = false;
        for (c, _, v) in &f {
            match *c {
                "src" => {
                    t.src = self.string(v, "src")?;
                    t.src.value = t.src.value.trim().to_string();
                    has_src = true;
                }
                "proto" => {
                    let s = self.string(v, "proto")?;
                    let p = s.value.trim();
                    t.proto = Some(parse_proto(p).map_err(|m| self.invalid(v.start, m))?);
                }
                "accept" | "deny" => {
                    let list: Vec<Spanned<String>> = self
                        .strings(v, c)?
                        .into_iter()
                        .map(|(off, s)| Spanned::new(s.trim().to_string(), self.pos(off)))
                        .collect();
                    if *c == "accept" {
                        t.accept = list
                    } else {
                        t.deny = list
                    }
                }
                "srcPostureAttrs" => {
                    return Err(self.invalid(
                        v.start,
                        "srcPostureAttrs is not supported (device posture is not implemented)",
                    ))
                }
                _ => {}
            }
        }
        if !has_src || t.src.value.is_empty() {
            return Err(self.err(
                n.start,
                ErrorKind::TestFailed,
                "test(s) failed: tests entry must have a \"src\"",
            ));
        }
        Ok(t)
    }

    fn ssh_test(&self, n: &Node) -> R<SshTest> {
        let f = self.fields(
            n,
            "sshTests entry",
            &["src", "dst", "accept", "check", "deny", "srcPostureAttrs"],
        )?;
        let mut t = SshTest {
            pos: self.pos(n.start),
            src: Spanned::new(String::new(), self.pos(n.start)),
            dst: Vec::new(),
            accept: Vec::new(),
            check: Vec::new(),
            deny: Vec::new(),
        };
        for (c, _, v) in &f {
            match *c {
                "src" => {
                    t.src = self.string(v, "src")?;
                    t.src.value = t.src.value.trim().to_string();
                }
                "dst" => {
                    t.dst = self
                        .strings(v, "dst")?
                        .into_iter()
                        .map(|(off, s)| Spanned::new(s.trim().to_string(), self.pos(off)))
                        .collect()
                }
                "accept" => {
                    t.accept = self
                        .strings(v, "accept")?
                        .into_iter()
                        .map(|(_, s)| s.trim().to_string())
                        .collect()
                }
                "check" => {
                    t.check = self
                        .strings(v, "check")?
                        .into_iter()
                        .map(|(_, s)| s.trim().to_string())
                        .collect()
                }
                "deny" => {
                    t.deny = self
                        .strings(v, "deny")?
                        .into_iter()
                        .map(|(_, s)| s.trim().to_string())
                        .collect()
                }
                "srcPostureAttrs" => {
                    return Err(self.invalid(
                        v.start,
                        "srcPostureAttrs is not supported (device posture is not implemented)",
                    ))
                }
                _ => {}
            }
        }
        Ok(t)
    }
}

fn article(n: &Node) -> String {
    match n.kind {
        Kind::Null => "null".into(),
        Kind::Bool(_) => "a boolean".into(),
        Kind::Num(_) => "a number".into(),
        Kind::Str(ref s) => format!("the string {s:?}"),
        Kind::Arr(_) => "a list".into(),
        Kind::Obj(_) => "an object".into(),
    }
}

/// Tailscale: a tag name starts with a letter, then letters, digits, `-`.
pub(crate) fn check_tag_name(t: &str) -> Result<(), String> {
    let Some(rest) = t.strip_prefix("tag:") else {
        return Err("tag names must start with \"tag:\"".into());
    };
    let mut chars = rest.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() => {}
        _ => return Err("tag names must start with a letter, after 'tag:'".into()),
    }
    if let Some(bad) = rest
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_' || *c == '.'))
    {
        return Err(format!(
            "tag names can only contain letters, numbers, dashes and underscores (found {bad:?})"
        ));
    }
    Ok(())
}

/// Parse an IP, CIDR or range. `None` when the text does not look like an
/// address at all (so it may be a host name); `Some(Err)` when it looks
/// like one but is malformed.
pub(crate) fn parse_ip_or_cidr(s: &str) -> Option<Result<Alias, String>> {
    if let Ok(a) = s.parse::<IpAddr>() {
        return Some(Ok(Alias::Prefix(crate::ipset::host_prefix(a))));
    }
    if let Some((a, b)) = s.split_once('/') {
        let Ok(addr) = a.parse::<IpAddr>() else {
            if looks_numeric(a) {
                return Some(Err(format!(
                    "invalid CIDR {s:?}: {a:?} is not an IP address"
                )));
            }
            return None;
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let Ok(len) = b.parse::<u8>() else {
            return Some(Err(format!("invalid CIDR {s:?}: bad prefix length {b:?}")));
        };
        if len > max || b.starts_with('+') {
            return Some(Err(format!(
                "invalid CIDR {s:?}: prefix length {len} is over {max}"
            )));
        }
        return match IpNet::new(addr, len) {
            Ok(n) => Some(Ok(Alias::Prefix(n.trunc()))),
            Err(_) => Some(Err(format!("invalid CIDR {s:?}"))),
        };
    }
    if let Some((a, b)) = s.split_once('-') {
        if let (Ok(a), Ok(b)) = (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
            if a.is_ipv4() != b.is_ipv4() {
                return Some(Err(format!("invalid IP range {s:?}: mixes IPv4 and IPv6")));
            }
            if a > b {
                return Some(Err(format!("invalid IP range {s:?}: start is after end")));
            }
            return Some(Ok(Alias::Range(a, b)));
        }
        if looks_numeric(a) && looks_numeric(b) {
            return Some(Err(format!("invalid IP range {s:?}")));
        }
        return None;
    }
    if looks_numeric(s) {
        return Some(Err(format!("invalid IP address {s:?}")));
    }
    None
}

fn looks_numeric(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || c == '.') && s.contains('.')
        || (s.contains("::")
            && s.chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.'))
}

/// Parse an alias (already trimmed). Bare words become `BareUser` here; the
/// parser turns them into `Host` when the hosts section defines them.
pub(crate) fn parse_alias(s: &str) -> Result<Alias, String> {
    if s == "*" {
        return Ok(Alias::Wildcard);
    }
    if s.is_empty() {
        return Err("empty alias".into());
    }
    if let Some(rest) = s.strip_prefix("autogroup:") {
        return AutoGroup::parse(s).map(Alias::AutoGroup).ok_or_else(|| {
            let names = [
                "autogroup:internet",
                "autogroup:member",
                "autogroup:tagged",
                "autogroup:self",
                "autogroup:nonroot",
                "autogroup:danger-all",
                "autogroup:admin",
                "autogroup:owner",
                "autogroup:shared",
            ];
            let hint = suggest(s, names)
                .map(|h| format!(" (did you mean {h:?}?)"))
                .unwrap_or_default();
            format!("unknown autogroup \"autogroup:{rest}\"{hint}")
        });
    }
    if let Some(name) = s.strip_prefix(OIDC_GROUP_PREFIX) {
        return oidc_group_name(name).map(|n| Alias::OidcGroup(n.to_string()));
    }
    if s.starts_with("group:") {
        return Ok(Alias::Group(s.to_string()));
    }
    if s.starts_with("tag:") {
        return Ok(Alias::Tag(s.to_string()));
    }
    if s.starts_with("ipset:") {
        return Ok(Alias::IpSet(s.to_string()));
    }
    if let Some(rest) = s.strip_prefix("user:") {
        if let Some(domain) = rest.strip_prefix("*@") {
            return Ok(Alias::UserDomain(domain.to_string()));
        }
        return Ok(Alias::User(rest.to_string()));
    }
    if s.contains('@') {
        return Ok(Alias::User(s.to_string()));
    }
    if let Some(r) = parse_ip_or_cidr(s) {
        return r;
    }
    if s.contains(':') {
        return Err(format!(
            "{s:?} is not a valid alias (unknown prefix {:?})",
            s.split(':').next().unwrap_or("")
        ));
    }
    if s.contains('/') {
        return Err(format!("invalid CIDR {s:?}"));
    }
    Ok(Alias::BareUser(s.to_string()))
}

/// Check the name of an identity-provider group (after `oidc-group:`):
/// any non-empty text without control characters, kept as written.
pub(crate) fn oidc_group_name(name: &str) -> Result<&str, String> {
    if name.is_empty() {
        return Err(format!(
            "{OIDC_GROUP_PREFIX:?} needs a group name (write \"{OIDC_GROUP_PREFIX}<name>\")"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(format!(
            "{:?}: a group name cannot contain control characters",
            format!("{OIDC_GROUP_PREFIX}{name}")
        ));
    }
    Ok(name)
}

/// The group name of `oidc-group:NAME:PORTS` (or of `oidc-group:NAME`
/// written without ports), as in an ACL or test destination.
pub(crate) fn oidc_group_ported(s: &str) -> Option<&str> {
    let rest = s.strip_prefix(OIDC_GROUP_PREFIX)?;
    Some(match split_host_port(s) {
        Some((a, p)) if parse_ports(p).is_ok() => a.strip_prefix(OIDC_GROUP_PREFIX).unwrap_or(rest),
        _ => rest,
    })
}

/// Why an identity-provider group cannot stand where `name` was written
/// (anywhere but a member of a group in `groups`), with the fix.
pub(crate) fn oidc_group_misplaced(name: &str) -> String {
    format!(
        "{:?} can only be a member of a group in \"groups\"; define {:?}: [{:?}] and use the group",
        format!("{OIDC_GROUP_PREFIX}{name}"),
        format!("group:{name}"),
        format!("{OIDC_GROUP_PREFIX}{name}"),
    )
}

/// Split `alias:ports`, allowing `[v6addr]:ports`.
pub(crate) fn split_host_port(s: &str) -> Option<(&str, &str)> {
    if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = &rest[..end];
        let after = &rest[end + 1..];
        let ports = after.strip_prefix(':')?;
        return Some((host, ports));
    }
    let i = s.rfind(':')?;
    Some((&s[..i], &s[i + 1..]))
}

/// Parse `*`, `22`, `80,443`, `1000-2000`.
pub(crate) fn parse_ports(s: &str) -> Result<Vec<PortRange>, String> {
    if s == "*" {
        return Ok(vec![PortRange::ANY]);
    }
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a, Some(b)),
            None => (part, None),
        };
        let first: u16 = parse_port_num(a).ok_or("invalid first integer")?;
        if first == 0 {
            return Err("first port must be >0, or use '*' for wildcard".into());
        }
        let last = match b {
            Some(b) => parse_port_num(b).ok_or("invalid last integer")?,
            None => first,
        };
        if last < first {
            return Err(format!("last port {last} is before first port {first}"));
        }
        out.push(PortRange { first, last });
    }
    Ok(out)
}

fn parse_port_num(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// IANA protocol numbers by name, as Tailscale accepts them.
pub(crate) fn proto_number(name: &str) -> Option<u8> {
    Some(match name.to_ascii_lowercase().as_str() {
        "icmp" => 1,
        "igmp" => 2,
        "ipv4" | "ip-in-ip" => 4,
        "tcp" => 6,
        "egp" => 8,
        "igp" => 9,
        "udp" => 17,
        "gre" => 47,
        "esp" => 50,
        "ah" => 51,
        "ipv6-icmp" | "icmpv6" => 58,
        "sctp" => 132,
        "fc" => 133,
        _ => return None,
    })
}

/// Parse a protocol name or number (`"tcp"`, `"6"`). Empty means default.
pub(crate) fn parse_proto(s: &str) -> Result<Protocols, String> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(n) = proto_number(s) {
        return Ok(vec![n]);
    }
    if s == "*" {
        return Err("proto name \"*\" not known; use protocol number 0-255 or protocol name (icmp, tcp, udp, etc.)".into());
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        if s.len() > 1 && s.starts_with('0') || s == "0" {
            return Err(format!("leading 0 not permitted in protocol number {s:?}"));
        }
        return match s.parse::<u16>() {
            Ok(n) if n <= 255 => Ok(vec![n as u8]),
            _ => Err(format!("protocol number {s} out of range (0-255)")),
        };
    }
    Err(format!(
        "unknown protocol {s:?}; use a protocol name (tcp, udp, icmp, ...) or number 1-255"
    ))
}

/// Parse a grant `ip` entry: `*`, `443`, `tcp:443`, `udp:*`, `6:22`.
pub(crate) fn parse_ip_grant(s: &str) -> Result<IpGrant, String> {
    if s == "*" {
        return Ok(IpGrant {
            protocols: Vec::new(),
            ports: vec![PortRange::ANY],
        });
    }
    match s.split_once(':') {
        None => {
            let ports = parse_ports(s).map_err(|m| format!("port range {s:?}: {m}"))?;
            Ok(IpGrant {
                protocols: Vec::new(),
                ports,
            })
        }
        Some((p, ports)) => {
            if ports.contains(':') {
                return Err(format!(
                    "{s:?}: expected only one colon in Internet protocol and port type"
                ));
            }
            let protocols = parse_proto(p)?;
            let ports = parse_ports(ports).map_err(|m| format!("port range {ports:?}: {m}"))?;
            Ok(IpGrant { protocols, ports })
        }
    }
}

/// Standardize HuJSON and build the AST.
pub(crate) fn parse_policy(text: &str, file: &str) -> Result<Policy, PolicyError> {
    let lines = LineIndex::new(text);
    let std = crate::hujson::standardize(text).map_err(|e| {
        PolicyError::new(
            file,
            Some(lines.pos(e.offset)),
            ErrorKind::Syntax,
            e.message,
        )
    })?;
    if std.trim().is_empty() {
        return Err(PolicyError::new(
            file,
            Some(Pos { line: 1, col: 1 }),
            ErrorKind::Syntax,
            "empty policy",
        ));
    }
    let root = json::parse(&std).map_err(|e| {
        PolicyError::new(
            file,
            Some(lines.pos(e.offset)),
            ErrorKind::Syntax,
            e.message,
        )
    })?;
    let mut p = Parser {
        file,
        lines,
        warnings: Vec::new(),
        hosts: Vec::new(),
    };
    let mut pol = p.policy(&root)?;
    crate::validate::validate(&mut p, &mut pol)?;
    pol.warnings = std::mem::take(&mut p.warnings);
    Ok(pol)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert_eq!(parse_ports("*"), Ok(vec![PortRange::ANY]));
        assert_eq!(
            parse_ports("80,443"),
            Ok(vec![
                PortRange {
                    first: 80,
                    last: 80
                },
                PortRange {
                    first: 443,
                    last: 443
                }
            ])
        );
        assert_eq!(
            parse_ports("0"),
            Err("first port must be >0, or use '*' for wildcard".into())
        );
        assert_eq!(parse_ports("self"), Err("invalid first integer".into()));
        assert!(parse_ports("99999").is_err());
    }

    #[test]
    fn aliases() {
        assert_eq!(parse_alias("*"), Ok(Alias::Wildcard));
        assert_eq!(parse_alias("alice@"), Ok(Alias::User("alice@".into())));
        assert_eq!(
            parse_alias("10.0.0.0/8"),
            Ok(Alias::Prefix("10.0.0.0/8".parse().expect("net")))
        );
        assert!(parse_alias("10.0.0.0/33").is_err());
        assert!(parse_alias("10.0.0/8").is_err());
        assert!(parse_alias("autogroup:membr")
            .expect_err("unknown")
            .contains("autogroup:member"));
        assert_eq!(parse_alias("admin"), Ok(Alias::BareUser("admin".into())));
        assert_eq!(split_host_port("fd7a::1:22"), Some(("fd7a::1", "22")));
        assert_eq!(split_host_port("[fd7a::1]:22"), Some(("fd7a::1", "22")));
    }

    #[test]
    fn protos() {
        assert_eq!(parse_proto("udp"), Ok(vec![17]));
        assert_eq!(parse_proto("6"), Ok(vec![6]));
        assert!(parse_proto("06").is_err());
        assert!(parse_proto("256").is_err());
        assert!(parse_ip_grant("icmp").is_err());
        assert_eq!(parse_ip_grant("tcp:443").map(|g| g.protocols), Ok(vec![6]));
    }
}
