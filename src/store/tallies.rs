//! Day tallies of the Counters worker (`domain::tally`), in their own tree:
//! `scope (1) ++ owner id (16) ++ day (u32 BE, yyyymmdd)`. The worker is
//! their only writer; it adds its pending deltas and saves its position in
//! one transaction, so stored tallies always match its stored position.

use std::collections::HashMap;

use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use super::codec::{self, Record};
use super::{ConsumerRecord, Store, StoreError, StoreResult};
use crate::domain::tally::{Day, Tally};

impl Record for Tally {
    const VERSION: u8 = 1;
}

/// Whose tally a key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum TallyScope {
    /// One link, per day.
    Link = 1,
    /// One workspace, per day.
    Workspace = 2,
    /// One workspace's lifetime (day 0): survives retention.
    WorkspaceLifetime = 3,
}

/// Tallies by key: the Counters worker's pending deltas (it looks up
/// three keys for every scan it counts).
pub type TallyDeltas = HashMap<TallyKey, Tally, super::FastHash>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TallyKey {
    pub scope: TallyScope,
    pub owner: [u8; 16],
    pub day: Day,
}

impl TallyKey {
    fn encode(&self) -> [u8; 21] {
        let mut key = [0u8; 21];
        key[0] = self.scope as u8;
        key[1..17].copy_from_slice(&self.owner);
        key[17..].copy_from_slice(&self.day.0.to_be_bytes());
        key
    }
}

fn day_of_key(key: &[u8]) -> Option<Day> {
    Some(Day(u32::from_be_bytes(key.get(17..21)?.try_into().ok()?)))
}

type TxResult = Result<(), ConflictableTransactionError<StoreError>>;

impl Store {
    /// The stored tallies of one owner from `from` to `to` (inclusive), by day.
    pub fn tallies(
        &self,
        scope: TallyScope,
        owner: &[u8; 16],
        from: Day,
        to: Day,
    ) -> StoreResult<Vec<(Day, Tally)>> {
        let start = TallyKey {
            scope,
            owner: *owner,
            day: from,
        }
        .encode();
        let end = TallyKey {
            scope,
            owner: *owner,
            day: to,
        }
        .encode();
        self.inner
            .tallies
            .range(start..=end)
            .map(|entry| {
                let (key, value) = entry?;
                let day = day_of_key(&key).ok_or_else(|| StoreError::Codec("tally key".into()))?;
                Ok((day, codec::decode(&value)?))
            })
            .collect()
    }

    /// The stored tallies of `deltas`' keys with the deltas added, encoded
    /// for `put_tallies`. Read outside any transaction: the Counters worker
    /// is the tallies' only writer, so they are still current when it puts
    /// them.
    pub fn merged_tallies(&self, deltas: &TallyDeltas) -> StoreResult<Vec<([u8; 21], Vec<u8>)>> {
        deltas
            .iter()
            .map(|(key, delta)| {
                let key = key.encode();
                let mut tally: Tally = match self.inner.tallies.get(key)? {
                    Some(v) => codec::decode(&v)?,
                    None => Tally::default(),
                };
                tally.merge(delta);
                Ok((key, codec::encode(&tally)?))
            })
            .collect()
    }

    /// Writes `merged` (from `merged_tallies`) and consumer `name`'s record,
    /// in one transaction.
    pub fn put_tallies(
        &self,
        name: &str,
        record: &ConsumerRecord,
        merged: &[([u8; 21], Vec<u8>)],
    ) -> StoreResult<()> {
        let encoded_record = codec::encode(record)?;
        (&self.inner.tallies, &self.inner.consumers).transaction(
            |(tallies, consumers)| -> TxResult {
                for (key, value) in merged {
                    tallies.insert(&key[..], value.as_slice())?;
                }
                consumers.insert(name.as_bytes(), encoded_record.as_slice())?;
                Ok(())
            },
        )?;
        Ok(())
    }

    /// Replaces one owner's tallies on the days `remove` with `put`, in one
    /// transaction (a re-bucketing after a time zone change).
    pub fn replace_tallies(
        &self,
        scope: TallyScope,
        owner: &[u8; 16],
        remove: &[Day],
        put: &[(Day, Tally)],
    ) -> StoreResult<()> {
        let key = |day: Day| {
            TallyKey {
                scope,
                owner: *owner,
                day,
            }
            .encode()
        };
        let put: Vec<([u8; 21], Vec<u8>)> = put
            .iter()
            .map(|(day, t)| Ok((key(*day), codec::encode(t)?)))
            .collect::<StoreResult<_>>()?;
        self.inner.tallies.transaction(|tallies| -> TxResult {
            for day in remove {
                tallies.remove(&key(*day)[..])?;
            }
            for (k, v) in &put {
                tallies.insert(&k[..], v.as_slice())?;
            }
            Ok(())
        })?;
        Ok(())
    }
}
