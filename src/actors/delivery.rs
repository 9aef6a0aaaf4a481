//! The delivery worker: sends the outbox's pending messages to their hooks
//! (stage `Delivery`, on an arbiter of its own). Scheduling is a step
//! function, `DeliveryCore::run_once(now)`, that answers the attempts to
//! make now; the actor runs them concurrently with an HTTP client of its
//! own (`client`), and hands the outcomes of the attempts that ended to
//! `DeliveryCore::complete_all`, which writes each attempt's record, its
//! message's state and its hook's counters, for all of them in one
//! transaction, and schedules the retries. Outcomes are recorded together,
//! `RECORD_EVERY_MS` after the first of them ended; an ended attempt frees
//! its request slot at once, and its message is not taken again until it
//! is recorded (`Outbox::ended`). Tests drive both with the time they
//! choose.
//!
//! - At most `max_in_flight_per_endpoint` requests per hook and
//!   `max_in_flight` in all, so a slow endpoint delays only itself.
//! - A failed attempt is retried: the second attempt at once, then after
//!   `retry_base_ms · 2^(n-3)` (±20% jitter derived from the message, at
//!   most `retry_max_ms`); a `Retry-After` is honoured within [d, 2d].
//! - A message whose round of `max_attempts` attempts all failed counts
//!   toward the hook's `consecutive_failures`; at `auto_disable_after` the
//!   hook becomes `auto_disabled`. Messages of a disabled hook fail with the
//!   reason `webhook_disabled` or `webhook_auto_disabled`; a paused hook's
//!   wait.
//! - Over `outbox_capacity` pending messages, the oldest of the hook with the
//!   most pending ones fail with the reason `outbox_full`
//!   (`WebhookHub::enforce_capacity`). The Webhooks worker does it in the
//!   transaction that writes new messages (`store_within_capacity`), so
//!   under an overload this worker's time still goes to sending; each step
//!   here catches what other writers queued (`recover`, `redeliver`,
//!   `test`).

pub mod client;

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use sha2::{Digest, Sha256};

use super::webhooks::{WakeDelivery, WebhookHub, write_messages};
use super::worker::{Drain, DrainReport, Stage, WorkerHandle, WorkerStatus};
use crate::config::WebhookSettings;
use crate::domain::Timestamp;
use crate::domain::webhook::{
    Delivery, DeliveryStatus, Message, MessageState, Webhook, WebhookStatus,
};
use crate::ids::{DeliveryId, MessageId, WebhookId};
use crate::store::{ConsumerRecord, StoreResult, TxError, WebhookTx};

/// Records removed per hook per pruning step.
const PRUNE_BATCH: usize = 1_000;
/// Milliseconds between pruning steps.
const PRUNE_EVERY_MS: i64 = 60_000;
/// Records of a deleted hook removed per step.
const PURGE_BATCH: usize = 1_000;
/// Attempts' outcomes are recorded together: at most this many milliseconds
/// after the first of them ended, or at once when `RECORD_AT_MOST` wait.
/// Every sled transaction makes sled write out and sync the piece of its log
/// written so far (on its I/O threads, whatever the transaction's size), so
/// a transaction for every few attempts cost more than the attempts' records.
const RECORD_EVERY_MS: u64 = 20;
/// Outcomes waiting that make the worker record them without waiting longer.
const RECORD_AT_MOST: usize = 256;
/// Messages failed per transaction (outbox over capacity, hook disabled):
/// one transaction each made a full outbox stall delivery for a minute.
const FAIL_PER_TX: usize = 128;

/// One attempt to make: everything the request needs.
#[derive(Clone)]
pub struct Job {
    pub hook: WebhookId,
    pub message: MessageId,
    pub delivery: DeliveryId,
    /// Counting across rounds, as in the delivery record.
    pub attempt: u32,
    pub url: String,
    /// The keys that sign (never logged: `Debug` of a job is not used in logs).
    pub keys: Vec<Vec<u8>>,
    pub body: Arc<Vec<u8>>,
}

