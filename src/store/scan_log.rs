//! The scan log: `strict` durability's write-ahead log of scans.
//!
//! A strict redirect is answered once its scan is on disk. Making it durable
//! in sled meant a transaction and a flush per group of waiting scans: at 64
//! connections a group is a few dozen scans, and sled's cost per
//! transaction and per flush (index entries per segment, the log buffer
//! handed to its IO threads, two fsyncs) was paid for each of them. Instead
//! the scans are appended to this log, one record per group, and the log is
//! fdatasynced: one append and one fsync per group. The Recorder then
//! commits the logged scans to sled in the same large batches as `batched`
//! mode, and the periodic flush makes them durable there.
//!
//! A record is `[length: u32 LE][CRC-32: u32 LE][payload]`; the payload is
//! the group's scans, each `(ScanEvent, Option<Fingerprint>, Option<Box<str>>)`
//! in bincode, as the Recorder took them from its queue: what the redirect
//! left to resolve when the scan is committed, the device of a scan whose
//! visitor the redirect did not know and a user agent its cache did not
//! know (parsed by the Recorder with the rest of its batch, off the HTTP
//! workers, as in `batched` mode). The CRC covers the file's number, then
//! the payload.
//!
//! At start, before the Recorder takes scans, every record of every file is
//! read back (`open`); the scans newer than the newest one in the store are
//! committed again, the store is flushed, and the files are done with. The
//! first record that does not check (a crash during an append, never
//! acknowledged; or the file's earlier contents, below) ends its file.
//!
//! Files are `scan-log/<number>.wal2` in the data directory, started anew
//! at `FILE_BYTES`. An fdatasync after an append that grows a file must
//! also commit the file's new size and blocks through the filesystem's
//! journal, where it queues behind every other fsync of the process (the
//! store's flush, the segment bodies); overwriting blocks already written
//! needs no journal commit. Measured on ext4 under a concurrent fsync load:
//! 350 µs per append and fdatasync when the file grows, 220 µs when the
//! blocks exist. So the log writes into files whose blocks exist: `SPARES`
//! files of `FILE_BYTES` zeros are written when strict mode starts
//! (`prepare_spares`), and a file whose scans are all in the store's flushed
//! state (`remove_covered`) becomes a spare again instead of being removed.
//! A reused file still holds its earlier records after the new ones; they
//! fail the CRC, which covers the number the file had then. With no spare
//! left (the store's flush lags behind), a new file is grown by appends.
//!
//! Files of earlier versions are read back the same way, then done with:
//! `<number>.wal` files hold scans as `(ScanEvent, Option<Fingerprint>)`,
//! their user agents parsed on the redirect; `<number>.log` files also
//! have CRCs of the payload alone, and are removed, never reused.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::compact::{fsync_dir, io as io_error};
use super::{StoreError, StoreResult};
use crate::domain::ScanEvent;
use crate::enrich::fingerprint::Fingerprint;
use crate::ids::EventId;

/// The directory of the log files, in the data directory.
pub const DIR: &str = "scan-log";
/// Files of zeros (or of covered scans) waiting to be written again.
const SPARE_SUFFIX: &str = ".spare";
/// A new file is started once the current one is this large; spares are
/// this large.
const FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Spare files kept ready: the current file and two spares cover the time
/// until the store's periodic flush lets a file go, at tens of thousands of
/// scans per second (about 250 bytes each).
const SPARES: usize = 2;
const HEADER: usize = 8;

/// A scan as logged: the event, the device still to resolve and the user
/// agent still to parse, if any.
pub type LoggedScan = (ScanEvent, Option<Fingerprint>, Option<Box<str>>);

