//! Workers downstream of the Recorder, in one shape: a `Consumer` folds
//! committed events into its state; `ConsumerWorker` feeds it from a durable
//! position. The position (the last event folded) is stored with the state in
//! one record at every checkpoint, so after any crash the worker resumes
//! exactly where its stored state ends: nothing is counted twice or missed.
//!
//! The Recorder's `ScansCommitted` is only a wake-up carrying the batch as a
//! shortcut: when the batch follows the position it is folded directly;
//! otherwise (a wake-up was dropped because the mailbox was full, or the
//! worker restarted) the worker reads the committed events after its position
//! from the store. A lost message costs latency, never correctness.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::recorder::ScansCommitted;
use super::worker::{Drain, DrainReport, Stage, WorkerHandle, WorkerStatus};
use crate::config::ConsumerSettings;
use crate::domain::{ScanEvent, Timestamp};
use crate::ids::{EventId, VisitorId};
use crate::store::{ConsumerRecord, Store, StoreError, StoreResult};

/// Pages of events read per step when catching up, so one step stays short
/// and wake-ups are handled in between.
const PAGES_PER_STEP: usize = 8;

pub trait Consumer: Unpin + Send + 'static {
    /// Names the worker in logs and metrics, and its stored record.
    const NAME: &'static str;
    /// What the consumer derives from events; stored with the position.
    type State: Serialize + DeserializeOwned + Default + Unpin + Send + 'static;

    /// Folds `events` (ascending IDs, each after the previous position) into `state`.
    fn apply(&mut self, state: &mut Self::State, events: &[ScanEvent]);

    /// `apply` for a batch as the Recorder hands it on: `new_visitors` are
    /// the visitors first seen in it, which no earlier event carries.
    /// Events read from the store come through `apply`, without that.
    fn apply_committed(
        &mut self,
        state: &mut Self::State,
        events: &[ScanEvent],
        _new_visitors: &[VisitorId],
    ) {
        self.apply(state, events)
    }

    /// `apply_committed` (when `new_visitors` are given) or `apply`, for a
    /// batch in a shared allocation: the worker always folds through this.
    /// A consumer that keeps events until its checkpoint keeps the batch
    /// instead of copying its events.
    fn apply_shared(
        &mut self,
        state: &mut Self::State,
        events: &Arc<[ScanEvent]>,
        new_visitors: Option<&[VisitorId]>,
    ) {
        match new_visitors {
            Some(new) => self.apply_committed(state, events, new),
            None => self.apply(state, events),
        }
    }

    /// Runs at a checkpoint before the state is encoded for `persist`: a
    /// consumer that decides about the events it folded only then, and
    /// keeps the decision in its state, does it here. It may run again
    /// after a `persist` that failed.
    fn prepare(&mut self, _state: &mut Self::State, _store: &Store) -> StoreResult<()> {
        Ok(())
    }

    /// Stores `record` (position, count and encoded `State`) at a checkpoint.
    /// A consumer whose derived data lives in trees of its own overrides this
    /// to write that data and the record in one store transaction.
    fn persist(&mut self, store: &Store, record: &ConsumerRecord) -> StoreResult<()> {
        store.save_consumer(Self::NAME, record)
    }

    /// Whether `maintain` has work (checked at every step, at `now`).
    fn needs_maintenance(&self, _state: &Self::State, _now: Timestamp) -> bool {
        false
    }

    /// Work on what is already folded (a rebuild, say), run after a
    /// checkpoint, so the store holds everything up to `position`. Answers
    /// whether it changed `state`, which is then checkpointed.
    fn maintain(
        &mut self,
        _state: &mut Self::State,
        _store: &Store,
        _position: Option<EventId>,
        _now: Timestamp,
    ) -> StoreResult<bool> {
        Ok(false)
    }
}

