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
//! The Recorder drains the queue in batches of `recorder.batch_size` and
//! writes each batch in one sled transaction. Each committed batch wakes the
//! consumers downstream (`consumer.rs`), which read from their own durable
//! positions: the wake-up is a non-blocking send that may be dropped.
//!
//! In `strict` mode a thread of its own, `log_scans`, appends what is queued
//! and not yet logged to the scan log (`store/scan_log.rs`) as one fsynced
//! record and then publishes the last sequence number logged, which is what
//! strict redirects wait for (group commit). A scan is logged as queued,
//! with the user agent its redirect left unparsed. The Recorder takes logged
//! events only, and commits them as in `batched` mode (parsing their agents
//! in the batch); the store's periodic flush makes them durable there. At
//! start, the scans the log holds and the store lacks are committed first
//! (`recommit_logged`).

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::{Notify, oneshot, watch};

use super::registry::VisitorRegistry;
use super::threads;
use super::worker::{Drain, DrainReport, Stage, WorkerHandle, WorkerStatus};
use crate::config::{Durability, Overflow, RecorderSettings};
use crate::domain::ScanEvent;
use crate::enrich::{self, agent_cache::AgentCache, fingerprint::Fingerprint};
use crate::ids::{EventId, VisitorId};
use crate::metrics::{Counter, Metrics};
use crate::store::Store;
use crate::store::scan_log::{self, LoggedScan, ScanLog};

const MAX_RETRY_DELAY: Duration = Duration::from_secs(1);
/// Most scans in one record of the scan log (encoded under the queue's lock).
const LOG_GROUP: usize = 4096;

