//! What one mount of `PowerCutFs` knows: the inodes (path on the disk and
//! dirty data of each), the open handles, and whether the power is on.
//! Shared by the FUSE session (`fs.rs`) and `PowerCutFs`, which cuts the
//! power or syncs through it.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileHandle, FileType, INodeNo, OpenAccMode, OpenFlags};

use super::overlay::Overlay;

pub(super) struct Node {
    /// Relative to the disk; `None` once unlinked or replaced.
    pub path: Option<PathBuf>,
    pub dirty: Overlay,
}

pub(super) struct Handle {
    /// The backing file (`None` for directories).
    pub file: Option<File>,
    writable: bool,
}

/// Everything one mount knows; shared with `PowerCutFs` to cut power or sync.
pub struct State {
    pub(super) disk: PathBuf,
    pub(super) nodes: HashMap<u64, Node>,
    inos: HashMap<PathBuf, u64>,
    pub(super) handles: HashMap<u64, Handle>,
    next_ino: u64,
    next_fh: u64,
    /// fsync/fdatasync requests served since the mount.
    pub(super) fsyncs: u64,
    /// The power is off: every request fails until the next mount.
    pub(super) cut: bool,
}

/// What a power cut dropped.
#[derive(Debug, Clone, Copy, Default)]
pub struct Lost {
    pub files: usize,
    pub bytes: u64,
    /// fsyncs the mount served before the cut (0 says nobody synced at all).
    pub fsyncs_before: u64,
}

impl State {
    pub fn new(disk: &Path) -> State {
        let root = Node {
            path: Some(PathBuf::new()),
            dirty: Overlay::default(),
        };
        State {
            disk: disk.to_owned(),
            nodes: HashMap::from([(INodeNo::ROOT.0, root)]),
            inos: HashMap::from([(PathBuf::new(), INodeNo::ROOT.0)]),
            handles: HashMap::new(),
            next_ino: 2,
            next_fh: 1,
            fsyncs: 0,
            cut: false,
        }
    }

    /// Drops every unsynced write and refuses all further requests.
    pub fn power_cut(&mut self) -> Lost {
        self.cut = true;
        let mut lost = Lost {
            fsyncs_before: self.fsyncs,
            ..Lost::default()
        };
        for node in self.nodes.values_mut().filter(|n| !n.dirty.is_empty()) {
            lost.files += 1;
            lost.bytes += node.dirty.len();
            node.dirty.take();
        }
        self.handles.clear();
        lost
    }

    pub fn fsyncs(&self) -> u64 {
        self.fsyncs
    }

    /// Persists every file's dirty data, like sync(2) (or the kernel's
    /// writeback given time). Unlinked files have nowhere to go.
    pub fn sync(&mut self) -> io::Result<()> {
        let disk = self.disk.clone();
        for node in self.nodes.values_mut().filter(|n| !n.dirty.is_empty()) {
            match &node.path {
                Some(p) => {
                    let file = OpenOptions::new().write(true).open(disk.join(p))?;
                    persist(&file, &mut node.dirty)?;
                }
                None => drop(node.dirty.take()),
            }
        }
        Ok(())
    }

