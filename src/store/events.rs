//! Scan events, stored in segments (see `segment.rs`), and their indexes.
//!
//! The Recorder gives events strictly increasing IDs in the order they enter
//! its queue, so each committed batch is one segment covering a contiguous ID
//! range (several when its events are large: `MAX_SEGMENT_BYTES`), keyed by
//! its first ID. `commit_scans` appends the segment's body to a file
//! (`bodies.rs`), then writes a pointer to it, one index entry per
//! (workspace, segment) holding the positions of its events, the entries
//! of the segment's links (spans, below), and the link totals, in one
//! transaction. The segment's visitor entries are written behind it, for
//! many segments at once (`visitor_index.rs`). Reads find an event by seeking to the last
//! segment starting at or before its ID.
//!
//! **Link spans.** The link index (`events_by_link`) holds one key per
//! (link, span of up to `SPAN_SEGMENTS` of the link's segments, fewer when
//! they hold many scans: `SPAN_MAX_BYTES`): the key is
//! link ++ the span's first segment key, the value each segment's key and
//! the positions of the link's events in it, ascending
//! (`segment::encode_span`). Under scans of many links an entry per
//! segment was about one new sled key per scan, and sled keeps the pages
//! new keys split off in memory.
//!
//! **Visitor spans.** The visitor index (`events_by_visitor`) is kept the
//! same way, a key per (visitor, span of its segments): a device that
//! scans in batch after batch had a new key in each, and a new sled key
//! costs a leaf split every 16 keys (about half of the Recorder's CPU under
//! load, with 64 devices scanning). The spans are written by
//! `visitor_index.rs`, behind the commits. What follows holds for both
//! indexes, "owner" being the link or the visitor.
//!
//! A segment is added to the owner's open span, remembered in memory
//! (`OpenSpan`, forgotten past `OPEN_SPANS_MAX` links or
//! `OPEN_VISITOR_SPANS_MAX` visitors and at every start), or starts a new
//! span when it knows none, the span is full, or its value is gone; so an
//! owner's spans hold ascending, disjoint runs of its segments, each keyed
//! at or before its first segment. The Purger, and an erasure for a
//! visitor, rewrite a span in place (`retention.rs`, `visitors.rs`): a span
//! whose first segment was dropped keeps its key, so a span's key is only a
//! lower bound of its segments. Walks read each span as the per-segment
//! entries it holds (`index_range`), and the span holding a segment is the
//! last key of the owner at or before owner ++ segment (`span_of`). Stores
//! written before spans hold one entry per (owner, segment), positions
//! only: its even length tells it from a span (always odd), and it reads
//! as a span of that one segment.
//!
//! **Home segments.** A visitor's index entry is left out of every segment
//! whose key (its first ID) carries the same millisecond as the visitor's
//! ID. The Recorder gives a new visitor an ID carrying the time of its
//! batch's first ID (`VisitorRegistry::resolve`), so the segment of a
//! visitor's first scans, its home, is found from the visitor's ID alone:
//! the segments keyed within that millisecond (usually one) that have no
//! entry of the visitor, their positions read from the segment itself
//! (`home_keys`, `entry_segment`). Most visitors scan once, and their
//! entry was one sled key of a new visitor's two in the Recorder's
//! transaction. Walks take a home as an entry with empty positions (no
//! stored entry is empty). A rewrite by the Purger keeps the segment's key,
//! so a home stays a home and gets no entry (before visitor spans it wrote
//! one, and a home with an entry is read through it). The visitor's ID is
//! not an event ID, and an erasure detaches the home's events like any
//! other (`detach_visitor_step`).

use std::collections::{BTreeMap, HashMap};

use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use super::links::decode_count;
use super::scan::{self, Candidate, Page};
use super::segment::{self, Segment};
use super::{FastHash, NewVisitor, Store, StoreError, StoreResult, keys};
use crate::domain::{DeviceType, ScanEvent};
use crate::ids::{EventId, EventKind, Id, IdKind, LinkId, VisitorId, WorkspaceId};

/// Most bytes of one segment (unless it holds a single event): a batch over
/// it is written as several segments. Reading one event reads its whole
/// segment (one `pread` from its file), so this bounds what a lookup reads.
/// A full batch of 2,048 typical events is 170 to 250 KB, one segment: each
/// segment has index entries of its own (one per visitor, link and
/// workspace in it), so splitting a batch multiplies them. (When segments
/// were sled values, 52 KiB kept sled's pages small; they are in files now.)
const MAX_SEGMENT_BYTES: usize = 384 * 1024;

/// A segment's bytes: the sled value itself (a segment stored inline, as
/// stores written before `bodies.rs` hold them) or read from its file.
pub(super) enum Body {
    Inline(sled::IVec),
    File(Vec<u8>),
}

impl std::ops::Deref for Body {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Body::Inline(v) => v,
            Body::File(v) => v,
        }
    }
}

/// A segment as stored: the events tree's value (`raw`, compared by a
/// rewrite that must find the segment unchanged) and its body.
pub(super) struct Stored {
    pub(super) raw: sled::IVec,
    pub(super) body: Body,
}

/// `events` (ascending IDs) encoded as segments of at most
/// `MAX_SEGMENT_BYTES`: (the events, the encoded value), in order.
fn encode_segments(events: &[ScanEvent]) -> StoreResult<Vec<(&[ScanEvent], Vec<u8>)>> {
    let mut out = Vec::new();
    let mut todo = vec![events];
    while let Some(part) = todo.pop() {
        let value = segment::encode(part)?;
        if value.len() > MAX_SEGMENT_BYTES && part.len() > 1 {
            let (left, right) = part.split_at(part.len() / 2);
            // Left first: popped next.
            todo.push(right);
            todo.push(left);
        } else {
            out.push((part, value));
        }
    }
    Ok(out)
}

/// Most segments one link index entry (a span) lists: see the module
/// documentation.
pub(super) const SPAN_SEGMENTS: usize = 16;

/// Most bytes of a span value the Recorder adds a segment to: a link with
/// many scans in each segment gets spans of fewer segments, so each commit
/// does not rewrite up to `SPAN_SEGMENTS` segments' worth of positions (a
/// segment of 2,048 scans of one link has 4 KB of them). A span of scans
/// of many links is a few hundred bytes.
const SPAN_MAX_BYTES: usize = 4096;

/// Links whose open span the Store remembers at most: past it, it forgets
/// them all (a forgotten link starts a new span at its next scan).
const OPEN_SPANS_MAX: usize = 200_000;

/// The name of the link index's sled tree.
pub(super) const LINK_INDEX_TREE: &str = "events_by_link";

/// A link's open span, the newest, which its next segments join: the
/// segment part of its key, and how many segments it held when last written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct OpenSpan {
    first: [u8; 16],
    /// At most `SPAN_SEGMENTS` (a byte keeps the map small: one entry per
    /// link recently scanned).
    segments: u8,
}

/// Open spans by owner, a link or visitor ID (`Store::commit`).
pub(super) type OpenSpans = HashMap<[u8; 16], OpenSpan, FastHash>;

/// `owner (16) ++ segment (16)`.
fn index_key(owner: &[u8], segment: &[u8; 16]) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(&owner[..16]);
    key[16..].copy_from_slice(segment);
    key
}

/// The segment part of an index key.
pub(super) fn key_segment(key: &[u8]) -> StoreResult<[u8; 16]> {
    key.get(16..32)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| StoreError::Codec("an event index key is short".into()))
}

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

impl EventQuery {
    /// Every non-bot event of `index` in workspace `ws`: no bounds, no filter.
    pub fn all(ws: WorkspaceId, index: EventIndex) -> EventQuery {
        EventQuery {
            workspace_id: ws,
            index,
            from_ms: None,
            to_ms: None,
            tag: None,
            country: None,
            device_type: None,
            include_bots: false,
        }
    }
}

/// Positions of each owner's events in one batch, keyed by index key.
pub(super) fn group<K: IdKind>(
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

type SpanTxResult = Result<OpenSpans, ConflictableTransactionError<StoreError>>;

/// The open spans `open` knows of `owners`: the owners of one batch's
/// index entries (once per segment, not per event).
pub(super) fn known_spans<'a>(
    open: &OpenSpans,
    owners: impl Iterator<Item = &'a [u8; 32]>,
) -> OpenSpans {
    owners
        .map(key_owner)
        .filter_map(|owner| open.get(&owner).map(|o| (owner, *o)))
        .collect()
}

/// Notes the spans a commit wrote in `open`, forgetting every one first
/// when that would take it past `max`.
pub(super) fn remember_spans(open: &mut OpenSpans, written: OpenSpans, max: usize) {
    if open.len() + written.len() > max {
        open.clear();
    }
    open.extend(written);
}

/// Adds the entry of an owner (`key`: link or visitor ++ segment) into
/// `segment`, with `positions`, to the owner's open span in `spans`, in the
/// Recorder's transaction; or starts a new span keyed `key` when the owner
/// has none known, when it is full (`SPAN_SEGMENTS`, `SPAN_MAX_BYTES`), or
/// when its value is gone (the Purger removed it) or unreadable. Notes the
/// span in `spans`.
pub(super) fn add_to_span(
    index: &sled::transaction::TransactionalTree,
    spans: &mut OpenSpans,
    key: &[u8; 32],
    segment: &[u8; 16],
    positions: &[u16],
) -> Result<(), ConflictableTransactionError<StoreError>> {
    let owner: [u8; 16] = key_owner(key);
    if let Some(open) = spans
        .get(&owner)
        .filter(|o| usize::from(o.segments) < SPAN_SEGMENTS)
    {
        let span_key = index_key(&owner, &open.first);
        // Only a span is added to (never a value of the former layout), and
        // an unreadable one is left as it is: a new span follows it.
        let value = index.get(span_key)?;
        let value_len = value.as_ref().map_or(0, |v| v.len());
        let parts = value
            .filter(|v| !v.len().is_multiple_of(2))
            .and_then(|v| segment::decode_span(&open.first, &v).ok());
        if let Some(mut parts) = parts {
            let newer = parts.last().is_none_or(|(s, _)| s < segment);
            let fits = value_len + 18 + 2 * positions.len() <= SPAN_MAX_BYTES;
            if parts.len() < SPAN_SEGMENTS && newer && fits {
                parts.push((*segment, positions.to_vec()));
                index.insert(&span_key[..], segment::encode_span(&parts))?;
                let first = open.first;
                let segments = u8::try_from(parts.len()).unwrap_or(u8::MAX);
                spans.insert(owner, OpenSpan { first, segments });
                return Ok(());
            }
        }
    }
    index.insert(
        &key[..],
        segment::encode_span(&[(*segment, positions.to_vec())]),
    )?;
    let first = *segment;
    spans.insert(owner, OpenSpan { first, segments: 1 });
    Ok(())
}

