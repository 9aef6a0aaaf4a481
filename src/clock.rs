//! The server's clock for the redirect: the system clock, plus an offset
//! that stays 0 in production. Tests move it (`Application::clock`) to scan
//! "tomorrow" through real HTTP: the daily fingerprint scope and link
//! expiry are decided by this clock. Event IDs keep the system time.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::domain::Timestamp;

#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    pub fn now(&self) -> Timestamp {
        let offset = self.offset_ms.load(Ordering::Relaxed);
        Timestamp::from_millis(Timestamp::now().as_millis() + offset)
    }

    /// Moves the clock by `ms` (for tests).
    pub fn advance(&self, ms: i64) {
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }
}
