//! Process metrics, kept in atomics on the hot path and rendered as
//! Prometheus text at `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Default)]
pub struct Counter(AtomicU64);

/// Refused form submissions, by reason.
#[derive(Default)]
pub struct FormRefusals([Counter; 6]);

impl FormRefusals {
    pub const REASONS: [&'static str; 6] = [
        "invalid",
        "unknown_scan",
        "bad_token",
        "replay",
        "too_large",
        "malformed",
    ];

    pub fn add(&self, reason: &str) {
        if let Some(i) = Self::REASONS.iter().position(|r| *r == reason) {
            self.0[i].inc();
        }
    }

    pub fn get(&self, reason: &str) -> u64 {
        Self::REASONS
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |i| self.0[i].get())
    }
}

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds of latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    5.0,
];

/// A latency histogram with fixed buckets.
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, n) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Every metric the process exports.
#[derive(Default)]
pub struct Metrics {
    pub redirects: Counter,
    /// Form pages shown (scans of links with a form step).
    pub form_views: Counter,
    pub form_completions: Counter,
    pub form_refusals: FormRefusals,
    pub redirect_seconds: Histogram,
    pub orphan_scans: Counter,
    pub scans_recorded: Counter,
    pub scans_dropped_queue_full: Counter,
    pub scans_dropped_unavailable: Counter,
    pub recorder_backpressure_waits: Counter,
    pub recorder_batches: Counter,
    /// CPU time of the Recorder's thread spent committing batches, in nanoseconds.
    pub recorder_cpu_nanos: Counter,
    /// Wall-clock time of the same commits, in nanoseconds: beside the CPU
    /// time, what the Recorder waited for (sled's lock while another
    /// transaction commits, the disk, a core).
    pub recorder_busy_nanos: Counter,
    /// Bytes of the event segments the Recorder wrote (before sled's own framing).
    pub event_bytes: Counter,
    pub recorder_messages: Counter,
    pub recorder_write_failures: Counter,
    pub downstream_full: Counter,
    pub flush_seconds: Histogram,
    /// Strict mode: appends to the scan log with their fsync.
    pub scan_log_sync_seconds: Histogram,
    pub rate_limited: Counter,
    pub bot_scans: Counter,
    pub redirects_rate_limited: Counter,
    pub resolver_messages: Counter,
    /// Slug lookups of the redirect answered from the Resolver's cache.
    pub link_cache_hits: Counter,
    /// Slug lookups that read the store.
    pub link_cache_misses: Counter,
    pub webhook_attempts_succeeded: Counter,
    pub webhook_attempts_failed: Counter,
    pub webhook_retries: Counter,
    /// Windows in which the delivery held back, over its CPU budget on a
    /// busy machine (`actors::pacing`).
    pub webhook_paced: Counter,
    pub webhook_failed_exhausted: Counter,
    pub webhook_failed_disabled: Counter,
    pub webhook_failed_auto_disabled: Counter,
    pub webhook_failed_outbox_full: Counter,
    pub webhook_auto_disabled: Counter,
    pub webhook_outbox_depth: Gauge,
    pub webhook_backlog_hooks: Gauge,
    pub purge: PurgeMetrics,
}

/// The Purger's (`actors::purger`): totals, and how the last pass ended.
#[derive(Default)]
pub struct PurgeMetrics {
    pub runs: Counter,
    pub events: Counter,
    pub segments_rewritten: Counter,
    pub segments_removed: Counter,
    /// Workspaces the last pass did not get through (its budget ran out).
    pub unfinished_workspaces: Gauge,
    /// After the last pass, how long past its workspace's retention the
    /// oldest stored event is (0: none), in seconds.
    pub overdue_seconds: Gauge,
}

