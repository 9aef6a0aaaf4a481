//! Workspaces, created together with their first token.

use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use super::codec::{self, Record};
use super::{Store, StoreError, StoreResult, keys};
use crate::domain::{Token, Workspace};
use crate::ids::WorkspaceId;

impl Record for Workspace {
    const VERSION: u8 = 1;
}

impl Store {
    /// Stores a new workspace and its first token in one transaction.
    pub fn create_workspace(
        &self,
        ws: &Workspace,
        token: &Token,
        digest: &[u8; 32],
    ) -> StoreResult<()> {
        let t = &self.inner;
        let ws_bytes = codec::encode(ws)?;
        let token_bytes = codec::encode(token)?;
        (&t.workspaces, &t.tokens, &t.tokens_by_workspace).transaction(|(w, tk, by_ws)| {
            w.insert(ws.id.as_bytes(), ws_bytes.as_slice())?;
            tk.insert(digest, token_bytes.as_slice())?;
            by_ws.insert(&keys::pair(&ws.id, &token.id), digest)?;
            Ok::<_, ConflictableTransactionError<StoreError>>(())
        })?;
        Ok(())
    }

    pub fn workspace(&self, id: &WorkspaceId) -> StoreResult<Option<Workspace>> {
        self.inner
            .workspaces
            .get(id.as_bytes())?
            .map(|v| codec::decode(&v))
            .transpose()
    }

    pub fn put_workspace(&self, ws: &Workspace) -> StoreResult<()> {
        self.inner
            .workspaces
            .insert(ws.id.as_bytes(), codec::encode(ws)?)?;
        Ok(())
    }

    /// All workspaces, oldest first.
    pub fn workspaces(&self) -> StoreResult<Vec<Workspace>> {
        self.inner
            .workspaces
            .iter()
            .values()
            .map(|v| codec::decode(&v?))
            .collect()
    }

    pub fn has_workspaces(&self) -> StoreResult<bool> {
        Ok(!self.inner.workspaces.is_empty())
    }
}

const SALT_PREFIX: &[u8] = b"salt:";

fn salt_key(day: i64) -> Vec<u8> {
    let mut key = SALT_PREFIX.to_vec();
    key.extend_from_slice(&day.to_be_bytes());
    key
}

impl Store {
    /// The stored salt of `day` (days since the epoch, UTC), made by `make` when missing.
    pub fn daily_salt(&self, day: i64, make: impl FnOnce() -> [u8; 32]) -> StoreResult<[u8; 32]> {
        let key = salt_key(day);
        let fresh = make();
        // compare_and_swap keeps the first salt if two threads race.
        let _ = self
            .inner
            .meta
            .compare_and_swap(&key, None as Option<&[u8]>, Some(&fresh[..]))?;
        let stored = self
            .inner
            .meta
            .get(&key)?
            .ok_or_else(|| StoreError::Codec("daily salt vanished".into()))?;
        stored
            .as_ref()
            .try_into()
            .map_err(|_| StoreError::Codec("daily salt has the wrong length".into()))
    }

    /// Deletes the salts of every day before `day`.
    pub fn delete_salts_before(&self, day: i64) -> StoreResult<usize> {
        let mut n = 0;
        for key in self
            .inner
            .meta
            .range(SALT_PREFIX.to_vec()..salt_key(day))
            .keys()
        {
            self.inner.meta.remove(key?)?;
            n += 1;
        }
        Ok(n)
    }

    /// Days whose salt is still stored.
    pub fn salt_days(&self) -> StoreResult<Vec<i64>> {
        self.inner
            .meta
            .scan_prefix(SALT_PREFIX)
            .keys()
            .map(|k| {
                let k = k?;
                let bytes: [u8; 8] = k[SALT_PREFIX.len()..]
                    .try_into()
                    .map_err(|_| StoreError::Codec("bad salt key".into()))?;
                Ok(i64::from_be_bytes(bytes))
            })
            .collect()
    }
}
