//! Resolver: the single writer of links and owner of the slug → link cache.
//! Every link change goes through its mailbox, writes sled, then updates the
//! cache before it answers, so the next scan already sees the change. The
//! redirect path reads the cache directly (a read lock, no mailbox trip).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use actix::prelude::*;

use super::worker::{Drain, DrainReport, Stage, WorkerHandle, WorkerStatus};
use crate::domain::{Link, LinkPatch, NewLink, Slug, Timestamp};
use crate::ids::{LinkId, WorkspaceId};
use crate::metrics::Metrics;
use crate::store::{LinkWrite, Store, StoreError};

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
        LinkWriteError::Store(e)
    }
}

/// A refused write as the Resolver's error.
fn written(w: LinkWrite) -> Result<(), LinkWriteError> {
    match w {
        LinkWrite::Written => Ok(()),
        LinkWrite::SlugTaken => Err(LinkWriteError::SlugTaken),
    }
}

pub struct Resolver {
    store: Store,
    cache: Arc<LinkCache>,
    mailbox_capacity: usize,
    metrics: Arc<Metrics>,
    status: Arc<WorkerStatus>,
}

impl Resolver {
    /// Warms the cache from the store and starts the Resolver on the current
    /// arbiter; answers its address, the cache the redirect reads, and its
    /// worker handle.
    pub fn start(
        store: Store,
        mailbox_capacity: usize,
        metrics: Arc<Metrics>,
    ) -> Result<(Addr<Resolver>, Arc<LinkCache>, WorkerHandle), StoreError> {
        let cache = Arc::new(LinkCache::default());
        for link in store.all_links()? {
            cache.put(link);
        }
        let status = WorkerStatus::new();
        let addr = Resolver {
            store,
            cache: cache.clone(),
            mailbox_capacity,
            metrics,
            status: status.clone(),
        }
        .start();
        let worker = WorkerHandle::new("resolver", Stage::Intake, &addr, status);
        Ok((addr, cache, worker))
    }

    fn owned_link(&self, ws: &WorkspaceId, id: &LinkId) -> Result<Link, LinkWriteError> {
        self.store
            .owned_link(ws, id)?
            .ok_or(LinkWriteError::NotFound)
    }
}

impl Actor for Resolver {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.mailbox_capacity);
        self.status.set_ready(true);
    }
}

/// Link writes answer as they come; there is nothing queued to finish.
impl Handler<Drain> for Resolver {
    type Result = DrainReport;

    fn handle(&mut self, _: Drain, _: &mut Self::Context) -> DrainReport {
        DrainReport::default()
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
            match self.store.insert_link(&link)? {
                LinkWrite::Written => {
                    self.cache.put(link.clone());
                    return Ok(link);
                }
                LinkWrite::SlugTaken if chosen.is_none() => continue,
                LinkWrite::SlugTaken => break,
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
        written(self.store.replace_link(&old, &new)?)?;
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
