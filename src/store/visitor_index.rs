//! The visitor index, written behind the Recorder's commits.
//!
//! A device that scans in batch after batch has its visitor span rewritten
//! in each (`events.rs`): under 64 devices scanning, those rewrites were
//! about 70% of the Recorder's commit, as sled copies a whole leaf for every
//! key it writes. So the Recorder's transaction holds only the segment, the
//! link and workspace entries and the totals; each segment's visitor
//! entries wait here, in memory, and are written into the spans together
//! (`settle`), a span rewritten once for many segments:
//!
//! - after `PENDING_SEGMENTS` segments or `PENDING_ENTRIES` entries, by the
//!   Recorder after its commit;
//! - before every reader of the index (a visitor's events, its erasure, the
//!   Purger's rewrites) and before every `flush`, so a reader never misses a
//!   committed event and what a flush makes durable includes the index.
//!
//! The lock held from a commit's transaction to its entries being noted here
//! is the one `settle` takes, so a reader sees a committed segment's entries
//! or does not see the segment committed.
//!
//! **The position.** `meta[visitor_index_through]` is the newest segment
//! whose entries are in the index, written in `settle`'s transaction: every
//! segment keyed at or below it is indexed, none above it. After a crash the
//! entries of the segments above it were lost with the memory that held
//! them: `rebuild` reads those segments again at start and indexes them. A
//! store without the key (a new one, or one written before the index was
//! deferred, whose commits wrote the index) has every segment indexed.

use std::collections::BTreeMap;

use sled::Transactional;

use super::events::{OpenSpans, add_to_span, group, is_home, known_spans, remember_spans};
use super::segment::Segment;
use super::{Store, StoreResult, Trees, keys};
use crate::ids::EventId;

/// Committed segments whose visitor entries wait at most before the
/// Recorder writes them (at 64 connections, a few hundred milliseconds of
/// scans).
pub(super) const PENDING_SEGMENTS: usize = 16;

/// Visitor entries that wait at most, whatever the number of segments (a
/// batch of scans by as many devices has one each).
const PENDING_ENTRIES: usize = 16_384;

/// Visitors whose open span is remembered at most: past it, every one is
/// forgotten (a forgotten visitor starts a new span at its next entry).
/// Only devices that scan again have spans (a first scan's segment is the
/// visitor's home: no entry), so this holds the devices scanning lately.
const OPEN_VISITOR_SPANS_MAX: usize = 50_000;

/// One segment's visitor entries: `visitor ++ segment` → positions.
type Entries = BTreeMap<[u8; 32], Vec<u16>>;

/// The visitor index's state in memory: the entries not yet written, and
/// the open span of each visitor recently indexed.
#[derive(Debug, Default)]
pub(super) struct VisitorIndex {
    /// Each committed segment's visitor entries (`visitor ++ segment` →
    /// positions), oldest segment first.
    pending: Vec<([u8; 16], Entries)>,
    /// How many entries `pending` holds.
    entries: usize,
    /// The newest segment committed since the last `settle`, with entries
    /// or not: the position `settle` writes.
    through: Option<[u8; 16]>,
    /// The open span of each visitor recently indexed (`events.rs`).
    open: OpenSpans,
}

impl VisitorIndex {
    /// Notes the visitor entries of segment `first`, just committed.
    pub(super) fn push(&mut self, first: [u8; 16], entries: Entries) {
        self.through = self.through.max(Some(first));
        if !entries.is_empty() {
            self.entries += entries.len();
            self.pending.push((first, entries));
        }
    }

    /// Whether the Recorder should write the entries now.
    pub(super) fn due(&self) -> bool {
        self.pending.len() >= PENDING_SEGMENTS || self.entries >= PENDING_ENTRIES
    }

    /// How many entries wait.
    #[cfg(test)]
    pub(super) fn waiting(&self) -> usize {
        self.entries
    }

    /// Drops the entries waiting: once written, or as a crash does.
    pub(super) fn forget(&mut self) {
        self.pending.clear();
        self.entries = 0;
        self.through = None;
    }
}

/// Writes the entries `index` holds into the visitor spans, with the
/// position, in one transaction; on success `index` holds none. On failure
/// they stay, for the next call.
pub(super) fn settle(t: &Trees, index: &mut VisitorIndex) -> StoreResult<()> {
    let Some(through) = index.through else {
        return Ok(());
    };
    let known = known_spans(
        &index.open,
        index.pending.iter().flat_map(|(_, entries)| entries.keys()),
    );
    let pending = &index.pending;
    let written = (&t.events_by_visitor, &t.meta).transaction(|(idx, meta)| {
        let mut spans = known.clone();
        for (segment, entries) in pending {
            for (key, positions) in entries {
                add_to_span(idx, &mut spans, key, segment, positions)?;
            }
        }
        meta.insert(keys::META_VISITOR_INDEX_THROUGH, &through[..])?;
        Ok(spans)
    })?;
    remember_spans(&mut index.open, written, OPEN_VISITOR_SPANS_MAX);
    index.forget();
    Ok(())
}

impl Store {
    /// Writes the visitor entries waiting in memory into the index: every
    /// reader of the visitor index calls it first.
    pub(super) fn settle_visitor_index(&self) -> StoreResult<()> {
        settle(&self.inner, &mut self.inner.visitor_index())
    }

    /// Indexes the segments committed after the position whose entries a
    /// stop lost (see the module documentation); answers how many
    /// segments it read. Called by `Store::open`.
    pub(super) fn rebuild_visitor_index(&self) -> StoreResult<usize> {
        let t = &self.inner;
        let Some(through) = t.meta.get(keys::META_VISITOR_INDEX_THROUGH)? else {
            // Every segment is indexed: the position is the newest.
            let newest = t.events.last()?.map(|(k, _)| k);
            let position = newest.as_deref().unwrap_or(&[0u8; 16][..]);
            t.meta.insert(keys::META_VISITOR_INDEX_THROUGH, position)?;
            return Ok(0);
        };
        let mut index = t.visitor_index();
        let mut read = 0;
        let after = (
            std::ops::Bound::Excluded(through),
            std::ops::Bound::Unbounded,
        );
        for entry in t.events.range::<sled::IVec, _>(after) {
            let (key, _) = entry?;
            let Some(first) = EventId::from_slice(&key) else {
                continue;
            };
            // A segment whose body is lost has no events to index.
            let entries = match self.segment(&key)? {
                Some(stored) => {
                    let seg = Segment::parse(&stored.body)?;
                    let events = seg.events()?;
                    group(&events, &first, |e| {
                        e.visitor_id.filter(|v| !is_home(v, &first))
                    })
                }
                None => Entries::new(),
            };
            index.push(*first.as_bytes(), entries);
            read += 1;
            if index.due() {
                settle(t, &mut index)?;
            }
        }
        settle(t, &mut index)?;
        Ok(read)
    }
}

impl Trees {
    pub(super) fn visitor_index(&self) -> std::sync::MutexGuard<'_, VisitorIndex> {
        self.visitor_index.lock().unwrap_or_else(|p| p.into_inner())
    }
}
