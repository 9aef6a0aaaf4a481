//! A bucket: several small records in one sled value, sorted by key.
//!
//! sled 0.34 keeps a fixed cost in memory for every page of a tree from the
//! moment it opens the store, whether the page is read or not, and a leaf
//! page holds at most 16 keys. One sled key per link therefore made the
//! memory of an idle server grow with the number of links (about 55 MB from
//! 100,000 to 1,000,000 links). Links and their slugs are kept in buckets
//! instead (`links.rs`), so the number of sled keys, and of pages, grows
//! much more slowly than the number of links.
//!
//! Encoding: the number of entries (u16 BE), then each entry as its key's
//! length (u16 BE), its value's length (u32 BE), the key and the value, in
//! ascending key order.

use super::{StoreError, StoreResult};

/// One entry: key, value.
pub(super) type Entry = (Vec<u8>, Vec<u8>);

/// Entries of one bucket, sorted by key, keys unique.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Bucket {
    entries: Vec<Entry>,
}

fn corrupt() -> StoreError {
    StoreError::Codec("a bucket's entries are cut short".into())
}

/// The entries of an encoded bucket, in order, without copying them.
pub(super) struct Entries<'a> {
    rest: &'a [u8],
    left: usize,
}

impl<'a> Entries<'a> {
    pub(super) fn new(raw: &'a [u8]) -> StoreResult<Entries<'a>> {
        let (head, rest) = raw.split_at_checked(2).ok_or_else(corrupt)?;
        let left = u16::from_be_bytes([head[0], head[1]]) as usize;
        Ok(Entries { rest, left })
    }

    /// How many entries are left to read.
    pub(super) fn len(&self) -> usize {
        self.left
    }

    fn step(&mut self) -> StoreResult<(&'a [u8], &'a [u8])> {
        let (head, rest) = self.rest.split_at_checked(6).ok_or_else(corrupt)?;
        let klen = u16::from_be_bytes([head[0], head[1]]) as usize;
        let vlen = u32::from_be_bytes([head[2], head[3], head[4], head[5]]) as usize;
        let (key, rest) = rest.split_at_checked(klen).ok_or_else(corrupt)?;
        let (value, rest) = rest.split_at_checked(vlen).ok_or_else(corrupt)?;
        self.rest = rest;
        Ok((key, value))
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = StoreResult<(&'a [u8], &'a [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let entry = self.step();
        if entry.is_err() {
            self.left = 0;
        }
        Some(entry)
    }
}

/// The value under `key` in an encoded bucket, found without decoding the
/// other entries.
pub(super) fn find<'a>(raw: &'a [u8], key: &[u8]) -> StoreResult<Option<&'a [u8]>> {
    for entry in Entries::new(raw)? {
        let (k, v) = entry?;
        match k.cmp(key) {
            std::cmp::Ordering::Less => continue,
            std::cmp::Ordering::Equal => return Ok(Some(v)),
            std::cmp::Ordering::Greater => return Ok(None),
        }
    }
    Ok(None)
}

/// The bucket of `tree` (keyed `owner (16) ++ first ID (16)`) that holds,
/// or would hold, the entry under `key` (owner ++ ID): the last bucket key
/// at or before it, with its value.
pub(super) fn holding(
    tree: &sled::Tree,
    key: &[u8; 32],
) -> StoreResult<Option<(sled::IVec, sled::IVec)>> {
    let mut start = [0u8; 32];
    start[..16].copy_from_slice(&key[..16]);
    Ok(tree.range(start..=*key).next_back().transpose()?)
}

/// The bucket holding the entry under `key` (`holding`), without that
/// entry: its sled key and what is left of it; `None` when no bucket holds
/// the entry.
pub(super) fn without(
    tree: &sled::Tree,
    key: &[u8; 32],
) -> StoreResult<Option<(sled::IVec, Bucket)>> {
    let Some((stored, raw)) = holding(tree, key)? else {
        return Ok(None);
    };
    let mut bucket = Bucket::decode(&raw)?;
    Ok(bucket.remove(&key[16..]).then_some((stored, bucket)))
}

/// The entries below `below` (an ID) of the next bucket down among the
/// buckets of `tree` keyed `owner (16) ++ first ID (16)`, newest first, as
/// (ID, value); `below` moves to the oldest of them. Each bucket is sought
/// afresh rather than walked to with one iterator: a bucket split by a
/// write beside a listing then moves no entry past it. `None`: no entry is
/// left below.
pub(super) fn entries_below(
    tree: &sled::Tree,
    owner: &[u8; 16],
    below: &mut [u8; 16],
) -> StoreResult<Option<Vec<Entry>>> {
    let id16 =
        |b: &[u8]| <[u8; 16]>::try_from(b).map_err(|_| StoreError::Codec("a bucket's ID".into()));
    let start = [&owner[..], &[0; 16]].concat();
    loop {
        // Every entry below `below` is in a bucket whose key is below it.
        let end = [&owner[..], &below[..]].concat();
        let Some((key, raw)) = tree
            .range(start.as_slice()..end.as_slice())
            .next_back()
            .transpose()?
        else {
            return Ok(None);
        };
        let mut out = Vec::new();
        for e in Entries::new(&raw)? {
            let (id, value) = e?;
            if id < &below[..] {
                out.push((id.to_vec(), value.to_vec()));
            }
        }
        // A bucket whose first entries were removed may hold none below:
        // then on below its key.
        *below = match out.first() {
            Some((id, _)) => id16(id)?,
            None => id16(key.get(16..).unwrap_or_default())?,
        };
        if !out.is_empty() {
            out.reverse();
            return Ok(Some(out));
        }
    }
}

impl Bucket {
    pub(super) fn decode(raw: &[u8]) -> StoreResult<Bucket> {
        let entries = Entries::new(raw)?
            .map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec())))
            .collect::<StoreResult<Vec<_>>>()?;
        if !entries.is_sorted_by(|a, b| a.0 < b.0) {
            return Err(StoreError::Codec("a bucket's keys are out of order".into()));
        }
        Ok(Bucket { entries })
    }

    /// A bucket of `entries` sorted by key, keys unique (not checked).
    pub(super) fn from_sorted(entries: Vec<Entry>) -> Bucket {
        Bucket { entries }
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        let size: usize = self
            .entries
            .iter()
            .map(|(k, v)| 6 + k.len() + v.len())
            .sum();
        let mut out = Vec::with_capacity(2 + size);
        // Callers split a bucket long before it holds 65,535 entries.
        out.extend_from_slice(&(self.entries.len() as u16).to_be_bytes());
        for (k, v) in &self.entries {
            out.extend_from_slice(&(k.len() as u16).to_be_bytes());
            out.extend_from_slice(&(v.len() as u32).to_be_bytes());
            out.extend_from_slice(k);
            out.extend_from_slice(v);
        }
        out
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of its keys and values.
    pub(super) fn size(&self) -> usize {
        self.entries.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    #[cfg(test)]
    pub(super) fn entries_for_test(&self) -> &[Entry] {
        &self.entries
    }

    pub(super) fn first_key(&self) -> Option<&[u8]> {
        self.entries.first().map(|(k, _)| k.as_slice())
    }

    pub(super) fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.position(key)
            .ok()
            .map(|i| self.entries[i].1.as_slice())
    }

    fn position(&self, key: &[u8]) -> Result<usize, usize> {
        self.entries
            .binary_search_by(|(k, _)| k.as_slice().cmp(key))
    }

    /// Sets `key` to `value`.
    pub(super) fn insert(&mut self, key: &[u8], value: Vec<u8>) {
        match self.position(key) {
            Ok(i) => self.entries[i].1 = value,
            Err(i) => self.entries.insert(i, (key.to_vec(), value)),
        }
    }

    /// Removes `key`; answers whether it was there.
    pub(super) fn remove(&mut self, key: &[u8]) -> bool {
        match self.position(key) {
            Ok(i) => {
                self.entries.remove(i);
                true
            }
            Err(_) => false,
        }
    }

    /// The entries in order, cut into buckets of at most `max_entries` and,
    /// beyond one entry, at most `max_bytes` of keys and values each.
    pub(super) fn into_chunks(self, max_entries: usize, max_bytes: usize) -> Vec<Bucket> {
        let mut chunks = Vec::new();
        let mut current = Bucket::default();
        let mut bytes = 0;
        for (k, v) in self.entries {
            let size = k.len() + v.len();
            let full = current.len() >= max_entries || bytes + size > max_bytes;
            if !current.is_empty() && full {
                chunks.push(std::mem::take(&mut current));
                bytes = 0;
            }
            bytes += size;
            current.entries.push((k, v));
        }
        if !current.is_empty() {
            chunks.push(current);
        }
        chunks
    }

    /// Moves the upper half of the entries into a bucket of their own; the
    /// lower half stays. When `key`, just inserted, is the last entry, only
    /// it moves: keys that arrive in ascending order (as new links' IDs do)
    /// then leave full buckets behind them, not half-full ones.
    pub(super) fn split_after_insert_of(&mut self, key: &[u8]) -> Bucket {
        let last = self.entries.last().is_some_and(|(k, _)| k == key);
        let at = if last && self.entries.len() > 1 {
            self.entries.len() - 1
        } else {
            (self.entries.len() / 2).max(1)
        };
        Bucket {
            entries: self.entries.split_off(at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(keys: &[&str]) -> Bucket {
        let mut b = Bucket::default();
        for k in keys {
            b.insert(k.as_bytes(), format!("value of {k}").into_bytes());
        }
        b
    }

    #[test]
    fn entries_stay_sorted_and_round_trip() {
        let mut b = bucket(&["m", "c", "x", "a"]);
        b.insert(b"c", b"new".to_vec());
        let raw = b.encode();
        let back = Bucket::decode(&raw).unwrap();
        assert_eq!(back, b);
        assert_eq!(back.first_key(), Some(&b"a"[..]));
        let keys: Vec<_> = Entries::new(&raw)
            .unwrap()
            .map(|e| e.unwrap().0.to_vec())
            .collect();
        assert_eq!(keys, [b"a", b"c", b"m", b"x"]);
        assert_eq!(find(&raw, b"c").unwrap(), Some(&b"new"[..]));
        assert_eq!(find(&raw, b"x").unwrap(), Some(&b"value of x"[..]));
        assert_eq!(find(&raw, b"b").unwrap(), None);
        assert_eq!(find(&raw, b"z").unwrap(), None);
        assert!(b.remove(b"m"));
        assert!(!b.remove(b"m"));
        assert_eq!(b.get(b"m"), None);
        assert_eq!(b.len(), 3);
        assert_eq!(
            Bucket::decode(&Bucket::default().encode()).unwrap().len(),
            0
        );
    }

    #[test]
    fn a_split_halves_the_bucket_unless_the_new_key_is_the_last() {
        let mut b = bucket(&["a", "b", "d", "e", "c"]);
        let upper = b.split_after_insert_of(b"c");
        assert_eq!(b.len(), 2);
        assert_eq!(upper.first_key(), Some(&b"c"[..]));
        assert_eq!(upper.len(), 3);
        let mut b = bucket(&["a", "b", "c", "d", "e"]);
        let upper = b.split_after_insert_of(b"e");
        assert_eq!((b.len(), upper.len()), (4, 1));
        assert_eq!(upper.first_key(), Some(&b"e"[..]));
        let mut one = bucket(&["a"]);
        assert_eq!(one.split_after_insert_of(b"a").len(), 0);
        assert_eq!(one.len(), 1);
    }

    #[test]
    fn a_bucket_cut_short_or_out_of_order_is_an_error_not_a_panic() {
        let raw = bucket(&["a", "b"]).encode();
        for end in 0..raw.len() {
            assert!(Bucket::decode(&raw[..end]).is_err(), "cut at {end}");
        }
        let swapped = Bucket::from_sorted(vec![(b"b".to_vec(), vec![]), (b"a".to_vec(), vec![])]);
        assert!(Bucket::decode(&swapped.encode()).is_err());
        assert!(find(&raw[..raw.len() - 1], b"b").is_err());
    }
}
