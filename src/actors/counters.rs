//! The Counters worker: per-link and per-workspace tallies per day, in the
//! workspace's time zone, bots excluded (`domain::tally`). It is a consumer
//! of committed events (`actors::consumer`): it folds them into pending
//! deltas in memory, and at each checkpoint adds the deltas to the `tallies`
//! tree and saves its position in one transaction. After a crash it resumes
//! from that position, so the stored tallies always equal a recount of the
//! events up to it (plus those of purged events).
//!
//! Readers (`CounterView`) see the stored tallies plus the pending deltas
//! under one lock, so a count is never missing or doubled while a
//! checkpoint moves deltas into the store.
//!
//! A workspace's days are bucketed in the zone recorded in the worker's
//! state. When the workspace's zone changes, the worker re-buckets every day
//! that still holds events, from the stored events (see `rebucket`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use actix::Recipient;
use serde::{Deserialize, Serialize};

use super::consumer::{Consumer, ConsumerStarter, ConsumerWorker, Poke};
use crate::config::ConsumerSettings;
use crate::domain::tally::{Day, Tally};
use crate::domain::{ScanEvent, Timestamp};
use crate::ids::{EventId, LinkId, WorkspaceId};
use crate::store::{
    ConsumerRecord, EventIndex, EventQuery, Store, StoreResult, TallyDeltas, TallyKey, TallyScope,
};

/// The day key of a workspace's lifetime tally.
const LIFETIME: Day = Day(0);
/// Events read per page when re-bucketing.
const REBUCKET_PAGE: usize = 5_000;

/// What the worker stores with its position: the zone each workspace's days
/// are bucketed in.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CountersState {
    zones: BTreeMap<WorkspaceId, String>,
}

/// The tallies as readers see them: stored plus pending.
pub struct CounterView {
    store: Store,
    pending: RwLock<TallyDeltas>,
    /// Workspaces whose zone may have changed.
    rebucket: Mutex<BTreeSet<WorkspaceId>>,
    worker: OnceLock<Recipient<Poke>>,
}

impl CounterView {
    pub fn new(store: Store) -> Arc<CounterView> {
        Arc::new(CounterView {
            store,
            pending: RwLock::default(),
            rebucket: Mutex::default(),
            worker: OnceLock::new(),
        })
    }

    /// The pending deltas, for reading (readers and the checkpoint's merge).
    fn read_pending(&self) -> RwLockReadGuard<'_, TallyDeltas> {
        self.pending.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The pending deltas, for the worker's folding and its checkpoint.
    fn write_pending(&self) -> RwLockWriteGuard<'_, TallyDeltas> {
        self.pending.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// One owner's tallies from `from` to `to` inclusive, by day.
    pub fn days(
        &self,
        scope: TallyScope,
        owner: &[u8; 16],
        from: Day,
        to: Day,
    ) -> StoreResult<BTreeMap<Day, Tally>> {
        let pending = self.read_pending();
        let mut out: BTreeMap<Day, Tally> = self
            .store
            .tallies(scope, owner, from, to)?
            .into_iter()
            .collect();
        for (key, delta) in pending.iter() {
            if key.scope == scope && key.owner == *owner && (from..=to).contains(&key.day) {
                out.entry(key.day).or_default().merge(delta);
            }
        }
        Ok(out)
    }

    /// The lifetime tally of a workspace (scans and visitors).
    pub fn workspace_lifetime(&self, ws: &WorkspaceId) -> StoreResult<Tally> {
        let days = self.days(
            TallyScope::WorkspaceLifetime,
            ws.as_bytes(),
            LIFETIME,
            LIFETIME,
        )?;
        Ok(days.into_values().next().unwrap_or_default())
    }

    /// Asks the worker to re-bucket `ws` (its time zone changed).
    pub fn zone_changed(&self, ws: WorkspaceId) {
        self.rebucket
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(ws);
        if let Some(worker) = self.worker.get() {
            worker.do_send(Poke);
        }
    }
}

pub struct Counters {
    view: Arc<CounterView>,
    zones: HashMap<WorkspaceId, jiff::tz::TimeZone>,
    /// Compare every workspace's zone with the state at the first step.
    check_all: bool,
}

impl Counters {
    pub fn new(view: Arc<CounterView>) -> Counters {
        Counters {
            view,
            zones: HashMap::new(),
            check_all: true,
        }
    }

