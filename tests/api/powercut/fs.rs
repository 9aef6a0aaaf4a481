//! The FUSE side of `PowerCutFs`: a passthrough to the backing directory (the
//! "disk") that keeps the data written to a file in memory, on its inode,
//! until that file is fsynced. `flush` and `release` persist nothing: close
//! is not a sync.
//!
//! Metadata goes to the disk at once (create, mkdir, unlink, rmdir, rename,
//! chmod, chown, utimes, truncate), as if journaled synchronously; a truncate
//! also cuts the file's dirty bytes, so size and data stay consistent. A model
//! that also lost directory entries not fsynced is not needed for sled: it
//! creates its few files at its first start and then only writes into them
//! (its log grows by pwrite inside `db`), so file data is what is in question.
//!
//! No lock operations: the kernel then keeps flock/fcntl locks on the mount
//! itself, and drops a killed process's locks as for any file.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use super::state::{State, open_backing, persist};

/// Kernel caching of names and attributes: everything goes through this one
/// mount, so the kernel's own updates keep its cache right.
const TTL: Duration = Duration::from_secs(1);

pub struct PowerCutFilesystem {
    pub state: Arc<Mutex<State>>,
}

impl PowerCutFilesystem {
    fn live(&self) -> Result<MutexGuard<'_, State>, Errno> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.cut { Err(Errno::EIO) } else { Ok(st) }
    }

    fn entry(&self, rel: Result<PathBuf, Errno>, reply: ReplyEntry) {
        let found = (|| -> Result<FileAttr, Errno> {
            let mut st = self.live()?;
            let rel = rel?;
            fs::symlink_metadata(st.disk.join(&rel))?;
            let ino = st.ino_of(rel);
            st.attr(ino, None)
        })();
        match found {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }
}

