//! Making sled's blob files durable.
//!
//! sled 0.34 writes a page too large for its log (over a quarter of a log
//! segment: 128 KiB with sled's default segment, 1 MiB in stores made now,
//! see `LOG_SEGMENT_SIZE`) to a file of its own under `blobs/`, named by its
//! log sequence number, and puts only a pointer to it in the log. It never
//! fsyncs those files. With 128 KiB, pages of event segments passed that
//! size all the time (a leaf held up to 17 segments of tens of KB), and
//! after a power cut the log could point at a blob the disk never got: sled
//! then panics while reading the store back, and the whole store is lost.
//! Segment bodies have since moved out of sled (`bodies.rs`); no page of
//! the other trees is known to come near 1 MiB, and this stays as the
//! safety net (stores made before keep 512 KiB log segments).
//!
//! `Store::flush` therefore fsyncs every blob file written since it last
//! looked (and the directory, for the new names), both before it fsyncs the
//! log and after: before, for the blobs the flushed log points at; after,
//! for blobs written while it ran. A blob is never rewritten once complete,
//! so a file is synced again only when its length changed since (it was
//! still being written).

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Mutex;

use super::StoreResult;
use super::compact::{fsync_dir, io as io_error};

pub(super) struct Blobs {
    dir: PathBuf,
    /// Length of each blob file when it was fsynced.
    synced: Mutex<HashMap<OsString, u64>>,
}

impl Blobs {
    /// The blobs of the sled database at `db_dir`.
    pub(super) fn new(db_dir: PathBuf) -> Blobs {
        Blobs {
            dir: db_dir.join("blobs"),
            synced: Mutex::new(HashMap::new()),
        }
    }

    /// Fsyncs the blob files not synced at their present length, then the
    /// directory if any was; answers how many files it synced. Files sled
    /// removes meanwhile are skipped.
    pub(super) fn sync(&self) -> StoreResult<usize> {
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            // sled makes the directory with its first blob.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_error(e)),
        };
        let mut present: HashMap<OsString, u64> = HashMap::with_capacity(synced.len());
        let mut count = 0;
        for entry in entries {
            let entry = entry.map_err(io_error)?;
            let len = match entry.metadata() {
                Ok(m) => m.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error(e)),
            };
            let name = entry.file_name();
            if synced.get(&name) != Some(&len) {
                match File::open(entry.path()).and_then(|f| f.sync_data()) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_error(e)),
                }
                count += 1;
            }
            present.insert(name, len);
        }
        if count > 0 {
            fsync_dir(&self.dir)?;
        }
        // Forget the files sled collected.
        *synced = present;
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn stores_keep_the_log_segment_size_they_were_made_with() {
        let made_before = tempfile::tempdir().unwrap();
        let dir = made_before.path().join(crate::store::FORMAT_DIR);
        // A store made by an earlier version: sled's default of 512 KiB.
        drop(sled::Config::new().path(&dir).open().unwrap());
        assert_eq!(crate::store::log_segment_size(&dir), 512 * 1024);
        crate::store::Store::open(made_before.path(), 8).expect("opens as it was made");
        let new = tempfile::tempdir().unwrap();
        crate::store::Store::open(new.path(), 8).unwrap();
        let dir = new.path().join(crate::store::FORMAT_DIR);
        assert_eq!(crate::store::log_segment_size(&dir), 4 * 1024 * 1024);
    }

    #[test]
    fn syncs_new_and_grown_files_once_and_forgets_removed_ones() {
        let db = tempfile::tempdir().unwrap();
        let blobs = Blobs::new(db.path().to_path_buf());
        assert_eq!(blobs.sync().unwrap(), 0, "no blobs directory yet");
        std::fs::create_dir(db.path().join("blobs")).unwrap();
        let path = |n: &str| db.path().join("blobs").join(n);
        std::fs::write(path("100"), b"page").unwrap();
        std::fs::write(path("200"), b"another page").unwrap();
        assert_eq!(blobs.sync().unwrap(), 2);
        assert_eq!(blobs.sync().unwrap(), 0, "nothing new");
        // A blob seen while sled was still writing it is synced again.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(path("200"))
            .unwrap();
        f.write_all(b", complete").unwrap();
        std::fs::write(path("300"), b"third").unwrap();
        assert_eq!(blobs.sync().unwrap(), 2);
        std::fs::remove_file(path("100")).unwrap();
        assert_eq!(blobs.sync().unwrap(), 0);
        assert_eq!(blobs.synced.lock().unwrap().len(), 2, "100 forgotten");
    }
}
