//! The table of configuration keys: the ones ironscale reads, the Headscale
//! keys it accepts but ignores, and the deprecated/renamed ones.

/// The shape a key's value must have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ty {
    Str,
    Bool,
    Int,
    Duration,
    /// A list of strings (a single string is split on whitespace/commas, as viper does).
    List,
    /// A mapping of string → list of strings (split DNS).
    MapList,
    /// A mapping of string → string.
    MapStr,
    /// A list of mappings (`dns.extra_records`).
    Records,
}

/// Every key ironscale reads, with its type.
pub(crate) const KEYS: &[(&str, Ty)] = &[
    ("server_url", Ty::Str),
    ("listen_addr", Ty::Str),
    ("metrics_listen_addr", Ty::Str),
    ("grpc_listen_addr", Ty::Str),
    ("grpc_allow_insecure", Ty::Bool),
    ("noise.private_key_path", Ty::Str),
    ("prefixes.v4", Ty::Str),
    ("prefixes.v6", Ty::Str),
    ("prefixes.allocation", Ty::Str),
    ("database.type", Ty::Str),
    ("database.sqlite.path", Ty::Str),
    ("database.sqlite.write_ahead_log", Ty::Bool),
    ("database.postgres.host", Ty::Str),
    ("database.postgres.port", Ty::Int),
    ("database.postgres.name", Ty::Str),
    ("database.postgres.user", Ty::Str),
    ("database.postgres.pass", Ty::Str),
    ("database.postgres.ssl", Ty::Str),
    ("database.postgres.max_open_conns", Ty::Int),
    ("database.postgres.max_idle_conns", Ty::Int),
    ("database.postgres.conn_max_idle_time_secs", Ty::Int),
    ("derp.server.enabled", Ty::Bool),
    ("derp.server.region_id", Ty::Int),
    ("derp.server.region_code", Ty::Str),
    ("derp.server.region_name", Ty::Str),
    ("derp.server.stun_listen_addr", Ty::Str),
    ("derp.server.stun.enabled", Ty::Bool),
    ("derp.server.private_key_path", Ty::Str),
    ("derp.server.verify_clients", Ty::Bool),
    ("derp.server.ipv4", Ty::Str),
    ("derp.server.ipv6", Ty::Str),
    (
        "derp.server.automatically_add_embedded_derp_region",
        Ty::Bool,
    ),
    ("derp.server.tls_listen_addr", Ty::Str),
    ("derp.server.tls_cert_path", Ty::Str),
    ("derp.server.tls_key_path", Ty::Str),
    ("derp.urls", Ty::List),
    ("derp.paths", Ty::List),
    ("derp.auto_update_enabled", Ty::Bool),
    ("derp.update_frequency", Ty::Duration),
    ("tls_cert_path", Ty::Str),
    ("tls_key_path", Ty::Str),
    ("tls_letsencrypt_hostname", Ty::Str),
    ("tls_letsencrypt_cache_dir", Ty::Str),
    ("tls_letsencrypt_challenge_type", Ty::Str),
    ("tls_letsencrypt_listen", Ty::Str),
    ("acme_url", Ty::Str),
    ("acme_email", Ty::Str),
    ("unix_socket", Ty::Str),
    ("unix_socket_permission", Ty::Str),
    ("log.level", Ty::Str),
    ("log.format", Ty::Str),
    ("disable_check_updates", Ty::Bool),
    ("node.expiry", Ty::Str),
    ("node.ephemeral.inactivity_timeout", Ty::Duration),
    ("node.device_approval", Ty::Bool),
    ("node.routes.ha.probe_interval", Ty::Duration),
    ("node.routes.ha.probe_timeout", Ty::Duration),
    ("node.device_approval_exempt_tagged_keys", Ty::Bool),
    ("dns.magic_dns", Ty::Bool),
    ("dns.base_domain", Ty::Str),
    ("dns.override_local_dns", Ty::Bool),
    ("dns.nameservers.global", Ty::List),
    ("dns.nameservers.split", Ty::MapList),
    // The seed's spelling of split DNS; merged with `split` when both are set.
    ("dns.nameservers.restricted", Ty::MapList),
    // ironscale: grant every node `magicdns-aaaa` (AAAA answers for peers).
    ("dns.magic_dns_aaaa", Ty::Bool),
    ("dns.search_domains", Ty::List),
    ("dns.extra_records", Ty::Records),
    ("dns.extra_records_path", Ty::Str),
    ("policy.mode", Ty::Str),
    ("policy.path", Ty::Str),
    ("oidc.issuer", Ty::Str),
    ("oidc.client_id", Ty::Str),
    ("oidc.client_secret", Ty::Str),
    ("oidc.client_secret_path", Ty::Str),
    ("oidc.scope", Ty::List),
    ("oidc.extra_params", Ty::MapStr),
    ("oidc.allowed_domains", Ty::List),
    ("oidc.allowed_users", Ty::List),
    ("oidc.allowed_groups", Ty::List),
    ("oidc.email_verified_required", Ty::Bool),
    ("oidc.use_expiry_from_token", Ty::Bool),
    ("oidc.only_start_if_oidc_is_available", Ty::Bool),
    ("oidc.pkce.enabled", Ty::Bool),
    ("oidc.pkce.method", Ty::Str),
    ("logtail.enabled", Ty::Bool),
    ("randomize_client_port", Ty::Bool),
    ("taildrop.enabled", Ty::Bool),
    ("tuning.batch_change_delay", Ty::Duration),
    ("tuning.register_cache_max_entries", Ty::Int),
    ("tuning.register_cache_expiration", Ty::Duration),
    ("cli.address", Ty::Str),
    ("cli.api_key", Ty::Str),
    ("cli.timeout", Ty::Duration),
    ("cli.insecure", Ty::Bool),
];

