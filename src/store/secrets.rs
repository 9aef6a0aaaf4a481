//! Named server secrets in the `meta` tree (the key of page tokens, ...):
//! random bytes made the first time a secret is asked for, then kept, so what
//! they sign stays valid across restarts.

use super::{Store, StoreError, StoreResult};

const SECRET_PREFIX: &[u8] = b"secret:";

fn secret_key(name: &str) -> Vec<u8> {
    let mut key = SECRET_PREFIX.to_vec();
    key.extend_from_slice(name.as_bytes());
    key
}

impl Store {
    /// The secret `name` of `N` bytes, generated and stored (durably) if absent.
    pub fn secret<const N: usize>(&self, name: &str) -> StoreResult<[u8; N]> {
        let key = secret_key(name);
        let fresh: [u8; N] = crate::random::bytes();
        // compare_and_swap keeps the first secret if two callers race.
        let created = self
            .inner
            .meta
            .compare_and_swap(&key, None as Option<&[u8]>, Some(&fresh[..]))?
            .is_ok();
        if created {
            // A secret lost in a crash would invalidate what it signed since.
            self.flush()?;
        }
        let stored = self
            .inner
            .meta
            .get(&key)?
            .ok_or_else(|| StoreError::Codec(format!("secret {name} vanished")))?;
        stored
            .as_ref()
            .try_into()
            .map_err(|_| StoreError::Codec(format!("secret {name} has the wrong length")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_made_once_and_kept_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 4).unwrap();
        let a: [u8; 64] = store.secret("page_tokens").unwrap();
        assert_ne!(a, [0; 64]);
        assert_eq!(store.secret::<64>("page_tokens").unwrap(), a);
        let other: [u8; 64] = store.secret("other").unwrap();
        assert_ne!(other, a, "each name has its own secret");
        assert!(
            store.secret::<32>("page_tokens").is_err(),
            "a length that does not match is an error, not a new secret"
        );
        drop(store);
        let reopened = Store::open(dir.path(), 4).unwrap();
        assert_eq!(reopened.secret::<64>("page_tokens").unwrap(), a);
    }
}
