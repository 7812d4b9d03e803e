//! `ironscale users create | list | rename | destroy`.

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};
use ironscale_api::client::{Client, UserFilter};
use ironscale_api::dto;

use super::output::{fmt_time, render, rest, table, Output};
use super::{confirmed, Confirm, Printed};

/// Pick a user by id or by name (exactly one), or by a bare name or id as in
/// many Headscale guides (`users destroy bob`).
#[derive(Args, Debug, Clone, PartialEq, Eq, Default)]
#[group(required = true, multiple = false)]
pub struct UserSelector {
    /// The user's numeric id.
    #[arg(short = 'i', long)]
    pub identifier: Option<u64>,
    /// The user's name.
    #[arg(short = 'n', long)]
    pub name: Option<String>,
    /// The user's name or id.
    #[arg(value_name = "USER")]
    pub user: Option<String>,
}

#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum UsersCmd {
    /// Create a user.
    #[command(visible_aliases = ["c", "new"])]
    Create {
        name: String,
        #[arg(short = 'd', long)]
        display_name: Option<String>,
        #[arg(short = 'e', long)]
        email: Option<String>,
        /// Accepted for Headscale compatibility; not stored yet.
        #[arg(short = 'p', long)]
        picture_url: Option<String>,
    },
    /// List users (optionally only those matching every filter given).
    #[command(visible_aliases = ["ls", "show"])]
    List {
        #[arg(short = 'i', long)]
        identifier: Option<u64>,
        #[arg(short = 'n', long)]
        name: Option<String>,
        #[arg(short = 'e', long)]
        email: Option<String>,
    },
    /// Rename a user: `--name OLD --new-name NEW`, `--identifier ID NEW`, or `OLD NEW`.
    #[command(visible_alias = "mv")]
    Rename {
        /// The user's numeric id.
        #[arg(short = 'i', long, conflicts_with = "name")]
        identifier: Option<u64>,
        /// The user's current name.
        #[arg(short = 'n', long)]
        name: Option<String>,
        /// The new name.
        #[arg(short = 'r', long = "new-name")]
        new_name: Option<String>,
        /// `OLD NEW`, or `NEW` when the user is picked with --identifier/--name.
        #[arg(value_name = "NAME", num_args = 0..=2)]
        names: Vec<String>,
    },
    /// Delete a user (it must own no nodes).
    #[command(visible_alias = "delete")]
    Destroy {
        #[command(flatten)]
        user: UserSelector,
        /// Do not ask for confirmation.
        #[arg(long)]
        force: bool,
    },
}

pub(crate) async fn users(
    cmd: UsersCmd,
    c: &Client,
    out: Output,
    confirm: &Confirm,
) -> anyhow::Result<Printed> {
    match cmd {
        UsersCmd::Create {
            name,
            display_name,
            email,
            picture_url,
        } => {
            let req = dto::CreateUserRequest {
                name,
                display_name: display_name.unwrap_or_default(),
                email: email.unwrap_or_default(),
                picture_url: picture_url.unwrap_or_default(),
            };
            let u = c.create_user(&req).await?;
            Ok(Printed::out(render(out, &rest(&u)?, || {
                format!("User {:?} created (ID {})\n", u.name, u.id)
            })))
        }
        UsersCmd::List {
            identifier,
            name,
            email,
        } => {
            let filter = UserFilter {
                id: identifier,
                name,
                email,
            };
            let users = c.list_users(&filter).await?;
            Ok(Printed::out(render(out, &rest(&users)?, || {
                users_table(&users)
            })))
        }
        UsersCmd::Rename {
            identifier,
            name,
            new_name,
            names,
        } => {
            let (user, new_name) = rename_args(identifier, name, new_name, names)?;
            let u = select_user(c, &user).await?;
            let r = c.rename_user(u.id, &new_name).await?;
            Ok(Printed::out(render(out, &rest(&r)?, || {
                format!("User {:?} renamed to {:?}\n", u.name, r.name)
            })))
        }
        UsersCmd::Destroy { user, force } => {
            let u = select_user(c, &user).await?;
            if !confirmed(
                force,
                confirm,
                &format!("Delete user {:?} (ID {})", u.name, u.id),
            )? {
                return Ok(Printed {
                    stdout: String::new(),
                    stderr: "Aborted: nothing deleted\n".into(),
                });
            }
            c.delete_user(u.id).await?;
            Ok(Printed::out(render(out, &rest(&dto::Empty {})?, || {
                format!("User {:?} destroyed\n", u.name)
            })))
        }
    }
}

/// A user given as a name or an id.
pub(crate) async fn find_user(c: &Client, name_or_id: &str) -> anyhow::Result<dto::User> {
    if let Some(id) = dto::parse_id(name_or_id) {
        let by_id = UserFilter {
            id: Some(id),
            ..UserFilter::default()
        };
        if let Some(u) = c.list_users(&by_id).await?.pop() {
            return Ok(u);
        }
    }
    let by_name = UserFilter {
        name: Some(name_or_id.to_string()),
        ..UserFilter::default()
    };
    c.list_users(&by_name)
        .await?
        .pop()
        .ok_or_else(|| anyhow!("user {name_or_id:?} not found"))
}