    /// A starter for the app (see `actors::consumer`).
    pub fn starter(view: Arc<CounterView>, settings: ConsumerSettings) -> ConsumerStarter {
        let inner = ConsumerWorker::starter(Counters::new(view.clone()), settings);
        Box::new(move |store: &Store| {
            let started = inner(store)?;
            let _ = view.worker.set(started.poke.clone());
            Ok(started)
        })
    }

    /// The zone `ws` is bucketed in; a workspace seen first takes its current one.
    fn zone(&mut self, state: &mut CountersState, ws: &WorkspaceId) -> jiff::tz::TimeZone {
        if let Some(tz) = self.zones.get(ws) {
            return tz.clone();
        }
        let name = match state.zones.get(ws) {
            Some(name) => name.clone(),
            None => {
                let name = self.current_zone(ws);
                state.zones.insert(*ws, name.clone());
                name
            }
        };
        let tz = jiff::tz::TimeZone::get(&name).unwrap_or(jiff::tz::TimeZone::UTC);
        self.zones.insert(*ws, tz.clone());
        tz
    }

    /// The workspace's zone in the store now (UTC when it is gone or unreadable).
    fn current_zone(&self, ws: &WorkspaceId) -> String {
        match self.view.store.workspace(ws) {
            Ok(Some(w)) => w.timezone,
            Ok(None) => "UTC".to_owned(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a workspace's time zone; counting in UTC");
                "UTC".to_owned()
            }
        }
    }

    /// Re-buckets `ws` into its current zone when that differs from the one
    /// its days are counted in.
    ///
    /// For each owner (each link of the workspace with stored events, and the
    /// workspace), every stored day from D0 on is replaced by a recount of
    /// the stored events up to `position`, where D0 is the day before the
    /// oldest stored event's UTC day: those days hold every stored event of
    /// the owner, in whichever zone they were counted. What
    /// the replaced days held beyond the recount (events purged on the
    /// oldest day) is kept on the oldest stored event's new day, so totals
    /// never change. Running it twice gives the same tallies, so a crash
    /// midway is repaired by the next run.
    fn rebucket(
        &mut self,
        state: &mut CountersState,
        ws: &WorkspaceId,
        position: Option<EventId>,
    ) -> StoreResult<bool> {
        let old_name = match state.zones.get(ws) {
            Some(name) => name.clone(),
            // Never counted: nothing to move.
            None => return Ok(false),
        };
        let new_name = self.current_zone(ws);
        if new_name == old_name {
            return Ok(false);
        }
        let new_tz = jiff::tz::TimeZone::get(&new_name).unwrap_or(jiff::tz::TimeZone::UTC);
        let store = &self.view.store;
        let mut owners: BTreeMap<(TallyScope, [u8; 16]), Recount> = BTreeMap::new();
        for_each_stored_event(store, ws, position, |e| {
            for (scope, owner) in [
                (TallyScope::Link, *e.link_id.as_bytes()),
                (TallyScope::Workspace, *ws.as_bytes()),
            ] {
                owners.entry((scope, owner)).or_default().add(e, &new_tz);
            }
        })?;
        for ((scope, owner), recount) in owners {
            let Some(oldest) = recount.oldest_ms else {
                continue;
            };
            // Every zone's day is within one day of the UTC day, so this
            // covers days counted in any earlier zone too.
            let d0 = Day::of(oldest, &jiff::tz::TimeZone::UTC).minus_days(1);
            let stored = store.tallies(scope, &owner, d0, Day(u32::MAX))?;
            let mut before = Tally::default();
            for (_, t) in &stored {
                before.merge(t);
            }
            let mut after = Tally::default();
            for t in recount.days.values() {
                after.merge(t);
            }
            let mut days = recount.days;
            days.entry(Day::of(oldest, &new_tz))
                .or_default()
                .merge(&before.minus(&after));
            let remove: Vec<Day> = stored.iter().map(|(d, _)| *d).collect();
            let put: Vec<(Day, Tally)> = days.into_iter().collect();
            store.replace_tallies(scope, &owner, &remove, &put)?;
        }
        tracing::info!(workspace = %ws, from = %old_name, to = %new_name, "re-bucketed scan tallies into the new time zone");
        state.zones.insert(*ws, new_name);
        self.zones.remove(ws);
        Ok(true)
    }
}

/// One owner's stored events recounted by day.
#[derive(Default)]
struct Recount {
    days: BTreeMap<Day, Tally>,
    oldest_ms: Option<i64>,
}