impl std::fmt::Debug for Job {
    /// Never the keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("hook", &self.hook)
            .field("message", &self.message)
            .field("delivery", &self.delivery)
            .field("attempt", &self.attempt)
            .field("url", &self.url)
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// Why an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    Timeout,
    Connect,
    Dns,
    Tls,
    BlockedIp,
    HttpStatus,
}

impl ErrorClass {
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorClass::Timeout => "timeout",
            ErrorClass::Connect => "connect",
            ErrorClass::Dns => "dns",
            ErrorClass::Tls => "tls",
            ErrorClass::BlockedIp => "blocked_ip",
            ErrorClass::HttpStatus => "http_status",
        }
    }
}

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// When it started (its `webhook-timestamp`).
    pub started_at: Timestamp,
    pub duration_ms: u64,
    /// The answer's status; `None` when none arrived.
    pub status: Option<u16>,
    /// The first 1 KiB of the answer (lossy UTF-8).
    pub body: Option<String>,
    /// `None`: delivered (a 2xx).
    pub error: Option<ErrorClass>,
    /// The answer's `Retry-After`, in milliseconds.
    pub retry_after_ms: Option<u64>,
    pub signatures: u8,
}

/// The pause before attempt `attempt` (1-based, within a round) of `msg`.
pub fn retry_delay_ms(
    settings: &WebhookSettings,
    attempt: u32,
    msg: &MessageId,
    retry_after_ms: Option<u64>,
) -> u64 {
    if attempt <= 2 {
        return 0;
    }
    let doubled = settings
        .retry_base_ms
        .saturating_mul(1u64 << (attempt - 3).min(40));
    let capped = doubled.min(settings.retry_max_ms);
    // ±20%, the same for the same message and attempt.
    let digest = Sha256::new()
        .chain_update(msg.as_bytes())
        .chain_update(attempt.to_be_bytes())
        .finalize();
    let r = u64::from_be_bytes([
        digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6], digest[7],
    ]);
    let permille = (r % 401) as i64 - 200; // -200..=200 ‰
    let jittered = (capped as i64 + capped as i64 * permille / 1000).max(0) as u64;
    let d = jittered.min(settings.retry_max_ms);
    match retry_after_ms {
        Some(ra) => ra.clamp(d, d.saturating_mul(2)),
        None => d,
    }
}

/// Why a message fails without its attempts being used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    Disabled,
    AutoDisabled,
    OutboxFull,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Disabled => "webhook_disabled",
            Reason::AutoDisabled => "webhook_auto_disabled",
            Reason::OutboxFull => "outbox_full",
        }
    }
}

/// The scheduler: which attempts to make at `now`, and what an attempt's
/// outcome changes.
pub struct DeliveryCore {
    hub: Arc<WebhookHub>,
    last_prune_ms: i64,
}

/// At most one `outbox_full` line this often.
const OUTBOX_FULL_LOG_EVERY_MS: i64 = 60_000;

/// Messages failed `outbox_full` not yet logged, and when the last such line
/// was written (kept by the hub, for whichever worker fails them): under a
/// sustained overload every write of new messages fails some, and a line
/// each time would bury the rest of the log.
#[derive(Debug, Default)]
pub(crate) struct OutboxFullLog {
    pub(crate) unlogged: u64,
    pub(crate) logged_ms: Option<i64>,
}

impl DeliveryCore {
    pub fn new(hub: Arc<WebhookHub>) -> DeliveryCore {
        DeliveryCore {
            hub,
            last_prune_ms: i64::MIN,
        }
    }

    fn settings(&self) -> &WebhookSettings {
        &self.hub.settings.webhooks
    }

