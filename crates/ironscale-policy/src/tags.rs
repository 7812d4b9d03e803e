//! Tag ownership (`tagOwners`): who may apply which tags to a node.

use ironscale_types::UserId;

use crate::ast::{Alias, AutoGroup};
use crate::compile::CompiledPolicy;
use crate::error::{ErrorKind, PolicyError};
use crate::resolve::Ctx;

fn owns(
    c: &CompiledPolicy,
    ctx: &Ctx<'_>,
    user: Option<u32>,
    owner_tags: &[String],
    tag: &str,
    depth: usize,
) -> bool {
    if owner_tags.iter().any(|t| t == tag) && depth > 0 {
        return true;
    }
    if depth > 16 {
        return false;
    }
    let Some(def) = c.pol.tag_owners.iter().find(|t| t.tag.value == tag) else {
        return false;
    };
    def.owners.iter().any(|o| match &o.value {
        Alias::Tag(t) => {
            owner_tags.iter().any(|x| x == t) || owns(c, ctx, user, owner_tags, t, depth + 1)
        }
        Alias::AutoGroup(AutoGroup::Member) => user.is_some(),
        Alias::AutoGroup(AutoGroup::Tagged) => !owner_tags.is_empty(),
        other => user.is_some_and(|u| ctx.users_of(other).contains(&u)),
    })
}

pub(crate) fn may_own_tags(
    c: &CompiledPolicy,
    user: Option<UserId>,
    owner_tags: &[String],
    tags: &[String],
) -> Result<(), PolicyError> {
    let uidx = user.and_then(|id| {
        c.topo
            .users
            .iter()
            .position(|u| u.id == id)
            .map(|i| i as u32)
    });
    let ctx = c.ctx();
    let who = match (uidx, owner_tags.is_empty()) {
        (Some(u), _) => format!("user {:?}", c.topo.users[u as usize].login()),
        (None, false) => format!("tags {}", owner_tags.join(",")),
        (None, true) => "an unknown user".to_string(),
    };
    for t in tags {
        if let Err(m) = crate::parse::check_tag_name(t) {
            return Err(PolicyError::new(
                &c.pol.file,
                None,
                ErrorKind::Invalid,
                format!("{t:?}: {m}"),
            ));
        }
        let Some(def) = c.pol.tag_owners.iter().find(|d| d.tag.value == *t) else {
            return Err(PolicyError::new(
                &c.pol.file,
                None,
                ErrorKind::Invalid,
                format!("tag {t:?} is not defined in tagOwners; add it there before using it"),
            ));
        };
        if !owns(c, &ctx, uidx, owner_tags, t, 0) {
            let owners: Vec<String> = def.owners.iter().map(|o| o.value.to_string()).collect();
            return Err(PolicyError::new(
                &c.pol.file,
                Some(def.tag.pos),
                ErrorKind::Invalid,
                format!(
                    "{who} may not apply tag {t:?} (its owners are: {})",
                    if owners.is_empty() {
                        "nobody".into()
                    } else {
                        owners.join(", ")
                    }
                ),
            ));
        }
    }
    Ok(())
}
