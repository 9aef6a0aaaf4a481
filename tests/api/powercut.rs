//! `PowerCutFs`: a filesystem that can lose power, for crash tests.
//!
//! A `kill -9` alone cannot show a missing fsync: the kernel's page cache
//! outlives the process, so the restarted server reads back everything that
//! was written. `PowerCutFs` mounts a FUSE passthrough (`powercut/fs.rs`) of a
//! temp directory, the "disk", at another temp directory. Writes through the
//! mount are visible at once but reach the disk only when their file is
//! fsynced; `power_cut_and_remount` drops every unsynced write, unmounts (so
//! the kernel's page cache of the mount goes too) and mounts the disk again,
//! which is what a server restarted after the machine lost power would see.
//!
//! Mounting needs /dev/fuse and root: fuser's pure-Rust mount calls mount(2)
//! itself (no libfuse, no fusermount). Where that fails, `mount_or_skip`
//! fails the test when `CI` is set and otherwise skips it, saying so.

mod fs;
mod overlay;
mod state;

use std::ffi::CString;
use std::fmt;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use fuser::{BackgroundSession, MountOption};
use tempfile::TempDir;

use fs::PowerCutFilesystem;
pub use state::Lost;
use state::State;

/// Why FUSE cannot be mounted here.
#[derive(Debug)]
pub struct Unavailable(pub String);

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub struct PowerCutFs {
    // Unmounted in `drop` before these temp directories are removed.
    mountpoint: TempDir,
    disk: TempDir,
    session: Option<BackgroundSession>,
    state: Arc<Mutex<State>>,
}

impl PowerCutFs {
    /// Mounts a fresh, empty disk at a temp directory (`path()`).
    pub fn mount() -> Result<PowerCutFs, Unavailable> {
        if !Path::new("/dev/fuse").exists() {
            return Err(Unavailable("there is no /dev/fuse".into()));
        }
        let tmp = |what| tempfile::tempdir().map_err(|e| Unavailable(format!("{what}: {e}")));
        let disk = tmp("temp dir for the disk")?;
        let mut fs = PowerCutFs {
            mountpoint: tmp("temp dir for the mount point")?,
            state: Arc::new(Mutex::new(State::new(disk.path()))),
            disk,
            session: None,
        };
        fs.start().map_err(|e| {
            Unavailable(format!(
                "mounting FUSE at {}: {e} (this needs root and /dev/fuse: \
                 the mount is done with mount(2), without fusermount)",
                fs.path().display()
            ))
        })?;
        Ok(fs)
    }

    /// `mount()` for a test: where FUSE is unavailable it fails the test if
    /// `CI` is set, else skips it with a message on stderr (`None`).
    pub fn mount_or_skip(test: &str) -> Option<PowerCutFs> {
        match PowerCutFs::mount() {
            Ok(fs) => Some(fs),
            Err(why) => {
                let msg = format!("{test}: cannot mount the power-cut filesystem: {why}");
                assert!(
                    std::env::var_os("CI").is_none(),
                    "{msg}; CI is set, so this test must run"
                );
                // io::stderr() directly: the harness swallows eprintln! of a
                // passing test, and a skip must be seen.
                let _ = writeln!(std::io::stderr(), "SKIPPED {msg}");
                None
            }
        }
    }

    /// The mount point: put the data directory under test below it.
    pub fn path(&self) -> &Path {
        self.mountpoint.path()
    }

    /// Persists every write so far, as sync(2) would, or as the kernel's
    /// writeback does for data older than half a minute: for setup that is
    /// long on disk by the time the power fails.
    pub fn sync(&self) {
        self.state().sync().expect("sync the power-cut filesystem");
    }

    /// fsync/fdatasync requests the current mount has served.
    pub fn fsyncs(&self) -> u64 {
        self.state().fsyncs()
    }

    /// The machine loses power and reboots: every write not fsynced is gone,
    /// the kernel's cache of the mount with it, and the disk is mounted again
    /// at `path()`. Stop the processes using the mount first (kill -9 them).
    pub fn power_cut_and_remount(&mut self) -> Lost {
        let lost = self.state().power_cut();
        self.unmount();
        self.state = Arc::new(Mutex::new(State::new(self.disk.path())));
        self.start()
            .expect("mount the disk again after the power cut");
        lost
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn start(&mut self) -> std::io::Result<()> {
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            MountOption::FSName("scanhop-powercut".into()),
            MountOption::Subtype("powercut".into()),
        ];
        let fs = PowerCutFilesystem {
            state: self.state.clone(),
        };
        self.session = Some(fuser::spawn_mount(fs, self.mountpoint.path(), &config)?);
        Ok(())
    }