    /// One step at `now`: keeps the outbox within its capacity, fails the
    /// queued messages of disabled hooks, and answers the attempts to make
    /// now (at most the in-flight limits allow).
    pub fn run_once(&mut self, now: Timestamp) -> StoreResult<Vec<Job>> {
        self.hub.enforce_capacity(now)?;
        let (per_hook, total) = (
            self.settings().max_in_flight_per_endpoint,
            self.settings().max_in_flight,
        );
        let (due, mut in_flight) = {
            let outbox = self.hub.outbox();
            (outbox.due_hooks(now), outbox.in_flight())
        };
        let mut jobs = Vec::new();
        for (hook_id, hook_in_flight) in due {
            let Some(hook) = self.hub.store.webhook(&hook_id)? else {
                self.forget_deleted(hook_id)?;
                continue;
            };
            match hook.status {
                WebhookStatus::Active => {}
                WebhookStatus::Paused => continue,
                WebhookStatus::Disabled => {
                    self.fail_queued(&hook, Reason::Disabled, now)?;
                    continue;
                }
                WebhookStatus::AutoDisabled => {
                    self.fail_queued(&hook, Reason::AutoDisabled, now)?;
                    continue;
                }
            }
            let room = per_hook
                .saturating_sub(hook_in_flight)
                .min(total.saturating_sub(in_flight));
            if room == 0 {
                continue;
            }
            let taken = self.hub.outbox().take_due(hook_id, now, room);
            for (i, msg) in taken.iter().enumerate() {
                match self.job(&hook, *msg, now) {
                    Ok(Some(job)) => {
                        in_flight += 1;
                        jobs.push(job);
                    }
                    Ok(None) => self.hub.outbox().done(hook_id, *msg),
                    Err(e) => {
                        // These go back in the queue for the next step; the
                        // jobs made so far are dropped (their messages stay
                        // in flight until then, so give them back too).
                        let mut outbox = self.hub.outbox();
                        for job in &jobs {
                            outbox.done(job.hook, job.message);
                            outbox.add(job.hook, job.message, now);
                        }
                        for rest in &taken[i..] {
                            outbox.done(hook_id, *rest);
                            outbox.add(hook_id, *rest, now);
                        }
                        return Err(e);
                    }
                }
            }
        }
        if now.as_millis().saturating_sub(self.last_prune_ms) >= PRUNE_EVERY_MS {
            self.last_prune_ms = now.as_millis();
            self.prune(now)?;
        }
        self.update_depth();
        Ok(jobs)
    }

    /// The attempt of a message taken from the outbox; `None` when it is no
    /// longer pending.
    fn job(&self, hook: &Webhook, msg: MessageId, now: Timestamp) -> StoreResult<Option<Job>> {
        let Some(m) = self.hub.store.webhook_message(&hook.id, &msg)? else {
            return Ok(None);
        };
        if m.state != MessageState::Pending {
            return Ok(None);
        }
        let delivery = m.next_delivery.unwrap_or_else(DeliveryId::generate);
        Ok(Some(Job {
            hook: hook.id,
            message: m.id,
            delivery,
            attempt: m.attempts + 1,
            url: hook.url.clone(),
            keys: hook.signing_keys(now),
            body: Arc::new(m.body),
        }))
    }

    /// Records one attempt's outcome (see `complete_all`).
    #[cfg(test)]
    pub fn complete(&mut self, job: &Job, outcome: &Outcome, now: Timestamp) -> StoreResult<()> {
        self.complete_all(&[(job.clone(), outcome.clone())], now)
    }

