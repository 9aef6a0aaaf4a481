//! The Purger: deletes scan events past their workspace's retention, in
//! bounded steps, and never an event a consumer has not processed yet.
//!
//! Each pass takes the time `now` (the actor's clock, or a test's): for every
//! workspace the cut-off is `now` minus its retention (the plan's
//! `retention_days` from the current config, or an enterprise workspace's
//! own), and the bound is the lowest stored position of the consumers that
//! must see every event (`Bound`). The store deletes in steps of
//! `retention.segments_per_step` segments, each segment in a transaction of
//! its own (`Store::purge_step`); the Purger yields between steps, and a
//! background pass stops after `retention.segments_per_run` segments and goes
//! on at the next tick, starting with the workspace it did not finish. The
//! link totals are not touched: they are lifetime totals, and what was
//! deleted is added to the store's purged totals instead.
//!
//! The background pass runs on a thread of its own, every
//! `retention.purge_interval_ms`, first one interval after start (start-up
//! never waits for it). `scanhop purge` runs one pass to the end.

use std::sync::Arc;

use super::periodic::{PeriodicTask, TaskError, Trigger};
use super::worker::Stage;
use crate::config::Settings;
use crate::domain::{Timestamp, Workspace};
use crate::ids::{EventId, WorkspaceId};
use crate::metrics::Metrics;
use crate::store::{PurgePlan, PurgeReport, Store, StoreResult};

const DAY_MS: i64 = 86_400_000;

/// Whose positions bound a purge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    /// The server's running consumers, by name. A consumer without a stored
    /// position holds everything back; with no consumers at all, everything
    /// committed may go.
    Consumers(Vec<String>),
    /// Every consumer record in the store: the command line cannot know
    /// which consumers a server runs, so it respects each that ever ran.
    EveryRecord,
}

/// What a pass did with one workspace.
#[derive(Debug, Clone)]
pub struct WorkspacePurge {
    pub workspace: Workspace,
    pub retention_days: u32,
    /// Events made before this were to go.
    pub cutoff: Timestamp,
    pub report: PurgeReport,
    /// False when the pass's budget ran out in this workspace.
    pub finished: bool,
}

/// What one pass did (or, dry, would do).
#[derive(Debug, Clone)]
pub struct PassReport {
    /// The highest event ID that could go: the lowest position of
    /// `consumers`, or with none the newest committed event.
    pub up_to: Option<EventId>,
    /// The consumers whose positions bound the pass.
    pub consumers: Vec<String>,
    /// The consumer without a position that held everything back.
    pub held_by: Option<String>,
    pub workspaces: Vec<WorkspacePurge>,
}

impl PassReport {
    pub fn total(&self) -> PurgeReport {
        let mut total = PurgeReport::default();
        for w in &self.workspaces {
            total.add(&w.report);
        }
        total
    }
}

pub struct Purger {
    store: Store,
    settings: Settings,
    bound: Bound,
    metrics: Arc<Metrics>,
    /// Where the last background pass ran out of budget: the next starts there.
    resume_at: Option<WorkspaceId>,
}

impl Purger {
    pub fn new(store: Store, settings: Settings, bound: Bound, metrics: Arc<Metrics>) -> Purger {
        Purger {
            store,
            settings,
            bound,
            metrics,
            resume_at: None,
        }
    }

    /// The consumers whose positions bound a pass now.
    fn consumers(&self) -> StoreResult<Vec<String>> {
        Ok(match &self.bound {
            Bound::Consumers(names) => names.clone(),
            Bound::EveryRecord => self
                .store
                .consumers()?
                .into_iter()
                .map(|(name, _)| name)
                .collect(),
        })
    }

    /// The highest ID a purge may delete now, and the consumer that holds
    /// everything back when there is one.
    fn up_to(&self, names: &[String]) -> StoreResult<(Option<EventId>, Option<String>)> {
        if names.is_empty() {
            return Ok((self.store.last_event_id()?, None));
        }
        let mut lowest: Option<EventId> = None;
        for name in names {
            match self.store.consumer(name)?.and_then(|r| r.position) {
                None => return Ok((None, Some(name.clone()))),
                Some(p) => lowest = Some(lowest.map_or(p, |l| l.min(p))),
            }
        }
        Ok((lowest, None))
    }

