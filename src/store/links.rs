//! Links and their slugs, in buckets (`bucket.rs`): sled 0.34's memory
//! grows with the number of its keys, so links do not have one each.
//!
//! - `link_buckets`: key = workspace ID (16) ++ the first link ID of the
//!   bucket (16); value = a bucket of up to `LINKS_PER_BUCKET` links of that
//!   workspace (link ID → record), every one at or after the key and before
//!   the next bucket's key. A workspace's links are one key range, in ID
//!   order (IDs are UUIDv7: newest last), and a link is found by seeking to
//!   the last bucket key at or before `workspace ID ++ link ID`.
//! - `slug_hash_buckets`: key = 2 bytes of a fixed hash of the slug
//!   (`slug_bucket_key`); value = a bucket of slug → workspace ID ++ link
//!   ID, followed by a copy of the link's record when it takes at most
//!   `SLUG_COPY_MAX` bytes. At most 65,536 keys whatever the number of
//!   links. With the copy, a redirect to a link not in the Resolver's
//!   cache reads one sled leaf instead of two (see `SLUG_COPY_MAX`);
//!   without it (a larger record, or a store written before copies were
//!   kept), the link's bucket is read as well.
//!
//! Writes rewrite the buckets they touch (a few KB), under one lock and in
//! one transaction over both trees; readers see one write or the other.
//! The same transaction keeps each workspace's number of links in
//! `counters` (`CounterKind::WorkspaceLinks`), so counting them reads one
//! key instead of every bucket (`count_workspace_links_once` fills them in
//! a store written before they were kept).

use std::collections::BTreeMap;
use std::sync::{MutexGuard, PoisonError};

use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use super::bucket::{self, Bucket, Entries};
use super::codec::{self, Record};
use super::scan::{self, Page};
use super::slug_pages::Found;
use super::{Store, StoreError, StoreResult, keys, layout};
use crate::domain::{Link, LinkStatus};
use crate::ids::{LinkId, WorkspaceId};

/// Links examined at most to fill one page of a filtered link list.
const LINK_SCAN_BUDGET: usize = 10_000;

/// Links a bucket holds before it splits.
///
/// A redirect to a link not in the Resolver's cache reads the sled leaf
/// holding its bucket (up to 17 buckets), whole, from sled's log. Smaller
/// buckets make that read cheaper but add sled pages, which cost memory
/// even unread. Measured on the analytics bench (`rss`), one connection
/// alternating a hot link with random links not read since the start:
/// with four links (1 KiB) a bucket, the cold redirect took 2.12 and 2.14×
/// the hot one at 100,000 links against 2.45 and 2.44× with 16, but the
/// server took 156 to 169 MB after the mixed load at 1,000,000 links
/// against 146; eight links (2 KiB) were no better than 16 on either.
const LINKS_PER_BUCKET: usize = 16;

/// Bytes of records past which a bucket of two or more links splits (one
/// link with a long destination, tags and form fields can be several KB).
/// A sled leaf holds up to 17 buckets, and sled writes a page larger than a
/// quarter of its log segment to a blob file of its own (see
/// `LOG_SEGMENT_SIZE`): 128 KiB in a store made with sled's default segment.
const BUCKET_BYTES: usize = 4 * 1024;

/// Bytes of a link's record up to which its slug's entry carries a copy of
/// it. A redirect to a link not in the Resolver's cache then reads the
/// slug's leaf alone: sled reads a leaf not in its cache from its log, one
/// `pread` per fragment, and the link's leaf (up to 17 buckets of 16 links)
/// was the larger of the two reads. The bound keeps a slug bucket small
/// (its key is fixed, so it never splits): a link with a long destination
/// or a form step is found through its bucket as before. Every write of a
/// link rewrites both, in one transaction (`apply_link_writes`).
const SLUG_COPY_MAX: usize = 512;

impl Record for Link {
    const VERSION: u8 = 1;
}

/// What a link write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkWrite {
    Written,
    SlugTaken,
}

/// Filters of `GET /v1/links`.
#[derive(Debug, Clone, Default)]
pub struct LinkQuery {
    pub tag: Option<String>,
    pub status: Option<LinkStatus>,
}

impl LinkQuery {
    fn matches(&self, link: &Link) -> bool {
        self.tag.as_ref().is_none_or(|t| link.tags.contains(t))
            && self.status.is_none_or(|s| link.status == s)
    }
}

/// The tree of link buckets.
pub(super) const LINK_BUCKETS_TREE: &str = "link_buckets";
/// The tree of slug buckets (keyed by `slug_bucket_key`).
pub(super) const SLUG_BUCKETS_TREE: &str = "slug_hash_buckets";
/// The slug buckets of the layout before that, keyed by the top 16 bits of
/// FNV-1a alone (`fnv_bucket_key`).
const FNV_SLUG_BUCKETS: &str = "slug_buckets";
/// The trees of the layout before buckets: a link under `workspace ID ++
/// link ID`, a slug mapping to that key (two sled keys per link).
const KEYED_LINKS: &str = "workspace_links";
const KEYED_SLUGS: &str = "slugs";
/// The trees of the layout before that: links keyed by link ID alone, slugs
/// (in `slugs`) mapping to the link ID, and beside them an index of each
/// workspace's links (three keys per link).
const FORMER_LINKS: &str = "links";
const FORMER_BY_WORKSPACE: &str = "links_by_workspace";

/// Bytes of slug entries a move holds in memory before it writes them.
const SLUG_MOVE_BYTES: usize = 16 * 1024 * 1024;

