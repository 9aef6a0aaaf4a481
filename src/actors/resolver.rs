//! Resolver: the single writer of links and owner of the slug → link cache.
//! Every link change goes through its mailbox, writes sled, then updates the
//! cache before it answers, so the next scan already sees the change. The
//! redirect path reads the cache directly (a read lock, no mailbox trip).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use actix::prelude::*;

use crate::domain::{Link, LinkPatch, NewLink, Slug, Timestamp};
use crate::ids::{LinkId, WorkspaceId};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// Attempts at a free generated slug before giving up.
const SLUG_ATTEMPTS: usize = 16;

/// slug → link, complete: a miss means the slug is unknown.
#[derive(Default)]
pub struct LinkCache {
    by_slug: RwLock<HashMap<Box<str>, Arc<Link>>>,
}

impl LinkCache {
    pub fn get(&self, slug: &str) -> Option<Arc<Link>> {
        // A poisoned lock only means a writer panicked mid-insert of a whole
        // entry; the map itself is still consistent.
        let map = self.by_slug.read().unwrap_or_else(|p| p.into_inner());
        map.get(slug).cloned()
    }

    pub fn len(&self) -> usize {
        self.by_slug.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn put(&self, link: Link) {
        let mut map = self.by_slug.write().unwrap_or_else(|p| p.into_inner());
        map.insert(link.slug.as_str().into(), Arc::new(link));
    }

    fn remove(&self, slug: &Slug) {
        let mut map = self.by_slug.write().unwrap_or_else(|p| p.into_inner());
        map.remove(slug.as_str());
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LinkWriteError {
    #[error("link not found")]
    NotFound,
    #[error("slug is already taken")]
    SlugTaken,
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for LinkWriteError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::SlugTaken => LinkWriteError::SlugTaken,
            other => LinkWriteError::Store(other),
        }
    }
}

pub struct Resolver {
    store: Store,
    cache: Arc<LinkCache>,
    mailbox_capacity: usize,
    metrics: Arc<Metrics>,
}

impl Resolver {
    /// Builds the Resolver with its cache warmed from the store.
    pub fn new(
        store: Store,
        mailbox_capacity: usize,
        metrics: Arc<Metrics>,
    ) -> Result<(Resolver, Arc<LinkCache>), StoreError> {
        let cache = Arc::new(LinkCache::default());
        for link in store.all_links()? {
            cache.put(link);
        }
        Ok((
            Resolver {
                store,
                cache: cache.clone(),
                mailbox_capacity,
                metrics,
            },
            cache,
        ))
    }

    fn owned_link(&self, ws: &WorkspaceId, id: &LinkId) -> Result<Link, LinkWriteError> {
        match self.store.link(id)? {
            Some(link) if link.workspace_id == *ws => Ok(link),
            _ => Err(LinkWriteError::NotFound),
        }
    }
}

impl Actor for Resolver {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.mailbox_capacity);
    }
}

#[derive(Message)]
#[rtype(result = "Result<Link, LinkWriteError>")]
pub struct CreateLink {
    pub workspace_id: WorkspaceId,
    pub link: NewLink,
}

impl Handler<CreateLink> for Resolver {
    type Result = Result<Link, LinkWriteError>;

    fn handle(&mut self, msg: CreateLink, _: &mut Self::Context) -> Self::Result {
        self.metrics.resolver_messages.inc();
        let now = Timestamp::now();
        let chosen = msg.link.slug.clone();
        for _ in 0..SLUG_ATTEMPTS {
            let slug = chosen.clone().unwrap_or_else(Slug::generate);
            let link = msg.link.clone().into_link(msg.workspace_id, slug, now);
            match self.store.insert_link(&link) {
                Ok(()) => {
                    self.cache.put(link.clone());
                    return Ok(link);
                }
                Err(StoreError::SlugTaken) if chosen.is_none() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(LinkWriteError::SlugTaken)
    }
}

#[derive(Message)]
#[rtype(result = "Result<Link, LinkWriteError>")]
pub struct UpdateLink {
    pub workspace_id: WorkspaceId,
    pub id: LinkId,
    pub patch: LinkPatch,
}

impl Handler<UpdateLink> for Resolver {
    type Result = Result<Link, LinkWriteError>;

    fn handle(&mut self, msg: UpdateLink, _: &mut Self::Context) -> Self::Result {
        self.metrics.resolver_messages.inc();
        let old = self.owned_link(&msg.workspace_id, &msg.id)?;
        let mut new = old.clone();
        msg.patch.apply(&mut new, Timestamp::now());
        self.store.replace_link(&old, &new)?;
        if old.slug != new.slug {
            self.cache.remove(&old.slug);
        }
        self.cache.put(new.clone());
        Ok(new)
    }
}

#[derive(Message)]
#[rtype(result = "Result<(), LinkWriteError>")]
pub struct DeleteLink {
    pub workspace_id: WorkspaceId,
    pub id: LinkId,
}

impl Handler<DeleteLink> for Resolver {
    type Result = Result<(), LinkWriteError>;

    fn handle(&mut self, msg: DeleteLink, _: &mut Self::Context) -> Self::Result {
        self.metrics.resolver_messages.inc();
        let link = self.owned_link(&msg.workspace_id, &msg.id)?;
        self.store.delete_link(&link)?;
        self.cache.remove(&link.slug);
        Ok(())
    }
}
