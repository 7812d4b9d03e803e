//! User commands and queries.

use std::collections::BTreeSet;
use std::sync::Arc;

use ironscale_types::{NodeId, User, UserName, UserRef};

use crate::{Change, Result, State, StateError};

impl State {
    pub fn list_users(&self) -> Vec<User> {
        self.snapshot()
            .users
            .values()
            .map(|u| (**u).clone())
            .collect()
    }

    /// The user `r` names: by id, or by exact name. An id never falls back
    /// to a name (user "5" is not user id 5).
    pub fn find_user(&self, r: &UserRef) -> Result<Arc<User>> {
        let t = self.snapshot();
        match r {
            UserRef::Id(id) => t.users.get(id).cloned(),
            UserRef::Name(name) => self
                .inner
                .index
                .load()
                .user_named(name)
                .and_then(|id| t.users.get(&id).cloned()),
        }
        .ok_or_else(|| StateError::UserNotFound(r.to_string()))
    }

    pub async fn create_user(&self, name: &str, display_name: &str, email: &str) -> Result<User> {
        UserName::parse(name).map_err(|e| StateError::Invalid(e.0))?;
        let _w = self.inner.write.lock().await;
        if self.inner.index.load().user_named(name).is_some() {
            return Err(StateError::UserExists(name.to_string()));
        }
        let new = ironscale_store::NewUser {
            name: name.to_string(),
            display_name: display_name.to_string(),
            email: email.to_string(),
            ..Default::default()
        };
        let u = self.inner.store.create_user(&new, self.now()).await?;
        let out = u.clone();
        self.commit(
            |t| {
                t.users.insert(u.id, Arc::new(u));
            },
            Change::Users(BTreeSet::new()),
        );
        Ok(out)
    }

    pub async fn rename_user(&self, user: &UserRef, new_name: &str) -> Result<User> {
        UserName::parse(new_name).map_err(|e| StateError::Invalid(e.0))?;
        let _w = self.inner.write.lock().await;
        let u = self.find_user(user)?;
        if self
            .inner
            .index
            .load()
            .users_by_name
            .get(new_name)
            .is_some_and(|ids| ids.iter().any(|id| *id != u.id))
        {
            return Err(StateError::UserExists(new_name.to_string()));
        }
        let mut nu = (*u).clone();
        nu.name = new_name.to_string();
        self.inner
            .store
            .rename_user(u.id, new_name, self.now())
            .await?;
        let owned: BTreeSet<NodeId> = self.inner.index.load().nodes_of(u.id);
        let out = nu.clone();
        self.commit(
            |t| {
                t.users.insert(nu.id, Arc::new(nu));
            },
            Change::Users(owned),
        );
        Ok(out)
    }

    pub async fn delete_user(&self, user: &UserRef) -> Result<User> {
        let _w = self.inner.write.lock().await;
        let u = self.find_user(user)?;
        let nodes = self.inner.index.load().nodes_of(u.id).len();
        if nodes > 0 {
            return Err(StateError::UserHasNodes {
                name: u.name.clone(),
                nodes,
                id: u.id,
            });
        }
        self.inner.store.delete_user(u.id).await?;
        self.commit(
            |t| {
                t.users.remove(&u.id);
            },
            Change::Users(BTreeSet::new()),
        );
        Ok((*u).clone())
    }
}

/// A person as an identity provider vouched for them at a login (OIDC):
/// what [`State::upsert_provider_user`] finds or creates a user from.
#[derive(Clone, PartialEq, Eq)]
pub struct ProviderIdentity {
    /// `oidc`.
    pub provider: String,
    /// Stable for the person at that provider: `<issuer>/<sub>` for OIDC
    /// (as Headscale stores it), so a changed e-mail finds the same user.
    pub provider_id: String,
    /// The name to give a new user (`preferred_username`, else the e-mail);
    /// made unique if taken. An existing user keeps their name.
    pub preferred_name: String,
    pub email: String,
    pub display_name: String,
    pub profile_pic_url: String,
    /// The provider's groups as of this login (replaces the stored ones).
    pub groups: Vec<String>,
}

