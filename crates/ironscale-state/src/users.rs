//! User commands and queries.

use std::collections::BTreeSet;
use std::sync::Arc;

use ironscale_types::{NodeId, User, UserId};

use crate::{now, Change, Result, State, StateError};

impl State {
    pub fn list_users(&self) -> Vec<User> {
        self.snapshot()
            .users
            .values()
            .map(|u| (**u).clone())
            .collect()
    }

    pub fn find_user(&self, name_or_id: &str) -> Result<Arc<User>> {
        let t = self.snapshot();
        if let Ok(id) = name_or_id.parse::<u64>() {
            if let Some(u) = t.users.get(&UserId(id)) {
                return Ok(u.clone());
            }
        }
        self.inner
            .index
            .load()
            .user_named(name_or_id)
            .and_then(|id| t.users.get(&id).cloned())
            .ok_or_else(|| StateError::UserNotFound(name_or_id.to_string()))
    }

    pub async fn create_user(&self, name: &str, display_name: &str, email: &str) -> Result<User> {
        validate_user_name(name)?;
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
        let u = self.inner.store.create_user(&new, now()).await?;
        let out = u.clone();
        self.commit(
            |t| {
                t.users.insert(u.id, Arc::new(u));
            },
            Change::Users(BTreeSet::new()),
        );
        Ok(out)
    }

    pub async fn rename_user(&self, name_or_id: &str, new_name: &str) -> Result<User> {
        validate_user_name(new_name)?;
        let _w = self.inner.write.lock().await;
        let u = self.find_user(name_or_id)?;
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
        self.inner.store.rename_user(u.id, new_name, now()).await?;
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

    pub async fn delete_user(&self, name_or_id: &str) -> Result<User> {
        let _w = self.inner.write.lock().await;
        let u = self.find_user(name_or_id)?;
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

fn validate_user_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || "-_.@+".contains(c))
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(StateError::Invalid(format!(
            "{name:?} is not a valid user name (letters, digits, '-', '_', '.', '@', '+'; at most 63 characters)"
        )))
    }
}
