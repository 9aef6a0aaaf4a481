//! Visitors as stored beside their events: profiles (written by the
//! Visitors worker), attributes (by `identify`), the listings, and erasure.
//! Which visitor a device's fingerprint belongs to is `registry.rs`.
//!
//! Profiles are kept in buckets (`bucket.rs`), as links are: key =
//! workspace ID (16) ++ the first visitor ID of the bucket (16); value = up
//! to `PROFILES_PER_BUCKET` profiles of that workspace (visitor ID →
//! profile), each at or after the key and before the next bucket's key. A
//! workspace's visitors are one key range in ID order (newest last), and a
//! profile is found by seeking to the last bucket key at or before
//! `workspace ID ++ visitor ID`. Most visitors are new (a person scans a
//! code once), and new visitors' IDs ascend, so a checkpoint's new profiles
//! fill the workspace's last buckets: one sled key per 16 of them instead
//! of one each (sled 0.34 pays per key written: its traversal, the
//! transaction's bookkeeping, the leaf's copy and splits).

use std::collections::{BTreeMap, HashMap};
use std::sync::{MutexGuard, PoisonError};

use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use super::bucket::{self, Bucket};
use super::codec::{self, Record};
use super::forms::FormCompletion;
use super::scan::{self, Page};
use super::segment::{self, Segment};
use super::{ConsumerRecord, Store, StoreError, StoreResult, keys, layout};
use crate::domain::visitor::VisitorProfile;
use crate::enrich::fingerprint::Fingerprint;
use crate::ids::{EventKind, VisitorId, WorkspaceId};

/// The tree of visitor profiles in buckets (above).
pub(super) const PROFILE_BUCKETS_TREE: &str = "visitor_profile_buckets";
/// The layout before the buckets: a key per profile, `workspace ID ++
/// visitor ID`.
const KEYED_PROFILES: &str = "visitor_profiles";
/// Profiles per bucket at most, and bytes of a bucket's profiles beyond
/// which it splits (unless it holds one).
const PROFILES_PER_BUCKET: usize = 16;
const PROFILE_BUCKET_BYTES: usize = 4 * 1024;

/// A write to the buckets' tree: a bucket to store under a key, or `None`
/// to remove the key.
type Put = (Vec<u8>, Option<Vec<u8>>);
/// The trees of the former layout: profiles keyed by visitor ID alone, and
/// beside them an index of each workspace's visitors (a second key per
/// visitor, written with its first profile).
const FORMER_PROFILES: &str = "visitors";
const FORMER_BY_WORKSPACE: &str = "visitors_by_workspace";
/// The former map of each visitor back to its registry key (a second key
/// per new visitor, in the Recorder's transaction); erasure now finds the
/// entry in the registry itself.
const FORMER_FINGERPRINTS: &str = "visitor_fingerprints";
/// Moves the profiles a store of an earlier layout holds into `buckets`
/// and drops the former trees (`layout`); answers how many moved. Profiles
/// under their visitor ID alone move to a key each first, as that version
/// did, then every keyed profile moves into buckets. Each step writes what
/// it moves before it drops its source, and the buckets a workspace's
/// profiles make depend only on them, so a move cut short is done again
/// whole at the next open.
pub(super) fn move_profiles_of_former_layouts(
    db: &sled::Db,
    buckets: &sled::Tree,
) -> StoreResult<usize> {
    if layout::has_tree(db, FORMER_PROFILES) {
        let former = db.open_tree(FORMER_PROFILES)?;
        let keyed = db.open_tree(KEYED_PROFILES)?;
        layout::write_in_batches(
            &keyed,
            former.iter().map(|entry| {
                let (_, value) = entry?;
                let p: VisitorProfile = codec::decode(&value)?;
                Ok((
                    keys::pair(&p.workspace_id, &p.id).to_vec().into(),
                    Some(value),
                ))
            }),
        )?;
    }
    layout::drop_trees(
        db,
        &[FORMER_PROFILES, FORMER_BY_WORKSPACE, FORMER_FINGERPRINTS],
    )?;
    if !layout::has_tree(db, KEYED_PROFILES) {
        return Ok(0);
    }
    let keyed = db.open_tree(KEYED_PROFILES)?;
    let moved = keyed.len();
    // Each workspace's profiles in ID order, cut into buckets greedily and
    // written as they fill: every bucket but the last of what is pending is
    // final whatever follows, so memory holds about one batch of them.
    let mut workspace: Option<[u8; 16]> = None;
    let mut pending = Bucket::default();
    let write = |ws: &[u8; 16], pending: Bucket, keep_last: bool| -> StoreResult<Bucket> {
        let mut chunks = pending.into_chunks(PROFILES_PER_BUCKET, PROFILE_BUCKET_BYTES);
        let kept = match keep_last {
            true => chunks.pop().unwrap_or_default(),
            false => Bucket::default(),
        };
        let writes = chunks.into_iter().filter_map(|chunk| {
            let key = [&ws[..], chunk.first_key()?].concat();
            Some(Ok((key.into(), Some(chunk.encode().into()))))
        });
        layout::write_in_batches(buckets, writes)?;
        Ok(kept)
    };
    for entry in keyed.iter() {
        let (key, value) = entry?;
        let (Some(ws), Some(id)) = (key.get(..16), key.get(16..32)) else {
            continue;
        };
        let ws: [u8; 16] = ws
            .try_into()
            .map_err(|_| StoreError::Codec("profile key".into()))?;
        if let Some(done) = workspace.filter(|w| *w != ws) {
            write(&done, std::mem::take(&mut pending), false)?;
        }
        workspace = Some(ws);
        pending.insert(id, value.to_vec());
        if pending.len() >= PROFILES_PER_BUCKET * 64 {
            pending = write(&ws, pending, true)?;
        }
    }
    if let Some(ws) = workspace {
        write(&ws, pending, false)?;
    }
    layout::drop_trees(db, &[KEYED_PROFILES])?;
    Ok(moved)
}