/// Sets the positions of `segment` in the span `span_key` of the link or
/// visitor index (in the transaction of a rewrite), or drops the segment
/// from it (`None`); a span left empty is removed. A span whose first
/// segment is dropped keeps its key: readers take a span's key as a lower
/// bound of its segments only. Nothing changes if the span does not list
/// the segment.
pub(super) fn rewrite_span(
    index: &sled::transaction::TransactionalTree,
    span_key: &[u8],
    segment: &[u8; 16],
    positions: Option<&[u16]>,
) -> Result<(), ConflictableTransactionError<StoreError>> {
    let Some(value) = index.get(span_key)? else {
        return Ok(());
    };
    let first = key_segment(span_key).map_err(ConflictableTransactionError::Abort)?;
    let mut parts =
        segment::decode_span(&first, &value).map_err(ConflictableTransactionError::Abort)?;
    let Some(i) = parts.iter().position(|(s, _)| s == segment) else {
        return Ok(());
    };
    match positions {
        Some(p) => parts[i].1 = p.to_vec(),
        None => {
            parts.remove(i);
        }
    }
    if parts.is_empty() {
        index.remove(span_key)?;
    } else {
        index.insert(span_key, segment::encode_span(&parts))?;
    }
    Ok(())
}

/// The owner part of an index key.
fn key_owner(key: &[u8; 32]) -> [u8; 16] {
    let mut owner = [0u8; 16];
    owner.copy_from_slice(&key[..16]);
    owner
}

/// An event index, as its readers walk it.
#[derive(Clone, Copy)]
pub(super) enum IndexTree<'a> {
    /// A key per (owner, segment), valued by the owner's positions in the
    /// segment: the workspace index.
    Segments(&'a sled::Tree),
    /// The link and visitor indexes: a key per span of the owner's
    /// segments, valued by `segment::encode_span`.
    Spans(&'a sled::Tree),
}

impl<'a> IndexTree<'a> {
    pub(super) fn tree(self) -> &'a sled::Tree {
        match self {
            IndexTree::Segments(tree) | IndexTree::Spans(tree) => tree,
        }
    }

    /// The positions (encoded) of the entry `key` (owner ++ segment) as
    /// stored now: its value, or its part of the span holding it
    /// (`span_positions`); `None` when there is none.
    fn positions(self, key: &[u8]) -> StoreResult<Option<sled::IVec>> {
        match self {
            IndexTree::Segments(tree) => Ok(tree.get(key)?),
            IndexTree::Spans(tree) => Ok(span_positions(tree, key)?.map(sled::IVec::from)),
        }
    }
}

/// The key and value of the span of the link index holding the segment of
/// `key` (link ++ segment): the last entry of the link keyed at or before
/// `key` (a span's key is at most its first segment, and a link's spans
/// hold ascending, disjoint runs of its segments). `None` when the link has
/// none; the span found may not list the segment.
pub(super) fn span_of(
    index: &sled::Tree,
    key: &[u8],
) -> StoreResult<Option<(sled::IVec, sled::IVec)>> {
    let Some(owner) = key.get(..16) else {
        return Ok(None);
    };
    let from = index_key(owner, &[0; 16]);
    Ok(index.range(&from[..]..=key).next_back().transpose()?)
}

/// The positions (encoded) of the link index entry `key` (link ++
/// segment), read from the span that holds it; `None` when there is none.
pub(super) fn span_positions(index: &sled::Tree, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
    let segment = key_segment(key)?;
    let Some((span_key, value)) = span_of(index, key)? else {
        return Ok(None);
    };
    let parts = segment::decode_span(&key_segment(&span_key)?, &value)?;
    Ok(parts
        .into_iter()
        .find(|(s, _)| *s == segment)
        .map(|(_, p)| segment::encode_positions(&p)))
}

/// A span of the link index (`key`, `value`) as the per-segment entries
/// (link ++ segment, positions) a walk reads, in `dir` order, without the
/// segments outside `bounds`: those keyed at or above the upper bound, and
/// those followed in the span by one keyed at or below the lower bound
/// (the segment holding the lower bound is the last one keyed at or below
/// it; segments before it end before it).
fn span_entries(
    key: &[u8],
    value: &[u8],
    bounds: Bounds,
    dir: Direction,
) -> StoreResult<Vec<(sled::IVec, sled::IVec)>> {
    let parts = segment::decode_span(&key_segment(key)?, value)?;
    let next: Vec<Option<[u8; 16]>> = parts
        .iter()
        .skip(1)
        .map(|(s, _)| Some(*s))
        .chain([None])
        .collect();
    let mut out: Vec<(sled::IVec, sled::IVec)> = parts
        .iter()
        .zip(next)
        .filter(|((s, _), next)| {
            let above = bounds.upper.is_some_and(|u| *s >= u);
            let before = bounds.lower.is_some_and(|l| next.is_some_and(|n| n <= l));
            !above && !before
        })
        .map(|((s, positions), _)| {
            let k = index_key(key, s);
            (
                sled::IVec::from(&k[..]),
                sled::IVec::from(segment::encode_positions(positions)),
            )
        })
        .collect();
    if dir == Direction::NewestFirst {
        out.reverse();
    }
    Ok(out)
}

/// Every segment a span (`key`, `value`) lists, as the per-segment entries
/// (owner ++ segment, positions) a walk reads, oldest first.
pub(super) fn span_segments(
    key: &[u8],
    value: &[u8],
) -> StoreResult<Vec<(sled::IVec, sled::IVec)>> {
    span_entries(key, value, Bounds::ALL, Direction::OldestFirst)
}

/// Every entry of a span index as (owner ++ segment, positions).
#[cfg(test)]
fn span_index_entries(index: &sled::Tree) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in index.iter() {
        let (key, value) = entry.unwrap();
        let parts = segment::decode_span(&key_segment(&key).unwrap(), &value).unwrap();
        for (s, positions) in parts {
            out.push((
                index_key(&key, &s).to_vec(),
                segment::encode_positions(&positions),
            ));
        }
    }
    out
}

/// Whether the segment keyed `segment` is a home of `visitor` (see the
/// module documentation): then the visitor has no index entry for it, unless
/// a rewrite gave it one. `home_keys` finds these segments by the same rule.
pub(super) fn is_home(visitor: &VisitorId, segment: &EventId) -> bool {
    visitor.timestamp_ms() == segment.timestamp_ms()
}

/// A home segment's key as a walk's entry: empty positions (see the module
/// documentation).
fn home_entry(key: [u8; 32]) -> (sled::IVec, sled::IVec) {
    (sled::IVec::from(&key[..]), sled::IVec::default())
}

/// Positions of visitor `v`'s events in `seg`.
pub(super) fn positions_of(seg: &Segment, v: &VisitorId) -> StoreResult<Vec<u16>> {
    let mut out = Vec::new();
    for pos in 0..seg.len() {
        if seg.visitor(pos)? == Some(*v) {
            // A segment holds at most `u16::MAX` events (`Settings` bounds
            // the batch size), so a position always fits.
            out.push(pos as u16);
        }
    }
    Ok(out)
}

/// One segment of a batch, encoded, with its index entries.
struct Written {
    first: EventId,
    value: Vec<u8>,
    by_link: BTreeMap<[u8; 32], Vec<u16>>,
    by_ws: BTreeMap<[u8; 32], Vec<u16>>,
    by_visitor: BTreeMap<[u8; 32], Vec<u16>>,
}

/// The time bounds of a listing as ID bytes: `lower` inclusive, `upper` exclusive.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    lower: Option<[u8; 16]>,
    upper: Option<[u8; 16]>,
}

impl Bounds {
    /// No bound: every event.
    const ALL: Bounds = Bounds {
        lower: None,
        upper: None,
    };
}

/// Index entries (key, positions) in walking order.
type IndexEntries<'a> = Box<dyn Iterator<Item = StoreResult<(sled::IVec, sled::IVec)>> + 'a>;

/// The index a query walks: its tree, the owner's prefix in it, and for a
/// visitor the keys of its home segments without an entry (`home_keys`).
struct Walked<'a> {
    tree: IndexTree<'a>,
    owner: &'a [u8; 16],
    homes: Vec<[u8; 32]>,
}

/// The order of a walk through an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// `GET /v1/events`.
    NewestFirst,
    /// The export.
    OldestFirst,
}

/// The ID right after `id`; `None` after the largest one.
fn successor(id: [u8; 16]) -> Option<[u8; 16]> {
    u128::from_be_bytes(id)
        .checked_add(1)
        .map(u128::to_be_bytes)
}

/// The bounds of an oldest-first walk: `q`'s time range, strictly after
/// `after` and at or before `until`. `None` when nothing can be in them.
fn ascending_bounds(
    q: &EventQuery,
    after: Option<[u8; 16]>,
    until: Option<&EventId>,
) -> Option<Bounds> {
    let mut lower = q.from_ms.map(EventId::lower_bound_bytes);
    if let Some(a) = after {
        let next = successor(a)?;
        lower = Some(lower.map_or(next, |l| l.max(next)));
    }
    let mut upper = q.to_ms.map(EventId::lower_bound_bytes);
    // Nothing follows the largest ID: then `until` bounds nothing.
    if let Some(next) = until.and_then(|u| successor(*u.as_bytes())) {
        upper = Some(upper.map_or(next, |x| x.min(next)));
    }
    Some(Bounds { lower, upper })
}

impl Store {
    /// Writes one batch (ascending IDs) as a segment with its index entries
    /// and link totals, atomically.
    pub fn commit_scans(&self, events: &[ScanEvent]) -> StoreResult<()> {
        self.commit_scans_with(events, &[]).map(|_| ())
    }

    /// `commit_scans`, with the registry entries of the visitors first seen
    /// in this batch, written just before its transaction. Answers the size of the
    /// segments written, in bytes. A batch of large events is written as
    /// several segments, each a contiguous ID range (`MAX_SEGMENT_BYTES`).
    pub fn commit_scans_with(
        &self,
        events: &[ScanEvent],
        new: &[NewVisitor],
    ) -> StoreResult<usize> {
        self.commit(events, new, false)
    }