/// The 64-bit FNV-1a hash of `slug`.
fn fnv1a(slug: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in slug.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The slug bucket of `slug`: the top 16 bits of its FNV-1a hash mixed by
/// MurmurHash3's 64-bit finalizer (fixed, so the same in every version and
/// on every machine).
///
/// FNV-1a's last steps never reach its top bits: the last byte moves bits
/// 0 to 47 only, the one before it barely more. Slugs that differ at the
/// end (`table-01`, `table-02`, ...) shared a bucket: 100,000 slugs
/// `r0000000` to `r0099999` filled 9,824 buckets of about ten entries
/// instead of some 51,000 of one or two, and a redirect to one of them not
/// in the Resolver's cache read and searched ten of them. The finalizer
/// lets every byte move every bit.
fn slug_bucket_key(slug: &str) -> [u8; 2] {
    let mut h = fnv1a(slug);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    ((h >> 48) as u16).to_be_bytes()
}

/// The key of `slug`'s bucket in `FNV_SLUG_BUCKETS`.
#[cfg(test)]
fn fnv_bucket_key(slug: &str) -> [u8; 2] {
    ((fnv1a(slug) >> 48) as u16).to_be_bytes()
}

/// A bucket key to write (`Some`) or remove (`None`).
type Put = (Vec<u8>, Option<Vec<u8>>);

/// Sets `bucket` under `key`, or removes the key when it is empty.
fn put(key: &[u8], bucket: &Bucket) -> Put {
    let value = (!bucket.is_empty()).then(|| bucket.encode());
    (key.to_vec(), value)
}

/// Moves the slug entries of a store whose buckets were keyed by FNV-1a
/// alone (`FNV_SLUG_BUCKETS`) into buckets keyed by `slug_bucket_key`, then
/// drops the former tree (`layout`); answers how many moved. The entries
/// move as they are, copies of links included, merged into what the new
/// tree holds: a move cut short wrote entries of the former tree, which
/// the next open writes again with the same values, and entries the new
/// tree holds alone (a store opened by a version of each kind in turn)
/// stay. At most `SLUG_MOVE_BYTES` of entries wait in memory; each write
/// merges them into the buckets written before.
pub(super) fn move_slugs_of_former_hash(db: &sled::Db, slugs: &sled::Tree) -> StoreResult<usize> {
    move_slugs_holding(db, slugs, SLUG_MOVE_BYTES)
}

fn move_slugs_holding(db: &sled::Db, slugs: &sled::Tree, bound: usize) -> StoreResult<usize> {
    if !layout::has_tree(db, FNV_SLUG_BUCKETS) {
        return Ok(0);
    }
    let former = db.open_tree(FNV_SLUG_BUCKETS)?;
    let mut waiting: BTreeMap<[u8; 2], Vec<bucket::Entry>> = BTreeMap::new();
    let (mut held, mut moved) = (0, 0);
    for item in former.iter() {
        let (_, raw) = item?;
        for entry in bucket::Entries::new(&raw)? {
            let (slug, value) = entry?;
            if add_slug_entry(&mut waiting, slug, value) {
                held += slug.len() + value.len();
                moved += 1;
            }
        }
        if held >= bound {
            merge_slug_entries(slugs, std::mem::take(&mut waiting))?;
            held = 0;
        }
    }
    merge_slug_entries(slugs, waiting)?;
    layout::drop_trees(db, &[FNV_SLUG_BUCKETS])?;
    Ok(moved)
}

/// Adds the entry `slug` → `value` to `waiting`, under its bucket's key;
/// answers whether it did. A slug that is not UTF-8 cannot be looked up
/// (no slug is ever written so): it is left out.
fn add_slug_entry(
    waiting: &mut BTreeMap<[u8; 2], Vec<bucket::Entry>>,
    slug: &[u8],
    value: &[u8],
) -> bool {
    let Ok(text) = std::str::from_utf8(slug) else {
        return false;
    };
    waiting
        .entry(slug_bucket_key(text))
        .or_default()
        .push((slug.to_vec(), value.to_vec()));
    true
}

/// Adds `waiting` to the slug buckets `slugs` holds under their keys.
fn merge_slug_entries(
    slugs: &sled::Tree,
    waiting: BTreeMap<[u8; 2], Vec<bucket::Entry>>,
) -> StoreResult<usize> {
    let merged = waiting.into_iter().map(|(key, entries)| {
        let mut bucket = match slugs.get(key)? {
            Some(raw) => Bucket::decode(&raw)?,
            None => Bucket::default(),
        };
        for (slug, value) in entries {
            bucket.insert(&slug, value);
        }
        Ok((key.to_vec().into(), Some(bucket.encode().into())))
    });
    layout::write_in_batches(slugs, merged)
}

/// Moves the links a store of an earlier layout holds into buckets and
/// drops the former trees (`layout`); answers how many links moved. The
/// new trees are emptied first: while a former tree is still there, what
/// they hold is a move cut short, done again from the start.
pub(super) fn move_links_of_former_layouts(
    db: &sled::Db,
    links: &sled::Tree,
    slugs: &sled::Tree,
) -> StoreResult<usize> {
    if layout::has_tree(db, FORMER_LINKS) {
        move_links_of_former_layout(db)?;
    }
    if !layout::has_tree(db, KEYED_LINKS) {
        return Ok(0);
    }
    let keyed = db.open_tree(KEYED_LINKS)?;
    let keyed_slugs = db.open_tree(KEYED_SLUGS)?;
    links.clear()?;
    slugs.clear()?;
    // Links in key order: each workspace's in ID order, in full buckets,
    // written as they fill.
    let mut moved = 0;
    let mut entries = keyed.iter().peekable();
    let buckets = std::iter::from_fn(|| {
        let (key, value) = match entries.next()? {
            Ok(entry) => entry,
            Err(e) => return Some(Err(e.into())),
        };
        let mut bucket = Bucket::from_sorted(vec![(key[16..].to_vec(), value.to_vec())]);
        while bucket.len() < LINKS_PER_BUCKET && bucket.size() < BUCKET_BYTES {
            match entries.peek() {
                Some(Ok((next, _))) if next[..16] == key[..16] => {}
                _ => break,
            }
            if let Some(Ok((next, value))) = entries.next() {
                bucket.insert(&next[16..], value.to_vec());
            }
        }
        moved += bucket.len();
        Some(Ok((key, Some(bucket.encode().into()))))
    });
    layout::write_in_batches(links, buckets)?;
    let mut by_bucket: BTreeMap<[u8; 2], Vec<bucket::Entry>> = BTreeMap::new();
    for entry in keyed_slugs.iter() {
        let (slug, key) = entry?;
        add_slug_entry(&mut by_bucket, &slug, &key);
    }
    // The tree was emptied above: merging writes each bucket whole.
    merge_slug_entries(slugs, by_bucket)?;
    layout::drop_trees(db, &[KEYED_LINKS, KEYED_SLUGS])?;
    Ok(moved)
}

/// Moves the links of the oldest layout into `workspace_links`, points their
/// slugs at the new keys and drops the oldest trees; the move into buckets
/// follows. A slug already pointing at a new key (a move cut short) stays as
/// it is; one whose link is gone is removed.
fn move_links_of_former_layout(db: &sled::Db) -> StoreResult<()> {
    let former = db.open_tree(FORMER_LINKS)?;
    let links = db.open_tree(KEYED_LINKS)?;
    let slugs = db.open_tree(KEYED_SLUGS)?;
    let key_of = |raw: &[u8]| -> StoreResult<sled::IVec> {
        let link: Link = codec::decode(raw)?;
        Ok(keys::pair(&link.workspace_id, &link.id).to_vec().into())
    };
    layout::write_in_batches(
        &links,
        former.iter().map(|entry| {
            let (_, value) = entry?;
            Ok((key_of(&value)?, Some(value)))
        }),
    )?;
    let repointed = slugs.iter().filter_map(|entry| {
        let step = || -> StoreResult<Option<(sled::IVec, Option<sled::IVec>)>> {
            let (slug, value) = entry?;
            // A former value is the link ID alone; a new one is 32 bytes.
            if value.len() != 16 {
                return Ok(None);
            }
            let link = former.get(&value)?;
            Ok(Some((slug, link.map(|raw| key_of(&raw)).transpose()?)))
        };
        step().transpose()
    });
    // sled's iterator reads on from the last key it returned, so writing
    // the slugs it has passed does not disturb it.
    layout::write_in_batches(&slugs, repointed)?;
    layout::drop_trees(db, &[FORMER_LINKS, FORMER_BY_WORKSPACE])
}

/// Stores every workspace's number of links, counted from its buckets,
/// unless the store keeps them already (`keys::META_LINK_COUNTS`); answers
/// how many workspaces were counted. Idempotent: a crash before the mark
/// counts again at the next open.
pub(super) fn count_workspace_links_once(
    link_buckets: &sled::Tree,
    counters: &sled::Tree,
    meta: &sled::Tree,
) -> StoreResult<usize> {
    if meta.contains_key(keys::META_LINK_COUNTS)? {
        return Ok(0);
    }
    let mut counts: BTreeMap<[u8; 16], u64> = BTreeMap::new();
    for entry in link_buckets.iter() {
        let (key, raw) = entry?;
        let ws: [u8; 16] = key
            .get(..16)
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| StoreError::Codec("a link bucket key is short".into()))?;
        *counts.entry(ws).or_default() += Entries::new(&raw)?.len() as u64;
    }
    let mut batch = sled::Batch::default();
    for (ws, n) in &counts {
        let ws = WorkspaceId::from_slice(ws)
            .ok_or_else(|| StoreError::Codec("a link bucket key is not a workspace".into()))?;
        let key = keys::owner_counter(keys::CounterKind::WorkspaceLinks, &ws);
        batch.insert(&key[..], &n.to_be_bytes()[..]);
    }
    counters.apply_batch(batch)?;
    meta.insert(keys::META_LINK_COUNTS, &[1u8])?;
    Ok(counts.len())
}

