//! Webhook work yields to the redirects when the machine is busy.
//!
//! Building and sending webhook messages runs on background threads at a
//! lower priority, yet on a machine whose cores the redirects keep busy
//! it still takes whatever moments they leave, and each message it sends
//! makes work at normal priority beside it (the kernel's network path,
//! sled's I/O threads, a receiver on the same machine). So the delivery
//! worker also holds itself to a budget: over each `WINDOW_MS`, when the
//! work other than its own kept the machine's cores more than
//! `BUSY_ABOVE` (75%) busy in the window before, the Webhooks and delivery
//! workers' threads may use at most `webhooks.busy_cpu_percent` of the
//! machine's CPU time; past it, the delivery takes no new attempt until
//! the window ends, and a window that spent more owes it to the next
//! ones. Messages wait in the durable outbox meanwhile and go
//! out at full speed once the load falls. At 100 it never holds back.
//!
//! `Pacer::decide` is the rule, given the times read; `CpuPacer` reads
//! them (`/proc/stat` for the machine, the registered threads' CPU clocks
//! for the webhook work, `threads::ThreadClock`). Where `/proc/stat` cannot be read the machine is
//! never busy, so nothing is held.

use std::time::{Duration, Instant};

use super::threads::ThreadClock;

/// The length of one budget window.
pub const WINDOW_MS: u64 = 100;
/// The share of the machine's CPU time that other work must take, in the
/// window before, for the budget to apply.
pub const BUSY_ABOVE: f64 = 0.75;

/// The machine's CPU time since boot, all cores summed, in the kernel's
/// ticks: how much was spent working and how much in all (steal left out:
/// time the hypervisor took is no core's work here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MachineTimes {
    pub busy: u64,
    pub total: u64,
}

impl MachineTimes {
    /// Parses the first line of `/proc/stat` ("cpu  user nice system idle
    /// iowait irq softirq steal ...").
    pub fn parse(stat: &str) -> Option<MachineTimes> {
        let line = stat.lines().next()?;
        let mut fields = line.split_ascii_whitespace();
        if fields.next()? != "cpu" {
            return None;
        }
        let v: Vec<u64> = fields
            .take(7)
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        let [user, nice, system, idle, iowait, irq, softirq] = v[..] else {
            return None;
        };
        let busy = user + nice + system + irq + softirq;
        Some(MachineTimes {
            busy,
            total: busy + idle + iowait,
        })
    }

    fn read() -> Option<MachineTimes> {
        MachineTimes::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }
}

/// The kernel's ticks per second (`USER_HZ`), the unit of `/proc/stat`.
fn ticks_per_second() -> f64 {
    #[cfg(unix)]
    {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if hz > 0 {
            return hz as f64;
        }
    }
    100.0
}

/// The budget rule, apart from how the times are read.
#[derive(Debug)]
pub struct Pacer {
    /// The share of the machine's CPU time the webhook work may take in a
    /// window while the machine is busy; 1.0 or more never holds it.
    share: f64,
    cores: f64,
    window: Duration,
    ticks_per_second: f64,
    /// The current window: when it began, the webhook work's CPU time and
    /// the machine's times then.
    start: Option<(Instant, Duration, Option<MachineTimes>)>,
    busy: bool,
    /// CPU time spent over the budget in the busy windows before.
    owed: Duration,
}

impl Pacer {
    pub fn new(percent: u32, cores: usize, ticks_per_second: f64) -> Pacer {
        Pacer {
            share: f64::from(percent) / 100.0,
            cores: cores.max(1) as f64,
            window: Duration::from_millis(WINDOW_MS),
            ticks_per_second,
            start: None,
            busy: false,
            owed: Duration::ZERO,
        }
    }

    /// Whether the last window found the machine busy.
    pub fn busy(&self) -> bool {
        self.busy
    }

