//! Tailscale SSH check mode over the wire, with the in-process ts2021
//! client: the destination node's machine fetches the check rule's
//! `holdAndDelegate` URL and gets a login message and a wait URL; the wait
//! holds until the source device's owner passes the check (accept) or it is
//! denied (reject with the reason); a pass lasts the rule's `checkPeriod`;
//! only the destination's own machine may ask; without an identity provider
//! the answer is a rejection that says so.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

#[path = "support/client.rs"]
mod client;
use client::*;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use ironscale_state::SshCheckId;
use ironscale_types::{NodeId, UserRef};
use ironscale_wire as wire;

const POLICY: &str = r#"{
  "tagOwners": {"tag:server": ["alice@"]},
  "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
  "ssh": [
    {"action": "check", "src": ["alice@", "bob@", "tag:server"], "dst": ["tag:server"], "users": ["root"], "checkPeriod": "1h"}
  ]
}"#;

async fn get(h2: &mut H2, path: &str) -> (u16, String) {
    let req = hyper::Request::get(format!("https://hs.test{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    h2.ready().await.unwrap();
    let resp = h2.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn action(h2: &mut H2, src: NodeId, dst: NodeId, user: &str) -> wire::SshAction {
    let (status, body) = get(
        h2,
        &format!(
            "/machine/ssh/action/{}/to/{}?local_user={user}",
            src.0, dst.0
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn wait_path(a: &wire::SshAction) -> String {
    a.hold_and_delegate
        .strip_prefix("https://hs.test")
        .unwrap_or_else(|| panic!("{a:?}"))
        .to_string()
}

fn check_id(a: &wire::SshAction) -> SshCheckId {
    SshCheckId::parse(a.hold_and_delegate.rsplit('/').next().unwrap()).unwrap()
}

struct Env {
    s: Server,
    laptop: (Client, NodeId),
    phone: (Client, NodeId),
    server: (Client, NodeId),
}

/// alice's laptop, bob's phone, a server tagged `tag:server`.
async fn env(ssh_check_login: bool) -> Env {
    let s = start_with_options(
        Default::default(),
        Arc::new(ironscale_state::SystemClock),
        ironscale_control::ControlOptions {
            server_url: "https://hs.test/".into(),
            ssh_check_login,
            ..Default::default()
        },
    )
    .await;
    s.state.create_user("alice", "", "").await.unwrap();
    s.state.create_user("bob", "", "").await.unwrap();
    s.state.set_policy_text(POLICY, "p.hujson").await.unwrap();
    let key = |user: &'static str, tags: Vec<String>| {
        let st = s.state.clone();
        async move {
            st.create_preauth_key(Some(&UserRef::Name(user.into())), false, false, None, tags)
                .await
                .unwrap()
                .1
        }
    };
    let mut nodes = Vec::new();
    for (user, host, tags) in [
        ("alice", "laptop", vec![]),
        ("bob", "phone", vec![]),
        ("alice", "server", vec!["tag:server".to_string()]),
    ] {
        let (c, r) = join(&s, &key(user, tags).await, host).await;
        assert!(r.machine_authorized, "{}", r.error);
        let id = s.state.node_by_key(&c.node.node_public()).unwrap().id;
        nodes.push((c, id));
    }
    let server = nodes.pop().unwrap();
    let phone = nodes.pop().unwrap();
    let laptop = nodes.pop().unwrap();
    Env {
        s,
        laptop,
        phone,
        server,
    }
}

#[tokio::test]
async fn a_check_holds_until_the_owner_passes_it_and_the_pass_lasts_the_period() {
    let mut e = env(true).await;
    let (laptop, server) = (e.laptop.1, e.server.1);
    let first = action(&mut e.server.0.h2, laptop, server, "root").await;
    assert!(!first.accept && !first.reject, "{first:?}");
    let id = check_id(&first);
    assert_eq!(
        first.message,
        format!(
            "# Tailscale SSH requires an additional check.\n# To authenticate, visit: https://hs.test/ssh/check/{id}\n"
        )
    );
    assert_eq!(
        first.hold_and_delegate,
        format!("https://hs.test/machine/ssh/wait/{id}")
    );

    // Only the destination's machine may poll the check.
    let (status, _) = get(&mut e.laptop.0.h2, &wait_path(&first)).await;
    assert_eq!(status, 403);

    // The destination waits...
    let mut h2 = e.server.0.h2.clone();
    let path = wait_path(&first);
    let waiting = tokio::spawn(async move { get(&mut h2, &path).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the wait must hold until a verdict");
    // ...bob cannot pass alice's check...
    let bob = e.s.state.find_user(&UserRef::Name("bob".into())).unwrap();
    let alice = e.s.state.find_user(&UserRef::Name("alice".into())).unwrap();
    assert!(e.s.state.approve_ssh_check(&id, bob.id).is_err());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished());
    // ...alice can.
    e.s.state.approve_ssh_check(&id, alice.id).unwrap();
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the wait answers once the check passed")
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let done: wire::SshAction = serde_json::from_str(&body).unwrap();
    assert_eq!(
        done,
        wire::SshAction {
            accept: true,
            allow_agent_forwarding: true,
            allow_local_port_forwarding: true,
            allow_remote_port_forwarding: true,
            ..Default::default()
        }
    );

    // Within the hour, the next connection is accepted at once.
    let again = action(&mut e.server.0.h2, laptop, server, "root").await;
    assert!(
        again.accept && again.hold_and_delegate.is_empty(),
        "{again:?}"
    );
    // bob's phone was never checked.
    let phone = action(&mut e.server.0.h2, e.phone.1, server, "root").await;
    assert!(!phone.hold_and_delegate.is_empty(), "{phone:?}");
    // A local user no check rule covers.
    let other = action(&mut e.server.0.h2, laptop, server, "ubuntu").await;
    assert!(other.reject, "{other:?}");
}

#[tokio::test]
async fn a_denied_check_is_rejected_with_the_reason() {
    let mut e = env(true).await;
    let first = action(&mut e.server.0.h2, e.phone.1, e.server.1, "root").await;
    let id = check_id(&first);
    let mut h2 = e.server.0.h2.clone();
    let path = wait_path(&first);
    let waiting = tokio::spawn(async move { get(&mut h2, &path).await });
    assert!(e.s.state.deny_ssh_check(&id, "logged in as alice, not bob"));
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
    let a: wire::SshAction = serde_json::from_str(&body).unwrap();
    assert!(a.reject && !a.accept, "{a:?}");
    assert!(a.message.contains("logged in as alice, not bob"), "{a:?}");
    // An unknown check id: a rejection, not an error the client would retry.
    let (status, body) = get(
        &mut e.server.0.h2,
        "/machine/ssh/wait/AAAAAAAAAAAAAAAAAAAAAAAA",
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.contains("\"reject\":true"), "{body}");
}

#[tokio::test]
async fn only_the_destination_machine_may_ask() {
    let mut e = env(true).await;
    let (laptop, server) = (e.laptop.1, e.server.1);
    let path = format!(
        "/machine/ssh/action/{}/to/{}?local_user=root",
        laptop.0, server.0
    );
    let (status, _) = get(&mut e.laptop.0.h2, &path).await;
    assert_eq!(status, 403);
    let (status, _) = get(&mut e.phone.0.h2, &path).await;
    assert_eq!(status, 403);
    let (status, _) = get(
        &mut e.server.0.h2,
        &format!("/machine/ssh/action/{}/to/999?local_user=root", laptop.0),
    )
    .await;
    assert_eq!(status, 403, "an unknown destination is nobody's");
    // A tagged source has no person to pass a check.
    let tagged = action(&mut e.server.0.h2, server, server, "root").await;
    assert!(tagged.reject, "{tagged:?}");
    assert!(tagged.message.contains("tagged"), "{tagged:?}");
}

#[tokio::test]
async fn without_an_identity_provider_check_rules_are_rejected_saying_why() {
    let mut e = env(false).await;
    let a = action(&mut e.server.0.h2, e.laptop.1, e.server.1, "root").await;
    assert!(a.reject && !a.accept, "{a:?}");
    assert!(a.message.contains("identity provider"), "{a:?}");
    assert!(a.message.contains("oidc"), "{a:?}");
}
