//! `scanhop compact`: rewrites the store with its live data only.
//!
//! sled is log-structured: a rewritten or removed value stays in its log file
//! until sled happens to clean that part of the log, so the bytes of events
//! deleted by retention can linger on disk. Compaction copies every tree,
//! key by key, into a fresh sled directory beside the store and swaps the two
//! directories; the old one, with every stale page version, is then deleted.
//!
//! Directories under `storage.path`: `sled-v1` (the store), `sled-v1.compact`
//! (the copy being made), `sled-v1.old` (the store being replaced).
//!
//! 1. With the store open (sled's lock held): copy every tree into
//!    `sled-v1.compact`, flush, close it, reopen it and count every tree
//!    against the original, then fsync its files and directories.
//! 2. Close the store, and at once lock its `db` file ourselves (the same
//!    flock sled takes), so no server can open it from here on.
//! 3. Rename `sled-v1` to `sled-v1.old`, then `sled-v1.compact` to `sled-v1`,
//!    and fsync `storage.path`.
//! 4. Unlock and delete `sled-v1.old`.
//!
//! A crash at any point leaves a usable store, which `Store::open` (through
//! `recover` and `clean_leftovers` below) puts right:
//!
//! - during 1 or 2: `sled-v1` is the untouched store; the partial
//!   `sled-v1.compact` is deleted by the next open.
//! - between the two renames of 3: there is no `sled-v1`, and `sled-v1.old`
//!   is the complete old store: the next open renames it back (the new copy,
//!   perhaps complete, is deleted rather than trusted).
//! - after 3: `sled-v1` is the complete new store (its files were fsynced
//!   before it was renamed into place); a left-over `sled-v1.old` is deleted
//!   by the next open.
//!
//! An open that finds `sled-v1.old` locked knows a compaction is swapping
//! directories right now and refuses, as it refuses a store in use.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{EVENTS_TREE, FORMAT_DIR, Store, StoreError, StoreResult};

/// Entries per batch written into the new store.
const BATCH: usize = 1024;

/// What a compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactReport {
    /// Bytes of the store's files before and after.
    pub before_bytes: u64,
    pub after_bytes: u64,
    /// Trees and entries copied.
    pub trees: usize,
    pub entries: u64,
}

fn paths(path: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        path.join(FORMAT_DIR),
        path.join(format!("{FORMAT_DIR}.compact")),
        path.join(format!("{FORMAT_DIR}.old")),
    )
}

pub(super) fn io(e: std::io::Error) -> StoreError {
    StoreError::Sled(sled::Error::Io(e))
}

/// Takes the flock sled takes on a store's `db` file; `None` when another
/// process holds it. A store just closed in this process may release its
/// lock a moment late (sled's threads wind down), hence a few tries.
fn lock_db(dir: &Path) -> StoreResult<Option<File>> {
    let file = File::options()
        .read(true)
        .write(true)
        .open(dir.join("db"))
        .map_err(io)?;
    for _ in 0..50 {
        match file.try_lock() {
            Ok(()) => return Ok(Some(file)),
            Err(std::fs::TryLockError::WouldBlock) => std::thread::sleep(Duration::from_millis(20)),
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
    }
    Ok(None)
}

pub(super) fn fsync_dir(dir: &Path) -> StoreResult<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

/// Every file under `dir`: fsynced when `sync`, and their total size.
fn walk(dir: &Path, sync: bool) -> StoreResult<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let meta = std::fs::symlink_metadata(&path).map_err(io)?;
        if meta.is_dir() {
            total += walk(&path, sync)?;
        } else {
            total += meta.len();
            if sync {
                File::open(&path).and_then(|f| f.sync_all()).map_err(io)?;
            }
        }
    }
    if sync {
        fsync_dir(dir)?;
    }
    Ok(total)
}

/// The total size of the store's files under `path`.
pub fn store_size(path: &Path) -> StoreResult<u64> {
    walk(&path.join(FORMAT_DIR), false)
}

fn open_sled(dir: &Path, cache_mb: u64) -> StoreResult<sled::Db> {
    Ok(sled::Config::new()
        .path(dir)
        .segment_size(super::log_segment_size(dir))
        .cache_capacity(cache_mb.saturating_mul(1024 * 1024))
        .mode(sled::Mode::HighThroughput)
        .open()?)
}

/// Entries per tree, by tree name.
fn tree_sizes(db: &sled::Db) -> StoreResult<Vec<(sled::IVec, u64)>> {
    let mut names = db.tree_names();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let tree = db.open_tree(&name)?;
            let mut n = 0u64;
            for entry in tree.iter().keys() {
                entry?;
                n += 1;
            }
            Ok((name, n))
        })
        .collect()
}