impl Recount {
    fn add(&mut self, e: &ScanEvent, tz: &jiff::tz::TimeZone) {
        let ms = e.timestamp_ms();
        self.oldest_ms = Some(self.oldest_ms.map_or(ms, |o| o.min(ms)));
        self.days.entry(Day::of(ms, tz)).or_default().add_event(e);
    }
}

/// Calls `f` with every stored non-bot event of `ws` up to `position`.
fn for_each_stored_event(
    store: &Store,
    ws: &WorkspaceId,
    position: Option<EventId>,
    mut f: impl FnMut(&ScanEvent),
) -> StoreResult<()> {
    let Some(position) = position else {
        return Ok(());
    };
    let query = EventQuery::all(*ws, EventIndex::Workspace);
    let mut cursor: Option<Vec<u8>> = None;
    loop {
        let page = store.list_events(&query, cursor.as_deref(), REBUCKET_PAGE)?;
        for e in page.items.iter().filter(|e| e.id <= position) {
            f(e);
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(()),
        }
    }
}

impl Consumer for Counters {
    const NAME: &'static str = "counters";
    type State = CountersState;

    fn apply(&mut self, state: &mut CountersState, events: &[ScanEvent]) {
        let mut zones: Vec<(WorkspaceId, jiff::tz::TimeZone)> = Vec::new();
        let mut folded: Vec<(&ScanEvent, Day)> = Vec::with_capacity(events.len());
        for e in events.iter().filter(|e| !e.bot) {
            let tz = match zones.iter().find(|(ws, _)| *ws == e.workspace_id) {
                Some((_, tz)) => tz.clone(),
                None => {
                    let tz = self.zone(state, &e.workspace_id);
                    zones.push((e.workspace_id, tz.clone()));
                    tz
                }
            };
            folded.push((e, Day::of(e.timestamp_ms(), &tz)));
        }
        let mut pending = self.view.write_pending();
        for (e, day) in folded {
            let key = |scope, owner: [u8; 16], day| TallyKey { scope, owner, day };
            let ws = *e.workspace_id.as_bytes();
            pending
                .entry(key(TallyScope::Link, *e.link_id.as_bytes(), day))
                .or_default()
                .add_event(e);
            pending
                .entry(key(TallyScope::Workspace, ws, day))
                .or_default()
                .add_event(e);
            let lifetime = pending
                .entry(key(TallyScope::WorkspaceLifetime, ws, LIFETIME))
                .or_default();
            lifetime.scans += 1;
            if let Some(v) = &e.visitor_id {
                lifetime
                    .visitors
                    .insert(crate::domain::tally::visitor_hash(v));
            }
        }
    }

    /// Moves the pending deltas into the store with the record, atomically.
    /// Readers see the stored tallies plus the pending ones, so the pending
    /// map may not empty before the store has them; but the reading and
    /// merging of the stored tallies happens under the read lock, beside
    /// readers, and only the transaction under the write lock (this worker is
    /// the only writer of both, so nothing changes in between).
    fn persist(&mut self, store: &Store, record: &ConsumerRecord) -> StoreResult<()> {
        let merged = {
            let pending = self.view.read_pending();
            store.merged_tallies(&pending)?
        };
        let mut pending = self.view.write_pending();
        store.put_tallies(Self::NAME, record, &merged)?;
        pending.clear();
        Ok(())
    }

    fn needs_maintenance(&self, _state: &CountersState, _now: Timestamp) -> bool {
        self.check_all
            || !self
                .view
                .rebucket
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
    }

