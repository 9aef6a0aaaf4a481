//! Daily salt rotation: keeps today's and tomorrow's salts in the store and
//! in the `SaltBook` the redirect path reads, and deletes every salt older
//! than yesterday, so a stored `ip_hash` cannot be tied to an IP once its day
//! has passed. Tomorrow's salt is made a day ahead, so the redirect never
//! waits for a store write at midnight.

use std::sync::Arc;

use super::periodic::{PeriodicTask, TaskError, Trigger};
use super::worker::Stage;
use crate::domain::Timestamp;
use crate::enrich::privacy::{SaltBook, utc_day};
use crate::store::Store;

pub struct SaltRotation {
    store: Store,
    book: Arc<SaltBook>,
}

impl SaltRotation {
    pub fn new(store: Store, book: Arc<SaltBook>) -> SaltRotation {
        SaltRotation { store, book }
    }
}

impl PeriodicTask for SaltRotation {
    const NAME: &'static str = "salts";
    const STAGE: Stage = Stage::Maintenance;

    fn run_once(&mut self, now: Timestamp, _: Trigger) -> Result<(), TaskError> {
        let today = utc_day(now.as_millis());
        // Yesterday's stays for scans that were hashed just before midnight.
        let keep_from = today - 1;
        for day in [today, today + 1] {
            let salt = self.store.daily_salt(day, crate::random::bytes)?;
            self.book.publish(day, salt, keep_from);
        }
        self.store.delete_salts_before(keep_from)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    #[test]
    fn salts_rotate_daily_and_old_ones_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8).unwrap();
        let book = Arc::new(SaltBook::default());
        let mut task = SaltRotation::new(store.clone(), book.clone());
        let day0 = 20_000;
        let at = |day: i64| Timestamp::from_millis(day * DAY + 1000);
        task.run_once(at(day0), Trigger::Start).unwrap();
        assert_eq!(store.salt_days().unwrap(), vec![day0, day0 + 1]);
        let today = book.salt_at(day0 * DAY);
        let tomorrow = book.salt_at((day0 + 1) * DAY);
        assert_ne!(today, tomorrow, "a new day, a new salt");
        task.run_once(at(day0 + 1), Trigger::Tick).unwrap();
        assert_eq!(
            book.salt_at((day0 + 1) * DAY),
            tomorrow,
            "the salt made a day ahead is the one used"
        );
        task.run_once(at(day0 + 2), Trigger::Tick).unwrap();
        assert_eq!(
            store.salt_days().unwrap(),
            vec![day0 + 1, day0 + 2, day0 + 3],
            "salts older than yesterday are deleted"
        );
        // A restart on the same day reads the stored salt.
        let again = Arc::new(SaltBook::default());
        SaltRotation::new(store, again.clone())
            .run_once(at(day0 + 2), Trigger::Start)
            .unwrap();
        assert_eq!(
            again.salt_at((day0 + 2) * DAY),
            book.salt_at((day0 + 2) * DAY)
        );
    }
}