/// Progress shared with `/metrics`.
#[derive(Debug, Default)]
pub struct ConsumerProgress {
    /// Events folded since the consumer first ran (durable with its position).
    pub events: AtomicU64,
    folded_since_start: AtomicU64,
    behind_at_start: AtomicU64,
}

impl ConsumerProgress {
    /// Committed events not yet folded, given the events the Recorder has
    /// committed since start.
    pub fn lag(&self, committed_since_start: u64) -> u64 {
        (self.behind_at_start.load(Ordering::Relaxed) + committed_since_start)
            .saturating_sub(self.folded_since_start.load(Ordering::Relaxed))
    }
}

/// A started consumer: where the Recorder sends wake-ups, and its handle.
pub struct StartedConsumer {
    pub wake: Recipient<ScansCommitted>,
    /// Runs a step now (after a change the consumer must act on).
    pub poke: Recipient<Poke>,
    pub handle: WorkerHandle,
}

/// Starts one consumer; the app calls it with the store once it is open.
pub type ConsumerStarter = Box<dyn FnOnce(&Store) -> StoreResult<StartedConsumer> + Send>;

pub struct ConsumerWorker<C: Consumer> {
    consumer: C,
    state: C::State,
    position: Option<EventId>,
    store: Store,
    settings: ConsumerSettings,
    status: Arc<WorkerStatus>,
    progress: Arc<ConsumerProgress>,
    dirty: bool,
    /// Events folded since the state was last stored.
    unsaved: usize,
    last_checkpoint: Timestamp,
}

fn codec_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Codec(e.to_string())
}

impl<C: Consumer> ConsumerWorker<C> {
    /// Loads the consumer's stored position and state.
    pub fn load(consumer: C, store: Store, settings: ConsumerSettings) -> StoreResult<Self> {
        let record = store.consumer(C::NAME)?.unwrap_or_default();
        let state = if record.state.is_empty() {
            C::State::default()
        } else {
            bincode::serde::decode_from_slice(&record.state, bincode::config::standard())
                .map_err(codec_error)?
                .0
        };
        let progress = Arc::new(ConsumerProgress::default());
        progress.events.store(record.events, Ordering::Relaxed);
        let behind = store.count_events_after(record.position)?;
        progress.behind_at_start.store(behind, Ordering::Relaxed);
        Ok(ConsumerWorker {
            consumer,
            state,
            position: record.position,
            store,
            settings,
            status: WorkerStatus::new(),
            progress,
            dirty: false,
            unsaved: 0,
            // The first step checkpoints whatever it caught up on.
            last_checkpoint: Timestamp::from_millis(0),
        })
    }

    /// A starter for the app: loads, then runs the worker on its own thread
    /// (its store reads and writes never block an HTTP worker).
    pub fn starter(consumer: C, settings: ConsumerSettings) -> ConsumerStarter {
        Box::new(move |store: &Store| {
            let worker = ConsumerWorker::load(consumer, store.clone(), settings)?;
            Ok(worker.start())
        })
    }

    fn start(self) -> StartedConsumer {
        let (status, progress) = (self.status.clone(), self.progress.clone());
        let arbiter = super::threads::background_arbiter(C::NAME);
        let addr = ConsumerWorker::start_in_arbiter(&arbiter.handle(), move |_| self);
        StartedConsumer {
            wake: addr.clone().recipient(),
            poke: addr.clone().recipient(),
            handle: WorkerHandle::new(C::NAME, Stage::Consumers, &addr, status)
                .with_progress(progress)
                .on_arbiter(arbiter.handle()),
        }
    }

    pub fn state(&self) -> &C::State {
        &self.state
    }

    pub fn position(&self) -> Option<EventId> {
        self.position
    }

    fn fold(&mut self, events: Vec<ScanEvent>) {
        self.fold_committed(&events.into(), None);
    }

