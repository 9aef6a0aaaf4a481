//! The visitor registry: which visitor a fingerprint belongs to, per
//! workspace. An entry is written in the same transaction as the first event
//! of its visitor (`Store::commit_scans_with`), so after any crash a stored
//! event's visitor is always the one its device maps to.

use std::collections::HashMap;

use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use super::codec::{self, Record};
use super::scan::{self, Page};
use super::segment::{self, Segment};
use super::{ConsumerRecord, Store, StoreError, StoreResult, keys};
use crate::domain::ScanEvent;
use crate::domain::visitor::VisitorProfile;
use crate::enrich::fingerprint::Fingerprint;
use crate::ids::{EventKind, VisitorId, VisitorKind, WorkspaceId};

/// A visitor first seen in a batch: its registry entry to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewVisitor {
    pub workspace_id: WorkspaceId,
    pub fingerprint: Fingerprint,
    pub visitor_id: VisitorId,
}

/// `workspace (16) ++ fingerprint (16)`; also the value of the reverse entry.
pub fn registry_key(ws: &WorkspaceId, fp: &Fingerprint) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(ws.as_bytes());
    key[16..].copy_from_slice(fp);
    key
}

impl Store {
    /// The registry key of visitor `id` (for erasure), if it has one.
    pub fn visitor_fingerprint(
        &self,
        id: &VisitorId,
    ) -> StoreResult<Option<(WorkspaceId, Fingerprint)>> {
        let Some(v) = self.inner.visitor_fingerprints.get(id.as_bytes())? else {
            return Ok(None);
        };
        let ws = v.get(..16).and_then(WorkspaceId::from_slice);
        let fp: Option<Fingerprint> = v.get(16..32).and_then(|b| b.try_into().ok());
        Ok(ws.zip(fp))
    }

    /// Removes the registry entry of visitor `id` (the reverse entry stays
    /// until `erase_visitor_records`, so an interrupted erasure can redo it).
    pub fn forget_fingerprint(&self, id: &VisitorId) -> StoreResult<()> {
        if let Some((ws, fp)) = self.visitor_fingerprint(id)? {
            let key = registry_key(&ws, &fp);
            // Only if it still maps to this visitor.
            self.inner
                .visitor_registry
                .compare_and_swap(key, Some(&id.as_bytes()[..]), None as Option<&[u8]>)?
                .ok();
        }
        Ok(())
    }

    /// Deletes what is stored of visitor `id` beside its events: profile,
    /// workspace index entry, attributes and registry entries, in one
    /// transaction.
    pub fn erase_visitor_records(&self, id: &VisitorId, ws: &WorkspaceId) -> StoreResult<()> {
        let registry = self.visitor_fingerprint(id)?;
        let t = &self.inner;
        (
            &t.visitors,
            &t.visitors_by_workspace,
            &t.visitor_attributes,
            &t.visitor_registry,
            &t.visitor_fingerprints,
        )
            .transaction(|(visitors, by_ws, attributes, reg, reverse)| -> TxResult {
                visitors.remove(&id.as_bytes()[..])?;
                by_ws.remove(&keys::pair(ws, id)[..])?;
                attributes.remove(&id.as_bytes()[..])?;
                if let Some((ws, fp)) = &registry {
                    let key = registry_key(ws, fp);
                    if reg.get(key)?.as_deref() == Some(&id.as_bytes()[..]) {
                        reg.remove(&key[..])?;
                    }
                }
                reverse.remove(&id.as_bytes()[..])?;
                Ok(())
            })?;
        Ok(())
    }

    /// Calls `f` with the key of every registry entry (`registry_key`),
    /// in key order.
    pub fn for_each_registry_key(&self, mut f: impl FnMut(&[u8])) -> StoreResult<()> {
        for key in self.inner.visitor_registry.iter().keys() {
            f(&key?);
        }
        Ok(())
    }

    /// The visitor fingerprint `fp` belongs to in `ws`, if any.
    pub fn visitor_of(&self, ws: &WorkspaceId, fp: &Fingerprint) -> StoreResult<Option<VisitorId>> {
        Ok(self
            .inner
            .visitor_registry
            .get(registry_key(ws, fp))?
            .and_then(|v| VisitorId::from_slice(&v)))
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
    pub fn visitor(&self, id: &VisitorId) -> StoreResult<Option<VisitorProfile>> {
        self.inner
            .visitors
            .get(id.as_bytes())?
            .map(|v| codec::decode(&v))
            .transpose()
    }

    /// Writes `profiles` (whole), the workspace index entries of those not
    /// stored before, and consumer `name`'s record, in one transaction.
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
        (&t.visitors, &t.visitors_by_workspace, &t.consumers).transaction(
            |(visitors, by_ws, consumers)| -> TxResult {
                for (p, bytes) in &encoded {
                    // A profile and its workspace entry are written and
                    // removed together: a stored profile has its entry.
                    if visitors
                        .insert(&p.id.as_bytes()[..], bytes.as_slice())?
                        .is_none()
                    {
                        by_ws.insert(&keys::pair(&p.workspace_id, &p.id)[..], &[][..])?;
                    }
                }
                consumers.insert(name.as_bytes(), encoded_record.as_slice())?;
                Ok(())
            },
        )?;
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
            .visitors_by_workspace
            .range(start..end)
            .rev()
            .map(|entry| {
                let (key, _) = entry?;
                let found = match keys::pair_suffix::<VisitorKind>(&key) {
                    Some(id) => match self.visitor(&id)? {
                        Some(p) if keep(&p)? => Some(p),
                        _ => None,
                    },
                    None => None,
                };
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
    /// entries into the segment stay right. Answers how many segments it
    /// rewrote (0: none is left).
    pub fn detach_visitor_step(&self, id: &VisitorId, max_segments: usize) -> StoreResult<usize> {
        let t = &self.inner;
        let entries: Vec<(sled::IVec, sled::IVec)> = t
            .events_by_visitor
            .scan_prefix(id.as_bytes())
            .take(max_segments)
            .collect::<Result<_, _>>()?;
        for (key, positions) in &entries {
            let Some(segment_id) = keys::pair_suffix::<EventKind>(key) else {
                continue;
            };
            // A concurrent rewrite (the Purger) changes the segment under us:
            // read, rewrite and check in the transaction that it is unchanged.
            loop {
                let Some(before) = self.segment(segment_id.as_bytes())? else {
                    t.events_by_visitor.remove(key)?;
                    break;
                };
                let seg = Segment::parse(&before.body)?;
                let mut events: Vec<ScanEvent> = (0..seg.len())
                    .map(|i| seg.event(i))
                    .collect::<StoreResult<_>>()?;
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
                    break;
                }
            }
        }
        Ok(entries.len())
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
        store.erase_visitor_records(&a, &ws).unwrap();
        assert_eq!(listed(&store), [(b, 0)]);
        store
            .save_visitors("visitors", &record(3), &profiles)
            .unwrap();
        assert_eq!(listed(&store), [(b, 0), (a, 7)]);
    }
}