    /// Records attempts' outcomes, in one transaction: for each, its
    /// delivery record, the message (done, or the next attempt scheduled,
    /// or failed when its round is used up) and the hook's counters; then
    /// schedules the retries. On an error nothing is recorded and the
    /// messages are queued again (they are still pending in the store).
    pub fn complete_all(&mut self, done: &[(Job, Outcome)], now: Timestamp) -> StoreResult<()> {
        if done.is_empty() {
            return Ok(());
        }
        let settings = self.settings().clone();
        let result = self.hub.store.webhook_tx(|tx| {
            // Each hook is read and written once however many of its
            // attempts ended.
            let mut hooks = HashMap::new();
            let recorded = done
                .iter()
                .map(|(job, outcome)| record_outcome(tx, &mut hooks, &settings, job, outcome, now))
                .collect::<Result<Vec<_>, TxError>>()?;
            for hook in hooks.values().flatten() {
                tx.put_hook(hook)?;
            }
            Ok(recorded)
        });
        let results = match result {
            Ok(r) => r,
            Err(e) => {
                let mut outbox = self.hub.outbox();
                for (job, _) in done {
                    outbox.done(job.hook, job.message);
                    outbox.add(job.hook, job.message, now);
                }
                return Err(e);
            }
        };
        let metrics = &self.hub.metrics;
        for ((job, outcome), result) in done.iter().zip(results) {
            self.hub.outbox().done(job.hook, job.message);
            let Some(Recorded {
                retry_at,
                exhausted,
                auto_disabled,
            }) = result
            else {
                continue;
            };
            if let Some(due) = retry_at {
                self.hub.outbox().add(job.hook, job.message, due);
                metrics.webhook_retries.inc();
            }
            match outcome.error.is_none() {
                true => metrics.webhook_attempts_succeeded.inc(),
                false => metrics.webhook_attempts_failed.inc(),
            }
            if exhausted {
                metrics.webhook_failed_exhausted.inc();
                tracing::info!(webhook = %job.hook, message = %job.message, attempts = job.attempt, "webhook message failed all its attempts");
            }
            if auto_disabled {
                metrics.webhook_auto_disabled.inc();
                tracing::warn!(webhook = %job.hook, "webhook switched to auto_disabled after repeated failures");
            }
        }
        self.update_depth();
        Ok(())
    }

    /// Fails every queued message of a disabled hook.
    fn fail_queued(&self, hook: &Webhook, reason: Reason, now: Timestamp) -> StoreResult<()> {
        let queued: Vec<(WebhookId, MessageId)> = self
            .hub
            .outbox()
            .take_queued(hook.id)
            .into_iter()
            .map(|m| (hook.id, m))
            .collect();
        let failed = self.hub.fail_all(&queued, reason, now)?;
        if failed > 0 {
            tracing::info!(webhook = %hook.id, failed, reason = reason.as_str(), "failed the pending messages of a disabled webhook");
        }
        Ok(())
    }

    /// A hook was deleted: forgets its messages and removes what is left of
    /// its records.
    fn forget_deleted(&self, hook: WebhookId) -> StoreResult<()> {
        self.hub.outbox().take_queued(hook);
        while self.hub.store.purge_webhook_records(&hook, PURGE_BATCH)? > 0 {}
        Ok(())
    }

    /// Removes finished messages and delivery records older than
    /// `keep_messages_hours`.
    fn prune(&self, now: Timestamp) -> StoreResult<()> {
        let keep_ms = self.settings().keep_messages_hours as i64 * 3_600_000;
        let cutoff = Timestamp::from_millis(now.as_millis().saturating_sub(keep_ms));
        let mut removed = 0;
        for hook in self.hub.store.webhook_ids()? {
            removed += self
                .hub
                .store
                .prune_webhook_records(&hook, cutoff, PRUNE_BATCH)?;
        }
        if removed > 0 {
            tracing::debug!(removed, "pruned old webhook messages and delivery records");
        }
        Ok(())
    }

    fn update_depth(&self) {
        let depth = self.hub.depth() as u64;
        self.hub.metrics.webhook_outbox_depth.set(depth);
    }

    /// Pending messages (for the drain report).
    pub fn pending(&self) -> u64 {
        self.hub.depth() as u64
    }
}

/// Failing messages that will not be attempted (outbox over capacity, hook
/// disabled): shared by the delivery worker and the Webhooks worker, which
/// keeps the outbox within its capacity as it writes new messages, so the
/// delivery worker's time goes to sending.
impl WebhookHub {
    /// Fails the oldest queued messages of the hooks with the most while the
    /// outbox holds more than its capacity.
    pub fn enforce_capacity(&self, now: Timestamp) -> StoreResult<()> {
        let victims = {
            let mut outbox = self.outbox();
            let over = outbox
                .len()
                .saturating_sub(self.settings.webhooks.outbox_capacity);
            let victims = outbox.evict(over);
            self.metrics.webhook_outbox_depth.set(outbox.len() as u64);
            victims
        };
        if victims.is_empty() {
            return Ok(());
        }
        let failed = self.fail_all(&victims, Reason::OutboxFull, now)?;
        self.log_outbox_full(failed, now);
        Ok(())
    }