/// The user to rename and the new name, from any of the accepted forms.
pub(crate) fn rename_args(
    identifier: Option<u64>,
    name: Option<String>,
    new_name: Option<String>,
    mut names: Vec<String>,
) -> anyhow::Result<(UserSelector, String)> {
    let picked = identifier.is_some() || name.is_some();
    let user = if picked {
        UserSelector {
            identifier,
            name,
            user: None,
        }
    } else if names.is_empty() {
        bail!("say which user to rename: `users rename OLD NEW` or `--name OLD --new-name NEW`")
    } else {
        UserSelector {
            user: Some(names.remove(0)),
            ..UserSelector::default()
        }
    };
    let new_name = match (new_name, names.as_slice()) {
        (Some(n), []) => n,
        (None, [n]) => n.clone(),
        (None, []) => bail!("give the new name: `users rename OLD NEW` or `--new-name NEW`"),
        _ => bail!("too many names: use `users rename OLD NEW` or `--name OLD --new-name NEW`"),
    };
    Ok((user, new_name))
}

pub(crate) async fn select_user(c: &Client, s: &UserSelector) -> anyhow::Result<dto::User> {
    let (filter, what) = match (&s.identifier, &s.name, &s.user) {
        (Some(id), _, _) => (
            UserFilter {
                id: Some(*id),
                ..UserFilter::default()
            },
            format!("with id {id}"),
        ),
        (None, Some(n), _) => (
            UserFilter {
                name: Some(n.clone()),
                ..UserFilter::default()
            },
            format!("{n:?}"),
        ),
        (None, None, Some(name_or_id)) => return find_user(c, name_or_id).await,
        (None, None, None) => bail!("give the user's name, --identifier or --name"),
    };
    c.list_users(&filter)
        .await?
        .pop()
        .ok_or_else(|| anyhow!("user {what} not found"))
}

