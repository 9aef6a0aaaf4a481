//! Reloads the GeoIP databases: on SIGHUP all of them, and every
//! `geoip.reload_interval_ms` those whose file changed. A database that fails
//! to load keeps the previous one serving (see `enrich::geo`).

use std::sync::Arc;

use super::periodic::{PeriodicTask, TaskError, Trigger};
use super::worker::Stage;
use crate::domain::Timestamp;
use crate::enrich::geo::GeoDatabases;

pub struct GeoReloader {
    geo: Arc<GeoDatabases>,
}

impl GeoReloader {
    pub fn new(geo: Arc<GeoDatabases>) -> GeoReloader {
        GeoReloader { geo }
    }
}

impl PeriodicTask for GeoReloader {
    const NAME: &'static str = "geoip_reloader";
    const STAGE: Stage = Stage::Maintenance;
    const ON_HANGUP: bool = true;

    fn run_once(&mut self, _: Timestamp, trigger: Trigger) -> Result<(), TaskError> {
        // The databases were just opened at start; later steps reload.
        if trigger != Trigger::Start {
            self.geo.reload(trigger == Trigger::Hangup);
        }
        Ok(())
    }
}
