//! Recorder: the single writer of scan events.
//!
//! Redirect handlers put events into the Recorder's intake queue, a bounded
//! queue the Recorder owns, instead of sending one actor message per scan:
//! a push is a short mutex hold on the worker thread, and the Recorder thread
//! is woken once per batch (or by its own tick), not once per scan. That keeps
//! the cross-thread wake off the per-request cost (docs/DESIGN.md, "The hot
//! path").
//!
//! The Recorder gives each event its ID as it enters the queue (under the
//! queue's lock), so IDs follow queue order and every committed batch covers a
//! contiguous ID range: the store keeps a batch as one segment (see
//! `store/segment.rs`). IDs continue after the newest stored event even if
//! the clock stepped back across a restart.
//!
//! The Recorder drains the queue in batches of `recorder.batch_size`, writes
//! each batch in one sled transaction, and in `strict` mode flushes it to disk
//! before publishing the batch's sequence number, which is what strict
//! redirects wait for (group commit). Each committed batch wakes the
//! consumers downstream (`consumer.rs`), which read from their own durable
//! positions: the wake-up is a non-blocking send that may be dropped.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::{Notify, watch};

use super::registry::VisitorRegistry;
use super::threads;
use super::worker::{Drain, DrainReport, Stage, WorkerHandle, WorkerStatus};
use crate::config::{Durability, Overflow, RecorderSettings};
use crate::domain::ScanEvent;
use crate::enrich::fingerprint::Fingerprint;
use crate::ids::EventId;
use crate::metrics::Metrics;
use crate::store::Store;

const MAX_RETRY_DELAY: Duration = Duration::from_secs(1);

/// A batch of events that is in the store: a wake-up for the consumers
/// downstream, with the batch as a shortcut (see `consumer.rs`).
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct ScansCommitted {
    /// The last event committed before this batch (`None`: the store had none).
    pub after: Option<EventId>,
    /// The batch, ascending IDs.
    pub events: Arc<[ScanEvent]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordOutcome {
    /// The Recorder has the event under this ID (strict: it is on disk).
    Recorded(EventId),
    /// The queue was full and `overflow = "drop"`: not recorded, counted.
    Dropped,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("the recorder is shutting down")]
    Closed,
    #[error("the scan was not confirmed durable in time")]
    NotDurable,
}

/// A scan waiting in the queue; `device`: the fingerprint of a device the
/// redirect's cache did not know, resolved to a visitor when the Recorder
/// takes the scan (`VisitorRegistry::resolve`).
struct Queued {
    event: ScanEvent,
    device: Option<Fingerprint>,
}

struct Queue {
    events: VecDeque<Queued>,
    /// Sequence number of the next event pushed; the first is 1.
    next_seq: u64,
    /// The last event ID given out.
    last_id: EventId,
    random: RandomBytes,
}

/// Random bytes from the OS, fetched in blocks.
struct RandomBytes {
    block: Box<[u8; 4096]>,
    used: usize,
}

impl RandomBytes {
    fn new() -> RandomBytes {
        RandomBytes {
            block: Box::new([0; 4096]),
            used: 4096,
        }
    }

    fn take(&mut self) -> [u8; 10] {
        if self.used + 10 > self.block.len() {
            crate::random::fill(&mut self.block[..]);
            self.used = 0;
        }
        let mut out = [0u8; 10];
        out.copy_from_slice(&self.block[self.used..self.used + 10]);
        self.used += 10;
        out
    }
}

impl Queue {
    /// A fresh UUIDv7 ID, strictly greater than every ID given out before.
    /// Its 74 random bits come from the OS generator, read 4 KiB at a time:
    /// a system call per ID under this lock was a tenth of the redirect's
    /// own CPU.
    fn next_id(&mut self) -> EventId {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let fresh = EventId::from_uuid(
            uuid::Builder::from_unix_timestamp_millis(now_ms, &self.random.take()).into_uuid(),
        );
        let id = if fresh > self.last_id {
            fresh
        } else {
            let next = u128::from_be_bytes(*self.last_id.as_bytes()).wrapping_add(1);
            EventId::from_bytes(next.to_be_bytes())
        };
        self.last_id = id;
        id
    }
}

/// The intake queue, shared by the handlers (push) and the Recorder (drain).
struct Intake {
    queue: Mutex<Queue>,
    capacity: usize,
    batch_size: usize,
    overflow: Overflow,
    durability: Durability,
    ack_timeout: Duration,
    /// The sequence number of the last event committed (strict: flushed).
    committed: watch::Sender<u64>,
    space: Notify,
    wake_pending: AtomicBool,
    closed: AtomicBool,
}

