//! Resolver: the single writer of links and owner of the slug → link cache.
//! Every link change goes through its mailbox, writes sled, then updates the
//! cache before it answers, so the next scan already sees the change.
//!
//! The cache is bounded (`resolver.cache_entries`) and holds the links
//! scanned lately; every other link is one sled read away. The redirect reads
//! it directly (no mailbox trip); on a miss it reads sled on its own thread
//! and fills the cache (`LinkCache::get`).
//!
//! # Filling without going stale
//!
//! A redirect that missed may read a link from sled just before the Resolver
//! writes a new version of it, and could then put the old one in the cache
//! after the Resolver updated it: the edit would be lost until the entry is
//! evicted. A write counter and a small mutex (`writes`) rule that out:
//!
//! - the Resolver writes sled first, then, under the mutex, bumps the counter
//!   and updates or removes the cache entries the write touched;
//! - a filler reads the counter (under the mutex) before it reads sled, and
//!   fills the cache, under the mutex again, only if the counter has not
//!   moved since. If it has, the value it read may be stale: it answers with
//!   it (the scan raced the write) but leaves the cache alone, and the next
//!   miss reads again.
//!
//! A fill therefore either happens before the Resolver's update (which then
//! overwrites or removes it) or carries a value read after the write. Hits
//! never take the mutex; misses take it twice, briefly; writes are rare.
//!
//! Unknown slugs are remembered too, so a flood of them does not read sled
//! each time, but in a cache of their own (a quarter of the capacity): a
//! flood of slugs that hold no link can never evict a link.

use std::sync::{Arc, Mutex, PoisonError};

use actix::prelude::*;
use quick_cache::sync::Cache;

use super::worker::{Drain, DrainReport, Stage, WorkerHandle, WorkerStatus};
use crate::config::ResolverSettings;
use crate::domain::link::MAX_SLUG_LEN;
use crate::domain::{Link, LinkPatch, NewLink, Slug, Timestamp};
use crate::ids::{LinkId, WorkspaceId};
use crate::metrics::Metrics;
use crate::store::{LinkWrite, Store, StoreError, StoreResult};

/// Attempts at a free generated slug before giving up.
const SLUG_ATTEMPTS: usize = 16;

/// slug → link for the links scanned lately, in front of the store; see the
/// module documentation for how fills and writes are ordered.
pub struct LinkCache {
    store: Store,
    /// Slugs that hold a link, at most about `cache_entries` of them.
    links: Cache<Box<str>, Arc<Link>>,
    /// Slugs that hold none (never did, or the link moved or went).
    unknown: Cache<Box<str>, ()>,
    /// Link writes so far (see the module documentation).
    writes: Mutex<u64>,
    metrics: Arc<Metrics>,
}

impl LinkCache {
    /// An empty cache of up to `entries` links (and a quarter as many
    /// unknown slugs) in front of `store`.
    pub fn new(store: Store, entries: usize, metrics: Arc<Metrics>) -> LinkCache {
        let entries = entries.max(1);
        LinkCache {
            store,
            links: Cache::new(entries),
            unknown: Cache::new(entries.div_ceil(4)),
            writes: Mutex::new(0),
            metrics,
        }
    }

    /// The link that holds `slug` now: from the cache, or read from the
    /// store (and then cached).
    pub fn get(&self, slug: &str) -> StoreResult<Option<Arc<Link>>> {
        // No link can hold it: not a lookup, and nothing worth remembering.
        if slug.is_empty() || slug.len() > MAX_SLUG_LEN {
            return Ok(None);
        }
        if let Some(link) = self.links.get(slug) {
            self.metrics.link_cache_hits.inc();
            return Ok(Some(link));
        }
        if self.unknown.get(slug).is_some() {
            self.metrics.link_cache_hits.inc();
            return Ok(None);
        }
        self.metrics.link_cache_misses.inc();
        let seen = self.write_count();
        let found = self.store.link_by_slug(slug)?.map(Arc::new);
        self.fill(slug, seen, found.clone());
        Ok(found)
    }