    pub(super) fn ino_of(&mut self, rel: PathBuf) -> u64 {
        if let Some(ino) = self.inos.get(&rel) {
            return *ino;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inos.insert(rel.clone(), ino);
        self.nodes.insert(
            ino,
            Node {
                path: Some(rel),
                dirty: Overlay::default(),
            },
        );
        ino
    }

    pub(super) fn rel(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        self.nodes
            .get(&ino.0)
            .and_then(|n| n.path.clone())
            .ok_or(Errno::ENOENT)
    }

    pub(super) fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.rel(parent)?.join(name))
    }

    /// Attributes with the size readers see (backing length + dirty growth).
    pub(super) fn attr(&self, ino: u64, fh: Option<FileHandle>) -> Result<FileAttr, Errno> {
        let node = self.nodes.get(&ino).ok_or(Errno::ENOENT)?;
        let md = match (&node.path, fh.and_then(|h| self.handles.get(&h.0))) {
            (_, Some(Handle { file: Some(f), .. })) => f.metadata(),
            (Some(p), _) => fs::symlink_metadata(self.disk.join(p)),
            (None, _) => return Err(Errno::ENOENT),
        }?;
        let size = node.dirty.size(md.len());
        let time = |secs: i64, nanos: i64| {
            UNIX_EPOCH + Duration::new(secs.max(0) as u64, nanos.clamp(0, 999_999_999) as u32)
        };
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: md.blocks().max(size.div_ceil(512)),
            atime: time(md.atime(), md.atime_nsec()),
            mtime: time(md.mtime(), md.mtime_nsec()),
            ctime: time(md.ctime(), md.ctime_nsec()),
            crtime: UNIX_EPOCH,
            kind: FileType::from_std(md.file_type()).ok_or(Errno::EIO)?,
            perm: (md.mode() & 0o7777) as u16,
            nlink: md.nlink() as u32,
            uid: md.uid(),
            gid: md.gid(),
            rdev: md.rdev() as u32,
            blksize: 4096,
            flags: 0,
        })
    }

    pub(super) fn open_handle(&mut self, file: Option<File>, writable: bool) -> FileHandle {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, Handle { file, writable });
        FileHandle(fh)
    }

    /// A writable backing file for `ino`: the handle's own, or the path's.
    pub(super) fn writable_file(&self, ino: u64, fh: Option<FileHandle>) -> Result<File, Errno> {
        if let Some(Handle {
            file: Some(f),
            writable: true,
            ..
        }) = fh.and_then(|h| self.handles.get(&h.0))
        {
            return Ok(f.try_clone()?);
        }
        let rel = self.rel(INodeNo(ino))?;
        Ok(OpenOptions::new().write(true).open(self.disk.join(rel))?)
    }

    /// `rel` was unlinked or replaced: its inode (and any open handle) stays,
    /// nameless.
    pub(super) fn unlinked(&mut self, rel: &Path) {
        let gone: Vec<PathBuf> = self
            .inos
            .keys()
            .filter(|p| p.starts_with(rel))
            .cloned()
            .collect();
        for p in gone {
            if let Some(ino) = self.inos.remove(&p)
                && let Some(node) = self.nodes.get_mut(&ino)
            {
                node.path = None;
            }
        }
    }

    /// `from` was renamed to `to`: it and everything under it move.
    pub(super) fn renamed(&mut self, from: &Path, to: &Path) {
        let moved: Vec<PathBuf> = self
            .inos
            .keys()
            .filter(|p| p.starts_with(from))
            .cloned()
            .collect();
        for old in moved {
            let Ok(rest) = old.strip_prefix(from) else {
                continue;
            };
            let new = if rest.as_os_str().is_empty() {
                to.to_owned()
            } else {
                to.join(rest)
            };
            if let Some(ino) = self.inos.remove(&old) {
                self.inos.insert(new.clone(), ino);
                if let Some(node) = self.nodes.get_mut(&ino) {
                    node.path = Some(new);
                }
            }
        }
    }
}

/// Moves `dirty` into the backing `file`. That is all a sync needs: the disk
/// is the backing file as the kernel holds it, which a simulated power cut
/// never touches, so a real fsync of it would only slow the tests down.
pub(super) fn persist(file: &File, dirty: &mut Overlay) -> io::Result<()> {
    for (offset, bytes) in dirty.extents() {
        file.write_all_at(bytes, offset)?;
    }
    dirty.take();
    Ok(())
}

/// Opens a backing file read-write if it can (fsync and truncate need it),
/// else with the access the caller asked for.
pub(super) fn open_backing(path: &Path, flags: OpenFlags) -> io::Result<(File, bool)> {
    match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => Ok((f, true)),
        Err(e) if flags.acc_mode() == OpenAccMode::O_RDONLY => {
            File::open(path).map(|f| (f, false)).map_err(|_| e)
        }
        Err(e) => Err(e),
    }
}
