//! Routes: `nodes list-routes` (Headscale 0.26+), the seed's `nodes routes
//! list | enable | disable`, and the legacy top-level `routes`, which says
//! what replaced it. Enabling or disabling a route changes the node's
//! approved routes through `approve-routes`; an exit node's 0.0.0.0/0 and
//! ::/0 go together. Every argument is checked before anything changes.

use anyhow::{anyhow, bail};
use clap::Subcommand;
use ipnet::IpNet;
use ironscale_api::client::Client;
use ironscale_api::dto;

use super::output::{render, rest, table, Output};
use super::Printed;

#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum RoutesCmd {
    /// Each node's routes: advertised, approved, and served now (primary).
    #[command(visible_alias = "ls")]
    List {
        /// Only this node.
        #[arg(short = 'i', long)]
        identifier: Option<u64>,
    },
    /// Approve a route the node advertises (0.0.0.0/0 or ::/0: both, an exit node).
    Enable {
        #[arg(short = 'i', long)]
        identifier: u64,
        /// The route, repeated or comma separated: -r 10.0.0.0/24
        #[arg(short = 'r', long, value_delimiter = ',', required = true)]
        route: Vec<String>,
    },
    /// Withdraw a route's approval (0.0.0.0/0 or ::/0: both).
    Disable {
        #[arg(short = 'i', long)]
        identifier: u64,
        #[arg(short = 'r', long, value_delimiter = ',', required = true)]
        route: Vec<String>,
    },
}

const EXIT: [&str; 2] = ["0.0.0.0/0", "::/0"];

/// A route argument, canonical (`10.0.0.1/24` is refused, naming `10.0.0.0/24`).
pub(crate) fn parse_route(s: &str) -> anyhow::Result<IpNet> {
    let net: IpNet = s
        .trim()
        .parse()
        .map_err(|_| anyhow!("{s:?} is not a prefix in CIDR notation (like 10.0.0.0/24)"))?;
    if net.trunc() != net {
        bail!(
            "{s} is not a canonical prefix: its host bits are set (did you mean {}?)",
            net.trunc()
        );
    }
    Ok(net)
}

/// The routes named, as strings, with an exit route's partner added.
fn with_exit_pairs(routes: &[IpNet]) -> Vec<String> {
    let mut out: Vec<String> = routes.iter().map(IpNet::to_string).collect();
    if out.iter().any(|r| EXIT.contains(&r.as_str())) {
        out.extend(EXIT.iter().map(|s| s.to_string()));
    }
    out.sort();
    out.dedup();
    out
}

fn routes_table(nodes: &[dto::Node]) -> String {
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.id.to_string(),
                n.given_name.clone(),
                n.available_routes.join(", "),
                n.approved_routes.join(", "),
                n.subnet_routes.join(", "),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "Hostname",
            "Advertised",
            "Approved",
            "Serving (primary)",
        ],
        &rows,
    )
}

pub(crate) async fn list(
    c: &Client,
    identifier: Option<u64>,
    out: Output,
) -> anyhow::Result<Printed> {
    let nodes: Vec<dto::Node> = match identifier {
        Some(id) => vec![c.get_node(id).await?],
        None => c
            .list_nodes(None)
            .await?
            .into_iter()
            .filter(|n| !n.available_routes.is_empty() || !n.approved_routes.is_empty())
            .collect(),
    };
    Ok(Printed::out(render(out, &rest(&nodes)?, || {
        routes_table(&nodes)
    })))
}