impl std::fmt::Debug for ProviderIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderIdentity")
            .field("provider", &self.provider)
            .field("provider_id", &self.provider_id)
            .field("email", &self.email)
            .field("groups", &self.groups.len())
            .finish_non_exhaustive()
    }
}

/// A user name for a new provider user: `wanted` if it is a valid name,
/// else its characters that are; `taken` names are skipped by a numeric suffix.
fn free_user_name(wanted: &str, fallback: &str, taken: impl Fn(&str) -> bool) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | '+'))
            .take(55)
            .collect::<String>()
            .trim_start_matches('-')
            .to_string()
    };
    let mut base = clean(wanted);
    if base.is_empty() || UserName::parse(&base).is_err() {
        base = clean(fallback);
    }
    if base.is_empty() || UserName::parse(&base).is_err() {
        base = "user".into();
    }
    if !taken(&base) {
        return base;
    }
    (2u32..)
        .map(|n| format!("{base}-{n}"))
        .find(|c| !taken(c))
        .unwrap_or(base)
}

impl State {
    /// The user an identity provider's login names: found by
    /// (`provider`, `provider_id`) and refreshed (e-mail, display name,
    /// picture and groups as the provider now says; the name stays), or
    /// created on first login. A changed group list reaches the policy at
    /// once (members of `oidc-group:` groups gain or lose access). The flag
    /// says whether the user was created now.
    pub async fn upsert_provider_user(&self, id: &ProviderIdentity) -> Result<(User, bool)> {
        if id.provider.is_empty() || id.provider_id.is_empty() {
            return Err(StateError::Invalid(
                "a provider identity needs a provider and an id".into(),
            ));
        }
        let _w = self.inner.write.lock().await;
        let existing = self
            .inner
            .store
            .get_user_by_provider_id(&id.provider, &id.provider_id)
            .await?;
        if let Some(u) = existing {
            let mut nu = u.clone();
            nu.email = id.email.clone();
            nu.display_name = id.display_name.clone();
            nu.profile_pic_url = id.profile_pic_url.clone();
            nu.idp_groups = id.groups.clone();
            if nu == u {
                return Ok((u, false));
            }
            let stored = self.inner.store.update_user(&nu, self.now()).await?;
            let owned: BTreeSet<NodeId> = self.inner.index.load().nodes_of(u.id);
            let out = stored.clone();
            self.commit(
                |t| {
                    t.users.insert(stored.id, Arc::new(stored));
                },
                Change::Users(owned),
            );
            tracing::info!(user = out.id.0, name = %out.name, "user refreshed from the identity provider");
            return Ok((out, false));
        }
        let index = self.inner.index.load();
        let name = free_user_name(&id.preferred_name, &id.email, |n| {
            index.user_named(n).is_some()
        });
        let new = ironscale_store::NewUser {
            name,
            display_name: id.display_name.clone(),
            email: id.email.clone(),
            provider: id.provider.clone(),
            provider_id: id.provider_id.clone(),
            profile_pic_url: id.profile_pic_url.clone(),
            idp_groups: id.groups.clone(),
        };
        let u = self.inner.store.create_user(&new, self.now()).await?;
        let out = u.clone();
        self.commit(
            |t| {
                t.users.insert(u.id, Arc::new(u));
            },
            Change::Users(BTreeSet::new()),
        );
        tracing::info!(user = out.id.0, name = %out.name, provider = %out.provider, "user created at first login");
        Ok((out, true))
    }
}

#[cfg(test)]
mod tests {
    use super::free_user_name;

    #[test]
    fn provider_user_names_are_valid_and_unique() {
        let none = |_: &str| false;
        assert_eq!(free_user_name("alice", "a@x.org", none), "alice");
        assert_eq!(free_user_name("", "a@x.org", none), "a@x.org");
        assert_eq!(free_user_name("Jöhn Doe", "", none), "JhnDoe");
        assert_eq!(free_user_name("---", "", none), "user");
        let taken = |n: &str| n == "alice" || n == "alice-2";
        assert_eq!(free_user_name("alice", "", taken), "alice-3");
    }
}
