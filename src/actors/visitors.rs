//! The Visitors worker: visitor profiles (first and last scan, scans,
//! distinct links, countries, devices, days with a scan) derived from
//! committed events, as a consumer (`actors::consumer`). Like the Counters
//! worker it folds into pending profiles in memory and, at each checkpoint,
//! writes them whole with its position in one transaction, so a stored
//! profile always equals a recount of its events up to that position.
//!
//! Which visitor a scan belongs to is decided on the redirect path by the
//! registry (`actors::registry`); this worker only describes visitors.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};

use super::consumer::{Consumer, ConsumerStarter, ConsumerWorker};
use crate::config::ConsumerSettings;
use crate::domain::ScanEvent;
use crate::domain::Timestamp;
use crate::domain::visitor::VisitorProfile;
use crate::ids::{VisitorId, WorkspaceId};
use crate::store::{ConsumerRecord, Store, StoreResult};

/// Profiles as readers see them: stored, or pending when newer.
pub struct VisitorView {
    store: Store,
    pending: RwLock<HashMap<VisitorId, VisitorProfile>>,
    /// Visitors erased since start: events still carrying them (until their
    /// segments are rewritten) are not folded.
    erased: RwLock<HashSet<VisitorId>>,
}

impl VisitorView {
    pub fn new(store: Store) -> Arc<VisitorView> {
        Arc::new(VisitorView {
            store,
            pending: RwLock::default(),
            erased: RwLock::default(),
        })
    }

    /// The worker drops visitor `id` and never folds it again; the caller
    /// then deletes its records.
    pub fn erase(&self, id: &VisitorId) {
        let mut pending = self.pending.write().unwrap_or_else(PoisonError::into_inner);
        pending.remove(id);
        self.erased
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(*id);
    }

    /// The profile of visitor `id` of workspace `ws` (none for a visitor of
    /// another workspace).
    pub fn profile(&self, ws: &WorkspaceId, id: &VisitorId) -> StoreResult<Option<VisitorProfile>> {
        let pending = self.pending.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = pending.get(id) {
            return Ok((p.workspace_id == *ws).then(|| p.clone()));
        }
        self.store.visitor(ws, id)
    }
}

pub struct Visitors {
    view: Arc<VisitorView>,
    /// Per workspace, an ID at or above every stored profile's (`None`: no
    /// profile stored), read from the store at the workspace's first lookup
    /// and raised before each checkpoint writes. A visitor above it has no
    /// stored profile, so its lookup needs no read: a worker catching up
    /// meets mostly visitors newer than any it stored (IDs grow with time),
    /// and a read that finds nothing still seeks a bucket. This worker is
    /// the only writer of new profiles (erasure only removes them).
    stored_up_to: HashMap<WorkspaceId, Option<VisitorId>>,
}

impl Visitors {
    pub fn new(view: Arc<VisitorView>) -> Visitors {
        Visitors {
            view,
            stored_up_to: HashMap::new(),
        }
    }

    pub fn starter(view: Arc<VisitorView>, settings: ConsumerSettings) -> ConsumerStarter {
        ConsumerWorker::starter(Visitors::new(view), settings)
    }

    /// Whether visitor `v` of `ws` is above every stored profile's ID (so
    /// has none). `false` when the store cannot tell.
    fn above_stored(&mut self, ws: &WorkspaceId, v: &VisitorId) -> bool {
        let mark = match self.stored_up_to.entry(*ws) {
            Entry::Occupied(o) => *o.get(),
            Entry::Vacant(slot) => match self.view.store.largest_stored_visitor(ws) {
                Ok(mark) => *slot.insert(mark),
                Err(err) => {
                    tracing::error!(error = %err, workspace = %ws, "cannot read the largest stored visitor");
                    return false;
                }
            },
        };
        mark.is_none_or(|m| *v > m)
    }

    /// Folds `events` into the pending profiles; a visitor in `new` has no
    /// stored profile to start from.
    fn fold(&mut self, events: &[ScanEvent], new: &HashSet<&VisitorId>) {
        let view = self.view.clone();
        let mut pending = view.pending.write().unwrap_or_else(PoisonError::into_inner);
        let erased = view.erased.read().unwrap_or_else(PoisonError::into_inner);
        for e in events {
            let Some(v) = e.visitor_id.filter(|v| !erased.contains(v)) else {
                continue;
            };
            let profile = match pending.entry(v) {
                Entry::Occupied(o) => o.into_mut(),
                Entry::Vacant(slot) => {
                    let stored = if new.contains(&v) || self.above_stored(&e.workspace_id, &v) {
                        None
                    } else {
                        view.store.visitor(&e.workspace_id, &v).unwrap_or_else(|err| {
                            // Unreadable: start over from this event rather than stall.
                            tracing::error!(error = %err, visitor = %v, "cannot read a visitor profile");
                            None
                        })
                    };
                    slot.insert(stored.unwrap_or_else(|| {
                        VisitorProfile::new(
                            v,
                            e.workspace_id,
                            Timestamp::from_millis(e.timestamp_ms()),
                        )
                    }))
                }
            };
            profile.add_event(e);
        }
    }
}

impl Consumer for Visitors {
    const NAME: &'static str = "visitors";
    type State = ();

    fn apply(&mut self, _: &mut (), events: &[ScanEvent]) {
        self.fold(events, &HashSet::new());
    }