/// A visitor first seen in a batch: its registry entry to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewVisitor {
    pub workspace_id: WorkspaceId,
    pub fingerprint: Fingerprint,
    pub visitor_id: VisitorId,
}

impl Store {
    /// Deletes what is stored of visitor `id` beside its events: profile,
    /// attributes and registry entry `fingerprint` (if it still maps to
    /// `id`: a scan committed after the registry forgot the device may
    /// have written it), in one transaction.
    pub fn erase_visitor_records(
        &self,
        id: &VisitorId,
        ws: &WorkspaceId,
        fingerprint: Option<Fingerprint>,
    ) -> StoreResult<()> {
        let t = &self.inner;
        let _one_writer = self.profile_writer();
        let profile = self.profile_removal(&keys::pair(ws, id))?;
        let removed = (
            &t.visitor_profiles,
            &t.visitor_attributes,
            &t.registry_batches,
        )
            .transaction(|(profiles, attributes, registry)| {
                for (key, value) in &profile {
                    match value {
                        Some(v) => profiles.insert(key.as_slice(), v.as_slice())?,
                        None => profiles.remove(key.as_slice())?,
                    };
                }
                attributes.remove(&id.as_bytes()[..])?;
                match &fingerprint {
                    Some(fp) => self.remove_registry_entry(registry, ws, fp, id),
                    None => Ok(None),
                }
            })?;
        if let Some(fp) = &fingerprint {
            self.registry_removed(ws, fp, removed);
        }
        Ok(())
    }
}

/// A visitor's attributes as stored: a JSON object (bincode cannot carry
/// arbitrary JSON values, so the object is kept as its text).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredAttributes {
    pub json: String,
}

impl Record for StoredAttributes {
    const VERSION: u8 = 1;
}

impl Record for VisitorProfile {
    const VERSION: u8 = 1;
}

/// Visitors examined at most to fill one page of a filtered list.
const VISITOR_SCAN_BUDGET: usize = 10_000;

type TxResult = Result<(), ConflictableTransactionError<StoreError>>;

fn bucket_key(key: &[u8]) -> StoreResult<[u8; 32]> {
    key.try_into()
        .map_err(|_| StoreError::Codec("a profile bucket's key is not 32 bytes".into()))
}

impl Store {
    /// Held by every write of profiles: a write reads the buckets it
    /// rewrites.
    fn profile_writer(&self) -> MutexGuard<'_, ()> {
        self.inner
            .profile_writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The bucket that holds (or would hold) the profile under `key`
    /// (workspace ID ++ visitor ID): its sled key and value.
    fn profile_bucket(&self, key: &[u8; 32]) -> StoreResult<Option<(sled::IVec, sled::IVec)>> {
        bucket::holding(&self.inner.visitor_profiles, key)
    }

    /// The stored profile of visitor `id` of workspace `ws`.
    pub fn visitor(&self, ws: &WorkspaceId, id: &VisitorId) -> StoreResult<Option<VisitorProfile>> {
        let Some((_, raw)) = self.profile_bucket(&keys::pair(ws, id))? else {
            return Ok(None);
        };
        bucket::find(&raw, id.as_bytes())?
            .map(codec::decode)
            .transpose()
    }

    /// The largest visitor ID among workspace `ws`'s stored profiles
    /// (`None` when it has none): the last entry of its last bucket, since
    /// buckets hold disjoint ranges of IDs in order.
    pub fn largest_stored_visitor(&self, ws: &WorkspaceId) -> StoreResult<Option<VisitorId>> {
        let Some((_, raw)) = self
            .inner
            .visitor_profiles
            .scan_prefix(ws.as_bytes())
            .next_back()
            .transpose()?
        else {
            return Ok(None);
        };
        let mut last = None;
        for entry in bucket::Entries::new(&raw)? {
            last = Some(entry?.0);
        }
        Ok(last.and_then(VisitorId::from_slice))
    }