    /// `commit_scans_with` for scans of the scan log (strict mode, and the
    /// replay at start): the bodies are fsynced before their pointers are
    /// committed. Otherwise a pointer can reach the disk without its body
    /// (sled's log is fsynced by a `flush` that began before the body was
    /// written), `Store::open` removes that segment, and the store's newest
    /// event ID, which the replay starts after, already covers the scans
    /// the log still holds for it.
    pub fn commit_logged_scans(
        &self,
        events: &[ScanEvent],
        new: &[NewVisitor],
    ) -> StoreResult<usize> {
        self.commit(events, new, true)
    }

    fn commit(&self, events: &[ScanEvent], new: &[NewVisitor], sync: bool) -> StoreResult<usize> {
        if events.is_empty() {
            return Ok(0);
        }
        let t = &self.inner;
        let segments: Vec<Written> = encode_segments(events)?
            .into_iter()
            .map(|(part, value)| {
                let first = part[0].id;
                Written {
                    first,
                    value,
                    by_link: group(part, &first, |e| Some(e.link_id)),
                    by_ws: group(part, &first, |e| Some(e.workspace_id)),
                    // No entry in a home segment (see the module documentation).
                    by_visitor: group(part, &first, |e| {
                        e.visitor_id.filter(|v| !is_home(v, &first))
                    }),
                }
            })
            .collect();
        let values: Vec<&[u8]> = segments.iter().map(|w| w.value.as_slice()).collect();
        let pointers = if sync {
            t.bodies.append_durable(&values)?
        } else {
            t.bodies.append(&values)?
        };
        // The registry entries of the batch's new visitors: one value, keyed
        // by the batch's first event ID (`registry.rs`).
        let registry = (!new.is_empty()).then(|| super::registry::batch_value(new));
        let first_id = events[0].id;
        let mut totals: HashMap<LinkId, u64, FastHash> = HashMap::default();
        for e in events.iter().filter(|e| !e.bot) {
            *totals.entry(e.link_id).or_default() += 1;
        }
        // The open spans of the batch's links and visitors, as known before it.
        let known_links = known_spans(
            &self.open_spans(),
            segments.iter().flat_map(|w| w.by_link.keys()),
        );
        // Held from the transaction until the segments' visitor entries are
        // noted: a reader of the visitor index settles it first, under this
        // lock (`visitor_index.rs`).
        let mut visitor_index = t.visitor_index();
        let trees = (
            &t.events,
            &t.events_by_link,
            &t.events_by_workspace,
            &t.counters,
            &t.registry_batches,
        );
        // sled may run the closure more than once: the open spans it wrote
        // are noted only once it committed.
        let opened = trees.transaction(
            |(ev, link_idx, ws_idx, counters, registry_batches)| -> SpanTxResult {
                let mut links = known_links.clone();
                if let Some(value) = &registry {
                    registry_batches.insert(first_id.as_bytes(), value.as_slice())?;
                }
                for (w, pointer) in segments.iter().zip(&pointers) {
                    ev.insert(w.first.as_bytes(), &pointer.encode()[..])?;
                    let first = w.first.as_bytes();
                    for (key, positions) in &w.by_link {
                        add_to_span(link_idx, &mut links, key, first, positions)?;
                    }
                    for (key, positions) in &w.by_ws {
                        ws_idx.insert(key, segment::encode_positions(positions))?;
                    }
                }
                for (link, add) in &totals {
                    let key = keys::counter(keys::CounterKind::LinkTotal, link);
                    let now = counters.get(key)?.map(|v| decode_count(&v)).unwrap_or(0);
                    counters.insert(&key, &(now + add).to_be_bytes())?;
                }
                Ok(links)
            },
        )?;
        remember_spans(&mut self.open_spans(), opened, OPEN_SPANS_MAX);
        let bytes = segments.iter().map(|w| w.value.len()).sum();
        for w in segments {
            visitor_index.push(*w.first.as_bytes(), w.by_visitor);
        }
        if visitor_index.due() {
            // The batch is committed: a failure here leaves the entries
            // waiting for the next try, and the scans stored.
            if let Err(e) = super::visitor_index::settle(t, &mut visitor_index) {
                tracing::warn!(error = %e, "writing the visitor index failed; it is tried again at the next commit");
            }
        }
        drop(visitor_index);
        if let Some(value) = &registry {
            self.registry_committed(&first_id, value);
        }
        self.committed_event(events.last().map(|e| e.id));
        Ok(bytes)
    }

    pub fn event(&self, id: &EventId) -> StoreResult<Option<ScanEvent>> {
        let Some((key, _)) = self
            .inner
            .events
            .range(..=&id.as_bytes()[..])
            .next_back()
            .transpose()?
        else {
            return Ok(None);
        };
        let Some(stored) = self.segment(&key)? else {
            return Ok(None);
        };
        let seg = Segment::parse(&stored.body)?;
        seg.find(id).map(|pos| seg.event(pos)).transpose()
    }

    /// The body of a segment stored as `raw`; `None` for a pointer whose
    /// body is missing (a power cut took it, or the file was removed after
    /// `raw` was read).
    pub(super) fn body(&self, raw: sled::IVec) -> StoreResult<Option<Body>> {
        match super::bodies::Pointer::decode(&raw) {
            None => Ok(Some(Body::Inline(raw))),
            Some(p) => Ok(self.inner.bodies.read(&p)?.map(Body::File)),
        }
    }

    /// Removes the pointers whose body a power cut took (`bodies.rs`): only
    /// pointers into the newest file (or a later one, whose name did not
    /// reach the disk) can dangle, and they belong to the newest segments,
    /// so the walk goes newest first and stops at the first pointer into an
    /// older file. The next event IDs then still come after every one a
    /// consumer has seen. Answers how many segments were removed.
    pub(super) fn remove_lost_segments(&self) -> StoreResult<usize> {
        let t = &self.inner;
        let current = t.bodies.current_file();
        let mut lost = Vec::new();
        for entry in t.events.iter().rev() {
            let (key, raw) = entry?;
            match super::bodies::Pointer::decode(&raw) {
                Some(p) if p.file >= current => {
                    if t.bodies.read(&p)?.is_none() {
                        lost.push(key);
                    }
                }
                _ => break,
            }
        }
        if lost.is_empty() {
            return Ok(0);
        }
        let mut high = t
            .meta
            .get(keys::META_EVENTS_HIGH_WATER)?
            .and_then(|v| EventId::from_slice(&v));
        for key in &lost {
            high = high.max(EventId::from_slice(key));
            t.events.remove(key)?;
        }
        for (_, consumer) in self.consumers()? {
            high = high.max(consumer.position);
        }
        if let Some(high) = high {
            t.meta
                .insert(keys::META_EVENTS_HIGH_WATER, high.as_bytes())?;
        }
        self.flush()?;
        Ok(lost.len())
    }

    /// Deletes the body files no segment points into any more (retention
    /// and erasure leave them behind); answers how many.
    pub fn remove_unreferenced_bodies(&self) -> StoreResult<usize> {
        let t = &self.inner;
        let below = t.bodies.current_file();
        let mut live = std::collections::HashSet::new();
        for raw in t.events.iter().values() {
            if let Some(p) = super::bodies::Pointer::decode(&raw?) {
                live.insert(p.file);
            }
        }
        t.bodies.remove_unreferenced(&live, below)
    }

    /// The segment stored under `key`, read again if its body went missing
    /// meanwhile (a rewrite replaced it and its file was removed); `None`:
    /// there is none, or its body is lost.
    pub(super) fn segment(&self, key: &[u8]) -> StoreResult<Option<Stored>> {
        let mut previous: Option<sled::IVec> = None;
        for _ in 0..16 {
            let Some(raw) = self.inner.events.get(key)? else {
                return Ok(None);
            };
            if previous.as_ref() == Some(&raw) {
                // The same pointer twice, and no body: lost.
                return Ok(None);
            }
            match self.body(raw.clone())? {
                Some(body) => return Ok(Some(Stored { raw, body })),
                None => previous = Some(raw),
            }
        }
        Ok(None)
    }

    /// The ID of the newest event ever committed (the Recorder continues
    /// after it): the newest stored one, or the newest the Purger deleted if
    /// that is newer, so IDs never go back even when retention emptied the
    /// newest segments.
    pub fn last_event_id(&self) -> StoreResult<Option<EventId>> {
        let mut stored = None;
        // The newest segment whose body is readable (`Store::open` removes
        // pointers whose body a power cut took).
        for entry in self.inner.events.iter().rev() {
            let (key, _) = entry?;
            if let Some(s) = self.segment(&key)? {
                stored = Segment::parse(&s.body)?.last_id();
                break;
            }
        }
        let deleted = self
            .inner
            .meta
            .get(keys::META_EVENTS_HIGH_WATER)?
            .and_then(|v| EventId::from_slice(&v));
        Ok(stored.max(deleted))
    }

    /// The segment an index entry (`key`, as read: `positions`) points into,
    /// with positions that fit it. The Purger rewrites a segment and every
    /// index entry into it in one transaction, but a reader gets the entry and
    /// the segment in two reads; positions read before a rewrite would point
    /// at the wrong events of the new segment. So the entry is read again
    /// after the segment: if it is unchanged, entry and segment belong
    /// together (a rewrite changes both at once, and positions only ever
    /// shrink, so an equal entry is the same entry); if not, the new one is
    /// tried. In the link index the entry is read from the span holding it
    /// (`IndexTree::positions`). `None`: the segment is gone.
    pub(super) fn entry_segment(
        &self,
        index: IndexTree<'_>,
        key: &[u8],
        mut positions: sled::IVec,
    ) -> StoreResult<Option<(Stored, sled::IVec)>> {
        let Some(segment_id) = keys::pair_suffix::<EventKind>(key) else {
            return Ok(None);
        };
        // Only the visitor index has homes; no stored entry is empty.
        if positions.is_empty() {
            // A home segment (see the module documentation): positions read
            // from the segment, unless a rewrite has given it an entry since.
            let Some(visitor) = VisitorId::from_slice(key) else {
                return Ok(None);
            };
            let Some(stored) = self.segment(segment_id.as_bytes())? else {
                return Ok(None);
            };
            match index.positions(key)? {
                Some(entry) => positions = entry,
                None => {
                    let found = positions_of(&Segment::parse(&stored.body)?, &visitor)?;
                    if found.is_empty() {
                        return Ok(None);
                    }
                    return Ok(Some((stored, segment::encode_positions(&found).into())));
                }
            }
        }
        // A segment is rewritten once per Purger pass at most: a few tries do.
        for _ in 0..16 {
            let Some(stored) = self.segment(segment_id.as_bytes())? else {
                return Ok(None);
            };
            match index.positions(key)? {
                Some(now) if now == positions => return Ok(Some((stored, positions))),
                Some(now) => positions = now,
                None => return Ok(None),
            }
        }
        Err(StoreError::Codec(
            "an event segment kept changing while it was read".into(),
        ))
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
        let mut upper = q.to_ms.map(EventId::lower_bound_bytes);
        if let Some(c) = scan::cursor_id(cursor)? {
            upper = Some(upper.map_or(c, |u| u.min(c)));
        }
        let bounds = Bounds {
            lower: q.from_ms.map(EventId::lower_bound_bytes),
            upper,
        };
        Ok(self
            .walk_events(q, bounds, Direction::NewestFirst, limit)?
            .0)
    }

