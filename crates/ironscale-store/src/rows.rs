//! The only place where database rows and domain types meet.
//!
//! Column encodings (identical on SQLite and PostgreSQL, so that one sqlx
//! `Any` code path serves both):
//! * ids: BIGINT (domain ids are u64 > 0);
//! * timestamps: BIGINT unix microseconds, NULL for "none";
//! * booleans: BIGINT 0/1;
//! * keys: their Tailscale text form (`mkey:…`, `nodekey:…`, `discokey:…`);
//! * lists (tags, routes, endpoints): JSON arrays of strings;
//! * Hostinfo: the client's JSON text, unparsed.

use std::net::{Ipv4Addr, Ipv6Addr};

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use ironscale_types::{
    ApiKey, AuditEntry, DiscoPublic, MachinePublic, Node, NodeId, NodePresence, NodePublic,
    PreAuthKey, RegisterMethod, Timestamp, User, UserId,
};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{NodeUpdate, StoreError};

pub(crate) const USER_COLUMNS: &str =
    "id, name, display_name, email, provider, provider_id, profile_pic_url, idp_groups, created_at";

pub(crate) const NODE_COLUMNS: &str = "id, machine_key, node_key, disco_key, ipv4, ipv6, hostname, given_name, \
     user_id, tags, hostinfo, home_derp, announced_routes, approved_routes, endpoints, expiry, created_at, \
     last_seen, register_method, auth_key_id, ephemeral, capver, approved";

pub(crate) const APIKEY_COLUMNS: &str = "id, prefix, hash, expiration, created_at, last_seen";

pub(crate) const AUDIT_COLUMNS: &str = "id, at, actor, action, target, result, detail";

pub(crate) const PREAUTH_COLUMNS: &str =
    "id, prefix, hash, user_id, reusable, ephemeral, used, tags, expiration, created_at";

fn corrupt(
    table: &'static str,
    id: i64,
    column: &'static str,
    reason: impl std::fmt::Display,
) -> StoreError {
    StoreError::Corrupt {
        table,
        id,
        column,
        reason: reason.to_string(),
    }
}

// ---- scalar encodings ------------------------------------------------------

pub(crate) fn ts(t: Timestamp) -> i64 {
    t.timestamp_micros()
}

pub(crate) fn ts_opt(t: Option<Timestamp>) -> Option<i64> {
    t.map(ts)
}

fn ts_from(
    table: &'static str,
    id: i64,
    column: &'static str,
    v: i64,
) -> Result<Timestamp, StoreError> {
    DateTime::<Utc>::from_timestamp_micros(v)
        .ok_or_else(|| corrupt(table, id, column, format!("timestamp {v} out of range")))
}

fn ts_from_opt(
    table: &'static str,
    id: i64,
    column: &'static str,
    v: Option<i64>,
) -> Result<Option<Timestamp>, StoreError> {
    v.map(|v| ts_from(table, id, column, v)).transpose()
}

pub(crate) fn id_to_db(id: u64) -> Result<i64, StoreError> {
    i64::try_from(id).map_err(|_| StoreError::Invalid(format!("id {id} is out of range")))
}

fn id_from(table: &'static str, id: i64, column: &'static str, v: i64) -> Result<u64, StoreError> {
    u64::try_from(v)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| corrupt(table, id, column, format!("invalid id {v}")))
}

pub(crate) fn bool_to_db(b: bool) -> i64 {
    i64::from(b)
}

pub(crate) fn json_strings<S: AsRef<str>>(items: &[S]) -> String {
    let v: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    serde_json::to_string(&v).unwrap_or_else(|_| "[]".into())
}

fn strings_from(
    table: &'static str,
    id: i64,
    column: &'static str,
    s: &str,
) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(s).map_err(|e| corrupt(table, id, column, e))
}

fn routes_from(
    table: &'static str,
    id: i64,
    column: &'static str,
    s: &str,
) -> Result<Vec<IpNet>, StoreError> {
    strings_from(table, id, column, s)?
        .iter()
        .map(|r| {
            r.parse::<IpNet>()
                .map_err(|e| corrupt(table, id, column, format!("{r:?}: {e}")))
        })
        .collect()
}