    /// The writes that set each of `profiles` (workspace ID ++ visitor ID,
    /// encoded profile; ascending keys) in its bucket, cutting a bucket
    /// that grows past its bounds into several. Holds `profile_writer`.
    fn profile_puts(&self, profiles: Vec<([u8; 32], Vec<u8>)>) -> StoreResult<Vec<Put>> {
        use std::ops::Bound::{Excluded, Included};
        let tree = &self.inner.visitor_profiles;
        let mut puts = Vec::new();
        let mut touched: BTreeMap<[u8; 32], Bucket> = BTreeMap::new();
        // A workspace's first stored bucket, moved down to a profile before
        // it: its stored key → its key now.
        let mut moved: HashMap<[u8; 32], [u8; 32]> = HashMap::new();
        // The bucket the last profile went to, and the key of the next
        // stored bucket after it (`None`: the workspace's last): the
        // profiles below that key go there too, without a seek each (a
        // checkpoint's new visitors all go to the last bucket).
        let mut run: Option<([u8; 32], Option<[u8; 32]>)> = None;
        // The first stored bucket key of `key`'s workspace after `from`.
        let next_stored = |from: std::ops::Bound<&[u8; 32]>, key: &[u8; 32]| {
            let mut end = [0xff; 32];
            end[..16].copy_from_slice(&key[..16]);
            tree.range::<&[u8; 32], _>((from, Included(&end)))
                .next()
                .transpose()
                .map_err(StoreError::from)
        };
        for (key, bytes) in profiles {
            let in_run = run.filter(|(slot, limit)| {
                slot[..16] == key[..16] && *slot <= key && limit.is_none_or(|l| key < l)
            });
            let slot = match in_run {
                Some((slot, _)) => slot,
                None => {
                    let (slot, after) = match self.profile_bucket(&key)? {
                        Some((stored, raw)) => {
                            let stored = bucket_key(&stored)?;
                            let slot = moved.get(&stored).copied().unwrap_or(stored);
                            if let std::collections::btree_map::Entry::Vacant(v) =
                                touched.entry(slot)
                            {
                                v.insert(Bucket::decode(&raw)?);
                            }
                            (slot, next_stored(Excluded(&stored), &key)?)
                        }
                        // No stored bucket at or before `key`: the
                        // workspace's first stored bucket (after `key`), which
                        // `key` now starts, else a new one. (A bucket this
                        // call started holds every later key below the next
                        // stored bucket through `run`: keys ascend.)
                        None => {
                            let (bucket, after) = match next_stored(Included(&key), &key)? {
                                Some((stored, raw)) => {
                                    let stored = bucket_key(&stored)?;
                                    puts.push((stored.to_vec(), None));
                                    moved.insert(stored, key);
                                    let after = next_stored(Excluded(&stored), &key)?;
                                    (Bucket::decode(&raw)?, after)
                                }
                                None => (Bucket::default(), None),
                            };
                            touched.insert(key, bucket);
                            (key, after)
                        }
                    };
                    let limit = after.map(|(k, _)| bucket_key(&k)).transpose()?;
                    run = Some((slot, limit));
                    slot
                }
            };
            if let Some(b) = touched.get_mut(&slot) {
                b.insert(&key[16..], bytes);
            }
        }
        for (key, bucket) in touched {
            let chunks = bucket.into_chunks(PROFILES_PER_BUCKET, PROFILE_BUCKET_BYTES);
            for (i, chunk) in chunks.into_iter().enumerate() {
                let chunk_key = match (i, chunk.first_key()) {
                    (0, _) | (_, None) => key.to_vec(),
                    (_, Some(first)) => [&key[..16], first].concat(),
                };
                puts.push((chunk_key, Some(chunk.encode())));
            }
        }
        Ok(puts)
    }

    /// The writes that take the profile under `key` out of its bucket (and
    /// the bucket, when it was the last). Holds `profile_writer`.
    ///
    /// A bucket is keyed by the ID of the profile that started it. When the
    /// rest does not start with that ID (the profile taken out started the
    /// bucket), the rest moves to the key of its first profile: an erased
    /// visitor's ID stays in no key. No profile lies between the two keys,
    /// so every lookup still finds the bucket that holds its profile.
    fn profile_removal(&self, key: &[u8; 32]) -> StoreResult<Vec<Put>> {
        let Some((stored, rest)) = bucket::without(&self.inner.visitor_profiles, key)? else {
            return Ok(Vec::new());
        };
        let Some(first) = rest.first_key() else {
            return Ok(vec![(stored.to_vec(), None)]);
        };
        let rekeyed = [&key[..16], first].concat();
        if rekeyed[..] == stored[..] {
            return Ok(vec![(stored.to_vec(), Some(rest.encode()))]);
        }
        Ok(vec![
            (stored.to_vec(), None),
            (rekeyed, Some(rest.encode())),
        ])
    }

