//! Moving what a store of an earlier version holds to the current layout,
//! at open, before anything reads it. Each move is written in sled batches
//! and the former trees are dropped last: sled recovers a prefix of its log,
//! so once a drop is durable the entries moved before it are too, and a
//! crash part way leaves the former trees for the next open to move again.

use super::StoreResult;

/// Entries written per sled batch.
const MOVE_BATCH: usize = 10_000;

/// Whether the store has a tree called `name`.
pub(super) fn has_tree(db: &sled::Db, name: &str) -> bool {
    db.tree_names().iter().any(|n| n == name.as_bytes())
}

/// Applies `writes` to `tree` (a value to insert, or `None` to remove the
/// key), `MOVE_BATCH` at a time; answers how many.
pub(super) fn write_in_batches(
    tree: &sled::Tree,
    writes: impl Iterator<Item = StoreResult<(sled::IVec, Option<sled::IVec>)>>,
) -> StoreResult<usize> {
    let mut n = 0;
    let mut batch = sled::Batch::default();
    for write in writes {
        match write? {
            (key, Some(value)) => batch.insert(key, value),
            (key, None) => batch.remove(key),
        }
        n += 1;
        if n % MOVE_BATCH == 0 {
            tree.apply_batch(std::mem::take(&mut batch))?;
        }
    }
    tree.apply_batch(batch)?;
    Ok(n)
}

/// Drops each of the trees `names` the store has.
pub(super) fn drop_trees(db: &sled::Db, names: &[&str]) -> StoreResult<()> {
    for name in names {
        if has_tree(db, name) {
            db.drop_tree(name)?;
        }
    }
    Ok(())
}
