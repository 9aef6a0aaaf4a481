//! Forgets idle keys of the rate limiters (workspaces and client IPs not seen
//! for a while), so their memory stays bounded by recent traffic.

use std::sync::Arc;

use super::periodic::{PeriodicTask, TaskError, Trigger};
use super::worker::Stage;
use crate::domain::Timestamp;

/// Something that keeps per-key state it can forget when idle.
pub trait Prune: Send + Sync + 'static {
    fn prune(&self);
}

pub struct LimitPruner {
    target: Arc<dyn Prune>,
}

impl LimitPruner {
    pub fn new(target: Arc<dyn Prune>) -> LimitPruner {
        LimitPruner { target }
    }
}

impl PeriodicTask for LimitPruner {
    const NAME: &'static str = "rate_limit_pruner";
    const STAGE: Stage = Stage::Maintenance;

    fn run_once(&mut self, _: Timestamp, _: Trigger) -> Result<(), TaskError> {
        self.target.prune();
        Ok(())
    }
}