enum Push {
    Queued {
        seq: u64,
        id: EventId,
        wake: bool,
    },
    /// The queue is full; the scan comes back (boxed: this is the rare path).
    Full(Box<Queued>),
}

impl Intake {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // Nothing panics while holding this lock; recover the data if it ever did.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn try_push(&self, mut scan: Queued) -> Push {
        let mut q = self.lock();
        if q.events.len() >= self.capacity {
            return Push::Full(Box::new(scan));
        }
        let id = q.next_id();
        scan.event.id = id;
        q.events.push_back(scan);
        let seq = q.next_seq;
        q.next_seq += 1;
        // Strict redirects wait for the commit: start it now rather than at the
        // next tick (events arriving meanwhile form the next group commit).
        // Batched ones only need a wake when a full batch is waiting.
        let wake = self.durability == Durability::Strict || q.events.len() >= self.batch_size;
        Push::Queued { seq, id, wake }
    }

    /// Up to `batch_size` events and the sequence number of the last one;
    /// `None` when fewer than `at_least` (and at least one) are queued.
    fn take_batch(&self, at_least: usize) -> Option<(Vec<Queued>, u64)> {
        let mut q = self.lock();
        if q.events.len() < at_least.max(1) {
            return None;
        }
        let n = q.events.len().min(self.batch_size);
        let batch: Vec<Queued> = q.events.drain(..n).collect();
        let last_seq = q.next_seq - q.events.len() as u64 - 1;
        Some((batch, last_seq))
    }

    /// The sequence number of the last event queued (0: none yet).
    fn last_queued(&self) -> u64 {
        self.lock().next_seq - 1
    }

    /// The next batch of a Recorder run that began when `queued` was the
    /// last sequence number queued.
    ///
    /// Batched mode takes what was queued when the run began, then only full
    /// batches: what arrives meanwhile waits for the next tick (or the wake
    /// of a full batch). Chasing every arrival would commit, one after the
    /// other, batches of whatever came in during the previous commit (about
    /// 100 events at 65,000 scans per second instead of 512), and a batch
    /// costs the store nearly as much whatever its size. Strict mode
    /// chases: a redirect waits for its batch.
    fn next_batch(&self, queued: u64) -> Option<(Vec<Queued>, u64)> {
        let chase = self.durability == Durability::Strict || *self.committed.borrow() < queued;
        self.take_batch(if chase { 1 } else { self.batch_size })
    }

    fn depth(&self) -> usize {
        self.lock().events.len()
    }
}

/// What redirect handlers hold: records a scan, honouring the overflow policy
/// and, in strict mode, waiting for durability.
#[derive(Clone)]
pub struct RecorderHandle {
    intake: Arc<Intake>,
    addr: Addr<Recorder>,
    metrics: Arc<Metrics>,
}

impl RecorderHandle {
    /// Records `event`; its `id` is assigned here (whatever it held before).
    /// `device`: the fingerprint of a device whose visitor the redirect did
    /// not find in the registry's cache; the Recorder resolves it (reading
    /// the store off the HTTP workers) and sets the event's visitor.
    pub async fn record(
        &self,
        event: ScanEvent,
        device: Option<Fingerprint>,
    ) -> Result<RecordOutcome, RecordError> {
        let intake = &self.intake;
        let mut event = Queued { event, device };
        let (seq, id) = loop {
            if intake.closed.load(Ordering::Acquire) {
                return Err(RecordError::Closed);
            }
            let mut space = pin!(intake.space.notified());
            space.as_mut().enable();
            match intake.try_push(event) {
                Push::Queued { seq, id, wake } => {
                    if wake && !intake.wake_pending.swap(true, Ordering::AcqRel) {
                        // A full mailbox means the Recorder is already busy; its tick will come.
                        let _ = self.addr.try_send(Wake);
                    }
                    break (seq, id);
                }
                Push::Full(returned) => match intake.overflow {
                    Overflow::Drop => {
                        self.metrics.scans_dropped_queue_full.inc();
                        return Ok(RecordOutcome::Dropped);
                    }
                    Overflow::Wait => {
                        self.metrics.recorder_backpressure_waits.inc();
                        event = *returned;
                        space.await;
                    }
                },
            }
        };
        if intake.durability == Durability::Strict {
            let mut rx = intake.committed.subscribe();
            let done = tokio::time::timeout(intake.ack_timeout, rx.wait_for(|c| *c >= seq)).await;
            if !matches!(done, Ok(Ok(_))) {
                return Err(RecordError::NotDurable);
            }
        }
        Ok(RecordOutcome::Recorded(id))
    }
}

