//! The allocator the server runs on: mimalloc, set as the global allocator
//! by the `scanhop` binary (`src/main.rs`) and by the benches, which run the
//! server in their own process.
//!
//! Measured against glibc's malloc under the load bench (full tracking, 64
//! connections, wrk, interleaved): 7 to 10% more redirects a second, and a
//! delivered webhook message 92 to 97 µs of CPU against 108 to 120; see
//! docs/PERFORMANCE.md, "The allocator".
//!
//! Two settings keep its resident memory near glibc's under a write load
//! (the analytics bench's `rss` scenario: 237 to 269 MB after the load
//! against 219 to 242 with glibc, and 374 to 400 with mimalloc's defaults):
//!
//! - It is built without transparent huge pages (the `no_thp` feature):
//!   it asks for them for its arenas, where every first touch then took
//!   2 MiB (116 to 126 MB once the Counters caught up, against 45 to 50).
//! - `configure` makes it give freed pages back to the OS at once instead
//!   of a second later (mimalloc 3's default purge delay).

use std::os::raw::c_int;

/// The global allocator.
pub type Allocator = mimalloc::MiMalloc;

/// mimalloc's option number of the purge delay (`mi_option_e` in its
/// `mimalloc.h`, version 3; the test below checks it by its default).
const PURGE_DELAY: c_int = 15;

/// Sets mimalloc's purge delay to 0 (see the module's doc). Called first
/// thing in `main`, before the server's threads start. (Options read when
/// mimalloc starts, such as committing arenas eagerly, cannot be set here:
/// it starts before `main`.)
pub fn configure() {
    // SAFETY: setting an option is a store to mimalloc's option table; any
    // option number below its last is valid.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, 0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_number_is_the_purge_delay() {
        // Nothing in the tests calls `configure`: this reads the default,
        // 1000 ms in mimalloc 3 (no other option defaults to it).
        // SAFETY: reading an option initializes it from its default.
        let delay = unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
        assert_eq!(delay, 1000);
    }
}
