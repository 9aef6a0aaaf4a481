//! Visitors as stored beside their events: profiles (written by the
//! Visitors worker), attributes (by `identify`), the listings, and erasure.
//! Which visitor a device's fingerprint belongs to is `registry.rs`.

use std::collections::HashMap;

use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use super::codec::{self, Record};
use super::scan::{self, Page};
use super::segment::{self, Segment};
use super::{ConsumerRecord, Store, StoreError, StoreResult, keys, layout};
use crate::domain::ScanEvent;
use crate::domain::visitor::VisitorProfile;
use crate::enrich::fingerprint::Fingerprint;
use crate::ids::{EventKind, VisitorId, WorkspaceId};

/// The tree of visitor profiles, keyed `workspace ID ++ visitor ID`, so a
/// workspace's visitors are one key range and a profile is one key.
pub(super) const PROFILES_TREE: &str = "visitor_profiles";
/// The trees of the former layout: profiles keyed by visitor ID alone, and
/// beside them an index of each workspace's visitors (a second key per
/// visitor, written with its first profile).
const FORMER_PROFILES: &str = "visitors";
const FORMER_BY_WORKSPACE: &str = "visitors_by_workspace";
/// The former map of each visitor back to its registry key (a second key
/// per new visitor, in the Recorder's transaction); erasure now finds the
/// entry in the registry itself.
const FORMER_FINGERPRINTS: &str = "visitor_fingerprints";
/// Moves the profiles a store of the former layout holds into `profiles`
/// and drops the former trees (`layout`); answers how many moved.
pub(super) fn move_profiles_of_former_layout(
    db: &sled::Db,
    profiles: &sled::Tree,
) -> StoreResult<usize> {
    let moved = if layout::has_tree(db, FORMER_PROFILES) {
        let former = db.open_tree(FORMER_PROFILES)?;
        layout::write_in_batches(
            profiles,
            former.iter().map(|entry| {
                let (_, value) = entry?;
                let p: VisitorProfile = codec::decode(&value)?;
                Ok((
                    keys::pair(&p.workspace_id, &p.id).to_vec().into(),
                    Some(value),
                ))
            }),
        )?
    } else {
        0
    };
    layout::drop_trees(
        db,
        &[FORMER_PROFILES, FORMER_BY_WORKSPACE, FORMER_FINGERPRINTS],
    )?;
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
        let removed = (
            &t.visitor_profiles,
            &t.visitor_attributes,
            &t.registry_batches,
        )
            .transaction(|(profiles, attributes, registry)| {
                profiles.remove(&keys::pair(ws, id)[..])?;
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

impl Store {
    /// The stored profile of visitor `id` of workspace `ws`.
    pub fn visitor(&self, ws: &WorkspaceId, id: &VisitorId) -> StoreResult<Option<VisitorProfile>> {
        self.inner
            .visitor_profiles
            .get(keys::pair(ws, id))?
            .map(|v| codec::decode(&v))
            .transpose()
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
        let encoded: Vec<(&VisitorProfile, Vec<u8>)> = profiles
            .values()
            .map(|p| Ok((p, codec::encode(p)?)))
            .collect::<StoreResult<_>>()?;
        let t = &self.inner;
        (&t.visitor_profiles, &t.consumers).transaction(|(visitors, consumers)| -> TxResult {
            for (p, bytes) in &encoded {
                visitors.insert(&keys::pair(&p.workspace_id, &p.id)[..], bytes.as_slice())?;
            }
            consumers.insert(name.as_bytes(), encoded_record.as_slice())?;
            Ok(())
        })?;
        Ok(())
    }

    /// A workspace's visitors, newest first, below `cursor` (a visitor ID),
    /// those for which `keep` is true.
    pub fn list_visitors(
        &self,
        ws: &WorkspaceId,
        cursor: Option<&[u8]>,
        limit: usize,
        mut keep: impl FnMut(&VisitorProfile) -> StoreResult<bool>,
    ) -> StoreResult<Page<VisitorProfile>> {
        let below = scan::cursor_id(cursor)?.unwrap_or([0xff; 16]);
        let (start, end) = (keys::pair_raw(ws, &[0; 16]), keys::pair_raw(ws, &below));
        let candidates = self
            .inner
            .visitor_profiles
            .range(start..end)
            .rev()
            .map(|entry| {
                let (key, value) = entry?;
                let profile: VisitorProfile = codec::decode(&value)?;
                let found = keep(&profile)?.then_some(profile);
                Ok((key[16..].to_vec(), found))
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
    /// hold an event of it. Answers how many segments it went through (0:
    /// none is left).
    pub fn detach_visitor_step(&self, id: &VisitorId, max_segments: usize) -> StoreResult<usize> {
        let t = &self.inner;
        let mut entries: Vec<(sled::IVec, sled::IVec)> = t
            .events_by_visitor
            .scan_prefix(id.as_bytes())
            .take(max_segments)
            .collect::<Result<_, _>>()?;
        let indexed = entries.len();
        entries.extend(
            self.home_keys(id)?
                .into_iter()
                .map(super::events::home_entry),
        );
        let mut done_segments = 0;
        for (n, (key, positions)) in entries.iter().enumerate() {
            if done_segments == max_segments.max(1) {
                break;
            }
            let home = n >= indexed;
            let Some(segment_id) = keys::pair_suffix::<EventKind>(key) else {
                continue;
            };
            // A concurrent rewrite (the Purger) changes the segment under us:
            // read, rewrite and check in the transaction that it is unchanged.
            loop {
                let Some(before) = self.segment(segment_id.as_bytes())? else {
                    if !home {
                        t.events_by_visitor.remove(key)?;
                        done_segments += 1;
                    }
                    break;
                };
                let seg = Segment::parse(&before.body)?;
                let mut events: Vec<ScanEvent> = (0..seg.len())
                    .map(|i| seg.event(i))
                    .collect::<StoreResult<_>>()?;
                if home && !events.iter().any(|e| e.visitor_id == Some(*id)) {
                    // A segment of the same millisecond, not the visitor's.
                    break;
                }
                for pos in segment::decode_positions(positions) {
                    if let Some(e) = events.get_mut(pos)
                        && e.visitor_id == Some(*id)
                    {
                        e.visitor_id = None;
                    }
                }
                for e in events.iter_mut().filter(|e| e.visitor_id == Some(*id)) {
                    // Positions an older index entry no longer lists.
                    e.visitor_id = None;
                }
                // Durable before its pointer replaces one to durable bytes.
                let after = t.bodies.append_durable(&[&segment::encode(&events)?])?[0].encode();
                let done = (&t.events, &t.events_by_visitor).transaction(|(ev, idx)| {
                    if ev.get(segment_id.as_bytes())?.as_ref() != Some(&before.raw) {
                        return Ok(false);
                    }
                    ev.insert(segment_id.as_bytes(), &after[..])?;
                    idx.remove(key)?;
                    Ok::<_, ConflictableTransactionError<StoreError>>(true)
                })?;
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
            store
                .inner
                .visitor_profiles
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
        for former in [FORMER_PROFILES, FORMER_BY_WORKSPACE, FORMER_FINGERPRINTS] {
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
}
