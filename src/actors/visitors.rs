//! The Visitors worker: visitor profiles (first and last scan, scans,
//! distinct links, countries, devices, days with a scan) derived from
//! committed events, as a consumer (`actors::consumer`). Like the Counters
//! worker it folds into pending profiles in memory and, at each checkpoint,
//! writes them whole with its position in one transaction, so a stored
//! profile always equals a recount of its events up to that position.
//!
//! Which visitor a scan belongs to is decided on the redirect path by the
//! registry (`actors::registry`); this worker only describes visitors.

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
}

impl Visitors {
    pub fn starter(view: Arc<VisitorView>, settings: ConsumerSettings) -> ConsumerStarter {
        ConsumerWorker::starter(Visitors { view }, settings)
    }

    /// Folds `events` into the pending profiles; a visitor in `new` has no
    /// stored profile to start from.
    fn fold(&self, events: &[ScanEvent], new: &HashSet<&VisitorId>) {
        let mut pending = self
            .view
            .pending
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let erased = self
            .view
            .erased
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        for e in events {
            let Some(v) = e.visitor_id.filter(|v| !erased.contains(v)) else {
                continue;
            };
            let profile = match pending.entry(v) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    let stored = if new.contains(&v) {
                        None
                    } else {
                        self.view.store.visitor(&e.workspace_id, &v).unwrap_or_else(|err| {
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
        store.save_visitors(Self::NAME, record, &pending)?;
        pending.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{EventId, LinkId};

    #[test]
    fn a_new_visitor_starts_without_a_read_and_its_next_batch_continues_its_stored_profile() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8).unwrap();
        let view = VisitorView::new(store.clone());
        let mut worker = Visitors { view: view.clone() };
        let (ws, v) = (WorkspaceId::generate(), VisitorId::generate());
        let scan = || ScanEvent {
            visitor_id: Some(v),
            ..ScanEvent::sample(EventId::generate(), ws, LinkId::generate())
        };
        let record = |events| ConsumerRecord {
            position: None,
            events,
            state: Vec::new(),
        };
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
}
