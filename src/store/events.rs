//! Scan events and their indexes. `commit_scans` is the Recorder's group
//! commit: events, every index entry and the link totals in one transaction.

use std::collections::HashMap;

use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use super::codec::{self, Record};
use super::links::decode_count;
use super::scan::{self, KeyRange, Page};
use super::{Store, StoreError, StoreResult, keys};
use crate::domain::{DeviceType, ScanEvent};
use crate::ids::{EventId, EventKind, LinkId, VisitorId, WorkspaceId};

impl Record for ScanEvent {
    const VERSION: u8 = 1;
}

/// Keys scanned at most to fill one page of a filtered event list.
const SCAN_BUDGET: usize = 20_000;

/// Which index a listing walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventIndex {
    Workspace,
    Link(LinkId),
    Visitor(VisitorId),
}

/// Filters of `GET /v1/events`; `from_ms` inclusive, `to_ms` exclusive.
#[derive(Debug, Clone)]
pub struct EventQuery {
    pub workspace_id: WorkspaceId,
    pub index: EventIndex,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub tag: Option<String>,
    pub country: Option<String>,
    pub device_type: Option<DeviceType>,
    pub include_bots: bool,
}

impl Store {
    /// Writes a batch of events with their indexes and link totals atomically.
    pub fn commit_scans(&self, events: &[ScanEvent]) -> StoreResult<()> {
        let t = &self.inner;
        let encoded: Vec<Vec<u8>> = events
            .iter()
            .map(codec::encode)
            .collect::<StoreResult<_>>()?;
        let mut totals: HashMap<LinkId, u64> = HashMap::new();
        for e in events.iter().filter(|e| !e.bot) {
            *totals.entry(e.link_id).or_default() += 1;
        }
        let trees = (
            &t.events,
            &t.events_by_link,
            &t.events_by_workspace,
            &t.events_by_visitor,
            &t.counters,
        );
        trees.transaction(|(ev, by_link, by_ws, by_visitor, counters)| {
            for (event, bytes) in events.iter().zip(&encoded) {
                ev.insert(event.id.as_bytes(), bytes.as_slice())?;
                by_link.insert(&keys::pair(&event.link_id, &event.id), &[])?;
                by_ws.insert(&keys::pair(&event.workspace_id, &event.id), &[])?;
                if let Some(visitor) = &event.visitor_id {
                    by_visitor.insert(&keys::pair(visitor, &event.id), &[])?;
                }
            }
            for (link, add) in &totals {
                let key = keys::counter(keys::CounterKind::LinkTotal, link);
                let now = counters.get(key)?.map(|v| decode_count(&v)).unwrap_or(0);
                counters.insert(&key, &(now + add).to_be_bytes())?;
            }
            Ok::<_, ConflictableTransactionError<StoreError>>(())
        })?;
        Ok(())
    }

    pub fn event(&self, id: &EventId) -> StoreResult<Option<ScanEvent>> {
        self.inner
            .events
            .get(id.as_bytes())?
            .map(|v| codec::decode(&v))
            .transpose()
    }

    /// Events matching `q`, newest first, from below `cursor`.
    pub fn list_events(
        &self,
        q: &EventQuery,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> StoreResult<Page<ScanEvent>> {
        let (tree, prefix): (&sled::Tree, &[u8]) = match &q.index {
            EventIndex::Workspace => (&self.inner.events_by_workspace, q.workspace_id.as_bytes()),
            EventIndex::Link(id) => (&self.inner.events_by_link, id.as_bytes()),
            EventIndex::Visitor(id) => (&self.inner.events_by_visitor, id.as_bytes()),
        };
        let range = KeyRange::time_prefixed(prefix, q.from_ms, q.to_ms);
        let mut tagged: HashMap<LinkId, bool> = HashMap::new();
        scan::scan_desc(tree, &range, cursor, limit, SCAN_BUDGET, |key, _| {
            let Some(id) = keys::pair_suffix::<EventKind>(key) else {
                return Ok(None);
            };
            let Some(event) = self.event(&id)? else {
                return Ok(None);
            };
            if !self.event_matches(q, &event, &mut tagged)? {
                return Ok(None);
            }
            Ok(Some(event))
        })
    }

    fn event_matches(
        &self,
        q: &EventQuery,
        e: &ScanEvent,
        tagged: &mut HashMap<LinkId, bool>,
    ) -> StoreResult<bool> {
        if e.workspace_id != q.workspace_id
            || (e.bot && !q.include_bots)
            || q.device_type.is_some_and(|d| d != e.device_type)
            || q.country
                .as_ref()
                .is_some_and(|c| e.country.as_deref() != Some(c.as_str()))
        {
            return Ok(false);
        }
        let Some(tag) = &q.tag else {
            return Ok(true);
        };
        if let Some(hit) = tagged.get(&e.link_id) {
            return Ok(*hit);
        }
        let hit = self.link(&e.link_id)?.is_some_and(|l| l.tags.contains(tag));
        tagged.insert(e.link_id, hit);
        Ok(hit)
    }
}