impl RecorderHandle {
    /// Waits until every event queued before this call is committed (or
    /// `timeout` passes: then false). Erasure uses it so that no scan still
    /// on its way carries a visitor after the visitor is gone.
    pub async fn settled(&self, timeout: Duration) -> bool {
        let target = self.intake.lock().next_seq - 1;
        let mut rx = self.intake.committed.subscribe();
        if *rx.borrow() >= target {
            return true;
        }
        let _ = self.addr.try_send(Wake);
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(|c| *c >= target)).await,
            Ok(Ok(_))
        )
    }
}

/// A batch taken from the queue but not yet fully committed.
struct Pending {
    events: Vec<ScanEvent>,
    last_seq: u64,
    written: bool,
}

pub struct Recorder {
    store: Store,
    intake: Arc<Intake>,
    interval: Duration,
    mailbox_capacity: usize,
    downstream: Vec<Recipient<ScansCommitted>>,
    /// Registry entries of new visitors are written with their first event.
    registry: Arc<VisitorRegistry>,
    /// The last event committed; the next batch is handed on as coming after it.
    last_committed: Option<EventId>,
    metrics: Arc<Metrics>,
    status: Arc<WorkerStatus>,
    pending: Option<Pending>,
    retry_at: Option<Instant>,
    retry_delay: Duration,
}

impl Recorder {
    /// Starts the Recorder on its own arbiter (thread), so its blocking sled
    /// writes and fsyncs never run on an HTTP worker. IDs continue after the
    /// newest stored event; committed batches wake `downstream`.
    pub fn start(
        store: Store,
        settings: &RecorderSettings,
        durability: Durability,
        downstream: Vec<Recipient<ScansCommitted>>,
        registry: Arc<VisitorRegistry>,
        metrics: Arc<Metrics>,
    ) -> Result<(RecorderHandle, WorkerHandle), crate::store::StoreError> {
        let last_event_id = store.last_event_id()?;
        let intake = Arc::new(Intake {
            queue: Mutex::new(Queue {
                events: VecDeque::with_capacity(settings.batch_size),
                next_seq: 1,
                last_id: last_event_id.unwrap_or_else(|| EventId::from_bytes([0; 16])),
                random: RandomBytes::new(),
            }),
            capacity: settings.queue_capacity,
            batch_size: settings.batch_size,
            overflow: settings.overflow,
            durability,
            ack_timeout: Duration::from_millis(settings.ack_timeout_ms),
            committed: watch::Sender::new(0),
            space: Notify::new(),
            wake_pending: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        });
        let recorder = Recorder {
            store,
            intake: intake.clone(),
            interval: Duration::from_millis(settings.batch_interval_ms),
            mailbox_capacity: settings.mailbox_capacity,
            downstream,
            registry,
            last_committed: last_event_id,
            metrics: metrics.clone(),
            status: WorkerStatus::new(),
            pending: None,
            retry_at: None,
            retry_delay: Duration::from_millis(10),
        };
        let status = recorder.status.clone();
        let arbiter = super::threads::named_arbiter("recorder");
        let addr = Recorder::start_in_arbiter(&arbiter.handle(), move |_| recorder);
        let worker = WorkerHandle::new("recorder", Stage::Intake, &addr, status);
        Ok((
            RecorderHandle {
                intake,
                addr,
                metrics,
            },
            worker,
        ))
    }