/// The kinds of log file, by the version that wrote them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `.wal2`: what this version writes.
    Current,
    /// `.wal`: scans without an agent to parse (parsed on the redirect).
    Parsed,
    /// `.log`: as `Parsed`, and CRCs of the payload alone.
    Legacy,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Current, Kind::Parsed, Kind::Legacy];

    fn suffix(self) -> &'static str {
        match self {
            Kind::Current => ".wal2",
            Kind::Parsed => ".wal",
            Kind::Legacy => ".log",
        }
    }

    fn checksum(self, number: u64, payload: &[u8]) -> u32 {
        match self {
            Kind::Legacy => crc32fast::hash(payload),
            Kind::Current | Kind::Parsed => checksum(number, payload),
        }
    }
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Appends one scan to `payload` (a record's payload under construction).
pub fn encode_scan(
    payload: &mut Vec<u8>,
    event: &ScanEvent,
    device: &Option<Fingerprint>,
    agent: &Option<Box<str>>,
) -> StoreResult<()> {
    bincode::serde::encode_into_std_write((event, device, agent), payload, config())
        .map(|_| ())
        .map_err(|e| StoreError::Codec(e.to_string()))
}

fn decode_payload(mut payload: &[u8], kind: Kind) -> StoreResult<Vec<LoggedScan>> {
    fn next<T: serde::de::DeserializeOwned>(payload: &mut &[u8]) -> StoreResult<T> {
        let (scan, used): (T, usize) = bincode::serde::decode_from_slice(payload, config())
            .map_err(|e| StoreError::Codec(e.to_string()))?;
        *payload = &payload[used..];
        Ok(scan)
    }
    let mut scans = Vec::new();
    while !payload.is_empty() {
        scans.push(match kind {
            Kind::Current => next(&mut payload)?,
            Kind::Parsed | Kind::Legacy => {
                let (event, device) = next(&mut payload)?;
                (event, device, None)
            }
        });
    }
    Ok(scans)
}

/// The CRC of a record of file `number`.
fn checksum(number: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&number.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// A log file before the current one.
#[derive(Debug)]
struct Closed {
    number: u64,
    /// Its newest scan.
    last: Option<EventId>,
    /// A `Legacy` file is removed, never a spare.
    kind: Kind,
}

pub struct ScanLog {
    dir: PathBuf,
    /// The file written to, taken from the spares or created by the first
    /// append to `number`.
    file: Option<File>,
    number: u64,
    /// Bytes of records written to the current file.
    len: u64,
    /// The newest scan in the current file.
    last: Option<EventId>,
    /// Earlier files, oldest first.
    closed: VecDeque<Closed>,
    /// Spare files, ready to be written again.
    spares: Vec<PathBuf>,
    /// The number for the next spare's name.
    next_spare: u64,
    header: [u8; HEADER],
}

impl ScanLog {
    /// Opens the log under the data directory `data`: answers it (its next
    /// append starts a new file) and every scan the existing files hold, in
    /// order.
    /// The existing files stay until `remove_covered` finds them in the
    /// flushed store.
    pub fn open(data: &Path) -> StoreResult<(ScanLog, Vec<LoggedScan>)> {
        let dir = data.join(DIR);
        std::fs::create_dir_all(&dir).map_err(io_error)?;
        let mut files: Vec<(u64, Kind)> = Vec::new();
        let mut spares = Vec::new();
        let mut next_spare = 1;
        for entry in std::fs::read_dir(&dir).map_err(io_error)? {
            let path = entry.map_err(io_error)?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let number = |suffix| name.strip_suffix(suffix)?.parse::<u64>().ok();
            if let Some((n, kind)) = Kind::ALL
                .iter()
                .find_map(|kind| Some((number(kind.suffix())?, *kind)))
            {
                files.push((n, kind));
            } else if let Some(n) = number(SPARE_SUFFIX) {
                next_spare = next_spare.max(n + 1);
                // One cut short by a crash while it was written is no use.
                if file_len(&path)? >= FILE_BYTES {
                    spares.push(path);
                } else {
                    remove(&path)?;
                }
            }
        }
        files.sort_unstable_by_key(|(number, _)| *number);
        let mut scans = Vec::new();
        let mut closed = VecDeque::new();
        for &(number, kind) in &files {
            let path = dir.join(file_name(number, kind));
            let bytes = std::fs::read(&path).map_err(io_error)?;
            let read = read_records(&bytes, number, kind);
            closed.push_back(Closed {
                number,
                last: read.iter().map(|(e, _, _)| e.id).max(),
                kind,
            });
            scans.extend(read);
        }
        let number = files.last().map_or(1, |(n, _)| n + 1);
        let log = ScanLog {
            file: None,
            dir,
            number,
            len: 0,
            last: None,
            closed,
            spares,
            next_spare,
            header: [0; HEADER],
        };
        Ok((log, scans))
    }

    /// Writes spare files of zeros until `SPARES` are ready (strict mode's
    /// log thread, before its first append): appends then overwrite blocks
    /// that exist.
    pub fn prepare_spares(&mut self) -> StoreResult<()> {
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        let mut made = false;
        while self.spares.len() < SPARES {
            let path = self.new_spare_path();
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .map_err(io_error)?;
            for _ in 0..FILE_BYTES / ZEROS.len() as u64 {
                file.write_all(&ZEROS).map_err(io_error)?;
            }
            file.sync_all().map_err(io_error)?;
            self.spares.push(path);
            made = true;
        }
        if made {
            fsync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Removes the spare files (batched mode writes no scan log).
    pub fn remove_spares(&mut self) -> StoreResult<()> {
        for path in self.spares.drain(..) {
            remove(&path)?;
        }
        Ok(())
    }

    /// The path for the next spare file, not yet used.
    fn new_spare_path(&mut self) -> PathBuf {
        let path = self.dir.join(spare_name(self.next_spare));
        self.next_spare += 1;
        path
    }

    /// The file for `self.number`: a spare renamed, or a new file.
    fn start_file(&mut self) -> StoreResult<File> {
        let path = self.dir.join(file_name(self.number, Kind::Current));
        let file = match self.spares.pop() {
            Some(spare) => {
                std::fs::rename(&spare, &path).map_err(io_error)?;
                OpenOptions::new().write(true).open(&path)
            }
            // Not `create_new`: a file of this number left by a failed start
            // (renamed, then not opened) holds no record of this number.
            None => OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path),
        }
        .map_err(io_error)?;
        // The name must be durable before a record in it is relied on.
        fsync_dir(&self.dir)?;
        Ok(file)
    }

    /// Appends one record (`payload`, built by `encode_scan`; `last`: its
    /// newest scan) and makes it durable.
    pub fn append(&mut self, payload: &[u8], last: Option<EventId>) -> StoreResult<()> {
        self.header[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        self.header[4..].copy_from_slice(&checksum(self.number, payload).to_le_bytes());
        let file = match self.file.take() {
            Some(file) => file,
            None => self.start_file()?,
        };
        let written = file
            .write_all_at(&self.header, self.len)
            .and_then(|()| file.write_all_at(payload, self.len + HEADER as u64))
            .and_then(|()| file.sync_data());
        self.file = Some(file);
        if let Err(e) = written {
            // What reached the file is unknown (and a failed fsync may have
            // dropped dirty pages): carry on in a new file, which the next
            // try writes the whole record to again.
            self.roll();
            return Err(io_error(e));
        }
        self.len += (HEADER + payload.len()) as u64;
        self.last = last.max(self.last);
        Ok(())
    }

    /// Lets go of the files whose scans are all in the store's flushed
    /// state (`durable`: the newest scan it holds), first starting a new
    /// file if the current one is full: each becomes a spare while fewer
    /// than `SPARES` are ready, else it is removed. Answers how many files
    /// it let go.
    pub fn remove_covered(&mut self, durable: Option<EventId>) -> StoreResult<usize> {
        if self.len >= FILE_BYTES {
            self.roll();
        }
        let mut removed = 0;
        while let Some(front) = self.closed.front() {
            if front.last > durable {
                break;
            }
            let path = self.dir.join(file_name(front.number, front.kind));
            let reusable = front.kind != Kind::Legacy;
            if reusable && self.spares.len() < SPARES && file_len(&path)? >= FILE_BYTES {
                let spare = self.new_spare_path();
                // Not fsynced: should the rename not reach the disk, the file
                // is read back at start, its scans all in the store already.
                std::fs::rename(&path, &spare).map_err(io_error)?;
                self.spares.push(spare);
            } else {
                remove(&path)?;
            }
            self.closed.pop_front();
            removed += 1;
        }
        Ok(removed)
    }

    /// Files on disk: the closed ones and the current one, if started.
    #[cfg(test)]
    fn files(&self) -> usize {
        self.closed.len() + usize::from(self.file.is_some())
    }

    /// Closes the current file (its records were fsynced by their appends);
    /// the next append starts a new one.
    fn roll(&mut self) {
        if self.file.take().is_some() {
            self.closed.push_back(Closed {
                number: self.number,
                last: self.last.take(),
                kind: Kind::Current,
            });
        }
        self.number += 1;
        self.len = 0;
    }
}

fn spare_name(n: u64) -> String {
    format!("{n:016}{SPARE_SUFFIX}")
}

fn file_name(n: u64, kind: Kind) -> String {
    format!("{n:016}{}", kind.suffix())
}

/// The length of the file at `path`; 0 when there is none.
fn file_len(path: &Path) -> StoreResult<u64> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io_error(e)),
    }
}

/// Removes the file at `path`, if there is one.
fn remove(path: &Path) -> StoreResult<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(e)),
    }
}