/// Rewrites the store under `path` with its live data only (see the module
/// documentation for the steps and what a crash leaves). Fails with
/// `StoreError::Locked` while a server has the store open.
pub fn compact(path: &Path, cache_mb: u64) -> StoreResult<CompactReport> {
    let (live, fresh, old) = paths(path);
    let store = Store::open(path, cache_mb)?;
    store.flush()?;
    let before_bytes = walk(&live, false)?;
    remove_dir(&fresh)?;
    // 1. Copy, check and sync.
    let source = &store.inner.db;
    let expected = tree_sizes(source)?;
    {
        let target = open_sled(&fresh, cache_mb)?;
        let bodies = super::bodies::Bodies::open(fresh.join(super::bodies::DIR))?;
        for (name, _) in &expected {
            let from = source.open_tree(name)?;
            let to = target.open_tree(name)?;
            // Segment bodies are copied into the copy's own files (only the
            // live ones: the space retention freed is given back), and so
            // are segments stored inline by older versions.
            let segments = name.as_ref() == EVENTS_TREE.as_bytes();
            let mut batch = sled::Batch::default();
            let mut pending = 0;
            for entry in from.iter() {
                let (k, mut v) = entry?;
                if segments {
                    let body = store.body(v)?.ok_or_else(|| {
                        StoreError::Codec("an event segment's body is missing".into())
                    })?;
                    v = bodies.append(&[&body])?[0].encode()[..].into();
                }
                batch.insert(k, v);
                pending += 1;
                if pending == BATCH {
                    to.apply_batch(std::mem::take(&mut batch))?;
                    pending = 0;
                }
            }
            to.apply_batch(batch)?;
        }
        bodies.sync()?;
        target.flush()?;
    }
    // Reopening runs sled's recovery on the copy: what it counts is what a
    // server would find.
    let copied = {
        if lock_db(&fresh)?.is_none() {
            return Err(StoreError::Codec(
                "the new copy of the store stayed locked after it was closed".into(),
            ));
        }
        let copy = open_sled(&fresh, cache_mb)?;
        tree_sizes(&copy)?
    };
    if copied != expected {
        remove_dir(&fresh)?;
        return Err(StoreError::Codec(
            "the new copy of the store does not hold what the store holds; the store is unchanged"
                .into(),
        ));
    }
    walk(&fresh, true)?;
    fsync_dir(path)?;
    // 2. Close the store and hold its lock ourselves.
    drop(store);
    let Some(guard) = lock_db(&live)? else {
        // A server opened the store in the moment it was closed: it keeps it.
        remove_dir(&fresh)?;
        return Err(StoreError::Locked(live));
    };
    // 3. Swap.
    std::fs::rename(&live, &old).map_err(io)?;
    std::fs::rename(&fresh, &live).map_err(io)?;
    fsync_dir(path)?;
    // 4. Delete the old store.
    drop(guard);
    remove_dir(&old)?;
    fsync_dir(path)?;
    let after_bytes = walk(&live, false)?;
    Ok(CompactReport {
        before_bytes,
        after_bytes,
        trees: expected.len(),
        entries: expected.iter().map(|(_, n)| n).sum(),
    })
}

/// Before the store is opened: a crash between the two renames of a
/// compaction left no store but the old one beside it; put it back.
pub(super) fn recover(path: &Path) -> StoreResult<()> {
    let (live, fresh, old) = paths(path);
    if live.exists() || !old.exists() {
        return Ok(());
    }
    if lock_db(&old)?.is_none() {
        // A compaction is between its two renames right now.
        return Err(StoreError::Locked(old));
    }
    remove_dir(&fresh)?;
    std::fs::rename(&old, &live).map_err(io)?;
    fsync_dir(path)
}

/// With the store open (so no compaction is copying it): delete what a
/// crashed compaction left. An old store still locked belongs to a
/// compaction finishing right now, which deletes it itself. Best effort: a
/// left-over directory is logged, never a reason not to open the store.
pub(super) fn clean_leftovers(path: &Path) {
    let (_, fresh, old) = paths(path);
    let mut cleaned = remove_dir(&fresh);
    if cleaned.is_ok() && old.exists() {
        cleaned = match lock_db(&old) {
            Ok(Some(_)) => remove_dir(&old),
            Ok(None) => Ok(()),
            Err(StoreError::Sled(sled::Error::Io(e)))
                if e.kind() == std::io::ErrorKind::NotFound =>
            {
                remove_dir(&old)
            }
            Err(e) => Err(e),
        };
    }
    if let Err(e) = cleaned {
        tracing::warn!(error = %e, "cannot delete what an interrupted `scanhop compact` left beside the store");
    }
}

