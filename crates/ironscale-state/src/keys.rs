//! Pre-auth key commands and queries.

use ironscale_types::{PreAuthKey, Timestamp, UserRef};

use crate::{Result, State, StateError};

impl State {
    /// Create a key; returns the record and the full secret (shown once).
    pub async fn create_preauth_key(
        &self,
        user: Option<&UserRef>,
        reusable: bool,
        ephemeral: bool,
        expiration: Option<Timestamp>,
        tags: Vec<String>,
    ) -> Result<(PreAuthKey, String)> {
        let user_id = match user {
            Some(u) => Some(self.find_user(u)?.id),
            None => None,
        };
        if !tags.is_empty() {
            match user_id {
                Some(_) => self.check_tags(user_id, &[], &tags),
                None => self.check_tags_defined(&tags),
            }
            .map_err(StateError::Invalid)?;
        }
        if user_id.is_none() && tags.is_empty() {
            return Err(StateError::Invalid(
                "a pre-auth key needs a user (--user) or tags (--tags)".into(),
            ));
        }
        let _w = self.inner.write.lock().await;
        Ok(self
            .inner
            .store
            .create_preauth_key(user_id, reusable, ephemeral, expiration, &tags, self.now())
            .await?)
    }

    pub async fn list_preauth_keys(&self, user: Option<&UserRef>) -> Result<Vec<PreAuthKey>> {
        let user_id = match user {
            Some(u) => Some(self.find_user(u)?.id),
            None => None,
        };
        Ok(self.inner.store.list_preauth_keys(user_id).await?)
    }

    /// Expire a key given its id or its public prefix.
    pub async fn expire_preauth_key(&self, id_or_prefix: &str) -> Result<PreAuthKey> {
        let _w = self.inner.write.lock().await;
        let keys = self.inner.store.list_preauth_keys(None).await?;
        // An id, a prefix, or a whole key (`hskey-auth-<prefix>-<secret>`, or
        // a legacy key, which starts with its prefix); only the prefix is
        // compared, and an error never repeats a secret.
        let prefix = match id_or_prefix.strip_prefix("hskey-auth-") {
            Some(rest) => rest.get(..12).unwrap_or(rest),
            None => id_or_prefix,
        };
        let k = keys
            .into_iter()
            .find(|k| {
                k.id.to_string() == id_or_prefix
                    || k.prefix == prefix
                    || (id_or_prefix.len() == 48
                        && id_or_prefix.bytes().all(|b| b.is_ascii_hexdigit())
                        && id_or_prefix.starts_with(&k.prefix))
            })
            .ok_or_else(|| {
                StateError::KeyNotFound(if id_or_prefix.starts_with("hskey-auth-") {
                    format!("hskey-auth-{prefix}-***")
                } else if id_or_prefix.chars().count() > 24 {
                    format!("{}-***", id_or_prefix.chars().take(12).collect::<String>())
                } else {
                    id_or_prefix.to_string()
                })
            })?;
        self.inner
            .store
            .expire_preauth_key(k.id, self.now())
            .await?;
        Ok(PreAuthKey {
            expiration: Some(self.now()),
            ..k
        })
    }
}