    /// Writes new messages (and the consumer's position, when given) and, in
    /// the same transaction, fails as many queued or new messages as the
    /// new ones take the outbox over its capacity (`outbox_full`, chosen as
    /// `Outbox::victims` does); then schedules the new ones that stay
    /// pending. One sled transaction instead of one for the new messages and
    /// another for the failed: every transaction makes sled write out and
    /// sync the piece of its log written so far. The outbox stays locked
    /// meanwhile, so the choice holds when the transaction commits.
    pub fn store_within_capacity(
        &self,
        new: &[(Message, Delivery)],
        consumer: Option<(&str, &ConsumerRecord)>,
        now: Timestamp,
    ) -> StoreResult<()> {
        let capacity = self.settings.webhooks.outbox_capacity;
        let mut outbox = self.outbox();
        let len = outbox.len();
        let (written, victims, failed) = self.store.webhook_tx(|tx| {
            let written = write_messages(tx, new, consumer)?;
            // Only what was written is new (a message derived again after
            // a crash is stored already).
            let fresh: Vec<(WebhookId, MessageId)> =
                written.iter().map(|p| (p.hook, p.message)).collect();
            let victims = outbox.victims(&fresh, (len + fresh.len()).saturating_sub(capacity));
            let failed = fail_in(
                tx,
                victims.iter().map(|(h, m)| (h, m)),
                Reason::OutboxFull,
                now,
            )?;
            Ok((written, victims, failed))
        })?;
        for (hook, msg) in &victims {
            outbox.remove_queued(*hook, *msg);
        }
        let gone: HashSet<MessageId> = victims.iter().map(|(_, m)| *m).collect();
        let mut queued = false;
        for p in written.iter().filter(|p| !gone.contains(&p.message)) {
            outbox.add(p.hook, p.message, p.due);
            queued = true;
        }
        self.metrics.webhook_outbox_depth.set(outbox.len() as u64);
        drop(outbox);
        if queued {
            self.wake();
        }
        if failed > 0 {
            self.count_failed(Reason::OutboxFull, failed);
            self.log_outbox_full(failed, now);
        }
        Ok(())
    }

    /// Counts `failed` messages toward the `outbox_full` line, written at
    /// most once every `OUTBOX_FULL_LOG_EVERY_MS`.
    fn log_outbox_full(&self, failed: u64, now: Timestamp) {
        let mut log = self.outbox_full_log();
        log.unlogged += failed;
        let due = log
            .logged_ms
            .is_none_or(|at| now.as_millis() - at >= OUTBOX_FULL_LOG_EVERY_MS);
        if due {
            tracing::warn!(
                failed = log.unlogged,
                capacity = self.settings.webhooks.outbox_capacity,
                "webhook outbox full: failed the oldest pending messages of the endpoints with the most (reason outbox_full), since the last such line"
            );
            log.unlogged = 0;
            log.logged_ms = Some(now.as_millis());
        }
    }

    /// Fails `msgs` (none in flight) with `reason`, except those done
    /// already, in one transaction; answers how many it failed.
    fn fail_messages(
        &self,
        msgs: &[(WebhookId, MessageId)],
        reason: Reason,
        now: Timestamp,
    ) -> StoreResult<u64> {
        self.store
            .webhook_tx(|tx| fail_in(tx, msgs.iter().map(|(h, m)| (h, m)), reason, now))
    }