    /// One pass over every workspace at `now`: deletes (or, `dry_run`, only
    /// counts) what retention allows, at most `budget` segments in all
    /// (`None`: no limit).
    pub fn pass(
        &mut self,
        now: Timestamp,
        dry_run: bool,
        budget: Option<usize>,
    ) -> StoreResult<PassReport> {
        let consumers = self.consumers()?;
        let (up_to, held_by) = self.up_to(&consumers)?;
        let mut workspaces = self.store.workspaces()?;
        workspaces.sort_by_key(|w| w.id);
        // Begin with the workspace the last pass did not finish.
        if let Some(at) = self.resume_at.take()
            && let Some(i) = workspaces.iter().position(|w| w.id == at)
        {
            workspaces.rotate_left(i);
        }
        let step = self.settings.retention.segments_per_step.max(1);
        let mut left = budget.unwrap_or(usize::MAX);
        let mut done = Vec::with_capacity(workspaces.len());
        for ws in workspaces {
            let retention_days = self.settings.retention_days(&ws.plan, ws.retention_days);
            let cutoff = Timestamp::from_millis(
                now.as_millis()
                    .saturating_sub(i64::from(retention_days) * DAY_MS),
            );
            let plan = PurgePlan {
                workspace: ws.id,
                before_ms: cutoff.as_millis(),
                up_to,
            };
            let mut report = PurgeReport::default();
            let mut after = None;
            let finished = loop {
                if left == 0 {
                    if self.resume_at.is_none() {
                        self.resume_at = Some(ws.id);
                    }
                    break false;
                }
                let s = self
                    .store
                    .purge_step(&plan, after, step.min(left), dry_run)?;
                report.add(&s.report);
                left = left.saturating_sub(s.report.segments().max(1) as usize);
                if !dry_run {
                    let m = &self.metrics.purge;
                    m.events.add(s.report.events);
                    m.segments_rewritten.add(s.report.segments_rewritten);
                    m.segments_removed.add(s.report.segments_removed);
                }
                match s.next {
                    Some(next) => after = Some(next),
                    None => break true,
                }
                // Let the Recorder's transactions in between steps.
                std::thread::yield_now();
            };
            done.push(WorkspacePurge {
                workspace: ws,
                retention_days,
                cutoff,
                report,
                finished,
            });
        }
        let pass = PassReport {
            up_to,
            consumers,
            held_by,
            workspaces: done,
        };
        if !dry_run && pass.total().segments() > 0 {
            // Files of segment bodies nothing points into any more.
            self.store.remove_unreferenced_bodies()?;
        }
        Ok(pass)
    }

    /// How long past its retention the oldest stored event of any workspace
    /// is, in seconds, after `pass`.
    fn overdue_seconds(&self, pass: &PassReport) -> StoreResult<u64> {
        let mut worst = 0i64;
        for w in &pass.workspaces {
            if let Some(oldest) = self.store.oldest_event_id(&w.workspace.id)? {
                worst = worst.max(w.cutoff.as_millis() - oldest.timestamp_ms());
            }
        }
        Ok((worst.max(0) / 1000) as u64)
    }
}

impl PeriodicTask for Purger {
    const NAME: &'static str = "purger";
    const STAGE: Stage = Stage::Maintenance;

