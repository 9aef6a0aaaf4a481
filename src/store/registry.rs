//! The visitor registry: which visitor a device's fingerprint belongs to,
//! per workspace.
//!
//! The entries of the visitors first seen in one Recorder batch are stored
//! together, as one sled value keyed by the batch's first event ID, written
//! in the transaction of the batch's events (`Store::commit_scans_with`). A
//! sled key per visitor, at the random position of its fingerprint, cost
//! the Recorder a leaf write (and every few, a split) for each new device;
//! a batch's key comes after every key before it, like the events'.
//!
//! Lookups by fingerprint go through an index kept in memory
//! (`RegistryIndex`), filled from the stored batches when the store opens
//! (157 ms for a million entries in a release build): 4 bytes of each
//! entry's fingerprint, mixed with its workspace, and the number of its
//! batch, 10 to 20 bytes per visitor. A device whose short key the index
//! lacks is certainly absent, without a store read; otherwise the batches
//! it names are read (their entries are sorted) and compared whole.
//!
//! A batch value: a version byte, then entries of `workspace ID (16) ++
//! fingerprint (16) ++ visitor ID (16)`, sorted. Erasure rewrites the batch
//! of the visitor's entry without it (or removes it when it was the last).
//! A store of the former layout (a key per entry: `workspace ID ++
//! fingerprint` → visitor ID) moves at the first open into batches under
//! keys of eight zero bytes and a chunk number, which sort before every
//! batch of the Recorder.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLockReadGuard, RwLockWriteGuard};

use sled::transaction::TransactionalTree;

use super::{NewVisitor, Store, StoreError, StoreResult, layout};
use crate::enrich::fingerprint::Fingerprint;
use crate::ids::{EventId, VisitorId, WorkspaceId};

/// The tree of registry batches.
pub(super) const BATCHES_TREE: &str = "visitor_registry_batches";
/// The former layout's tree: a key per entry.
const FORMER_TREE: &str = "visitor_registry";
const VERSION: u8 = 1;
/// `workspace ID (16) ++ fingerprint (16) ++ visitor ID (16)`.
const ENTRY: usize = 48;
/// What entries are sorted and searched by: workspace and fingerprint.
const KEY: usize = 32;
/// Entries per batch moved from the former layout.
const MOVED_PER_BATCH: usize = 4096;

/// `workspace (16) ++ fingerprint (16)`: an entry's key within its batch.
fn registry_key(ws: &WorkspaceId, fp: &Fingerprint) -> [u8; KEY] {
    let mut key = [0u8; KEY];
    key[..16].copy_from_slice(ws.as_bytes());
    key[16..].copy_from_slice(fp);
    key
}

/// The stored value of a batch's entries (`new` in any order).
pub(super) fn batch_value(new: &[NewVisitor]) -> Vec<u8> {
    let mut entries: Vec<[u8; ENTRY]> = new
        .iter()
        .map(|n| {
            entry(
                &registry_key(&n.workspace_id, &n.fingerprint),
                &n.visitor_id,
            )
        })
        .collect();
    encode(&mut entries)
}

fn entry(key: &[u8; KEY], visitor: &VisitorId) -> [u8; ENTRY] {
    let mut e = [0u8; ENTRY];
    e[..KEY].copy_from_slice(key);
    e[KEY..].copy_from_slice(visitor.as_bytes());
    e
}

fn encode(entries: &mut [[u8; ENTRY]]) -> Vec<u8> {
    entries.sort_unstable();
    let mut value = Vec::with_capacity(1 + entries.len() * ENTRY);
    value.push(VERSION);
    for e in entries.iter() {
        value.extend_from_slice(e);
    }
    value
}

/// The entries of a stored batch value.
fn entries(value: &[u8]) -> StoreResult<&[u8]> {
    match value.split_first() {
        Some((&VERSION, rest)) if rest.len() % ENTRY == 0 => Ok(rest),
        _ => Err(StoreError::Codec(
            "a visitor registry batch is malformed".into(),
        )),
    }
}

