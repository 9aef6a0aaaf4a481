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
//! the group's scans, each `(ScanEvent, Option<Fingerprint>)` in bincode, as
//! the Recorder took them from its queue (the device of a scan whose visitor
//! the redirect did not know is resolved when the scan is committed).
//!
//! At start, before the Recorder takes scans, every record of every file is
//! read back (`open`); the scans newer than the newest one in the store are
//! committed again, the store is flushed, and the files are removed. A torn
//! record (a crash during an append: never acknowledged) ends its file.
//!
//! Files are `scan-log/<number>.log` in the data directory, started anew
//! at `FILE_BYTES`. A file is removed once the store's flushed state holds
//! every scan in it (`remove_covered`).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::compact::{fsync_dir, io as io_error};
use super::{StoreError, StoreResult};
use crate::domain::ScanEvent;
use crate::enrich::fingerprint::Fingerprint;
use crate::ids::EventId;

/// The directory of the log files, in the data directory.
pub const DIR: &str = "scan-log";
const SUFFIX: &str = ".log";
/// A new file is started once the current one is this large.
const FILE_BYTES: u64 = 64 * 1024 * 1024;
const HEADER: usize = 8;

/// A scan as logged: the event and the device still to resolve, if any.
pub type LoggedScan = (ScanEvent, Option<Fingerprint>);

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Appends one scan to `payload` (a record's payload under construction).
pub fn encode_scan(
    payload: &mut Vec<u8>,
    event: &ScanEvent,
    device: &Option<Fingerprint>,
) -> StoreResult<()> {
    bincode::serde::encode_into_std_write((event, device), payload, config())
        .map(|_| ())
        .map_err(|e| StoreError::Codec(e.to_string()))
}

fn decode_payload(mut payload: &[u8]) -> StoreResult<Vec<LoggedScan>> {
    let mut scans = Vec::new();
    while !payload.is_empty() {
        let (scan, used): (LoggedScan, usize) =
            bincode::serde::decode_from_slice(payload, config())
                .map_err(|e| StoreError::Codec(e.to_string()))?;
        scans.push(scan);
        payload = &payload[used..];
    }
    Ok(scans)
}

pub struct ScanLog {
    dir: PathBuf,
    /// The file appended to, created by the first append to `number`.
    file: Option<File>,
    number: u64,
    len: u64,
    /// The newest scan in the current file.
    last: Option<EventId>,
    /// Earlier files, oldest first, with the newest scan in each.
    closed: VecDeque<(u64, Option<EventId>)>,
    header: Vec<u8>,
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
        let mut numbers: Vec<u64> = std::fs::read_dir(&dir)
            .map_err(io_error)?
            .filter_map(|entry| {
                let name = entry.ok()?.file_name();
                name.to_str()?.strip_suffix(SUFFIX)?.parse().ok()
            })
            .collect();
        numbers.sort_unstable();
        let mut scans = Vec::new();
        let mut closed = VecDeque::new();
        for &n in &numbers {
            let bytes = std::fs::read(dir.join(file_name(n))).map_err(io_error)?;
            let read = read_records(&bytes, n);
            closed.push_back((n, read.iter().map(|(e, _)| e.id).max()));
            scans.extend(read);
        }
        let number = numbers.last().map_or(1, |n| n + 1);
        let log = ScanLog {
            file: None,
            dir,
            number,
            len: 0,
            last: None,
            closed,
            header: Vec::with_capacity(HEADER),
        };
        Ok((log, scans))
    }

    /// Appends one record (`payload`, built by `encode_scan`; `last`: its
    /// newest scan) and makes it durable.
    pub fn append(&mut self, payload: &[u8], last: Option<EventId>) -> StoreResult<()> {
        self.header.clear();
        self.header
            .extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.header
            .extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        let file = match &mut self.file {
            Some(file) => file,
            None => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.join(file_name(self.number)))
                    .map_err(io_error)?;
                // The name must be durable before a record in it is relied on.
                fsync_dir(&self.dir)?;
                self.file.insert(file)
            }
        };
        let written = (|| {
            file.write_all(&self.header)?;
            file.write_all(payload)?;
            file.sync_data()
        })();
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

    /// Removes the files whose scans are all in the store's flushed state
    /// (`durable`: the newest scan it holds), first starting a new file if
    /// the current one is full. Answers how many it removed.
    pub fn remove_covered(&mut self, durable: Option<EventId>) -> StoreResult<usize> {
        if self.len >= FILE_BYTES {
            self.roll();
        }
        let mut removed = 0;
        while let Some(&(n, last)) = self.closed.front() {
            if last > durable {
                break;
            }
            match std::fs::remove_file(self.dir.join(file_name(n))) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(e)),
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
            self.closed.push_back((self.number, self.last.take()));
        }
        self.number += 1;
        self.len = 0;
    }
}

fn file_name(n: u64) -> String {
    format!("{n:016}{SUFFIX}")
}

/// The scans of a file's whole records; a torn or corrupt record ends it.
fn read_records(mut bytes: &[u8], file: u64) -> Vec<LoggedScan> {
    let mut scans = Vec::new();
    while bytes.len() >= HEADER {
        let len = u32::from_le_bytes(bytes[..4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(bytes[4..8].try_into().unwrap_or_default());
        let Some(payload) = bytes.get(HEADER..HEADER + len) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        match decode_payload(payload) {
            Ok(read) => scans.extend(read),
            Err(e) => {
                tracing::error!(file, error = %e, "a scan log record does not decode; skipping the rest of its file");
                break;
            }
        }
        bytes = &bytes[HEADER + len..];
    }
    if !bytes.is_empty() {
        tracing::warn!(
            file,
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
                (ScanEvent::sample(EventId::from_bytes(id), ws, link), device)
            })
            .collect()
    }

    fn append(log: &mut ScanLog, group: &[LoggedScan]) {
        let mut payload = Vec::new();
        for (e, d) in group {
            encode_scan(&mut payload, e, d).unwrap();
        }
        log.append(&payload, group.last().map(|(e, _)| e.id))
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
        let path = data.path().join(DIR).join(file_name(1));
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
}