    /// `fold`, with the batch's new visitors when the Recorder gave them.
    fn fold_committed(&mut self, events: &Arc<[ScanEvent]>, new_visitors: Option<&[VisitorId]>) {
        let Some(last) = events.last() else {
            return;
        };
        self.consumer
            .apply_shared(&mut self.state, events, new_visitors);
        self.position = Some(last.id);
        self.dirty = true;
        self.unsaved += events.len();
        let n = events.len() as u64;
        self.progress.events.fetch_add(n, Ordering::Relaxed);
        self.progress
            .folded_since_start
            .fetch_add(n, Ordering::Relaxed);
    }

    /// A committed batch; `after` is the event committed just before it.
    /// Stores the state at once when this makes more than `unsaved_limit`
    /// events folded since it was last stored: wake-ups can arrive faster
    /// than the timer's checkpoints (the worker runs at a low priority), and
    /// what a consumer holds until its checkpoint (a webhook message per
    /// event) must not grow with the backlog.
    pub fn on_batch(
        &mut self,
        after: Option<EventId>,
        events: &Arc<[ScanEvent]>,
        new_visitors: &[VisitorId],
    ) -> StoreResult<()> {
        match events.last() {
            // Already read from the store.
            Some(last) if self.position >= Some(last.id) => return Ok(()),
            Some(_) if self.position == after => self.fold_committed(events, Some(new_visitors)),
            // A gap: something before this batch was not seen yet.
            Some(_) => {
                self.catch_up(PAGES_PER_STEP)?;
            }
            None => return Ok(()),
        }
        if self.unsaved >= self.unsaved_limit() {
            self.save()?;
        }
        Ok(())
    }

    /// Events folded at most before the state is stored: what one step
    /// catches up.
    fn unsaved_limit(&self) -> usize {
        self.settings.read_batch_size.saturating_mul(PAGES_PER_STEP)
    }

    /// Reads and folds up to `pages` pages after the position; true when it
    /// reached the newest committed event.
    fn catch_up(&mut self, pages: usize) -> StoreResult<bool> {
        let size = self.settings.read_batch_size;
        for _ in 0..pages {
            let events = self.store.events_after(self.position, size)?;
            let read = events.len();
            self.fold(events);
            if read < size {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Stores position and state together, when anything changed.
    pub fn checkpoint(&mut self, now: Timestamp) -> StoreResult<()> {
        self.last_checkpoint = now;
        self.save()
    }

    /// Stores position and state, when anything changed (a checkpoint that
    /// leaves the timer's schedule alone).
    fn save(&mut self) -> StoreResult<()> {
        if !self.dirty {
            return Ok(());
        }
        self.consumer.prepare(&mut self.state, &self.store)?;
        let state = bincode::serde::encode_to_vec(&self.state, bincode::config::standard())
            .map_err(codec_error)?;
        let record = ConsumerRecord {
            position: self.position,
            events: self.progress.events.load(Ordering::Relaxed),
            state,
        };
        self.consumer.persist(&self.store, &record)?;
        self.dirty = false;
        self.unsaved = 0;
        Ok(())
    }

    /// One step at `now`: catch up a bounded amount, checkpoint when due,
    /// then let the consumer maintain what it folded. Answers whether it is
    /// caught up.
    pub fn run_once(&mut self, now: Timestamp) -> StoreResult<bool> {
        let caught_up = self.catch_up(PAGES_PER_STEP)?;
        let due = now.as_millis() - self.last_checkpoint.as_millis()
            >= self.settings.checkpoint_interval_ms as i64;
        let maintain = self.consumer.needs_maintenance(&self.state, now);
        if due || !caught_up || maintain {
            self.checkpoint(now)?;
        }
        if maintain
            && self
                .consumer
                .maintain(&mut self.state, &self.store, self.position, now)?
        {
            self.dirty = true;
            self.checkpoint(now)?;
        }
        Ok(caught_up)
    }

    fn step(&mut self, ctx: &mut Context<Self>) {
        let ran = self.run_once(Timestamp::now());
        crate::store::release_log_buffers();
        match ran {
            Ok(caught_up) => {
                self.status.ran(true);
                if !caught_up {
                    ctx.notify(Step);
                }
            }
            Err(e) => {
                self.status.ran(false);
                tracing::error!(worker = C::NAME, error = %e, "consumer step failed; retrying");
            }
        }
    }
}

impl<C: Consumer> Actor for ConsumerWorker<C> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.settings.mailbox_capacity);
        let tick = Duration::from_millis(self.settings.checkpoint_interval_ms);
        ctx.run_interval(tick, |act, ctx| act.step(ctx));
        ctx.notify(Step);
        self.status.set_ready(true);
    }
}