/// Valid Headscale keys that ironscale accepts and ignores (a whole subtree
/// when the entry names a section).
pub(crate) const IGNORED: &[&str] = &[
    "trusted_proxies",
    "database.debug",
    "database.gorm",
    "database.sqlite.wal_autocheckpoint",
    "preauth_keys",
    "auto_update",
    "tuning.notifier_send_timeout",
    "tuning.node_mapsession_buffered_chan_size",
    "tuning.batcher_workers",
    "tuning.node_store_batch_size",
    "tuning.node_store_batch_timeout",
    "node_update_check_interval",
];

/// Deprecated or misplaced keys whose value ironscale still honours under the
/// new key (unless the new key is set too): (old, new).
pub(crate) const RENAMED: &[(&str, &str)] = &[
    (
        "ephemeral_node_inactivity_timeout",
        "node.ephemeral.inactivity_timeout",
    ),
    ("acl_policy_path", "policy.path"),
    ("dns_config.magic_dns", "dns.magic_dns"),
    ("dns_config.base_domain", "dns.base_domain"),
    ("dns_config.override_local_dns", "dns.override_local_dns"),
    ("dns_config.nameservers", "dns.nameservers.global"),
    ("dns_config.restricted_nameservers", "dns.nameservers.split"),
    ("dns_config.domains", "dns.search_domains"),
    ("dns_config.extra_records", "dns.extra_records"),
    // Not Headscale keys, but common in guides: clearly meant as the new ones.
    ("database.path", "database.sqlite.path"),
    ("db_type", "database.type"),
    ("db_path", "database.sqlite.path"),
    ("db_host", "database.postgres.host"),
    ("db_port", "database.postgres.port"),
    ("db_name", "database.postgres.name"),
    ("db_user", "database.postgres.user"),
    ("db_pass", "database.postgres.pass"),
    ("db_ssl", "database.postgres.ssl"),
    ("oidc.expiry", "node.expiry"),
];

/// `ip_prefixes` (a list) is split into `prefixes.v4` / `prefixes.v6` by family.
pub(crate) const IP_PREFIXES: &str = "ip_prefixes";

/// Removed Headscale keys: (key, what to do instead). Ignored with a warning.
pub(crate) const REMOVED: &[(&str, &str)] = &[
    (
        "dns.use_username_in_magic_dns",
        "it was removed in Headscale 0.23; MagicDNS names are `<node>.<base_domain>`",
    ),
    (
        "dns_config.use_username_in_magic_dns",
        "it was removed in Headscale 0.23; MagicDNS names are `<node>.<base_domain>`",
    ),
    (
        "oidc.strip_email_domain",
        "it was removed in Headscale 0.26",
    ),
    ("oidc.map_legacy_users", "it was removed in Headscale 0.26"),
    (
        "private_key_path",
        "the legacy WireGuard key is no longer used; only `noise.private_key_path` is",
    ),
];

