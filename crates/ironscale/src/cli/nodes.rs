//! `ironscale nodes list | register | delete | expire | approve | rename | move | tag | list-routes | routes | approve-routes | backfillips`.

use anyhow::anyhow;
use clap::Subcommand;
use ironscale_api::client::Client;
use ironscale_api::dto;

use super::output::{fmt_opt_time, render, rest, short_key, table, Output};
use super::{confirmed, Confirm, Printed};

#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum NodesCmd {
    /// List nodes.
    #[command(visible_aliases = ["ls", "show"])]
    List {
        /// Only the nodes of this user (name or id).
        #[arg(short = 'u', long)]
        user: Option<String>,
        /// Only nodes carrying all these tags (tag:a,tag:b). Without a value
        /// (Headscale's old "show tags" switch) it filters nothing.
        #[arg(short = 't', long, value_delimiter = ',', num_args = 0..)]
        tags: Option<Vec<String>>,
    },
    /// Complete a client's interactive registration: the node joins, owned
    /// by --user (the seed's words; Headscale 0.27+: `auth register`).
    Register {
        /// The user who will own the node (name or id).
        #[arg(short = 'u', long)]
        user: String,
        /// The registration id: the end of the login URL the client printed
        /// (`<server_url>/register/<id>`).
        #[arg(short = 'k', long)]
        key: String,
    },
    /// Delete a node.
    Delete {
        #[arg(short = 'i', long)]
        identifier: u64,
        /// Do not ask for confirmation.
        #[arg(long)]
        force: bool,
    },
    /// Expire a node's key now (or at --expiry): it must log in again.
    #[command(visible_aliases = ["logout", "e"])]
    Expire {
        #[arg(short = 'i', long)]
        identifier: u64,
        /// When, as an RFC 3339 time (default: now).
        #[arg(short = 'e', long)]
        expiry: Option<String>,
    },
    /// Device approval (`node.device_approval`, not in Headscale): let a
    /// registered node in; until then it has no peers and no peer sees it.
    Approve {
        #[arg(short = 'i', long)]
        identifier: u64,
    },
    /// Give a node a new MagicDNS name.
    Rename {
        #[arg(short = 'i', long)]
        identifier: u64,
        #[arg(value_name = "NEW_NAME")]
        new_name: String,
    },
    /// Give a node to another user (a tagged node belongs to its tags and
    /// cannot be moved).
    #[command(visible_alias = "mv")]
    Move {
        #[arg(short = 'i', long)]
        identifier: u64,
        /// The new owner (name or id).
        #[arg(short = 'u', long)]
        user: String,
    },
    /// Give every node an address of each configured family it lacks (after
    /// adding prefixes.v6, say) and remove addresses of a family no longer
    /// configured.
    #[command(name = "backfillips")]
    BackfillIps {
        /// Do not ask for confirmation.
        #[arg(long, visible_alias = "force")]
        confirmed: bool,
    },
    /// Set a node's tags (each must be defined in the policy's tagOwners).
    Tag {
        #[arg(short = 'i', long)]
        identifier: u64,
        /// Tags, comma separated or repeated: -t tag:a,tag:b
        #[arg(short = 't', long, value_delimiter = ',', required = true)]
        tags: Vec<String>,
    },
    /// Each node's routes: advertised, approved, served now (Headscale 0.26+).
    #[command(name = "list-routes")]
    ListRoutes {
        /// Only this node.
        #[arg(short = 'i', long)]
        identifier: Option<u64>,
    },
    /// Subnet and exit routes: list, enable, disable (the seed's words).
    #[command(subcommand, visible_alias = "route")]
    Routes(super::RoutesCmd),
    /// Approve the routes a node advertises (subnets, or 0.0.0.0/0 and ::/0 for an exit node).
    #[command(name = "approve-routes")]
    ApproveRoutes {
        #[arg(short = 'i', long)]
        identifier: u64,
        /// Routes, comma separated: -r 10.0.0.0/24,0.0.0.0/0 (empty: approve none)
        #[arg(short = 'r', long, value_delimiter = ',')]
        routes: Vec<String>,
    },
}