fn get<'r, T>(row: &'r AnyRow, table: &'static str, column: &'static str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get::<T, _>(column)
        .map_err(|e| corrupt(table, row.try_get::<i64, _>("id").unwrap_or(0), column, e))
}

// ---- users -----------------------------------------------------------------

pub(crate) fn user_from_row(row: &AnyRow) -> Result<User, StoreError> {
    const T: &str = "users";
    let id: i64 = get(row, T, "id")?;
    Ok(User {
        id: UserId(id_from(T, id, "id", id)?),
        name: get(row, T, "name")?,
        display_name: get(row, T, "display_name")?,
        email: get(row, T, "email")?,
        provider: get(row, T, "provider")?,
        provider_id: get(row, T, "provider_id")?,
        profile_pic_url: get(row, T, "profile_pic_url")?,
        idp_groups: strings_from(T, id, "idp_groups", &get::<String>(row, T, "idp_groups")?)?,
        created_at: ts_from(T, id, "created_at", get(row, T, "created_at")?)?,
    })
}

// ---- nodes -----------------------------------------------------------------

/// A node in its column encoding, in [`NODE_COLUMNS`] order (without `id`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct NodeRow {
    pub machine_key: String,
    pub node_key: String,
    pub disco_key: String,
    pub ipv4: Option<String>,
    pub ipv6: Option<String>,
    pub hostname: String,
    pub given_name: String,
    pub user_id: Option<i64>,
    pub tags: String,
    pub hostinfo: Option<String>,
    pub home_derp: i64,
    pub announced_routes: String,
    pub approved_routes: String,
    pub endpoints: String,
    pub expiry: Option<i64>,
    pub created_at: i64,
    pub last_seen: Option<i64>,
    pub register_method: String,
    pub auth_key_id: Option<i64>,
    pub ephemeral: i64,
    pub capver: i64,
    pub approved: i64,
}

impl NodeRow {
    pub(crate) fn from_domain(n: &Node) -> Result<NodeRow, StoreError> {
        let routes = routes_json;
        Ok(NodeRow {
            machine_key: n.machine_key.to_string(),
            node_key: n.node_key.to_string(),
            disco_key: n.disco_key.to_string(),
            ipv4: n.ipv4.map(|a| a.to_string()),
            ipv6: n.ipv6.map(|a| a.to_string()),
            hostname: n.hostname.clone(),
            given_name: n.given_name.clone(),
            user_id: n.user_id.map(|u| id_to_db(u.0)).transpose()?,
            tags: json_strings(&n.tags),
            hostinfo: n.hostinfo_json.clone(),
            home_derp: i64::from(n.home_derp),
            announced_routes: routes(&n.announced_routes),
            approved_routes: routes(&n.approved_routes),
            endpoints: json_strings(&n.endpoints),
            expiry: ts_opt(n.expiry),
            created_at: ts(n.created_at),
            last_seen: ts_opt(n.last_seen),
            register_method: n.register_method.as_str().to_string(),
            auth_key_id: n.auth_key_id.map(id_to_db).transpose()?,
            ephemeral: bool_to_db(n.ephemeral),
            capver: i64::from(n.capver),
            approved: bool_to_db(n.approved),
        })
    }

    pub(crate) fn from_any(row: &AnyRow) -> Result<(i64, NodeRow), StoreError> {
        const T: &str = "nodes";
        Ok((
            get(row, T, "id")?,
            NodeRow {
                machine_key: get(row, T, "machine_key")?,
                node_key: get(row, T, "node_key")?,
                disco_key: get(row, T, "disco_key")?,
                ipv4: get(row, T, "ipv4")?,
                ipv6: get(row, T, "ipv6")?,
                hostname: get(row, T, "hostname")?,
                given_name: get(row, T, "given_name")?,
                user_id: get(row, T, "user_id")?,
                tags: get(row, T, "tags")?,
                hostinfo: get(row, T, "hostinfo")?,
                home_derp: get(row, T, "home_derp")?,
                announced_routes: get(row, T, "announced_routes")?,
                approved_routes: get(row, T, "approved_routes")?,
                endpoints: get(row, T, "endpoints")?,
                expiry: get(row, T, "expiry")?,
                created_at: get(row, T, "created_at")?,
                last_seen: get(row, T, "last_seen")?,
                register_method: get(row, T, "register_method")?,
                auth_key_id: get(row, T, "auth_key_id")?,
                ephemeral: get(row, T, "ephemeral")?,
                capver: get(row, T, "capver")?,
                approved: get(row, T, "approved")?,
            },
        ))
    }