    /// At `now`, with the webhook work's CPU time so far (`spent`) and the
    /// machine's times (`machine`, `None` when unknown): how long new work
    /// must wait, `None` when it may go now. What a busy window spent over
    /// its budget is owed to the windows after (a burst of messages built
    /// at once, attempts that ended after the hold): they hold until it is
    /// paid, so the share holds over time, not only per window.
    pub fn decide(
        &mut self,
        now: Instant,
        spent: Duration,
        machine: impl FnOnce() -> Option<MachineTimes>,
    ) -> Option<Duration> {
        if self.share >= 1.0 {
            return None;
        }
        let budget = self.window.mul_f64(self.share * self.cores);
        let (began, spent_then) = match self.start {
            Some((began, spent_then, machine_then))
                if now.saturating_duration_since(began) >= self.window =>
            {
                // A new window: judge the one that ended.
                let machine_now = machine();
                let used = spent.saturating_sub(spent_then);
                self.busy = match (machine_then, machine_now) {
                    (Some(a), Some(b)) if b.total > a.total => {
                        let own = used.as_secs_f64() * self.ticks_per_second;
                        let others = (b.busy - a.busy.min(b.busy)) as f64 - own;
                        others / (b.total - a.total) as f64 > BUSY_ABOVE
                    }
                    _ => false,
                };
                self.owed = match self.busy {
                    true => (self.owed + used).saturating_sub(budget),
                    false => Duration::ZERO,
                };
                self.start = Some((now, spent, machine_now));
                (now, spent)
            }
            Some((began, spent_then, _)) => (began, spent_then),
            None => {
                self.start = Some((now, spent, machine()));
                (now, spent)
            }
        };
        if !self.busy {
            return None;
        }
        (self.owed + spent.saturating_sub(spent_then) >= budget)
            .then(|| (began + self.window).saturating_duration_since(now))
            .filter(|wait| !wait.is_zero())
    }
}

/// `Pacer` over the clocks of the threads that do webhook work and the
/// machine's `/proc/stat`.
#[derive(Debug)]
pub struct CpuPacer {
    pacer: Pacer,
    clocks: Vec<ThreadClock>,
    /// CPU time of registered threads read last, kept so a thread that ends
    /// does not make the sum go back.
    last: Vec<Duration>,
}

impl CpuPacer {
    pub fn new(percent: u32) -> CpuPacer {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        CpuPacer {
            pacer: Pacer::new(percent, cores, ticks_per_second()),
            clocks: Vec::new(),
            last: Vec::new(),
        }
    }

    /// Counts the calling thread's CPU time as webhook work.
    pub fn register_current_thread(&mut self) {
        if let Some(clock) = ThreadClock::current() {
            self.clocks.push(clock);
            self.last.push(clock.elapsed());
        }
    }

