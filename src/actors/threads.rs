//! Worker threads with names (`top -H`, `perf report --sort comm` and
//! `/proc/<pid>/task/*/comm` show which worker spends the CPU), and the CPU
//! time of the calling thread, for the Recorder's cost per committed event.

use std::time::Duration;

use actix::prelude::*;

/// A new arbiter (thread) named `name` (Linux keeps the first 15 bytes).
pub fn named_arbiter(name: &'static str) -> Arbiter {
    let arbiter = Arbiter::new();
    arbiter.spawn_fn(move || name_current_thread(name));
    arbiter
}

/// How much a background worker's thread yields to the redirect's threads
/// when the CPU is short: its `nice` value (0 to 19).
pub const BACKGROUND_NICE: i32 = 10;

/// A named arbiter for work behind the redirect (consumers, delivery,
/// timers): its thread runs at `nice` `BACKGROUND_NICE`, so when the cores
/// are busy the scheduler serves the HTTP workers and the Recorder first and
/// this work catches up from its stored position when there is room.
pub fn background_arbiter(name: &'static str) -> Arbiter {
    let arbiter = named_arbiter(name);
    arbiter.spawn_fn(|| lower_current_thread_priority(BACKGROUND_NICE));
    arbiter
}

fn lower_current_thread_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions; setpriority with PRIO_PROCESS
        // and a thread ID changes only that thread's nice value (Linux).
        let rc = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, nice)
        };
        if rc != 0 {
            tracing::debug!("cannot lower a background thread's priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

fn name_current_thread(name: &str) {
    #[cfg(target_os = "linux")]
    {
        let mut bytes: Vec<u8> = name.bytes().take(15).filter(|b| *b != 0).collect();
        bytes.push(0);
        // SAFETY: `bytes` is NUL-terminated and outlives the call; PR_SET_NAME
        // copies at most 16 bytes from it and only renames the calling thread.
        unsafe {
            libc::prctl(libc::PR_SET_NAME, bytes.as_ptr() as libc::c_ulong, 0, 0, 0);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = name;
}

/// CPU time the calling thread has used so far (zero where not supported).
pub fn thread_cpu_time() -> Duration {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec for the call.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        if rc == 0 {
            return Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
        }
    }
    Duration::ZERO
}

/// A thread's CPU clock, readable from any thread of the process.
#[derive(Debug, Clone, Copy)]
pub struct ThreadClock(#[cfg_attr(not(target_os = "linux"), allow(dead_code))] libc::clockid_t);

impl ThreadClock {
    /// The calling thread's clock; `None` where there is none.
    pub fn current() -> Option<ThreadClock> {
        #[cfg(target_os = "linux")]
        {
            let mut id: libc::clockid_t = 0;
            // SAFETY: pthread_self is always valid for the calling thread,
            // and `id` is a valid place for the answer.
            let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut id) };
            if rc == 0 {
                return Some(ThreadClock(id));
            }
        }
        None
    }

    /// The CPU time the thread has used; zero once it has ended.
    pub fn elapsed(&self) -> Duration {
        #[cfg(target_os = "linux")]
        {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `ts` is a valid, writable timespec; a clock of a thread
            // that has ended answers an error, not undefined behaviour.
            if unsafe { libc::clock_gettime(self.0, &mut ts) } == 0 {
                return Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
            }
        }
        Duration::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_background_thread_is_named_and_runs_at_a_lower_priority() {
        let (name, nice) = std::thread::spawn(|| {
            name_current_thread("bg-test");
            lower_current_thread_priority(BACKGROUND_NICE);
            let name = std::fs::read_to_string("/proc/thread-self/comm").unwrap_or_default();
            // SAFETY: reads the calling thread's nice value; no preconditions.
            let nice = unsafe {
                libc::getpriority(
                    libc::PRIO_PROCESS,
                    libc::syscall(libc::SYS_gettid) as libc::id_t,
                )
            };
            (name, nice)
        })
        .join()
        .unwrap();
        assert_eq!(name.trim(), "bg-test");
        // At least that low (a process started under `nice` may be lower still).
        assert!(nice >= BACKGROUND_NICE, "nice {nice}");
    }

    #[test]
    fn thread_cpu_time_grows_with_work() {
        let before = thread_cpu_time();
        spin();
        assert!(thread_cpu_time() > before);
    }

    /// Work for the CPU (some milliseconds of it).
    fn spin() {
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(std::hint::black_box(i));
        }
        std::hint::black_box(x);
    }

    #[test]
    fn a_threads_clock_is_read_from_another_thread() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::spawn(move || {
            let clock = ThreadClock::current();
            spin();
            tx.send(clock).unwrap();
            done_rx.recv().unwrap();
        });
        let clock = rx.recv().unwrap();
        if cfg!(target_os = "linux") {
            assert!(clock.unwrap().elapsed() > Duration::ZERO);
        }
        done_tx.send(()).unwrap();
        worker.join().unwrap();
    }
}
