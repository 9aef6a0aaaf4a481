//! Links, their slugs and the per-workspace index, kept in step in one
//! transaction each.

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::codec::{self, Record};
use super::scan::{self, Page};
use super::{Store, StoreError, StoreResult, keys};
use crate::domain::{Link, LinkStatus};
use crate::ids::{LinkId, LinkKind, WorkspaceId};

/// Links examined at most to fill one page of a filtered link list.
const LINK_SCAN_BUDGET: usize = 10_000;

impl Record for Link {
    const VERSION: u8 = 1;
}

/// The one way a link write can be refused: another link holds the slug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlugTaken;

/// What a link write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkWrite {
    Written,
    SlugTaken,
}

type TxResult = Result<(), ConflictableTransactionError<SlugTaken>>;

fn link_write(result: Result<(), TransactionError<SlugTaken>>) -> StoreResult<LinkWrite> {
    match result {
        Ok(()) => Ok(LinkWrite::Written),
        Err(TransactionError::Abort(SlugTaken)) => Ok(LinkWrite::SlugTaken),
        Err(TransactionError::Storage(e)) => Err(StoreError::Sled(e)),
    }
}

/// Filters of `GET /v1/links`.
#[derive(Debug, Clone, Default)]
pub struct LinkQuery {
    pub tag: Option<String>,
    pub status: Option<LinkStatus>,
}

impl LinkQuery {
    fn matches(&self, link: &Link) -> bool {
        self.tag.as_ref().is_none_or(|t| link.tags.contains(t))
            && self.status.is_none_or(|s| link.status == s)
    }
}

impl Store {
    /// Stores a new link, unless its slug is in use.
    pub fn insert_link(&self, link: &Link) -> StoreResult<LinkWrite> {
        let t = &self.inner;
        let bytes = codec::encode(link)?;
        link_write((&t.links, &t.slugs, &t.links_by_workspace).transaction(
            |(links, slugs, by_ws)| -> TxResult {
                if slugs.get(link.slug.as_str())?.is_some() {
                    return Err(ConflictableTransactionError::Abort(SlugTaken));
                }
                slugs.insert(link.slug.as_str(), link.id.as_bytes())?;
                links.insert(link.id.as_bytes(), bytes.as_slice())?;
                by_ws.insert(&keys::pair(&link.workspace_id, &link.id), &[])?;
                Ok(())
            },
        ))
    }

    /// Replaces `old` with `new` (same ID), moving the slug when it changed,
    /// unless the new slug is in use.
    pub fn replace_link(&self, old: &Link, new: &Link) -> StoreResult<LinkWrite> {
        let t = &self.inner;
        let bytes = codec::encode(new)?;
        link_write(
            (&t.links, &t.slugs).transaction(|(links, slugs)| -> TxResult {
                if old.slug != new.slug {
                    if slugs.get(new.slug.as_str())?.is_some() {
                        return Err(ConflictableTransactionError::Abort(SlugTaken));
                    }
                    slugs.remove(old.slug.as_str())?;
                    slugs.insert(new.slug.as_str(), new.id.as_bytes())?;
                }
                links.insert(new.id.as_bytes(), bytes.as_slice())?;
                Ok(())
            }),
        )
    }

    /// Deletes a link and frees its slug; its events stay.
    pub fn delete_link(&self, link: &Link) -> StoreResult<()> {
        let t = &self.inner;
        link_write((&t.links, &t.slugs, &t.links_by_workspace).transaction(
            |(links, slugs, by_ws)| -> TxResult {
                links.remove(link.id.as_bytes())?;
                slugs.remove(link.slug.as_str())?;
                by_ws.remove(&keys::pair(&link.workspace_id, &link.id))?;
                Ok(())
            },
        ))?;
        Ok(())
    }

    pub fn link(&self, id: &LinkId) -> StoreResult<Option<Link>> {
        self.inner
            .links
            .get(id.as_bytes())?
            .map(|v| codec::decode(&v))
            .transpose()
    }

    /// The link that holds `slug` now, if any (for the command line, and for
    /// the Resolver's cache when a scanned slug is not in it).
    pub fn link_by_slug(&self, slug: &str) -> StoreResult<Option<Link>> {
        let id = self.inner.slugs.get(slug)?;
        match id.as_deref().and_then(LinkId::from_slice) {
            Some(id) => self.link(&id),
            None => Ok(None),
        }
    }

    /// The link `id` if it belongs to workspace `ws`: another workspace's link
    /// is as absent as one that does not exist.
    pub fn owned_link(&self, ws: &WorkspaceId, id: &LinkId) -> StoreResult<Option<Link>> {
        Ok(self.link(id)?.filter(|l| l.workspace_id == *ws))
    }

    /// A workspace's links, newest first, below `cursor` (a link ID).
    pub fn list_links(
        &self,
        ws: &WorkspaceId,
        query: &LinkQuery,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> StoreResult<Page<Link>> {
        let below = scan::cursor_id(cursor)?.unwrap_or([0xff; 16]);
        let (start, end) = (keys::pair_raw(ws, &[0; 16]), keys::pair_raw(ws, &below));
        let candidates = self
            .inner
            .links_by_workspace
            .range(start..end)
            .rev()
            .map(|entry| {
                let (key, _) = entry?;
                let link = match keys::pair_suffix::<LinkKind>(&key) {
                    Some(id) => self.link(&id)?.filter(|l| query.matches(l)),
                    None => None,
                };
                Ok((key[16..].to_vec(), link))
            });
        scan::paginate(candidates, limit, LINK_SCAN_BUDGET)
    }

    /// How many links workspace `ws` has.
    pub fn count_links(&self, ws: &WorkspaceId) -> StoreResult<u64> {
        let mut n = 0;
        for key in self
            .inner
            .links_by_workspace
            .scan_prefix(ws.as_bytes())
            .keys()
        {
            key?;
            n += 1;
        }
        Ok(n)
    }

    /// Lifetime non-bot scans of a link.
    pub fn link_total_scans(&self, id: &LinkId) -> StoreResult<u64> {
        let key = keys::counter(keys::CounterKind::LinkTotal, id);
        Ok(self
            .inner
            .counters
            .get(key)?
            .map(|v| decode_count(&v))
            .unwrap_or(0))
    }
}

pub(super) fn decode_count(bytes: &[u8]) -> u64 {
    bytes.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_that_is_not_a_link_id_is_bad() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 4).unwrap();
        let ws = WorkspaceId::generate();
        let link = LinkId::generate();
        let list = |cursor: &[u8]| store.list_links(&ws, &LinkQuery::default(), Some(cursor), 5);
        assert!(list(link.as_bytes()).is_ok());
        for bad in [
            keys::pair(&ws, &link).to_vec(),
            vec![],
            [&link.as_bytes()[..], &[0]].concat(),
        ] {
            assert!(matches!(list(&bad), Err(StoreError::BadCursor)), "{bad:?}");
        }
    }
}
