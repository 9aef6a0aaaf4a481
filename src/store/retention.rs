//! Retention: deleting a workspace's scan events older than a cut-off.
//!
//! Events live in segments (one per committed batch, `segment.rs`) that hold
//! events of many workspaces, so deleting cannot remove single keys. Each
//! segment that holds events to delete is **rewritten** without them, in one
//! transaction together with:
//!
//! - every index entry pointing into it, of every owner (link, workspace,
//!   visitor) and not only the purged workspace's: positions shift when
//!   events leave a segment, so each entry gets the new positions of its
//!   owner's remaining events, or is removed when none remain (a link's
//!   entry is one segment of a span, see `events.rs`: the span is rewritten
//!   with that segment's new positions or without it, and removed when it
//!   is left empty);
//! - the totals of what was deleted (tree `purged`): per link and per
//!   workspace the non-bot scans, per workspace all events, so that lifetime
//!   counters can still be checked as "recount of stored events + purged";
//! - the highest deleted event ID (`meta`), so `last_event_id` never goes back.
//!
//! A segment left empty is removed. A rewritten segment keeps its key, the
//! first event ID it was written with, even when that event was deleted: a
//! segment's key is then **at most** its first ID, not equal to it. Every
//! read relies only on that (and on segments covering disjoint, ascending ID
//! ranges, which deleting preserves): finding the segment of an ID seeks the
//! last key at or before it, and listings end their key ranges at the upper
//! bound. The deleted events' IDs and records are not copied into the new
//! value, so once sled has dropped the old value (after `scanhop compact` at
//! the latest, see `compact.rs`) no byte of them is left.
//!
//! Candidates are found through the workspace's index (`events_by_workspace`,
//! keyed by workspace and segment, so time-ordered per workspace): the walk
//! touches only that workspace's old segments and stops at the first one that
//! still holds an event of it to keep. A step rewrites at most a given number
//! of segments, each in its own short transaction; all decoding and encoding
//! happens before the transaction, which only checks that the segment is
//! unchanged and writes (sled's transactions hold a lock every other store
//! operation waits for, the Recorder's commits included).

use std::collections::BTreeMap;
use std::ops::Bound;

use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use super::events::{IndexTree, Stored};
use super::links::decode_count;
use super::segment::{self, Segment};
use super::{Store, StoreError, StoreResult, keys};
use crate::ids::{EventId, EventKind, LinkId, WorkspaceId};

/// What one purge may delete: `workspace`'s events made before `before_ms`
/// (milliseconds since the epoch) with IDs at or below `up_to`, the lowest
/// position of the consumers that still have to see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgePlan {
    pub workspace: WorkspaceId,
    pub before_ms: i64,
    /// `None`: a consumer has no position yet, so nothing may be deleted.
    pub up_to: Option<EventId>,
}

/// What a purge deleted (or, in a dry run, would delete).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Events deleted, bots included.
    pub events: u64,
    /// Of those, the ones that were not bots (what `total_scans` counts).
    pub scans: u64,
    /// Segments written again with their remaining events.
    pub segments_rewritten: u64,
    /// Segments removed because none of their events remained.
    pub segments_removed: u64,
}

impl PurgeReport {
    pub fn segments(&self) -> u64 {
        self.segments_rewritten + self.segments_removed
    }

    pub fn add(&mut self, other: &PurgeReport) {
        self.events += other.events;
        self.scans += other.scans;
        self.segments_rewritten += other.segments_rewritten;
        self.segments_removed += other.segments_removed;
    }
}

/// One bounded step of a purge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgeStep {
    pub report: PurgeReport,
    /// The segment the next step continues after; `None` when the purge of
    /// this plan is complete.
    pub next: Option<EventId>,
}

/// Which index an entry belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Index {
    Link,
    Workspace,
    Visitor,
}

/// A segment's rewrite, prepared outside the transaction that applies it.
struct Rewrite {
    key: EventId,
    /// The segment as it was read: the transaction writes only if it is
    /// still exactly this.
    old: sled::IVec,
    /// The segment's body without the deleted events; `None` removes it.
    new: Option<Vec<u8>>,
    /// Every index entry into the segment: new positions, or `None` to remove.
    entries: BTreeMap<(Index, [u8; 32]), Option<Vec<u8>>>,
    /// Additions to the `purged` totals.
    purged: BTreeMap<[u8; 17], u64>,
    high_water: EventId,
    report: PurgeReport,
}

type TxResult = Result<bool, ConflictableTransactionError<StoreError>>;

fn corrupt(what: &str) -> StoreError {
    StoreError::Codec(format!("event index is inconsistent: {what}"))
}

