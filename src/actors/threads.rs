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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_cpu_time_grows_with_work() {
        let before = thread_cpu_time();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(std::hint::black_box(i));
        }
        std::hint::black_box(x);
        assert!(thread_cpu_time() > before);
    }
}
