//! CPU time of this process's threads, grouped by thread name, from
//! `/proc/self/task/*/schedstat` (nanoseconds on the CPU). A snapshot before
//! and after a run tells which worker spent the time.
#![allow(dead_code)] // each bench uses its own part of the support modules

use std::collections::BTreeMap;

/// CPU nanoseconds and allocations per thread ID, with the thread's name.
pub struct Snapshot(BTreeMap<u64, (String, u64, u64)>);

pub fn snapshot() -> Snapshot {
    snapshot_with(|_| 0)
}

/// A snapshot with each thread's allocations so far, as `allocations`
/// answers them for a thread ID (`alloc_count::of_thread`).
pub fn snapshot_with(allocations: impl Fn(u64) -> u64) -> Snapshot {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Snapshot(out);
    };
    for entry in dir.flatten() {
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        let path = entry.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let ns = std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        out.insert(tid, (name.trim().to_owned(), ns, allocations(tid)));
    }
    Snapshot(out)
}

/// The group a thread name belongs to (numbered threads of one kind together).
fn group(name: &str) -> String {
    if name.starts_with("actix-server wo") {
        return "HTTP workers".to_owned();
    }
    if name.starts_with("sled-io") {
        return "sled IO threads".to_owned();
    }
    name.to_owned()
}

/// CPU nanoseconds spent between `before` and `after`, by thread group,
/// largest first.
pub fn spent(before: &Snapshot, after: &Snapshot) -> Vec<(String, u64)> {
    by_group(before, after, |(_, ns, _)| *ns)
}

/// Allocations made between `before` and `after`, by thread group, most first.
pub fn allocated(before: &Snapshot, after: &Snapshot) -> Vec<(String, u64)> {
    by_group(before, after, |(_, _, n)| *n)
}

fn by_group(
    before: &Snapshot,
    after: &Snapshot,
    value: impl Fn(&(String, u64, u64)) -> u64,
) -> Vec<(String, u64)> {
    let mut by_group: BTreeMap<String, u64> = BTreeMap::new();
    for (tid, now) in &after.0 {
        let earlier = before.0.get(tid).map_or(0, &value);
        *by_group.entry(group(&now.0)).or_default() += value(now).saturating_sub(earlier);
    }
    let mut v: Vec<_> = by_group.into_iter().filter(|(_, ns)| *ns > 0).collect();
    v.sort_by_key(|g| std::cmp::Reverse(g.1));
    v
}
