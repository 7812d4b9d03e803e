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