    /// Commits every batch that is ready; stops at the first failure and
    /// keeps that batch for a retry with backoff. Returns false on failure.
    /// Batched mode leaves what arrives meanwhile to the next run unless it
    /// fills a batch (`Intake::next_batch`).
    fn commit_ready(&mut self, now: Instant) -> bool {
        let queued = self.intake.last_queued();
        loop {
            if self.pending.is_none() {
                self.pending = self
                    .intake
                    .next_batch(queued)
                    .map(|(scans, last_seq)| Pending {
                        events: self.resolve_visitors(scans),
                        last_seq,
                        written: false,
                    });
                self.intake.space.notify_waiters();
            }
            let Some(pending) = self.pending.as_mut() else {
                return true;
            };
            if !pending.written {
                let new_visitors = self.registry.new_in(&pending.events);
                match self.store.commit_scans_with(&pending.events, &new_visitors) {
                    Ok(bytes) => self.metrics.event_bytes.add(bytes as u64),
                    Err(e) => {
                        tracing::error!(error = %e, events = pending.events.len(), "writing a scan batch failed; will retry");
                        return self.schedule_retry(now);
                    }
                }
                self.registry.committed(&new_visitors);
                pending.written = true;
            }
            if self.intake.durability == Durability::Strict {
                let started = Instant::now();
                if let Err(e) = self.store.flush() {
                    tracing::error!(error = %e, "flushing a scan batch failed; will retry");
                    return self.schedule_retry(now);
                }
                self.metrics.flush_seconds.observe(started.elapsed());
            }
            let Some(done) = self.pending.take() else {
                return true;
            };
            self.metrics.scans_recorded.add(done.events.len() as u64);
            self.metrics.recorder_batches.inc();
            self.intake.committed.send_replace(done.last_seq);
            self.retry_delay = Duration::from_millis(10);
            self.retry_at = None;
            self.hand_on(done.events);
        }
    }

    /// The events of `scans`, each device the redirect could not place given
    /// its visitor (known, pending or new). A failed lookup leaves the scan
    /// without a visitor, as the redirect would have: it still counts.
    fn resolve_visitors(&self, scans: Vec<Queued>) -> Vec<ScanEvent> {
        scans
            .into_iter()
            .map(|Queued { mut event, device }| {
                if let Some(fp) = device {
                    match self.registry.resolve(&event.workspace_id, fp) {
                        Ok(v) => event.visitor_id = Some(v),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot look up the visitor of a scan")
                        }
                    }
                }
                event
            })
            .collect()
    }

    fn schedule_retry(&mut self, now: Instant) -> bool {
        self.metrics.recorder_write_failures.inc();
        self.retry_at = Some(now + self.retry_delay);
        self.retry_delay = (self.retry_delay * 2).min(MAX_RETRY_DELAY);
        false
    }

    fn hand_on(&mut self, events: Vec<ScanEvent>) {
        let after = self.last_committed;
        self.last_committed = events.last().map(|e| e.id).or(after);
        if self.downstream.is_empty() {
            return;
        }
        let batch = ScansCommitted {
            after,
            events: events.into(),
        };
        for recipient in &self.downstream {
            // A full mailbox drops the wake-up only: the consumer reads what it
            // missed from the store, after its own position.
            if recipient.try_send(batch.clone()).is_err() {
                self.metrics.downstream_full.inc();
            }
        }
    }

    /// One step at `now`: commits what is ready unless a failed write is
    /// waiting for its retry time.
    fn run_once(&mut self, now: Instant) {
        self.intake.wake_pending.store(false, Ordering::Release);
        if self.retry_at.is_some_and(|at| now < at) {
            return;
        }
        let cpu = threads::thread_cpu_time();
        let ok = self.commit_ready(now);
        let spent = threads::thread_cpu_time().saturating_sub(cpu);
        self.metrics.recorder_cpu_nanos.add(spent.as_nanos() as u64);
        self.status.ran(ok);
        self.status.set_depth(self.intake.depth() as u64);
    }
}

impl Actor for Recorder {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.mailbox_capacity);
        ctx.run_interval(self.interval, |act, _| act.run_once(Instant::now()));
        self.status.set_ready(true);
    }
}

/// Commit what is queued now (sent when a full batch is waiting).
#[derive(Message)]
#[rtype(result = "()")]
struct Wake;

impl Handler<Wake> for Recorder {
    type Result = ();

    fn handle(&mut self, _: Wake, _: &mut Self::Context) {
        self.metrics.recorder_messages.inc();
        self.run_once(Instant::now());
    }
}

/// Shutdown: refuse new scans, commit everything queued, flush. Leaves
/// events uncommitted only if the store keeps failing until the deadline.
impl Handler<Drain> for Recorder {
    type Result = DrainReport;