    fn unmount(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        if let Err(e) = session.umount_and_join() {
            // Busy: a process still has a file open. Detach the mount so the
            // next one is fresh; the old one answers EIO (the power is off).
            let _ = writeln!(
                std::io::stderr(),
                "unmounting {}: {e}; detaching it",
                self.path().display()
            );
            let path = CString::new(self.path().as_os_str().as_bytes()).expect("no NUL in a path");
            // SAFETY: umount2(2) with a valid NUL-terminated path.
            unsafe {
                libc::umount2(path.as_ptr(), libc::MNT_DETACH);
            }
        }
    }
}

impl Drop for PowerCutFs {
    fn drop(&mut self) {
        self.unmount();
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::CString;
    use std::fs::{self, File, OpenOptions};
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    use std::time::{Duration, Instant};

    use super::PowerCutFs;

    fn flock(f: &File) -> bool {
        // SAFETY: flock(2) on an open descriptor.
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
    }

    #[test]
    fn a_power_cut_keeps_what_was_fsynced_and_loses_the_rest() {
        let Some(mut disk) = PowerCutFs::mount_or_skip("powercut::tests::a_power_cut_keeps") else {
            return;
        };
        let (kept, lost, moved) = (
            disk.path().join("kept"),
            disk.path().join("lost"),
            disk.path().join("moved"),
        );
        let mut f = File::create(&kept).unwrap();
        f.write_all(b"synced").unwrap();
        f.sync_data().unwrap();
        f.write_all(b" and not").unwrap();
        drop(f); // close is not a sync
        fs::write(&lost, b"never synced").unwrap();
        fs::write(&moved, b"x").unwrap();
        fs::rename(&moved, disk.path().join("renamed")).unwrap();
        assert_eq!(fs::read(&kept).unwrap(), b"synced and not");

        let cut = disk.power_cut_and_remount();
        assert_eq!((cut.files, cut.bytes), (3, 8 + 12 + 1));
        assert_eq!(fs::read(&kept).unwrap(), b"synced");
        // Metadata went straight to the disk: the files exist, empty.
        assert_eq!(fs::read(&lost).unwrap(), b"");
        assert_eq!(fs::read(disk.path().join("renamed")).unwrap(), b"");
        assert!(!moved.exists());
    }

    #[test]
    fn truncation_and_sync_keep_size_and_data_consistent() {
        let Some(mut disk) = PowerCutFs::mount_or_skip("powercut::tests::truncation") else {
            return;
        };
        let path = disk.path().join("f");
        fs::write(&path, b"0123456789").unwrap();
        disk.sync();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(4).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"zz", 6).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"0123\0\0zz");
        drop(f);
        disk.power_cut_and_remount();
        assert_eq!(fs::read(&path).unwrap(), b"0123");
    }

    #[test]
    fn flock_works_on_the_mount_and_a_killed_holder_releases_it() {
        let Some(disk) = PowerCutFs::mount_or_skip("powercut::tests::flock") else {
            return;
        };
        let path = disk.path().join("db");
        File::create(&path).unwrap();
        let c_path = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: between fork and its death the child makes only
        // async-signal-safe calls (open, flock, pause).
        let child = unsafe { libc::fork() };
        if child == 0 {
            unsafe {
                libc::flock(libc::open(c_path.as_ptr(), libc::O_RDONLY), libc::LOCK_EX);
                loop {
                    libc::pause();
                }
            }
        }
        let mine = File::open(&path).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while flock(&mine) {
            // SAFETY: flock(2) on an open descriptor.
            unsafe { libc::flock(mine.as_raw_fd(), libc::LOCK_UN) };
            assert!(Instant::now() < deadline, "the child never took the lock");
            std::thread::sleep(Duration::from_millis(10));
        }
        // SAFETY: kill(2) and waitpid(2) on our own child.
        unsafe {
            libc::kill(child, libc::SIGKILL);
            libc::waitpid(child, std::ptr::null_mut(), 0);
        }
        assert!(flock(&mine), "the killed process's lock is gone");
    }
}