/// A batch of events that is in the store: a wake-up for the consumers
/// downstream, with the batch as a shortcut (see `consumer.rs`).
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct ScansCommitted {
    /// The last event committed before this batch (`None`: the store had none).
    pub after: Option<EventId>,
    /// The batch, ascending IDs.
    pub events: Arc<[ScanEvent]>,
    /// The visitors first seen in this batch: no event before it carries
    /// them (`Consumer::apply_committed`).
    pub new_visitors: Arc<[VisitorId]>,
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
/// takes the scan (`VisitorRegistry::resolve`); `agent`: a user agent the
/// redirect left unparsed (`Enricher::known_agent`), parsed when the
/// Recorder takes the scan (`parse_agent`).
struct Queued {
    event: ScanEvent,
    device: Option<Fingerprint>,
    agent: Option<Box<str>>,
}

struct Queue {
    events: VecDeque<Queued>,
    /// Sequence number of the next event pushed; the first is 1.
    next_seq: u64,
    /// Strict mode: the sequence number of the last event in the scan log.
    /// The Recorder takes no event after it (the log thread reads them from
    /// the back of the queue).
    logged: u64,
    /// Strict mode: the log thread waits for events (a push wakes it).
    log_asleep: bool,
    /// The last event ID given out.
    last_id: EventId,
    random: crate::random::Block,
    /// Strict mode: the redirects waiting for their scan to be durable, in
    /// sequence order, each woken alone when its scan is (`advance_durable`).
    waiters: VecDeque<(u64, oneshot::Sender<()>)>,
}

/// Queued scans the intake keeps room for however short the queue: the
/// memory of a queue that has been deeper (400 bytes a scan) is given back
/// down to this once it empties (`Queue::give_back_room`).
const QUEUE_ROOM_FLOOR: usize = 4096;

impl Queue {
    /// An empty queue whose IDs come after `last_id`; it grows as scans wait
    /// (up to the intake's capacity) and gives the room back as they go.
    fn new(last_id: EventId) -> Queue {
        Queue {
            events: VecDeque::with_capacity(QUEUE_ROOM_FLOOR),
            next_seq: 1,
            logged: 0,
            log_asleep: false,
            last_id,
            random: crate::random::Block::default(),
            waiters: VecDeque::new(),
        }
    }

    /// Halves the queue's room while it holds less than an eighth of it:
    /// a ring buffer touches every page of its room as it turns, so room
    /// kept from a burst (26 MB at the default capacity of 65,536) would
    /// stay resident for good. Halving, not shrinking to fit, keeps an
    /// uneven load from reallocating at every batch.
    fn give_back_room(&mut self) {
        let room = self.events.capacity();
        if room > QUEUE_ROOM_FLOOR && self.events.len() < room / 8 {
            self.events.shrink_to((room / 2).max(QUEUE_ROOM_FLOOR));
        }
    }

    /// A fresh UUIDv7 ID, strictly greater than every ID given out before.
    /// Its 74 random bits come from the OS generator, read 4 KiB at a time:
    /// a system call per ID under this lock was a tenth of the redirect's
    /// own CPU.
    fn next_id(&mut self) -> EventId {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let fresh = EventId::at(now_ms as i64, &self.random.take());
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
    /// The sequence number of the last event committed to the store.
    committed: watch::Sender<u64>,
    /// Strict mode: wakes the log thread (`log_scans`).
    log_wake: Condvar,
    space: Notify,
    wake_pending: AtomicBool,
    closed: AtomicBool,
}

enum Push {
    Queued {
        id: EventId,
        /// A full batch waits: wake the Recorder.
        wake: bool,
        /// Strict mode: wake the log thread.
        wake_log: bool,
        /// Strict mode: answered once the scan is durable.
        durable: Option<oneshot::Receiver<()>>,
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
        // Strict redirects wait for the scan log: the log thread writes at
        // once what is queued (what arrives meanwhile forms its next group).
        // The Recorder only needs a wake when a full batch is waiting.
        let wake = q.events.len() >= self.batch_size;
        let wake_log = std::mem::take(&mut q.log_asleep);
        // Registered with the push, under its lock: the scan cannot be
        // durable before its waiter is there.
        let durable = (self.durability == Durability::Strict).then(|| {
            let (tx, rx) = oneshot::channel();
            q.waiters.push_back((seq, tx));
            rx
        });
        Push::Queued {
            id,
            wake,
            wake_log,
            durable,
        }
    }

    /// Queues `scan`. When the queue is full it waits for space
    /// (`Overflow::Wait`, counting the wait in `waits`) or answers
    /// `Push::Full` (`Overflow::Drop`); `None` once the intake is closed.
    async fn push(&self, mut scan: Queued, waits: &Counter) -> Option<Push> {
        loop {
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            // Registering for a wake-up locks the `Notify` that both HTTP
            // workers share, so it is done only once the queue is full; the
            // push is then tried again, so space freed in between is seen.
            let mut space = pin!(self.space.notified());
            let pushed = match self.try_push(scan) {
                Push::Full(returned) if self.overflow == Overflow::Wait => {
                    space.as_mut().enable();
                    self.try_push(*returned)
                }
                pushed => pushed,
            };
            match pushed {
                Push::Full(returned) if self.overflow == Overflow::Wait => {
                    waits.inc();
                    scan = *returned;
                    space.await;
                }
                pushed => return Some(pushed),
            }
        }
    }

    /// Up to `batch_size` events and the sequence number of the last one;
    /// `None` when fewer than `at_least` (and at least one) are queued.
    /// Strict mode takes logged events only, until shutdown.
    fn take_batch(&self, at_least: usize) -> Option<(Vec<Queued>, u64)> {
        let mut q = self.lock();
        let available = self.available(&q);
        if available < at_least.max(1) {
            return None;
        }
        let n = available.min(self.batch_size);
        let batch: Vec<Queued> = q.events.drain(..n).collect();
        let last_seq = q.next_seq - q.events.len() as u64 - 1;
        q.give_back_room();
        Some((batch, last_seq))
    }

    /// Events the Recorder may take: in strict mode those in the scan log
    /// (all once shutting down: its final flush makes them durable).
    fn available(&self, q: &Queue) -> usize {
        let len = q.events.len();
        if self.durability == Durability::Batched || self.closed.load(Ordering::Acquire) {
            return len;
        }
        let first = q.next_seq - len as u64;
        ((q.logged + 1).saturating_sub(first) as usize).min(len)
    }

    /// The sequence number of the last event the Recorder may take (0:
    /// none yet).
    fn last_queued(&self) -> u64 {
        let q = self.lock();
        q.next_seq - 1 - (q.events.len() - self.available(&q)) as u64
    }

    /// The next batch of a Recorder run that began when `queued` was the
    /// last sequence number queued.
    ///
    /// Batched mode takes what was queued when the run began, then only full
    /// batches: what arrives meanwhile waits for the next tick (or the wake
    /// of a full batch). Chasing every arrival would commit, one after the
    /// other, batches of whatever came in during the previous commit (about
    /// 100 events at 65,000 scans per second instead of 512), and a batch
    /// costs the store nearly as much whatever its size. Strict mode is
    /// the same: its redirects wait for the scan log, not for the store.
    fn next_batch(&self, queued: u64) -> Option<(Vec<Queued>, u64)> {
        let chase = *self.committed.borrow() < queued;
        self.take_batch(if chase { 1 } else { self.batch_size })
    }

    fn depth(&self) -> usize {
        self.lock().events.len()
    }

    /// Strict mode: every event up to sequence number `seq` is durable (in
    /// the fsynced scan log, or committed and flushed); wakes their
    /// redirects.
    fn advance_durable(&self, seq: u64) {
        // Only the redirects whose scans are durable now are woken: a
        // channel every waiter watched woke them all at each fsync, most
        // only to wait again.
        let ready: Vec<oneshot::Sender<()>> = {
            let mut q = self.lock();
            let n = q.waiters.partition_point(|(s, _)| *s <= seq);
            q.waiters.drain(..n).map(|(_, tx)| tx).collect()
        };
        for tx in ready {
            // Its redirect may have given up waiting (`ack_timeout`).
            let _ = tx.send(());
        }
    }

    /// Wakes the log thread (to see new events, or that the queue closed).
    fn wake_log(&self) {
        let _q = self.lock();
        self.log_wake.notify_all();
    }
}

/// Parses the user agent the redirect left unparsed, if any. A bot's scan
/// gets no visitor, as on the redirect.
///
/// Parsing a user agent never seen reads much of the parsers' tables; on
/// an HTTP worker, between requests, they are out of the CPU's caches and
/// the parse took three times as long as here, where a batch's user agents
/// are parsed one after another.
fn parse_agent(agents: &AgentCache, bots: &Counter, scan: &mut Queued) {
    if let Some(ua) = scan.agent.take() {
        enrich::apply_agent(&mut scan.event, agents.parse_unseen(ua));
        if scan.event.bot {
            scan.device = None;
            scan.event.visitor_id = None;
            bots.inc();
        }
    }
}

/// Parses the agents `scans` left unparsed, one after another (`parse_agent`).
fn parse_agents(agents: &AgentCache, bots: &Counter, scans: &mut [Queued]) {
    for scan in scans {
        parse_agent(agents, bots, scan);
    }
}

/// The events of `scans`, each device the redirect could not place given
/// its visitor (known, pending or new). A failed lookup leaves the scan
/// without a visitor, as the redirect would have: it still counts.
/// Collected straight into the shared slice the consumers are handed, so
/// a batch is not copied again after its commit.
fn resolve_visitors(registry: &VisitorRegistry, scans: Vec<Queued>) -> Arc<[ScanEvent]> {
    // A new visitor's ID carries the time of the batch's first ID, which
    // is its segment's key (`store::events`, "Home segments").
    let at_ms = scans.first().map_or(0, |s| s.event.id.timestamp_ms());
    scans
        .into_iter()
        .map(
            |Queued {
                 mut event, device, ..
             }| {
                if let Some(fp) = device {
                    match registry.resolve(&event.workspace_id, fp, at_ms) {
                        Ok(v) => event.visitor_id = Some(v),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot look up the visitor of a scan")
                        }
                    }
                }
                event
            },
        )
        .collect()
}

/// At start: commits the scans of the scan log that the store lacks (a
/// strict-mode server stopped before the periodic flush made them durable
/// in the store), then flushes, so the log's files can go. Their user
/// agents still unparsed are parsed here, as the Recorder would have.
fn recommit_logged(
    store: &Store,
    registry: &VisitorRegistry,
    (agents, bots): (&AgentCache, &Counter),
    logged: Vec<LoggedScan>,
    batch_size: usize,
) -> Result<(), crate::store::StoreError> {
    let newest = store.last_event_id()?;
    let mut missing: Vec<Queued> = logged
        .into_iter()
        .filter(|(event, _, _)| Some(event.id) > newest)
        .map(|(event, device, agent)| Queued {
            event,
            device,
            agent,
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    missing.sort_by_key(|q| q.event.id);
    missing.dedup_by_key(|q| q.event.id);
    let count = missing.len();
    while !missing.is_empty() {
        let rest = missing.split_off(missing.len().min(batch_size.max(1)));
        let mut batch = std::mem::replace(&mut missing, rest);
        parse_agents(agents, bots, &mut batch);
        let events = resolve_visitors(registry, batch);
        let new_visitors = registry.new_in(&events);
        store.commit_logged_scans(&events, &new_visitors)?;
        registry.committed(&new_visitors);
    }
    store.flush()?;
    tracing::info!(
        scans = count,
        "committed the scans of the scan log that the store lacked"
    );
    Ok(())
}

/// Strict mode's log thread: appends what is queued and not yet logged to
/// the scan log as one record, fsynced, and publishes it as durable (group
/// commit). Ends once the queue is closed and everything is logged.
fn log_scans(intake: &Intake, log: &Mutex<ScanLog>, store: &Store, metrics: &Metrics) {
    let mut payload = Vec::new();
    let mut retry = Duration::from_millis(10);
    if let Err(e) = lock(log).prepare_spares() {
        // Appends still work, growing new files.
        tracing::warn!(error = %e, "cannot write spare scan log files");
    }
    loop {
        let (last_seq, last_id, encoded) = {
            let mut q = intake.lock();
            loop {
                // Shutting down, the Recorder takes every event, logged or
                // not, and its final flush makes them durable; logging more
                // could publish as durable an event taken unlogged.
                if intake.closed.load(Ordering::Acquire) {
                    return;
                }
                if q.next_seq - 1 > q.logged {
                    break;
                }
                q.log_asleep = true;
                q = intake.log_wake.wait(q).unwrap_or_else(|p| p.into_inner());
            }
            // Under this lock the Recorder has taken logged events only, so
            // the unlogged ones are the last `unlogged` of the queue. A
            // record takes the oldest of them, at most `LOG_GROUP`, so the
            // lock is never held long (a slow disk lets many pile up).
            let unlogged = ((q.next_seq - 1 - q.logged) as usize).min(q.events.len());
            let first = q.events.len() - unlogged;
            let group = q.events.range(first..first + unlogged.min(LOG_GROUP));
            payload.clear();
            let mut last_id = None;
            let encoded = group.clone().try_for_each(|s| {
                last_id = Some(s.event.id);
                scan_log::encode_scan(&mut payload, &s.event, &s.device, &s.agent)
            });
            (q.logged + group.len() as u64, last_id, encoded)
        };
        let appended = encoded.and_then(|()| {
            let mut log = lock(log);
            let started = Instant::now();
            log.append(&payload, last_id)?;
            metrics.scan_log_sync_seconds.observe(started.elapsed());
            if let Err(e) = log.remove_covered(store.durable_event()) {
                tracing::warn!(error = %e, "cannot remove scan log files; will try again");
            }
            Ok(())
        });
        match appended {
            Ok(()) => {
                retry = Duration::from_millis(10);
                intake.lock().logged = last_seq;
                intake.advance_durable(last_seq);
            }
            Err(e) => {
                metrics.recorder_write_failures.inc();
                tracing::error!(error = %e, "writing the scan log failed; will retry");
                std::thread::sleep(retry);
                retry = (retry * 2).min(MAX_RETRY_DELAY);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
    /// `agent`: a user agent the caller left unparsed; the Recorder parses
    /// it (in strict mode the scan log holds it unparsed with the event).
    pub async fn record(
        &self,
        event: ScanEvent,
        device: Option<Fingerprint>,
        agent: Option<Box<str>>,
    ) -> Result<RecordOutcome, RecordError> {
        let intake = &self.intake;
        let scan = Queued {
            event,
            device,
            agent,
        };
        let waits = &self.metrics.recorder_backpressure_waits;
        let (id, durable) = match intake.push(scan, waits).await {
            None => return Err(RecordError::Closed),
            Some(Push::Full(_)) => {
                self.metrics.scans_dropped_queue_full.inc();
                return Ok(RecordOutcome::Dropped);
            }
            Some(Push::Queued {
                id,
                wake,
                wake_log,
                durable,
            }) => {
                if wake_log {
                    intake.log_wake.notify_one();
                }
                if wake && !intake.wake_pending.swap(true, Ordering::AcqRel) {
                    // A full mailbox means the Recorder is already busy; its tick will come.
                    let _ = self.addr.try_send(Wake);
                }
                (id, durable)
            }
        };
        if let Some(durable) = durable {
            let done = tokio::time::timeout(intake.ack_timeout, durable).await;
            if !matches!(done, Ok(Ok(()))) {
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
    events: Arc<[ScanEvent]>,
    last_seq: u64,
    written: bool,
    /// Once written: the visitors its registry entries made.
    new_visitors: Vec<VisitorId>,
}

pub struct Recorder {
    store: Store,
    /// Strict mode: the scan log, written by the log thread; the Recorder
    /// removes its files at shutdown.
    log: Option<Arc<Mutex<ScanLog>>>,
    intake: Arc<Intake>,
    interval: Duration,
    mailbox_capacity: usize,
    downstream: Vec<Recipient<ScansCommitted>>,
    /// Registry entries of new visitors are written with their first event.
    registry: Arc<VisitorRegistry>,
    /// Parses the user agents the redirect left unparsed.
    agents: Arc<AgentCache>,
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
        agents: Arc<AgentCache>,
        metrics: Arc<Metrics>,
    ) -> Result<(RecorderHandle, WorkerHandle), crate::store::StoreError> {
        let (mut log, logged) = ScanLog::open(store.path())?;
        recommit_logged(
            &store,
            &registry,
            (&agents, &metrics.bot_scans),
            logged,
            settings.batch_size,
        )?;
        log.remove_covered(store.last_event_id()?)?;
        let last_event_id = store.last_event_id()?;
        let intake = Arc::new(Intake {
            queue: Mutex::new(Queue::new(
                last_event_id.unwrap_or_else(|| EventId::from_bytes([0; 16])),
            )),
            capacity: settings.queue_capacity,
            batch_size: settings.batch_size,
            overflow: settings.overflow,
            durability,
            ack_timeout: Duration::from_millis(settings.ack_timeout_ms),
            committed: watch::Sender::new(0),
            log_wake: Condvar::new(),
            space: Notify::new(),
            wake_pending: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        });
        if durability == Durability::Batched {
            log.remove_spares()?;
        }
        let log = (durability == Durability::Strict).then(|| Arc::new(Mutex::new(log)));
        if let Some(log) = &log {
            let (intake, log, store, metrics) =
                (intake.clone(), log.clone(), store.clone(), metrics.clone());
            std::thread::Builder::new()
                .name("scan-log".into())
                .spawn(move || log_scans(&intake, &log, &store, &metrics))?;
        }
        let recorder = Recorder {
            log,
            store,
            intake: intake.clone(),
            interval: Duration::from_millis(match durability {
                Durability::Batched => settings.batch_interval_ms,
                Durability::Strict => settings.strict_batch_interval_ms,
            }),
            mailbox_capacity: settings.mailbox_capacity,
            downstream,
            registry,
            agents,
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
        let worker = WorkerHandle::new("recorder", Stage::Intake, &addr, status)
            .on_arbiter(arbiter.handle());
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
                self.pending = self.intake.next_batch(queued).map(|(mut scans, last_seq)| {
                    // The batch's new user agents first, one after another.
                    parse_agents(&self.agents, &self.metrics.bot_scans, &mut scans);
                    Pending {
                        events: resolve_visitors(&self.registry, scans),
                        last_seq,
                        written: false,
                        new_visitors: Vec::new(),
                    }
                });
                self.intake.space.notify_waiters();
            }
            let Some(pending) = self.pending.as_mut() else {
                return true;
            };
            if !pending.written {
                let new_visitors = self.registry.new_in(&pending.events);
                let committed = if self.intake.durability == Durability::Strict {
                    self.store
                        .commit_logged_scans(&pending.events, &new_visitors)
                } else {
                    self.store.commit_scans_with(&pending.events, &new_visitors)
                };
                match committed {
                    Ok(bytes) => self.metrics.event_bytes.add(bytes as u64),
                    Err(e) => {
                        tracing::error!(error = %e, events = pending.events.len(), "writing a scan batch failed; will retry");
                        return self.schedule_retry(now);
                    }
                }
                self.registry.committed(&new_visitors);
                pending.written = true;
                pending.new_visitors = new_visitors.iter().map(|n| n.visitor_id).collect();
            }
            let Some(done) = self.pending.take() else {
                return true;
            };
            self.metrics.scans_recorded.add(done.events.len() as u64);
            self.metrics.recorder_batches.inc();
            self.intake.committed.send_replace(done.last_seq);
            self.retry_delay = Duration::from_millis(10);
            self.retry_at = None;
            self.hand_on(done.events, done.new_visitors);
        }
    }

    fn schedule_retry(&mut self, now: Instant) -> bool {
        self.metrics.recorder_write_failures.inc();
        self.retry_at = Some(now + self.retry_delay);
        self.retry_delay = (self.retry_delay * 2).min(MAX_RETRY_DELAY);
        false
    }

    fn hand_on(&mut self, events: Arc<[ScanEvent]>, new_visitors: Vec<VisitorId>) {
        let after = self.last_committed;
        self.last_committed = events.last().map(|e| e.id).or(after);
        if self.downstream.is_empty() {
            return;
        }
        let batch = ScansCommitted {
            after,
            events,
            new_visitors: new_visitors.into(),
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
        // The wall-clock interval encloses the CPU clock's.
        let started = Instant::now();
        let cpu = threads::thread_cpu_time();
        let ok = self.commit_ready(now);
        crate::store::release_log_buffers();
        let spent = threads::thread_cpu_time().saturating_sub(cpu);
        self.metrics.recorder_cpu_nanos.add(spent.as_nanos() as u64);
        let busy = started.elapsed();
        self.metrics.recorder_busy_nanos.add(busy.as_nanos() as u64);
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
        self.intake.wake_log();
        let deadline = msg.deadline;
        while !self.commit_ready(Instant::now()) && Instant::now() < deadline {
            std::thread::sleep(self.retry_delay);
        }
        match self.store.flush() {
            Ok(_) => {
                // Strict redirects still waiting for the scan log: their
                // scans are durable now, in the store.
                self.intake.advance_durable(*self.intake.committed.borrow());
                if let Some(log) = &self.log {
                    let removed = lock(log).remove_covered(self.store.durable_event());
                    if let Err(e) = removed {
                        tracing::warn!(error = %e, "cannot remove scan log files");
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "final flush failed"),
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
            queue: Mutex::new(Queue::new(EventId::from_bytes([0; 16]))),
            capacity: 10_000,
            batch_size,
            overflow: Overflow::Wait,
            durability,
            ack_timeout: Duration::from_secs(1),
            committed: watch::Sender::new(0),
            log_wake: Condvar::new(),
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
                agent: None,
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
    fn a_queue_deepened_by_a_burst_gives_its_room_back_as_it_empties() {
        let mut intake = intake(Durability::Batched, 512);
        intake.capacity = 40_000;
        push(&intake, 40_000);
        let room = |i: &Intake| i.lock().events.capacity();
        assert!(room(&intake) >= 40_000);
        let mut ids = Vec::new();
        let run = intake.last_queued();
        while let Some((batch, last_seq)) = intake.next_batch(run) {
            intake.committed.send_replace(last_seq);
            ids.extend(batch.iter().map(|q| q.event.id));
        }
        assert_eq!(ids.len(), 40_000, "every scan taken once");
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "in queue order");
        assert_eq!(room(&intake), QUEUE_ROOM_FLOOR, "room back to the floor");
        // A queue that stays short never reallocates.
        push(&intake, 3_000);
        intake.next_batch(intake.last_queued());
        assert_eq!(room(&intake), QUEUE_ROOM_FLOOR);
    }

    fn scan() -> Queued {
        Queued {
            event: ScanEvent::sample(
                EventId::from_bytes([0; 16]),
                crate::ids::WorkspaceId::generate(),
                crate::ids::LinkId::generate(),
            ),
            device: None,
            agent: None,
        }
    }

    #[actix_rt::test]
    async fn a_full_queue_waits_for_space_drops_or_refuses_once_closed_as_configured() {
        let waits = Counter::default();
        let full = || {
            let mut i = intake(Durability::Batched, 100);
            i.capacity = 2;
            push(&i, 2);
            i
        };
        // Wait: the push waits until the Recorder takes a batch and says so.
        let waiting = full();
        let mut pushed = pin!(waiting.push(scan(), &waits));
        let early = tokio::time::timeout(Duration::from_millis(50), pushed.as_mut()).await;
        assert!(early.is_err(), "pushed into a full queue");
        assert_eq!(waits.get(), 1);
        assert_eq!(waiting.take_batch(1).map(|(b, _)| b.len()), Some(2));
        waiting.space.notify_waiters();
        let done = tokio::time::timeout(Duration::from_secs(5), pushed)
            .await
            .expect("woken once there is space");
        assert!(matches!(done, Some(Push::Queued { .. })));
        assert_eq!(waiting.last_queued(), 3);
        assert_eq!(waiting.depth(), 1);
        // Drop: answered at once.
        let mut dropping = full();
        dropping.overflow = Overflow::Drop;
        assert!(matches!(
            dropping.push(scan(), &waits).await,
            Some(Push::Full(_))
        ));
        assert_eq!((dropping.depth(), waits.get()), (2, 1));
        // Closed: nothing is queued.
        let closed = intake(Durability::Batched, 100);
        closed.closed.store(true, Ordering::Release);
        assert!(closed.push(scan(), &waits).await.is_none());
        assert_eq!(closed.depth(), 0);
    }

    #[test]
    fn strict_runs_take_only_logged_events_until_shutdown() {
        let intake = intake(Durability::Strict, 8);
        push(&intake, 5);
        assert_eq!(intake.last_queued(), 0, "nothing is in the scan log yet");
        assert_eq!(commit_next(&intake, intake.last_queued()), 0);
        intake.lock().logged = 3;
        let run = intake.last_queued();
        assert_eq!(run, 3);
        assert_eq!(commit_next(&intake, run), 3);
        // Then, as in batched mode, only full batches until the next run.
        intake.lock().logged = 5;
        assert_eq!(commit_next(&intake, run), 0);
        assert_eq!(commit_next(&intake, intake.last_queued()), 2);
        // Shutting down, the Recorder takes what the log has not caught up on.
        push(&intake, 2);
        intake.closed.store(true, Ordering::Release);
        assert_eq!(commit_next(&intake, intake.last_queued()), 2);
        assert_eq!(intake.depth(), 0);
    }

    #[test]
    fn a_strict_scan_is_answered_once_durable_and_no_earlier() {
        let intake = intake(Durability::Strict, 8);
        let mut waiting: Vec<oneshot::Receiver<()>> = (0..3)
            .map(|_| match intake.try_push(scan()) {
                Push::Queued {
                    durable: Some(rx), ..
                } => rx,
                _ => panic!("a strict push waits for durability"),
            })
            .collect();
        intake.advance_durable(2);
        for rx in &mut waiting[..2] {
            assert_eq!(rx.try_recv(), Ok(()));
        }
        assert!(
            waiting[2].try_recv().is_err(),
            "the third is not durable yet"
        );
        // An older sequence number (the store's flush after the log's) wakes
        // no one early.
        intake.advance_durable(1);
        assert!(waiting[2].try_recv().is_err());
        intake.advance_durable(3);
        assert_eq!(waiting[2].try_recv(), Ok(()));
        assert!(intake.lock().waiters.is_empty());
        // Batched mode: nobody waits.
        let batched = self::intake(Durability::Batched, 8);
        assert!(matches!(
            batched.try_push(scan()),
            Push::Queued { durable: None, .. }
        ));
    }

    #[test]
    fn the_log_thread_logs_every_scan_in_order_and_publishes_it_durable() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8).unwrap();
        let (log, found) = ScanLog::open(dir.path()).unwrap();
        assert!(found.is_empty());
        let intake = Arc::new(intake(Durability::Strict, 8));
        // More than one record's worth, queued before the thread starts.
        let queued = LOG_GROUP + 904;
        push(&intake, queued);
        let thread = {
            let (intake, store) = (intake.clone(), store.clone());
            let metrics = Arc::new(Metrics::default());
            std::thread::spawn(move || log_scans(&intake, &Mutex::new(log), &store, &metrics))
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while intake.lock().logged < queued as u64 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(intake.lock().logged, queued as u64);
        assert_eq!(intake.last_queued(), queued as u64, "all may be committed");
        intake.closed.store(true, Ordering::Release);
        intake.wake_log();
        thread.join().unwrap();
        let (_, logged) = ScanLog::open(dir.path()).unwrap();
        let ids: Vec<EventId> = logged.iter().map(|(e, _, _)| e.id).collect();
        let expected: Vec<EventId> = intake.lock().events.iter().map(|q| q.event.id).collect();
        assert_eq!(ids, expected, "every scan once, in queue order");
    }

    #[test]
    fn ids_increase_even_when_the_stored_last_id_is_ahead_of_the_clock() {
        let future = EventId::from_bytes(EventId::lower_bound_bytes(
            jiff::Timestamp::now().as_millisecond() + 3_600_000,
        ));
        let mut q = Queue::new(future);
        let a = q.next_id();
        let b = q.next_id();
        assert!(future < a && a < b);
        let mut fresh = Queue::new(EventId::from_bytes([0; 16]));
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