    /// Links held now (unknown slugs are not counted).
    pub fn len(&self) -> usize {
        self.links.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock_writes(&self) -> std::sync::MutexGuard<'_, u64> {
        // The counter is a plain integer: a panic elsewhere under the lock
        // cannot leave it half-written.
        self.writes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The write counter, read by a filler before it reads the store.
    fn write_count(&self) -> u64 {
        *self.lock_writes()
    }

    /// Caches what the store answered for `slug`, unless a link write came
    /// after `seen` (then `found` may be stale). Answers whether it did.
    fn fill(&self, slug: &str, seen: u64, found: Option<Arc<Link>>) -> bool {
        let writes = self.lock_writes();
        if *writes != seen {
            return false;
        }
        match found {
            Some(link) => self.links.insert(slug.into(), link),
            None => self.unknown.insert(slug.into(), ()),
        }
        drop(writes);
        true
    }

    /// The Resolver wrote these slugs to the store: each now holds the link
    /// given, or none. Called after the store write, before answering.
    fn wrote(&self, changes: &[(&Slug, Option<&Link>)]) {
        let mut writes = self.lock_writes();
        *writes += 1;
        for (slug, now) in changes {
            let slug = slug.as_str();
            self.unknown.remove(slug);
            match now {
                // Kept only where it was cached already (and as hot as it
                // was): a new or moved link is cached when it is scanned.
                Some(link) => {
                    let _ = self
                        .links
                        .replace(slug.into(), Arc::new(Link::clone(link)), true);
                }
                None => {
                    self.links.remove(slug);
                }
            }
        }
        drop(writes);
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
    /// Starts the Resolver on the current arbiter with an empty cache of up
    /// to `cache_entries` links (nothing is read at start, so start-up does
    /// not grow with the number of links); answers its address, the cache
    /// the redirect reads, and its worker handle.
    pub fn start(
        store: Store,
        settings: &ResolverSettings,
        metrics: Arc<Metrics>,
    ) -> (Addr<Resolver>, Arc<LinkCache>, WorkerHandle) {
        let cache = Arc::new(LinkCache::new(
            store.clone(),
            settings.cache_entries,
            metrics.clone(),
        ));
        let status = WorkerStatus::new();
        let addr = Resolver {
            store,
            cache: cache.clone(),
            mailbox_capacity: settings.mailbox_capacity,
            metrics,
            status: status.clone(),
        }
        .start();
        let worker = WorkerHandle::new("resolver", Stage::Intake, &addr, status);
        (addr, cache, worker)
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
                    self.cache.wrote(&[(&link.slug, Some(&link))]);
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
        if old.slug == new.slug {
            self.cache.wrote(&[(&new.slug, Some(&new))]);
        } else {
            self.cache
                .wrote(&[(&old.slug, None), (&new.slug, Some(&new))]);
        }
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
        self.cache.wrote(&[(&link.slug, None)]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Destination;

    fn cache_on(store: &Store, entries: usize) -> LinkCache {
        LinkCache::new(store.clone(), entries, Arc::new(Metrics::default()))
    }

    fn stored_link(store: &Store, slug: &str, destination: &str) -> Link {
        let link = Link::sample(WorkspaceId::generate(), slug, destination);
        assert_eq!(store.insert_link(&link).unwrap(), LinkWrite::Written);
        link
    }

    fn destination(cache: &LinkCache, slug: &str) -> Option<String> {
        let link = cache.get(slug).unwrap()?;
        Some(link.destination.as_str().to_owned())
    }

    /// A redirect reads a link, the Resolver writes a new version and updates
    /// the cache, then the redirect fills: the fill must not happen.
    #[test]
    fn a_fill_read_before_a_link_write_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 4).unwrap();
        let cache = cache_on(&store, 16);
        let old = stored_link(&store, "race", "https://old.example/");

        // The redirect's miss, up to its store read.
        let seen = cache.write_count();
        let stale = store.link_by_slug("race").unwrap().map(Arc::new);
        // The Resolver's update, whole.
        let mut new = old.clone();
        new.destination = Destination::parse("https://new.example/").unwrap();
        let w = store.replace_link(&old, &new).unwrap();
        assert_eq!(w, LinkWrite::Written);
        cache.wrote(&[(&new.slug, Some(&new))]);
        // The redirect's fill comes last: refused.
        assert!(!cache.fill("race", seen, stale));
        assert_eq!(cache.len(), 0);
        assert_eq!(
            destination(&cache, "race").as_deref(),
            Some("https://new.example/")
        );
        assert_eq!(cache.len(), 1, "the next miss filled the new link");

        // The same for a slug read as unknown just before it was created.
        let seen = cache.write_count();
        let missing = store.link_by_slug("later").unwrap().map(Arc::new);
        assert!(missing.is_none());
        let later = stored_link(&store, "later", "https://later.example/");
        cache.wrote(&[(&later.slug, Some(&later))]);
        assert!(!cache.fill("later", seen, missing));
        assert_eq!(
            destination(&cache, "later").as_deref(),
            Some("https://later.example/")
        );

        // With no write in between, a fill goes in.
        let seen = cache.write_count();
        assert!(cache.fill("nothing-here", seen, None));
        assert!(cache.unknown.get("nothing-here").is_some());
    }

    #[test]
    fn writes_reach_cached_links_and_remembered_unknown_slugs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 4).unwrap();
        let cache = cache_on(&store, 16);
        assert_eq!(destination(&cache, "soon"), None, "remembered as unknown");
        let link = stored_link(&store, "soon", "https://a.example/");
        cache.wrote(&[(&link.slug, Some(&link))]);
        assert_eq!(
            destination(&cache, "soon").as_deref(),
            Some("https://a.example/")
        );
        // An edit of a cached link replaces it in place: no store read.
        let mut edited = link.clone();
        edited.destination = Destination::parse("https://b.example/").unwrap();
        store.replace_link(&link, &edited).unwrap();
        cache.wrote(&[(&edited.slug, Some(&edited))]);
        let misses = cache.metrics.link_cache_misses.get();
        assert_eq!(
            destination(&cache, "soon").as_deref(),
            Some("https://b.example/")
        );
        assert_eq!(cache.metrics.link_cache_misses.get(), misses);
        store.delete_link(&edited).unwrap();
        cache.wrote(&[(&edited.slug, None)]);
        assert_eq!(destination(&cache, "soon"), None);
        assert_eq!(cache.len(), 0);
        // Nothing that cannot be a slug is looked up or remembered.
        assert_eq!(destination(&cache, &"x".repeat(MAX_SLUG_LEN + 1)), None);
        assert_eq!(destination(&cache, ""), None);
        assert!(cache.unknown.get("").is_none());
    }

    #[test]
    fn a_flood_of_unknown_slugs_never_evicts_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 4).unwrap();
        let cache = cache_on(&store, 8);
        let slugs: Vec<String> = (0..8).map(|n| format!("hot-{n}")).collect();
        for slug in &slugs {
            stored_link(&store, slug, "https://example.com/");
            cache.get(slug).unwrap();
            cache.get(slug).unwrap();
        }
        for n in 0..10_000 {
            assert!(cache.get(&format!("nope-{n}")).unwrap().is_none());
        }
        assert!(cache.unknown.len() <= 8, "{}", cache.unknown.len());
        let misses = cache.metrics.link_cache_misses.get();
        for slug in &slugs {
            assert!(cache.get(slug).unwrap().is_some());
        }
        assert_eq!(
            cache.metrics.link_cache_misses.get(),
            misses,
            "every link was still cached"
        );
        // A repeated unknown slug is answered from memory.
        cache.get("nope-again").unwrap();
        cache.get("nope-again").unwrap();
        assert_eq!(cache.metrics.link_cache_misses.get(), misses + 1);
    }
}