    /// How long the delivery must wait before new attempts (see `Pacer`).
    pub fn hold(&mut self, now: Instant) -> Option<Duration> {
        for (clock, last) in self.clocks.iter().zip(self.last.iter_mut()) {
            *last = (*last).max(clock.elapsed());
        }
        let spent = self.last.iter().sum();
        self.pacer.decide(now, spent, MachineTimes::read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HZ: f64 = 100.0;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Machine times with `busy` of `total` ticks.
    fn machine(busy: u64, total: u64) -> impl FnOnce() -> Option<MachineTimes> {
        move || Some(MachineTimes { busy, total })
    }

    #[test]
    fn proc_stat_is_read_with_steal_left_out() {
        let stat = "cpu  100 20 30 400 5 6 7 50 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(
            MachineTimes::parse(stat),
            Some(MachineTimes {
                busy: 100 + 20 + 30 + 6 + 7,
                total: 100 + 20 + 30 + 6 + 7 + 400 + 5,
            })
        );
        assert_eq!(MachineTimes::parse("intr 1 2 3\n"), None);
        assert_eq!(MachineTimes::parse("cpu 1 2 x 4 5 6 7\n"), None);
        assert_eq!(MachineTimes::parse("cpu 1 2 3\n"), None);
        assert_eq!(MachineTimes::parse(""), None);
    }

    #[test]
    fn a_busy_machine_holds_webhook_work_to_its_share_until_the_window_ends() {
        // 5% of 2 cores: 10 ms of CPU per 100 ms window.
        let mut p = Pacer::new(5, 2, HZ);
        let t0 = Instant::now();
        assert_eq!(p.decide(t0, ms(0), machine(0, 0)), None);
        // The first window: 20 ticks on 2 cores, 19 of them busy, 1 of
        // those the webhook work's own (10 ms): others 18 of 20 = 90%.
        assert_eq!(p.decide(t0 + ms(100), ms(10), machine(19, 20)), None);
        assert!(p.busy());
        // Within the budget: go; at it, wait for the window's end.
        assert_eq!(p.decide(t0 + ms(120), ms(19), machine(0, 0)), None);
        assert_eq!(p.decide(t0 + ms(130), ms(20), machine(0, 0)), Some(ms(70)));
        // The next window starts a new budget while the machine stays busy.
        assert_eq!(p.decide(t0 + ms(200), ms(20), machine(37, 40)), None);
        assert!(p.busy());
        assert_eq!(p.decide(t0 + ms(250), ms(31), machine(0, 0)), Some(ms(50)));
    }

    #[test]
    fn what_a_busy_window_spent_over_its_budget_holds_the_windows_after() {
        let mut p = Pacer::new(5, 2, HZ);
        let t0 = Instant::now();
        p.decide(t0, ms(0), machine(0, 0));
        // 35 ms in a busy window (others 16.5 of 20 ticks): 25 ms owed.
        assert_eq!(
            p.decide(t0 + ms(100), ms(35), machine(20, 20)),
            Some(ms(100))
        );
        // Held for the whole of the next two windows while it is paid.
        assert_eq!(
            p.decide(t0 + ms(200), ms(35), machine(40, 40)),
            Some(ms(100))
        );
        assert_eq!(p.decide(t0 + ms(300), ms(35), machine(60, 60)), None);
        // 5 ms left of this window's budget.
        assert_eq!(p.decide(t0 + ms(340), ms(39), machine(0, 0)), None);
        assert_eq!(p.decide(t0 + ms(350), ms(40), machine(0, 0)), Some(ms(50)));
        // A window that is not busy forgives what is owed.
        p.decide(t0 + ms(400), ms(60), machine(61, 80));
        assert!(!p.busy());
        assert_eq!(p.decide(t0 + ms(450), ms(200), machine(0, 0)), None);
    }

    #[test]
    fn the_webhook_works_own_cpu_does_not_make_the_machine_busy() {
        let mut p = Pacer::new(5, 2, HZ);
        let t0 = Instant::now();
        p.decide(t0, ms(0), machine(0, 0));
        // 19 of 20 ticks busy, but 150 ms of them (15 ticks) the webhook
        // work's own: the rest of the server 4 of 20, not busy.
        assert_eq!(p.decide(t0 + ms(100), ms(150), machine(19, 20)), None);
        assert!(!p.busy());
        assert_eq!(p.decide(t0 + ms(150), ms(400), machine(0, 0)), None);
    }

    #[test]
    fn a_machine_that_is_not_busy_or_unknown_holds_nothing() {
        for times in [Some((10, 20)), None] {
            let mut p = Pacer::new(5, 2, HZ);
            let t0 = Instant::now();
            p.decide(t0, ms(0), || None);
            let m = move || times.map(|(busy, total)| MachineTimes { busy, total });
            assert_eq!(p.decide(t0 + ms(100), ms(0), m), None);
            assert!(!p.busy());
            assert_eq!(p.decide(t0 + ms(150), ms(90), || None), None);
        }
    }

    #[test]
    fn at_one_hundred_percent_nothing_is_ever_held() {
        let mut p = Pacer::new(100, 2, HZ);
        let t0 = Instant::now();
        p.decide(t0, ms(0), machine(0, 0));
        assert_eq!(p.decide(t0 + ms(100), ms(0), machine(20, 20)), None);
        assert_eq!(p.decide(t0 + ms(150), ms(900), machine(0, 0)), None);
    }
}