fn done(reply: ReplyEmpty, r: Result<(), Errno>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for PowerCutFilesystem {
    fn lookup(&self, _: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let rel = self.live().and_then(|st| st.child(parent, name));
        self.entry(rel, reply);
    }

    fn getattr(&self, _: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.live().and_then(|st| st.attr(ino.0, fh)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let r = (|| -> Result<FileAttr, Errno> {
            let mut st = self.live()?;
            let path = st.disk.join(st.rel(ino)?);
            if let Some(mode) = mode {
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
            }
            if uid.is_some() || gid.is_some() {
                std::os::unix::fs::chown(&path, uid, gid)?;
            }
            if let Some(len) = size {
                st.writable_file(ino.0, fh)?.set_len(len)?;
                if let Some(node) = st.nodes.get_mut(&ino.0) {
                    node.dirty.truncate(len);
                }
            }
            if atime.is_some() || mtime.is_some() {
                let when = |t: TimeOrNow| match t {
                    TimeOrNow::SpecificTime(t) => t,
                    TimeOrNow::Now => SystemTime::now(),
                };
                let mut times = fs::FileTimes::new();
                if let Some(t) = atime {
                    times = times.set_accessed(when(t));
                }
                if let Some(t) = mtime {
                    times = times.set_modified(when(t));
                }
                File::open(&path)?.set_times(times)?;
            }
            st.attr(ino.0, fh)
        })();
        match r {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let rel = self.live().and_then(|st| {
            let rel = st.child(parent, name)?;
            fs::DirBuilder::new()
                .mode(mode & !umask)
                .create(st.disk.join(&rel))?;
            Ok(rel)
        });
        self.entry(rel, reply);
    }

    fn unlink(&self, _: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        done(reply, self.remove(parent, name, false));
    }

    fn rmdir(&self, _: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        done(reply, self.remove(parent, name, true));
    }

    fn rename(
        &self,
        _: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        done(
            reply,
            self.rename_entry(parent, name, newparent, newname, flags),
        );
    }

    fn open(&self, _: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let r = (|| -> Result<FileHandle, Errno> {
            let mut st = self.live()?;
            let (file, writable) = open_backing(&st.disk.join(st.rel(ino)?), flags)?;
            Ok(st.open_handle(Some(file), writable))
        })();
        // Page caching stays on: the kernel writes through to us (no writeback
        // cache), and unmounting on a power cut drops whatever it cached.
        match r {
            Ok(fh) => reply.opened(fh, FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let r = (|| -> Result<(FileAttr, FileHandle), Errno> {
            let mut st = self.live()?;
            let rel = st.child(parent, name)?;
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .create_new(flags & libc::O_EXCL != 0)
                .mode(mode & !umask)
                .open(st.disk.join(&rel))?;
            let ino = st.ino_of(rel);
            let fh = st.open_handle(Some(file), true);
            Ok((st.attr(ino, Some(fh))?, fh))
        })();
        match r {
            Ok((attr, fh)) => reply.created(&TTL, &attr, Generation(0), fh, FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let r = (|| -> Result<Vec<u8>, Errno> {
            let st = self.live()?;
            let file = st
                .handles
                .get(&fh.0)
                .and_then(|h| h.file.as_ref())
                .ok_or(Errno::EBADF)?;
            let node = st.nodes.get(&ino.0).ok_or(Errno::ENOENT)?;
            let visible = node.dirty.size(file.metadata()?.len());
            let n = u64::from(size).min(visible.saturating_sub(offset)) as usize;
            let mut buf = vec![0; n];
            let mut got = 0;
            while got < n {
                match file.read_at(&mut buf[got..], offset + got as u64) {
                    Ok(0) => break, // past the backing file's end: zeros, or dirty bytes
                    Ok(k) => got += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
            node.dirty.read_into(offset, &mut buf);
            Ok(buf)
        })();
        match r {
            Ok(buf) => reply.data(&buf),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let r = self.live().and_then(|mut st| {
            let node = st.nodes.get_mut(&ino.0).ok_or(Errno::ENOENT)?;
            node.dirty.write(offset, data);
            Ok(data.len() as u32)
        });
        match r {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, _: &Request, _: INodeNo, _: FileHandle, _: LockOwner, reply: ReplyEmpty) {
        // close(2) is not a sync: the dirty data stays in memory.
        done(reply, self.live().map(drop));
    }

    fn release(
        &self,
        _: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // Nor is the last close: dirty data outlives the handle, on the inode.
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.handles.remove(&fh.0);
        reply.ok();
    }

    fn fsync(&self, _: &Request, ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let r = (|| -> Result<(), Errno> {
            let mut st = self.live()?;
            st.fsyncs += 1;
            let file = st.writable_file(ino.0, Some(fh))?;
            let node = st.nodes.get_mut(&ino.0).ok_or(Errno::ENOENT)?;
            Ok(persist(&file, &mut node.dirty)?)
        })();
        done(reply, r);
    }

    fn opendir(&self, _: &Request, _: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.live() {
            Ok(mut st) => reply.opened(st.open_handle(None, false), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = (|| -> Result<Vec<(u64, FileType, OsString)>, Errno> {
            let mut st = self.live()?;
            let rel = st.rel(ino)?;
            let mut entries = vec![
                (ino.0, FileType::Directory, ".".into()),
                (ino.0, FileType::Directory, "..".into()),
            ];
            for e in fs::read_dir(st.disk.join(&rel))? {
                let e = e?;
                let kind = FileType::from_std(e.file_type()?).ok_or(Errno::EIO)?;
                entries.push((st.ino_of(rel.join(e.file_name())), kind, e.file_name()));
            }
            Ok(entries)
        })();
        match r {
            Ok(entries) => {
                for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(*ino), i as u64 + 1, *kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(&self, _: &Request, _: INodeNo, fh: FileHandle, _: OpenFlags, reply: ReplyEmpty) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.handles.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, _: &Request, _: INodeNo, _: FileHandle, _: bool, reply: ReplyEmpty) {
        // Directory changes are on the disk as they happen: nothing to do.
        done(reply, self.live().map(drop));
    }
}

impl PowerCutFilesystem {
    fn remove(&self, parent: INodeNo, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let mut st = self.live()?;
        let rel = st.child(parent, name)?;
        let path = st.disk.join(&rel);
        if dir {
            fs::remove_dir(path)?;
        } else {
            fs::remove_file(path)?;
        }
        st.unlinked(&rel);
        Ok(())
    }

    fn rename_entry(
        &self,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        if !flags.is_empty() {
            return Err(Errno::EINVAL);
        }
        let mut st = self.live()?;
        let (from, to) = (st.child(parent, name)?, st.child(newparent, newname)?);
        fs::rename(st.disk.join(&from), st.disk.join(&to))?;
        st.unlinked(&to);
        st.renamed(&from, &to);
        Ok(())
    }
}
