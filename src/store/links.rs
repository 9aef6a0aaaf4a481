//! Links, their slugs and the per-workspace index, kept in step in one
//! transaction each.

use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use super::codec::{self, Record};
use super::scan::{self, KeyRange, Page};
use super::{Store, StoreError, StoreResult, keys};
use crate::domain::{Link, LinkStatus};
use crate::ids::{LinkId, WorkspaceId};

impl Record for Link {
    const VERSION: u8 = 1;
}

type TxResult = Result<(), ConflictableTransactionError<StoreError>>;

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
    /// Stores a new link; fails with `SlugTaken` when its slug is in use.
    pub fn insert_link(&self, link: &Link) -> StoreResult<()> {
        let t = &self.inner;
        let bytes = codec::encode(link)?;
        (&t.links, &t.slugs, &t.links_by_workspace).transaction(
            |(links, slugs, by_ws)| -> TxResult {
                if slugs.get(link.slug.as_str())?.is_some() {
                    return Err(ConflictableTransactionError::Abort(StoreError::SlugTaken));
                }
                slugs.insert(link.slug.as_str(), link.id.as_bytes())?;
                links.insert(link.id.as_bytes(), bytes.as_slice())?;
                by_ws.insert(&keys::pair(&link.workspace_id, &link.id), &[])?;
                Ok(())
            },
        )?;
        Ok(())
    }

    /// Replaces `old` with `new` (same ID), moving the slug when it changed.
    pub fn replace_link(&self, old: &Link, new: &Link) -> StoreResult<()> {
        let t = &self.inner;
        let bytes = codec::encode(new)?;
        (&t.links, &t.slugs).transaction(|(links, slugs)| -> TxResult {
            if old.slug != new.slug {
                if slugs.get(new.slug.as_str())?.is_some() {
                    return Err(ConflictableTransactionError::Abort(StoreError::SlugTaken));
                }
                slugs.remove(old.slug.as_str())?;
                slugs.insert(new.slug.as_str(), new.id.as_bytes())?;
            }
            links.insert(new.id.as_bytes(), bytes.as_slice())?;
            Ok(())
        })?;
        Ok(())
    }

    /// Deletes a link and frees its slug; its events stay.
    pub fn delete_link(&self, link: &Link) -> StoreResult<()> {
        let t = &self.inner;
        (&t.links, &t.slugs, &t.links_by_workspace).transaction(
            |(links, slugs, by_ws)| -> TxResult {
                links.remove(link.id.as_bytes())?;
                slugs.remove(link.slug.as_str())?;
                by_ws.remove(&keys::pair(&link.workspace_id, &link.id))?;
                Ok(())
            },
        )?;
        Ok(())
    }

    pub fn link(&self, id: &LinkId) -> StoreResult<Option<Link>> {
        self.inner
            .links
            .get(id.as_bytes())?
            .map(|v| codec::decode(&v))
            .transpose()
    }

    /// Every link, for warming the Resolver's cache.
    pub fn all_links(&self) -> StoreResult<Vec<Link>> {
        self.inner
            .links
            .iter()
            .values()
            .map(|v| codec::decode(&v?))
            .collect()
    }

    /// A workspace's links, newest first.
    pub fn list_links(
        &self,
        ws: &WorkspaceId,
        query: &LinkQuery,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> StoreResult<Page<Link>> {
        let range = KeyRange::time_prefixed(ws.as_bytes(), None, None);
        scan::scan_desc(
            &self.inner.links_by_workspace,
            &range,
            cursor,
            limit,
            10_000,
            |key, _| {
                let Some(id) = keys::pair_suffix::<crate::ids::LinkKind>(key) else {
                    return Ok(None);
                };
                Ok(self.link(&id)?.filter(|l| query.matches(l)))
            },
        )
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
