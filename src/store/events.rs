//! Scan events, stored in segments (see `segment.rs`), and their indexes.
//!
//! The Recorder gives events strictly increasing IDs in the order they enter
//! its queue, so each committed batch is one segment covering a contiguous ID
//! range, keyed by its first ID. `commit_scans` writes the segment, one index
//! entry per (link, segment), (workspace, segment) and (visitor, segment)
//! holding the positions of that owner's events, and the link totals, in one
//! transaction. Reads find an event by seeking to the last segment starting
//! at or before its ID.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use super::links::decode_count;
use super::scan::Page;
use super::segment::{self, Segment};
use super::{Store, StoreError, StoreResult, keys};
use crate::domain::{DeviceType, ScanEvent};
use crate::ids::{EventId, Id, IdKind, LinkId, VisitorId, WorkspaceId};

/// Events examined at most to fill one page of a filtered event list.
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

/// Positions of each owner's events in one batch, keyed by index key.
fn group<K: IdKind>(
    events: &[ScanEvent],
    segment_id: &EventId,
    owner: impl Fn(&ScanEvent) -> Option<Id<K>>,
) -> BTreeMap<[u8; 32], Vec<u16>> {
    let mut out: BTreeMap<[u8; 32], Vec<u16>> = BTreeMap::new();
    for (pos, e) in events.iter().enumerate() {
        if let Some(o) = owner(e) {
            // `Settings` bounds batch_size to u16, so a position always fits.
            out.entry(keys::pair(&o, segment_id))
                .or_default()
                .push(pos as u16);
        }
    }
    out
}

type TxResult = Result<(), ConflictableTransactionError<StoreError>>;

impl Store {
    /// Writes one batch (ascending IDs) as a segment with its index entries
    /// and link totals, atomically.
    pub fn commit_scans(&self, events: &[ScanEvent]) -> StoreResult<()> {
        let Some(first) = events.first().map(|e| e.id) else {
            return Ok(());
        };
        let t = &self.inner;
        let value = segment::encode(events)?;
        let by_link = group(events, &first, |e| Some(e.link_id));
        let by_ws = group(events, &first, |e| Some(e.workspace_id));
        let by_visitor = group(events, &first, |e| e.visitor_id);
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
        trees.transaction(
            |(ev, link_idx, ws_idx, visitor_idx, counters)| -> TxResult {
                ev.insert(first.as_bytes(), value.as_slice())?;
                for (index, entries) in [
                    (link_idx, &by_link),
                    (ws_idx, &by_ws),
                    (visitor_idx, &by_visitor),
                ] {
                    for (key, positions) in entries {
                        index.insert(key, segment::encode_positions(positions))?;
                    }
                }
                for (link, add) in &totals {
                    let key = keys::counter(keys::CounterKind::LinkTotal, link);
                    let now = counters.get(key)?.map(|v| decode_count(&v)).unwrap_or(0);
                    counters.insert(&key, &(now + add).to_be_bytes())?;
                }
                Ok(())
            },
        )?;
        Ok(())
    }

    pub fn event(&self, id: &EventId) -> StoreResult<Option<ScanEvent>> {
        let Some((_, value)) = self
            .inner
            .events
            .range(..=&id.as_bytes()[..])
            .next_back()
            .transpose()?
        else {
            return Ok(None);
        };
        let seg = Segment::parse(&value)?;
        seg.find(id).map(|pos| seg.event(pos)).transpose()
    }

    /// The ID of the newest stored event (the Recorder continues after it).
    pub fn last_event_id(&self) -> StoreResult<Option<EventId>> {
        let Some((_, value)) = self.inner.events.last()? else {
            return Ok(None);
        };
        Ok(Segment::parse(&value)?.last_id())
    }

    /// Events matching `q`, newest first, strictly older than `cursor` (an
    /// event ID). The next cursor is the last event returned, or the last one
    /// examined when the scan budget ran out first.
    pub fn list_events(
        &self,
        q: &EventQuery,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> StoreResult<Page<ScanEvent>> {
        let (tree, prefix): (&sled::Tree, &[u8; 16]) = match &q.index {
            EventIndex::Workspace => (&self.inner.events_by_workspace, q.workspace_id.as_bytes()),
            EventIndex::Link(id) => (&self.inner.events_by_link, id.as_bytes()),
            EventIndex::Visitor(id) => (&self.inner.events_by_visitor, id.as_bytes()),
        };
        let lower: Option<[u8; 16]> = q.from_ms.map(EventId::lower_bound_bytes);
        let mut upper: Option<[u8; 16]> = q.to_ms.map(EventId::lower_bound_bytes);
        if let Some(c) = cursor {
            let c: [u8; 16] = c
                .try_into()
                .map_err(|_| StoreError::Codec("malformed cursor".into()))?;
            upper = Some(upper.map_or(c, |u| u.min(c)));
        }
        let mut start = prefix.to_vec();
        start.extend_from_slice(&[0; 16]);
        let mut end = prefix.to_vec();
        end.extend_from_slice(&upper.unwrap_or([0xff; 16]));
        let range = (Bound::Included(start), Bound::Excluded(end));

        let mut items = Vec::with_capacity(limit.min(512));
        let mut examined = 0usize;
        let mut tagged: HashMap<LinkId, bool> = HashMap::new();
        for entry in tree.range(range).rev() {
            let (key, positions) = entry?;
            let Some(segment_id) = keys::pair_suffix::<crate::ids::EventKind>(&key) else {
                continue;
            };
            let Some(value) = self.inner.events.get(segment_id.as_bytes())? else {
                continue;
            };
            let seg = Segment::parse(&value)?;
            for pos in segment::decode_positions(&positions).rev() {
                let id = seg.id(pos);
                if upper.is_some_and(|u| id.as_bytes() >= &u) {
                    continue;
                }
                if lower.is_some_and(|l| id.as_bytes() < &l) {
                    return Ok(Page {
                        items,
                        next_cursor: None,
                    });
                }
                let event = seg.event(pos)?;
                examined += 1;
                if self.event_matches(q, &event, &mut tagged)? {
                    if items.len() == limit {
                        let last = items.last().map(|e: &ScanEvent| e.id.as_bytes().to_vec());
                        return Ok(Page {
                            items,
                            next_cursor: last,
                        });
                    }
                    items.push(event);
                } else if examined >= SCAN_BUDGET {
                    return Ok(Page {
                        items,
                        next_cursor: Some(id.as_bytes().to_vec()),
                    });
                }
            }
        }
        Ok(Page {
            items,
            next_cursor: None,
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
