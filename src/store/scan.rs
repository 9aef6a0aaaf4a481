//! Newest-first range scans with a cursor, for indexes with one key per item
//! (links; events walk their segments in `events.rs` the same way). A
//! cursor is the last key handed out; the next page starts strictly below it,
//! so rows inserted meanwhile (always newer, larger keys) never shift a page.

use std::ops::Bound;

use super::StoreResult;
use crate::ids::Id;

/// A half-open key range `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    pub start: Vec<u8>,
    pub end: Vec<u8>,
}

impl KeyRange {
    /// Keys `prefix ++ id` where the id's time is in `[from_ms, to_ms)`.
    pub fn time_prefixed(prefix: &[u8], from_ms: Option<i64>, to_ms: Option<i64>) -> KeyRange {
        let mut start = prefix.to_vec();
        start.extend_from_slice(&Id::<crate::ids::EventKind>::lower_bound_bytes(
            from_ms.unwrap_or(0),
        ));
        let mut end = prefix.to_vec();
        match to_ms {
            Some(ms) => end.extend_from_slice(&Id::<crate::ids::EventKind>::lower_bound_bytes(ms)),
            None => end.extend_from_slice(&[0xff; 16]),
        }
        KeyRange { start, end }
    }
}

/// One page of results, and the cursor of the next page when there is one.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<Vec<u8>>,
}

/// Walks `range` newest first from below `cursor`, keeping what `pick` keeps,
/// until `limit` items or `budget` scanned keys. A page cut short by the budget
/// still carries a cursor, so a sparse filter costs bounded time per request.
pub fn scan_desc<T>(
    tree: &sled::Tree,
    range: &KeyRange,
    cursor: Option<&[u8]>,
    limit: usize,
    budget: usize,
    mut pick: impl FnMut(&[u8], &[u8]) -> StoreResult<Option<T>>,
) -> StoreResult<Page<T>> {
    let end: &[u8] = match cursor {
        Some(c) if c < range.end.as_slice() => c,
        _ => &range.end,
    };
    let mut items = Vec::with_capacity(limit.min(512));
    let mut last_returned: Option<sled::IVec> = None;
    if end <= range.start.as_slice() {
        return Ok(Page {
            items,
            next_cursor: None,
        });
    }
    let bounds = (
        Bound::Included(range.start.as_slice()),
        Bound::Excluded(end),
    );
    for (scanned, entry) in tree.range::<&[u8], _>(bounds).rev().enumerate() {
        let (key, value) = entry?;
        if let Some(item) = pick(&key, &value)? {
            if items.len() == limit {
                return Ok(Page {
                    items,
                    next_cursor: last_returned.map(|k| k.to_vec()),
                });
            }
            items.push(item);
            last_returned = Some(key.clone());
        }
        if scanned + 1 >= budget && items.len() < limit {
            return Ok(Page {
                items,
                next_cursor: Some(key.to_vec()),
            });
        }
    }
    Ok(Page {
        items,
        next_cursor: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_with(n: u8) -> sled::Tree {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let t = db.open_tree("t").unwrap();
        for i in 0..n {
            t.insert([b'p', i], &[i]).unwrap();
        }
        t
    }

    fn all_pages(
        t: &sled::Tree,
        limit: usize,
        budget: usize,
        keep: impl Fn(u8) -> bool,
    ) -> Vec<u8> {
        let range = KeyRange {
            start: vec![b'p'],
            end: vec![b'q'],
        };
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let page = scan_desc(t, &range, cursor.as_deref(), limit, budget, |_, v| {
                Ok(keep(v[0]).then_some(v[0]))
            })
            .unwrap();
            out.extend(page.items);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return out,
            }
        }
    }

    #[test]
    fn pages_cover_everything_once_newest_first() {
        let t = tree_with(25);
        let got = all_pages(&t, 10, 1000, |_| true);
        assert_eq!(got, (0..25).rev().collect::<Vec<_>>());
        let exact = tree_with(20);
        assert_eq!(all_pages(&exact, 10, 1000, |_| true).len(), 20);
    }

    #[test]
    fn budget_cuts_pages_but_loses_nothing() {
        let t = tree_with(100);
        let got = all_pages(&t, 5, 7, |v| v % 9 == 0);
        assert_eq!(
            got,
            (0..100).rev().filter(|v| v % 9 == 0).collect::<Vec<_>>()
        );
    }
}