impl Store {
    /// Deletes (or with `dry_run` only counts) the events `plan` allows,
    /// in at most `max_segments` segments, starting after segment `after`
    /// (from the workspace's oldest when `None`). Call again with the
    /// returned `next` until it is `None`.
    pub fn purge_step(
        &self,
        plan: &PurgePlan,
        after: Option<EventId>,
        max_segments: usize,
        dry_run: bool,
    ) -> StoreResult<PurgeStep> {
        let done = |report| PurgeStep { report, next: None };
        let Some(up_to) = plan.up_to else {
            return Ok(done(PurgeReport::default()));
        };
        let ws = &plan.workspace;
        let cutoff = EventId::lower_bound_bytes(plan.before_ms);
        let start = match after {
            Some(a) => Bound::Excluded(keys::pair(ws, &a)),
            None => Bound::Included(keys::pair_raw(ws, &[0; 16])),
        };
        // A segment's key is at most its first event: one keyed at or after
        // the cut-off holds nothing older.
        let end = Bound::Excluded(keys::pair_raw(ws, &cutoff));
        let index = &self.inner.events_by_workspace;
        let entries: Vec<(sled::IVec, sled::IVec)> = index
            .range((start, end))
            .take(max_segments.max(1))
            .collect::<sled::Result<_>>()?;
        let mut report = PurgeReport::default();
        let mut last = None;
        for (key, positions) in &entries {
            let segment_key =
                keys::pair_suffix::<EventKind>(key).ok_or_else(|| corrupt("short key"))?;
            if segment_key > up_to {
                return Ok(done(report));
            }
            let (deleted, more) = self.purge_segment(plan, key, positions.clone(), dry_run)?;
            report.add(&deleted);
            last = Some(segment_key);
            if !more {
                return Ok(done(report));
            }
        }
        Ok(PurgeStep {
            report,
            next: if entries.len() == max_segments.max(1) {
                last
            } else {
                None
            },
        })
    }

    /// Purges one segment through the workspace's index entry `key`; answers
    /// what it deleted and whether later segments may hold more (false when
    /// this one keeps an event of the workspace).
    fn purge_segment(
        &self,
        plan: &PurgePlan,
        key: &[u8],
        positions: sled::IVec,
        dry_run: bool,
    ) -> StoreResult<(PurgeReport, bool)> {
        let index = IndexTree::Segments(&self.inner.events_by_workspace);
        let mut positions = positions;
        // Only a concurrent rewrite of the same segment makes a try fail.
        for _ in 0..8 {
            let Some((stored, fitting)) = self.entry_segment(index, key, positions)? else {
                return Ok((PurgeReport::default(), true));
            };
            let (rewrite, more) = prepare(plan, key, &stored, &fitting)?;
            let Some(rewrite) = rewrite else {
                return Ok((PurgeReport::default(), more));
            };
            if dry_run || self.apply(&rewrite)? {
                return Ok((rewrite.report, more));
            }
            positions = fitting;
        }
        Err(StoreError::Codec(
            "an event segment kept changing while it was purged".into(),
        ))
    }

    /// Writes `rw` in one transaction if the segment is still as read;
    /// answers whether it did.
    fn apply(&self, rw: &Rewrite) -> StoreResult<bool> {
        // The visitor entries waiting in memory may point into the segment:
        // into the index first, where the rewrite finds them
        // (`visitor_index.rs`).
        self.settle_visitor_index()?;
        let t = &self.inner;
        // Durable before its pointer replaces one to durable bytes.
        let new = match &rw.new {
            Some(body) => Some(t.bodies.append_durable(&[body])?[0].encode()),
            None => None,
        };
        // The link and visitor indexes hold spans: each owner's entry into
        // the segment is rewritten inside the span holding it (found here,
        // since a transaction cannot seek; only the Purger and an erasure
        // remove a span, and new spans hold only newer segments, so it stays
        // the one). A visitor's home has no entry in any span: its
        // positions are read from the segment, which keeps its key.
        let mut spans: Vec<(Index, sled::IVec, Option<Vec<u16>>)> = Vec::new();
        for ((index, entry), value) in &rw.entries {
            let tree = match index {
                Index::Link => &t.events_by_link,
                Index::Visitor => &t.events_by_visitor,
                Index::Workspace => continue,
            };
            if let Some((span_key, _)) = super::events::span_of(tree, entry)? {
                let positions = value
                    .as_ref()
                    .map(|v| segment::decode_positions(v).map(|p| p as u16).collect());
                spans.push((*index, span_key, positions));
            }
        }
        let trees = (
            &t.events,
            &t.events_by_link,
            &t.events_by_workspace,
            &t.events_by_visitor,
            &t.purged,
            &t.meta,
        );
        let written = trees.transaction(
            |(ev, by_link, by_ws, by_visitor, purged, meta)| -> TxResult {
                let key = rw.key.as_bytes();
                if ev.get(key)?.as_ref() != Some(&rw.old) {
                    return Ok(false);
                }
                match &new {
                    Some(pointer) => {
                        ev.insert(key, &pointer[..])?;
                    }
                    None => {
                        ev.remove(key)?;
                    }
                }
                for (index, span_key, positions) in &spans {
                    let tree = if *index == Index::Link {
                        by_link
                    } else {
                        by_visitor
                    };
                    super::events::rewrite_span(
                        tree,
                        span_key,
                        rw.key.as_bytes(),
                        positions.as_deref(),
                    )?;
                }
                for ((index, entry), value) in &rw.entries {
                    if *index != Index::Workspace {
                        continue;
                    }
                    match value {
                        Some(v) => by_ws.insert(entry, v.as_slice())?,
                        None => by_ws.remove(entry)?,
                    };
                }
                for (k, add) in &rw.purged {
                    let now = purged.get(k)?.map(|v| decode_count(&v)).unwrap_or(0);
                    purged.insert(k, &(now + add).to_be_bytes())?;
                }
                let high = meta
                    .get(keys::META_EVENTS_HIGH_WATER)?
                    .and_then(|v| EventId::from_slice(&v));
                if high < Some(rw.high_water) {
                    meta.insert(keys::META_EVENTS_HIGH_WATER, rw.high_water.as_bytes())?;
                }
                Ok(true)
            },
        )?;
        Ok(written)
    }

