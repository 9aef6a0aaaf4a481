//! Links and their slugs, kept in step in one transaction each. A link is
//! stored under `workspace ID ++ link ID`, so a workspace's links are one
//! key range, and a slug maps to that key: two sled keys per link.

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::codec::{self, Record};
use super::scan::{self, Page};
use super::{Store, StoreError, StoreResult, keys, layout};
use crate::domain::{Link, LinkStatus};
use crate::ids::{LinkId, WorkspaceId};

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

/// The tree of links, keyed `workspace ID ++ link ID`.
pub(super) const LINKS_TREE: &str = "workspace_links";
/// The trees of the former layout: links keyed by link ID alone, slugs
/// mapping to the link ID, and beside them an index of each workspace's
/// links (three keys per link).
const FORMER_LINKS: &str = "links";
const FORMER_BY_WORKSPACE: &str = "links_by_workspace";
/// Moves the links a store of the former layout holds into `links`, points
/// their slugs at the new keys and drops the former trees (`layout`);
/// answers how many links moved. A slug already pointing at a new key (a
/// move cut short) stays as it is; one whose link is gone is removed.
pub(super) fn move_links_of_former_layout(
    db: &sled::Db,
    links: &sled::Tree,
    slugs: &sled::Tree,
) -> StoreResult<usize> {
    if !layout::has_tree(db, FORMER_LINKS) {
        return Ok(0);
    }
    let former = db.open_tree(FORMER_LINKS)?;
    let key_of = |raw: &[u8]| -> StoreResult<sled::IVec> {
        let link: Link = codec::decode(raw)?;
        Ok(keys::pair(&link.workspace_id, &link.id).to_vec().into())
    };
    let moved = layout::write_in_batches(
        links,
        former.iter().map(|entry| {
            let (_, value) = entry?;
            Ok((key_of(&value)?, Some(value)))
        }),
    )?;
    let repointed = slugs.iter().filter_map(|entry| {
        let step = || -> StoreResult<Option<(sled::IVec, Option<sled::IVec>)>> {
            let (slug, value) = entry?;
            // A former value is the link ID alone; a new one is 32 bytes.
            if value.len() != 16 {
                return Ok(None);
            }
            let link = former.get(&value)?;
            Ok(Some((slug, link.map(|raw| key_of(&raw)).transpose()?)))
        };
        step().transpose()
    });
    // sled's iterator reads on from the last key it returned, so writing
    // the slugs it has passed does not disturb it.
    layout::write_in_batches(slugs, repointed)?;
    layout::drop_trees(db, &[FORMER_LINKS, FORMER_BY_WORKSPACE])?;
    Ok(moved)
}

impl Store {
    /// Stores a new link, unless its slug is in use.
    pub fn insert_link(&self, link: &Link) -> StoreResult<LinkWrite> {
        let t = &self.inner;
        let bytes = codec::encode(link)?;
        let key = keys::pair(&link.workspace_id, &link.id);
        link_write(
            (&t.links, &t.slugs).transaction(|(links, slugs)| -> TxResult {
                if slugs.get(link.slug.as_str())?.is_some() {
                    return Err(ConflictableTransactionError::Abort(SlugTaken));
                }
                slugs.insert(link.slug.as_str(), &key[..])?;
                links.insert(&key[..], bytes.as_slice())?;
                Ok(())
            }),
        )
    }

    /// Replaces `old` with `new` (same ID and workspace), moving the slug
    /// when it changed, unless the new slug is in use.
    pub fn replace_link(&self, old: &Link, new: &Link) -> StoreResult<LinkWrite> {
        let t = &self.inner;
        let bytes = codec::encode(new)?;
        let key = keys::pair(&new.workspace_id, &new.id);
        link_write(
            (&t.links, &t.slugs).transaction(|(links, slugs)| -> TxResult {
                if old.slug != new.slug {
                    if slugs.get(new.slug.as_str())?.is_some() {
                        return Err(ConflictableTransactionError::Abort(SlugTaken));
                    }
                    slugs.remove(old.slug.as_str())?;
                    slugs.insert(new.slug.as_str(), &key[..])?;
                }
                links.insert(&key[..], bytes.as_slice())?;
                Ok(())
            }),
        )
    }

    /// Deletes a link and frees its slug; its events stay.
    pub fn delete_link(&self, link: &Link) -> StoreResult<()> {
        let t = &self.inner;
        link_write(
            (&t.links, &t.slugs).transaction(|(links, slugs)| -> TxResult {
                links.remove(&keys::pair(&link.workspace_id, &link.id)[..])?;
                slugs.remove(link.slug.as_str())?;
                Ok(())
            }),
        )?;
        Ok(())
    }

    fn link_at(&self, key: &[u8]) -> StoreResult<Option<Link>> {
        self.inner
            .links
            .get(key)?
            .map(|v| codec::decode(&v))
            .transpose()
    }

    /// The link `id` if it belongs to workspace `ws`: another workspace's link
    /// is as absent as one that does not exist.
    pub fn owned_link(&self, ws: &WorkspaceId, id: &LinkId) -> StoreResult<Option<Link>> {
        self.link_at(&keys::pair(ws, id))
    }