/// A slug's entry: its link's key (workspace ID ++ link ID), then the
/// link's record (`record`, encoded) when it takes at most `SLUG_COPY_MAX`
/// bytes.
fn slug_entry(link: &Link, record: &[u8]) -> Vec<u8> {
    let key = keys::pair(&link.workspace_id, &link.id);
    let mut entry = Vec::with_capacity(key.len() + record.len());
    entry.extend_from_slice(&key);
    if record.len() <= SLUG_COPY_MAX {
        entry.extend_from_slice(record);
    }
    entry
}

/// The slug buckets one write reads and changes, and the slugs it changed
/// (entry, or `None` once freed) for the slug file (`slug_pages.rs`).
#[derive(Default)]
struct SlugBuckets {
    buckets: BTreeMap<[u8; 2], Bucket>,
    changed: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl SlugBuckets {
    fn bucket(&mut self, store: &Store, slug: &str) -> StoreResult<&mut Bucket> {
        let key = slug_bucket_key(slug);
        match self.buckets.entry(key) {
            std::collections::btree_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::btree_map::Entry::Vacant(e) => {
                Ok(e.insert(match store.inner.slug_buckets.get(key)? {
                    Some(raw) => Bucket::decode(&raw)?,
                    None => Bucket::default(),
                }))
            }
        }
    }

    /// Points `link`'s slug at it, unless another link holds the slug;
    /// answers whether it did.
    fn claim(&mut self, store: &Store, link: &Link, record: &[u8]) -> StoreResult<bool> {
        let slug = link.slug.as_str();
        let bucket = self.bucket(store, slug)?;
        if bucket.get(slug.as_bytes()).is_some() {
            return Ok(false);
        }
        let entry = slug_entry(link, record);
        bucket.insert(slug.as_bytes(), entry.clone());
        self.changed.push((slug.as_bytes().to_vec(), Some(entry)));
        Ok(true)
    }

    /// Rewrites the entry of `link`'s slug with its record as it is now, if
    /// the slug points at it (it does when the link is stored).
    fn refresh(&mut self, store: &Store, link: &Link, record: &[u8]) -> StoreResult<()> {
        let slug = link.slug.as_str();
        let entry = slug_entry(link, record);
        let bucket = self.bucket(store, slug)?;
        let holds = bucket
            .get(slug.as_bytes())
            .is_some_and(|now| now.get(..32) == entry.get(..32));
        if holds {
            bucket.insert(slug.as_bytes(), entry.clone());
            self.changed.push((slug.as_bytes().to_vec(), Some(entry)));
        }
        Ok(())
    }

    /// Frees `slug`.
    fn release(&mut self, store: &Store, slug: &str) -> StoreResult<()> {
        self.bucket(store, slug)?.remove(slug.as_bytes());
        self.changed.push((slug.as_bytes().to_vec(), None));
        Ok(())
    }

    fn puts(&self) -> Vec<Put> {
        self.buckets.iter().map(|(k, b)| put(k, b)).collect()
    }
}

impl Store {
    /// The bucket that holds (or would hold) the link under `key` (workspace
    /// ID ++ link ID): its sled key and value.
    fn link_bucket(&self, key: &[u8; 32]) -> StoreResult<Option<(sled::IVec, sled::IVec)>> {
        bucket::holding(&self.inner.link_buckets, key)
    }

    /// The writes that set `link` (new or replacing itself; `record`, its
    /// encoding) in its bucket, splitting the bucket when it grows past its
    /// bounds.
    fn link_puts(&self, link: &Link, record: &[u8]) -> StoreResult<Vec<Put>> {
        let key = keys::pair(&link.workspace_id, &link.id);
        let id = link.id.as_bytes();
        let mut puts = Vec::with_capacity(3);
        let (bucket_key, mut bucket) = match self.link_bucket(&key)? {
            Some((k, raw)) => (k.to_vec(), Bucket::decode(&raw)?),
            None => {
                // Before every bucket of the workspace: into its first one,
                // which the link now starts, if it has any.
                let end = keys::pair_raw(&link.workspace_id, &[0xff; 16]);
                match self
                    .inner
                    .link_buckets
                    .range(key..=end)
                    .next()
                    .transpose()?
                {
                    Some((k, raw)) => {
                        puts.push((k.to_vec(), None));
                        (key.to_vec(), Bucket::decode(&raw)?)
                    }
                    None => (key.to_vec(), Bucket::default()),
                }
            }
        };
        bucket.insert(id, record.to_vec());
        if bucket.len() > LINKS_PER_BUCKET || (bucket.len() > 1 && bucket.size() > BUCKET_BYTES) {
            let upper = bucket.split_after_insert_of(id);
            if let Some(first) = upper.first_key() {
                puts.push(put(&[&key[..16], first].concat(), &upper));
            }
        }
        puts.push(put(&bucket_key, &bucket));
        Ok(puts)
    }

    /// The writes that take the link under `key` out of its bucket.
    fn link_removal(&self, key: &[u8; 32]) -> StoreResult<Vec<Put>> {
        Ok(bucket::without(&self.inner.link_buckets, key)?
            .map(|(stored, rest)| put(&stored, &rest))
            .into_iter()
            .collect())
    }