    fn maintain(
        &mut self,
        state: &mut CountersState,
        _store: &Store,
        position: Option<EventId>,
        _now: Timestamp,
    ) -> StoreResult<bool> {
        let mut todo: BTreeSet<WorkspaceId> = std::mem::take(
            &mut *self
                .view
                .rebucket
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        if std::mem::take(&mut self.check_all) {
            todo.extend(state.zones.keys().copied());
        }
        let mut changed = false;
        for ws in todo {
            match self.rebucket(state, &ws, position) {
                Ok(c) => changed |= c,
                Err(e) => {
                    // Try again at the next step.
                    self.view
                        .rebucket
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(ws);
                    return Err(e);
                }
            }
        }
        Ok(changed)
    }
}

/// A link's lifetime tally is not kept: its `total_scans` is the Recorder's
/// count, which includes scans of purged events.
pub fn link_days(
    view: &CounterView,
    link: &LinkId,
    from: Day,
    to: Day,
) -> StoreResult<BTreeMap<Day, Tally>> {
    view.days(TallyScope::Link, link.as_bytes(), from, to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DeviceType, Timestamp, Workspace};
    use crate::ids::VisitorId;

    fn ms(s: &str) -> i64 {
        s.parse::<jiff::Timestamp>().unwrap().as_millisecond()
    }

    fn workspace(store: &Store, tz: &str) -> WorkspaceId {
        let ws = Workspace {
            id: WorkspaceId::generate(),
            name: tz.into(),
            plan: "free".into(),
            retention_days: 30,
            timezone: tz.into(),
            created_at: Timestamp::from_millis(0),
        };
        store.put_workspace(&ws).unwrap();
        ws.id
    }

    /// An event at instant `at` (its ID carries the time; `seq` orders
    /// events of the same millisecond).
    fn event(at: &str, seq: u8, ws: WorkspaceId, link: LinkId, bot: bool) -> ScanEvent {
        let mut id = EventId::lower_bound_bytes(ms(at));
        id[15] = seq;
        ScanEvent {
            bot,
            device_type: if bot {
                DeviceType::Bot
            } else {
                DeviceType::Mobile
            },
            ..ScanEvent::sample(EventId::from_bytes(id), ws, link)
        }
    }

    fn settings() -> ConsumerSettings {
        ConsumerSettings {
            mailbox_capacity: 4,
            read_batch_size: 3,
            checkpoint_interval_ms: 1000,
        }
    }

    fn by_day(view: &CounterView, link: LinkId) -> Vec<(String, u64)> {
        link_days(view, &link, Day(20000101), Day(29991231))
            .unwrap()
            .into_iter()
            .map(|(d, t)| (d.to_string(), t.scans))
            .collect()
    }

    fn days(list: &[(&str, u64)]) -> Vec<(String, u64)> {
        list.iter().map(|(d, n)| (d.to_string(), *n)).collect()
    }

    #[test]
    fn days_follow_each_workspaces_zone_across_midnight_and_dst_and_move_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8).unwrap();
        let (tokyo, kolkata, new_york) = (
            workspace(&store, "Asia/Tokyo"),
            workspace(&store, "Asia/Kolkata"),
            workspace(&store, "America/New_York"),
        );
        let (lt, lk, ln) = (LinkId::generate(), LinkId::generate(), LinkId::generate());
        let mut events = vec![
            // Tokyo (+09:00): 14:59:59Z is 23:59:59, 15:00Z the next day.
            event("2026-05-07T14:59:59Z", 1, tokyo, lt, false),
            event("2026-05-07T15:00:00Z", 1, tokyo, lt, false),
            // Kolkata (+05:30): 18:29Z is 23:59, 18:30Z the next day.
            event("2026-05-07T18:29:00Z", 1, kolkata, lk, false),
            event("2026-05-07T18:30:00Z", 1, kolkata, lk, false),
            event("2026-05-07T18:30:00Z", 2, kolkata, lk, true),
            // New York springs forward on 2026-03-08 (a 23-hour day) and
            // falls back on 2026-11-01 (25 hours).
            event("2026-03-08T04:59:00Z", 1, new_york, ln, false), // 23:59 EST, Mar 7
            event("2026-03-08T05:00:00Z", 1, new_york, ln, false), // 00:00 EST, Mar 8
            event("2026-03-09T03:59:00Z", 1, new_york, ln, false), // 23:59 EDT, Mar 8
            event("2026-11-01T04:00:00Z", 1, new_york, ln, false), // 00:00 EDT, Nov 1
            event("2026-11-02T04:59:00Z", 1, new_york, ln, false), // 23:59 EST, Nov 1
            event("2026-11-02T05:00:00Z", 1, new_york, ln, false), // 00:00 EST, Nov 2
        ];
        events.sort_by_key(|e| e.id);
        store.commit_scans(&events).unwrap();
        let view = CounterView::new(store.clone());
        let mut w =
            ConsumerWorker::load(Counters::new(view.clone()), store.clone(), settings()).unwrap();
        let now = Timestamp::from_millis(ms("2026-12-01T00:00:00Z"));
        while !w.run_once(now).unwrap() {}
        assert_eq!(
            by_day(&view, lt),
            days(&[("2026-05-07", 1), ("2026-05-08", 1)])
        );
        assert_eq!(
            by_day(&view, lk),
            days(&[("2026-05-07", 1), ("2026-05-08", 1)]),
            "the bot is not counted"
        );
        assert_eq!(
            by_day(&view, ln),
            days(&[
                ("2026-03-07", 1),
                ("2026-03-08", 2),
                ("2026-11-01", 2),
                ("2026-11-02", 1)
            ])
        );
        let lifetime = view.workspace_lifetime(&new_york).unwrap();
        assert_eq!(lifetime.scans, 6);