/// The scans of the whole records of file `number`, of `kind`; the first
/// record that does not check ends it.
fn read_records(mut bytes: &[u8], number: u64, kind: Kind) -> Vec<LoggedScan> {
    let mut scans = Vec::new();
    while bytes.len() >= HEADER {
        let len = u32::from_le_bytes(bytes[..4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(bytes[4..8].try_into().unwrap_or_default());
        let Some(payload) = bytes.get(HEADER..HEADER + len) else {
            break;
        };
        if kind.checksum(number, payload) != crc {
            break;
        }
        match decode_payload(payload, kind) {
            Ok(read) => scans.extend(read),
            Err(e) => {
                tracing::error!(file = number, error = %e, "a scan log record does not decode; skipping the rest of its file");
                break;
            }
        }
        bytes = &bytes[HEADER + len..];
    }
    // A `.wal2` or `.wal` file always goes on past its records (a spare's
    // zeros or its earlier records); a `.log` file only after a torn append.
    if kind == Kind::Legacy && !bytes.is_empty() {
        tracing::warn!(
            file = number,
            bytes = bytes.len(),
            "the scan log ends in a torn record (never acknowledged); ignored"
        );
    }
    scans
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{LinkId, WorkspaceId};

    fn scans(n: usize) -> Vec<LoggedScan> {
        let (ws, link) = (WorkspaceId::generate(), LinkId::generate());
        (0..n)
            .map(|i| {
                let mut id = [0u8; 16];
                id[8..].copy_from_slice(&(i as u64 + 1).to_be_bytes());
                let device = (i % 2 == 0).then_some([i as u8; 16]);
                let agent = (i % 3 == 0).then(|| format!("Agent/{i}").into());
                (
                    ScanEvent::sample(EventId::from_bytes(id), ws, link),
                    device,
                    agent,
                )
            })
            .collect()
    }

    /// The payload of one record holding `group`.
    fn payload(group: &[LoggedScan]) -> Vec<u8> {
        let mut payload = Vec::new();
        for (e, d, a) in group {
            encode_scan(&mut payload, e, d, a).unwrap();
        }
        payload
    }

    fn append(log: &mut ScanLog, group: &[LoggedScan]) {
        log.append(&payload(group), group.last().map(|(e, _, _)| e.id))
            .unwrap();
    }

    #[test]
    fn reads_back_every_record_in_order_and_stops_at_a_torn_one() {
        let data = tempfile::tempdir().unwrap();
        let all = scans(7);
        {
            let (mut log, found) = ScanLog::open(data.path()).unwrap();
            assert!(found.is_empty());
            append(&mut log, &all[..3]);
            append(&mut log, &all[3..5]);
            append(&mut log, &all[5..]);
        }
        // A crash in the middle of a fourth append.
        let path = data.path().join(DIR).join(file_name(1, Kind::Current));
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 5]).unwrap();
        drop(f);
        let (log, found) = ScanLog::open(data.path()).unwrap();
        assert_eq!(found, all);
        assert_eq!(
            log.files(),
            1,
            "the old file; a new one at the first append"
        );
        // A flipped byte in the last record: that record is not read.
        let mut bytes = std::fs::read(&path).unwrap();
        let last_payload = bytes.len() - 9 - 4;
        bytes[last_payload] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let (_, found) = ScanLog::open(data.path()).unwrap();
        assert_eq!(found, all[..5]);
    }

    #[test]
    fn removes_a_file_only_once_the_store_holds_its_newest_scan() {
        let data = tempfile::tempdir().unwrap();
        let all = scans(4);
        let (mut log, _) = ScanLog::open(data.path()).unwrap();
        append(&mut log, &all[..2]);
        log.roll();
        append(&mut log, &all[2..]);
        assert_eq!(log.remove_covered(None).unwrap(), 0);
        assert_eq!(log.remove_covered(Some(all[0].0.id)).unwrap(), 0);
        assert_eq!(log.remove_covered(Some(all[1].0.id)).unwrap(), 1);
        assert_eq!(log.files(), 1, "the current file stays");
        let (_, found) = ScanLog::open(data.path()).unwrap();
        assert_eq!(found, all[2..], "only the current file's scans are left");
    }

    fn names(data: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(data.join(DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_reused_file_never_reads_back_the_scans_it_held_before() {
        let data = tempfile::tempdir().unwrap();
        let all = scans(8);
        let (mut log, _) = ScanLog::open(data.path()).unwrap();
        log.prepare_spares().unwrap();
        assert_eq!(names(data.path()).len(), SPARES);
        // File 1, a spare: three records of one scan each.
        for one in all[..3].chunks(1) {
            append(&mut log, one);
        }
        log.roll();
        append(&mut log, &all[3..5]);
        log.roll();
        // File 1's scans are in the store: it becomes a spare again...
        assert_eq!(log.remove_covered(Some(all[2].0.id)).unwrap(), 1);
        // ... and file 3 is written over it: one record as long as its
        // first, so its second and third follow whole, with valid CRCs of
        // file 1.
        append(&mut log, &all[6..7]);
        let encoded = |s: &[LoggedScan]| payload(s).len();
        assert_eq!(encoded(&all[6..7]), encoded(&all[..1]));
        assert_eq!(log.len, (HEADER + encoded(&all[..1])) as u64);
        assert_eq!(
            names(data.path()),
            [file_name(2, Kind::Current), file_name(3, Kind::Current)],
            "the two spares were used, the first one twice"
        );
        let (_, found) = ScanLog::open(data.path()).unwrap();
        assert_eq!(found, [&all[3..5], &all[6..7]].concat());
    }

    #[test]
    fn covered_files_become_spares_and_the_log_stays_bounded() {
        let data = tempfile::tempdir().unwrap();
        let all = scans(40);
        let (mut log, _) = ScanLog::open(data.path()).unwrap();
        log.prepare_spares().unwrap();
        for (i, group) in all.chunks(2).enumerate() {
            append(&mut log, group);
            log.roll();
            // The store's flush lags one file behind.
            let durable = i.checked_sub(1).map(|j| all[j * 2 + 1].0.id);
            log.remove_covered(durable).unwrap();
            let files = names(data.path());
            assert!(files.len() <= SPARES + 2, "{files:?}");
            assert!(
                files
                    .iter()
                    .all(|f| f.ends_with(Kind::Current.suffix()) || f.ends_with(SPARE_SUFFIX)),
                "{files:?}"
            );
        }
        // Every file written was a spare: none was grown by appends.
        for f in names(data.path()) {
            let len = std::fs::metadata(data.path().join(DIR).join(&f))
                .unwrap()
                .len();
            assert_eq!(len, FILE_BYTES, "{f}");
        }
        let (_, found) = ScanLog::open(data.path()).unwrap();
        assert_eq!(found, all[38..], "the last file: the others are covered");
    }

    /// A file as an earlier version wrote it: records of `(event, device)`
    /// pairs, checked as `kind` checks them.
    fn former_file(kind: Kind, number: u64, groups: &[&[LoggedScan]]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for group in groups {
            let mut payload = Vec::new();
            for (e, d, _) in group.iter() {
                bincode::serde::encode_into_std_write((e, d), &mut payload, config()).unwrap();
            }
            bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&kind.checksum(number, &payload).to_le_bytes());
            bytes.extend_from_slice(&payload);
        }
        bytes.resize(FILE_BYTES as usize, 0);
        bytes
    }

    /// `scans` as a file without agents gives them back.
    fn without_agents(scans: &[LoggedScan]) -> Vec<LoggedScan> {
        scans
            .iter()
            .map(|(e, d, _)| (e.clone(), *d, None))
            .collect()
    }

    #[test]
    fn files_of_the_former_formats_are_read_back_then_done_with() {
        let data = tempfile::tempdir().unwrap();
        let all = scans(7);
        std::fs::create_dir_all(data.path().join(DIR)).unwrap();
        // A `.log` file (CRCs of the payload alone), then a `.wal` file
        // (user agents parsed on the redirect).
        let legacy = former_file(Kind::Legacy, 6, &[&all[..2], &all[2..3]]);
        std::fs::write(
            data.path().join(DIR).join(file_name(6, Kind::Legacy)),
            legacy,
        )
        .unwrap();
        let parsed = former_file(Kind::Parsed, 7, &[&all[3..5]]);
        std::fs::write(
            data.path().join(DIR).join(file_name(7, Kind::Parsed)),
            parsed,
        )
        .unwrap();
        let (mut log, found) = ScanLog::open(data.path()).unwrap();
        assert_eq!(found, without_agents(&all[..5]));
        append(&mut log, &all[5..]);
        assert_eq!(log.number, 8, "numbers go on after the former files'");
        assert_eq!(log.remove_covered(Some(all[4].0.id)).unwrap(), 2);
        assert_eq!(
            names(data.path()),
            [spare_name(1), file_name(8, Kind::Current)],
            "the `.log` file removed, the `.wal` file a spare"
        );
        let (_, found) = ScanLog::open(data.path()).unwrap();
        assert_eq!(found, all[5..], "with their agents");
    }

    #[test]
    fn spares_cut_short_are_removed_and_batched_mode_removes_the_rest() {
        let data = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = ScanLog::open(data.path()).unwrap();
            log.prepare_spares().unwrap();
        }
        // A crash while a third spare was written.
        let short = data.path().join(DIR).join(spare_name(9));
        std::fs::write(&short, [0u8; 100]).unwrap();
        let (mut log, found) = ScanLog::open(data.path()).unwrap();
        assert!(found.is_empty());
        assert!(!short.exists());
        assert_eq!(log.spares.len(), SPARES);
        assert_eq!(log.next_spare, 10);
        log.remove_spares().unwrap();
        assert!(names(data.path()).is_empty());
    }
}