impl Metrics {
    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self, cached_links: usize) -> String {
        let mut out = String::with_capacity(4096);
        let o = &mut out;
        let counter = Kind::Counter;
        family(
            o,
            "scanhop_redirects_total",
            "Redirects answered for known links.",
            counter,
            &[("", self.redirects.get())],
        );
        self.redirect_seconds.render(
            o,
            "scanhop_redirect_duration_seconds",
            "Server time of redirects to known links.",
        );
        family(
            o,
            "scanhop_orphan_scans_total",
            "Scans of unknown slugs (not stored).",
            counter,
            &[("", self.orphan_scans.get())],
        );
        family(
            o,
            "scanhop_scans_recorded_total",
            "Scan events committed to the store.",
            counter,
            &[("", self.scans_recorded.get())],
        );
        family(
            o,
            "scanhop_redirects_rate_limited_total",
            "Redirects refused by the optional per-client-IP limit.",
            counter,
            &[("", self.redirects_rate_limited.get())],
        );
        family(
            o,
            "scanhop_form_views_total",
            "Form step pages shown (scans of links with a form).",
            counter,
            &[("", self.form_views.get())],
        );
        family(
            o,
            "scanhop_form_completions_total",
            "Form steps completed (answers stored, redirected to the destination).",
            counter,
            &[("", self.form_completions.get())],
        );
        let labels: Vec<String> = FormRefusals::REASONS
            .iter()
            .map(|r| format!("reason=\"{r}\""))
            .collect();
        let refusals: Vec<(&str, u64)> = FormRefusals::REASONS
            .iter()
            .zip(&labels)
            .map(|(r, l)| (l.as_str(), self.form_refusals.get(r)))
            .collect();
        family(
            o,
            "scanhop_form_refusals_total",
            "Form submissions refused, by reason; nothing of them is stored.",
            counter,
            &refusals,
        );
        family(
            o,
            "scanhop_bot_scans_total",
            "Redirects of bots and link previewers (recorded with bot: true).",
            counter,
            &[("", self.bot_scans.get())],
        );
        family(
            o,
            "scanhop_scans_dropped_total",
            "Scans answered but not recorded, by reason.",
            counter,
            &[
                ("reason=\"queue_full\"", self.scans_dropped_queue_full.get()),
                (
                    "reason=\"unavailable\"",
                    self.scans_dropped_unavailable.get(),
                ),
            ],
        );
        family(
            o,
            "scanhop_recorder_backpressure_waits_total",
            "Redirects that waited for room in the Recorder's queue.",
            counter,
            &[("", self.recorder_backpressure_waits.get())],
        );
        family(
            o,
            "scanhop_recorder_batches_total",
            "Scan batches committed by the Recorder.",
            counter,
            &[("", self.recorder_batches.get())],
        );
        let _ = writeln!(
            o,
            "# HELP scanhop_recorder_cpu_seconds_total CPU time of the Recorder's thread spent committing scan batches.\n\
             # TYPE scanhop_recorder_cpu_seconds_total counter\n\
             scanhop_recorder_cpu_seconds_total {}",
            self.recorder_cpu_nanos.get() as f64 / 1e9
        );
        let _ = writeln!(
            o,
            "# HELP scanhop_recorder_busy_seconds_total Wall-clock time of the Recorder's commits of scan batches: beyond its CPU time, waits for sled's lock (held by any other transaction), the disk or a core.\n\
             # TYPE scanhop_recorder_busy_seconds_total counter\n\
             scanhop_recorder_busy_seconds_total {}",
            self.recorder_busy_nanos.get() as f64 / 1e9
        );
        family(
            o,
            "scanhop_event_bytes_total",
            "Bytes of encoded scan events the Recorder wrote (segment values).",
            counter,
            &[("", self.event_bytes.get())],
        );
        family(
            o,
            "scanhop_recorder_write_failures_total",
            "Failed attempts to write or flush a scan batch.",
            counter,
            &[("", self.recorder_write_failures.get())],
        );
        family(
            o,
            "scanhop_actor_messages_total",
            "Messages processed by an actor.",
            counter,
            &[
                (
                    "actor=\"recorder\"",
                    self.recorder_messages.get() + self.recorder_batches.get(),
                ),
                ("actor=\"resolver\"", self.resolver_messages.get()),
            ],
        );
        family(
            o,
            "scanhop_downstream_full_total",
            "Wake-ups of consumers dropped because their mailbox was full (they catch up from the store).",
            counter,
            &[("", self.downstream_full.get())],
        );
        self.flush_seconds.render(
            o,
            "scanhop_store_flush_duration_seconds",
            "Duration of sled flushes (fsync).",
        );
        self.scan_log_sync_seconds.render(
            o,
            "scanhop_scan_log_sync_duration_seconds",
            "Duration of strict mode's scan log appends, each with its fsync.",
        );
        family(
            o,
            "scanhop_rate_limited_requests_total",
            "API requests refused with 429.",
            counter,
            &[("", self.rate_limited.get())],
        );
        family(
            o,
            "scanhop_purge_runs_total",
            "Passes of the Purger (retention).",
            counter,
            &[("", self.purge.runs.get())],
        );
        family(
            o,
            "scanhop_purged_events_total",
            "Scan events deleted by retention, bots included.",
            counter,
            &[("", self.purge.events.get())],
        );
        family(
            o,
            "scanhop_purge_segments_rewritten_total",
            "Event segments the Purger wrote again without their deleted events.",
            counter,
            &[("", self.purge.segments_rewritten.get())],
        );
        family(
            o,
            "scanhop_purge_segments_removed_total",
            "Event segments the Purger removed because all their events were deleted.",
            counter,
            &[("", self.purge.segments_removed.get())],
        );
        family(
            o,
            "scanhop_purge_unfinished_workspaces",
            "Workspaces the last Purger pass did not get through (its segment budget ran out first; the next pass goes on).",
            Kind::Gauge,
            &[("", self.purge.unfinished_workspaces.get())],
        );
        family(
            o,
            "scanhop_purge_overdue_seconds",
            "After the last Purger pass, how long past its workspace's retention the oldest stored event is (0: none; more: held back by the budget or a consumer's position).",
            Kind::Gauge,
            &[("", self.purge.overdue_seconds.get())],
        );
        family(
            o,
            "scanhop_webhook_deliveries_total",
            "Webhook delivery attempts made, by result (2xx succeeded; anything else failed).",
            counter,
            &[
                (
                    "result=\"succeeded\"",
                    self.webhook_attempts_succeeded.get(),
                ),
                ("result=\"failed\"", self.webhook_attempts_failed.get()),
            ],
        );
        family(
            o,
            "scanhop_webhook_retries_total",
            "Webhook attempts scheduled after a failed attempt of the same message.",
            counter,
            &[("", self.webhook_retries.get())],
        );
        family(
            o,
            "scanhop_webhook_delivery_paced_total",
            "Times the webhook delivery held back new attempts until the end of a 100 ms window: the machine was busy and webhook work had used its share of the CPU (webhooks.busy_cpu_percent).",
            counter,
            &[("", self.webhook_paced.get())],
        );
        family(
            o,
            "scanhop_webhook_messages_failed_total",
            "Webhook messages that ended failed, by reason.",
            counter,
            &[
                (
                    "reason=\"attempts_exhausted\"",
                    self.webhook_failed_exhausted.get(),
                ),
                (
                    "reason=\"webhook_disabled\"",
                    self.webhook_failed_disabled.get(),
                ),
                (
                    "reason=\"webhook_auto_disabled\"",
                    self.webhook_failed_auto_disabled.get(),
                ),
                (
                    "reason=\"outbox_full\"",
                    self.webhook_failed_outbox_full.get(),
                ),
            ],
        );
        family(
            o,
            "scanhop_webhooks_auto_disabled_total",
            "Webhooks the server switched to auto_disabled after repeated failures.",
            counter,
            &[("", self.webhook_auto_disabled.get())],
        );
        family(
            o,
            "scanhop_webhook_outbox_depth",
            "Pending webhook messages (waiting for an attempt or in one).",
            Kind::Gauge,
            &[("", self.webhook_outbox_depth.get())],
        );
        family(
            o,
            "scanhop_webhook_backlog_hooks",
            "Webhooks whose scans wait in the event log for their messages to be built (webhooks.build_ahead pending messages reached).",
            Kind::Gauge,
            &[("", self.webhook_backlog_hooks.get())],
        );
        family(
            o,
            "scanhop_links_cached",
            "Links held in the Resolver's bounded slug cache (resolver.cache_entries); the others are read from the store when scanned.",
            Kind::Gauge,
            &[("", cached_links as u64)],
        );
        family(
            o,
            "scanhop_link_cache_lookups_total",
            "Slug lookups (redirects and form submissions) answered from the Resolver's cache (hit) or read from the store (miss); unknown slugs included.",
            counter,
            &[
                ("result=\"hit\"", self.link_cache_hits.get()),
                ("result=\"miss\"", self.link_cache_misses.get()),
            ],
        );
        out
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Counter,
    Gauge,
}

/// One metric family: HELP, TYPE, then a sample per label set ("" for none).
pub(crate) fn family(
    out: &mut String,
    name: &str,
    help: &str,
    kind: Kind,
    samples: &[(&str, u64)],
) {
    let kind = match kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
    };
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.redirect_seconds.observe(Duration::from_micros(30));
        m.redirect_seconds.observe(Duration::from_millis(3));
        let text = m.render(0);
        assert!(
            text.contains("scanhop_redirect_duration_seconds_bucket{le=\"0.00005\"} 1"),
            "{text}"
        );
        assert!(text.contains("scanhop_redirect_duration_seconds_bucket{le=\"0.005\"} 2"));
        assert!(text.contains("scanhop_redirect_duration_seconds_count 2"));
    }
}