    /// Writes `profiles` (whole) and consumer `name`'s record, in one
    /// transaction.
    pub fn save_visitors(
        &self,
        name: &str,
        record: &ConsumerRecord,
        profiles: &HashMap<VisitorId, VisitorProfile>,
    ) -> StoreResult<()> {
        let encoded_record = codec::encode(record)?;
        let mut encoded: Vec<([u8; 32], Vec<u8>)> = profiles
            .values()
            .map(|p| Ok((keys::pair(&p.workspace_id, &p.id), codec::encode(p)?)))
            .collect::<StoreResult<_>>()?;
        encoded.sort_unstable_by_key(|(key, _)| *key);
        let t = &self.inner;
        let _one_writer = self.profile_writer();
        let puts = self.profile_puts(encoded)?;
        (&t.visitor_profiles, &t.consumers).transaction(|(visitors, consumers)| -> TxResult {
            for (key, value) in &puts {
                match value {
                    Some(v) => visitors.insert(key.as_slice(), v.as_slice())?,
                    None => visitors.remove(key.as_slice())?,
                };
            }
            consumers.insert(name.as_bytes(), encoded_record.as_slice())?;
            Ok(())
        })?;
        Ok(())
    }

    /// A workspace's visitors, newest first, below `cursor` (a visitor ID),
    /// those for which `keep` is true. Each bucket down is sought afresh
    /// (`bucket::entries_below`), so a checkpoint splitting a bucket beside
    /// the listing moves no profile past it.
    pub fn list_visitors(
        &self,
        ws: &WorkspaceId,
        cursor: Option<&[u8]>,
        limit: usize,
        mut keep: impl FnMut(&VisitorProfile) -> StoreResult<bool>,
    ) -> StoreResult<Page<VisitorProfile>> {
        let mut below = scan::cursor_id(cursor)?.unwrap_or([0xff; 16]);
        let mut failed = false;
        let tree = &self.inner.visitor_profiles;
        let profiles = std::iter::from_fn(move || {
            if failed {
                return None;
            }
            match bucket::entries_below(tree, ws.as_bytes(), &mut below) {
                Ok(found) => found.map(|entries| entries.into_iter().map(Ok).collect()),
                Err(e) => {
                    failed = true;
                    Some(vec![Err(e)])
                }
            }
        })
        .flat_map(|entries: Vec<StoreResult<bucket::Entry>>| entries);
        let candidates = profiles.map(|found| {
            let (id, raw) = found?;
            let profile: VisitorProfile = codec::decode(&raw)?;
            let found = keep(&profile)?.then_some(profile);
            Ok((id, found))
        });
        scan::paginate(candidates, limit, VISITOR_SCAN_BUDGET)
    }

    pub fn visitor_attributes(&self, id: &VisitorId) -> StoreResult<Option<StoredAttributes>> {
        self.inner
            .visitor_attributes
            .get(id.as_bytes())?
            .map(|v| codec::decode(&v))
            .transpose()
    }

    /// Replaces a visitor's attributes with what `merge` makes of the stored
    /// ones (`None` when there are none yet), atomically; when `merge`
    /// answers `None`, nothing is written.
    pub fn update_visitor_attributes(
        &self,
        id: &VisitorId,
        mut merge: impl FnMut(Option<StoredAttributes>) -> Option<StoredAttributes>,
    ) -> StoreResult<Option<StoredAttributes>> {
        let tree = &self.inner.visitor_attributes;
        loop {
            let current = tree.get(id.as_bytes())?;
            let decoded = current
                .as_ref()
                .map(|v| codec::decode::<StoredAttributes>(v))
                .transpose()?;
            let Some(next) = merge(decoded) else {
                return Ok(None);
            };
            let bytes = codec::encode(&next)?;
            let swapped = tree.compare_and_swap(
                id.as_bytes(),
                current.as_ref().map(|v| v.as_ref()),
                Some(bytes),
            )?;
            if swapped.is_ok() {
                return Ok(Some(next));
            }
        }
    }
}