pub(crate) fn ty_of(key: &str) -> Option<Ty> {
    KEYS.iter().find(|(k, _)| *k == key).map(|(_, t)| *t)
}

fn is_prefix_of(section: &str, key: &str) -> bool {
    key.len() > section.len() && key.starts_with(section) && key.as_bytes()[section.len()] == b'.'
}

/// Whether `path` is an intermediate mapping of some known key.
pub(crate) fn is_section(path: &str) -> bool {
    KEYS.iter().any(|(k, _)| is_prefix_of(path, k))
        || IGNORED.iter().any(|k| is_prefix_of(path, k))
        || RENAMED.iter().any(|(k, _)| is_prefix_of(path, k))
        || REMOVED.iter().any(|(k, _)| is_prefix_of(path, k))
}

/// Whether `path` is an ignored key or lies under an ignored section.
pub(crate) fn is_ignored(path: &str) -> bool {
    IGNORED.iter().any(|k| *k == path || is_prefix_of(k, path))
}

pub(crate) fn renamed(path: &str) -> Option<&'static str> {
    RENAMED.iter().find(|(o, _)| *o == path).map(|(_, n)| *n)
}

pub(crate) fn removed(path: &str) -> Option<&'static str> {
    REMOVED.iter().find(|(o, _)| *o == path).map(|(_, h)| *h)
}

/// The environment variable suffix for a key: `dns.base_domain` → `DNS_BASE_DOMAIN`.
pub(crate) fn env_suffix(key: &str) -> String {
    key.replace('.', "_").to_ascii_uppercase()
}

/// Look a variable suffix (after `IRONSCALE_`/`HEADSCALE_`) up in the key table.
pub(crate) fn key_for_env(suffix: &str) -> Option<&'static str> {
    KEYS.iter()
        .map(|(k, _)| *k)
        .find(|k| env_suffix(k) == suffix)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A "did you mean" for an unknown key: a known key at a small edit distance,
/// or one whose last segment matches (a key indented under the wrong parent).
pub(crate) fn suggest(path: &str) -> Option<String> {
    let all = KEYS.iter().map(|(k, _)| *k).chain(IGNORED.iter().copied());
    let mut best: Option<(usize, &str)> = None;
    for k in all {
        let d = edit_distance(path, k);
        if best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, k));
        }
    }
    if let Some((d, k)) = best {
        if d <= (path.len() / 4).clamp(1, 3) {
            return Some(format!("did you mean `{k}`?"));
        }
    }
    let last = path.rsplit('.').next().unwrap_or(path);
    let by_last: Vec<&str> = KEYS
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| k.rsplit('.').next() == Some(last) && *k != path)
        .collect();
    if by_last.len() == 1 {
        return Some(format!(
            "did you mean `{}`? (check the indentation)",
            by_last[0]
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_are_unambiguous() {
        for (i, (a, _)) in KEYS.iter().enumerate() {
            for (b, _) in &KEYS[i + 1..] {
                assert_ne!(
                    env_suffix(a),
                    env_suffix(b),
                    "{a} and {b} share an env name"
                );
            }
        }
        assert_eq!(key_for_env("DNS_BASE_DOMAIN"), Some("dns.base_domain"));
        assert_eq!(
            key_for_env("DERP_SERVER_STUN_LISTEN_ADDR"),
            Some("derp.server.stun_listen_addr")
        );
        assert_eq!(key_for_env("NOPE"), None);
    }

    #[test]
    fn sections() {
        assert!(is_section("derp"));
        assert!(is_section("derp.server"));
        assert!(is_section("dns_config"));
        assert!(!is_section("derp.server.enabled"));
        assert!(is_ignored("database.gorm.prepare_stmt"));
        assert!(!is_ignored("database.sqlite.path"));
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest("tuning.batched_change_delay").as_deref(),
            Some("did you mean `tuning.batch_change_delay`?")
        );
        assert_eq!(
            suggest("dns.magicdns").as_deref(),
            Some("did you mean `dns.magic_dns`?")
        );
        assert!(
            suggest("v6").is_some_and(|s| s.contains("prefixes.v6")),
            "{:?}",
            suggest("v6")
        );
        assert_eq!(suggest("completely_unrelated_thing_here"), None);
    }
}