pub(crate) async fn routes(cmd: RoutesCmd, c: &Client, out: Output) -> anyhow::Result<Printed> {
    match cmd {
        RoutesCmd::List { identifier } => list(c, identifier, out).await,
        RoutesCmd::Enable { identifier, route } => {
            let wanted: Vec<IpNet> = route
                .iter()
                .map(|r| parse_route(r))
                .collect::<anyhow::Result<_>>()?;
            let n = c.get_node(identifier).await?;
            let add = with_exit_pairs(&wanted);
            for r in &add {
                if !n.available_routes.contains(r) {
                    bail!(
                        "node {identifier} ({}) does not advertise {r} (it advertises: {}); \
                         on the node, run `tailscale set --advertise-routes=...` or `--advertise-exit-node` first",
                        n.given_name,
                        if n.available_routes.is_empty() {
                            "nothing".to_string()
                        } else {
                            n.available_routes.join(", ")
                        }
                    );
                }
            }
            let mut approved = n.approved_routes.clone();
            approved.extend(add.iter().cloned());
            approved.sort();
            approved.dedup();
            let n = c.approve_routes(identifier, approved).await?;
            Ok(Printed::out(render(out, &rest(&n)?, || {
                format!(
                    "Node {:?}: enabled {}; approved routes now: {}\n",
                    n.given_name,
                    add.join(", "),
                    n.approved_routes.join(", ")
                )
            })))
        }
        RoutesCmd::Disable { identifier, route } => {
            let wanted: Vec<IpNet> = route
                .iter()
                .map(|r| parse_route(r))
                .collect::<anyhow::Result<_>>()?;
            let n = c.get_node(identifier).await?;
            let remove = with_exit_pairs(&wanted);
            for r in wanted.iter().map(IpNet::to_string) {
                if !n.approved_routes.contains(&r) {
                    bail!(
                        "{r} is not approved on node {identifier} ({}); approved: {}",
                        n.given_name,
                        if n.approved_routes.is_empty() {
                            "nothing".to_string()
                        } else {
                            n.approved_routes.join(", ")
                        }
                    );
                }
            }
            let approved: Vec<String> = n
                .approved_routes
                .iter()
                .filter(|r| !remove.contains(r))
                .cloned()
                .collect();
            let n = c.approve_routes(identifier, approved).await?;
            let left = if n.approved_routes.is_empty() {
                "none".to_string()
            } else {
                n.approved_routes.join(", ")
            };
            Ok(Printed::out(render(out, &rest(&n)?, || {
                format!(
                    "Node {:?}: disabled {}; approved routes now: {left}\n",
                    n.given_name,
                    remove.join(", ")
                )
            })))
        }
    }
}

/// The legacy top-level `routes` (Headscale before 0.26): what replaced it.
pub(crate) fn legacy(args: &[String]) -> anyhow::Error {
    let sub = args.first().map(String::as_str).unwrap_or("");
    let instead = match sub {
        "list" | "ls" => "`ironscale nodes list-routes` (or `nodes routes list`)",
        "enable" => "`ironscale nodes routes enable --identifier N --route P` (or `nodes approve-routes`)",
        "disable" => "`ironscale nodes routes disable --identifier N --route P` (or `nodes approve-routes`)",
        _ => "`ironscale nodes list-routes`, `nodes approve-routes` or `nodes routes list|enable|disable`",
    };
    anyhow!("`routes {sub}` was replaced (Headscale 0.26 moved routes under nodes): use {instead}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_must_be_canonical_cidr() {
        assert_eq!(
            parse_route("10.0.0.0/24").map(|n| n.to_string()).ok(),
            Some("10.0.0.0/24".into())
        );
        let e = parse_route("10.0.0.1/24").unwrap_err().to_string();
        assert!(e.contains("did you mean 10.0.0.0/24"), "{e}");
        let e = parse_route("10.0.0.0").unwrap_err().to_string();
        assert!(e.contains("CIDR"), "{e}");
        assert!(parse_route("fd00::/64").is_ok());
    }

    #[test]
    fn exit_routes_go_together() {
        let v4: IpNet = "0.0.0.0/0".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(with_exit_pairs(&[v4]), vec!["0.0.0.0/0", "::/0"]);
        let s: IpNet = "10.1.0.0/16".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(with_exit_pairs(&[s]), vec!["10.1.0.0/16"]);
    }

    #[test]
    fn legacy_routes_name_their_replacement() {
        let e = legacy(&["enable".into()]).to_string();
        assert!(e.contains("nodes routes enable"), "{e}");
        assert!(legacy(&[]).to_string().contains("list-routes"));
    }
}

/// Against a real server on a temporary socket.
#[cfg(test)]
mod live {
    use super::*;
    use crate::cli::test_server::server;
    use ironscale_keys::PrivateKey;
    use ironscale_types::UserRef;
    use ironscale_wire as wire;