    /// Fails `victims` (taken from the outbox, none in flight) in
    /// transactions of at most `FAIL_PER_TX`. On an error the ones not
    /// failed yet go back to the outbox, due at `now`.
    pub(crate) fn fail_all(
        &self,
        victims: &[(WebhookId, MessageId)],
        reason: Reason,
        now: Timestamp,
    ) -> StoreResult<u64> {
        let mut failed = 0;
        for (i, part) in victims.chunks(FAIL_PER_TX).enumerate() {
            match self.fail_messages(part, reason, now) {
                Ok(n) => failed += n,
                Err(e) => {
                    let mut outbox = self.outbox();
                    for (hook, rest) in &victims[i * FAIL_PER_TX..] {
                        outbox.add(*hook, *rest, now);
                    }
                    drop(outbox);
                    self.count_failed(reason, failed);
                    return Err(e);
                }
            }
        }
        self.count_failed(reason, failed);
        Ok(failed)
    }

    fn count_failed(&self, reason: Reason, n: u64) {
        let m = &self.metrics;
        match reason {
            Reason::Disabled => m.webhook_failed_disabled.add(n),
            Reason::AutoDisabled => m.webhook_failed_auto_disabled.add(n),
            Reason::OutboxFull => m.webhook_failed_outbox_full.add(n),
        }
    }
}

/// Fails `msgs` (none in flight) with `reason` in `tx`, except those done
/// already; answers how many it failed.
fn fail_in<'a>(
    tx: &WebhookTx,
    msgs: impl Iterator<Item = (&'a WebhookId, &'a MessageId)>,
    reason: Reason,
    now: Timestamp,
) -> Result<u64, TxError> {
    let mut failed = 0;
    for (hook, msg) in msgs {
        let Some(mut m) = tx.message(hook, msg)? else {
            continue;
        };
        if m.state != MessageState::Pending {
            continue;
        }
        if let Some(id) = m.next_delivery
            && let Some(mut d) = tx.delivery(hook, &id)?
        {
            d.status = DeliveryStatus::Failed;
            d.error = Some(reason.as_str().to_owned());
            tx.put_delivery(&d)?;
        }
        m.state = MessageState::Failed;
        m.failure_reason = Some(reason.as_str().to_owned());
        m.finished_at = Some(now);
        m.next_delivery = None;
        tx.put_message(&m)?;
        failed += 1;
    }
    Ok(failed)
}

/// What recording an outcome changed beyond its records.
struct Recorded {
    retry_at: Option<Timestamp>,
    exhausted: bool,
    auto_disabled: bool,
}