    pub(crate) fn into_domain(self, id: i64) -> Result<Node, StoreError> {
        const T: &str = "nodes";
        let disco_key = if self.disco_key.is_empty() {
            DiscoPublic::ZERO
        } else {
            self.disco_key
                .parse::<DiscoPublic>()
                .map_err(|e| corrupt(T, id, "disco_key", e))?
        };
        Ok(Node {
            id: NodeId(id_from(T, id, "id", id)?),
            machine_key: self
                .machine_key
                .parse::<MachinePublic>()
                .map_err(|e| corrupt(T, id, "machine_key", e))?,
            node_key: self
                .node_key
                .parse::<NodePublic>()
                .map_err(|e| corrupt(T, id, "node_key", e))?,
            disco_key,
            ipv4: self
                .ipv4
                .map(|s| {
                    s.parse::<Ipv4Addr>()
                        .map_err(|e| corrupt(T, id, "ipv4", format!("{s:?}: {e}")))
                })
                .transpose()?,
            ipv6: self
                .ipv6
                .map(|s| {
                    s.parse::<Ipv6Addr>()
                        .map_err(|e| corrupt(T, id, "ipv6", format!("{s:?}: {e}")))
                })
                .transpose()?,
            hostname: self.hostname,
            given_name: self.given_name,
            user_id: self
                .user_id
                .map(|u| id_from(T, id, "user_id", u).map(UserId))
                .transpose()?,
            tags: strings_from(T, id, "tags", &self.tags)?,
            hostinfo_json: self.hostinfo,
            home_derp: i32::try_from(self.home_derp).map_err(|e| corrupt(T, id, "home_derp", e))?,
            announced_routes: routes_from(T, id, "announced_routes", &self.announced_routes)?,
            approved_routes: routes_from(T, id, "approved_routes", &self.approved_routes)?,
            endpoints: strings_from(T, id, "endpoints", &self.endpoints)?,
            expiry: ts_from_opt(T, id, "expiry", self.expiry)?,
            created_at: ts_from(T, id, "created_at", self.created_at)?,
            last_seen: ts_from_opt(T, id, "last_seen", self.last_seen)?,
            register_method: RegisterMethod::parse(&self.register_method),
            auth_key_id: self
                .auth_key_id
                .map(|k| id_from(T, id, "auth_key_id", k))
                .transpose()?,
            ephemeral: self.ephemeral != 0,
            capver: u32::try_from(self.capver).map_err(|e| corrupt(T, id, "capver", e))?,
            approved: self.approved != 0,
        })
    }
}

/// A value for a column of a field-level update.
pub(crate) enum DbValue {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    OptInt(Option<i64>),
}

fn routes_json(r: &[IpNet]) -> String {
    json_strings(&r.iter().map(ToString::to_string).collect::<Vec<_>>())
}