    /// A node advertising a subnet and an exit node; its id.
    async fn router(s: &crate::cli::test_server::Server) -> u64 {
        s.state.create_user("alice", "", "").await.expect("user");
        let (_, key) = s
            .state
            .create_preauth_key(
                Some(&UserRef::Name("alice".parse().expect("name"))),
                true,
                false,
                None,
                vec![],
            )
            .await
            .expect("key");
        let req = wire::RegisterRequest {
            version: 106,
            node_key: PrivateKey::generate().node_public(),
            auth: Some(wire::RegisterResponseAuth { auth_key: key }),
            hostinfo: Some(serde_json::json!({
                "Hostname": "gw",
                "RoutableIPs": ["10.5.0.0/24", "0.0.0.0/0", "::/0"]
            })),
            ..Default::default()
        };
        let out = s
            .state
            .register(PrivateKey::generate().machine_public(), &req)
            .await;
        out.node().expect("registered").id.0
    }

    fn enable(id: u64, r: &str) -> RoutesCmd {
        RoutesCmd::Enable {
            identifier: id,
            route: vec![r.into()],
        }
    }
    fn disable(id: u64, r: &str) -> RoutesCmd {
        RoutesCmd::Disable {
            identifier: id,
            route: vec![r.into()],
        }
    }

    async fn approved(c: &Client, id: u64) -> Vec<String> {
        c.get_node(id).await.expect("node").approved_routes
    }

    #[tokio::test]
    async fn enable_disable_and_list() {
        let s = server().await;
        let c = Client::unix(&s.sock);
        let id = router(&s).await;
        let listed = routes(RoutesCmd::List { identifier: None }, &c, Output::Table)
            .await
            .expect("list");
        assert!(listed.stdout.contains("10.5.0.0/24"), "{}", listed.stdout);
        assert!(listed.stdout.contains("Serving"), "{}", listed.stdout);

        routes(enable(id, "10.5.0.0/24"), &c, Output::Table)
            .await
            .expect("enable subnet");
        assert_eq!(approved(&c, id).await, vec!["10.5.0.0/24"]);
        // An exit route brings its partner.
        routes(enable(id, "::/0"), &c, Output::Table)
            .await
            .expect("enable exit");
        let mut a = approved(&c, id).await;
        a.sort();
        assert_eq!(a, vec!["0.0.0.0/0", "10.5.0.0/24", "::/0"]);
        routes(disable(id, "0.0.0.0/0"), &c, Output::Table)
            .await
            .expect("disable exit");
        assert_eq!(approved(&c, id).await, vec!["10.5.0.0/24"]);
        let json = list(&c, Some(id), Output::Json).await.expect("json");
        let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
        assert_eq!(v[0]["approved_routes"][0], "10.5.0.0/24", "{v}");
        assert!(
            v[0]["available_routes"]
                .as_array()
                .is_some_and(|a| a.len() == 3),
            "{v}"
        );
    }

    #[tokio::test]
    async fn bad_routes_are_refused_and_change_nothing() {
        let s = server().await;
        let c = Client::unix(&s.sock);
        let id = router(&s).await;
        routes(enable(id, "10.5.0.0/24"), &c, Output::Table)
            .await
            .expect("enable");
        let before = approved(&c, id).await;
        let cases = [
            (enable(id, "10.5.0.1/24"), "did you mean 10.5.0.0/24"),
            (enable(id, "not-a-route"), "CIDR"),
            (
                enable(id, "192.168.9.0/24"),
                "does not advertise 192.168.9.0/24",
            ),
            (disable(id, "10.6.0.0/24"), "is not approved"),
            (enable(9999, "10.5.0.0/24"), "9999"),
        ];
        for (cmd, want) in cases {
            let e = routes(cmd.clone(), &c, Output::Table)
                .await
                .err()
                .unwrap_or_else(|| panic!("{cmd:?} was accepted"));
            assert!(format!("{e:#}").contains(want), "{cmd:?}: {e:#}");
            assert_eq!(approved(&c, id).await, before, "{cmd:?} changed the routes");
        }
    }
}
