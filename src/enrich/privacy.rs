//! IP hashing with a salt that changes every UTC day. The salts themselves
//! are made, stored and deleted by the salt rotation worker
//! (`actors/salts.rs`), which publishes them into a `SaltBook`; the redirect
//! path only reads the book, so hashing never touches the store.

use std::net::IpAddr;
use std::sync::RwLock;

use sha2::{Digest, Sha256};

const MS_PER_DAY: i64 = 86_400_000;

pub type Salt = [u8; 32];

/// The UTC day (days since the epoch) of `ms`.
pub fn utc_day(ms: i64) -> i64 {
    ms.div_euclid(MS_PER_DAY)
}

/// The salts of the days around today, in memory.
pub struct SaltBook {
    days: RwLock<Vec<(i64, Salt)>>,
    /// Used only if the rotation worker has not published a day's salt (it
    /// makes tomorrow's a day ahead): a random salt of this process, never
    /// stored, so such hashes are still unlinkable.
    stand_in: Salt,
}

impl Default for SaltBook {
    fn default() -> Self {
        SaltBook {
            days: RwLock::new(Vec::new()),
            stand_in: crate::random::bytes(),
        }
    }
}

impl SaltBook {
    /// The salt of the UTC day of `now_ms`.
    pub fn salt_at(&self, now_ms: i64) -> Salt {
        let day = utc_day(now_ms);
        let days = self.days.read().unwrap_or_else(|p| p.into_inner());
        days.iter()
            .find(|(d, _)| *d == day)
            .map_or(self.stand_in, |(_, s)| *s)
    }

    /// Makes `salt` the salt of `day` and forgets days before `keep_from`.
    pub fn publish(&self, day: i64, salt: Salt, keep_from: i64) {
        let mut days = self.days.write().unwrap_or_else(|p| p.into_inner());
        days.retain(|(d, _)| *d != day && *d >= keep_from);
        days.push((day, salt));
    }

    /// The days it holds a salt for, ascending.
    pub fn days(&self) -> Vec<i64> {
        let days = self.days.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<i64> = days.iter().map(|(d, _)| *d).collect();
        out.sort_unstable();
        out
    }
}

/// SHA-256(salt ‖ IP); an unknown client hashes as the word "unknown".
pub fn ip_hash(salt: &Salt, ip: Option<IpAddr>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    match ip {
        Some(IpAddr::V4(v4)) => h.update(v4.octets()),
        Some(IpAddr::V6(v6)) => h.update(v6.octets()),
        None => h.update(b"unknown"),
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_book_answers_the_day_of_the_time_asked() {
        let book = SaltBook::default();
        let day0 = 20_000;
        book.publish(day0, [1; 32], day0 - 1);
        book.publish(day0 + 1, [2; 32], day0 - 1);
        assert_eq!(book.salt_at(day0 * MS_PER_DAY + 5), [1; 32]);
        assert_eq!(book.salt_at((day0 + 1) * MS_PER_DAY), [2; 32]);
        let unknown = book.salt_at((day0 + 9) * MS_PER_DAY);
        assert!(unknown != [1; 32] && unknown != [2; 32]);
        book.publish(day0 + 2, [3; 32], day0 + 1);
        assert_eq!(
            book.days(),
            vec![day0 + 1, day0 + 2],
            "older days forgotten"
        );
    }

    #[test]
    fn hashes_depend_on_salt_and_address() {
        let ip: Option<IpAddr> = Some("81.2.69.142".parse().unwrap());
        let a = ip_hash(&[1; 32], ip);
        assert_eq!(a, ip_hash(&[1; 32], ip));
        assert_ne!(a, ip_hash(&[2; 32], ip));
        assert_ne!(a, ip_hash(&[1; 32], Some("81.2.69.143".parse().unwrap())));
        assert_ne!(a, ip_hash(&[1; 32], None));
    }
}