    /// Writes both trees' changes in one transaction, with `delta` added
    /// to the number of links of the workspace given, then the slugs'
    /// changes to the slug file (marked dirty before the transaction: see
    /// `slug_pages.rs`).
    fn apply_link_writes(
        &self,
        links: &[Put],
        slugs: &SlugBuckets,
        delta: Option<(&WorkspaceId, i64)>,
    ) -> StoreResult<()> {
        let t = &self.inner;
        t.slug_pages.will_write()?;
        let slug_puts = slugs.puts();
        (&t.link_buckets, &t.slug_buckets, &t.counters)
            .transaction(|(lt, st, ct)| {
                for (tree, writes) in [(lt, links), (st, &slug_puts[..])] {
                    for (key, value) in writes {
                        match value {
                            Some(v) => tree.insert(key.as_slice(), v.as_slice())?,
                            None => tree.remove(key.as_slice())?,
                        };
                    }
                }
                if let Some((ws, delta)) = delta {
                    let key = keys::owner_counter(keys::CounterKind::WorkspaceLinks, ws);
                    let now = ct.get(key)?.map_or(0, |v| decode_count(&v));
                    let next = now.saturating_add_signed(delta);
                    ct.insert(&key[..], &next.to_be_bytes()[..])?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Storage(e) => e.into(),
                sled::transaction::TransactionError::Abort(()) => {
                    StoreError::Codec("a link write was aborted".into())
                }
            })?;
        t.slug_pages.apply(&slugs.changed);
        Ok(())
    }

    /// Held by every link write: a write reads the buckets it rewrites.
    fn link_writer(&self) -> MutexGuard<'_, ()> {
        self.inner
            .link_writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores a new link, unless its slug is in use.
    pub fn insert_link(&self, link: &Link) -> StoreResult<LinkWrite> {
        let _one_writer = self.link_writer();
        let mut slugs = SlugBuckets::default();
        let record = codec::encode(link)?;
        if !slugs.claim(self, link, &record)? {
            return Ok(LinkWrite::SlugTaken);
        }
        let added = Some((&link.workspace_id, 1));
        self.apply_link_writes(&self.link_puts(link, &record)?, &slugs, added)?;
        Ok(LinkWrite::Written)
    }

    /// Replaces `old` with `new` (same ID and workspace), moving the slug
    /// when it changed, unless the new slug is in use.
    pub fn replace_link(&self, old: &Link, new: &Link) -> StoreResult<LinkWrite> {
        let _one_writer = self.link_writer();
        let mut slugs = SlugBuckets::default();
        let record = codec::encode(new)?;
        if old.slug != new.slug {
            if !slugs.claim(self, new, &record)? {
                return Ok(LinkWrite::SlugTaken);
            }
            slugs.release(self, old.slug.as_str())?;
        } else {
            slugs.refresh(self, new, &record)?;
        }
        self.apply_link_writes(&self.link_puts(new, &record)?, &slugs, None)?;
        Ok(LinkWrite::Written)
    }

    /// Deletes a link and frees its slug; its events stay.
    pub fn delete_link(&self, link: &Link) -> StoreResult<()> {
        let _one_writer = self.link_writer();
        let mut slugs = SlugBuckets::default();
        slugs.release(self, link.slug.as_str())?;
        let key = keys::pair(&link.workspace_id, &link.id);
        let removal = self.link_removal(&key)?;
        // A link that is not stored (deleted already) leaves the count be.
        let removed = (!removal.is_empty()).then_some((&link.workspace_id, -1));
        self.apply_link_writes(&removal, &slugs, removed)
    }

    fn link_at(&self, key: &[u8; 32]) -> StoreResult<Option<Link>> {
        let Some((_, raw)) = self.link_bucket(key)? else {
            return Ok(None);
        };
        bucket::find(&raw, &key[16..])?
            .map(codec::decode)
            .transpose()
    }

    /// The link `id` if it belongs to workspace `ws`: another workspace's link
    /// is as absent as one that does not exist.
    pub fn owned_link(&self, ws: &WorkspaceId, id: &LinkId) -> StoreResult<Option<Link>> {
        self.link_at(&keys::pair(ws, id))
    }

    /// The link `id` of whichever workspace holds it. For the command line
    /// only: it reads every link.
    pub fn link_in_any_workspace(&self, id: &LinkId) -> StoreResult<Option<Link>> {
        for entry in self.inner.link_buckets.iter().values() {
            if let Some(record) = bucket::find(&entry?, id.as_bytes())? {
                return codec::decode(record).map(Some);
            }
        }
        Ok(None)
    }

    /// The link that holds `slug` now, if any (for the command line, and for
    /// the Resolver's cache when a scanned slug is not in it).
    pub fn link_by_slug(&self, slug: &str) -> StoreResult<Option<Link>> {
        match self
            .inner
            .slug_pages
            .get(slug.as_bytes(), |entry| self.link_of_slug_entry(entry))?
        {
            Found::Entry(link) => link,
            Found::Absent => Ok(None),
            Found::Ask => self.link_by_slug_in_sled(slug),
        }
    }

    /// `link_by_slug`, read from the slug buckets in sled.
    pub(super) fn link_by_slug_in_sled(&self, slug: &str) -> StoreResult<Option<Link>> {
        let Some(raw) = self.inner.slug_buckets.get(slug_bucket_key(slug))? else {
            return Ok(None);
        };
        match bucket::find(&raw, slug.as_bytes())? {
            Some(entry) => self.link_of_slug_entry(entry),
            None => Ok(None),
        }
    }

    /// The link a slug's entry names: its copy, or else the link's record.
    fn link_of_slug_entry(&self, entry: &[u8]) -> StoreResult<Option<Link>> {
        let Some((key, copy)) = entry.split_first_chunk::<32>() else {
            return Err(StoreError::Codec(
                "a slug's link key is not 32 bytes".into(),
            ));
        };
        match copy.is_empty() {
            true => self.link_at(key),
            false => codec::decode(copy).map(Some),
        }
    }

    /// A workspace's links, newest first, below `cursor` (a link ID).
    pub fn list_links(
        &self,
        ws: &WorkspaceId,
        query: &LinkQuery,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> StoreResult<Page<Link>> {
        let mut below = scan::cursor_id(cursor)?.unwrap_or([0xff; 16]);
        let mut failed = false;
        let buckets = std::iter::from_fn(move || {
            if failed {
                return None;
            }
            match self.links_below(ws, query, &mut below) {
                Ok(found) => found,
                Err(e) => {
                    failed = true;
                    Some(vec![Err(e)])
                }
            }
        });
        scan::paginate(buckets.flatten(), limit, LINK_SCAN_BUDGET)
    }

    /// The links below `below` in the next bucket down of workspace `ws`,
    /// newest first, as listing candidates (`bucket::entries_below`).
    fn links_below(
        &self,
        ws: &WorkspaceId,
        query: &LinkQuery,
        below: &mut [u8; 16],
    ) -> StoreResult<Option<Vec<scan::Candidate<Link>>>> {
        let Some(entries) = bucket::entries_below(&self.inner.link_buckets, ws.as_bytes(), below)?
        else {
            return Ok(None);
        };
        let candidates = entries
            .into_iter()
            .map(|(id, record)| {
                let link: Link = codec::decode(&record)?;
                Ok((id, query.matches(&link).then_some(link)))
            })
            .collect();
        Ok(Some(candidates))
    }

    /// How many links workspace `ws` has: one key, kept by every link
    /// write.
    pub fn count_links(&self, ws: &WorkspaceId) -> StoreResult<u64> {
        let key = keys::owner_counter(keys::CounterKind::WorkspaceLinks, ws);
        Ok(self
            .inner
            .counters
            .get(key)?
            .map_or(0, |v| decode_count(&v)))
    }

    /// Lifetime non-bot scans of a link.
    pub fn link_total_scans(&self, id: &LinkId) -> StoreResult<u64> {
        let key = keys::counter(keys::CounterKind::LinkTotal, id);
        Ok(self
            .inner
            .counters
            .get(key)?
            .map(|v| decode_count(&v))
            .unwrap_or(0))
    }
}

pub(super) fn decode_count(bytes: &[u8]) -> u64 {
    bytes.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_that_is_not_a_link_id_is_bad() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 4).unwrap();
        let ws = WorkspaceId::generate();
        let link = LinkId::generate();
        let list = |cursor: &[u8]| store.list_links(&ws, &LinkQuery::default(), Some(cursor), 5);
        assert!(list(link.as_bytes()).is_ok());
        for bad in [
            keys::pair(&ws, &link).to_vec(),
            vec![],
            [&link.as_bytes()[..], &[0]].concat(),
        ] {
            assert!(matches!(list(&bad), Err(StoreError::BadCursor)), "{bad:?}");
        }
    }

