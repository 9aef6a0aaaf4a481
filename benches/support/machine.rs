//! The whole machine's CPU time, from the first line of `/proc/stat`: how
//! much of a run's time the hypervisor gave to other guests (steal), the
//! kernel spent in softirqs (the loopback TCP path, charged to no thread),
//! and the cores sat idle. A ratio of two runs measured one after the other
//! assumes both had the same machine; steal in one of them breaks that.
#![allow(dead_code)] // each bench uses its own part of the support modules

/// Cumulative CPU ticks of all cores, by kind.
#[derive(Clone, Copy, Default)]
pub struct Ticks {
    busy: u64,
    idle: u64,
    softirq: u64,
    steal: u64,
}

pub fn ticks() -> Ticks {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return Ticks::default();
    };
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let at = |i: usize| fields.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    Ticks {
        busy: at(0) + at(1) + at(2) + at(5) + at(6),
        idle: at(3) + at(4),
        softirq: at(6),
        steal: at(7),
    }
}

/// Shares of the machine's time between two readings.
#[derive(Clone, Copy, Default)]
pub struct Shares {
    pub steal: f64,
    pub softirq: f64,
    pub idle: f64,
}

pub fn between(before: &Ticks, after: &Ticks) -> Shares {
    let d = |a: u64, b: u64| b.saturating_sub(a) as f64;
    let busy = d(before.busy, after.busy);
    let idle = d(before.idle, after.idle);
    let steal = d(before.steal, after.steal);
    let all = (busy + idle + steal).max(1.0);
    Shares {
        steal: steal / all,
        softirq: d(before.softirq, after.softirq) / all,
        idle: idle / all,
    }
}