pub(crate) async fn nodes(
    cmd: NodesCmd,
    c: &Client,
    out: Output,
    confirm: &Confirm,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Printed> {
    match cmd {
        NodesCmd::List { user, tags } => {
            let want: Vec<String> = tags
                .unwrap_or_default()
                .into_iter()
                .filter(|t| !t.is_empty())
                .collect();
            let list: Vec<dto::Node> = c
                .list_nodes(user.as_deref())
                .await?
                .into_iter()
                .filter(|n| want.iter().all(|t| n.tags.contains(t)))
                .collect();
            Ok(Printed::out(render(out, &rest(&list)?, || {
                nodes_table(&list, now)
            })))
        }
        NodesCmd::Register { user, key } => super::auth::register_node(c, &user, &key, out).await,
        NodesCmd::Delete { identifier, force } => {
            let n = c.get_node(identifier).await?;
            let q = format!("Delete node {:?} (ID {identifier})", n.given_name);
            if !confirmed(force, confirm, &q)? {
                return Ok(Printed {
                    stdout: String::new(),
                    stderr: "Aborted: nothing deleted\n".into(),
                });
            }
            c.delete_node(identifier).await?;
            Ok(Printed::out(render(out, &rest(&dto::Empty {})?, || {
                format!("Node {:?} deleted\n", n.given_name)
            })))
        }
        NodesCmd::Expire { identifier, expiry } => {
            let at = match expiry {
                Some(e) => dto::parse_ts(&e)
                    .map_err(|err| anyhow!("invalid --expiry {e:?}: {err} (use RFC 3339)"))?,
                None => None,
            };
            let n = c.expire_node(identifier, at).await?;
            Ok(Printed::out(render(out, &rest(&n)?, || {
                format!("Node {:?} expired\n", n.given_name)
            })))
        }
        NodesCmd::Approve { identifier } => {
            let n = c
                .approve_node(identifier)
                .await
                .map_err(|e| anyhow!("cannot approve node {identifier}: {e}"))?;
            Ok(Printed::out(render(out, &rest(&n)?, || {
                format!("Node {:?} approved\n", n.given_name)
            })))
        }
        NodesCmd::Rename {
            identifier,
            new_name,
        } => {
            let n = c.rename_node(identifier, &new_name).await?;
            Ok(Printed::out(render(out, &rest(&n)?, || {
                format!("Node renamed to {:?}\n", n.given_name)
            })))
        }
        NodesCmd::Move { identifier, user } => {
            let u = super::users::find_user(c, &user).await?;
            let n = c.move_node(identifier, u.id).await?;
            Ok(Printed::out(render(out, &rest(&n)?, || {
                format!("Node {:?} moved to user {:?}\n", n.given_name, u.name)
            })))
        }
        NodesCmd::BackfillIps { confirmed } => {
            let q = "Give every node the addresses of the configured prefixes it lacks \
                     (and remove those of a family no longer configured)";
            if !super::confirmed(confirmed, confirm, q)? {
                return Ok(Printed {
                    stdout: String::new(),
                    stderr: "Aborted: no address changed\n".into(),
                });
            }
            let changes = c.backfill_node_ips().await?;
            let body = dto::BackfillNodeIpsResponse {
                changes: changes.clone(),
            };
            Ok(Printed::out(render(out, &rest(&body)?, || {
                if changes.is_empty() {
                    "Every node already has its addresses: nothing changed\n".to_string()
                } else {
                    changes.iter().map(|l| format!("{l}\n")).collect()
                }
            })))
        }
        NodesCmd::Tag { identifier, tags } => {
            let n = c.set_tags(identifier, tags).await?;
            Ok(Printed::out(render(out, &rest(&n)?, || {
                format!("Node {:?} tagged {}\n", n.given_name, n.tags.join(","))
            })))
        }
        NodesCmd::ListRoutes { identifier } => super::routes::list(c, identifier, out).await,
        NodesCmd::Routes(cmd) => super::routes::routes(cmd, c, out).await,
        NodesCmd::ApproveRoutes { identifier, routes } => {
            let routes: Vec<String> = routes.into_iter().filter(|r| !r.is_empty()).collect();
            for r in &routes {
                super::routes::parse_route(r)?;
            }
            let n = c.approve_routes(identifier, routes.clone()).await?;
            Ok(Printed::out(render(out, &rest(&n)?, || {
                format!(
                    "Node {:?}: approved routes {}\n",
                    n.given_name,
                    routes.join(", ")
                )
            })))
        }
    }
}

pub(crate) fn nodes_table(nodes: &[dto::Node], now: chrono::DateTime<chrono::Utc>) -> String {
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            let expired = n.expiry.is_some_and(|e| e <= now);
            vec![
                n.id.to_string(),
                n.name.clone(),
                n.given_name.clone(),
                short_key(&n.machine_key),
                short_key(&n.node_key),
                n.user
                    .as_ref()
                    .map(|u| u.name.clone())
                    .unwrap_or_else(|| "-".into()),
                n.tags.join(","),
                n.ip_addresses.join(", "),
                n.pre_auth_key
                    .as_ref()
                    .is_some_and(|k| k.ephemeral)
                    .to_string(),
                fmt_opt_time(n.last_seen.as_ref(), "never"),
                fmt_opt_time(n.expiry.as_ref(), "never"),
                if n.online { "online" } else { "offline" }.to_string(),
                if expired { "yes" } else { "no" }.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "Hostname",
            "Name",
            "MachineKey",
            "NodeKey",
            "User",
            "Tags",
            "IP addresses",
            "Ephemeral",
            "Last seen",
            "Expiration",
            "Connected",
            "Expired",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::output::{cli_json, snake_case};
    use crate::cli::testing::{at, parse, Top};
    use serde_json::{json, Value};

    #[test]
    fn parses_nodes() {
        assert_eq!(
            parse("nodes list --user alice").expect("parses"),
            Top::Nodes(NodesCmd::List {
                user: Some("alice".into()),
                tags: None
            })
        );
        assert_eq!(
            parse("node ls --tags").expect("parses"),
            Top::Nodes(NodesCmd::List {
                user: None,
                tags: Some(vec![])
            })
        );
        assert_eq!(
            parse("nodes list -t tag:a,tag:b").expect("parses"),
            Top::Nodes(NodesCmd::List {
                user: None,
                tags: Some(vec!["tag:a".into(), "tag:b".into()])
            })
        );
        assert_eq!(
            parse("nodes delete -i 5 --force").expect("parses"),
            Top::Nodes(NodesCmd::Delete {
                identifier: 5,
                force: true
            })
        );
        assert_eq!(
            parse("nodes logout -i 5").expect("parses"),
            Top::Nodes(NodesCmd::Expire {
                identifier: 5,
                expiry: None
            })
        );
        assert_eq!(
            parse("nodes rename -i 5 web-1").expect("parses"),
            Top::Nodes(NodesCmd::Rename {
                identifier: 5,
                new_name: "web-1".into()
            })
        );
        assert_eq!(
            parse("nodes approve --identifier 7").expect("parses"),
            Top::Nodes(NodesCmd::Approve { identifier: 7 })
        );
        assert!(parse("nodes approve").is_err());
        assert!(parse("nodes delete").is_err());
        assert!(parse("nodes delete -i x").is_err());
    }

    fn sample_node() -> dto::Node {
        serde_json::from_value(json!({
            "id": "3", "machineKey": format!("mkey:{}", "ab".repeat(32)), "nodeKey": format!("nodekey:{}", "cd".repeat(32)),
            "discoKey": "", "ipAddresses": ["100.64.0.3", "fd7a:115c:a1e0::3"], "name": "laptop", "givenName": "laptop-1",
            "user": {"id": "1", "name": "alice", "createdAt": "2023-11-14T22:13:20Z"},
            "lastSeen": null, "expiry": "2023-11-14T22:13:30Z", "preAuthKey": null, "createdAt": "2023-11-14T22:13:20Z",
            "registerMethod": "REGISTER_METHOD_AUTH_KEY", "online": true, "approvedRoutes": [], "availableRoutes": [],
            "subnetRoutes": [], "tags": []
        }))
        .expect("a node")
    }

    #[test]
    fn node_table_and_expiry() {
        let n = sample_node();
        let before = nodes_table(std::slice::from_ref(&n), at(0));
        let lines: Vec<&str> = before.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with("ID | Hostname | Name     | MachineKey    | NodeKey"),
            "{}",
            lines[0]
        );
        assert!(lines[1].contains("| mkey:abababab |"), "{}", lines[1]);
        assert!(
            lines[1].contains("| 100.64.0.3, fd7a:115c:a1e0::3 |"),
            "{}",
            lines[1]
        );
        assert!(
            lines[1].ends_with("| never     | 2023-11-14 22:13:30 | online    | no"),
            "{}",
            lines[1]
        );
        // Every row has its separators under the header's.
        let cols = |l: &str| l.match_indices(" | ").map(|(i, _)| i).collect::<Vec<_>>();
        assert_eq!(cols(lines[0]), cols(lines[1]));
        let after = nodes_table(&[n], at(60));
        assert!(
            after.lines().nth(1).expect("row").ends_with("| yes"),
            "{after}"
        );
    }

    #[test]
    fn cli_json_is_headscale_cli_shaped() {
        let rest = serde_json::to_value(dto::ListNodesResponse {
            nodes: vec![sample_node()],
        })
        .expect("json");
        let v = cli_json(&rest["nodes"]);
        let n = &v[0];
        assert_eq!(n["id"], 3);
        assert_eq!(n["given_name"], "laptop-1");
        assert_eq!(n["ip_addresses"][0], "100.64.0.3");
        assert_eq!(n["user"]["id"], 1);
        assert_eq!(n["user"]["created_at"], "2023-11-14T22:13:20Z");
        for k in [
            "name",
            "online",
            "tags",
            "last_seen",
            "expiry",
            "created_at",
            "register_method",
            "machine_key",
            "node_key",
        ] {
            assert!(n.get(k).is_some(), "missing {k}");
        }
        assert!(n.get("givenName").is_none());
        assert_eq!(snake_case("preAuthKey"), "pre_auth_key");
    }

    /// Against a real server on a temporary socket.
    mod live {
        use super::*;
        use crate::cli::test_server::server;
        use ironscale_keys::PrivateKey;
        use ironscale_types::UserRef;
        use ironscale_wire as wire;

        /// A node of `user` (or tagged with `tags`) registered with a fresh key; its id.
        async fn enrol(
            s: &crate::cli::test_server::Server,
            host: &str,
            user: Option<&str>,
            tags: &[&str],
        ) -> u64 {
            let (_, key) = s
                .state
                .create_preauth_key(
                    user.map(|u| UserRef::Name(u.into())).as_ref(),
                    false,
                    false,
                    None,
                    tags.iter().map(|t| t.to_string()).collect(),
                )
                .await
                .expect("key");
            let req = wire::RegisterRequest {
                version: 106,
                node_key: PrivateKey::generate().node_public(),
                auth: Some(wire::RegisterResponseAuth { auth_key: key }),
                hostinfo: Some(json!({ "Hostname": host })),
                ..Default::default()
            };
            let out = s
                .state
                .register(PrivateKey::generate().machine_public(), &req)
                .await;
            out.node().expect("registered").id.0
        }

        async fn run(c: &Client, cmd: NodesCmd, out: Output) -> anyhow::Result<Printed> {
            let none = |_: &str| -> anyhow::Result<bool> { Ok(false) };
            nodes(cmd, c, out, &none, chrono::Utc::now()).await
        }

        fn mv(id: u64, user: &str) -> NodesCmd {
            NodesCmd::Move {
                identifier: id,
                user: user.into(),
            }
        }

        #[tokio::test]
        async fn move_as_the_seed_prints_it() {
            let s = server().await;
            let c = Client::unix(&s.sock);
            s.state.create_user("clients", "", "").await.expect("user");
            s.state.create_user("admin", "", "").await.expect("user");
            let id = enrol(&s, "laptop", Some("clients"), &[]).await;
            // `nodes move --identifier <node-id> --user admin`
            assert_eq!(
                crate::cli::testing::parse(&format!("nodes move --identifier {id} --user admin"))
                    .expect("parses"),
                crate::cli::testing::Top::Nodes(mv(id, "admin"))
            );
            let p = run(&c, mv(id, "admin"), Output::Table).await.expect("move");
            assert_eq!(p.stdout, "Node \"laptop\" moved to user \"admin\"\n");
            assert_eq!(
                c.get_node(id).await.expect("node").user.map(|u| u.name),
                Some("admin".into())
            );
            // By id, with JSON out.
            let p = run(&c, mv(id, "1"), Output::Json).await.expect("move");
            let v: Value = serde_json::from_str(&p.stdout).expect("json");
            assert_eq!(v["user"]["name"], "clients", "{v}");
            assert_eq!(v["id"], id, "{v}");
        }

        #[tokio::test]
        async fn backfillips_asks_first() {
            let s = server().await;
            let c = Client::unix(&s.sock);
            s.state.create_user("alice", "", "").await.expect("user");
            enrol(&s, "laptop", Some("alice"), &[]).await;
            assert_eq!(
                crate::cli::testing::parse("nodes backfillips --confirmed").expect("parses"),
                crate::cli::testing::Top::Nodes(NodesCmd::BackfillIps { confirmed: true })
            );
            assert_eq!(
                crate::cli::testing::parse("nodes backfillips --force").expect("parses"),
                crate::cli::testing::Top::Nodes(NodesCmd::BackfillIps { confirmed: true })
            );
            let before = c.list_nodes(None).await.expect("list");
            // Without a terminal and without --confirmed: refused.
            let e = nodes(
                NodesCmd::BackfillIps { confirmed: false },
                &c,
                Output::Table,
                &crate::cli::testing::no_tty,
                chrono::Utc::now(),
            )
            .await
            .expect_err("refused");
            assert!(e.to_string().contains("pass --force"), "{e}");
            // Answered no: nothing done.
            let p = run(
                &c,
                NodesCmd::BackfillIps { confirmed: false },
                Output::Table,
            )
            .await
            .expect("aborted");
            assert_eq!(p.stderr, "Aborted: no address changed\n");
            // Confirmed, every node has both families already.
            let p = run(&c, NodesCmd::BackfillIps { confirmed: true }, Output::Table)
                .await
                .expect("backfill");
            assert_eq!(
                p.stdout,
                "Every node already has its addresses: nothing changed\n"
            );
            let p = run(&c, NodesCmd::BackfillIps { confirmed: true }, Output::Json)
                .await
                .expect("backfill");
            let v: Value = serde_json::from_str(&p.stdout).expect("json");
            assert_eq!(v, json!({"changes": []}));
            assert_eq!(c.list_nodes(None).await.expect("list"), before);
        }

        #[tokio::test]
        async fn bad_tags_are_refused_and_change_nothing() {
            let s = server().await;
            let c = Client::unix(&s.sock);
            s.state.create_user("alice", "", "").await.expect("user");
            s.state
                .set_policy_text(
                    r#"{"tagOwners": {"tag:server": ["alice@"]}, "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#,
                    "policy.json",
                )
                .await
                .expect("policy");
            let id = enrol(&s, "laptop", Some("alice"), &[]).await;
            let before = c.list_nodes(None).await.expect("list");
            let tag = |id: u64, tags: &[&str]| NodesCmd::Tag {
                identifier: id,
                tags: tags.iter().map(|t| t.to_string()).collect(),
            };
            let cases = [
                (
                    tag(id, &["tag:ghost"]),
                    "tag \"tag:ghost\" is not defined in the policy's tagOwners",
                ),
                (tag(id, &["tag:server", "tag:ghost"]), "tag:ghost"),
                (tag(id, &["server"]), "server"),
                (tag(999, &["tag:server"]), "node 999 not found"),
            ];
            for (cmd, want) in cases {
                let e = run(&c, cmd.clone(), Output::Table)
                    .await
                    .err()
                    .unwrap_or_else(|| panic!("{cmd:?} was accepted"));
                let msg = format!("{e:#}");
                assert!(msg.contains(want), "{cmd:?}: {msg}");
            }
            assert_eq!(c.list_nodes(None).await.expect("list"), before);
            // An owned tag is accepted.
            let p = run(&c, tag(id, &["tag:server"]), Output::Table)
                .await
                .expect("tag");
            assert_eq!(p.stdout, "Node \"laptop\" tagged tag:server\n");
        }

        #[tokio::test]
        async fn bad_moves_are_refused_and_change_nothing() {
            let s = server().await;
            let c = Client::unix(&s.sock);
            s.state.create_user("alice", "", "").await.expect("user");
            s.state.create_user("bob", "", "").await.expect("user");
            let id = enrol(&s, "laptop", Some("alice"), &[]).await;
            let tagged = enrol(&s, "gw", None, &["tag:exit-node"]).await;
            let before = c.list_nodes(None).await.expect("list");
            let cases = [
                (mv(id, "ghost"), "user \"ghost\" not found".to_string()),
                (mv(999, "bob"), "node 999 not found".to_string()),
                (
                    mv(tagged, "bob"),
                    format!(
                        "node {tagged} (gw) is tagged (tag:exit-node): tagged nodes have no user"
                    ),
                ),
            ];
            for (cmd, want) in cases {
                let e = run(&c, cmd.clone(), Output::Table)
                    .await
                    .err()
                    .unwrap_or_else(|| panic!("{cmd:?} was accepted"));
                let msg = format!("{e:#}");
                assert!(msg.contains(&want), "{cmd:?}: {msg}");
                assert!(!msg.contains("\\\""), "{cmd:?}: doubled quotes in {msg}");
            }
            assert_eq!(c.list_nodes(None).await.expect("list"), before);
        }

        #[tokio::test]
        async fn nodes_errors() {
            let s = server().await;
            let c = Client::unix(&s.sock);
            let none = |_: &str| -> anyhow::Result<bool> { Ok(false) };
            let now = chrono::Utc::now();
            let p = nodes(
                NodesCmd::List {
                    user: None,
                    tags: None,
                },
                &c,
                Output::Json,
                &none,
                now,
            )
            .await
            .expect("list");
            assert_eq!(
                serde_json::from_str::<Value>(&p.stdout).expect("json"),
                json!([])
            );
            let e = nodes(
                NodesCmd::List {
                    user: Some("ghost".into()),
                    tags: None,
                },
                &c,
                Output::Table,
                &none,
                now,
            )
            .await
            .expect_err("unknown user");
            assert!(e.to_string().contains("not found"), "{e}");
            let e = nodes(
                NodesCmd::Delete {
                    identifier: 9,
                    force: true,
                },
                &c,
                Output::Table,
                &none,
                now,
            )
            .await
            .expect_err("no node");
            assert!(e.to_string().contains("not found"), "{e}");
            let e = nodes(
                NodesCmd::Rename {
                    identifier: 9,
                    new_name: "x".into(),
                },
                &c,
                Output::Table,
                &none,
                now,
            )
            .await
            .expect_err("no node");
            assert!(e.to_string().contains("not found"), "{e}");
        }

        #[tokio::test]
        async fn approve_lets_an_unapproved_node_in_and_refuses_an_unknown_one() {
            let s = crate::cli::test_server::server_with(ironscale_state::Settings {
                device_approval: true,
                ..Default::default()
            })
            .await;
            let c = Client::unix(&s.sock);
            s.state.create_user("alice", "", "").await.expect("user");
            let id = enrol(&s, "laptop", Some("alice"), &[]).await;
            let node = |id| s.state.get_node(ironscale_types::NodeId(id));
            assert!(!node(id).expect("node").approved);
            let e = run(&c, NodesCmd::Approve { identifier: 999 }, Output::Table)
                .await
                .expect_err("no node");
            let m = e.to_string();
            assert!(
                m.starts_with("cannot approve node 999:") && m.contains("not found"),
                "{m}"
            );
            assert!(!node(id).expect("node").approved, "nothing changed");
            let p = run(&c, NodesCmd::Approve { identifier: id }, Output::Table)
                .await
                .expect("approve");
            assert_eq!(p.stdout, "Node \"laptop\" approved\n");
            assert!(node(id).expect("node").approved);
            let p = run(&c, NodesCmd::Approve { identifier: id }, Output::Json)
                .await
                .expect("again");
            let v: Value = serde_json::from_str(&p.stdout).expect("json");
            assert_eq!(v["id"], id, "{v}");
        }
    }
}
