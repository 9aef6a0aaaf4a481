//! Event segment bodies, kept in append-only files beside sled.
//!
//! An event segment is tens of KB. Stored as a sled value, a leaf of the
//! events tree held up to 17 of them: every split and consolidation of that
//! leaf copied and logged them all again, sled kept the pages resident, and
//! a page over a quarter of sled's log segment went to a blob file that sled
//! never fsyncs (`blobs.rs`). So the events tree now holds a *pointer* to
//! the body (`POINTER_LEN` bytes: file, offset, length, CRC-32), and the
//! body is appended to a file under `segments/` in the store's directory.
//! Reads are `pread`s, served from the OS page cache, which is not counted
//! against the server's memory.
//!
//! Durability, in the order `Store::flush` runs:
//!
//! - `sync` fsyncs the file being appended to (and the directory when a file
//!   was started) *before* sled's log is fsynced, so every pointer in a
//!   flushed log points at durable bytes.
//! - A file is fsynced when the next one is started, so only the file being
//!   appended to can lack bytes after a power cut.
//! - A pointer logged after `sync` may still reach the disk first (the
//!   kernel writes sled's log back when it likes, and a flush that began
//!   before the body was appended fsyncs it). Such a pointer belongs to one
//!   of the newest segments, written by the Recorder since the last flush:
//!   scans within the window `batched` mode may lose. `Store::open` checks
//!   the pointers into the newest file, newest first, against the bytes
//!   (`read` answers `None` for a missing or torn body) and removes the
//!   dangling ones (`remove_lost_segments`).
//! - `strict` mode has acknowledged its scans before the Recorder commits
//!   them (they are in the scan log), so it appends with `append_durable`:
//!   removing such a segment would hide scans the log can no longer put
//!   back, since the store's newest event ID already covers them.
//! - A segment rewritten by retention or erasure (an older key) is fsynced
//!   before its pointer is committed (`append_durable`), so it is never
//!   dangling.
//!
//! A body is never changed in place. Space is given back a file at a time:
//! once no pointer refers to a file, `remove_unreferenced` deletes it
//! (after each retention pass); `scanhop compact` rewrites what is live.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use super::StoreResult;
use super::compact::{fsync_dir, io as io_error};

/// The first byte of a pointer value. A segment stored inline (written
/// before bodies moved to files) starts with its version, 1 or 2.
const POINTER_TAG: u8 = 0x80;
/// Tag, file (u32), offset (u64), length (u32), CRC-32 (u32), big-endian.
pub(super) const POINTER_LEN: usize = 1 + 4 + 8 + 4 + 4;
/// A new file is started once the current one is this large.
const FILE_BYTES: u64 = 32 * 1024 * 1024;
const SUFFIX: &str = ".seg";
/// The directory of the files, in the sled database's.
pub(super) const DIR: &str = "segments";

/// Where a body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pointer {
    pub(super) file: u32,
    offset: u64,
    len: u32,
    crc: u32,
}

impl Pointer {
    pub(super) fn encode(&self) -> [u8; POINTER_LEN] {
        let mut out = [0u8; POINTER_LEN];
        out[0] = POINTER_TAG;
        out[1..5].copy_from_slice(&self.file.to_be_bytes());
        out[5..13].copy_from_slice(&self.offset.to_be_bytes());
        out[13..17].copy_from_slice(&self.len.to_be_bytes());
        out[17..21].copy_from_slice(&self.crc.to_be_bytes());
        out
    }

    /// `None` when `value` is not a pointer (an inline segment).
    pub(super) fn decode(value: &[u8]) -> Option<Pointer> {
        if value.len() != POINTER_LEN || value[0] != POINTER_TAG {
            return None;
        }
        let u32_at = |i: usize| Some(u32::from_be_bytes(value.get(i..i + 4)?.try_into().ok()?));
        Some(Pointer {
            file: u32_at(1)?,
            offset: u64::from_be_bytes(value.get(5..13)?.try_into().ok()?),
            len: u32_at(13)?,
            crc: u32_at(17)?,
        })
    }
}

struct Writer {
    /// Shared with a `sync` that runs outside the lock.
    file: Arc<File>,
    number: u32,
    len: u64,
    /// Bytes appended since the last fsync.
    dirty: bool,
    /// A file was started since the directory was last fsynced.
    new_name: bool,
}

pub(super) struct Bodies {
    dir: PathBuf,
    writer: Mutex<Writer>,
    /// Read handles, by file number. A file deleted while a reader holds its
    /// handle stays readable through it.
    readers: RwLock<HashMap<u32, Arc<File>>>,
}

fn file_name(number: u32) -> String {
    format!("{number:08}{SUFFIX}")
}

