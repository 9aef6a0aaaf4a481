//! The one shape of every background worker: an actix actor started with its
//! dependencies (`start(deps) -> handle`), registered in `Workers` with its
//! pipeline stage. The app drains the stages in order on shutdown (what the
//! Recorder commits, the consumers still have to see; what they derive, the
//! webhooks still have to send), each worker reports readiness and its queue
//! depth through a shared `WorkerStatus`, and each has a step function
//! (`run_once(now)`) that tests drive with an injected clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::consumer::ConsumerProgress;
use crate::metrics::{Kind, family};

/// Pipeline stages, drained in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// The Resolver and the Recorder: what a redirect hands work to.
    Intake,
    /// Readers of committed events from their durable positions.
    Consumers,
    /// Outbound delivery of what the consumers derived.
    Delivery,
    /// Timers: salts, GeoIP reloads, rate-limit pruning, retention.
    Maintenance,
    /// The store's background flush, last so it writes everything before it.
    Storage,
}

/// Shutdown: finish what is queued before `deadline`, then stop taking work.
#[derive(Message, Clone, Copy)]
#[rtype(result = "DrainReport")]
pub struct Drain {
    pub deadline: Instant,
}

/// What a worker left undone when it drained (0 unless it ran out of time or
/// its store kept failing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, MessageResponse)]
pub struct DrainReport {
    pub left: u64,
}

/// What a worker shares with `/readyz` and `/metrics`.
#[derive(Debug, Default)]
pub struct WorkerStatus {
    ready: AtomicBool,
    depth: AtomicU64,
    runs: AtomicU64,
    failures: AtomicU64,
}

impl WorkerStatus {
    pub fn new() -> Arc<WorkerStatus> {
        Arc::new(WorkerStatus::default())
    }
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
    /// Work waiting for the worker (queued events, events behind, ...).
    pub fn set_depth(&self, depth: u64) {
        self.depth.store(depth, Ordering::Relaxed);
    }
    pub fn depth(&self) -> u64 {
        self.depth.load(Ordering::Relaxed)
    }
    /// Counts one step; `ok = false` counts a failed one.
    pub fn ran(&self, ok: bool) {
        self.runs.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The app's handle on one worker.
pub struct WorkerHandle {
    pub name: &'static str,
    pub stage: Stage,
    drain: Recipient<Drain>,
    status: Arc<WorkerStatus>,
    progress: Option<Arc<ConsumerProgress>>,
    /// The thread it runs on, stopped at shutdown once everything drained.
    arbiter: Option<ArbiterHandle>,
}

impl WorkerHandle {
    pub fn new<A>(
        name: &'static str,
        stage: Stage,
        addr: &Addr<A>,
        status: Arc<WorkerStatus>,
    ) -> Self
    where
        A: Actor<Context = Context<A>> + Handler<Drain>,
    {
        WorkerHandle {
            name,
            stage,
            drain: addr.clone().recipient(),
            status,
            progress: None,
            arbiter: None,
        }
    }

    /// The worker runs on `arbiter`, which `Workers::stop_threads` stops.
    pub fn on_arbiter(mut self, arbiter: ArbiterHandle) -> Self {
        self.arbiter = Some(arbiter);
        self
    }

    /// A consumer's handle also reports its lag and durable event count.
    pub fn with_progress(mut self, progress: Arc<ConsumerProgress>) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Running and not stopped: its mailbox is open and it says it is ready.
    pub fn is_ready(&self) -> bool {
        self.drain.connected() && self.status.is_ready()
    }
}

/// Every background worker, in the order they were started.
#[derive(Default)]
pub struct Workers {
    handles: Vec<WorkerHandle>,
}

impl Workers {
    pub fn add(&mut self, handle: WorkerHandle) {
        self.handles.push(handle);
    }

    /// Names of the workers of `stage`, in the order they were started.
    pub fn names(&self, stage: Stage) -> Vec<&'static str> {
        self.handles
            .iter()
            .filter(|h| h.stage == stage)
            .map(|h| h.name)
            .collect()
    }

    /// Names of the workers that are not ready (empty: all are).
    pub fn not_ready(&self) -> Vec<&'static str> {
        self.handles
            .iter()
            .filter(|h| !h.is_ready())
            .map(|h| h.name)
            .collect()
    }