    /// The link `id` of whichever workspace holds it. For the command line
    /// only: it reads every link's key.
    pub fn link_in_any_workspace(&self, id: &LinkId) -> StoreResult<Option<Link>> {
        for key in self.inner.links.iter().keys() {
            let key = key?;
            if key.get(16..) == Some(&id.as_bytes()[..]) {
                return self.link_at(&key);
            }
        }
        Ok(None)
    }

    /// The link that holds `slug` now, if any (for the command line, and for
    /// the Resolver's cache when a scanned slug is not in it).
    pub fn link_by_slug(&self, slug: &str) -> StoreResult<Option<Link>> {
        match self.inner.slugs.get(slug)? {
            Some(key) => self.link_at(&key),
            None => Ok(None),
        }
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
        let candidates = self.inner.links.range(start..end).rev().map(|entry| {
            let (key, value) = entry?;
            let link: Link = codec::decode(&value)?;
            Ok((key[16..].to_vec(), query.matches(&link).then_some(link)))
        });
        scan::paginate(candidates, limit, LINK_SCAN_BUDGET)
    }

    /// How many links workspace `ws` has.
    pub fn count_links(&self, ws: &WorkspaceId) -> StoreResult<u64> {
        let mut n = 0;
        for key in self.inner.links.scan_prefix(ws.as_bytes()).keys() {
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

    fn link(ws: WorkspaceId, slug: &str) -> Link {
        Link::sample(ws, slug, "https://example.com/")
    }

    #[test]
    fn links_of_the_former_layout_move_to_their_workspace_keys_with_their_slugs() {
        let dir = tempfile::tempdir().unwrap();
        let (ws1, ws2) = (WorkspaceId::generate(), WorkspaceId::generate());
        let (a, b, c) = (link(ws1, "alpha"), link(ws1, "bravo"), link(ws2, "charlie"));
        {
            let store = Store::open(dir.path(), 4).unwrap();
            let db = &store.inner.db;
            let former = db.open_tree(FORMER_LINKS).unwrap();
            let by_ws = db.open_tree(FORMER_BY_WORKSPACE).unwrap();
            for l in [&a, &b, &c] {
                former
                    .insert(l.id.as_bytes(), codec::encode(l).unwrap())
                    .unwrap();
                by_ws
                    .insert(keys::pair(&l.workspace_id, &l.id), &[][..])
                    .unwrap();
                store
                    .inner
                    .slugs
                    .insert(l.slug.as_str(), l.id.as_bytes())
                    .unwrap();
            }
            // A move cut short by a crash: `alpha` already moved, its slug
            // pointing at its new key; and a slug left behind by a link
            // that is gone.
            let key = keys::pair(&ws1, &a.id);
            store
                .inner
                .links
                .insert(key, codec::encode(&a).unwrap())
                .unwrap();
            store.inner.slugs.insert("alpha", &key[..]).unwrap();
            store
                .inner
                .slugs
                .insert("orphan", LinkId::generate().as_bytes())
                .unwrap();
            store.flush().unwrap();
        }
        let store = Store::open(dir.path(), 4).unwrap();
        for l in [&a, &b, &c] {
            assert_eq!(
                store.link_by_slug(l.slug.as_str()).unwrap().as_ref(),
                Some(l)
            );
            assert_eq!(
                store.owned_link(&l.workspace_id, &l.id).unwrap().as_ref(),
                Some(l)
            );
            assert_eq!(
                store.link_in_any_workspace(&l.id).unwrap().as_ref(),
                Some(l)
            );
        }
        assert_eq!(store.link_by_slug("orphan").unwrap(), None);
        assert_eq!(
            store.inner.slugs.get("orphan").unwrap(),
            None,
            "the orphan slug is freed"
        );
        // Another workspace's link is as absent as none.
        assert_eq!(store.owned_link(&ws2, &a.id).unwrap(), None);
        let listed = |ws| -> Vec<LinkId> {
            store
                .list_links(&ws, &LinkQuery::default(), None, 10)
                .unwrap()
                .items
                .into_iter()
                .map(|l| l.id)
                .collect()
        };
        assert_eq!(listed(ws1), [b.id, a.id]);
        assert_eq!(listed(ws2), [c.id]);
        assert_eq!(store.count_links(&ws1).unwrap(), 2);
        let names = store.inner.db.tree_names();
        for former in [FORMER_LINKS, FORMER_BY_WORKSPACE] {
            assert!(
                !names.iter().any(|n| n == former.as_bytes()),
                "{former} dropped"
            );
        }
        // A slug still works after the link is renamed and deleted.
        let mut renamed = b.clone();
        renamed.slug = crate::domain::Slug::parse("bravo-2").unwrap();
        assert_eq!(
            store.replace_link(&b, &renamed).unwrap(),
            LinkWrite::Written
        );
        assert_eq!(store.link_by_slug("bravo").unwrap(), None);
        assert_eq!(
            store.link_by_slug("bravo-2").unwrap(),
            Some(renamed.clone())
        );
        store.delete_link(&renamed).unwrap();
        assert_eq!(store.link_by_slug("bravo-2").unwrap(), None);
        assert_eq!(store.count_links(&ws1).unwrap(), 1);
    }
}