/// Headscale's columns; with users from an identity provider, a last
/// column names the provider and the subject it knows the user by
/// (`oidc http://idp/sub`), the identity later logins are matched on.
pub(crate) fn users_table(users: &[dto::User]) -> String {
    let with_provider = users.iter().any(|u| !u.provider.is_empty());
    let rows: Vec<Vec<String>> = users
        .iter()
        .map(|u| {
            let mut row = vec![
                u.id.to_string(),
                u.display_name.clone(),
                u.name.clone(),
                u.email.clone(),
                fmt_time(&u.created_at),
            ];
            if with_provider {
                row.push(
                    format!("{} {}", u.provider, u.provider_id)
                        .trim()
                        .to_string(),
                );
            }
            row
        })
        .collect();
    if with_provider {
        table(
            &["ID", "Name", "Username", "Email", "Created", "Provider"],
            &rows,
        )
    } else {
        table(&["ID", "Name", "Username", "Email", "Created"], &rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::testing::{at, parse, Top};
    use serde_json::Value;

    #[test]
    fn parses_headscale_users_words() {
        assert_eq!(
            parse("users create alice -d Alice -e a@example.com").expect("parses"),
            Top::Users(UsersCmd::Create {
                name: "alice".into(),
                display_name: Some("Alice".into()),
                email: Some("a@example.com".into()),
                picture_url: None
            })
        );
        assert!(matches!(
            parse("user ls").expect("parses"),
            Top::Users(UsersCmd::List { .. })
        ));
        assert!(matches!(
            parse("users list --name bob").expect("parses"),
            Top::Users(UsersCmd::List { name: Some(n), identifier: None, .. }) if n == "bob"
        ));
        // Every accepted form of `users rename` picks the same user and new name.
        let rename = |args: &str| match parse(args).expect("parses") {
            Top::Users(UsersCmd::Rename {
                identifier,
                name,
                new_name,
                names,
            }) => rename_args(identifier, name, new_name, names),
            other => panic!("{other:?}"),
        };
        let by_name = UserSelector {
            name: Some("bob".into()),
            ..UserSelector::default()
        };
        let bare = UserSelector {
            user: Some("bob".into()),
            ..UserSelector::default()
        };
        let by_id = UserSelector {
            identifier: Some(3),
            ..UserSelector::default()
        };
        for (args, want) in [
            ("users rename --name bob --new-name robert", &by_name),
            ("users rename -n bob robert", &by_name),
            ("users rename bob robert", &bare),
            ("users rename bob --new-name robert", &bare),
            ("users mv -i 3 -r robert", &by_id),
            ("users mv -i 3 robert", &by_id),
        ] {
            let (user, new_name) = rename(args).unwrap_or_else(|e| panic!("{args}: {e}"));
            assert_eq!((&user, new_name.as_str()), (want, "robert"), "{args}");
        }
        for args in [
            "users rename --name bob",
            "users rename bob",
            "users rename bob robert --new-name rob",
            "users rename -n bob robert rob",
        ] {
            assert!(rename(args).is_err(), "{args} should be refused");
        }
        assert!(parse("users rename").is_ok_and(|_| rename("users rename").is_err()));
        assert!(parse("users rename -i 3 -n bob robert").is_err());

        assert!(matches!(
            parse("users delete --name bob --force").expect("parses"),
            Top::Users(UsersCmd::Destroy { force: true, .. })
        ));
        assert!(matches!(
            parse("users destroy -i 2").expect("parses"),
            Top::Users(UsersCmd::Destroy {
                force: false,
                user: UserSelector {
                    identifier: Some(2),
                    ..
                }
            })
        ));
        assert!(matches!(
            parse("users destroy bob --force").expect("parses"),
            Top::Users(UsersCmd::Destroy {
                force: true,
                user: UserSelector { user: Some(u), .. }
            }) if u == "bob"
        ));
        // Exactly one of --identifier / --name / USER.
        assert!(parse("users destroy").is_err());
        assert!(parse("users destroy -i 2 --name bob").is_err());
        assert!(parse("users destroy bob --name bob").is_err());
    }

    #[test]
    fn users_table_aligns() {
        let u = dto::User {
            id: 1,
            name: "alice".into(),
            created_at: at(0),
            display_name: "Alice A.".into(),
            email: "a@example.com".into(),
            provider_id: String::new(),
            provider: String::new(),
            profile_pic_url: String::new(),
        };
        assert_eq!(
            users_table(&[u]),
            "ID | Name     | Username | Email         | Created\n\
             1  | Alice A. | alice    | a@example.com | 2023-11-14 22:13:20\n"
        );
    }

    #[test]
    fn users_from_a_provider_show_its_identity() {
        let local = dto::User {
            id: 1,
            name: "ops".into(),
            created_at: at(0),
            display_name: String::new(),
            email: String::new(),
            provider_id: String::new(),
            provider: String::new(),
            profile_pic_url: String::new(),
        };
        let sso = dto::User {
            id: 2,
            name: "alice".into(),
            email: "alice@example.com".into(),
            provider: "oidc".into(),
            provider_id: "http://idp/alice".into(),
            ..local.clone()
        };
        assert_eq!(
            users_table(&[local, sso]),
            "ID | Name | Username | Email             | Created             | Provider\n\
             1  |      | ops      |                   | 2023-11-14 22:13:20 |\n\
             2  |      | alice    | alice@example.com | 2023-11-14 22:13:20 | oidc http://idp/alice\n"
        );
    }

    /// Against a real server on a temporary socket.
    mod live {
        use super::*;
        use crate::cli::test_server::server;
        use crate::cli::testing::no_tty;

        #[tokio::test]
        async fn users_round_trip() {
            let s = server().await;
            let c = Client::unix(&s.sock);
            let create = |n: &str| UsersCmd::Create {
                name: n.into(),
                display_name: None,
                email: None,
                picture_url: None,
            };
            users(create("alice"), &c, Output::Table, &no_tty)
                .await
                .expect("create");
            let p = users(create("bob"), &c, Output::Json, &no_tty)
                .await
                .expect("create");
            let bob: Value = serde_json::from_str(&p.stdout).expect("json");
            assert_eq!(bob["name"], "bob");
            assert_eq!(bob["id"], 2);
            let e = users(create("bob"), &c, Output::Table, &no_tty)
                .await
                .expect_err("duplicate");
            assert!(e.to_string().contains("already exists"), "{e}");

            let list = UsersCmd::List {
                identifier: None,
                name: None,
                email: None,
            };
            let p = users(list.clone(), &c, Output::Table, &no_tty)
                .await
                .expect("list");
            assert_eq!(p.stdout.lines().count(), 3, "{}", p.stdout);
            assert!(
                p.stdout
                    .lines()
                    .nth(2)
                    .expect("row")
                    .starts_with("2  |      | bob"),
                "{}",
                p.stdout
            );

            let sel = UserSelector {
                identifier: None,
                name: Some("bob".into()),
                user: None,
            };
            users(
                UsersCmd::Rename {
                    identifier: None,
                    name: None,
                    new_name: None,
                    names: vec!["bob".into(), "robert".into()],
                },
                &c,
                Output::Table,
                &no_tty,
            )
            .await
            .expect("rename");
            let e = users(
                UsersCmd::Destroy {
                    user: sel,
                    force: true,
                },
                &c,
                Output::Table,
                &no_tty,
            )
            .await
            .expect_err("bob is now robert");
            assert!(e.to_string().contains("not found"), "{e}");

            let robert = UserSelector {
                identifier: Some(2),
                name: None,
                user: None,
            };
            let e = users(
                UsersCmd::Destroy {
                    user: robert.clone(),
                    force: false,
                },
                &c,
                Output::Table,
                &no_tty,
            )
            .await
            .expect_err("no terminal");
            assert!(e.to_string().contains("pass --force"), "{e}");
            users(
                UsersCmd::Destroy {
                    user: robert,
                    force: true,
                },
                &c,
                Output::Table,
                &no_tty,
            )
            .await
            .expect("destroy");
            let p = users(list, &c, Output::JsonLine, &no_tty)
                .await
                .expect("list");
            let v: Value = serde_json::from_str(&p.stdout).expect("json");
            assert_eq!(v.as_array().map(Vec::len), Some(1));
        }
    }
}