    fn purged_total(&self, key: [u8; 17]) -> StoreResult<u64> {
        Ok(self
            .inner
            .purged
            .get(key)?
            .map(|v| decode_count(&v))
            .unwrap_or(0))
    }

    /// Non-bot scans of `link` deleted by retention: with the stored events
    /// they make up the link's lifetime `total_scans`.
    pub fn purged_scans(&self, link: &LinkId) -> StoreResult<u64> {
        self.purged_total(keys::purged(keys::PurgedKind::LinkScans, link))
    }

    /// Non-bot scans of `ws` deleted by retention.
    pub fn purged_workspace_scans(&self, ws: &WorkspaceId) -> StoreResult<u64> {
        self.purged_total(keys::purged(keys::PurgedKind::WorkspaceScans, ws))
    }

    /// Events of `ws` deleted by retention, bots included.
    pub fn purged_workspace_events(&self, ws: &WorkspaceId) -> StoreResult<u64> {
        self.purged_total(keys::purged(keys::PurgedKind::WorkspaceEvents, ws))
    }

    /// The ID of the oldest stored event of `ws`, bots included.
    pub fn oldest_event_id(&self, ws: &WorkspaceId) -> StoreResult<Option<EventId>> {
        let index = IndexTree::Segments(&self.inner.events_by_workspace);
        for entry in index.tree().scan_prefix(ws.as_bytes()) {
            let (key, positions) = entry?;
            if let Some((stored, positions)) = self.entry_segment(index, &key, positions)? {
                let seg = Segment::parse(&stored.body)?;
                if let Some(first) = segment::decode_positions(&positions).next() {
                    if first >= seg.len() {
                        return Err(corrupt("a position past the segment's end"));
                    }
                    return Ok(Some(seg.id(first)));
                }
            }
        }
        Ok(None)
    }
}