    /// A batch's new visitors have no stored profile: nothing folded before
    /// carried them, so their profiles start here without a store read
    /// (most visitors of a printed code's crowd scan once).
    fn apply_committed(&mut self, _: &mut (), events: &[ScanEvent], new_visitors: &[VisitorId]) {
        self.fold(events, &new_visitors.iter().collect());
    }

    fn persist(&mut self, store: &Store, record: &ConsumerRecord) -> StoreResult<()> {
        let mut pending = self
            .view
            .pending
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        // Raised before the write: a mark is only ever too high, which
        // costs a read, never too low, which would lose a profile.
        for p in pending.values() {
            if let Some(mark) = self.stored_up_to.get_mut(&p.workspace_id) {
                *mark = (*mark).max(Some(p.id));
            }
        }
        store.save_visitors(Self::NAME, record, &pending)?;
        pending.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{EventId, LinkId};

    /// A scan of visitor `v` in workspace `ws`.
    fn scan_of(ws: WorkspaceId, v: VisitorId) -> ScanEvent {
        ScanEvent {
            visitor_id: Some(v),
            ..ScanEvent::sample(EventId::generate(), ws, LinkId::generate())
        }
    }

    /// A consumer record after `events` events.
    fn record(events: u64) -> ConsumerRecord {
        ConsumerRecord {
            position: None,
            events,
            state: Vec::new(),
        }
    }

    #[test]
    fn a_new_visitor_starts_without_a_read_and_its_next_batch_continues_its_stored_profile() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8).unwrap();
        let view = VisitorView::new(store.clone());
        let mut worker = Visitors::new(view.clone());
        let (ws, v) = (WorkspaceId::generate(), VisitorId::generate());
        let scan = || scan_of(ws, v);
        // Its first batch: new, two scans.
        worker.apply_committed(&mut (), &[scan(), scan()], &[v]);
        worker.persist(&store, &record(2)).unwrap();
        assert_eq!(store.visitor(&ws, &v).unwrap().unwrap().event_count, 2);
        // A later batch (not new there), and events read from the store:
        // both start from the stored profile.
        worker.apply_committed(&mut (), &[scan()], &[]);
        worker.persist(&store, &record(3)).unwrap();
        worker.apply(&mut (), &[scan()]);
        worker.persist(&store, &record(4)).unwrap();
        let profile = view.profile(&ws, &v).unwrap().unwrap();
        assert_eq!(profile.event_count, 4);
    }

    #[test]
    fn a_worker_catching_up_reads_only_the_visitors_at_or_below_the_largest_it_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8).unwrap();
        let (ws, other_ws) = (WorkspaceId::generate(), WorkspaceId::generate());
        let mut ids: Vec<VisitorId> = (0..4).map(|_| VisitorId::generate()).collect();
        ids.sort();
        let [low, mid, high, highest] = [ids[0], ids[1], ids[2], ids[3]];
        let elsewhere_visitor = VisitorId::generate();
        let scan = scan_of;
        let count = |v: &VisitorId| store.visitor(&ws, v).unwrap().map(|p| p.event_count);
        // An earlier run stored `mid` (two scans); `low` is never stored.
        let mut before = Visitors::new(VisitorView::new(store.clone()));
        before.apply_committed(&mut (), &[scan(ws, mid), scan(ws, mid)], &[mid]);
        before.persist(&store, &record(2)).unwrap();
        assert_eq!(store.largest_stored_visitor(&ws).unwrap(), Some(mid));
        assert_eq!(store.largest_stored_visitor(&other_ws).unwrap(), None);

        // A new worker catching up (events read from the store: nothing
        // says who is new) reads `mid` and continues it; `low` is read and
        // found absent; `high` is above the mark and starts without a read.
        let mut worker = Visitors::new(VisitorView::new(store.clone()));
        worker.apply(
            &mut (),
            &[
                scan(ws, low),
                scan(ws, mid),
                scan(ws, high),
                scan(other_ws, elsewhere_visitor),
            ],
        );
        worker.persist(&store, &record(6)).unwrap();
        assert_eq!(
            (count(&low), count(&mid), count(&high)),
            (Some(1), Some(3), Some(1))
        );
        let other = store.visitor(&other_ws, &elsewhere_visitor).unwrap();
        assert_eq!(other.unwrap().event_count, 1);

        // The mark was raised with that checkpoint: `high`, stored by it, is
        // read again and continued.
        worker.apply(&mut (), &[scan(ws, high)]);
        worker.persist(&store, &record(7)).unwrap();
        assert_eq!(count(&high), Some(2));

        // What the worker goes by is its mark, not a read: a profile above
        // it that some other writer stored is not read (none exists in the
        // server: this worker alone writes new profiles).
        let mut elsewhere = Visitors::new(VisitorView::new(store.clone()));
        elsewhere.apply_committed(&mut (), &[scan(ws, highest)], &[highest]);
        elsewhere.persist(&store, &record(8)).unwrap();
        worker.apply(&mut (), &[scan(ws, highest)]);
        worker.persist(&store, &record(9)).unwrap();
        assert_eq!(count(&highest), Some(1), "started afresh, without a read");
        // A worker that starts now reads the mark from the store, and so
        // continues `highest`.
        let mut restarted = Visitors::new(VisitorView::new(store.clone()));
        restarted.apply(&mut (), &[scan(ws, highest)]);
        restarted.persist(&store, &record(10)).unwrap();
        assert_eq!(count(&highest), Some(2));
    }
}
