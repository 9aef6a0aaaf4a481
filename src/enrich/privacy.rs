//! IP hashing with a salt that changes every UTC day. Salts are random, kept
//! in the store so a restart on the same day hashes alike, and every salt
//! older than yesterday is deleted, so a stored hash cannot be tied back to
//! an IP once its day has passed.

use std::net::IpAddr;
use std::sync::RwLock;

use sha2::{Digest, Sha256};

use crate::domain::token::fill_random;
use crate::store::{Store, StoreResult};

const MS_PER_DAY: i64 = 86_400_000;

pub struct DailySalts {
    store: Store,
    current: RwLock<(i64, [u8; 32])>,
}

impl DailySalts {
    pub fn load(store: Store, now_ms: i64) -> StoreResult<DailySalts> {
        let day = now_ms.div_euclid(MS_PER_DAY);
        let salt = Self::salt_for(&store, day)?;
        Ok(DailySalts {
            store,
            current: RwLock::new((day, salt)),
        })
    }

    /// The day's salt, made (and older ones deleted) on first use.
    fn salt_for(store: &Store, day: i64) -> StoreResult<[u8; 32]> {
        let salt = store.daily_salt(day, || {
            let mut s = [0u8; 32];
            fill_random(&mut s);
            s
        })?;
        store.delete_salts_before(day - 1)?;
        Ok(salt)
    }

    /// SHA-256(salt ‖ IP) for the UTC day of `now_ms`.
    pub fn ip_hash(&self, ip: Option<IpAddr>, now_ms: i64) -> [u8; 32] {
        let day = now_ms.div_euclid(MS_PER_DAY);
        let salt = {
            let cur = self.current.read().unwrap_or_else(|p| p.into_inner());
            (cur.0 == day).then_some(cur.1)
        };
        let salt = match salt {
            Some(s) => s,
            None => self.rotate(day),
        };
        let mut h = Sha256::new();
        h.update(salt);
        match ip {
            Some(IpAddr::V4(v4)) => h.update(v4.octets()),
            Some(IpAddr::V6(v6)) => h.update(v6.octets()),
            None => h.update(b"unknown"),
        }
        h.finalize().into()
    }

    fn rotate(&self, day: i64) -> [u8; 32] {
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        if cur.0 != day {
            match Self::salt_for(&self.store, day) {
                Ok(salt) => *cur = (day, salt),
                Err(e) => {
                    // Keep hashing with a fresh in-memory salt rather than yesterday's.
                    tracing::error!(error = %e, "storing the daily salt failed");
                    let mut s = [0u8; 32];
                    fill_random(&mut s);
                    *cur = (day, s);
                }
            }
        }
        cur.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salts_rotate_daily_and_old_ones_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8).unwrap();
        let day0 = 20_000 * MS_PER_DAY;
        let salts = DailySalts::load(store.clone(), day0).unwrap();
        let ip: Option<IpAddr> = Some("81.2.69.142".parse().unwrap());
        let a = salts.ip_hash(ip, day0 + 5);
        assert_eq!(a, salts.ip_hash(ip, day0 + 60_000), "same day, same hash");
        assert_ne!(a, salts.ip_hash(Some("81.2.69.143".parse().unwrap()), day0));
        let next = salts.ip_hash(ip, day0 + MS_PER_DAY);
        assert_ne!(a, next, "a new day, a new salt");
        assert_eq!(
            store.salt_days().unwrap(),
            vec![20_000, 20_001],
            "yesterday's salt is kept for late scans"
        );
        let before_restart = salts.ip_hash(ip, day0 + 2 * MS_PER_DAY);
        assert_eq!(
            store.salt_days().unwrap(),
            vec![20_001, 20_002],
            "older salts are deleted"
        );
        // A restart on the same day reads the stored salt: the same hash.
        drop(salts);
        let again = DailySalts::load(store, day0 + 2 * MS_PER_DAY).unwrap();
        assert_eq!(again.ip_hash(ip, day0 + 2 * MS_PER_DAY + 1), before_restart);
    }
}