        // Tokyo's workspace moves to UTC: both scans fall on May 7 now.
        let mut ws = store.workspace(&tokyo).unwrap().unwrap();
        ws.timezone = "UTC".into();
        store.put_workspace(&ws).unwrap();
        view.zone_changed(tokyo);
        w.run_once(now).unwrap();
        assert_eq!(by_day(&view, lt), days(&[("2026-05-07", 2)]));
        let ws_days = view
            .days(
                TallyScope::Workspace,
                tokyo.as_bytes(),
                Day(20260101),
                Day(20261231),
            )
            .unwrap();
        assert_eq!(ws_days.len(), 1);
        assert_eq!(ws_days[&Day(20260507)].scans, 2);
        assert_eq!(view.workspace_lifetime(&tokyo).unwrap().scans, 2);
        // Others untouched; a later scan counts in the new zone (23:30Z is
        // Nov 3 in Tokyo).
        assert_eq!(
            by_day(&view, lk),
            days(&[("2026-05-07", 1), ("2026-05-08", 1)])
        );
        store
            .commit_scans(&[event("2026-11-02T23:30:00Z", 1, tokyo, lt, false)])
            .unwrap();
        w.run_once(now).unwrap();
        assert_eq!(
            by_day(&view, lt),
            days(&[("2026-05-07", 2), ("2026-11-02", 1)])
        );

        // A restart resumes from the stored record: nothing is counted twice,
        // and the zone the days are in is remembered.
        w.checkpoint(now).unwrap();
        drop(w);
        let view = CounterView::new(store.clone());
        let mut w =
            ConsumerWorker::load(Counters::new(view.clone()), store.clone(), settings()).unwrap();
        w.run_once(now).unwrap();
        assert_eq!(
            by_day(&view, lt),
            days(&[("2026-05-07", 2), ("2026-11-02", 1)])
        );
        assert_eq!(by_day(&view, ln).iter().map(|(_, n)| n).sum::<u64>(), 6);
    }

    #[test]
    fn rebucketing_keeps_what_purged_events_left_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8).unwrap();
        let ws = workspace(&store, "UTC");
        let link = LinkId::generate();
        let visitor = VisitorId::generate();
        let view = CounterView::new(store.clone());
        // Counted tallies beyond the stored events: as if 5 scans on May 6
        // had been purged since.
        let mut purged = Tally {
            scans: 5,
            ..Tally::default()
        };
        purged.countries.add(None, 5);
        let record = ConsumerRecord::default();
        let key = TallyKey {
            scope: TallyScope::Link,
            owner: *link.as_bytes(),
            day: Day(20260506),
        };
        let merged = store
            .merged_tallies(&TallyDeltas::from_iter([(key, purged)]))
            .unwrap();
        store.put_tallies("unused", &record, &merged).unwrap();
        let mut stored = event("2026-05-06T23:00:00Z", 1, ws, link, false);
        stored.visitor_id = Some(visitor);
        store.commit_scans(&[stored]).unwrap();
        let mut w =
            ConsumerWorker::load(Counters::new(view.clone()), store.clone(), settings()).unwrap();
        let now = Timestamp::from_millis(ms("2026-06-01T00:00:00Z"));
        w.run_once(now).unwrap();
        assert_eq!(by_day(&view, link), days(&[("2026-05-06", 6)]));
        for zone in ["Asia/Tokyo", "Asia/Tokyo", "America/New_York"] {
            let mut w_ws = store.workspace(&ws).unwrap().unwrap();
            w_ws.timezone = zone.into();
            store.put_workspace(&w_ws).unwrap();
            view.zone_changed(ws);
            w.run_once(now).unwrap();
        }
        // The stored scan is 19:00 on May 6 in New York; the purged five
        // stay on the oldest stored event's day. Totals never change.
        assert_eq!(by_day(&view, link), days(&[("2026-05-06", 6)]));
        let t = link_days(&view, &link, Day(20260506), Day(20260506)).unwrap();
        assert_eq!(t[&Day(20260506)].countries.values[&None], 6);
        assert_eq!(t[&Day(20260506)].visitors.count(), 1);
    }
}
