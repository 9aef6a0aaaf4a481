//! Key builders. Keys are explicit big-endian byte concatenations; IDs are
//! UUIDv7 bytes, so every "X by Y" index sorts by time within its prefix.

use crate::ids::{Id, IdKind, LinkId};

pub const META_SCHEMA_VERSION: &[u8] = b"schema_version";

/// The generation of the slug file the store was last closed clean with
/// (`meta`, u64 BE): the file is trusted at open only with the same one.
pub const META_SLUG_PAGES_GENERATION: &[u8] = b"slug_pages_generation";

/// Kinds of counters, the first byte of a `counters` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CounterKind {
    /// Lifetime non-bot scans of a link.
    LinkTotal = 1,
    /// Forms completed on a link.
    FormCompletions = 2,
    /// Links a workspace has now (keyed by the workspace ID).
    WorkspaceLinks = 3,
}

/// Set (`meta`) once every workspace's `CounterKind::WorkspaceLinks` is
/// stored: a store written before those counters were kept gets them
/// counted from its links at its first open.
pub const META_LINK_COUNTS: &[u8] = b"link_counts";

/// The highest event ID the Purger ever deleted (`meta`): the Recorder
/// continues after it even when the newest segments were deleted.
pub const META_EVENTS_HIGH_WATER: &[u8] = b"events_high_water";

/// The newest event segment whose visitor entries are in the visitor index
/// (`meta`; `visitor_index.rs`).
pub const META_VISITOR_INDEX_THROUGH: &[u8] = b"visitor_index_through";

/// Kinds of totals of deleted events, the first byte of a `purged` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PurgedKind {
    /// Non-bot scans of a link deleted by retention.
    LinkScans = 1,
    /// Non-bot scans of a workspace deleted by retention.
    WorkspaceScans = 2,
    /// Every event of a workspace deleted by retention, bots included.
    WorkspaceEvents = 3,
}

/// `kind (1) ++ owner id (16)`.
pub fn purged<K: IdKind>(kind: PurgedKind, owner: &Id<K>) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = kind as u8;
    key[1..].copy_from_slice(owner.as_bytes());
    key
}

/// `a (16) ++ b (16)`: an index entry of `b` under owner `a`.
pub fn pair<A: IdKind, B: IdKind>(a: &Id<A>, b: &Id<B>) -> [u8; 32] {
    pair_raw(a, b.as_bytes())
}

/// `a (16) ++ raw (16)`: a bound of the index entries under owner `a`.
pub fn pair_raw<A: IdKind>(a: &Id<A>, raw: &[u8; 16]) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(a.as_bytes());
    key[16..].copy_from_slice(raw);
    key
}

/// `kind (1) ++ link_id (16)`.
pub fn counter(kind: CounterKind, link: &LinkId) -> [u8; 17] {
    owner_counter(kind, link)
}

/// `kind (1) ++ owner id (16)`: a counter of any owner (a workspace's).
pub fn owner_counter<K: IdKind>(kind: CounterKind, owner: &Id<K>) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = kind as u8;
    key[1..].copy_from_slice(owner.as_bytes());
    key
}

/// The owned ID at the end of a `pair` key.
pub fn pair_suffix<B: IdKind>(key: &[u8]) -> Option<Id<B>> {
    Id::from_slice(key.get(16..)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{EventId, WorkspaceId};

    #[test]
    fn golden_bytes() {
        let ws: WorkspaceId = "ws_00000000000000000000000001".parse().unwrap();
        let ev: EventId = "evt_0000000000000000000000000z".parse().unwrap();
        let key = pair(&ws, &ev);
        let mut expected = [0u8; 32];
        expected[15] = 1;
        expected[31] = 31;
        assert_eq!(key, expected);
        assert_eq!(pair_suffix::<crate::ids::EventKind>(&key), Some(ev));
        let link: LinkId = "lnk_00000000000000000000000002".parse().unwrap();
        let c = counter(CounterKind::LinkTotal, &link);
        assert_eq!(c[0], 1);
        assert_eq!(c[16], 2);
    }

    #[test]
    fn pair_keys_sort_by_owner_then_time() {
        let ws: WorkspaceId = WorkspaceId::generate();
        let a = EventId::generate();
        let b = EventId::generate();
        assert!(pair(&ws, &a) < pair(&ws, &b));
    }
}
