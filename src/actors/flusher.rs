//! The background fsync: flushes sled every `storage.flush_interval_ms`, and
//! once more when drained, after every other stage has written what it had.
//! In `batched` durability that is what makes scans durable; in both modes it
//! makes the API's writes and the workers' output durable (sled's own
//! background fsync is off: `Store::open`).

use std::sync::Arc;
use std::time::Instant;

use super::periodic::{PeriodicTask, TaskError, Trigger};
use super::worker::Stage;
use crate::domain::Timestamp;
use crate::metrics::Metrics;
use crate::store::Store;

pub struct Flusher {
    store: Store,
    metrics: Arc<Metrics>,
}

impl Flusher {
    pub fn new(store: Store, metrics: Arc<Metrics>) -> Flusher {
        Flusher { store, metrics }
    }
}

impl PeriodicTask for Flusher {
    const NAME: &'static str = "flusher";
    const STAGE: Stage = Stage::Storage;

    fn run_once(&mut self, _: Timestamp, _: Trigger) -> Result<(), TaskError> {
        let started = Instant::now();
        self.store.flush()?;
        self.metrics.flush_seconds.observe(started.elapsed());
        Ok(())
    }

    fn drain(&mut self, now: Timestamp) -> u64 {
        match self.run_once(now, Trigger::Tick) {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!(error = %e, "final flush failed");
                1
            }
        }
    }
}