/// Records one attempt's outcome in `tx`; `None` when its message is gone.
/// Counts it on its hook in `hooks` (read from `tx` the first time, `None`
/// when deleted), which the caller writes.
fn record_outcome(
    tx: &WebhookTx,
    hooks: &mut HashMap<WebhookId, Option<Webhook>>,
    settings: &WebhookSettings,
    job: &Job,
    outcome: &Outcome,
    now: Timestamp,
) -> Result<Option<Recorded>, TxError> {
    let ok = outcome.error.is_none();
    let Some(mut m) = tx.message(&job.hook, &job.message)? else {
        return Ok(None);
    };
    let mut d = match tx.delivery(&job.hook, &job.delivery)? {
        Some(d) => d,
        None => Delivery::pending(
            job.delivery,
            &m,
            job.attempt,
            job.url.clone(),
            outcome.started_at,
            outcome.started_at,
        ),
    };
    d.status = match ok {
        true => DeliveryStatus::Succeeded,
        false => DeliveryStatus::Failed,
    };
    d.url = job.url.clone();
    d.attempt = job.attempt;
    d.attempted_at = Some(outcome.started_at);
    d.duration_ms = Some(outcome.duration_ms);
    d.response_status = outcome.status;
    d.response_body = outcome.body.clone();
    d.error = outcome.error.map(|e| e.as_str().to_owned());
    d.signatures = outcome.signatures;
    let was_pending = m.state == MessageState::Pending;
    m.attempts = m.attempts.max(job.attempt);
    let mut retry_at = None;
    let mut exhausted = false;
    if was_pending {
        m.round_attempts += 1;
        if ok {
            m.state = MessageState::Succeeded;
            m.failure_reason = None;
            m.finished_at = Some(now);
            m.next_delivery = None;
        } else if m.round_attempts < settings.max_attempts {
            let pause = retry_delay_ms(
                settings,
                m.round_attempts + 1,
                &m.id,
                outcome.retry_after_ms,
            );
            let due = Timestamp::from_millis(now.as_millis() + pause as i64);
            let next = Delivery::pending(
                DeliveryId::generate(),
                &m,
                m.attempts + 1,
                job.url.clone(),
                now,
                due,
            );
            d.next_attempt_at = Some(due);
            m.next_delivery = Some(next.id);
            m.next_attempt_at = due;
            tx.put_delivery(&next)?;
            retry_at = Some(due);
        } else {
            exhausted = true;
            m.state = MessageState::Failed;
            m.failure_reason = outcome.error.map(|e| e.as_str().to_owned());
            m.finished_at = Some(now);
            m.next_delivery = None;
        }
    }
    let mut auto_disabled = false;
    let hook = match hooks.entry(job.hook) {
        Entry::Occupied(e) => e.into_mut(),
        Entry::Vacant(e) => e.insert(tx.hook(&job.hook)?),
    };
    if let Some(hook) = hook {
        hook.last_sent_at = Some(outcome.started_at);
        if ok {
            hook.success_count += 1;
            hook.last_delivered_at = Some(now);
            hook.consecutive_failures = 0;
        } else {
            hook.failure_count += 1;
            if exhausted {
                hook.consecutive_failures += 1;
                if hook.consecutive_failures >= settings.auto_disable_after
                    && hook.status == WebhookStatus::Active
                {
                    hook.status = WebhookStatus::AutoDisabled;
                    hook.updated_at = now;
                    auto_disabled = true;
                }
            }
        }
    }
    tx.put_delivery(&d)?;
    tx.put_message(&m)?;
    Ok(Some(Recorded {
        retry_at,
        exhausted,
        auto_disabled,
    }))
}

/// The actor around `DeliveryCore`.
pub struct DeliveryWorker {
    core: DeliveryCore,
    hub: Arc<WebhookHub>,
    client: Option<awc::Client>,
    status: Arc<WorkerStatus>,
    stopping: bool,
    /// Attempts that ended and are not recorded yet: they are recorded
    /// together (`RecordOutcomes`, `RECORD_EVERY_MS` after the first ended),
    /// one transaction for all that ended meanwhile. Their request slots are
    /// free already; the outbox keeps their messages from being taken again
    /// until they are recorded (`Outbox::ended`).
    finished: Vec<(Job, Outcome)>,
    record_queued: bool,
    /// A step is asked for and has not run yet.
    step_queued: bool,
    /// A step is asked for at the end of a window the pacer held.
    resume_queued: bool,
}

/// Step again once the window the pacer held has ended.
#[derive(Message)]
#[rtype(result = "()")]
struct Resume;

/// Record the attempts that ended (`DeliveryWorker::finished`).
#[derive(Message)]
#[rtype(result = "()")]
struct RecordOutcomes;

impl DeliveryWorker {
    /// Starts the worker on an arbiter of its own and connects it to the hub.
    pub fn start(hub: Arc<WebhookHub>) -> WorkerHandle {
        client::install_crypto_provider();
        let status = WorkerStatus::new();
        let (core, shared, worker_status) =
            (DeliveryCore::new(hub.clone()), hub.clone(), status.clone());
        let arbiter = super::threads::background_arbiter("delivery");
        // Built on the arbiter's thread: the client it will hold is !Send.
        let addr = DeliveryWorker::start_in_arbiter(&arbiter.handle(), move |_| DeliveryWorker {
            core,
            hub: shared,
            client: None,
            status: worker_status,
            stopping: false,
            finished: Vec::new(),
            record_queued: false,
            step_queued: false,
            resume_queued: false,
        });
        hub.set_delivery(addr.clone().recipient());
        WorkerHandle::new("webhook_delivery", Stage::Delivery, &addr, status)
            .on_arbiter(arbiter.handle())
    }

