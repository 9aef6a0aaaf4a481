//! What the redirect worked out lately for a device or an address, kept so
//! that the next scan of it skips the work: a direct-mapped cache. Each
//! entry sits in the one slot its key picks, so remembering one is a write
//! over whatever the slot held (no eviction to decide, no list to keep).
//!
//! The key is a 128-bit hash of the inputs under two random seeds made at
//! start; the inputs themselves (an address, a user agent) are never kept,
//! and an entry is told apart from another in its slot by the whole hash.

use std::hash::{BuildHasher, Hasher};
use std::sync::{Mutex, PoisonError};

use foldhash::quality::{FoldHasher, RandomState};

/// A slot: the key of what it holds, and the value.
type Slot<V> = Mutex<Option<(u128, V)>>;

pub struct Recent<V> {
    slots: Box<[Slot<V>]>,
    seeds: [RandomState; 2],
}

impl<V> Recent<V> {
    pub fn new(slots: usize) -> Recent<V> {
        Recent {
            slots: (0..slots.max(1)).map(|_| Mutex::new(None)).collect(),
            seeds: [RandomState::default(), RandomState::default()],
        }
    }

    /// The key of the inputs `write` feeds to a hasher (it is called twice,
    /// once per seed).
    pub fn key(&self, write: impl Fn(&mut FoldHasher<'_>)) -> u128 {
        let [high, low] = self.seeds.each_ref().map(|seed| {
            let mut h = seed.build_hasher();
            write(&mut h);
            h.finish()
        });
        (u128::from(high) << 64) | u128::from(low)
    }

    fn slot(&self, key: u128) -> std::sync::MutexGuard<'_, Option<(u128, V)>> {
        let i = (key as u64 % self.slots.len() as u64) as usize;
        self.slots[i].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What `read` makes of the value kept for `key`, under the slot's lock;
    /// `None` when the slot holds another key (or nothing).
    pub fn get<R>(&self, key: u128, read: impl FnOnce(&V) -> Option<R>) -> Option<R> {
        let slot = self.slot(key);
        match &*slot {
            Some((k, v)) if *k == key => read(v),
            _ => None,
        }
    }

    pub fn insert(&self, key: u128, value: V) {
        let mut slot = self.slot(key);
        let old = slot.replace((key, value));
        drop(slot);
        // What the slot held is dropped after the lock.
        drop(old);
    }

    /// Slots that hold an entry.
    #[cfg(test)]
    pub fn filled(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.lock().unwrap_or_else(PoisonError::into_inner).is_some())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::Hash;

    #[test]
    fn a_key_finds_its_value_until_another_takes_its_slot() {
        let recent: Recent<u32> = Recent::new(4);
        let key = |n: u32| recent.key(|h| n.hash(h));
        assert_eq!(key(7), key(7), "the same inputs, the same key");
        assert_ne!(key(7) >> 64, key(7) & u128::from(u64::MAX), "two seeds");
        assert_ne!(key(7), key(8));
        assert_eq!(recent.get(key(7), |v| Some(*v)), None);
        recent.insert(key(7), 70);
        assert_eq!(recent.get(key(7), |v| Some(*v)), Some(70));
        // Another key in the same slot replaces it; one elsewhere does not.
        let same_slot = (0..1000)
            .find(|n| *n != 7 && key(*n) as u64 % 4 == key(7) as u64 % 4)
            .unwrap();
        recent.insert(key(same_slot), 1);
        assert_eq!(recent.get(key(7), |v| Some(*v)), None);
        assert_eq!(recent.get(key(same_slot), |v| Some(*v)), Some(1));
        assert_eq!(recent.filled(), 1);
    }

    #[test]
    fn two_caches_key_the_same_inputs_apart() {
        let (a, b): (Recent<()>, Recent<()>) = (Recent::new(8), Recent::new(8));
        assert_ne!(a.key(|h| 7u32.hash(h)), b.key(|h| 7u32.hash(h)));
    }
}