/// Go on catching up (sent to itself between bounded steps).
#[derive(Message)]
#[rtype(result = "()")]
struct Step;

impl<C: Consumer> Handler<Step> for ConsumerWorker<C> {
    type Result = ();

    fn handle(&mut self, _: Step, ctx: &mut Self::Context) {
        self.step(ctx);
    }
}

/// Run a step now rather than at the next tick.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Poke;

impl<C: Consumer> Handler<Poke> for ConsumerWorker<C> {
    type Result = ();

    fn handle(&mut self, _: Poke, ctx: &mut Self::Context) {
        self.step(ctx);
    }
}

impl<C: Consumer> Handler<ScansCommitted> for ConsumerWorker<C> {
    type Result = ();

    fn handle(&mut self, msg: ScansCommitted, _: &mut Self::Context) {
        if let Err(e) = self.on_batch(msg.after, &msg.events, &msg.new_visitors) {
            self.status.ran(false);
            tracing::error!(worker = C::NAME, error = %e, "consumer failed to read events; retrying at the next tick");
        }
    }
}

impl<C: Consumer> Handler<Drain> for ConsumerWorker<C> {
    type Result = DrainReport;

    /// Folds everything committed (the Recorder drained before), then checkpoints.
    fn handle(&mut self, msg: Drain, ctx: &mut Self::Context) -> DrainReport {
        let mut result = Ok(false);
        while matches!(result, Ok(false)) && std::time::Instant::now() < msg.deadline {
            result = self.catch_up(PAGES_PER_STEP);
        }
        let saved = result.and_then(|_| self.checkpoint(Timestamp::now()));
        if let Err(e) = &saved {
            tracing::error!(worker = C::NAME, error = %e, "consumer could not checkpoint at shutdown");
        }
        ctx.stop();
        let left = self
            .store
            .count_events_after(self.position)
            .unwrap_or(u64::MAX);
        DrainReport {
            left: if saved.is_ok() { left } else { left.max(1) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{LinkId, WorkspaceId};

    /// Counts events and remembers the IDs it saw, to catch doubles.
    struct Tally;

    impl Consumer for Tally {
        const NAME: &'static str = "tally";
        type State = Vec<EventId>;
        fn apply(&mut self, state: &mut Vec<EventId>, events: &[ScanEvent]) {
            state.extend(events.iter().map(|e| e.id));
        }
    }

    fn batch(n: usize) -> Vec<ScanEvent> {
        let (ws, link) = (WorkspaceId::generate(), LinkId::generate());
        let mut ids: Vec<EventId> = (0..n).map(|_| EventId::generate()).collect();
        ids.sort();
        ids.into_iter()
            .map(|id| ScanEvent::sample(id, ws, link))
            .collect()
    }

    fn settings() -> ConsumerSettings {
        ConsumerSettings {
            mailbox_capacity: 1,
            read_batch_size: 7,
            checkpoint_interval_ms: 1000,
        }
    }

    #[test]
    fn a_consumer_folds_every_committed_event_once_across_gaps_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8).unwrap();
        // 45 events after the first step: fewer than a step holds unsaved (56).
        let batches: Vec<Vec<ScanEvent>> = (0..6).map(|i| batch(3 + i * 3)).collect();
        let mut committed: Vec<EventId> = Vec::new();
        for b in &batches[..3] {
            store.commit_scans(b).unwrap();
            committed.extend(b.iter().map(|e| e.id));
        }
        let mut w = ConsumerWorker::load(Tally, store.clone(), settings()).unwrap();
        assert_eq!(
            store.count_events_after(None).unwrap(),
            committed.len() as u64
        );
        // Started behind: reads the store in pages of 7 until caught up.
        let t0 = Timestamp::from_millis(1_000_000);
        while !w.run_once(t0).unwrap() {}
        assert_eq!(w.state(), &committed);
        assert_eq!(
            store.consumer("tally").unwrap().unwrap().position,
            committed.last().copied(),
            "the first step checkpoints"
        );
        // A wake-up that follows the position is folded from the message.
        let after = committed.last().copied();
        store.commit_scans(&batches[3]).unwrap();
        committed.extend(batches[3].iter().map(|e| e.id));
        w.on_batch(after, &batches[3].clone().into(), &[]).unwrap();
        assert_eq!(w.state(), &committed);
        // The same wake-up again changes nothing.
        w.on_batch(after, &batches[3].clone().into(), &[]).unwrap();
        assert_eq!(w.state(), &committed);
        // A dropped wake-up leaves a gap: the next one makes it read the store.
        let before_gap = committed.last().copied();
        store.commit_scans(&batches[4]).unwrap();
        committed.extend(batches[4].iter().map(|e| e.id));
        let after_dropped = committed.last().copied();
        store.commit_scans(&batches[5]).unwrap();
        committed.extend(batches[5].iter().map(|e| e.id));
        assert_ne!(before_gap, after_dropped);
        w.on_batch(after_dropped, &batches[5].clone().into(), &[])
            .unwrap();
        assert_eq!(w.state(), &committed);
        // Not yet checkpointed: a restart now resumes from the stored record.
        let stored = store.consumer("tally").unwrap().unwrap();
        assert!(stored.position < w.position());
        w.checkpoint(t0).unwrap();
        let again = ConsumerWorker::load(Tally, store.clone(), settings()).unwrap();
        assert_eq!(again.state(), &committed);
        assert_eq!(again.position(), committed.last().copied());
        assert_eq!(
            store.consumer("tally").unwrap().unwrap().events,
            committed.len() as u64
        );
        assert_eq!(store.count_events_after(again.position()).unwrap(), 0);
    }

    #[test]
    fn wake_ups_faster_than_the_timer_store_the_state_every_few_pages() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8).unwrap();
        let mut w = ConsumerWorker::load(Tally, store.clone(), settings()).unwrap();
        // 7 events a page, 8 pages a step: at most 56 events are held.
        let limit = 7 * PAGES_PER_STEP;
        let mut after = None;
        let mut folded = 0;
        for _ in 0..40 {
            let b = batch(5);
            store.commit_scans(&b).unwrap();
            w.on_batch(after, &b.clone().into(), &[]).unwrap();
            after = b.last().map(|e| e.id);
            folded += b.len();
            let stored = store.consumer("tally").unwrap().map_or(0, |r| r.events) as usize;
            assert!(
                folded - stored < limit,
                "{folded} folded, {stored} stored: no timer ran, yet the state is stored"
            );
        }
        assert_eq!(w.state().len(), 200);
    }

    #[test]
    fn checkpoints_follow_the_injected_clock() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8).unwrap();
        let mut w = ConsumerWorker::load(Tally, store.clone(), settings()).unwrap();
        let t0 = Timestamp::from_millis(5_000_000);
        w.checkpoint(t0).unwrap();
        store.commit_scans(&batch(3)).unwrap();
        assert!(w.run_once(Timestamp::from_millis(5_000_500)).unwrap());
        assert_eq!(w.state().len(), 3);
        assert!(store.consumer("tally").unwrap().is_none(), "not due yet");
        w.run_once(Timestamp::from_millis(5_001_000)).unwrap();
        assert_eq!(store.consumer("tally").unwrap().unwrap().events, 3, "due");
    }
}
