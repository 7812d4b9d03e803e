//! `ironscale auth register | reject` (Headscale 0.27+), `auth list` (ours:
//! the registrations waiting, with their ids) and the seed's
//! `ironscale nodes register`: complete or refuse a client's interactive
//! registration, named by the id at the end of its login URL
//! (`<server_url>/register/<id>`).

use anyhow::anyhow;
use clap::Subcommand;
use ironscale_api::client::{Client, ClientError};
use ironscale_api::dto;

use super::output::{fmt_time, render, rest, short_key, table, Output};
use super::Printed;

#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum AuthCmd {
    /// Complete a pending registration: the node joins, owned by --user.
    Register {
        /// The registration id (the end of the login URL the client printed).
        #[arg(short = 'a', long = "auth-id")]
        auth_id: String,
        /// The user who will own the node (name or id).
        #[arg(short = 'u', long)]
        user: String,
    },
    /// List the registrations waiting to be completed (not in Headscale).
    #[command(visible_alias = "ls")]
    List,
    /// Refuse a pending registration; the waiting client is told.
    Reject {
        #[arg(short = 'a', long = "auth-id")]
        auth_id: String,
    },
}

pub(crate) async fn auth(
    cmd: AuthCmd,
    c: &Client,
    out: Output,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Printed> {
    match cmd {
        AuthCmd::List => {
            let list = c.list_pending_registrations().await?;
            Ok(Printed::out(render(out, &rest(&list)?, || {
                pending_table(&list, now)
            })))
        }
        AuthCmd::Register { auth_id, user } => {
            let n = c
                .auth_register(&user, &auth_id)
                .await
                .map_err(|e| refused("register the node", e))?;
            registered(out, &n)
        }
        AuthCmd::Reject { auth_id } => {
            c.auth_reject(&auth_id)
                .await
                .map_err(|e| refused("reject the registration", e))?;
            Ok(Printed::out(render(out, &rest(&dto::Empty {})?, || {
                format!("Registration {auth_id} rejected\n")
            })))
        }
    }
}

fn pending_table(list: &[dto::PendingRegistration], now: chrono::DateTime<chrono::Utc>) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|p| {
            vec![
                p.id.clone(),
                p.hostname.clone(),
                short_key(&p.machine_key),
                short_key(&p.node_key),
                fmt_time(&p.created_at),
                minutes_left(p.expires_at - now),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "Hostname",
            "MachineKey",
            "NodeKey",
            "Waiting since",
            "Expires in",
        ],
        &rows,
    )
}

