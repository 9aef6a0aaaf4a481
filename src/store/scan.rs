//! The one paging walker. Every newest-first listing (links by workspace,
//! events by workspace, link or visitor) turns its index range into a stream
//! of candidates, each with the cursor that resumes just below it, and
//! `paginate` cuts that stream into pages. A cursor is the key (or event ID)
//! of the last item handed out; the next page starts strictly below it, so
//! rows inserted meanwhile (always newer, larger keys) never shift a page.

use super::{StoreError, StoreResult};

/// A cursor that is an ID (16 bytes); anything else is refused, never read.
pub fn cursor_id(cursor: Option<&[u8]>) -> StoreResult<Option<[u8; 16]>> {
    cursor
        .map(|c| c.try_into().map_err(|_| StoreError::BadCursor))
        .transpose()
}

/// One page of results, and the cursor of the next page when there is one.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<Vec<u8>>,
}

/// A candidate of a listing: its cursor, and the item when it matches the
/// listing's filters.
pub type Candidate<T> = StoreResult<(Vec<u8>, Option<T>)>;

/// Takes matches from `candidates` (newest first) until `limit` items, or
/// until `budget` candidates have been examined without filling the page: a page cut short by the budget still carries a cursor,
/// so a sparse filter costs bounded time per request and loses nothing.
pub fn paginate<T>(
    candidates: impl Iterator<Item = Candidate<T>>,
    limit: usize,
    budget: usize,
) -> StoreResult<Page<T>> {
    let mut items = Vec::with_capacity(limit.min(512));
    let mut last_returned: Option<Vec<u8>> = None;
    for (examined, candidate) in candidates.enumerate() {
        let (cursor, found) = candidate?;
        match found {
            Some(_) if items.len() == limit => {
                return Ok(Page {
                    items,
                    next_cursor: last_returned,
                });
            }
            Some(item) => {
                items.push(item);
                last_returned = Some(cursor);
            }
            None if examined + 1 >= budget => {
                return Ok(Page {
                    items,
                    next_cursor: Some(cursor),
                });
            }
            None => {}
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

    /// Every page of 0..n (newest first) keeping what `keep` keeps.
    fn all_pages(n: u8, limit: usize, budget: usize, keep: impl Fn(u8) -> bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut cursor: Option<Vec<u8>> = None;
        loop {
            let below = cursor.as_ref().map_or(n, |c| c[0]);
            let candidates = (0..below)
                .rev()
                .map(|v| Ok((vec![v], keep(v).then_some(v))));
            let page = paginate(candidates, limit, budget).unwrap();
            out.extend(page.items);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return out,
            }
        }
    }

    #[test]
    fn pages_cover_everything_once_newest_first() {
        assert_eq!(
            all_pages(25, 10, 1000, |_| true),
            (0..25).rev().collect::<Vec<_>>()
        );
        assert_eq!(all_pages(20, 10, 1000, |_| true).len(), 20);
    }

    #[test]
    fn budget_cuts_pages_but_loses_nothing() {
        assert_eq!(
            all_pages(100, 5, 7, |v| v % 9 == 0),
            (0..100).rev().filter(|v| v % 9 == 0).collect::<Vec<_>>()
        );
    }

    #[test]
    fn errors_stop_the_walk() {
        let candidates = vec![
            Ok((vec![2], Some(2))),
            Err(crate::store::StoreError::Codec("bad".into())),
        ];
        assert!(paginate(candidates.into_iter(), 10, 10).is_err());
    }
}