impl Store {
    /// Detaches up to `max_segments` segments' worth of visitor `id`'s
    /// events: each segment holding some is rewritten with their
    /// `visitor_id` cleared, and its visitor index entry removed, in one
    /// transaction per segment. Positions do not move, so the other index
    /// entries into the segment stay right. The visitor's home segments
    /// (no entry: see `store::events`) are rewritten the same way while they
    /// hold an event of it. The forms those events completed keep only
    /// that they were completed: their answers and visitor go in the same
    /// transaction. Answers how many segments it went through (0: none is
    /// left).
    pub fn detach_visitor_step(&self, id: &VisitorId, max_segments: usize) -> StoreResult<usize> {
        // The entries waiting in memory first (`visitor_index.rs`).
        self.settle_visitor_index()?;
        let t = &self.inner;
        // Each entry's key (visitor ++ segment) with the key of the span
        // listing it; `None` for a home, which no span lists.
        let mut entries: Vec<(sled::IVec, Option<sled::IVec>)> = Vec::new();
        for span in t.events_by_visitor.scan_prefix(id.as_bytes()) {
            if entries.len() >= max_segments {
                break;
            }
            let (span_key, value) = span?;
            for (key, _) in super::events::span_segments(&span_key, &value)? {
                entries.push((key, Some(span_key.clone())));
            }
        }
        entries.truncate(max_segments);
        entries.extend(
            self.home_keys(id)?
                .into_iter()
                .map(|h| (sled::IVec::from(&h[..]), None)),
        );
        let mut done_segments = 0;
        for (key, span) in &entries {
            if done_segments == max_segments.max(1) {
                break;
            }
            let home = span.is_none();
            let Some(segment_id) = keys::pair_suffix::<EventKind>(key) else {
                continue;
            };
            // Drops the segment from the span listing it.
            let unlist = |idx: &sled::transaction::TransactionalTree| match span {
                Some(span_key) => {
                    super::events::rewrite_span(idx, span_key, segment_id.as_bytes(), None)
                }
                None => Ok(()),
            };
            // A concurrent rewrite (the Purger) changes the segment under us:
            // read, rewrite and check in the transaction that it is unchanged.
            loop {
                let Some(before) = self.segment(segment_id.as_bytes())? else {
                    if !home {
                        t.events_by_visitor.transaction(|idx| unlist(idx))?;
                        done_segments += 1;
                    }
                    break;
                };
                let seg = Segment::parse(&before.body)?;
                let mut events = seg.events()?;
                if home && !events.iter().any(|e| e.visitor_id == Some(*id)) {
                    // A segment of the same millisecond, not the visitor's.
                    break;
                }
                // Every event of the visitor in the segment, whether the
                // entry's positions list it or not (an older entry may not).
                let mut detached = Vec::new();
                for e in events.iter_mut().filter(|e| e.visitor_id == Some(*id)) {
                    e.visitor_id = None;
                    detached.push(e.id);
                }
                // Durable before its pointer replaces one to durable bytes.
                let after = t.bodies.append_durable(&[&segment::encode(&events)?])?[0].encode();
                let abort = ConflictableTransactionError::Abort;
                let done = (&t.events, &t.events_by_visitor, &t.form_completions).transaction(
                    |(ev, idx, forms)| {
                        if ev.get(segment_id.as_bytes())?.as_ref() != Some(&before.raw) {
                            return Ok(false);
                        }
                        ev.insert(segment_id.as_bytes(), &after[..])?;
                        unlist(idx)?;
                        // A form these scans completed keeps that it was
                        // completed (a second submission is still refused),
                        // not who answered nor what.
                        for scan in &detached {
                            let Some(raw) = forms.get(scan.as_bytes())? else {
                                continue;
                            };
                            let mut c: FormCompletion = codec::decode(&raw).map_err(abort)?;
                            if c.visitor_id == Some(*id) || !c.answers.is_empty() {
                                c.visitor_id = None;
                                c.answers.clear();
                                let bytes = codec::encode(&c).map_err(abort)?;
                                forms.insert(scan.as_bytes(), bytes)?;
                            }
                        }
                        Ok::<_, ConflictableTransactionError<StoreError>>(true)
                    },
                )?;
                if done {
                    done_segments += 1;
                    break;
                }
            }
        }
        Ok(done_segments)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Timestamp;

    #[test]
    fn a_profile_saved_again_stays_listed_once_and_an_erased_one_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 4).unwrap();
        let ws = WorkspaceId::generate();
        let record = |n| ConsumerRecord {
            position: None,
            events: n,
            state: Vec::new(),
        };
        let (a, b) = (VisitorId::generate(), VisitorId::generate());
        let mut profiles = HashMap::new();
        for (i, id) in [a, b].into_iter().enumerate() {
            profiles.insert(
                id,
                VisitorProfile::new(id, ws, Timestamp::from_millis(i as i64)),
            );
        }
        store
            .save_visitors("visitors", &record(1), &profiles)
            .unwrap();
        // The next checkpoint writes `a` again, with more events.
        profiles.remove(&b);
        profiles.get_mut(&a).unwrap().event_count = 7;
        store
            .save_visitors("visitors", &record(2), &profiles)
            .unwrap();
        let listed = |store: &Store| -> Vec<(VisitorId, u64)> {
            store
                .list_visitors(&ws, None, 10, |_| Ok(true))
                .unwrap()
                .items
                .into_iter()
                .map(|p| (p.id, p.event_count))
                .collect()
        };
        assert_eq!(listed(&store), [(b, 0), (a, 7)]);
        // Erased, then saved again by a checkpoint: a new profile, listed.
        store.erase_visitor_records(&a, &ws, None).unwrap();
        assert_eq!(listed(&store), [(b, 0)]);
        store
            .save_visitors("visitors", &record(3), &profiles)
            .unwrap();
        assert_eq!(listed(&store), [(b, 0), (a, 7)]);
    }

    /// Every sled key or value of `store` that holds `needle`: (tree, key).
    fn holding_bytes(store: &Store, needle: &[u8]) -> Vec<(String, Vec<u8>)> {
        let db = &store.inner.db;
        let mut out = Vec::new();
        for name in db.tree_names() {
            let tree = db.open_tree(&name).unwrap();
            for entry in tree.iter() {
                let (k, v) = entry.unwrap();
                let has = |b: &[u8]| b.windows(needle.len()).any(|w| w == needle);
                if has(&k) || has(&v) {
                    out.push((String::from_utf8_lossy(&name).into_owned(), k.to_vec()));
                }
            }
        }
        out
    }

    #[test]
    fn an_erased_visitor_that_started_its_bucket_leaves_no_byte_in_any_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 4).unwrap();
        let ws = WorkspaceId::generate();
        let record = ConsumerRecord {
            position: None,
            events: 1,
            state: Vec::new(),
        };
        let (a, b, c) = (
            VisitorId::generate(),
            VisitorId::generate(),
            VisitorId::generate(),
        );
        let save = |ids: &[VisitorId]| {
            let profiles: HashMap<VisitorId, VisitorProfile> = ids
                .iter()
                .map(|id| (*id, VisitorProfile::new(*id, ws, Timestamp::from_millis(1))))
                .collect();
            store.save_visitors("visitors", &record, &profiles).unwrap();
        };
        // `a` starts the workspace's bucket; `b` and `c` join it later.
        save(&[a]);
        save(&[b, c]);
        store.erase_visitor_records(&a, &ws, None).unwrap();
        assert_eq!(holding_bytes(&store, a.as_bytes()), Vec::new());
        let listed: Vec<VisitorId> = store
            .list_visitors(&ws, None, 10, |_| Ok(true))
            .unwrap()
            .items
            .into_iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(listed, [c, b]);
        assert!(store.visitor(&ws, &b).unwrap().is_some());
        // The bucket, now keyed by `b`, takes new profiles as before.
        let d = VisitorId::generate();
        save(&[d]);
        assert!(store.visitor(&ws, &d).unwrap().is_some());
        // Erasing the rest empties the workspace.
        for v in [b, c, d] {
            store.erase_visitor_records(&v, &ws, None).unwrap();
            assert_eq!(holding_bytes(&store, v.as_bytes()), Vec::new());
        }
        assert!(
            store
                .list_visitors(&ws, None, 10, |_| Ok(true))
                .unwrap()
                .items
                .is_empty()
        );
    }

    #[test]
    fn profiles_of_the_former_layout_move_to_their_workspace_keys_and_its_extra_trees_go() {
        let dir = tempfile::tempdir().unwrap();
        let (ws1, ws2) = (WorkspaceId::generate(), WorkspaceId::generate());
        let profile = |ws, i: i64| {
            let mut p = VisitorProfile::new(VisitorId::generate(), ws, Timestamp::from_millis(i));
            p.event_count = i as u64;
            p
        };
        let (a, b, c) = (profile(ws1, 1), profile(ws1, 2), profile(ws2, 3));
        {
            let store = Store::open(dir.path(), 4).unwrap();
            let db = &store.inner.db;
            let former = db.open_tree(FORMER_PROFILES).unwrap();
            let by_ws = db.open_tree(FORMER_BY_WORKSPACE).unwrap();
            let reverse = db.open_tree(FORMER_FINGERPRINTS).unwrap();
            for p in [&a, &b, &c] {
                reverse.insert(p.id.as_bytes(), &[7u8; 32][..]).unwrap();
                former
                    .insert(p.id.as_bytes(), codec::encode(p).unwrap())
                    .unwrap();
                by_ws
                    .insert(keys::pair(&p.workspace_id, &p.id), &[][..])
                    .unwrap();
            }
            // A move cut short by a crash: one profile already moved.
            db.open_tree(KEYED_PROFILES)
                .unwrap()
                .insert(keys::pair(&ws1, &a.id), codec::encode(&a).unwrap())
                .unwrap();
            store.flush().unwrap();
        }
        let store = Store::open(dir.path(), 4).unwrap();
        let listed = |ws: &WorkspaceId| -> Vec<(VisitorId, u64)> {
            store
                .list_visitors(ws, None, 10, |_| Ok(true))
                .unwrap()
                .items
                .into_iter()
                .map(|p| (p.id, p.event_count))
                .collect()
        };
        assert_eq!(listed(&ws1), [(b.id, 2), (a.id, 1)]);
        assert_eq!(listed(&ws2), [(c.id, 3)]);
        assert_eq!(store.visitor(&ws2, &c.id).unwrap(), Some(c.clone()));
        // A profile is found only under its own workspace.
        assert_eq!(store.visitor(&ws1, &c.id).unwrap(), None);
        let names = store.inner.db.tree_names();
        for former in [
            FORMER_PROFILES,
            FORMER_BY_WORKSPACE,
            FORMER_FINGERPRINTS,
            KEYED_PROFILES,
        ] {
            assert!(
                !names.iter().any(|n| n == former.as_bytes()),
                "{former} dropped"
            );
        }
        drop(store);
        // Opened again: nothing left to move, nothing lost.
        let store = Store::open(dir.path(), 4).unwrap();
        assert_eq!(store.visitor(&ws1, &b.id).unwrap(), Some(b));
    }

    fn record(n: u64) -> ConsumerRecord {
        ConsumerRecord {
            position: None,
            events: n,
            state: Vec::new(),
        }
    }

    /// A profile first seen at millisecond `ms`, with `links` distinct links
    /// (a larger profile).
    fn profile_at(ws: WorkspaceId, ms: i64, links: usize) -> VisitorProfile {
        let mut p = VisitorProfile::new(VisitorId::generate_at(ms), ws, Timestamp::from_millis(ms));
        for _ in 0..links {
            p.links
                .insert(u64::from_be_bytes(crate::random::bytes::<8>()));
        }
        p.event_count = ms as u64;
        p
    }

    /// Profiles by ID.
    fn by_id(profiles: impl Iterator<Item = VisitorProfile>) -> HashMap<VisitorId, VisitorProfile> {
        profiles.map(|p| (p.id, p)).collect()
    }

    /// The stored buckets, in key order.
    fn stored_buckets(store: &Store) -> Vec<(sled::IVec, Bucket)> {
        store
            .inner
            .visitor_profiles
            .iter()
            .map(|e| e.unwrap())
            .map(|(k, raw)| (k, Bucket::decode(&raw).unwrap()))
            .collect()
    }

    fn listed_in_pages(store: &Store, ws: &WorkspaceId, page: usize) -> Vec<VisitorProfile> {
        let mut out = Vec::new();
        let mut cursor: Option<Vec<u8>> = None;
        loop {
            let found = store
                .list_visitors(ws, cursor.as_deref(), page, |_| Ok(true))
                .unwrap();
            out.extend(found.items);
            match found.next_cursor {
                Some(c) => cursor = Some(c),
                None => return out,
            }
        }
    }

    fn newest_first(
        profiles: &HashMap<VisitorId, VisitorProfile>,
        ws: &WorkspaceId,
    ) -> Vec<VisitorProfile> {
        let mut all: Vec<VisitorProfile> = profiles
            .values()
            .filter(|p| p.workspace_id == *ws)
            .cloned()
            .collect();
        all.sort_by_key(|p| std::cmp::Reverse(p.id));
        all
    }

    fn buckets_of(store: &Store, ws: &WorkspaceId) -> usize {
        store
            .inner
            .visitor_profiles
            .scan_prefix(ws.as_bytes())
            .count()
    }

    #[test]
    fn profiles_in_buckets_are_found_listed_updated_and_erased_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 4).unwrap();
        let (ws1, ws2) = (WorkspaceId::generate(), WorkspaceId::generate());
        let mut all: HashMap<VisitorId, VisitorProfile> = HashMap::new();
        // A first checkpoint: 50 new visitors in one workspace, 20 in another.
        let mut batch = HashMap::new();
        for i in 0..70 {
            let ws = if i < 50 { ws1 } else { ws2 };
            let p = profile_at(ws, 1_000_000 + i, 0);
            batch.insert(p.id, p);
        }
        store.save_visitors("visitors", &record(1), &batch).unwrap();
        all.extend(batch);
        assert_eq!(
            buckets_of(&store, &ws1),
            4,
            "50 new profiles fill 16, 16, 16, 2"
        );
        assert_eq!(buckets_of(&store, &ws2), 2);
        // The next: some return (in several buckets), more are new, and
        // two were first seen before every stored one of ws1.
        let mut batch = HashMap::new();
        let returning: Vec<VisitorId> = all
            .values()
            .filter(|p| p.workspace_id == ws1)
            .map(|p| p.id)
            .step_by(7)
            .collect();
        for id in &returning {
            let mut p = all[id].clone();
            p.event_count += 100;
            batch.insert(p.id, p);
        }
        for ms in [10, 20] {
            let p = profile_at(ws1, ms, 0);
            batch.insert(p.id, p);
        }
        for i in 0..30 {
            let p = profile_at(ws1, 2_000_000 + i, 0);
            batch.insert(p.id, p);
        }
        store.save_visitors("visitors", &record(2), &batch).unwrap();
        all.extend(batch);
        for p in all.values() {
            assert_eq!(
                store.visitor(&p.workspace_id, &p.id).unwrap().as_ref(),
                Some(p)
            );
            let other = if p.workspace_id == ws1 { ws2 } else { ws1 };
            assert_eq!(
                store.visitor(&other, &p.id).unwrap(),
                None,
                "only in its workspace"
            );
        }
        for ws in [ws1, ws2] {
            for page in [1, 7, 16, 100] {
                assert_eq!(listed_in_pages(&store, &ws, page), newest_first(&all, &ws));
            }
        }
        // Every bucket holds at most 16, from its key to before the next's.
        let buckets = stored_buckets(&store);
        for (i, (key, b)) in buckets.iter().enumerate() {
            assert!(!b.is_empty() && b.len() <= PROFILES_PER_BUCKET);
            assert_eq!(b.first_key().unwrap(), &key[16..]);
            if let Some((next, _)) = buckets.get(i + 1).filter(|(n, _)| n[..16] == key[..16]) {
                let last = b.entries_for_test().last().unwrap().0.clone();
                assert!(
                    last.as_slice() < &next[16..],
                    "bucket {i} reaches into the next"
                );
            }
        }
        // Erased from the first, a middle and the last bucket: gone, the
        // others stay; a bucket emptied goes.
        let order = newest_first(&all, &ws1);
        for p in [&order[0], &order[order.len() / 2], &order[order.len() - 1]] {
            store.erase_visitor_records(&p.id, &ws1, None).unwrap();
            all.remove(&p.id);
            assert_eq!(store.visitor(&ws1, &p.id).unwrap(), None);
        }
        assert_eq!(listed_in_pages(&store, &ws1, 9), newest_first(&all, &ws1));
        let ws2_ids: Vec<VisitorId> = newest_first(&all, &ws2).iter().map(|p| p.id).collect();
        for id in &ws2_ids {
            store.erase_visitor_records(id, &ws2, None).unwrap();
        }
        assert_eq!(buckets_of(&store, &ws2), 0);
        assert!(listed_in_pages(&store, &ws2, 5).is_empty());
        // Reopened, everything reads the same.
        drop(store);
        let store = Store::open(dir.path(), 4).unwrap();
        assert_eq!(listed_in_pages(&store, &ws1, 13), newest_first(&all, &ws1));
    }

    #[test]
    fn a_bucket_of_large_profiles_splits_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 4).unwrap();
        let ws = WorkspaceId::generate();
        // Each profile well over a kilobyte: a few to a bucket.
        let batch = by_id((0..10).map(|i| profile_at(ws, 5_000 + i, 100)));
        store.save_visitors("visitors", &record(1), &batch).unwrap();
        let buckets = buckets_of(&store, &ws);
        assert!(buckets >= 3, "{buckets} buckets");
        for (_, b) in stored_buckets(&store) {
            assert!(b.len() == 1 || b.size() <= PROFILE_BUCKET_BYTES);
        }
        assert_eq!(listed_in_pages(&store, &ws, 4), newest_first(&batch, &ws));
    }

    #[test]
    fn keyed_profiles_move_into_buckets_per_workspace() {
        let dir = tempfile::tempdir().unwrap();
        let (ws1, ws2) = (WorkspaceId::generate(), WorkspaceId::generate());
        // More than one pass of the move's batches in the first workspace.
        let profiles =
            by_id((0..2_540).map(|i| profile_at(if i < 2_537 { ws1 } else { ws2 }, 100 + i, 0)));
        {
            let store = Store::open(dir.path(), 4).unwrap();
            let keyed = store.inner.db.open_tree(KEYED_PROFILES).unwrap();
            for p in profiles.values() {
                keyed
                    .insert(
                        keys::pair(&p.workspace_id, &p.id),
                        codec::encode(p).unwrap(),
                    )
                    .unwrap();
            }
            store.flush().unwrap();
        }
        let store = Store::open(dir.path(), 4).unwrap();
        assert_eq!(buckets_of(&store, &ws1), 2_537_usize.div_ceil(16));
        assert_eq!(buckets_of(&store, &ws2), 1);
        for ws in [ws1, ws2] {
            assert_eq!(
                listed_in_pages(&store, &ws, 100),
                newest_first(&profiles, &ws)
            );
        }
        for p in profiles.values() {
            assert_eq!(
                store.visitor(&p.workspace_id, &p.id).unwrap().as_ref(),
                Some(p)
            );
        }
        assert!(!layout::has_tree(&store.inner.db, KEYED_PROFILES));
    }

    #[test]
    fn listings_beside_checkpoints_that_split_buckets_miss_and_repeat_no_profile() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 4).unwrap();
        let ws = WorkspaceId::generate();
        let old = by_id((0..64).map(|i| profile_at(ws, 1_000 + i, 0)));
        store.save_visitors("visitors", &record(1), &old).unwrap();
        let wanted: Vec<VisitorId> = newest_first(&old, &ws).iter().map(|p| p.id).collect();
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            // Checkpoints beside the listings: profiles of the stored buckets
            // grow past a bucket's bytes (splitting it), and new ones come.
            scope.spawn(|| {
                let mut grown = old.clone();
                for round in 0..40_i64 {
                    let mut batch = HashMap::new();
                    for p in grown
                        .values_mut()
                        .filter(|p| p.id.as_bytes()[15] % 5 == (round % 5) as u8)
                    {
                        for _ in 0..20 {
                            p.links
                                .insert(u64::from_be_bytes(crate::random::bytes::<8>()));
                        }
                        batch.insert(p.id, p.clone());
                    }
                    let new = profile_at(ws, 2_000 + round, 0);
                    batch.insert(new.id, new);
                    store.save_visitors("visitors", &record(2), &batch).unwrap();
                }
                done.store(true, std::sync::atomic::Ordering::Release);
            });
            let mut listings = 0;
            while !done.load(std::sync::atomic::Ordering::Acquire) || listings < 5 {
                let listed: Vec<VisitorId> = listed_in_pages(&store, &ws, 7)
                    .into_iter()
                    .map(|p| p.id)
                    .filter(|id| old.contains_key(id))
                    .collect();
                assert_eq!(listed, wanted, "listing {listings}");
                listings += 1;
            }
        });
        assert!(store.inner.visitor_profiles.len() > 5, "the buckets split");
    }
}