/// Deletes `dir` and everything in it; a directory already gone is fine.
fn remove_dir(dir: &Path) -> StoreResult<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ScanEvent;
    use crate::ids::{EventId, LinkId, WorkspaceId};
    use crate::store::PurgePlan;

    /// Every file under `dir` holds `needle` somewhere.
    fn files_contain(dir: &Path, needle: &[u8]) -> bool {
        std::fs::read_dir(dir).unwrap().any(|entry| {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files_contain(&path, needle)
            } else {
                let bytes = std::fs::read(&path).unwrap();
                bytes.windows(needle.len()).any(|w| w == needle)
            }
        })
    }

    fn event(ms: i64, ws: WorkspaceId, link: LinkId, marker: &str) -> ScanEvent {
        let mut id = EventId::lower_bound_bytes(ms);
        id[15] = 1;
        ScanEvent {
            referer: Some(format!("https://{marker}.example/")),
            ..ScanEvent::sample(EventId::from_bytes(id), ws, link)
        }
    }

    #[test]
    fn compaction_keeps_the_live_data_and_drops_every_byte_of_deleted_events() {
        let dir = tempfile::tempdir().unwrap();
        let (ws, link) = (WorkspaceId::generate(), LinkId::generate());
        let old_marker = format!("gone-{}", hex::encode(crate::random::bytes::<8>()));
        let kept_marker = format!("kept-{}", hex::encode(crate::random::bytes::<8>()));
        let kept = event(5_000, ws, link, &kept_marker);
        {
            let store = Store::open(dir.path(), 8).unwrap();
            // Many segments, so sled writes more than one page of them.
            for i in 0..200 {
                store
                    .commit_scans(&[event(1_000 + i, ws, link, &old_marker)])
                    .unwrap();
            }
            store.commit_scans(std::slice::from_ref(&kept)).unwrap();
            // Stored inline, as by a version before bodies moved to files.
            let key = kept.id.as_bytes();
            let body = store.segment(key).unwrap().unwrap().body;
            store.inner.events.insert(key, &body[..]).unwrap();
            let plan = PurgePlan {
                workspace: ws,
                before_ms: 2_000,
                up_to: store.last_event_id().unwrap(),
            };
            let step = store.purge_step(&plan, None, 1000, false).unwrap();
            assert_eq!(step.report.events, 200);
            store.flush().unwrap();
        }
        let live = dir.path().join(FORMAT_DIR);
        // sled keeps the old page versions in its log until it cleans it.
        let lingering = files_contain(&live, old_marker.as_bytes());
        eprintln!("before compaction, purged bytes still in sled's files: {lingering}");
        let report = compact(dir.path(), 8).unwrap();
        assert!(report.entries > 0 && report.trees >= 13, "{report:?}");
        assert_eq!(report.after_bytes, store_size(dir.path()).unwrap());
        assert!(!files_contain(dir.path(), old_marker.as_bytes()));
        assert!(files_contain(dir.path(), kept_marker.as_bytes()));
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![FORMAT_DIR.to_owned()], "nothing left beside it");
        let store = Store::open(dir.path(), 8).unwrap();
        let raw = store.inner.events.get(kept.id.as_bytes()).unwrap().unwrap();
        assert!(
            super::super::bodies::Pointer::decode(&raw).is_some(),
            "now in a file"
        );
        assert_eq!(store.event(&kept.id).unwrap(), Some(kept.clone()));
        assert_eq!(store.events_after(None, 10).unwrap(), vec![kept]);
        assert_eq!(store.link_total_scans(&link).unwrap(), 201);
        assert_eq!(store.purged_scans(&link).unwrap(), 200);
        // Compacting a store in use is refused.
        assert!(matches!(compact(dir.path(), 8), Err(StoreError::Locked(_))));
    }

    #[test]
    fn an_open_puts_right_what_an_interrupted_compaction_left() {
        let dir = tempfile::tempdir().unwrap();
        let (live, fresh, old) = paths(dir.path());
        let ws = WorkspaceId::generate();
        let e = event(1_000, ws, LinkId::generate(), "x");
        Store::open(dir.path(), 8)
            .unwrap()
            .commit_scans(std::slice::from_ref(&e))
            .unwrap();
        // Crashed between the two renames: the old store is put back, the
        // copy deleted.
        std::fs::rename(&live, &old).unwrap();
        std::fs::create_dir_all(&fresh).unwrap();
        std::fs::write(fresh.join("db"), b"half a copy").unwrap();
        {
            let store = Store::open(dir.path(), 8).unwrap();
            assert_eq!(store.event(&e.id).unwrap(), Some(e.clone()));
            assert!(!old.exists() && !fresh.exists());
        }
        // Crashed while copying, or after the swap: the leftovers go.
        for leftover in [&fresh, &old] {
            std::fs::create_dir_all(leftover).unwrap();
            std::fs::write(leftover.join("db"), b"stale").unwrap();
        }
        let store = Store::open(dir.path(), 8).unwrap();
        assert_eq!(store.event(&e.id).unwrap(), Some(e));
        assert!(!old.exists() && !fresh.exists());
    }
}
