//! Timer workers in the one worker shape: a `PeriodicTask` is a plain struct
//! with a step function (`run_once(now, trigger)`); `Periodic` runs it as an
//! actor on an interval from config (and on SIGHUP when the task asks for it),
//! counts failed steps, and runs its final step when drained. Tests call
//! `run_once` directly with the time they choose.

use std::time::Duration;

use actix::prelude::*;

use super::worker::{Drain, DrainReport, Stage, WorkerHandle, WorkerStatus};
use crate::domain::Timestamp;
use std::sync::Arc;

/// Why a step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Once, synchronously, when the worker starts (before the server serves).
    Start,
    /// The interval elapsed.
    Tick,
    /// SIGHUP: the operator asked for it now.
    Hangup,
}

pub type TaskError = Box<dyn std::error::Error + Send + Sync>;

pub trait PeriodicTask: Unpin + Send + 'static {
    const NAME: &'static str;
    const STAGE: Stage;
    /// Whether SIGHUP triggers a step.
    const ON_HANGUP: bool = false;

    /// One step at `now`. A failed step is logged, counted and tried again at
    /// the next tick.
    fn run_once(&mut self, now: Timestamp, trigger: Trigger) -> Result<(), TaskError>;

    /// The last step at shutdown; answers the work left undone.
    fn drain(&mut self, _now: Timestamp) -> u64 {
        0
    }
}

pub struct Periodic<T: PeriodicTask> {
    task: T,
    interval: Duration,
    status: Arc<WorkerStatus>,
}

impl<T: PeriodicTask> Periodic<T> {
    /// Runs the first step here and now (its failure is logged, not fatal),
    /// then starts the actor on `arbiter`; an `interval` of zero runs it only
    /// on start, SIGHUP and drain.
    pub fn start(mut task: T, interval: Duration, arbiter: &ArbiterHandle) -> WorkerHandle {
        let status = WorkerStatus::new();
        let ok = report::<T>(task.run_once(Timestamp::now(), Trigger::Start));
        status.ran(ok);
        let actor = Periodic {
            task,
            interval,
            status: status.clone(),
        };
        let addr = Periodic::start_in_arbiter(arbiter, move |_| actor);
        WorkerHandle::new(T::NAME, T::STAGE, &addr, status).on_arbiter(arbiter.clone())
    }

    fn step(&mut self, trigger: Trigger) {
        let ok = report::<T>(self.task.run_once(Timestamp::now(), trigger));
        crate::store::release_log_buffers();
        self.status.ran(ok);
    }
}

fn report<T: PeriodicTask>(result: Result<(), TaskError>) -> bool {
    match result {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(worker = T::NAME, error = %e, "worker step failed; retrying at the next tick");
            false
        }
    }
}

impl<T: PeriodicTask> Actor for Periodic<T> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if !self.interval.is_zero() {
            ctx.run_interval(self.interval, |act, _| act.step(Trigger::Tick));
        }
        if T::ON_HANGUP {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::hangup()) {
                Ok(sig) => {
                    let hangups = futures_util::stream::unfold(sig, |mut sig| async move {
                        sig.recv().await.map(|()| (Hangup, sig))
                    });
                    ctx.add_stream(hangups);
                }
                Err(e) => tracing::warn!(worker = T::NAME, error = %e, "cannot listen for SIGHUP"),
            }
        }
        self.status.set_ready(true);
    }
}

struct Hangup;

impl<T: PeriodicTask> StreamHandler<Hangup> for Periodic<T> {
    fn handle(&mut self, _: Hangup, _: &mut Self::Context) {
        self.step(Trigger::Hangup);
    }

    // The signal stream never ends on its own; keep the actor running if it does.
    fn finished(&mut self, _: &mut Self::Context) {}
}

impl<T: PeriodicTask> Handler<Drain> for Periodic<T> {
    type Result = DrainReport;

    fn handle(&mut self, _: Drain, ctx: &mut Self::Context) -> DrainReport {
        let left = self.task.drain(Timestamp::now());
        ctx.stop();
        DrainReport { left }
    }
}