/// The columns a [`NodeUpdate`] writes, in its encoding.
pub(crate) fn node_update_columns(
    u: &NodeUpdate,
) -> Result<Vec<(&'static str, DbValue)>, StoreError> {
    use DbValue::*;
    let mut v = Vec::new();
    if let Some(k) = &u.node_key {
        v.push(("node_key", Text(k.to_string())));
    }
    if let Some(h) = &u.hostname {
        v.push(("hostname", Text(h.clone())));
    }
    if let Some(g) = &u.given_name {
        v.push(("given_name", Text(g.clone())));
    }
    if let Some(o) = &u.owner {
        v.push((
            "user_id",
            OptInt(o.user_id.map(|u| id_to_db(u.0)).transpose()?),
        ));
        v.push(("tags", Text(json_strings(&o.tags))));
    }
    if let Some(h) = &u.hostinfo_json {
        v.push(("hostinfo", OptText(h.clone())));
    }
    if let Some(r) = &u.announced_routes {
        v.push(("announced_routes", Text(routes_json(r))));
    }
    if let Some(r) = &u.approved_routes {
        v.push(("approved_routes", Text(routes_json(r))));
    }
    if let Some(e) = u.expiry {
        v.push(("expiry", OptInt(ts_opt(e))));
    }
    if let Some(m) = u.register_method {
        v.push(("register_method", Text(m.as_str().to_string())));
    }
    if let Some(k) = u.auth_key_id {
        v.push(("auth_key_id", OptInt(k.map(id_to_db).transpose()?)));
    }
    if let Some(e) = u.ephemeral {
        v.push(("ephemeral", Int(bool_to_db(e))));
    }
    if let Some(c) = u.capver {
        v.push(("capver", Int(i64::from(c))));
    }
    if let Some(a) = u.approved {
        v.push(("approved", Int(bool_to_db(a))));
    }
    if let Some(a) = u.ipv4 {
        v.push(("ipv4", OptText(a.map(|a| a.to_string()))));
    }
    if let Some(a) = u.ipv6 {
        v.push(("ipv6", OptText(a.map(|a| a.to_string()))));
    }
    Ok(v)
}

/// A node's presence in its column encoding: disco_key, endpoints, home_derp, last_seen.
pub(crate) fn presence_columns(p: &NodePresence) -> (String, String, i64, Option<i64>) {
    (
        p.disco_key.to_string(),
        json_strings(&p.endpoints),
        i64::from(p.home_derp),
        ts_opt(p.last_seen),
    )
}

pub(crate) fn node_from_row(row: &AnyRow) -> Result<Node, StoreError> {
    let (id, r) = NodeRow::from_any(row)?;
    r.into_domain(id)
}

// ---- pre-auth keys -----------------------------------------------------------

pub(crate) fn apikey_from_row(row: &AnyRow) -> Result<ApiKey, StoreError> {
    const T: &str = "api_keys";
    let id: i64 = get(row, T, "id")?;
    Ok(ApiKey {
        id: id_from(T, id, "id", id)?,
        prefix: get(row, T, "prefix")?,
        hash: get(row, T, "hash")?,
        expiration: ts_from_opt(T, id, "expiration", get(row, T, "expiration")?)?,
        created_at: ts_from(T, id, "created_at", get(row, T, "created_at")?)?,
        last_seen: ts_from_opt(T, id, "last_seen", get(row, T, "last_seen")?)?,
    })
}

pub(crate) fn audit_from_row(row: &AnyRow) -> Result<AuditEntry, StoreError> {
    const T: &str = "audit_log";
    let id: i64 = get(row, T, "id")?;
    Ok(AuditEntry {
        id: id_from(T, id, "id", id)?,
        at: ts_from(T, id, "at", get(row, T, "at")?)?,
        actor: get(row, T, "actor")?,
        action: get(row, T, "action")?,
        target: get(row, T, "target")?,
        result: get(row, T, "result")?,
        detail: get(row, T, "detail")?,
    })
}