    fn handle(&mut self, msg: Drain, ctx: &mut Self::Context) -> DrainReport {
        self.metrics.recorder_messages.inc();
        self.intake.closed.store(true, Ordering::Release);
        self.intake.space.notify_waiters();
        let deadline = msg.deadline;
        while !self.commit_ready(Instant::now()) && Instant::now() < deadline {
            std::thread::sleep(self.retry_delay);
        }
        if let Err(e) = self.store.flush() {
            tracing::error!(error = %e, "final flush failed");
        }
        let left = self.intake.depth() + self.pending.as_ref().map_or(0, |p| p.events.len());
        if left > 0 {
            tracing::error!(events = left, "shutdown left scan events uncommitted");
        }
        ctx.stop();
        DrainReport { left: left as u64 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intake(durability: Durability, batch_size: usize) -> Intake {
        Intake {
            queue: Mutex::new(Queue {
                events: VecDeque::new(),
                next_seq: 1,
                last_id: EventId::from_bytes([0; 16]),
                random: RandomBytes::new(),
            }),
            capacity: 1_000,
            batch_size,
            overflow: Overflow::Wait,
            durability,
            ack_timeout: Duration::from_secs(1),
            committed: watch::Sender::new(0),
            space: Notify::new(),
            wake_pending: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }

    fn push(intake: &Intake, n: usize) {
        for _ in 0..n {
            let event = ScanEvent::sample(
                EventId::from_bytes([0; 16]),
                crate::ids::WorkspaceId::generate(),
                crate::ids::LinkId::generate(),
            );
            let scan = Queued {
                event,
                device: None,
            };
            assert!(matches!(intake.try_push(scan), Push::Queued { .. }));
        }
    }

    /// Takes the next batch of a run that began at `queued` and marks it
    /// committed; answers its size (0: none).
    fn commit_next(intake: &Intake, queued: u64) -> usize {
        match intake.next_batch(queued) {
            Some((batch, last_seq)) => {
                intake.committed.send_replace(last_seq);
                batch.len()
            }
            None => 0,
        }
    }

    #[test]
    fn batched_runs_take_what_was_queued_then_only_full_batches() {
        let intake = intake(Durability::Batched, 8);
        push(&intake, 10);
        let run = intake.last_queued();
        assert_eq!(commit_next(&intake, run), 8);
        // Three arrive during that commit: they follow the two left of the run.
        push(&intake, 3);
        assert_eq!(commit_next(&intake, run), 5);
        // The run's events are all in; newcomers wait for a full batch.
        push(&intake, 7);
        assert_eq!(commit_next(&intake, run), 0);
        push(&intake, 1);
        assert_eq!(commit_next(&intake, run), 8);
        assert_eq!(commit_next(&intake, run), 0);
        // The next run (a tick) takes what is there, however little.
        push(&intake, 2);
        assert_eq!(commit_next(&intake, intake.last_queued()), 2);
        assert_eq!(intake.depth(), 0);
    }

    #[test]
    fn strict_runs_commit_every_arrival_at_once() {
        let intake = intake(Durability::Strict, 8);
        push(&intake, 3);
        let run = intake.last_queued();
        assert_eq!(commit_next(&intake, run), 3);
        // An arrival during the commit is a redirect waiting: take it now.
        push(&intake, 1);
        assert_eq!(commit_next(&intake, run), 1);
        assert_eq!(commit_next(&intake, run), 0);
    }

    #[test]
    fn ids_increase_even_when_the_stored_last_id_is_ahead_of_the_clock() {
        let future = EventId::from_bytes(EventId::lower_bound_bytes(
            jiff::Timestamp::now().as_millisecond() + 3_600_000,
        ));
        let mut q = Queue {
            events: VecDeque::new(),
            next_seq: 1,
            last_id: future,
            random: RandomBytes::new(),
        };
        let a = q.next_id();
        let b = q.next_id();
        assert!(future < a && a < b);
        let mut fresh = Queue {
            events: VecDeque::new(),
            next_seq: 1,
            last_id: EventId::from_bytes([0; 16]),
            random: RandomBytes::new(),
        };
        let c = fresh.next_id();
        assert!(
            (jiff::Timestamp::now().as_millisecond() - c.timestamp_ms()).abs() < 5_000,
            "normally a plain UUIDv7 of now"
        );
        assert_eq!(uuid::Uuid::from_bytes(*c.as_bytes()).get_version_num(), 7);
        // Thousands of IDs (several blocks of random bytes): all distinct,
        // increasing, and random past the time.
        let ids: Vec<EventId> = (0..2_000).map(|_| fresh.next_id()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        let tails: std::collections::HashSet<[u8; 8]> = ids
            .iter()
            .map(|id| id.as_bytes()[8..].try_into().unwrap())
            .collect();
        assert_eq!(tails.len(), ids.len());
    }
}