/// The rewrite of the segment `stored` (whose workspace index entry `key`
/// has `positions`) that deletes what `plan` allows, if anything; and
/// whether later segments may hold more to delete.
fn prepare(
    plan: &PurgePlan,
    key: &[u8],
    stored: &Stored,
    positions: &[u8],
) -> StoreResult<(Option<Rewrite>, bool)> {
    let segment_key = keys::pair_suffix::<EventKind>(key).ok_or_else(|| corrupt("short key"))?;
    let Some(up_to) = plan.up_to else {
        return Ok((None, false));
    };
    let seg = Segment::parse(&stored.body)?;
    let cutoff = EventId::lower_bound_bytes(plan.before_ms);
    let mut doomed = vec![false; seg.len()];
    let mut keeps_some = false;
    for pos in segment::decode_positions(positions) {
        if pos >= seg.len() {
            return Err(corrupt("a position past the segment's end"));
        }
        let id = seg.id(pos);
        if id.as_bytes() < &cutoff && id <= up_to {
            doomed[pos] = true;
        } else {
            keeps_some = true;
        }
    }
    let more = !keeps_some;
    if !doomed.contains(&true) {
        return Ok((None, more));
    }
    let events = seg.events()?;
    let keep: Vec<usize> = (0..seg.len()).filter(|&p| !doomed[p]).collect();
    let mut entries: BTreeMap<(Index, [u8; 32]), Vec<u16>> = BTreeMap::new();
    let mut purged: BTreeMap<[u8; 17], u64> = BTreeMap::new();
    let mut report = PurgeReport::default();
    let mut high_water = segment_key;
    let mut new_pos = 0u16;
    for (pos, e) in events.iter().enumerate() {
        let owners = [
            Some((Index::Link, keys::pair(&e.link_id, &segment_key))),
            Some((Index::Workspace, keys::pair(&e.workspace_id, &segment_key))),
            e.visitor_id
                .map(|v| (Index::Visitor, keys::pair(&v, &segment_key))),
        ];
        let kept = !doomed[pos];
        for owner in owners.into_iter().flatten() {
            let slot = entries.entry(owner).or_default();
            if kept {
                slot.push(new_pos);
            }
        }
        if kept {
            new_pos += 1;
            continue;
        }
        if e.workspace_id != plan.workspace {
            return Err(corrupt("a workspace's entry points at another's event"));
        }
        report.events += 1;
        high_water = high_water.max(e.id);
        *purged
            .entry(keys::purged(
                keys::PurgedKind::WorkspaceEvents,
                &e.workspace_id,
            ))
            .or_default() += 1;
        if !e.bot {
            report.scans += 1;
            *purged
                .entry(keys::purged(keys::PurgedKind::LinkScans, &e.link_id))
                .or_default() += 1;
            *purged
                .entry(keys::purged(
                    keys::PurgedKind::WorkspaceScans,
                    &e.workspace_id,
                ))
                .or_default() += 1;
        }
    }
    let new = if keep.is_empty() {
        report.segments_removed = 1;
        None
    } else {
        report.segments_rewritten = 1;
        Some(seg.keep_only(&keep)?)
    };
    let entries = entries
        .into_iter()
        .map(|(k, positions)| {
            let value = (!positions.is_empty()).then(|| segment::encode_positions(&positions));
            (k, value)
        })
        .collect();
    Ok((
        Some(Rewrite {
            key: segment_key,
            old: stored.raw.clone(),
            new,
            entries,
            purged,
            high_water,
            report,
        }),
        more,
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::domain::{DeviceType, ScanEvent};
    use crate::ids::VisitorId;
    use crate::store::{EventIndex, EventQuery};

    const MS: i64 = 1_700_000_000_000;

    /// Builds events with ascending IDs carrying the millisecond `MS + ms`.
    #[derive(Default)]
    struct Events {
        seq: u8,
    }

    impl Events {
        fn at(
            &mut self,
            ms: i64,
            ws: WorkspaceId,
            link: LinkId,
            visitor: Option<VisitorId>,
            bot: bool,
        ) -> ScanEvent {
            self.seq += 1;
            let mut id = EventId::lower_bound_bytes(MS + ms);
            id[15] = self.seq;
            ScanEvent {
                visitor_id: visitor,
                bot,
                device_type: if bot {
                    DeviceType::Bot
                } else {
                    DeviceType::Mobile
                },
                referer: Some(format!("https://marker-{ms}.example/")),
                ..ScanEvent::sample(EventId::from_bytes(id), ws, link)
            }
        }
    }

    impl Store {
        /// Checks every index entry against the segments: positions ascend,
        /// lie inside the segment and point at events of the entry's owner;
        /// and every stored event has exactly one entry per index it belongs
        /// in. Answers the number of stored events.
        fn check_indexes(&self) -> usize {
            let t = &self.inner;
            let mut seen: HashMap<(u8, EventId), usize> = HashMap::new();
            for (n, tree) in [
                &t.events_by_link,
                &t.events_by_workspace,
                &t.events_by_visitor,
            ]
            .into_iter()
            .enumerate()
            {
                let entries: Vec<(Vec<u8>, Vec<u8>)> = match n {
                    // Spans, read as the entries of their segments.
                    0 => self.link_index_entries(),
                    2 => self.visitor_index_entries(),
                    _ => {
                        let all = tree.iter().map(|e| e.unwrap());
                        all.map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
                    }
                };
                for (key, positions) in entries {
                    let owner: [u8; 16] = key[..16].try_into().unwrap();
                    let segment_key = keys::pair_suffix::<EventKind>(&key).unwrap();
                    let stored = self.segment(segment_key.as_bytes()).unwrap();
                    let stored = stored.expect("an entry into a removed segment");
                    let seg = Segment::parse(&stored.body).unwrap();
                    let positions: Vec<usize> = segment::decode_positions(&positions).collect();
                    assert!(!positions.is_empty(), "an empty entry");
                    assert!(positions.windows(2).all(|w| w[0] < w[1]));
                    for p in positions {
                        assert!(p < seg.len(), "position {p} of {}", seg.len());
                        let e = seg.event(p).unwrap();
                        let of = match n {
                            0 => *e.link_id.as_bytes(),
                            1 => *e.workspace_id.as_bytes(),
                            _ => *e.visitor_id.unwrap().as_bytes(),
                        };
                        assert_eq!(of, owner, "entry of another owner");
                        *seen.entry((n as u8, e.id)).or_default() += 1;
                    }
                }
            }
            let mut stored = 0;
            let mut previous_last: Option<EventId> = None;
            for entry in t.events.iter() {
                let (key, _) = entry.unwrap();
                let body = self.segment(&key).unwrap().unwrap().body;
                let seg = Segment::parse(&body).unwrap();
                assert!(seg.len() > 0, "an empty segment is removed");
                assert!(
                    key.as_ref() <= &seg.id(0).as_bytes()[..],
                    "key at most the first ID"
                );
                assert!(previous_last < Some(seg.id(0)), "segments stay disjoint");
                previous_last = seg.last_id();
                for p in 0..seg.len() {
                    let e = seg.event(p).unwrap();
                    assert_eq!(e.id, seg.id(p));
                    assert_eq!(seen.get(&(0, e.id)), Some(&1), "link entry of {}", e.id);
                    assert_eq!(seen.get(&(1, e.id)), Some(&1), "workspace entry");
                    let visitor = seen.get(&(2, e.id)).copied();
                    // In a home segment (`store::events`) the visitor has no
                    // entry unless a rewrite gave it one.
                    let segment = EventId::from_slice(&key).unwrap();
                    let home = e
                        .visitor_id
                        .is_some_and(|v| super::super::events::is_home(&v, &segment));
                    if !(home && visitor.is_none()) {
                        assert_eq!(visitor, e.visitor_id.map(|_| 1), "visitor entry");
                    }
                    stored += 1;
                }
            }
            assert_eq!(
                seen.values().sum::<usize>(),
                stored * 2 + { seen.keys().filter(|(n, _)| *n == 2).count() }
            );
            stored
        }

        /// The whole purge of `plan` in steps of `step` segments.
        fn purge_all(&self, plan: &PurgePlan, step: usize, dry_run: bool) -> PurgeReport {
            let mut report = PurgeReport::default();
            let mut after = None;
            loop {
                let s = self.purge_step(plan, after, step, dry_run).unwrap();
                report.add(&s.report);
                match s.next {
                    Some(n) => after = Some(n),
                    None => return report,
                }
            }
        }

        fn listed(&self, ws: WorkspaceId, index: EventIndex) -> Vec<EventId> {
            let q = EventQuery {
                workspace_id: ws,
                index,
                from_ms: None,
                to_ms: None,
                tag: None,
                country: None,
                device_type: None,
                include_bots: true,
            };
            let page = self.list_events(&q, None, 10_000).unwrap();
            assert!(page.next_cursor.is_none());
            page.items.iter().map(|e| e.id).collect()
        }
    }

    /// Two workspaces: `a` keeps events 100 ms here, `b` far longer. Four
    /// segments: one of old `a` events only, one mixing old events of both,
    /// one straddling `a`'s cut-off, and one of young events.
    struct Fixture {
        store: Store,
        _dir: tempfile::TempDir,
        a: WorkspaceId,
        b: WorkspaceId,
        links: [LinkId; 3],
        visitors: [VisitorId; 2],
        batches: Vec<Vec<ScanEvent>>,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8).unwrap();
        let (a, b) = (WorkspaceId::generate(), WorkspaceId::generate());
        let links = [LinkId::generate(), LinkId::generate(), LinkId::generate()];
        let [l1, l2, l3] = links;
        let visitors = [VisitorId::generate(), VisitorId::generate()];
        let [v1, v2] = visitors;
        let mut e = Events::default();
        let batches = vec![
            vec![
                e.at(1, a, l1, None, false),
                e.at(2, a, l2, Some(v1), false),
                e.at(3, a, l1, None, true),
            ],
            vec![
                e.at(10, a, l1, Some(v1), false),
                e.at(11, b, l3, Some(v2), false),
                e.at(12, a, l2, None, true),
                e.at(13, a, l1, Some(v1), false),
                e.at(14, b, l3, None, false),
            ],
            vec![
                e.at(90, a, l1, Some(v1), false),
                e.at(95, b, l3, Some(v2), false),
                e.at(99, a, l2, None, false),
                e.at(105, a, l2, Some(v1), false),
                e.at(110, a, l1, None, false),
            ],
            vec![
                e.at(200, a, l1, Some(v1), false),
                e.at(210, b, l3, None, false),
            ],
        ];
        for batch in &batches {
            store.commit_scans(batch).unwrap();
        }
        Fixture {
            store,
            _dir: dir,
            a,
            b,
            links,
            visitors,
            batches,
        }
    }

    impl Fixture {
        fn all(&self) -> impl Iterator<Item = &ScanEvent> {
            self.batches.iter().flatten()
        }

        fn plan_a(&self, up_to: Option<EventId>) -> PurgePlan {
            PurgePlan {
                workspace: self.a,
                before_ms: MS + 100,
                up_to,
            }
        }

        fn ids(&self, f: impl Fn(&ScanEvent) -> bool) -> Vec<EventId> {
            let mut ids: Vec<EventId> = self.all().filter(|e| f(e)).map(|e| e.id).collect();
            ids.reverse();
            ids
        }
    }

    #[test]
    fn a_purge_deletes_exactly_the_old_events_of_its_workspace_and_keeps_every_index_consistent() {
        let f = fixture();
        let store = &f.store;
        let [l1, l2, l3] = f.links;
        let [v1, v2] = f.visitors;
        assert_eq!(store.check_indexes(), 15);
        let totals_before: Vec<u64> = f
            .links
            .iter()
            .map(|l| store.link_total_scans(l).unwrap())
            .collect();
        let last = store.last_event_id().unwrap();
        let b_before = store.listed(f.b, EventIndex::Workspace);
        let doomed = |e: &ScanEvent| e.workspace_id == f.a && e.id.timestamp_ms() < MS + 100;

        let dry = store.purge_all(&f.plan_a(last), 16, true);
        assert_eq!(store.check_indexes(), 15, "a dry run writes nothing");
        let report = store.purge_all(&f.plan_a(last), 16, false);
        assert_eq!(dry, report, "the dry run counts what the purge deletes");
        assert_eq!(
            report,
            PurgeReport {
                events: 8,
                scans: 6,
                segments_rewritten: 2,
                segments_removed: 1,
            }
        );
        assert_eq!(store.check_indexes(), 7);
        for e in f.all() {
            let stored = store.event(&e.id).unwrap();
            if doomed(e) {
                assert_eq!(stored, None, "deleted: {}", e.id.timestamp_ms() - MS);
            } else {
                assert_eq!(
                    stored.as_ref(),
                    Some(e),
                    "kept: {}",
                    e.id.timestamp_ms() - MS
                );
            }
        }
        let keep = |extra: &dyn Fn(&ScanEvent) -> bool| f.ids(|e| !doomed(e) && extra(e));
        assert_eq!(
            store.listed(f.a, EventIndex::Workspace),
            keep(&|e| e.workspace_id == f.a)
        );
        assert_eq!(
            store.listed(f.a, EventIndex::Link(l1)),
            keep(&|e| e.link_id == l1)
        );
        assert_eq!(
            store.listed(f.a, EventIndex::Link(l2)),
            keep(&|e| e.link_id == l2)
        );
        assert_eq!(
            store.listed(f.a, EventIndex::Visitor(v1)),
            keep(&|e| e.visitor_id == Some(v1))
        );
        assert_eq!(
            store.listed(f.b, EventIndex::Workspace),
            b_before,
            "b untouched"
        );
        assert_eq!(store.listed(f.b, EventIndex::Link(l3)).len(), 4);
        assert_eq!(store.listed(f.b, EventIndex::Visitor(v2)).len(), 2);
        // Totals are lifetime totals; what was deleted is counted beside them.
        let totals_after: Vec<u64> = f
            .links
            .iter()
            .map(|l| store.link_total_scans(l).unwrap())
            .collect();
        assert_eq!(totals_after, totals_before);
        assert_eq!(store.purged_scans(&l1).unwrap(), 4, "its bot is not a scan");
        assert_eq!(store.purged_scans(&l2).unwrap(), 2);
        assert_eq!(store.purged_scans(&l3).unwrap(), 0);
        assert_eq!(store.purged_workspace_scans(&f.a).unwrap(), 6);
        assert_eq!(store.purged_workspace_events(&f.a).unwrap(), 8);
        assert_eq!(store.purged_workspace_events(&f.b).unwrap(), 0);
        for l in f.links {
            let stored_scans = store
                .listed(if l == l3 { f.b } else { f.a }, EventIndex::Link(l))
                .iter()
                .filter(|id| !store.event(id).unwrap().unwrap().bot)
                .count() as u64;
            assert_eq!(
                stored_scans + store.purged_scans(&l).unwrap(),
                store.link_total_scans(&l).unwrap(),
                "stored + purged = total"
            );
        }
        // Reading after a position still works across rewritten segments.
        assert_eq!(store.last_event_id().unwrap(), last);
        let after: Vec<EventId> = store
            .events_after(None, 100)
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        let mut expected = f.ids(|e| !doomed(e));
        expected.reverse();
        assert_eq!(after, expected);
        let third = Some(expected[2]);
        assert_eq!(store.count_events_after(third).unwrap(), 4);
        assert_eq!(store.events_after(third, 100).unwrap().len(), 4);
        assert_eq!(
            store.oldest_event_id(&f.a).unwrap(),
            Some(f.batches[2][3].id),
            "the oldest event left is the 105 ms one"
        );
        // Purging again finds nothing.
        assert_eq!(
            store.purge_all(&f.plan_a(last), 16, false),
            PurgeReport::default()
        );
    }

    #[test]
    fn a_purge_stops_at_the_position_bound_and_steps_resume_where_they_stopped() {
        let f = fixture();
        let store = &f.store;
        assert_eq!(
            store.purge_all(&f.plan_a(None), 16, false),
            PurgeReport::default(),
            "no position: nothing may go"
        );
        assert_eq!(store.check_indexes(), 15);
        // Bound at the 11 ms event (workspace b's): a's 10 ms event goes,
        // its 12 and 13 ms events stay, and nothing after them is looked at.
        let bound = f.batches[1][1].id;
        let r = store.purge_all(&f.plan_a(Some(bound)), 1, false);
        assert_eq!(
            (r.events, r.segments_removed, r.segments_rewritten),
            (4, 1, 1)
        );
        assert_eq!(store.check_indexes(), 11);
        for e in f.all() {
            let gone = e.workspace_id == f.a && e.id <= bound;
            assert_eq!(
                store.event(&e.id).unwrap().is_none(),
                gone,
                "{}",
                e.id.timestamp_ms() - MS
            );
        }
        // One segment per step: each step continues after the last.
        let last = store.last_event_id().unwrap();
        let first = store.purge_step(&f.plan_a(last), None, 1, false).unwrap();
        assert_eq!(first.report.events, 2, "the rest of the mixed segment");
        let second = store
            .purge_step(&f.plan_a(last), first.next, 1, false)
            .unwrap();
        assert_eq!(
            second.report.events, 2,
            "the straddling segment's old events"
        );
        assert_eq!(second.next, None, "it keeps young events: done");
        assert_eq!(store.check_indexes(), 7);
        assert_eq!(store.purged_workspace_events(&f.a).unwrap(), 8);
    }

    #[test]
    fn deleting_the_newest_events_never_moves_the_last_event_id_back() {
        let f = fixture();
        let store = &f.store;
        let last = store.last_event_id().unwrap();
        for ws in [f.a, f.b] {
            let plan = PurgePlan {
                workspace: ws,
                before_ms: MS + 1000,
                up_to: last,
            };
            store.purge_all(&plan, 2, false);
        }
        assert_eq!(store.check_indexes(), 0);
        assert!(store.inner.events.is_empty(), "every segment removed");
        assert_eq!(store.last_event_id().unwrap(), last);
        assert_eq!(store.events_after(None, 10).unwrap(), vec![]);
        assert_eq!(store.oldest_event_id(&f.a).unwrap(), None);
        assert_eq!(store.link_total_scans(&f.links[2]).unwrap(), 4);
        assert_eq!(store.purged_scans(&f.links[2]).unwrap(), 4);
    }

    #[test]
    fn an_index_entry_read_before_a_rewrite_is_read_again() {
        let f = fixture();
        let store = &f.store;
        let l2 = f.links[1];
        // Link 2's entry into the straddling segment: positions 2 and 3.
        let key = keys::pair(&l2, &f.batches[2][0].id);
        let index = &store.inner.events_by_link;
        let stale: sled::IVec = super::super::events::span_positions(index, &key)
            .unwrap()
            .unwrap()
            .into();
        let last = store.last_event_id().unwrap();
        store.purge_all(&f.plan_a(last), 16, false);
        let (stored, positions) = store
            .entry_segment(
                IndexTree::Spans(&store.inner.events_by_link),
                &key,
                stale.clone(),
            )
            .unwrap()
            .unwrap();
        assert_ne!(positions, stale);
        let seg = Segment::parse(&stored.body).unwrap();
        let ids: Vec<EventId> = segment::decode_positions(&positions)
            .map(|p| seg.id(p))
            .collect();
        assert_eq!(
            ids,
            vec![f.batches[2][3].id],
            "only the 105 ms event is left"
        );
        // An entry of a removed segment is gone.
        let removed = keys::pair(&f.links[0], &f.batches[0][0].id);
        assert!(
            store
                .entry_segment(
                    IndexTree::Spans(&store.inner.events_by_link),
                    &removed,
                    stale
                )
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_purge_inside_link_spans_rewrites_them_and_the_links_listings_follow() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8).unwrap();
        let (a, b) = (WorkspaceId::generate(), WorkspaceId::generate());
        let (la, lb) = (LinkId::generate(), LinkId::generate());
        let mut e = Events::default();
        let mut all = Vec::new();
        // 40 segments, each with two events of `la` (workspace a) around
        // one of `lb` (workspace b): spans of 16, 16 and 8 for each link.
        let mut commit = |store: &Store, e: &mut Events, from: i64, to: i64| {
            for n in from..to {
                let batch = vec![
                    e.at(n * 10 + 1, a, la, None, false),
                    e.at(n * 10 + 2, b, lb, None, false),
                    e.at(n * 10 + 3, a, la, None, n % 4 == 0),
                ];
                store.commit_scans(&batch).unwrap();
                all.extend(batch);
            }
            all.clone()
        };
        let events = commit(&store, &mut e, 0, 40);
        let spans = |l: &LinkId| store.inner.events_by_link.scan_prefix(l.as_bytes()).count();
        assert_eq!((spans(&la), spans(&lb)), (3, 3));
        assert_eq!(store.check_indexes(), 120);
        // Workspace a's events before 202 ms: the whole first span of
        // `la`, the first four segments of its second and one event of the
        // fifth; `lb`'s positions shift in each of those segments.
        let last = store.last_event_id().unwrap();
        let plan = PurgePlan {
            workspace: a,
            before_ms: MS + 202,
            up_to: last,
        };
        let report = store.purge_all(&plan, 3, false);
        assert_eq!(report.events, 41);
        assert_eq!(store.check_indexes(), 120 - 41);
        assert_eq!(spans(&la), 2, "the emptied span is removed");
        assert_eq!(spans(&lb), 3);
        let second = keys::pair(&la, &events[16 * 3].id);
        assert!(
            store.inner.events_by_link.get(second).unwrap().is_some(),
            "a span whose first segment went keeps its key"
        );
        let kept = |ws: WorkspaceId, l: LinkId, from: i64, to: i64| -> Vec<EventId> {
            let mut ids: Vec<EventId> = events
                .iter()
                .filter(|e| e.workspace_id == ws && e.link_id == l)
                .filter(|e| !(e.workspace_id == a && e.id.timestamp_ms() < MS + 202))
                .filter(|e| (MS + from..MS + to).contains(&e.id.timestamp_ms()))
                .map(|e| e.id)
                .collect();
            ids.reverse();
            ids
        };
        assert_eq!(
            store.listed(a, EventIndex::Link(la)),
            kept(a, la, 0, i64::MAX / 2)
        );
        assert_eq!(
            store.listed(b, EventIndex::Link(lb)),
            kept(b, lb, 0, i64::MAX / 2)
        );
        // Bounds inside the spans, both ways.
        for (from, to) in [(0, 205), (150, 260), (203, 204), (241, 333), (300, 400)] {
            for (ws, l) in [(a, la), (b, lb)] {
                let q = EventQuery {
                    workspace_id: ws,
                    index: EventIndex::Link(l),
                    from_ms: Some(MS + from),
                    to_ms: Some(MS + to),
                    tag: None,
                    country: None,
                    device_type: None,
                    include_bots: true,
                };
                let expected = kept(ws, l, from, to);
                let down = store.list_events(&q, None, 1000).unwrap();
                let down: Vec<EventId> = down.items.iter().map(|e| e.id).collect();
                assert_eq!(down, expected, "{from}..{to}");
                let (up, _) = store
                    .list_events_oldest_first(&q, None, None, 1000)
                    .unwrap();
                let mut up: Vec<EventId> = up.items.iter().map(|e| e.id).collect();
                up.reverse();
                assert_eq!(up, expected, "{from}..{to} oldest first");
                let count = store.count_event_candidates(&q, None).unwrap();
                assert!(count >= expected.len() as u64);
            }
        }
        // The Recorder's open spans go on; purging all of b empties every
        // span of `lb`.
        let events = commit(&store, &mut e, 40, 45);
        let _ = events;
        assert_eq!(spans(&la), 2, "the open span took the new segments");
        let plan = PurgePlan {
            workspace: b,
            before_ms: MS + 10_000,
            up_to: store.last_event_id().unwrap(),
        };
        assert_eq!(store.purge_all(&plan, 7, false).events, 45);
        assert_eq!(spans(&lb), 0);
        assert_eq!(store.check_indexes(), 120 - 41 - 40 + 10);
        assert!(store.listed(b, EventIndex::Link(lb)).is_empty());
        assert_eq!(store.listed(a, EventIndex::Link(la)).len(), 79 - 40 + 10);
    }
}