pub(crate) fn preauth_from_row(row: &AnyRow) -> Result<PreAuthKey, StoreError> {
    const T: &str = "pre_auth_keys";
    let id: i64 = get(row, T, "id")?;
    let user_id: Option<i64> = get(row, T, "user_id")?;
    let tags: String = get(row, T, "tags")?;
    Ok(PreAuthKey {
        id: id_from(T, id, "id", id)?,
        prefix: get(row, T, "prefix")?,
        hash: get(row, T, "hash")?,
        user_id: user_id
            .map(|u| id_from(T, id, "user_id", u).map(UserId))
            .transpose()?,
        reusable: get::<i64>(row, T, "reusable")? != 0,
        ephemeral: get::<i64>(row, T, "ephemeral")? != 0,
        used: get::<i64>(row, T, "used")? != 0,
        tags: strings_from(T, id, "tags", &tags)?,
        expiration: ts_from_opt(T, id, "expiration", get(row, T, "expiration")?)?,
        created_at: ts_from(T, id, "created_at", get(row, T, "created_at")?)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn key(b: u8) -> [u8; 32] {
        [b; 32]
    }

    pub(crate) fn sample_node() -> Node {
        Node {
            id: NodeId(7),
            machine_key: MachinePublic(key(1)),
            node_key: NodePublic(key(2)),
            disco_key: DiscoPublic(key(3)),
            ipv4: Some("100.64.0.1".parse().expect("ip")),
            ipv6: Some("fd7a:115c:a1e0::1".parse().expect("ip")),
            hostname: "laptop".into(),
            given_name: "laptop".into(),
            user_id: Some(UserId(3)),
            tags: vec!["tag:server".into()],
            hostinfo_json: Some(r#"{"OS":"linux"}"#.into()),
            home_derp: 999,
            announced_routes: vec![
                "10.0.0.0/24".parse().expect("net"),
                "::/0".parse().expect("net"),
            ],
            approved_routes: vec!["10.0.0.0/24".parse().expect("net")],
            endpoints: vec!["192.0.2.1:41641".into()],
            expiry: Some(
                Utc.with_ymd_and_hms(2030, 1, 2, 3, 4, 5)
                    .single()
                    .expect("ts"),
            ),
            created_at: Utc
                .timestamp_micros(1_700_000_000_123_456)
                .single()
                .expect("ts"),
            last_seen: None,
            register_method: RegisterMethod::AuthKey,
            auth_key_id: Some(5),
            ephemeral: true,
            capver: 130,
            approved: true,
        }
    }

    #[test]
    fn node_round_trips_through_its_row() {
        let n = sample_node();
        let row = NodeRow::from_domain(&n).expect("row");
        assert_eq!(row.tags, r#"["tag:server"]"#);
        assert_eq!(row.announced_routes, r#"["10.0.0.0/24","::/0"]"#);
        assert_eq!(row.node_key, format!("nodekey:{}", hex::encode(key(2))));
        assert_eq!(row.ephemeral, 1);
        assert_eq!(row.created_at, 1_700_000_000_123_456);
        assert_eq!(row.clone().into_domain(7).expect("domain"), n);
    }

    #[test]
    fn corrupt_rows_are_errors_naming_the_column() {
        let mut row = NodeRow::from_domain(&sample_node()).expect("row");
        row.approved_routes = r#"["not a route"]"#.into();
        let e = row.into_domain(7).expect_err("corrupt");
        assert!(
            matches!(
                e,
                StoreError::Corrupt {
                    column: "approved_routes",
                    id: 7,
                    ..
                }
            ),
            "{e}"
        );

        let mut row = NodeRow::from_domain(&sample_node()).expect("row");
        row.node_key = "nodekey:zz".into();
        assert!(matches!(
            row.into_domain(7),
            Err(StoreError::Corrupt {
                column: "node_key",
                ..
            })
        ));

        let mut row = NodeRow::from_domain(&sample_node()).expect("row");
        row.user_id = Some(0);
        assert!(matches!(
            row.into_domain(7),
            Err(StoreError::Corrupt {
                column: "user_id",
                ..
            })
        ));
    }

    #[test]
    fn empty_disco_key_is_zero() {
        let mut row = NodeRow::from_domain(&sample_node()).expect("row");
        row.disco_key = String::new();
        assert_eq!(
            row.into_domain(7).expect("domain").disco_key,
            DiscoPublic::ZERO
        );
    }

    #[test]
    fn timestamps_are_micros() {
        let t = Utc.timestamp_micros(1_234_567).single().expect("ts");
        assert_eq!(ts(t), 1_234_567);
        assert_eq!(ts_from("t", 1, "c", 1_234_567).expect("ts"), t);
        assert!(ts_from("t", 1, "c", i64::MAX).is_err());
    }
}