/// The numbers of the body files in `dir`, ascending.
fn numbers(dir: &Path) -> StoreResult<Vec<u32>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error)? {
        let name = entry.map_err(io_error)?.file_name();
        if let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_suffix(SUFFIX))
            .and_then(|n| n.parse().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

fn open_for_append(dir: &Path, number: u32) -> io::Result<File> {
    File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(file_name(number)))
}

impl Bodies {
    /// The body files under `dir` (made if missing); appends go to the newest.
    pub(super) fn open(dir: PathBuf) -> StoreResult<Bodies> {
        let made = !dir.exists();
        std::fs::create_dir_all(&dir).map_err(io_error)?;
        if made && let Some(parent) = dir.parent() {
            fsync_dir(parent)?;
        }
        let number = numbers(&dir)?.last().copied().unwrap_or(1);
        let file = Arc::new(open_for_append(&dir, number).map_err(io_error)?);
        let len = file.metadata().map_err(io_error)?.len();
        Ok(Bodies {
            dir,
            writer: Mutex::new(Writer {
                file,
                number,
                len,
                dirty: false,
                new_name: made || len == 0,
            }),
            readers: RwLock::new(HashMap::new()),
        })
    }

    /// Whether bytes were appended since the last fsync.
    #[cfg(test)]
    pub(super) fn unsynced(&self) -> bool {
        self.writer().dirty
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The file appends go to now.
    pub(super) fn current_file(&self) -> u32 {
        self.writer().number
    }

    /// Appends `bodies` in one write; answers their pointers, in order.
    pub(super) fn append(&self, bodies: &[&[u8]]) -> StoreResult<Vec<Pointer>> {
        let mut w = self.writer();
        self.append_locked(&mut w, bodies)
    }

    /// `append`, then fsync: for a rewritten segment, whose pointer replaces
    /// one to durable bytes.
    pub(super) fn append_durable(&self, bodies: &[&[u8]]) -> StoreResult<Vec<Pointer>> {
        let mut w = self.writer();
        let pointers = self.append_locked(&mut w, bodies)?;
        Self::sync_locked(&self.dir, &mut w)?;
        Ok(pointers)
    }

    fn append_locked(&self, w: &mut Writer, bodies: &[&[u8]]) -> StoreResult<Vec<Pointer>> {
        if w.len >= FILE_BYTES {
            // The finished file is made durable before any pointer refers to
            // the next one, so only the newest file can lack bytes. (Whatever
            // `dirty` says: a `sync` may still be running on it.)
            w.file.sync_data().map_err(io_error)?;
            w.dirty = false;
            let number = w.number + 1;
            w.file = Arc::new(open_for_append(&self.dir, number).map_err(io_error)?);
            w.number = number;
            w.len = 0;
            w.new_name = true;
        }
        let total: usize = bodies.iter().map(|b| b.len()).sum();
        let mut buf = Vec::with_capacity(total);
        let mut pointers = Vec::with_capacity(bodies.len());
        for body in bodies {
            let len = u32::try_from(body.len())
                .map_err(|_| super::StoreError::Codec("event segment too large".into()))?;
            pointers.push(Pointer {
                file: w.number,
                offset: w.len + buf.len() as u64,
                len,
                crc: crc32fast::hash(body),
            });
            buf.extend_from_slice(body);
        }
        w.file.write_all_at(&buf, w.len).map_err(io_error)?;
        w.len += buf.len() as u64;
        w.dirty = true;
        Ok(pointers)
    }

    /// Makes every body appended so far durable. The fsync runs outside the
    /// lock, so the Recorder's appends do not wait for it.
    pub(super) fn sync(&self) -> StoreResult<()> {
        let (file, dirty, new_name) = {
            let mut w = self.writer();
            let taken = (w.file.clone(), w.dirty, w.new_name);
            w.dirty = false;
            w.new_name = false;
            taken
        };
        let synced = (|| {
            if dirty {
                file.sync_data().map_err(io_error)?;
            }
            if new_name {
                fsync_dir(&self.dir)?;
            }
            Ok(())
        })();
        if synced.is_err() {
            // Try again next time. (A roll meanwhile synced the file itself.)
            let mut w = self.writer();
            w.dirty |= dirty && Arc::ptr_eq(&w.file, &file);
            w.new_name |= new_name;
        }
        synced
    }

    fn sync_locked(dir: &Path, w: &mut Writer) -> StoreResult<()> {
        if w.dirty {
            w.file.sync_data().map_err(io_error)?;
            w.dirty = false;
        }
        if w.new_name {
            fsync_dir(dir)?;
            w.new_name = false;
        }
        Ok(())
    }

    fn reader(&self, file: u32) -> Option<Arc<File>> {
        if let Some(f) = self
            .readers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&file)
        {
            return Some(f.clone());
        }
        let f = Arc::new(File::open(self.dir.join(file_name(file))).ok()?);
        self.readers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(file, f.clone());
        Some(f)
    }