/// The visitor of `key` in a batch value, if it holds `key`.
fn find(value: &[u8], key: &[u8; KEY]) -> StoreResult<Option<VisitorId>> {
    let entries = entries(value)?;
    let n = entries.len() / ENTRY;
    let at = |i: usize| &entries[i * ENTRY..(i + 1) * ENTRY];
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        match at(mid)[..KEY].cmp(&key[..]) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => return Ok(VisitorId::from_slice(&at(mid)[KEY..])),
        }
    }
    Ok(None)
}

/// The index's key of an entry: 4 bytes of the fingerprint (a keyed hash,
/// uniformly random) mixed with 4 random bytes of the workspace ID.
fn short(key: &[u8; KEY]) -> u32 {
    let word = |at: usize| u32::from_le_bytes(key[at..at + 4].try_into().unwrap_or([0; 4]));
    word(16) ^ word(12)
}

/// Where each stored entry's batch is: for each entry's `short` key, the
/// number of its batch in `batches` (9 bytes a slot, 10 to 20 bytes an
/// entry as the map grows). Entries may share a short key (at a million
/// entries, about a hundred pairs); the index then holds each one's batch
/// and a lookup reads them all; a fingerprint never stored meets a
/// stored one's short key once in 4,000 lookups at a million entries.
#[derive(Default)]
pub(super) struct RegistryIndex {
    batches: Vec<[u8; 16]>,
    first: HashMap<u32, u32>,
    more: HashMap<u32, Vec<u32>>,
}

impl RegistryIndex {
    /// Adds the entries of the batch stored under `batch` (a value's
    /// entries).
    fn add(&mut self, batch: [u8; 16], entries: &[u8]) {
        let slot = self.batches.len() as u32;
        self.batches.push(batch);
        for e in entries.chunks_exact(ENTRY) {
            let key: &[u8; KEY] = e[..KEY].try_into().unwrap_or(&[0; KEY]);
            let short = short(key);
            match self.first.entry(short) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(slot);
                }
                std::collections::hash_map::Entry::Occupied(o) if *o.get() == slot => {}
                std::collections::hash_map::Entry::Occupied(_) => {
                    let more = self.more.entry(short).or_default();
                    if !more.contains(&slot) {
                        more.push(slot);
                    }
                }
            }
        }
    }

    /// The keys of the batches that may hold `key`.
    fn candidates(&self, key: &[u8; KEY]) -> Vec<[u8; 16]> {
        let short = short(key);
        let Some(first) = self.first.get(&short) else {
            return Vec::new();
        };
        std::iter::once(first)
            .chain(self.more.get(&short).into_iter().flatten())
            .filter_map(|slot| self.batches.get(*slot as usize).copied())
            .collect()
    }

    /// `key`'s entry is no longer in batch `batch`.
    fn remove(&mut self, key: &[u8; KEY], batch: &[u8; 16]) {
        let short = short(key);
        let is_batch = |slot: &u32| self.batches.get(*slot as usize) == Some(batch);
        if let Some(more) = self.more.get_mut(&short) {
            more.retain(|slot| self.batches.get(*slot as usize) != Some(batch));
        }
        if self.first.get(&short).is_some_and(is_batch) {
            match self.more.get_mut(&short).and_then(|m| m.pop()) {
                Some(next) => {
                    self.first.insert(short, next);
                }
                None => {
                    self.first.remove(&short);
                }
            }
        }
        if self.more.get(&short).is_some_and(|m| m.is_empty()) {
            self.more.remove(&short);
        }
    }

    /// Entries indexed (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.first.len() + self.more.values().map(Vec::len).sum::<usize>()
    }
}

