//! A global allocator that counts allocations (`alloc`, `alloc_zeroed` and
//! `realloc` calls) per thread, so a bench can say how many each worker
//! makes per request. Every call goes on to the allocator the `scanhop`
//! binary runs on (`scanhop::memory`). Counters are indexed by thread ID;
//! two threads of the process sharing a slot is possible but unlikely (2^18
//! slots).
#![allow(dead_code)] // each bench uses its own part of the support modules

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use scanhop::memory::Allocator;

const SLOTS: usize = 1 << 18;

static COUNTS: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];

thread_local! {
    static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn slot_of(tid: u64) -> usize {
    tid as usize % SLOTS
}

fn count() {
    let slot = SLOT
        .try_with(|s| {
            if s.get() == usize::MAX {
                // SAFETY: gettid takes no arguments and cannot fail.
                let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u64;
                s.set(slot_of(tid));
            }
            s.get()
        })
        .unwrap_or(0);
    COUNTS[slot].fetch_add(1, Ordering::Relaxed);
}

/// Allocations made so far by thread `tid`.
pub fn of_thread(tid: u64) -> u64 {
    COUNTS[slot_of(tid)].load(Ordering::Relaxed)
}

pub struct Counting;

// SAFETY: every call goes to the server's allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { Allocator {}.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { Allocator {}.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { Allocator {}.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { Allocator {}.dealloc(ptr, layout) }
    }
}