    /// The body `p` points at; `None` when it is missing or torn (a power
    /// cut took it, see the module documentation).
    pub(super) fn read(&self, p: &Pointer) -> StoreResult<Option<Vec<u8>>> {
        let Some(file) = self.reader(p.file) else {
            return Ok(None);
        };
        let mut buf = vec![0u8; p.len as usize];
        match file.read_exact_at(&mut buf, p.offset) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(io_error(e)),
        }
        Ok((crc32fast::hash(&buf) == p.crc).then_some(buf))
    }

    /// Deletes the files before `below` that no pointer in `live` refers
    /// to; answers how many. `below` is the file appended to when `live` was
    /// gathered: only it and later ones can gain pointers meanwhile.
    pub(super) fn remove_unreferenced(
        &self,
        live: &HashSet<u32>,
        below: u32,
    ) -> StoreResult<usize> {
        let mut removed = 0;
        for n in numbers(&self.dir)? {
            if n >= below || live.contains(&n) {
                continue;
            }
            match std::fs::remove_file(self.dir.join(file_name(n))) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(e)),
            }
            // After the unlink, so no new handle to the file can come in
            // between (one opened before stays readable: a reader that read
            // an old pointer finishes its read).
            self.readers
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&n);
        }
        if removed > 0 {
            fsync_dir(&self.dir)?;
        }
        Ok(removed)
    }

    /// Starts a new file at once (tests: a roll without 32 MiB of bodies).
    #[cfg(test)]
    pub(super) fn roll(&self) -> StoreResult<()> {
        let mut w = self.writer();
        w.len = FILE_BYTES;
        self.append_locked(&mut w, &[])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_read_back_across_files_and_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segments");
        let bodies = Bodies::open(path.clone()).unwrap();
        let first = bodies.append(&[b"one", b"two"]).unwrap();
        bodies.roll().unwrap();
        let second = bodies.append(&[b"three"]).unwrap();
        assert_eq!((first[0].file, second[0].file), (1, 2));
        bodies.sync().unwrap();
        drop(bodies);
        let bodies = Bodies::open(path).unwrap();
        for (p, want) in [(first[0], "one"), (first[1], "two"), (second[0], "three")] {
            let round = Pointer::decode(&p.encode()).unwrap();
            assert_eq!(round, p);
            assert_eq!(bodies.read(&round).unwrap().unwrap(), want.as_bytes());
        }
        assert_eq!(bodies.current_file(), 2, "appends go on in the newest file");
    }

    #[test]
    fn a_missing_or_torn_body_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segments");
        let bodies = Bodies::open(path.clone()).unwrap();
        let p = bodies.append(&[b"0123456789"]).unwrap()[0];
        let past_the_end = Pointer { offset: 5, ..p };
        assert_eq!(bodies.read(&past_the_end).unwrap(), None, "short");
        // The bytes a power cut left differ from those appended.
        File::options()
            .write(true)
            .open(path.join(file_name(1)))
            .unwrap()
            .write_all_at(b"X", 3)
            .unwrap();
        assert_eq!(bodies.read(&p).unwrap(), None, "torn");
        let elsewhere = Pointer { file: 9, ..p };
        assert_eq!(bodies.read(&elsewhere).unwrap(), None, "no such file");
        assert_eq!(Pointer::decode(b"\x02inline segment"), None);
    }

    #[test]
    fn only_files_no_pointer_refers_to_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let bodies = Bodies::open(dir.path().join("segments")).unwrap();
        let a = bodies.append(&[b"a"]).unwrap()[0];
        bodies.roll().unwrap();
        let b = bodies.append(&[b"b"]).unwrap()[0];
        bodies.roll().unwrap();
        let c = bodies.append(&[b"c"]).unwrap()[0];
        // Only `b` is still referred to; file 3 is being appended to.
        let live: HashSet<u32> = [b.file].into();
        assert_eq!(
            bodies
                .remove_unreferenced(&live, bodies.current_file())
                .unwrap(),
            1
        );
        assert_eq!(bodies.read(&a).unwrap(), None);
        assert_eq!(bodies.read(&b).unwrap().unwrap(), b"b");
        assert_eq!(bodies.read(&c).unwrap().unwrap(), b"c");
        assert_eq!(bodies.remove_unreferenced(&HashSet::new(), 3).unwrap(), 1);
        assert_eq!(
            bodies.read(&c).unwrap().unwrap(),
            b"c",
            "the current file stays"
        );
    }
}