    /// Whether visitor `id` has a stored event in workspace `ws` (a visitor's
    /// events are all of one workspace, so its first indexed one tells).
    pub fn visitor_has_events_in(&self, ws: &WorkspaceId, id: &VisitorId) -> StoreResult<bool> {
        let index = IndexTree::Spans(&self.inner.events_by_visitor);
        let homes = self.home_keys(id)?;
        let entries = self.index_range(
            index,
            id.as_bytes(),
            homes,
            Bounds::ALL,
            Direction::OldestFirst,
        )?;
        for entry in entries {
            let (key, positions) = entry?;
            let Some((stored, positions)) = self.entry_segment(index, &key, positions)? else {
                continue;
            };
            let Some(pos) = segment::decode_positions(&positions).next() else {
                continue;
            };
            let seg = Segment::parse(&stored.body)?;
            return Ok(seg.event(pos)?.workspace_id == *ws);
        }
        Ok(false)
    }

    /// Events matching `q`, oldest first (the export's order), strictly after
    /// `after` and at or before `until`: the newest event when an export
    /// began, so a walk ends even while scans keep arriving. The next cursor
    /// (an event ID, to pass as `after`) is the last event returned, or the
    /// last one examined when the scan budget ran out first. Also answers
    /// how many candidates the page examined.
    pub fn list_events_oldest_first(
        &self,
        q: &EventQuery,
        after: Option<&[u8]>,
        until: Option<&EventId>,
        limit: usize,
    ) -> StoreResult<(Page<ScanEvent>, u64)> {
        let Some(bounds) = ascending_bounds(q, scan::cursor_id(after)?, until) else {
            let empty = Page {
                items: Vec::new(),
                next_cursor: None,
            };
            return Ok((empty, 0));
        };
        self.walk_events(q, bounds, Direction::OldestFirst, limit)
    }

    /// How many events the index that `q` walks holds between `q`'s time
    /// bounds and `until`, before the other filters: read from the index
    /// entries alone, counting whole segments at the two edges, so it may be
    /// a little more than an oldest-first walk examines.
    pub fn count_event_candidates(
        &self,
        q: &EventQuery,
        until: Option<&EventId>,
    ) -> StoreResult<u64> {
        let Some(bounds) = ascending_bounds(q, None, until) else {
            return Ok(0);
        };
        let Walked { tree, owner, homes } = self.event_index(q)?;
        let mut n = 0u64;
        for entry in self.index_range(tree, owner, homes, bounds, Direction::OldestFirst)? {
            let (key, mut positions) = entry?;
            if positions.is_empty() {
                match self.entry_segment(tree, &key, positions)? {
                    Some((_, found)) => positions = found,
                    None => continue,
                }
            }
            n += segment::decode_positions(&positions).count() as u64;
        }
        Ok(n)
    }

    /// The index a query walks.
    fn event_index<'a>(&'a self, q: &'a EventQuery) -> StoreResult<Walked<'a>> {
        let t = &self.inner;
        let (tree, owner, homes) = match &q.index {
            EventIndex::Workspace => (
                IndexTree::Segments(&t.events_by_workspace),
                q.workspace_id.as_bytes(),
                Vec::new(),
            ),
            EventIndex::Link(id) => (
                IndexTree::Spans(&t.events_by_link),
                id.as_bytes(),
                Vec::new(),
            ),
            EventIndex::Visitor(id) => (
                IndexTree::Spans(&t.events_by_visitor),
                id.as_bytes(),
                self.home_keys(id)?,
            ),
        };
        Ok(Walked { tree, owner, homes })
    }

    /// The visitor index keys (`visitor ++ segment`) of the segments keyed
    /// within the millisecond of `v`'s ID that have no entry of `v`: its
    /// home segments (see the module documentation), ascending. Such a
    /// segment may hold no event of `v` at all: its positions, read from
    /// the segment, are then empty (`entry_segment` answers `None`).
    ///
    /// Every walk of a visitor's events comes here first: the visitor
    /// entries waiting in memory are written into the index before it is
    /// read (`visitor_index.rs`).
    pub(super) fn home_keys(&self, v: &VisitorId) -> StoreResult<Vec<[u8; 32]>> {
        self.settle_visitor_index()?;
        let t = &self.inner;
        let ms = v.timestamp_ms();
        let within =
            EventId::lower_bound_bytes(ms)..EventId::lower_bound_bytes(ms.saturating_add(1));
        let mut out = Vec::new();
        for entry in t.events.range(within) {
            let (segment, _) = entry?;
            let Some(segment) = EventId::from_slice(&segment) else {
                continue;
            };
            let key = keys::pair(v, &segment);
            if span_positions(&t.events_by_visitor, &key)?.is_none() {
                out.push(key);
            }
        }
        Ok(out)
    }