/// Fills the index from the stored batches, first moving the entries of a
/// store of the former layout into batches (a sled batch of writes, then
/// the former tree dropped: a crash part way moves them again, into the
/// same keys).
pub(super) fn open_index(db: &sled::Db, batches: &sled::Tree) -> StoreResult<RegistryIndex> {
    if layout::has_tree(db, FORMER_TREE) {
        let former = db.open_tree(FORMER_TREE)?;
        let mut moved: Vec<[u8; ENTRY]> = Vec::new();
        let mut chunk = 0u64;
        let mut writes = Vec::new();
        let mut flush = |moved: &mut Vec<[u8; ENTRY]>, chunk: &mut u64| {
            if !moved.is_empty() {
                let mut key = [0u8; 16];
                key[8..].copy_from_slice(&chunk.to_be_bytes());
                writes.push((key, encode(moved)));
                moved.clear();
                *chunk += 1;
            }
        };
        for kv in former.iter() {
            let (k, v) = kv?;
            let (Ok(key), Some(visitor)) =
                (<[u8; KEY]>::try_from(&k[..]), VisitorId::from_slice(&v))
            else {
                continue;
            };
            moved.push(entry(&key, &visitor));
            if moved.len() == MOVED_PER_BATCH {
                flush(&mut moved, &mut chunk);
            }
        }
        flush(&mut moved, &mut chunk);
        let n = layout::write_in_batches(
            batches,
            writes
                .into_iter()
                .map(|(k, v)| Ok((k.to_vec().into(), Some(v.into())))),
        )?;
        layout::drop_trees(db, &[FORMER_TREE])?;
        if n > 0 {
            tracing::info!(batches = n, "visitor registry entries moved into batches");
        }
    }
    let mut index = RegistryIndex::default();
    for kv in batches.iter() {
        let (k, v) = kv?;
        let Ok(key) = <[u8; 16]>::try_from(&k[..]) else {
            continue;
        };
        index.add(key, entries(&v)?);
    }
    Ok(index)
}

impl Store {
    fn registry(&self) -> RwLockReadGuard<'_, RegistryIndex> {
        self.inner
            .registry
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn registry_mut(&self) -> RwLockWriteGuard<'_, RegistryIndex> {
        self.inner
            .registry
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The Recorder stored `value` (`batch_value`) under `first`, its
    /// batch's first event ID: the index finds its entries from now on.
    pub(super) fn registry_committed(&self, first: &EventId, value: &[u8]) {
        self.registry_mut()
            .add(*first.as_bytes(), entries(value).unwrap_or_default());
    }