    fn link(ws: WorkspaceId, slug: &str) -> Link {
        Link::sample(ws, slug, "https://example.com/")
    }

    #[test]
    fn a_workspaces_link_count_follows_every_write_and_is_counted_for_an_older_store() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (WorkspaceId::generate(), WorkspaceId::generate());
        {
            let store = Store::open(dir.path(), 4).unwrap();
            assert_eq!(store.count_links(&a).unwrap(), 0);
            // 40 links: buckets split, and some share a slug bucket.
            let links: Vec<Link> = (0..40).map(|i| link(a, &format!("count-{i}"))).collect();
            for l in &links {
                assert_eq!(store.insert_link(l).unwrap(), LinkWrite::Written);
            }
            store.insert_link(&link(b, "other-ws")).unwrap();
            // A taken slug writes nothing; a rename moves no count.
            assert_eq!(
                store.insert_link(&link(a, "count-0")).unwrap(),
                LinkWrite::SlugTaken
            );
            let mut renamed = links[1].clone();
            renamed.slug = crate::domain::Slug::parse("count-renamed").unwrap();
            store.replace_link(&links[1], &renamed).unwrap();
            assert_eq!(store.count_links(&a).unwrap(), 40);
            store.delete_link(&links[0]).unwrap();
            // Deleting it again changes nothing.
            store.delete_link(&links[0]).unwrap();
            assert_eq!(store.count_links(&a).unwrap(), 39);
            assert_eq!(store.count_links(&b).unwrap(), 1);
            assert_eq!(listed(&store, a, 7).len(), 39);
            // A store of the version before: no counters, no mark.
            for ws in [a, b] {
                let key = keys::owner_counter(keys::CounterKind::WorkspaceLinks, &ws);
                store.inner.counters.remove(key).unwrap();
            }
            store.inner.meta.remove(keys::META_LINK_COUNTS).unwrap();
            store.flush().unwrap();
        }
        let store = Store::open(dir.path(), 4).unwrap();
        assert_eq!(store.count_links(&a).unwrap(), 39);
        assert_eq!(store.count_links(&b).unwrap(), 1);
        assert_eq!(store.count_links(&WorkspaceId::generate()).unwrap(), 0);
    }

    /// Every link of `ws` by listing, newest first, `page` at a time.
    fn listed(store: &Store, ws: WorkspaceId, page: usize) -> Vec<LinkId> {
        let mut out = Vec::new();
        let mut cursor: Option<Vec<u8>> = None;
        loop {
            let p = store
                .list_links(&ws, &LinkQuery::default(), cursor.as_deref(), page)
                .unwrap();
            out.extend(p.items.into_iter().map(|l| l.id));
            match p.next_cursor {
                Some(c) => cursor = Some(c),
                None => return out,
            }
        }
    }

    fn newest_first(links: &[&Link]) -> Vec<LinkId> {
        let mut ids: Vec<LinkId> = links.iter().map(|l| l.id).collect();
        ids.sort_by(|a, b| b.as_bytes().cmp(a.as_bytes()));
        ids
    }

    fn assert_found(store: &Store, l: &Link) {
        assert_eq!(
            store.link_by_slug(l.slug.as_str()).unwrap().as_ref(),
            Some(l)
        );
        assert_eq!(
            store.owned_link(&l.workspace_id, &l.id).unwrap().as_ref(),
            Some(l)
        );
        assert_eq!(
            store.link_in_any_workspace(&l.id).unwrap().as_ref(),
            Some(l)
        );
    }

    fn assert_gone(store: &Store, l: &Link) {
        assert_eq!(store.link_by_slug(l.slug.as_str()).unwrap(), None);
        assert_eq!(store.owned_link(&l.workspace_id, &l.id).unwrap(), None);
        assert_eq!(store.link_in_any_workspace(&l.id).unwrap(), None);
    }