    /// The owner's index entries that may hold events within `bounds`, in
    /// walking order. A segment's index key is its first ID, which is below
    /// every event it holds: the range ends at the upper bound (events at or
    /// above it inside the last segment are met one by one), and an
    /// oldest-first walk starts at the segment that holds the lower bound.
    ///
    /// `homes` (a visitor's home segments without an entry, ascending) take
    /// their places among the entries as entries with empty positions.
    fn index_range<'a>(
        &self,
        index: IndexTree<'a>,
        owner: &[u8; 16],
        homes: Vec<[u8; 32]>,
        bounds: Bounds,
        dir: Direction,
    ) -> StoreResult<IndexEntries<'a>> {
        let tree = index.tree();
        let key = |suffix: &[u8; 16]| -> Vec<u8> { [&owner[..], &suffix[..]].concat() };
        let end = key(&bounds.upper.unwrap_or([0xff; 16]));
        let start = match (dir, bounds.lower) {
            (Direction::OldestFirst, Some(lower)) => {
                let lower = key(&lower);
                let entry = match tree.range(key(&[0; 16])..=lower.clone()).next_back() {
                    Some(entry) => Some(entry?.0.to_vec()),
                    None => None,
                };
                // The segment holding the lower bound may be a home.
                let home = homes.iter().rev().find(|h| h[..] <= lower[..]);
                entry.max(home.map(|h| h.to_vec())).unwrap_or(lower)
            }
            _ => key(&[0; 16]),
        };
        if start >= end {
            return Ok(Box::new(std::iter::empty()));
        }
        let range = tree.range(start.clone()..end.clone());
        let raw: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>> + 'a> = match dir {
            Direction::NewestFirst => Box::new(range.rev()),
            Direction::OldestFirst => Box::new(range),
        };
        let entries: IndexEntries<'a> = match index {
            // Each span read as the entries of its segments.
            IndexTree::Spans(_) => Box::new(raw.flat_map(move |entry| {
                let entries = entry
                    .map_err(StoreError::from)
                    .and_then(|(k, v)| span_entries(&k, &v, bounds, dir));
                let out: Vec<StoreResult<(sled::IVec, sled::IVec)>> = match entries {
                    Ok(entries) => entries.into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(e)],
                };
                out
            })),
            IndexTree::Segments(_) => Box::new(raw.map(|r| r.map_err(StoreError::from))),
        };
        let mut homes: std::collections::VecDeque<[u8; 32]> = homes
            .into_iter()
            .filter(|h| start[..] <= h[..] && h[..] < end[..])
            .collect();
        if homes.is_empty() {
            return Ok(entries);
        }
        if dir == Direction::NewestFirst {
            homes = homes.into_iter().rev().collect();
        }
        // Each home merged in at its place in the walk's order.
        let mut entries = entries.peekable();
        Ok(Box::new(std::iter::from_fn(move || {
            if let Some(h) = homes.front() {
                let home_first = match entries.peek() {
                    None => true,
                    Some(Err(_)) => false,
                    Some(Ok((k, _))) => match dir {
                        Direction::NewestFirst => k[..] < h[..],
                        Direction::OldestFirst => k[..] > h[..],
                    },
                };
                if home_first {
                    return homes.pop_front().map(home_entry).map(Ok);
                }
            }
            entries.next()
        })))
    }

    /// The one walk behind both listings: the index entries of `q` in `dir`
    /// order, the events inside them within `bounds`, filtered, cut into a
    /// page. Also answers how many candidates were examined.
    fn walk_events(
        &self,
        q: &EventQuery,
        bounds: Bounds,
        dir: Direction,
        limit: usize,
    ) -> StoreResult<(Page<ScanEvent>, u64)> {
        let Walked { tree, owner, homes } = self.event_index(q)?;
        let examined = std::cell::Cell::new(0u64);
        let mut tagged: HashMap<LinkId, bool> = HashMap::new();
        let candidates = self
            .index_range(tree, owner, homes, bounds, dir)?
            .flat_map(move |entry| self.segment_candidates(tree, entry, bounds, dir))
            // `None`: past the end of the bounds, where the walk ends.
            .map_while(|c| c)
            .map(|c| {
                examined.set(examined.get() + 1);
                let (cursor, event) = c?;
                let keep = match event {
                    Some(e) if self.event_matches(q, &e, &mut tagged)? => Some(e),
                    _ => None,
                };
                Ok((cursor, keep))
            });
        let page = scan::paginate(candidates, limit, SCAN_BUDGET)?;
        Ok((page, examined.get()))
    }

    /// The events of one index entry (a segment) in `dir` order within
    /// `bounds`; `None` once past the end of the bounds (below the lower one
    /// newest first, at or above the upper one oldest first). Events before
    /// the start of the bounds are skipped.
    fn segment_candidates(
        &self,
        index: IndexTree<'_>,
        entry: StoreResult<(sled::IVec, sled::IVec)>,
        bounds: Bounds,
        dir: Direction,
    ) -> Box<dyn Iterator<Item = Option<Candidate<ScanEvent>>> + '_> {
        let found = entry.and_then(|(key, positions)| {
            let found = self.entry_segment(index, &key, positions)?;
            Ok(found.map(|(v, positions)| {
                (v, segment::decode_positions(&positions).collect::<Vec<_>>())
            }))
        });
        let (stored, positions) = match found {
            Ok(Some(found)) => found,
            Ok(None) => return Box::new(std::iter::empty()),
            Err(e) => return Box::new(std::iter::once(Some(Err(e)))),
        };
        let positions: Box<dyn Iterator<Item = usize>> = match dir {
            Direction::NewestFirst => Box::new(positions.into_iter().rev()),
            Direction::OldestFirst => Box::new(positions.into_iter()),
        };
        Box::new(positions.filter_map(move |pos| {
            let seg = match Segment::parse(&stored.body) {
                Ok(seg) => seg,
                Err(e) => return Some(Some(Err(e))),
            };
            let id = seg.id(pos);
            let below = bounds.lower.is_some_and(|l| id.as_bytes() < &l);
            let above = bounds.upper.is_some_and(|u| id.as_bytes() >= &u);
            let (before_start, past_end) = match dir {
                Direction::NewestFirst => (above, below),
                Direction::OldestFirst => (below, above),
            };
            if before_start {
                return None;
            }
            if past_end {
                return Some(None);
            }
            Some(Some(
                seg.event(pos).map(|e| (id.as_bytes().to_vec(), Some(e))),
            ))
        }))
    }

    /// Every entry of the link index as (link ++ segment, positions), its
    /// spans read as the entries of their segments.
    #[cfg(test)]
    pub(super) fn link_index_entries(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        span_index_entries(&self.inner.events_by_link)
    }

    /// The same for the visitor index (homes have no entry).
    #[cfg(test)]
    pub(super) fn visitor_index_entries(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.settle_visitor_index().unwrap();
        span_index_entries(&self.inner.events_by_visitor)
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
        let hit = self
            .owned_link(&e.workspace_id, &e.link_id)?
            .is_some_and(|l| l.tags.contains(tag));
        tagged.insert(e.link_id, hit);
        Ok(hit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event whose ID carries millisecond `ms` (IDs ascend with `ms`).
    fn event(ms: i64, ws: WorkspaceId, link: LinkId, bot: bool) -> ScanEvent {
        let mut id = EventId::lower_bound_bytes(ms);
        id[15] = 1;
        ScanEvent {
            device_type: if bot {
                DeviceType::Bot
            } else {
                DeviceType::Mobile
            },
            destination: format!("https://e.com/{ms}"),
            bot,
            ..ScanEvent::sample(EventId::from_bytes(id), ws, link)
        }
    }

    fn query(ws: WorkspaceId, index: EventIndex) -> EventQuery {
        EventQuery {
            workspace_id: ws,
            index,
            from_ms: None,
            to_ms: None,
            tag: None,
            country: None,
            device_type: None,
            include_bots: false,
        }
    }

    fn walk(store: &Store, q: &EventQuery, page: usize) -> Vec<i64> {
        let mut out = Vec::new();
        let mut cursor: Option<Vec<u8>> = None;
        loop {
            let p = store.list_events(q, cursor.as_deref(), page).unwrap();
            out.extend(p.items.iter().map(|e| e.timestamp_ms()));
            match p.next_cursor {
                Some(c) => cursor = Some(c),
                None => return out,
            }
        }
    }

    /// Every page of the oldest-first walk, and the candidates it examined.
    fn walk_up(store: &Store, q: &EventQuery, until: Option<&EventId>, page: usize) -> Vec<i64> {
        let mut out = Vec::new();
        let mut cursor: Option<Vec<u8>> = None;
        loop {
            let (p, _) = store
                .list_events_oldest_first(q, cursor.as_deref(), until, page)
                .unwrap();
            assert!(p.items.len() <= page);
            out.extend(p.items.iter().map(|e| e.timestamp_ms()));
            match p.next_cursor {
                Some(c) => cursor = Some(c),
                None => return out,
            }
        }
    }

    #[test]
    fn a_batch_of_large_events_is_written_as_several_segments_that_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8).unwrap();
        let (ws, link) = (WorkspaceId::generate(), LinkId::generate());
        // 2,000 events, each with a referer of its own of 1 KB: about 2 MB.
        const N: i64 = 2000;
        let events: Vec<ScanEvent> = (1..=N)
            .map(|ms| ScanEvent {
                referer: Some(format!("https://ref.example/{ms}/{}", "r".repeat(1000))),
                ..event(ms, ws, link, false)
            })
            .collect();
        let bytes = store.commit_scans_with(&events, &[]).unwrap();
        assert!(bytes > N as usize * 1000, "{bytes} bytes");
        let values: Vec<usize> = store
            .inner
            .events
            .iter()
            .keys()
            .map(|k| store.segment(&k.unwrap()).unwrap().unwrap().body.len())
            .collect();
        assert!(values.len() >= 4, "{} segments", values.len());
        assert!(values.iter().all(|&n| n <= MAX_SEGMENT_BYTES), "{values:?}");
        assert_eq!(values.iter().sum::<usize>(), bytes);
        // Every event reads back, by ID and through the link's index, in order.
        for e in &events {
            assert_eq!(store.event(&e.id).unwrap().as_ref(), Some(e));
        }
        let all = walk(&store, &query(ws, EventIndex::Link(link)), 250);
        assert_eq!(all, (1..=N).rev().collect::<Vec<i64>>());
        assert_eq!(store.link_total_scans(&link).unwrap(), N as u64);
        // A batch of small events stays one segment.
        let small: Vec<ScanEvent> = (N + 1..=N + 100)
            .map(|ms| event(ms, ws, link, false))
            .collect();
        store.commit_scans(&small).unwrap();
        assert_eq!(store.inner.events.len(), values.len() + 1);
    }

    /// Non-bot scans of `link` at each millisecond of `ms`.
    #[test]
    fn a_visitors_home_segment_needs_no_entry_and_is_listed_counted_purged_and_detached() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 4).unwrap();
        let (ws, link) = (WorkspaceId::generate(), LinkId::generate());
        // v's first scans are in the segment keyed at ms 1,000, its home (its
        // ID carries that millisecond); w's ID carries it too, but w first
        // scans in the next segment.
        let (v, w) = (VisitorId::generate_at(1_000), VisitorId::generate_at(1_000));
        let by = |ms, who: Option<VisitorId>| ScanEvent {
            visitor_id: who,
            ..event(ms, ws, link, false)
        };
        store
            .commit_scans(&[by(1_000, Some(v)), by(1_001, None), by(1_002, Some(v))])
            .unwrap();
        store
            .commit_scans(&[by(2_000, Some(v)), by(2_001, Some(w))])
            .unwrap();
        let entries = |who: &VisitorId| {
            store.settle_visitor_index().unwrap();
            let index = &store.inner.events_by_visitor;
            index.scan_prefix(who.as_bytes()).count()
        };
        assert_eq!((entries(&v), entries(&w)), (1, 1), "no entry in the home");
        let of = |who| query(ws, EventIndex::Visitor(who));
        let count = |who| store.count_event_candidates(&of(who), None).unwrap();
        for page in [1, 2, 10] {
            assert_eq!(walk(&store, &of(v), page), [2_000, 1_002, 1_000]);
            assert_eq!(walk_up(&store, &of(v), None, page), [1_000, 1_002, 2_000]);
            assert_eq!(walk(&store, &of(w), page), [2_001]);
        }
        let from = EventQuery {
            from_ms: Some(1_001),
            ..of(v)
        };
        assert_eq!(walk_up(&store, &from, None, 1), [1_002, 2_000]);
        let to = EventQuery {
            to_ms: Some(1_002),
            ..of(v)
        };
        assert_eq!(walk(&store, &to, 1), [1_000]);
        assert_eq!((count(v), count(w)), (3, 1));
        assert!(store.visitor_has_events_in(&ws, &v).unwrap());
        assert!(
            !store
                .visitor_has_events_in(&WorkspaceId::generate(), &v)
                .unwrap()
        );

        // Retention rewrites the home, which keeps its key: v's remaining
        // event there is still found from v's ID, and listed once.
        assert_eq!(purge_before(&store, ws, 1_001), 1);
        assert_eq!(entries(&v), 1);
        assert_eq!(walk(&store, &of(v), 1), [2_000, 1_002]);
        assert_eq!(walk_up(&store, &of(v), None, 1), [1_002, 2_000]);
        assert_eq!(count(v), 2);

        // A home without an entry is detached like any other segment.
        let u = VisitorId::generate_at(3_000);
        store
            .commit_scans(&[by(3_000, Some(u)), by(3_001, Some(v)), by(3_002, Some(u))])
            .unwrap();
        assert_eq!(entries(&u), 0);
        assert_eq!(walk(&store, &of(u), 1), [3_002, 3_000]);
        while store.detach_visitor_step(&u, 1).unwrap() > 0 {}
        assert!(walk(&store, &of(u), 1).is_empty());
        assert_eq!(count(u), 0);
        assert!(!store.visitor_has_events_in(&ws, &u).unwrap());
        let all = walk(&store, &query(ws, EventIndex::Workspace), 10);
        assert_eq!(all, [3_002, 3_001, 3_000, 2_001, 2_000, 1_002, 1_001]);
        let page = store
            .list_events(&query(ws, EventIndex::Workspace), None, 10)
            .unwrap();
        assert!(page.items.iter().all(|e| e.visitor_id != Some(u)));
        assert_eq!(walk(&store, &of(v), 1), [3_001, 2_000, 1_002]);
    }

    #[test]
    fn visitor_entries_wait_for_a_reader_or_a_flush_and_a_stop_that_lost_them_indexes_them_again() {
        let dir = tempfile::tempdir().unwrap();
        let (ws, link) = (WorkspaceId::generate(), LinkId::generate());
        // Four devices seen before, each in every segment: an entry each.
        let devices: Vec<VisitorId> = (0..4).map(|_| VisitorId::generate_at(500)).collect();
        let batch = |n: i64| -> Vec<ScanEvent> {
            (0..4)
                .map(|d| ScanEvent {
                    visitor_id: Some(devices[d as usize]),
                    ..event(1_000 + 10 * n + d, ws, link, false)
                })
                .collect()
        };
        let stored = |store: &Store| store.inner.events_by_visitor.len();
        let of = |v: VisitorId| query(ws, EventIndex::Visitor(v));
        let expected = |d: i64, batches: i64| -> Vec<i64> {
            (0..batches).rev().map(|n| 1_000 + 10 * n + d).collect()
        };
        {
            let store = Store::open(dir.path(), 4).unwrap();
            for n in 0..3 {
                store.commit_scans(&batch(n)).unwrap();
            }
            // Committed, the entries wait in memory, and a reader writes them.
            assert_eq!(stored(&store), 0);
            assert_eq!(store.inner.visitor_index().waiting(), 12);
            assert_eq!(walk(&store, &of(devices[1]), 2), expected(1, 3));
            assert_eq!(
                (stored(&store), store.inner.visitor_index().waiting()),
                (4, 0)
            );
            // The Recorder writes them itself after `PENDING_SEGMENTS`.
            for n in 3..3 + super::super::visitor_index::PENDING_SEGMENTS as i64 {
                store.commit_scans(&batch(n)).unwrap();
            }
            assert_eq!(store.inner.visitor_index().waiting(), 0);
            // A flush writes them too.
            store.commit_scans(&batch(19)).unwrap();
            assert_eq!(store.inner.visitor_index().waiting(), 4);
            store.flush().unwrap();
            assert_eq!(store.inner.visitor_index().waiting(), 0);
            // Five segments more, whose entries a crash loses: the segments
            // reach the disk, the memory holding their entries does not.
            for n in 20..25 {
                store.commit_scans(&batch(n)).unwrap();
            }
            store.inner.visitor_index().forget();
            store.flush().unwrap();
            for (d, device) in devices.iter().enumerate() {
                assert_eq!(walk(&store, &of(*device), 7), expected(d as i64, 20));
            }
        }
        // Opened again, the store indexes the segments after its position.
        let store = Store::open(dir.path(), 4).unwrap();
        for (d, device) in devices.iter().enumerate() {
            assert_eq!(walk(&store, &of(*device), 7), expected(d as i64, 25));
            let candidates = store.count_event_candidates(&of(*device), None);
            assert_eq!(candidates.unwrap(), 25);
        }
        let entries = store.visitor_index_entries();
        assert_eq!(entries.len(), 4 * 25, "one entry per device and segment");
        // Opened once more, nothing is indexed twice.
        drop(store);
        let store = Store::open(dir.path(), 4).unwrap();
        assert_eq!(store.visitor_index_entries(), entries);
    }

    #[test]
    fn a_returning_visitors_entries_are_spans_that_list_count_purge_and_detach() {
        let dir = tempfile::tempdir().unwrap();
        let (ws, link) = (WorkspaceId::generate(), LinkId::generate());
        let v = VisitorId::generate_at(1_000);
        let by = |ms, who: Option<VisitorId>| ScanEvent {
            visitor_id: who,
            ..event(ms, ws, link, false)
        };
        // 40 segments of two scans: v's in each (its home first), another
        // visitor's or none beside it.
        let batch = |n: i64| {
            let ms = 1_000 + 10 * n;
            let other = (n % 2 == 0).then(|| VisitorId::generate_at(ms + 1));
            vec![by(ms, Some(v)), by(ms + 1, other)]
        };
        let keys = |store: &Store| {
            store.settle_visitor_index().unwrap();
            let index = &store.inner.events_by_visitor;
            index.scan_prefix(v.as_bytes()).count()
        };
        let of = query(ws, EventIndex::Visitor(v));
        let mut all: Vec<i64> = Vec::new();
        {
            let store = Store::open(dir.path(), 4).unwrap();
            for n in 0..40 {
                store.commit_scans(&batch(n)).unwrap();
                all.insert(0, 1_000 + 10 * n);
            }
            // The home has no entry; 39 segments in spans of 16, 16 and 7.
            assert_eq!(keys(&store), 3);
            let entries = store.visitor_index_entries();
            let of_v = entries.iter().filter(|(k, _)| k.starts_with(v.as_bytes()));
            assert_eq!(of_v.count(), 39);
            for page in [1, 3, 100] {
                assert_eq!(walk(&store, &of, page), all);
            }
            let mut up = all.clone();
            up.reverse();
            assert_eq!(walk_up(&store, &of, None, 7), up);
            let inside = EventQuery {
                from_ms: Some(1_155),
                to_ms: Some(1_305),
                ..of.clone()
            };
            let expected: Vec<i64> = (16..=30).rev().map(|n| 1_000 + 10 * n).collect();
            assert_eq!(walk(&store, &inside, 4), expected);
            assert_eq!(store.count_event_candidates(&of, None).unwrap(), 40);
            assert!(store.visitor_has_events_in(&ws, &v).unwrap());
        }
        // Reopened, no open span is known: the next segments start a new one.
        let store = Store::open(dir.path(), 4).unwrap();
        for n in 40..45 {
            store.commit_scans(&batch(n)).unwrap();
            all.insert(0, 1_000 + 10 * n);
        }
        assert_eq!(keys(&store), 4);
        assert_eq!(walk(&store, &of, 5), all);

        // Retention takes the first 20 segments: the first span loses its
        // segments (and goes), the second keeps its key.
        let plan = super::super::PurgePlan {
            workspace: ws,
            before_ms: 1_200,
            up_to: store.last_event_id().unwrap(),
        };
        let (mut deleted, mut after) = (0, None);
        loop {
            let step = store.purge_step(&plan, after, 3, false).unwrap();
            deleted += step.report.events;
            match step.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(deleted, 2 * 20);
        all.truncate(all.len() - 20);
        assert_eq!(walk(&store, &of, 3), all);
        assert_eq!(keys(&store), 3);
        assert_eq!(store.count_event_candidates(&of, None).unwrap(), 25);

        // An erasure detaches every segment, two at a time, and leaves no key.
        while store.detach_visitor_step(&v, 2).unwrap() > 0 {}
        assert_eq!(keys(&store), 0);
        assert!(walk(&store, &of, 10).is_empty());
        assert!(!store.visitor_has_events_in(&ws, &v).unwrap());
        let everything = walk(&store, &query(ws, EventIndex::Workspace), 100);
        assert_eq!(everything.len(), 2 * 25, "detached, not deleted");
    }

    #[test]
    fn visitor_entries_of_the_former_layout_are_read_among_spans() {
        let dir = tempfile::tempdir().unwrap();
        let (ws, link) = (WorkspaceId::generate(), LinkId::generate());
        let v = VisitorId::generate_at(1_000);
        let batch = |n: i64| {
            let ms = 1_000 + 10 * n;
            let e = |ms, who| ScanEvent {
                visitor_id: who,
                ..event(ms, ws, link, false)
            };
            vec![e(ms, Some(v)), e(ms + 1, None)]
        };
        let keys = |store: &Store| {
            store.settle_visitor_index().unwrap();
            store
                .inner
                .events_by_visitor
                .scan_prefix(v.as_bytes())
                .count()
        };
        let of = query(ws, EventIndex::Visitor(v));
        let mut all: Vec<i64> = (0..20).rev().map(|n| 1_000 + 10 * n).collect();
        {
            let store = Store::open(dir.path(), 4).unwrap();
            for n in 0..10 {
                store.commit_scans(&batch(n)).unwrap();
            }
            // Rewritten as a store of the former layout holds them: a key
            // per (visitor, segment), the positions alone.
            let entries = store.visitor_index_entries();
            store.inner.events_by_visitor.clear().unwrap();
            for (key, positions) in &entries {
                assert_eq!(positions.len() % 2, 0);
                let index = &store.inner.events_by_visitor;
                index.insert(key, positions.as_slice()).unwrap();
            }
            assert_eq!(keys(&store), 9, "the home has none");
        }
        let store = Store::open(dir.path(), 4).unwrap();
        for n in 10..20 {
            store.commit_scans(&batch(n)).unwrap();
        }
        assert_eq!(keys(&store), 9 + 1, "the new segments in one span");
        assert_eq!(walk(&store, &of, 3), all);
        assert_eq!(store.count_event_candidates(&of, None).unwrap(), 20);
        // Retention rewrites former entries and spans alike.
        let plan = super::super::PurgePlan {
            workspace: ws,
            before_ms: 1_050,
            up_to: store.last_event_id().unwrap(),
        };
        assert!(
            store
                .purge_step(&plan, None, 100, false)
                .unwrap()
                .next
                .is_none()
        );
        all.truncate(15);
        assert_eq!(walk(&store, &of, 4), all);
        assert_eq!(keys(&store), 5 + 1);
        while store.detach_visitor_step(&v, 3).unwrap() > 0 {}
        assert_eq!(keys(&store), 0);
        assert!(walk(&store, &of, 4).is_empty());
    }

    fn scans(ws: WorkspaceId, link: LinkId, ms: std::ops::RangeInclusive<i64>) -> Vec<ScanEvent> {
        ms.map(|ms| event(ms, ws, link, false)).collect()
    }

    /// Deletes the events of `ws` before `ms` (one retention step);
    /// answers how many.
    fn purge_before(store: &Store, ws: WorkspaceId, ms: i64) -> u64 {
        let plan = super::super::PurgePlan {
            workspace: ws,
            before_ms: ms,
            up_to: store.last_event_id().unwrap(),
        };
        store
            .purge_step(&plan, None, 10, false)
            .unwrap()
            .report
            .events
    }

    fn body_file(dir: &std::path::Path, n: u32) -> std::path::PathBuf {
        dir.join(super::super::FORMAT_DIR)
            .join(super::super::bodies::DIR)
            .join(format!("{n:08}.seg"))
    }

    #[test]
    fn segments_whose_bodies_a_power_cut_took_are_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let (ws, link) = (WorkspaceId::generate(), LinkId::generate());
        let early: Vec<ScanEvent> = scans(ws, link, 1..=10);
        let late: Vec<ScanEvent> = scans(ws, link, 11..=20);
        let durable_len = {
            let store = Store::open(dir.path(), 8).unwrap();
            store.commit_scans(&early).unwrap();
            store.flush().unwrap();
            let len = std::fs::metadata(body_file(dir.path(), 1)).unwrap().len();
            store.commit_scans(&late[..5]).unwrap();
            store.commit_scans(&late[5..]).unwrap();
            // A consumer saw the newest event before the power cut.
            let seen = super::super::ConsumerRecord {
                position: Some(late[9].id),
                events: 20,
                state: Vec::new(),
            };
            store.save_consumer("counters", &seen).unwrap();
            store.flush().unwrap();
            len
        };
        // The power cut: sled's log kept the two newest pointers (the kernel
        // wrote it back early), the body file only what the first flush
        // synced, and three bytes of what followed.
        let file = std::fs::File::options()
            .write(true)
            .open(body_file(dir.path(), 1))
            .unwrap();
        file.set_len(durable_len + 3).unwrap();
        drop(file);
        let store = Store::open(dir.path(), 8).unwrap();
        assert_eq!(
            store.inner.events.len(),
            1,
            "the two lost segments are removed"
        );
        assert_eq!(store.events_after(None, 100).unwrap(), early);
        for e in &late {
            assert_eq!(store.event(&e.id).unwrap(), None);
        }
        let listed = walk(&store, &query(ws, EventIndex::Link(link)), 100);
        assert_eq!(listed, (1..=10).rev().collect::<Vec<i64>>());
        assert_eq!(
            store.last_event_id().unwrap(),
            Some(late[9].id),
            "new IDs come after every one a consumer saw"
        );
        // Writing goes on after the torn bytes.
        let next = event(30, ws, link, false);
        store.commit_scans(std::slice::from_ref(&next)).unwrap();
        assert_eq!(store.event(&next.id).unwrap(), Some(next));
        drop(store);
        let store = Store::open(dir.path(), 8).unwrap();
        assert_eq!(
            store.events_after(None, 100).unwrap().len(),
            11,
            "nothing more lost"
        );
    }

    #[test]
    fn segments_stored_inline_by_older_versions_still_read_and_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8).unwrap();
        let (ws, link) = (WorkspaceId::generate(), LinkId::generate());
        let events: Vec<ScanEvent> = scans(ws, link, 1..=10);
        store.commit_scans(&events).unwrap();
        // The value as a store written before bodies moved to files holds it.
        let key = events[0].id;
        let body = store.segment(key.as_bytes()).unwrap().unwrap().body;
        store
            .inner
            .events
            .insert(key.as_bytes(), &body[..])
            .unwrap();
        assert!(matches!(
            store.segment(key.as_bytes()).unwrap().unwrap().body,
            Body::Inline(_)
        ));
        assert_eq!(
            store.event(&events[4].id).unwrap().as_ref(),
            Some(&events[4])
        );
        assert_eq!(store.events_after(None, 100).unwrap(), events);
        // Retention rewrites it as a body in a file.
        assert_eq!(purge_before(&store, ws, 6), 5);
        let raw = store.inner.events.get(key.as_bytes()).unwrap().unwrap();
        assert!(super::super::bodies::Pointer::decode(&raw).is_some());
        assert_eq!(store.events_after(None, 100).unwrap(), events[5..]);
    }

    /// Strict mode has acknowledged the scans it commits (they are in the
    /// scan log), so their bodies are fsynced before their pointers can
    /// reach the disk: a flush that began before a batched commit can make
    /// its pointers durable without its bodies.
    #[test]
    fn the_bodies_of_logged_scans_are_durable_before_their_pointers_are_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8).unwrap();
        let (ws, link) = (WorkspaceId::generate(), LinkId::generate());
        let all = scans(ws, link, 1..=10);
        store.commit_scans(&all[..5]).unwrap();
        assert!(
            store.inner.bodies.unsynced(),
            "a batched commit leaves its bodies to the next flush"
        );
        store.flush().unwrap();
        store.commit_logged_scans(&all[5..], &[]).unwrap();
        assert!(!store.inner.bodies.unsynced());
        assert_eq!(store.events_after(None, 100).unwrap(), all);
    }

    #[test]
    fn body_files_nothing_points_into_are_removed_after_retention() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8).unwrap();
        let (ws, link) = (WorkspaceId::generate(), LinkId::generate());
        let old: Vec<ScanEvent> = scans(ws, link, 1..=10);
        let new: Vec<ScanEvent> = scans(ws, link, 11..=20);
        store.commit_scans(&old).unwrap();
        store.inner.bodies.roll().unwrap();
        store.commit_scans(&new).unwrap();
        assert_eq!(
            store.remove_unreferenced_bodies().unwrap(),
            0,
            "both in use"
        );
        assert_eq!(purge_before(&store, ws, 11), 10);
        assert!(body_file(dir.path(), 1).exists());
        assert_eq!(store.remove_unreferenced_bodies().unwrap(), 1);
        assert!(!body_file(dir.path(), 1).exists());
        assert_eq!(store.events_after(None, 100).unwrap(), new);
    }

    #[test]
    fn segments_list_newest_first_across_boundaries_with_bounds_and_lookups() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8).unwrap();
        let (ws, other_ws) = (WorkspaceId::generate(), WorkspaceId::generate());
        let (a, b, c) = (LinkId::generate(), LinkId::generate(), LinkId::generate());
        // Three batches (segments): ms 1..=3, 4..=7, 8..=12; link `a` in every batch.
        let batches: Vec<Vec<ScanEvent>> = vec![
            vec![
                event(1, ws, a, false),
                event(2, ws, b, false),
                event(3, other_ws, c, false),
            ],
            vec![
                event(4, ws, a, false),
                event(5, ws, a, true),
                event(6, ws, b, false),
                event(7, other_ws, c, false),
            ],
            vec![
                event(8, ws, a, false),
                event(9, ws, b, false),
                event(10, ws, a, false),
                event(11, other_ws, c, false),
                event(12, ws, b, false),
            ],
        ];
        for batch in &batches {
            store.commit_scans(batch).unwrap();
        }
        let all = query(ws, EventIndex::Workspace);
        assert_eq!(
            walk(&store, &all, 2),
            [12, 10, 9, 8, 6, 4, 2, 1],
            "bots hidden, other workspace excluded"
        );
        assert_eq!(walk(&store, &all, 100), walk(&store, &all, 1));
        let with_bots = EventQuery {
            include_bots: true,
            ..all.clone()
        };
        assert_eq!(walk(&store, &with_bots, 3), [12, 10, 9, 8, 6, 5, 4, 2, 1]);
        assert_eq!(
            walk(&store, &query(ws, EventIndex::Link(a)), 2),
            [10, 8, 4, 1]
        );
        // `from` inclusive and `to` exclusive, both cutting through the middle segment.
        let bounded = EventQuery {
            from_ms: Some(5),
            to_ms: Some(9),
            include_bots: true,
            ..all.clone()
        };
        assert_eq!(walk(&store, &bounded, 2), [8, 6, 5]);
        let only_old = EventQuery {
            to_ms: Some(4),
            ..all.clone()
        };
        assert_eq!(walk(&store, &only_old, 10), [2, 1]);
        // Another workspace never sees these, even through a link index.
        assert!(walk(&store, &query(other_ws, EventIndex::Link(a)), 10).is_empty());
        for e in batches.iter().flatten() {
            assert_eq!(store.event(&e.id).unwrap().as_ref(), Some(e));
        }
        assert_eq!(
            store
                .event(&EventId::from_bytes(EventId::lower_bound_bytes(6)))
                .unwrap(),
            None,
            "an ID between events"
        );
        assert_eq!(store.event(&EventId::from_bytes([0; 16])).unwrap(), None);
        assert_eq!(store.last_event_id().unwrap(), Some(batches[2][4].id));
        assert_eq!(
            store.link_total_scans(&a).unwrap(),
            4,
            "the bot scan is not counted"
        );
        for bad in [&[][..], &[1; 15], &[1; 17]] {
            let got = store.list_events(&all, Some(bad), 2);
            assert!(matches!(got, Err(StoreError::BadCursor)), "{bad:?}");
        }
    }

    #[test]
    fn oldest_first_walks_are_the_newest_first_ones_reversed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8).unwrap();
        let (ws, other_ws) = (WorkspaceId::generate(), WorkspaceId::generate());
        let (a, b) = (LinkId::generate(), LinkId::generate());
        // Segments of 1 to 7 events; link `a` on every third, bots on every fifth.
        let mut ms = 0;
        let mut all_events = Vec::new();
        for size in [3, 1, 7, 2, 5, 4, 6] {
            let batch: Vec<ScanEvent> = (0..size)
                .map(|_| {
                    ms += 1;
                    let owner = if ms % 7 == 0 { other_ws } else { ws };
                    let link = if ms % 3 == 0 { a } else { b };
                    event(ms, owner, link, ms % 5 == 0)
                })
                .collect();
            store.commit_scans(&batch).unwrap();
            all_events.extend(batch);
        }
        let all = query(ws, EventIndex::Workspace);
        let queries = [
            all.clone(),
            EventQuery {
                include_bots: true,
                ..all.clone()
            },
            query(ws, EventIndex::Link(a)),
            EventQuery {
                from_ms: Some(4),
                to_ms: Some(20),
                include_bots: true,
                ..all.clone()
            },
            EventQuery {
                from_ms: Some(11),
                ..query(ws, EventIndex::Link(b))
            },
            EventQuery {
                to_ms: Some(2),
                ..all.clone()
            },
            EventQuery {
                from_ms: Some(1000),
                ..all.clone()
            },
            query(other_ws, EventIndex::Link(a)),
        ];
        for q in &queries {
            let mut down = walk(&store, q, 3);
            down.reverse();
            for page in [1, 2, 5, 100] {
                assert_eq!(
                    walk_up(&store, q, None, page),
                    down,
                    "{q:?}, pages of {page}"
                );
            }
        }
        assert_eq!(walk_up(&store, &all, None, 4).first(), Some(&1));
        // `until` is inclusive, and ends the walk inside a segment.
        let until = all_events[9].id;
        let upto: Vec<i64> = walk_up(&store, &all, None, 2);
        let cut: Vec<i64> = upto.iter().copied().filter(|&m| m <= 10).collect();
        assert_eq!(walk_up(&store, &all, Some(&until), 2), cut);
        // The candidate count covers what a walk examines, whole segments at the edges.
        let examined = |q: &EventQuery, until: Option<&EventId>| {
            store
                .list_events_oldest_first(q, None, until, 1000)
                .unwrap()
                .1
        };
        for q in &queries {
            let count = store.count_event_candidates(q, None).unwrap();
            assert!(count >= examined(q, None), "{q:?}");
        }
        assert_eq!(store.count_event_candidates(&all, None).unwrap(), 24);
        assert_eq!(examined(&all, None), 24, "bots are examined, then left out");
        assert_eq!(examined(&all, Some(&until)), 9);
        let after_last = all_events.last().unwrap().id.as_bytes().to_vec();
        let (p, n) = store
            .list_events_oldest_first(&all, Some(&after_last), None, 10)
            .unwrap();
        assert!(p.items.is_empty() && p.next_cursor.is_none() && n == 0);
        let got = store.list_events_oldest_first(&all, Some(&[1; 3]), None, 2);
        assert!(matches!(got, Err(StoreError::BadCursor)));
    }

    /// What a walk of `q` lists from `events`, newest first (ms).
    fn brute(events: &[ScanEvent], q: &EventQuery) -> Vec<i64> {
        let mut out: Vec<i64> = events
            .iter()
            .filter(|e| e.workspace_id == q.workspace_id && (q.include_bots || !e.bot))
            .filter(|e| match q.index {
                EventIndex::Link(l) => e.link_id == l,
                EventIndex::Workspace => true,
                EventIndex::Visitor(v) => e.visitor_id == Some(v),
            })
            .map(|e| e.timestamp_ms())
            .filter(|ms| q.from_ms.is_none_or(|f| *ms >= f) && q.to_ms.is_none_or(|t| *ms < t))
            .collect();
        out.reverse();
        out
    }

    /// Checks every listing of `links` (unbounded, and bounded at each of
    /// `cuts` in turn) against `brute`, both ways, and the candidate counts.
    fn check_links(
        store: &Store,
        ws: WorkspaceId,
        links: &[LinkId],
        events: &[ScanEvent],
        cuts: &[i64],
    ) {
        for &link in links {
            let all = query(ws, EventIndex::Link(link));
            let mut queries = vec![
                all.clone(),
                EventQuery {
                    include_bots: true,
                    ..all.clone()
                },
            ];
            for (i, &from) in cuts.iter().enumerate() {
                queries.push(EventQuery {
                    from_ms: Some(from),
                    ..all.clone()
                });
                queries.push(EventQuery {
                    to_ms: Some(from),
                    include_bots: true,
                    ..all.clone()
                });
                for &to in &cuts[i..] {
                    queries.push(EventQuery {
                        from_ms: Some(from),
                        to_ms: Some(to + 1),
                        ..all.clone()
                    });
                }
            }
            for q in &queries {
                let expected = brute(events, q);
                for page in [1, 3, 1000] {
                    assert_eq!(walk(store, q, page), expected, "{q:?}, pages of {page}");
                }
                let mut up = expected.clone();
                up.reverse();
                for page in [1, 4, 1000] {
                    assert_eq!(walk_up(store, q, None, page), up, "{q:?} up, {page}");
                }
                let counted = store.count_event_candidates(q, None).unwrap();
                let examined = store
                    .list_events_oldest_first(q, None, None, 10_000)
                    .unwrap()
                    .1;
                assert!(counted >= examined, "{q:?}: {counted} < {examined}");
                let with_bots = EventQuery {
                    include_bots: true,
                    ..q.clone()
                };
                assert!(counted >= brute(events, &with_bots).len() as u64, "{q:?}");
            }
            let every = EventQuery {
                include_bots: true,
                ..all.clone()
            };
            assert_eq!(
                store.count_event_candidates(&every, None).unwrap(),
                brute(events, &every).len() as u64,
                "unbounded, the count is exact"
            );
        }
    }

    /// `count` batches of scans from `ms` on, of sizes 1 to 4: link `a` in
    /// almost every one, `b` in every third, `c` in every seventh; bots now
    /// and then.
    fn link_batches(
        ws: WorkspaceId,
        [a, b, c]: [LinkId; 3],
        ms: &mut i64,
        count: usize,
    ) -> Vec<Vec<ScanEvent>> {
        (0..count)
            .map(|n| {
                let mut links = Vec::new();
                if n % 11 != 5 {
                    links.push(a);
                }
                if n % 3 == 0 {
                    links.push(b);
                }
                if n % 7 == 2 {
                    links.push(c);
                    links.push(a);
                }
                links.push(LinkId::generate());
                links
                    .into_iter()
                    .map(|l| {
                        *ms += 1;
                        event(*ms, ws, l, *ms % 5 == 0)
                    })
                    .collect()
            })
            .collect()
    }

    fn span_keys(store: &Store, link: &LinkId) -> usize {
        store
            .inner
            .events_by_link
            .scan_prefix(link.as_bytes())
            .count()
    }

    /// Three links of a new workspace scanned into `segments` segments
    /// (`link_batches` from 1,000 ms on): the workspace, the links, the
    /// next millisecond and the events committed.
    fn three_links_scanned(
        store: &Store,
        segments: usize,
    ) -> (WorkspaceId, [LinkId; 3], i64, Vec<ScanEvent>) {
        let links = [LinkId::generate(), LinkId::generate(), LinkId::generate()];
        let ws = WorkspaceId::generate();
        let mut ms = 1_000;
        let mut events = Vec::new();
        for batch in link_batches(ws, links, &mut ms, segments) {
            store.commit_scans(&batch).unwrap();
            events.extend(batch);
        }
        (ws, links, ms, events)
    }

    #[test]
    fn a_links_entries_are_spans_of_segments_that_fill_roll_over_and_list_like_every_event() {
        let dir = tempfile::tempdir().unwrap();
        let (ws, links, mut ms, mut events);
        {
            let store = Store::open(dir.path(), 8).unwrap();
            (ws, links, ms, events) = three_links_scanned(&store, 40);
            let [a, b, c] = links;
            // Link `a` is in 37 of the 40 segments: spans of 16, 16 and 5.
            assert_eq!(span_keys(&store, &a), 3);
            assert_eq!(span_keys(&store, &b), 1, "14 segments");
            assert_eq!(span_keys(&store, &c), 1);
            // One link, one segment: one key, a span of one.
            let one = events.last().unwrap().link_id;
            assert_eq!(span_keys(&store, &one), 1);
            // Cuts inside spans: in the first, at the edge of two, in the last.
            let cuts = [1_003, 1_040, 1_047, 1_070, 1_090, 1_200];
            check_links(&store, ws, &links, &events, &cuts);
            // Every event is found by ID and through the index.
            for e in &events {
                assert_eq!(store.event(&e.id).unwrap().as_ref(), Some(e));
            }
        }
        // Reopened: no open span is known, so the next scans start new ones.
        let [a, ..] = links;
        let store = Store::open(dir.path(), 8).unwrap();
        assert!(store.open_spans().is_empty());
        for batch in link_batches(ws, links, &mut ms, 30) {
            store.commit_scans(&batch).unwrap();
            events.extend(batch);
        }
        assert_eq!(span_keys(&store, &a), 3 + 2, "28 more segments: 16 and 12");
        let cuts = [1_003, 1_047, 1_090, 1_110, 1_130, 1_150];
        check_links(&store, ws, &links, &events, &cuts);
        // An open span the Purger removed is not written to again.
        let (span_key, _) = store
            .inner
            .events_by_link
            .scan_prefix(a.as_bytes())
            .next_back()
            .unwrap()
            .unwrap();
        let value = store
            .inner
            .events_by_link
            .remove(&span_key)
            .unwrap()
            .unwrap();
        let gone = segment::decode_span(&key_segment(&span_key).unwrap(), &value).unwrap();
        let gone: Vec<[u8; 16]> = gone.into_iter().map(|(s, _)| s).collect();
        events.retain(|e| {
            let segment = store
                .inner
                .events
                .range(..=&e.id.as_bytes()[..])
                .next_back()
                .unwrap()
                .unwrap()
                .0;
            !(e.link_id == a && gone.iter().any(|g| g[..] == segment[..]))
        });
        let before = span_keys(&store, &a);
        for batch in link_batches(ws, links, &mut ms, 3) {
            store.commit_scans(&batch).unwrap();
            events.extend(batch);
        }
        assert_eq!(span_keys(&store, &a), before + 1);
        check_links(&store, ws, &links, &events, &cuts);
    }

    #[test]
    fn link_index_entries_of_the_former_layout_are_read_among_spans() {
        let dir = tempfile::tempdir().unwrap();
        let (ws, links, mut ms, mut events);
        {
            let store = Store::open(dir.path(), 8).unwrap();
            (ws, links, ms, events) = three_links_scanned(&store, 24);
            let [a, b, _] = links;
            // As an older store would hold them: one entry per segment,
            // positions only, for every segment of links `a` and `b` in the
            // first 24 batches (and the links of one scan).
            for link in [a, b] {
                let index = &store.inner.events_by_link;
                let spans: Vec<(sled::IVec, sled::IVec)> = index
                    .scan_prefix(link.as_bytes())
                    .collect::<Result<_, _>>()
                    .unwrap();
                for (key, value) in spans {
                    index.remove(&key).unwrap();
                    let parts = segment::decode_span(&key_segment(&key).unwrap(), &value).unwrap();
                    for (s, positions) in parts {
                        let old = segment::encode_positions(&positions);
                        assert_eq!(old.len() % 2, 0);
                        index.insert(index_key(&key, &s), old).unwrap();
                    }
                }
            }
            assert!(span_keys(&store, &a) > 16);
        }
        // The next scans start spans after them.
        let [a, ..] = links;
        let store = Store::open(dir.path(), 8).unwrap();
        let cuts = [1_003, 1_020, 1_040, 1_050, 1_090];
        check_links(&store, ws, &links, &events, &cuts);
        let before = span_keys(&store, &a);
        for batch in link_batches(ws, links, &mut ms, 20) {
            store.commit_scans(&batch).unwrap();
            events.extend(batch);
        }
        assert_eq!(
            span_keys(&store, &a),
            before + 2,
            "19 more segments: 16 and 3"
        );
        let cuts = [1_003, 1_040, 1_060, 1_080, 1_100, 1_120];
        check_links(&store, ws, &links, &events, &cuts);
        // The lookups of single entries read both.
        for (key, positions) in store.link_index_entries() {
            let (_, found) = store
                .entry_segment(
                    IndexTree::Spans(&store.inner.events_by_link),
                    &key,
                    positions.clone().into(),
                )
                .unwrap()
                .unwrap();
            assert_eq!(found[..], positions[..]);
        }
    }

    #[test]
    fn a_link_with_many_scans_per_segment_gets_spans_of_fewer_segments() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8).unwrap();
        let (ws, link) = (WorkspaceId::generate(), LinkId::generate());
        let mut events = Vec::new();
        // 500 scans a segment: 1,018 bytes of it in a span, so 4 fit.
        for n in 0..10 {
            let batch = scans(ws, link, n * 500 + 1..=n * 500 + 500);
            store.commit_scans(&batch).unwrap();
            events.extend(batch);
        }
        assert_eq!(span_keys(&store, &link), 3);
        let longest = store
            .inner
            .events_by_link
            .iter()
            .values()
            .map(|v| v.unwrap().len())
            .max();
        assert!(longest <= Some(SPAN_MAX_BYTES), "{longest:?}");
        let all = query(ws, EventIndex::Link(link));
        let bounded = EventQuery {
            from_ms: Some(700),
            to_ms: Some(4_100),
            ..all.clone()
        };
        for q in [&all, &bounded] {
            let expected = brute(&events, q);
            assert_eq!(walk(&store, q, 700), expected);
            let mut up = expected.clone();
            up.reverse();
            assert_eq!(walk_up(&store, q, None, 900), up);
        }
    }
}