    /// The visitor fingerprint `fp` belongs to in `ws`, if any. No store
    /// read for a fingerprint the index lacks.
    pub fn visitor_of(&self, ws: &WorkspaceId, fp: &Fingerprint) -> StoreResult<Option<VisitorId>> {
        let key = registry_key(ws, fp);
        let candidates = self.registry().candidates(&key);
        for batch in candidates {
            if let Some(value) = self.inner.registry_batches.get(batch)?
                && let Some(v) = find(&value, &key)?
            {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// The fingerprint of visitor `id` of workspace `ws`, if its registry
    /// entry is stored. Erasure only: the batches of the visitor's
    /// millisecond first (its first batch, for a visitor made since batches
    /// were keyed so), then every batch.
    pub fn visitor_fingerprint(
        &self,
        ws: &WorkspaceId,
        id: &VisitorId,
    ) -> StoreResult<Option<Fingerprint>> {
        let ms = id.timestamp_ms();
        let home = EventId::lower_bound_bytes(ms)..EventId::lower_bound_bytes(ms.saturating_add(1));
        let batches = &self.inner.registry_batches;
        // Then every other batch (a visitor stored by an earlier version).
        let rest = batches.iter().filter(|kv| {
            kv.as_ref().map_or(true, |(k, _)| {
                !(home.start[..] <= k[..] && k[..] < home.end[..])
            })
        });
        for kv in batches.range(home.clone()).chain(rest) {
            let (_, value) = kv?;
            for e in entries(&value)?.chunks_exact(ENTRY) {
                if &e[..16] == ws.as_bytes() && &e[KEY..] == id.as_bytes() {
                    return Ok(e[16..KEY].try_into().ok());
                }
            }
        }
        Ok(None)
    }

    /// Removes registry entry `fp` of workspace `ws` if it still maps to
    /// visitor `id`.
    pub fn forget_fingerprint(
        &self,
        ws: &WorkspaceId,
        fp: &Fingerprint,
        id: &VisitorId,
    ) -> StoreResult<()> {
        let tree = &self.inner.registry_batches;
        let removed =
            tree.transaction(|batches| self.remove_registry_entry(batches, ws, fp, id))?;
        self.registry_removed(ws, fp, removed);
        Ok(())
    }

    /// Inside a transaction: rewrites the batch holding entry `fp` of `ws`
    /// without it, if it maps to `id`; answers that batch.
    pub(super) fn remove_registry_entry(
        &self,
        batches: &TransactionalTree,
        ws: &WorkspaceId,
        fp: &Fingerprint,
        id: &VisitorId,
    ) -> Result<Option<[u8; 16]>, sled::transaction::ConflictableTransactionError<StoreError>> {
        let key = registry_key(ws, fp);
        let candidates = self.registry().candidates(&key);
        for batch in candidates {
            let Some(value) = batches.get(batch)? else {
                continue;
            };
            let abort = sled::transaction::ConflictableTransactionError::Abort;
            if find(&value, &key).map_err(abort)? != Some(*id) {
                continue;
            }
            let mut kept: Vec<[u8; ENTRY]> = entries(&value)
                .map_err(abort)?
                .chunks_exact(ENTRY)
                .filter(|e| e[..KEY] != key[..])
                .filter_map(|e| e.try_into().ok())
                .collect();
            if kept.is_empty() {
                batches.remove(&batch[..])?;
            } else {
                batches.insert(&batch[..], encode(&mut kept))?;
            }
            return Ok(Some(batch));
        }
        Ok(None)
    }

    /// After the transaction of `remove_registry_entry`: the index forgets
    /// the entry.
    pub(super) fn registry_removed(
        &self,
        ws: &WorkspaceId,
        fp: &Fingerprint,
        batch: Option<[u8; 16]>,
    ) {
        if let Some(batch) = batch {
            self.registry_mut().remove(&registry_key(ws, fp), &batch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(ws: WorkspaceId, n: u8) -> NewVisitor {
        NewVisitor {
            workspace_id: ws,
            fingerprint: [n; 16],
            visitor_id: VisitorId::generate(),
        }
    }

    #[test]
    fn a_batch_value_finds_each_of_its_entries_and_nothing_else() {
        let ws = WorkspaceId::generate();
        let all: Vec<NewVisitor> = (0..50).rev().map(|n| new(ws, n * 2)).collect();
        let value = batch_value(&all);
        assert_eq!(value.len(), 1 + 50 * ENTRY);
        for n in &all {
            let key = registry_key(&ws, &n.fingerprint);
            assert_eq!(find(&value, &key).unwrap(), Some(n.visitor_id));
        }
        for odd in [1u8, 51, 99, 255] {
            assert_eq!(find(&value, &registry_key(&ws, &[odd; 16])).unwrap(), None);
        }
        let other = WorkspaceId::generate();
        assert_eq!(find(&value, &registry_key(&other, &[2; 16])).unwrap(), None);
        assert!(find(&value[1..], &registry_key(&ws, &[2; 16])).is_err());
        assert!(find(&value[..20], &registry_key(&ws, &[2; 16])).is_err());
    }

    #[test]
    fn entries_of_the_former_layout_move_into_batches_and_are_found_forgotten_and_erased() {
        let dir = tempfile::tempdir().unwrap();
        let wss = [WorkspaceId::generate(), WorkspaceId::generate()];
        // More entries than one moved batch holds, in two workspaces, in
        // the order of their keys (which is the order they move in).
        let mut former: Vec<NewVisitor> = (0..MOVED_PER_BATCH + 10)
            .map(|i| NewVisitor {
                workspace_id: wss[i % 2],
                fingerprint: crate::random::bytes::<16>(),
                visitor_id: VisitorId::generate(),
            })
            .collect();
        former.sort_by_key(|n| registry_key(&n.workspace_id, &n.fingerprint));
        {
            let store = Store::open(dir.path(), 4).unwrap();
            let tree = store.inner.db.open_tree(FORMER_TREE).unwrap();
            for n in &former {
                let key = registry_key(&n.workspace_id, &n.fingerprint);
                tree.insert(key, &n.visitor_id.as_bytes()[..]).unwrap();
            }
            store.flush().unwrap();
        }
        let store = Store::open(dir.path(), 4).unwrap();
        assert!(!layout::has_tree(&store.inner.db, FORMER_TREE));
        assert_eq!(store.inner.registry_batches.len(), 2);
        assert_eq!(store.registry().len(), former.len());
        for n in &former {
            assert_eq!(
                store.visitor_of(&n.workspace_id, &n.fingerprint).unwrap(),
                Some(n.visitor_id)
            );
        }
        // An entry is found by its visitor only in its own workspace.
        let (a, b) = (&former[0], &former[MOVED_PER_BATCH + 2]);
        let ws = a.workspace_id;
        let other = if ws == wss[0] { wss[1] } else { wss[0] };
        assert_eq!(
            store.visitor_fingerprint(&ws, &a.visitor_id).unwrap(),
            Some(a.fingerprint)
        );
        assert_eq!(
            store.visitor_fingerprint(&other, &a.visitor_id).unwrap(),
            None
        );
        // Forgetting needs the visitor the entry maps to.
        store
            .forget_fingerprint(&ws, &a.fingerprint, &VisitorId::generate())
            .unwrap();
        assert_eq!(
            store.visitor_of(&ws, &a.fingerprint).unwrap(),
            Some(a.visitor_id)
        );
        store
            .forget_fingerprint(&ws, &a.fingerprint, &a.visitor_id)
            .unwrap();
        assert_eq!(store.visitor_of(&ws, &a.fingerprint).unwrap(), None);
        assert_eq!(store.visitor_fingerprint(&ws, &a.visitor_id).unwrap(), None);
        store
            .erase_visitor_records(&b.visitor_id, &b.workspace_id, Some(b.fingerprint))
            .unwrap();
        assert_eq!(
            store.visitor_of(&b.workspace_id, &b.fingerprint).unwrap(),
            None
        );
        // The second batch held 10 entries; erasing them all removes it.
        for n in &former[MOVED_PER_BATCH..] {
            store
                .forget_fingerprint(&n.workspace_id, &n.fingerprint, &n.visitor_id)
                .unwrap();
        }
        assert_eq!(store.inner.registry_batches.len(), 1);
        // What is left is what a reopened store finds.
        drop(store);
        let store = Store::open(dir.path(), 4).unwrap();
        assert_eq!(store.registry().len(), MOVED_PER_BATCH - 1);
        for (i, n) in former.iter().enumerate() {
            let kept = i != 0 && i < MOVED_PER_BATCH;
            assert_eq!(
                store.visitor_of(&n.workspace_id, &n.fingerprint).unwrap(),
                kept.then_some(n.visitor_id),
                "entry {i}"
            );
        }
    }

    #[test]
    fn the_index_keeps_every_batch_of_a_shared_short_key_until_each_is_removed() {
        let ws = WorkspaceId::generate();
        let (a, b, c) = ([1u8; 16], [2u8; 16], [3u8; 16]);
        let key = registry_key(&ws, &[9; 16]);
        let mut index = RegistryIndex::default();
        // Three batches with the same entry key (the index's short key
        // alike): all are candidates.
        for batch in [a, b, c] {
            index.add(batch, &entry(&key, &VisitorId::generate()));
        }
        assert_eq!(index.candidates(&key), vec![a, b, c]);
        assert_eq!(index.len(), 3);
        index.remove(&key, &a);
        assert_eq!(index.candidates(&key), vec![c, b]);
        index.remove(&key, &b);
        assert_eq!(index.candidates(&key), vec![c]);
        index.remove(&key, &c);
        assert!(index.candidates(&key).is_empty());
        assert_eq!(index.len(), 0);
        assert!(index.more.is_empty());
    }
}