    /// Stops the workers' threads (after `drain`): their actors, and the
    /// store handles they hold, are dropped, so a process that serves again
    /// (tests, the benches) keeps no threads or open stores of a stopped
    /// server.
    pub fn stop_threads(&self) {
        for arbiter in self.handles.iter().filter_map(|h| h.arbiter.as_ref()) {
            arbiter.stop();
        }
    }

    /// Drains stage by stage; each stage gets `per_stage` to finish. Returns
    /// the work left per worker, in drain order.
    pub async fn drain(&self, per_stage: Duration) -> Vec<(&'static str, u64)> {
        let mut stages: Vec<Stage> = self.handles.iter().map(|h| h.stage).collect();
        stages.sort();
        stages.dedup();
        let mut report = Vec::with_capacity(self.handles.len());
        for stage in stages {
            let deadline = Instant::now() + per_stage;
            for h in self.handles.iter().filter(|h| h.stage == stage) {
                // A worker that does not answer in time (or is gone) counts as
                // leaving work behind; the next stage still drains.
                let answer = tokio::time::timeout_at(
                    tokio::time::Instant::from_std(deadline + Duration::from_secs(1)),
                    h.drain.send(Drain { deadline }),
                )
                .await;
                let left = match answer {
                    Ok(Ok(r)) => r.left,
                    _ => u64::MAX,
                };
                h.status.set_ready(false);
                tracing::info!(worker = h.name, stage = ?stage, left, "drained");
                report.push((h.name, left));
            }
        }
        report
    }

    /// `scanhop_worker_*` families (readiness, depth, steps, failures) and
    /// `scanhop_consumer_*` ones (lag behind the newest committed event,
    /// events folded); `committed` is what the Recorder committed since start.
    pub fn render_metrics(&self, out: &mut String, committed: u64) {
        let labels: Vec<String> = self
            .handles
            .iter()
            .map(|h| format!("worker=\"{}\"", h.name))
            .collect();
        let mut per_worker =
            |name: &str, help: &str, kind: Kind, f: &dyn Fn(&WorkerHandle) -> u64| {
                let samples: Vec<(&str, u64)> = labels
                    .iter()
                    .zip(&self.handles)
                    .map(|(l, h)| (l.as_str(), f(h)))
                    .collect();
                family(out, name, help, kind, &samples);
            };
        per_worker(
            "scanhop_worker_ready",
            "1 when the worker is running and ready.",
            Kind::Gauge,
            &|h| u64::from(h.is_ready()),
        );
        per_worker(
            "scanhop_worker_queue_depth",
            "Work waiting for a worker (queued or not yet processed events).",
            Kind::Gauge,
            &|h| {
                h.progress
                    .as_ref()
                    .map_or(h.status.depth(), |p| p.lag(committed))
            },
        );
        per_worker(
            "scanhop_worker_runs_total",
            "Steps a worker ran.",
            Kind::Counter,
            &|h| h.status.runs.load(Ordering::Relaxed),
        );
        per_worker(
            "scanhop_worker_failures_total",
            "Steps of a worker that failed (and will be retried).",
            Kind::Counter,
            &|h| h.status.failures.load(Ordering::Relaxed),
        );
        let consumers: Vec<(String, &ConsumerProgress)> = self
            .handles
            .iter()
            .filter_map(|h| Some((format!("consumer=\"{}\"", h.name), h.progress.as_deref()?)))
            .collect();
        let lag: Vec<(&str, u64)> = consumers
            .iter()
            .map(|(l, p)| (l.as_str(), p.lag(committed)))
            .collect();
        family(
            out,
            "scanhop_consumer_lag_events",
            "Committed scan events a consumer has not processed yet.",
            Kind::Gauge,
            &lag,
        );
        let events: Vec<(&str, u64)> = consumers
            .iter()
            .map(|(l, p)| (l.as_str(), p.events.load(Ordering::Relaxed)))
            .collect();
        family(
            out,
            "scanhop_consumer_events_total",
            "Scan events a consumer has processed since it first ran (stored with its position).",
            Kind::Counter,
            &events,
        );
    }
}