    #[test]
    fn links_in_buckets_are_found_listed_renamed_and_deleted_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 4).unwrap();
        let (ws, other) = (WorkspaceId::generate(), WorkspaceId::generate());
        let links: Vec<Link> = (0..300).map(|i| link(ws, &format!("l{i}"))).collect();
        let theirs = link(other, "theirs");
        // Newest first for a third, then the rest in ascending order: both
        // ways of splitting a bucket.
        let (first, rest) = links.split_at(100);
        for l in first.iter().rev().chain(rest).chain([&theirs]) {
            assert_eq!(store.insert_link(l).unwrap(), LinkWrite::Written);
        }
        assert_eq!(
            store.insert_link(&link(other, "l7")).unwrap(),
            LinkWrite::SlugTaken,
            "a slug is taken across workspaces"
        );
        let buckets = store.inner.link_buckets.len();
        assert!(
            (300 / LINKS_PER_BUCKET + 2..=300 / (LINKS_PER_BUCKET / 2) + 2).contains(&buckets),
            "{buckets} buckets for 301 links"
        );
        for l in &links {
            assert_found(&store, l);
        }
        let all: Vec<&Link> = links.iter().collect();
        assert_eq!(listed(&store, ws, 7), newest_first(&all));
        assert_eq!(listed(&store, other, 7), [theirs.id]);
        assert_eq!(store.count_links(&ws).unwrap(), 300);

        // Rename every fifth, delete every third.
        let mut kept = Vec::new();
        for (i, l) in links.iter().enumerate() {
            if i % 3 == 0 {
                store.delete_link(l).unwrap();
                assert_gone(&store, l);
                continue;
            }
            let mut now = l.clone();
            if i % 5 == 0 {
                now.slug = crate::domain::Slug::parse(&format!("renamed-{i}")).unwrap();
                assert_eq!(store.replace_link(l, &now).unwrap(), LinkWrite::Written);
                assert_eq!(store.link_by_slug(l.slug.as_str()).unwrap(), None);
            }
            kept.push(now);
        }
        for l in &kept {
            assert_found(&store, l);
        }
        let kept_refs: Vec<&Link> = kept.iter().collect();
        assert_eq!(listed(&store, ws, 13), newest_first(&kept_refs));
        assert_eq!(store.count_links(&ws).unwrap(), kept.len() as u64);
        assert_found(&store, &theirs);

        // Deleting every link leaves no bucket behind.
        for l in &kept {
            store.delete_link(l).unwrap();
        }
        store.delete_link(&theirs).unwrap();
        assert_eq!(store.inner.link_buckets.len(), 0);
        assert_eq!(store.inner.slug_buckets.len(), 0);
        assert_eq!(listed(&store, ws, 7), []);
    }

    #[test]
    fn a_listing_misses_no_link_when_a_bucket_splits_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 4).unwrap();
        let ws = WorkspaceId::generate();
        // A full bucket, then one of four links.
        let links: Vec<Link> = (0..LINKS_PER_BUCKET + 4)
            .map(|i| link(ws, &format!("s{i}")))
            .collect();
        for l in &links {
            store.insert_link(l).unwrap();
        }
        let all = LinkQuery::default();
        let mut below = [0xff; 16];
        let first = store.links_below(&ws, &all, &mut below).unwrap().unwrap();
        assert_eq!(first.len(), 4);
        // A link of the lower bucket grows past its bytes: the bucket
        // splits in half between two steps of the walk.
        let mut big = links[LINKS_PER_BUCKET / 2].clone();
        let long =
            crate::domain::Destination::parse(&format!("https://example.com/{}", "b".repeat(2000)))
                .unwrap();
        big.destination = long.clone();
        big.fallback_destination = Some(long);
        let buckets = store.inner.link_buckets.len();
        store
            .replace_link(&links[LINKS_PER_BUCKET / 2], &big)
            .unwrap();
        assert_eq!(store.inner.link_buckets.len(), buckets + 1, "a split");
        let mut ids: Vec<Vec<u8>> = first.into_iter().map(|c| c.unwrap().0).collect();
        while let Some(more) = store.links_below(&ws, &all, &mut below).unwrap() {
            ids.extend(more.into_iter().map(|c| c.unwrap().0));
        }
        let mut wanted: Vec<Vec<u8>> = links.iter().map(|l| l.id.as_bytes().to_vec()).collect();
        wanted.reverse();
        assert_eq!(ids, wanted);

        // The lower bucket's first links deleted: its key stays below the
        // links it holds, and a listing below them finds nothing there.
        for l in &links[..3] {
            store.delete_link(l).unwrap();
        }
        let page = store
            .list_links(&ws, &all, Some(links[2].id.as_bytes()), 10)
            .unwrap();
        assert!(page.items.is_empty());
        assert_eq!(page.next_cursor, None);
        let page = store
            .list_links(&ws, &all, Some(links[5].id.as_bytes()), 10)
            .unwrap();
        let ids: Vec<LinkId> = page.items.iter().map(|l| l.id).collect();
        assert_eq!(ids, [links[4].id, links[3].id]);
    }

    #[test]
    fn a_bucket_of_large_links_splits_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 4).unwrap();
        let ws = WorkspaceId::generate();
        let long = format!("https://example.com/{}", "a".repeat(1900));
        let links: Vec<Link> = (0..40)
            .map(|i| Link::sample(ws, &format!("big{i}"), &long))
            .collect();
        for l in &links {
            store.insert_link(l).unwrap();
        }
        let record = codec::encode(&links[0]).unwrap().len();
        for raw in store.inner.link_buckets.iter().values() {
            let raw = raw.unwrap();
            assert!(
                raw.len() <= BUCKET_BYTES + record + 64,
                "{} bytes",
                raw.len()
            );
        }
        assert!(store.inner.link_buckets.len() >= 40 * record / (BUCKET_BYTES + record));
        for l in &links {
            assert_found(&store, l);
        }
    }

    /// The entry of `slug` in its slug bucket, as stored.
    fn slug_entry_of(store: &Store, slug: &str) -> Option<Vec<u8>> {
        let raw = store
            .inner
            .slug_buckets
            .get(slug_bucket_key(slug))
            .unwrap()?;
        bucket::find(&raw, slug.as_bytes())
            .unwrap()
            .map(<[u8]>::to_vec)
    }

    #[test]
    fn a_slugs_entry_carries_its_links_record_and_every_write_keeps_it_current() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 4).unwrap();
        let ws = WorkspaceId::generate();
        let first = link(ws, "copied");
        store.insert_link(&first).unwrap();
        let entry = slug_entry_of(&store, "copied").unwrap();
        assert_eq!(entry[..32], keys::pair(&ws, &first.id));
        assert_eq!(codec::decode::<Link>(&entry[32..]).unwrap(), first);
        assert_found(&store, &first);

        // An edit that keeps the slug rewrites the copy with the link.
        let mut edited = first.clone();
        edited.destination = crate::domain::Destination::parse("https://example.com/new").unwrap();
        store.replace_link(&first, &edited).unwrap();
        assert_found(&store, &edited);
        let entry = slug_entry_of(&store, "copied").unwrap();
        assert_eq!(codec::decode::<Link>(&entry[32..]).unwrap(), edited);

        // A record past the bound: the entry is the key alone, and the link
        // is found through its bucket; back under it, the copy returns.
        let mut big = edited.clone();
        big.destination = crate::domain::Destination::parse(&format!(
            "https://example.com/{}",
            "b".repeat(SLUG_COPY_MAX)
        ))
        .unwrap();
        store.replace_link(&edited, &big).unwrap();
        assert_eq!(slug_entry_of(&store, "copied").unwrap().len(), 32);
        assert_found(&store, &big);
        store.replace_link(&big, &edited).unwrap();
        assert!(slug_entry_of(&store, "copied").unwrap().len() > 32);
        assert_found(&store, &edited);

        // A slug moved: the old one is free, the new one carries the link.
        let mut moved = edited.clone();
        moved.slug = crate::domain::Slug::parse("moved").unwrap();
        store.replace_link(&edited, &moved).unwrap();
        assert_eq!(slug_entry_of(&store, "copied"), None);
        assert_eq!(store.link_by_slug("copied").unwrap(), None);
        assert_found(&store, &moved);

        // An entry of a store written before copies (the key alone) is
        // still read, through the link's bucket.
        let bucket_key = slug_bucket_key("moved");
        let mut slugs =
            Bucket::decode(&store.inner.slug_buckets.get(bucket_key).unwrap().unwrap()).unwrap();
        slugs.insert(b"moved", keys::pair(&ws, &moved.id).to_vec());
        store
            .inner
            .slug_buckets
            .insert(bucket_key, slugs.encode())
            .unwrap();
        assert_found(&store, &moved);

        // An edit of a link the slug does not point at leaves the slug be.
        let other = link(ws, "other");
        store.insert_link(&other).unwrap();
        let mut impostor = moved.clone();
        impostor.slug = crate::domain::Slug::parse("other").unwrap();
        let mut impostor_edit = impostor.clone();
        impostor_edit.destination =
            crate::domain::Destination::parse("https://example.com/impostor").unwrap();
        store.replace_link(&impostor, &impostor_edit).unwrap();
        assert_eq!(store.link_by_slug("other").unwrap(), Some(other.clone()));

        store.delete_link(&other).unwrap();
        assert_eq!(slug_entry_of(&store, "other"), None);
        assert_eq!(store.link_by_slug("other").unwrap(), None);
    }

    #[test]
    fn slugs_that_share_a_bucket_are_kept_apart() {
        // Two slugs with the same bucket key, found by trying.
        let mut seen = std::collections::HashMap::new();
        let (a, b) = (0..)
            .find_map(|i| {
                let slug = format!("s{i}");
                let key = slug_bucket_key(&slug);
                seen.insert(key, slug.clone())
                    .map(|earlier| (earlier, slug))
            })
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 4).unwrap();
        let ws = WorkspaceId::generate();
        let (la, lb) = (link(ws, &a), link(ws, &b));
        store.insert_link(&la).unwrap();
        store.insert_link(&lb).unwrap();
        assert_found(&store, &la);
        assert_found(&store, &lb);
        assert_eq!(store.inner.slug_buckets.len(), 1);
        // `a` renamed to a free slug, then to `b`'s.
        let mut renamed = la.clone();
        renamed.slug = crate::domain::Slug::parse(&format!("{a}x")).unwrap();
        assert_eq!(
            store.replace_link(&la, &renamed).unwrap(),
            LinkWrite::Written
        );
        assert_found(&store, &renamed);
        assert_found(&store, &lb);
        assert_eq!(store.link_by_slug(&a).unwrap(), None);
        let mut clash = renamed.clone();
        clash.slug = lb.slug.clone();
        assert_eq!(
            store.replace_link(&renamed, &clash).unwrap(),
            LinkWrite::SlugTaken
        );
        assert_found(&store, &renamed);
        // And back to `a`, then `b` deleted: `a` stays.
        assert_eq!(
            store.replace_link(&renamed, &la).unwrap(),
            LinkWrite::Written
        );
        store.delete_link(&lb).unwrap();
        assert_found(&store, &la);
        assert_eq!(store.link_by_slug(&b).unwrap(), None);
    }

    /// Moves every slug entry of the current buckets into buckets keyed by
    /// FNV-1a alone, as a store written before `slug_bucket_key` mixed it.
    fn to_fnv_layout(store: &Store) {
        let former = store.inner.db.open_tree(FNV_SLUG_BUCKETS).unwrap();
        let mut by_key: BTreeMap<[u8; 2], Bucket> = BTreeMap::new();
        for item in store.inner.slug_buckets.iter() {
            let (_, raw) = item.unwrap();
            for entry in bucket::Entries::new(&raw).unwrap() {
                let (slug, value) = entry.unwrap();
                let key = fnv_bucket_key(std::str::from_utf8(slug).unwrap());
                by_key.entry(key).or_default().insert(slug, value.to_vec());
            }
        }
        for (key, bucket) in by_key {
            former.insert(key, bucket.encode()).unwrap();
        }
        store.inner.slug_buckets.clear().unwrap();
        // The slug file as the current buckets have it: empty.
        store
            .inner
            .slug_pages
            .load(None, &store.inner.slug_buckets, true)
            .unwrap();
    }

    /// 300 links with slugs that differ at the end, one of them too large
    /// for its slug's entry to carry a copy.
    fn sequential_links(ws: WorkspaceId) -> Vec<Link> {
        let mut links: Vec<Link> = (0..300).map(|i| link(ws, &format!("t{i:03}"))).collect();
        links[7].destination =
            crate::domain::Destination::parse(&format!("https://example.com/{}", "d".repeat(600)))
                .unwrap();
        links
    }

    #[test]
    fn slugs_that_differ_at_the_end_spread_over_buckets() {
        let fnv: std::collections::HashSet<_> = (0..300)
            .map(|i| fnv_bucket_key(&format!("t{i:03}")))
            .collect();
        let mixed: std::collections::HashSet<_> = (0..300)
            .map(|i| slug_bucket_key(&format!("t{i:03}")))
            .collect();
        // FNV-1a's top bits barely see the last two characters: 32 buckets.
        assert!(fnv.len() < 40, "{} FNV buckets", fnv.len());
        assert!(mixed.len() >= 290, "{} buckets", mixed.len());
    }

    #[test]
    fn slug_buckets_keyed_by_fnv_alone_move_to_the_current_hash_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let ws = WorkspaceId::generate();
        let links = sequential_links(ws);
        let late = link(ws, "late");
        {
            let store = Store::open(dir.path(), 4).unwrap();
            for l in &links {
                store.insert_link(l).unwrap();
            }
            assert!(slug_entry_of(&store, "t007").unwrap().len() == 32);
            let moved_before = slug_entry_of(&store, "t001").unwrap();
            to_fnv_layout(&store);
            assert_eq!(store.link_by_slug("t001").unwrap(), None);
            // A move cut short wrote one entry already.
            let mut cut = Bucket::default();
            cut.insert(b"t001", moved_before);
            store
                .inner
                .slug_buckets
                .insert(slug_bucket_key("t001"), cut.encode())
                .unwrap();
            // A link written in the new buckets while the former ones are
            // still there (the store opened by a version of each kind).
            store.insert_link(&late).unwrap();
            store.flush().unwrap();
        }
        let store = Store::open(dir.path(), 4).unwrap();
        for l in links.iter().chain([&late]) {
            assert_found(&store, l);
        }
        // Entries moved as they were: copies kept, the large one without.
        assert!(slug_entry_of(&store, "t001").unwrap().len() > 32);
        assert_eq!(slug_entry_of(&store, "t007").unwrap().len(), 32);
        assert!(!layout::has_tree(&store.inner.db, FNV_SLUG_BUCKETS));
        assert!(store.inner.slug_buckets.len() >= 290);
        // Writes go on in the new buckets.
        let mut renamed = links[3].clone();
        renamed.slug = crate::domain::Slug::parse("t003-new").unwrap();
        store.replace_link(&links[3], &renamed).unwrap();
        assert_found(&store, &renamed);
        assert_eq!(store.link_by_slug("t003").unwrap(), None);
        store.delete_link(&links[4]).unwrap();
        assert_eq!(store.link_by_slug("t004").unwrap(), None);
    }

    #[test]
    fn a_store_of_a_later_layout_is_not_opened_and_is_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let ws = WorkspaceId::generate();
        let l = link(ws, "kept");
        {
            let store = Store::open(dir.path(), 4).unwrap();
            store.insert_link(&l).unwrap();
            let meta = &store.inner.meta;
            let written = meta.get(keys::META_SCHEMA_VERSION).unwrap().unwrap();
            assert_eq!(&written[..], &[super::super::SCHEMA_VERSION]);
            meta.insert(
                keys::META_SCHEMA_VERSION,
                &[super::super::SCHEMA_VERSION + 1],
            )
            .unwrap();
            store.flush().unwrap();
        }
        let refused = Store::open(dir.path(), 4).err().expect("refused");
        assert!(
            matches!(refused, StoreError::Newer { found, .. } if found == super::super::SCHEMA_VERSION + 1),
            "{refused}"
        );
        assert!(refused.to_string().contains("later version"), "{refused}");
        // The refusal wrote nothing; with the number set back, the store
        // opens as before. (sled may hold its lock a moment after the
        // refused open: a few tries.)
        let sled_dir = dir.path().join("sled-v1");
        let db = (0..50)
            .find_map(|_| {
                let config = sled::Config::new()
                    .path(&sled_dir)
                    .segment_size(super::super::log_segment_size(&sled_dir))
                    .flush_every_ms(None);
                config.open().ok().or_else(|| {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    None
                })
            })
            .expect("sled opens");
        let meta = db.open_tree("meta").unwrap();
        let kept = meta.get(keys::META_SCHEMA_VERSION).unwrap().unwrap();
        assert_eq!(&kept[..], &[super::super::SCHEMA_VERSION + 1]);
        meta.insert(keys::META_SCHEMA_VERSION, &[1u8]).unwrap();
        db.flush().unwrap();
        drop((meta, db));
        let store = Store::open(dir.path(), 4).unwrap();
        assert_found(&store, &l);
    }

    #[test]
    fn a_slug_move_larger_than_its_memory_bound_merges_into_the_buckets_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 4).unwrap();
        let ws = WorkspaceId::generate();
        let links = sequential_links(ws);
        for l in &links {
            store.insert_link(l).unwrap();
        }
        let snapshot = || -> BTreeMap<_, _> {
            let tree = &store.inner.slug_buckets;
            tree.iter().map(|item| item.unwrap()).collect()
        };
        let before = snapshot();
        to_fnv_layout(&store);
        // A few entries at a time: most buckets are written more than once.
        let moved = move_slugs_holding(&store.inner.db, &store.inner.slug_buckets, 2048).unwrap();
        assert_eq!(moved, links.len());
        assert_eq!(snapshot(), before);
        // Nothing left to move.
        assert_eq!(
            move_slugs_holding(&store.inner.db, &store.inner.slug_buckets, 2048).unwrap(),
            0
        );
    }

    #[test]
    fn links_of_the_keyed_layout_move_into_buckets() {
        let dir = tempfile::tempdir().unwrap();
        let (ws1, ws2) = (WorkspaceId::generate(), WorkspaceId::generate());
        let links: Vec<Link> = (0..150)
            .map(|i| link(if i % 3 == 0 { ws2 } else { ws1 }, &format!("k{i}")))
            .collect();
        {
            let store = Store::open(dir.path(), 4).unwrap();
            let db = &store.inner.db;
            let keyed = db.open_tree(KEYED_LINKS).unwrap();
            let slugs = db.open_tree(KEYED_SLUGS).unwrap();
            for l in &links {
                let key = keys::pair(&l.workspace_id, &l.id);
                keyed.insert(key, codec::encode(l).unwrap()).unwrap();
                slugs.insert(l.slug.as_str(), &key[..]).unwrap();
            }
            // A move cut short left a bucket behind.
            store
                .inner
                .link_buckets
                .insert(keys::pair(&ws1, &links[1].id), &b"\0\x05cut"[..])
                .unwrap();
            store.flush().unwrap();
        }
        let store = Store::open(dir.path(), 4).unwrap();
        for l in &links {
            assert_found(&store, l);
        }
        for ws in [ws1, ws2] {
            let mine: Vec<&Link> = links.iter().filter(|l| l.workspace_id == ws).collect();
            assert_eq!(listed(&store, ws, 9), newest_first(&mine));
            assert_eq!(store.count_links(&ws).unwrap(), mine.len() as u64);
        }
        // Full buckets: 100 and 50 links.
        assert_eq!(
            store.inner.link_buckets.len(),
            100usize.div_ceil(LINKS_PER_BUCKET) + 50usize.div_ceil(LINKS_PER_BUCKET)
        );
        let names = store.inner.db.tree_names();
        for gone in [KEYED_LINKS, KEYED_SLUGS] {
            assert!(
                !names.iter().any(|n| n == gone.as_bytes()),
                "{gone} dropped"
            );
        }
        // New links go on into the buckets.
        let late = link(ws2, "late");
        store.insert_link(&late).unwrap();
        assert_found(&store, &late);
    }

    #[test]
    fn links_of_the_former_layout_move_to_their_workspace_keys_with_their_slugs() {
        let dir = tempfile::tempdir().unwrap();
        let (ws1, ws2) = (WorkspaceId::generate(), WorkspaceId::generate());
        let (a, b, c) = (link(ws1, "alpha"), link(ws1, "bravo"), link(ws2, "charlie"));
        {
            let store = Store::open(dir.path(), 4).unwrap();
            let db = &store.inner.db;
            let former = db.open_tree(FORMER_LINKS).unwrap();
            let by_ws = db.open_tree(FORMER_BY_WORKSPACE).unwrap();
            let slugs = db.open_tree(KEYED_SLUGS).unwrap();
            for l in [&a, &b, &c] {
                former
                    .insert(l.id.as_bytes(), codec::encode(l).unwrap())
                    .unwrap();
                by_ws
                    .insert(keys::pair(&l.workspace_id, &l.id), &[][..])
                    .unwrap();
                slugs.insert(l.slug.as_str(), l.id.as_bytes()).unwrap();
            }
            // A move cut short by a crash: `alpha` already moved, its slug
            // pointing at its new key; and a slug left behind by a link
            // that is gone.
            let key = keys::pair(&ws1, &a.id);
            db.open_tree(KEYED_LINKS)
                .unwrap()
                .insert(key, codec::encode(&a).unwrap())
                .unwrap();
            slugs.insert("alpha", &key[..]).unwrap();
            slugs
                .insert("orphan", LinkId::generate().as_bytes())
                .unwrap();
            store.flush().unwrap();
        }
        let store = Store::open(dir.path(), 4).unwrap();
        for l in [&a, &b, &c] {
            assert_found(&store, l);
        }
        assert_eq!(store.link_by_slug("orphan").unwrap(), None);
        // Another workspace's link is as absent as none.
        assert_eq!(store.owned_link(&ws2, &a.id).unwrap(), None);
        assert_eq!(listed(&store, ws1, 10), [b.id, a.id]);
        assert_eq!(listed(&store, ws2, 10), [c.id]);
        assert_eq!(store.count_links(&ws1).unwrap(), 2);
        let names = store.inner.db.tree_names();
        for former in [FORMER_LINKS, FORMER_BY_WORKSPACE, KEYED_LINKS, KEYED_SLUGS] {
            assert!(
                !names.iter().any(|n| n == former.as_bytes()),
                "{former} dropped"
            );
        }
        // A slug still works after the link is renamed and deleted.
        let mut renamed = b.clone();
        renamed.slug = crate::domain::Slug::parse("bravo-2").unwrap();
        assert_eq!(
            store.replace_link(&b, &renamed).unwrap(),
            LinkWrite::Written
        );
        assert_eq!(store.link_by_slug("bravo").unwrap(), None);
        assert_eq!(
            store.link_by_slug("bravo-2").unwrap(),
            Some(renamed.clone())
        );
        store.delete_link(&renamed).unwrap();
        assert_eq!(store.link_by_slug("bravo-2").unwrap(), None);
        assert_eq!(store.count_links(&ws1).unwrap(), 1);
    }
}