    /// A background pass; none at start, so start-up never waits for one.
    fn run_once(&mut self, now: Timestamp, trigger: Trigger) -> Result<(), TaskError> {
        if trigger == Trigger::Start {
            return Ok(());
        }
        let budget = self.settings.retention.segments_per_run;
        let pass = self.pass(now, false, Some(budget))?;
        let m = &self.metrics.purge;
        m.runs.inc();
        let unfinished = pass.workspaces.iter().filter(|w| !w.finished).count();
        m.unfinished_workspaces.set(unfinished as u64);
        m.overdue_seconds.set(self.overdue_seconds(&pass)?);
        let total = pass.total();
        if let Some(consumer) = &pass.held_by {
            tracing::warn!(
                consumer,
                "retention: nothing purged, a consumer has not stored a position yet"
            );
        } else if total.events > 0 || unfinished > 0 {
            tracing::info!(
                events = total.events,
                segments_rewritten = total.segments_rewritten,
                segments_removed = total.segments_removed,
                unfinished,
                "retention: purged events past their workspace's retention"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ScanEvent;
    use crate::ids::LinkId;
    use crate::store::ConsumerRecord;

    const NOW: i64 = 1_800_000_000_000;

    fn settings(segments_per_run: usize) -> Settings {
        let per_run = segments_per_run.to_string();
        Settings::load_with_env(
            None,
            vec![
                ("SCANHOP__RETENTION__SEGMENTS_PER_STEP".into(), "2".into()),
                ("SCANHOP__RETENTION__SEGMENTS_PER_RUN".into(), per_run),
            ],
        )
        .unwrap()
    }

    /// A store with two workspaces, free (30 days) and pro (365 days), each
    /// with one scan per day for the last 40 days, one segment per day.
    fn store_with_days(s: &Settings) -> (tempfile::TempDir, Store, Workspace, Workspace) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8).unwrap();
        let (free, _) = crate::accounts::create_workspace(&store, s, "free", Some("free")).unwrap();
        let (pro, _) = crate::accounts::create_workspace(&store, s, "pro", Some("pro")).unwrap();
        let (a, b) = (LinkId::generate(), LinkId::generate());
        for day in (1..=40).rev() {
            let ms = NOW - day * DAY_MS;
            let mut ids = [
                EventId::lower_bound_bytes(ms),
                EventId::lower_bound_bytes(ms),
            ];
            ids[1][15] = 1;
            store
                .commit_scans(&[
                    ScanEvent::sample(EventId::from_bytes(ids[0]), free.id, a),
                    ScanEvent::sample(EventId::from_bytes(ids[1]), pro.id, b),
                ])
                .unwrap();
        }
        (dir, store, free, pro)
    }

    fn stored(store: &Store) -> usize {
        store.events_after(None, 1000).unwrap().len()
    }

    #[test]
    fn a_pass_deletes_what_each_workspace_keeps_no_longer_within_its_budget() {
        let s = settings(4);
        let (_dir, store, free, _) = store_with_days(&s);
        let metrics = Arc::new(Metrics::default());
        let mut purger = Purger::new(store.clone(), s, Bound::Consumers(vec![]), metrics.clone());
        let now = Timestamp::from_millis(NOW);
        purger.run_once(now, Trigger::Start).unwrap();
        assert_eq!(stored(&store), 80, "no pass at start");
        // Days 31..=40 are past the free plan's 30 days: 10 events in 10
        // segments, 4 per pass.
        purger.run_once(now, Trigger::Tick).unwrap();
        assert_eq!(stored(&store), 76);
        assert_eq!(
            metrics.purge.unfinished_workspaces.get(),
            2,
            "free ran out of budget, pro was not reached"
        );
        let overdue = metrics.purge.overdue_seconds.get();
        assert_eq!(overdue, 6 * 86_400, "the oldest left is 6 days overdue");
        purger.run_once(now, Trigger::Tick).unwrap();
        purger.run_once(now, Trigger::Tick).unwrap();
        assert_eq!(stored(&store), 70);
        assert_eq!(metrics.purge.unfinished_workspaces.get(), 0);
        assert_eq!(metrics.purge.overdue_seconds.get(), 0);
        assert_eq!(metrics.purge.events.get(), 10);
        assert_eq!(
            metrics.purge.segments_rewritten.get(),
            10,
            "pro's events stay"
        );
        assert_eq!(metrics.purge.runs.get(), 3);
        assert_eq!(store.purged_workspace_scans(&free.id).unwrap(), 10);
        // Ten days later the pro workspace still keeps everything.
        let later = Timestamp::from_millis(NOW + 10 * DAY_MS);
        let pass = purger.pass(later, false, None).unwrap();
        assert_eq!(pass.total().events, 10);
        assert_eq!(pass.total().segments_rewritten, 10, "pro's events stay");
        assert_eq!(stored(&store), 60);
        assert!(
            store
                .events_after(None, 1000)
                .unwrap()
                .iter()
                .all(|e| e.workspace_id != free.id || e.timestamp_ms() >= NOW - 20 * DAY_MS)
        );
    }

    #[test]
    fn a_pass_never_passes_the_lowest_consumer_position() {
        let s = settings(1000);
        let (_dir, store, _, _) = store_with_days(&s);
        let metrics = Arc::new(Metrics::default());
        let names = vec!["counters".to_owned(), "visitors".to_owned()];
        let mut purger = Purger::new(store.clone(), s, Bound::Consumers(names), metrics);
        let now = Timestamp::from_millis(NOW);
        // No record yet: nothing may go.
        let pass = purger.pass(now, false, None).unwrap();
        assert_eq!(pass.held_by.as_deref(), Some("counters"));
        assert_eq!(pass.consumers, ["counters", "visitors"]);
        assert_eq!(stored(&store), 80);
        // The lowest position is the 36-day-old free event: days 36..=40 go.
        let all = store.events_after(None, 1000).unwrap();
        let at = |i: usize| ConsumerRecord {
            position: Some(all[i].id),
            ..ConsumerRecord::default()
        };
        store.save_consumer("counters", &at(70)).unwrap();
        store.save_consumer("visitors", &at(8)).unwrap();
        let pass = purger.pass(now, false, None).unwrap();
        assert_eq!(pass.up_to, Some(all[8].id));
        assert_eq!(pass.total().events, 5);
        assert_eq!(store.event(&all[8].id).unwrap(), None, "at the bound: gone");
        assert!(store.event(&all[10].id).unwrap().is_some(), "past it: kept");
        // A consumer that moved on lets the rest go; one unknown to the
        // server's list does not count.
        store.save_consumer("visitors", &at(79)).unwrap();
        store.save_consumer("retired", &at(0)).unwrap();
        assert_eq!(purger.pass(now, false, None).unwrap().total().events, 5);
        assert_eq!(stored(&store), 70);
        // The command line respects every record, the retired one too.
        let mut cli = Purger::new(
            store.clone(),
            settings(1000),
            Bound::EveryRecord,
            Arc::new(Metrics::default()),
        );
        let later = Timestamp::from_millis(NOW + 5 * DAY_MS);
        assert_eq!(cli.pass(later, false, None).unwrap().up_to, Some(all[0].id));
    }

    #[test]
    fn a_dry_run_counts_what_the_pass_then_deletes() {
        let s = settings(1000);
        let (_dir, store, _, pro) = store_with_days(&s);
        crate::accounts::set_plan(&store, &s, "pro", crate::config::ENTERPRISE_PLAN, Some(35))
            .unwrap();
        let mut purger = Purger::new(
            store.clone(),
            s,
            Bound::Consumers(vec![]),
            Arc::new(Metrics::default()),
        );
        let now = Timestamp::from_millis(NOW);
        let dry = purger.pass(now, true, None).unwrap();
        assert_eq!(stored(&store), 80, "a dry run deletes nothing");
        let real = purger.pass(now, false, None).unwrap();
        // Which segments end up removed rather than rewritten depends on
        // what the workspaces before deleted; events and segments do not.
        let counts = |p: &PassReport| -> Vec<(WorkspaceId, u32, u64, u64, u64)> {
            p.workspaces
                .iter()
                .map(|w| {
                    let r = &w.report;
                    (
                        w.workspace.id,
                        w.retention_days,
                        r.events,
                        r.scans,
                        r.segments(),
                    )
                })
                .collect()
        };
        assert_eq!(counts(&dry), counts(&real));
        let of_pro = real.workspaces.iter().find(|w| w.workspace.id == pro.id);
        let of_pro = of_pro.unwrap();
        assert_eq!((of_pro.retention_days, of_pro.report.events), (35, 5));
        assert_eq!(real.total().events, 15);
    }
}