    fn step(&mut self, ctx: &mut Context<Self>) {
        self.step_queued = false;
        if self.stopping {
            return;
        }
        // Over its budget on a busy machine: no new attempt until the
        // window ends (`pacing`); what ended is still recorded.
        let hold = self.hub.pacer().hold(Instant::now());
        if let Some(wait) = hold {
            if !self.resume_queued {
                self.resume_queued = true;
                self.hub.metrics.webhook_paced.inc();
                ctx.notify_later(Resume, wait);
            }
            return;
        }
        let ran = self.core.run_once(Timestamp::now());
        crate::store::release_log_buffers();
        match ran {
            Ok(jobs) => {
                self.status.ran(true);
                for job in jobs {
                    self.send(job, ctx);
                }
            }
            Err(e) => {
                self.status.ran(false);
                tracing::error!(worker = "webhook_delivery", error = %e, "delivery step failed; retrying");
            }
        }
        self.status.set_depth(self.hub.depth() as u64);
    }

    fn send(&mut self, job: Job, ctx: &mut Context<Self>) {
        let Some(client) = self.client.clone() else {
            return;
        };
        let settings = self.hub.settings.webhooks.clone();
        let request = {
            let job = job.clone();
            async move { client::attempt(&client, &settings, &job).await }
        };
        ctx.spawn(request.into_actor(self).map(move |outcome, act, ctx| {
            act.hub.outbox().ended(job.hook, job.message);
            act.finished.push((job, outcome));
            if act.finished.len() >= RECORD_AT_MOST {
                act.record();
            } else if !act.record_queued {
                act.record_queued = true;
                ctx.notify_later(RecordOutcomes, Duration::from_millis(RECORD_EVERY_MS));
            }
            // A request slot is free: the next message may go now.
            if !act.step_queued {
                act.step_queued = true;
                ctx.notify(WakeDelivery);
            }
        }));
    }

    /// Records the attempts that ended.
    fn record(&mut self) {
        let done = std::mem::take(&mut self.finished);
        // Its sled garbage is handed on by the step queued after every
        // recording but the last, at drain (`release_log_buffers` in `step`).
        if let Err(e) = self.core.complete_all(&done, Timestamp::now()) {
            self.status.ran(false);
            tracing::error!(worker = "webhook_delivery", error = %e, attempts = done.len(), "could not record delivery attempts; they will be made again");
        }
    }
}

impl Actor for DeliveryWorker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.hub.pacer().register_current_thread();
        // awc's client is !Send: it is made here, on the worker's thread.
        self.client = Some(client::build(&self.hub.settings.webhooks));
        let tick = Duration::from_millis(self.hub.settings.webhooks.poll_interval_ms);
        ctx.run_interval(tick, |act, ctx| act.step(ctx));
        ctx.notify(WakeDelivery);
        self.status.set_ready(true);
    }
}

impl Handler<WakeDelivery> for DeliveryWorker {
    type Result = ();

    fn handle(&mut self, _: WakeDelivery, ctx: &mut Self::Context) {
        self.step(ctx);
    }
}

impl Handler<Resume> for DeliveryWorker {
    type Result = ();

    fn handle(&mut self, _: Resume, ctx: &mut Self::Context) {
        self.resume_queued = false;
        self.step(ctx);
    }
}

impl Handler<RecordOutcomes> for DeliveryWorker {
    type Result = ();

    fn handle(&mut self, _: RecordOutcomes, ctx: &mut Self::Context) {
        self.record_queued = false;
        self.record();
        // Retries due at once are queued now.
        self.step(ctx);
    }
}

impl Handler<Drain> for DeliveryWorker {
    type Result = DrainReport;

    /// Stops taking messages. Attempts in flight are abandoned; their
    /// messages stay pending in the store and are sent again after a
    /// restart (at least once).
    fn handle(&mut self, _: Drain, ctx: &mut Self::Context) -> DrainReport {
        self.stopping = true;
        // Attempts that ended are recorded, not made again.
        self.record();
        let left = self.core.pending();
        ctx.stop();
        DrainReport { left }
    }
}

#[cfg(test)]
mod tests;