fn minutes_left(d: chrono::TimeDelta) -> String {
    let s = d.num_seconds();
    if s <= 0 {
        "expired".into()
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

/// `nodes register --user U --key K`.
pub(crate) async fn register_node(
    c: &Client,
    user: &str,
    key: &str,
    out: Output,
) -> anyhow::Result<Printed> {
    let n = c
        .register_node(user, key)
        .await
        .map_err(|e| refused("register the node", e))?;
    registered(out, &n)
}

fn registered(out: Output, n: &dto::Node) -> anyhow::Result<Printed> {
    Ok(Printed::out(render(out, &rest(n)?, || {
        format!("Node {} registered\n", n.given_name)
    })))
}

/// The server's refusal, said as what could not be done (an unreachable
/// server keeps its own message).
fn refused(what: &str, e: ClientError) -> anyhow::Error {
    match e {
        ClientError::Server { .. } => anyhow!("cannot {what}: {e}"),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::nodes::NodesCmd;
    use crate::cli::testing::{parse, Top};

    #[test]
    fn parses_auth_and_nodes_register() {
        let id = "AbCdEfGhIjKlMnOpQrStUvWx";
        let want = Top::Auth(AuthCmd::Register {
            auth_id: id.into(),
            user: "alice".into(),
        });
        assert_eq!(
            parse(&format!("auth register --auth-id {id} --user alice")).expect("parses"),
            want
        );
        assert_eq!(
            parse(&format!("auth register -u alice -a {id}")).expect("parses"),
            want
        );
        assert_eq!(
            parse(&format!("auth reject --auth-id {id}")).expect("parses"),
            Top::Auth(AuthCmd::Reject { auth_id: id.into() })
        );
        let want = Top::Nodes(NodesCmd::Register {
            user: "alice".into(),
            key: id.into(),
        });
        assert_eq!(
            parse(&format!("nodes register --user alice --key {id}")).expect("parses"),
            want
        );
        assert_eq!(
            parse(&format!("nodes register -k {id} -u alice")).expect("parses"),
            want
        );
        assert!(parse("auth register --auth-id x").is_err(), "needs --user");
        assert!(parse("nodes register --user alice").is_err(), "needs --key");
        assert_eq!(
            parse("auth list").expect("parses"),
            Top::Auth(AuthCmd::List)
        );
    }

    /// Against a real server (interactive login on) on a temporary socket.
    mod live {
        use super::*;
        use crate::cli::nodes::nodes;
        use crate::cli::test_server::server_with;
        use crate::cli::testing::no_tty;
        use ironscale_keys::PrivateKey;
        use ironscale_state::{RegisterResult, RegistrationId, RegistrationStatus, State};
        use ironscale_wire as wire;
        use serde_json::Value;

        async fn pending(state: &State, host: &str) -> RegistrationId {
            let req = wire::RegisterRequest {
                version: 100,
                node_key: PrivateKey::generate().node_public(),
                hostinfo: Some(serde_json::json!({"Hostname": host})),
                ..Default::default()
            };
            match state
                .register(PrivateKey::generate().machine_public(), &req)
                .await
            {
                RegisterResult::NeedsLogin(p) => p.id,
                other => panic!("expected a pending registration, got {other:?}"),
            }
        }

        async fn node_count(state: &State) -> usize {
            state
                .node_views(&Default::default())
                .await
                .expect("nodes")
                .len()
        }

        fn settings() -> ironscale_state::Settings {
            ironscale_state::Settings {
                interactive_login: true,
                ..Default::default()
            }
        }

        #[tokio::test]
        async fn nodes_register_completes_and_refuses_clearly() {
            let s = server_with(settings()).await;
            let c = Client::unix(&s.sock);
            s.state.create_user("alice", "", "").await.expect("user");
            let id = pending(&s.state, "laptop").await;
            let reg = |user: &str, key: &str| NodesCmd::Register {
                user: user.into(),
                key: key.into(),
            };
            let now = chrono::Utc::now();

            // Bad input: a clear message, nothing changes.
            let e = nodes(reg("alice", "nodekey:abc"), &c, Output::Table, &no_tty, now)
                .await
                .expect_err("malformed id");
            let m = e.to_string();
            assert!(
                m.starts_with("cannot register the node: invalid registration id \"nodekey:abc\""),
                "{m}"
            );
            let e = nodes(reg("ghost", id.as_str()), &c, Output::Table, &no_tty, now)
                .await
                .expect_err("unknown user");
            let m = e.to_string();
            assert!(
                m.starts_with("cannot register the node: user")
                    && m.contains("ghost")
                    && m.contains("not found"),
                "{m}"
            );
            let e = nodes(
                reg("alice", "ZZZZZZZZZZZZZZZZZZZZZZZZ"),
                &c,
                Output::Table,
                &no_tty,
                now,
            )
            .await
            .expect_err("unknown id");
            assert!(
                e.to_string().contains("not found (it may have expired)"),
                "{e}"
            );
            assert_eq!(node_count(&s.state).await, 0);
            assert!(s.state.pending_registration(&id).is_some());

            let p = nodes(reg("alice", id.as_str()), &c, Output::Table, &no_tty, now)
                .await
                .expect("registered");
            assert_eq!(p.stdout, "Node laptop registered\n");
            assert_eq!(node_count(&s.state).await, 1);
            assert!(s.state.pending_registration(&id).is_none());

            // Spent: the same id again is refused.
            let e = nodes(reg("alice", id.as_str()), &c, Output::Table, &no_tty, now)
                .await
                .expect_err("spent");
            assert!(e.to_string().contains("not found"), "{e}");
            assert_eq!(node_count(&s.state).await, 1);
        }

        #[tokio::test]
        async fn auth_list_shows_the_waiting_registrations() {
            let s = server_with(settings()).await;
            let c = Client::unix(&s.sock);
            let now = chrono::Utc::now();
            let p = auth(AuthCmd::List, &c, Output::Json, now)
                .await
                .expect("list");
            assert_eq!(
                serde_json::from_str::<Value>(&p.stdout).expect("json"),
                serde_json::json!([])
            );
            let a = pending(&s.state, "first").await;
            let b = pending(&s.state, "second").await;
            let p = auth(AuthCmd::List, &c, Output::Json, now)
                .await
                .expect("list");
            let v: Value = serde_json::from_str(&p.stdout).expect("json");
            let ids: Vec<&str> = v
                .as_array()
                .expect("a list")
                .iter()
                .filter_map(|r| r["id"].as_str())
                .collect();
            let mut want = vec![a.as_str(), b.as_str()];
            want.sort();
            let mut got = ids.clone();
            got.sort();
            assert_eq!(got, want, "{v}");
            for r in v.as_array().expect("a list") {
                assert!(r["machine_key"]
                    .as_str()
                    .is_some_and(|k| k.starts_with("mkey:")));
                assert!(r["expires_at"].as_str().is_some(), "{r}");
            }
            // Read at the instant `first` started waiting: 15 minutes to live.
            let started = s.state.pending_registration(&a).expect("pending").created;
            let p = auth(AuthCmd::List, &c, Output::Table, started)
                .await
                .expect("table");
            let lines: Vec<&str> = p.stdout.lines().collect();
            assert_eq!(lines.len(), 3, "{}", p.stdout);
            assert!(lines[0].starts_with("ID "), "{}", lines[0]);
            let row = lines
                .iter()
                .find(|l| l.contains("| first "))
                .expect("first's row");
            assert!(row.starts_with(a.as_str()), "{row}");
            assert!(row.contains("| mkey:"), "{row}");
            assert!(row.ends_with("| 15m00s"), "{row}");

            // Completed or rejected, a registration leaves the list.
            s.state.create_user("alice", "", "").await.expect("user");
            auth(
                AuthCmd::Register {
                    auth_id: a.to_string(),
                    user: "alice".into(),
                },
                &c,
                Output::Table,
                now,
            )
            .await
            .expect("registered");
            auth(
                AuthCmd::Reject {
                    auth_id: b.to_string(),
                },
                &c,
                Output::Table,
                now,
            )
            .await
            .expect("rejected");
            let p = auth(AuthCmd::List, &c, Output::Table, now)
                .await
                .expect("table");
            assert_eq!(p.stdout.lines().count(), 1, "{}", p.stdout);
        }

        #[test]
        fn time_left_reads_as_minutes() {
            assert_eq!(minutes_left(chrono::TimeDelta::seconds(905)), "15m05s");
            assert_eq!(minutes_left(chrono::TimeDelta::seconds(59)), "0m59s");
            assert_eq!(minutes_left(chrono::TimeDelta::seconds(0)), "expired");
            assert_eq!(minutes_left(chrono::TimeDelta::seconds(-3)), "expired");
        }

        #[tokio::test]
        async fn auth_register_and_reject() {
            let s = server_with(settings()).await;
            let c = Client::unix(&s.sock);
            s.state.create_user("alice", "", "").await.expect("user");
            let a = pending(&s.state, "desk").await;
            let b = pending(&s.state, "stranger").await;
            let mut watch_b = s.state.watch_registration(&b).expect("watchable");

            let e = auth(
                AuthCmd::Register {
                    auth_id: a.to_string(),
                    user: "nobody".into(),
                },
                &c,
                Output::Table,
                chrono::Utc::now(),
            )
            .await
            .expect_err("unknown user");
            let m = e.to_string();
            assert!(
                m.starts_with("cannot register the node: user")
                    && m.contains("nobody")
                    && m.contains("not found"),
                "{m}"
            );
            assert_eq!(node_count(&s.state).await, 0);

            let p = auth(
                AuthCmd::Register {
                    auth_id: a.to_string(),
                    user: "alice".into(),
                },
                &c,
                Output::Json,
                chrono::Utc::now(),
            )
            .await
            .expect("registered");
            let v: Value = serde_json::from_str(&p.stdout).expect("json");
            assert_eq!(v["given_name"], "desk");
            assert_eq!(v["user"]["name"], "alice");
            assert_eq!(v["register_method"], "REGISTER_METHOD_CLI");
            assert!(v["id"].is_u64(), "{v}");

            let e = auth(
                AuthCmd::Reject {
                    auth_id: "short".into(),
                },
                &c,
                Output::Table,
                chrono::Utc::now(),
            )
            .await
            .expect_err("malformed");
            assert!(e.to_string().contains("invalid registration id"), "{e}");
            assert!(s.state.pending_registration(&b).is_some());
            let p = auth(
                AuthCmd::Reject {
                    auth_id: b.to_string(),
                },
                &c,
                Output::Yaml,
                chrono::Utc::now(),
            )
            .await
            .expect("rejected");
            assert_eq!(p.stdout.trim(), "{}");
            assert!(s.state.pending_registration(&b).is_none());
            watch_b.changed().await.expect("told");
            assert!(matches!(&*watch_b.borrow(), RegistrationStatus::Denied(_)));
            assert_eq!(node_count(&s.state).await, 1);
            let e = auth(
                AuthCmd::Reject {
                    auth_id: b.to_string(),
                },
                &c,
                Output::Table,
                chrono::Utc::now(),
            )
            .await
            .expect_err("gone");
            assert!(e.to_string().contains("not found"), "{e}");
        }
    }
}
