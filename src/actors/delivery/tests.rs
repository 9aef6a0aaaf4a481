//! The delivery schedule driven by a chosen clock: no sleeping, no network.

use super::*;
use crate::actors::consumer::ConsumerWorker;
use crate::actors::webhooks::{Webhooks, new_message, store_messages};
use crate::config::Settings;
use crate::domain::webhook::{EventType, Message};
use crate::domain::{ScanEvent, Timestamp};
use crate::ids::{EventId, LinkId, WorkspaceId};
use crate::metrics::Metrics;
use crate::store::Store;

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    hub: Arc<WebhookHub>,
    core: DeliveryCore,
    ws: WorkspaceId,
}

fn fixture(overrides: &[(&str, &str)]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 8).unwrap();
    let env: Vec<(String, String)> = overrides
        .iter()
        .map(|(k, v)| (format!("SCANHOP__WEBHOOKS__{k}"), v.to_string()))
        .collect();
    let settings = Arc::new(Settings::load_with_env(None, env).unwrap());
    let hub = WebhookHub::load(store.clone(), settings, Arc::new(Metrics::default())).unwrap();
    Fixture {
        _dir: dir,
        core: DeliveryCore::new(hub.clone()),
        store,
        hub,
        ws: WorkspaceId::generate(),
    }
}

fn at(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}

/// The tests' "now": the real time at the first call (message IDs carry
/// the real time, and pruning compares with it).
fn t0() -> i64 {
    static T0: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *T0.get_or_init(|| Timestamp::now().as_millis())
}

impl Fixture {
    fn hook(&self) -> Webhook {
        let hook = Webhook::new(
            self.ws,
            "https://hooks.example/x".into(),
            vec![EventType::QrScanned, EventType::StepCompleted],
            None,
            vec![7; 24],
            at(0),
        );
        self.store.insert_webhook(&hook).unwrap();
        hook
    }

    fn messages(&self, hook: &Webhook, n: usize, now: Timestamp) -> Vec<MessageId> {
        let new: Vec<_> = (0..n)
            .map(|_| {
                new_message(
                    MessageId::generate(),
                    hook,
                    EventType::WebhookTest,
                    b"{}".to_vec(),
                    now,
                )
            })
            .collect();
        let written = store_messages(&self.store, &new, None).unwrap();
        self.hub.queue(&written);
        new.iter().map(|(m, _)| m.id).collect()
    }

    /// `n` scans of one link, committed in ID order.
    fn scans(&self, n: usize) -> Vec<ScanEvent> {
        let link = LinkId::generate();
        let mut ids: Vec<EventId> = (0..n).map(|_| EventId::generate()).collect();
        ids.sort();
        let events: Vec<ScanEvent> = ids
            .into_iter()
            .map(|id| ScanEvent::sample(id, self.ws, link))
            .collect();
        self.store.commit_scans(&events).unwrap();
        events
    }

    /// The Webhooks worker, loaded from the store.
    fn webhooks_worker(&self) -> ConsumerWorker<Webhooks> {
        ConsumerWorker::load(
            Webhooks::new(self.hub.clone()),
            self.store.clone(),
            self.hub.settings.webhooks.consumer(),
        )
        .unwrap()
    }

    fn message(&self, id: &MessageId) -> Message {
        self.store.webhook_message_in_any_hook(id).unwrap()
    }

    fn reload(&self, hook: &Webhook) -> Webhook {
        self.store.webhook(&hook.id).unwrap().unwrap()
    }

    fn set_status(&self, hook: &Webhook, status: WebhookStatus) {
        let mut h = self.reload(hook);
        h.status = status;
        self.store.webhook_tx(|tx| tx.put_hook(&h)).unwrap();
    }
}

fn outcome(status: Option<u16>, started: i64) -> Outcome {
    let error = match status {
        Some(s) if (200..300).contains(&s) => None,
        Some(_) => Some(ErrorClass::HttpStatus),
        None => Some(ErrorClass::Timeout),
    };
    Outcome {
        started_at: at(started),
        duration_ms: 5,
        status,
        body: status.map(|s| format!("answer {s}")),
        error,
        retry_after_ms: None,
        signatures: 1,
    }
}

#[test]
fn webhook_retry_schedule_is_at_once_then_exponential_with_jitter() {
    let mut f = fixture(&[
        ("RETRY_BASE_MS", "1000"),
        ("RETRY_MAX_MS", "60000"),
        ("MAX_ATTEMPTS", "3"),
    ]);
    let hook = f.hook();
    let msg = f.messages(&hook, 1, at(t0()))[0];
    // Attempt 1 at once.
    let jobs = f.core.run_once(at(t0())).unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!((jobs[0].message, jobs[0].attempt), (msg, 1));
    assert_eq!(jobs[0].keys, vec![vec![7; 24]]);
    assert!(f.core.run_once(at(t0())).unwrap().is_empty(), "in flight");
    f.core
        .complete(&jobs[0], &outcome(Some(500), t0()), at(t0()))
        .unwrap();
    // Attempt 2 at once, with the same message ID.
    let jobs = f.core.run_once(at(t0())).unwrap();
    assert_eq!((jobs[0].message, jobs[0].attempt), (msg, 2));
    f.core
        .complete(&jobs[0], &outcome(None, t0()), at(t0() + 10))
        .unwrap();
    // Attempt 3 after retry_base_ms ±20%.
    let due = f.message(&msg).next_attempt_at.as_millis() - (t0() + 10);
    assert!((800..=1200).contains(&due), "{due}");
    assert!(f.core.run_once(at(t0() + 10 + due - 1)).unwrap().is_empty());
    let jobs = f.core.run_once(at(t0() + 10 + due)).unwrap();
    assert_eq!((jobs[0].message, jobs[0].attempt), (msg, 3));
    f.core
        .complete(&jobs[0], &outcome(Some(502), t0() + 2000), at(t0() + 2000))
        .unwrap();
    // Used up: failed, visible with its reason; counted once on the hook.
    let m = f.message(&msg);
    assert_eq!(m.state, MessageState::Failed);
    assert_eq!(m.failure_reason.as_deref(), Some("http_status"));
    assert_eq!(m.attempts, 3);
    let h = f.reload(&hook);
    assert_eq!((h.consecutive_failures, h.failure_count), (1, 3));
    assert_eq!(h.last_sent_at, Some(at(t0() + 2000)));
    let log = f
        .store
        .list_webhook_deliveries(&hook.id, None, None, 10)
        .unwrap()
        .items;
    assert_eq!(log.len(), 3);
    assert!(log.iter().all(|d| d.status == DeliveryStatus::Failed));
    assert_eq!(log.iter().map(|d| d.attempt).collect::<Vec<_>>(), [3, 2, 1]);
    assert_eq!(log[1].error.as_deref(), Some("timeout"));
    assert_eq!(log[0].response_status, Some(502));
    assert_eq!(log[0].response_body.as_deref(), Some("answer 502"));
    assert!(f.hub.outbox().is_empty());

    // Later attempts double, stay within ±20% and under the cap; a
    // Retry-After is honoured between d and 2d.
    let s = &f.hub.settings.webhooks;
    for (n, base) in [(4u32, 2000u64), (5, 4000), (6, 8000)] {
        let d = retry_delay_ms(s, n, &msg, None);
        assert!(base * 8 / 10 <= d && d <= base * 12 / 10, "{n}: {d}");
        assert_eq!(d, retry_delay_ms(s, n, &msg, None), "the same every time");
    }
    assert!(retry_delay_ms(s, 30, &msg, None) <= 60_000);
    assert_eq!(retry_delay_ms(s, 2, &msg, Some(50_000)), 0);
    let d = retry_delay_ms(s, 3, &msg, None);
    assert_eq!(retry_delay_ms(s, 3, &msg, Some(1)), d);
    assert_eq!(retry_delay_ms(s, 3, &msg, Some(1_000_000)), 2 * d);
}

#[test]
fn webhook_success_after_failures_resets_and_auto_disable_fails_the_rest() {
    let mut f = fixture(&[("MAX_ATTEMPTS", "1"), ("AUTO_DISABLE_AFTER", "3")]);
    let hook = f.hook();
    let msgs = f.messages(&hook, 7, at(t0()));
    let finish = |f: &mut Fixture, status: u16, t: i64| {
        let jobs = f.core.run_once(at(t)).unwrap();
        let job = jobs.into_iter().min_by_key(|j| j.message).unwrap();
        f.core
            .complete(&job, &outcome(Some(status), t), at(t))
            .unwrap();
        // Put the others back: only one attempt per call.
        let mut outbox = f.hub.outbox();
        for m in &msgs {
            if f.store.webhook_message_in_any_hook(m).unwrap().state == MessageState::Pending {
                outbox.done(hook.id, *m);
                outbox.add(hook.id, *m, at(t));
            }
        }
    };
    finish(&mut f, 500, t0());
    finish(&mut f, 500, t0() + 1);
    assert_eq!(f.reload(&hook).consecutive_failures, 2);
    finish(&mut f, 204, t0() + 2);
    let h = f.reload(&hook);
    assert_eq!((h.consecutive_failures, h.success_count), (0, 1));
    assert_eq!(h.last_delivered_at, Some(at(t0() + 2)));
    finish(&mut f, 500, t0() + 3);
    finish(&mut f, 500, t0() + 4);
    assert_eq!(f.reload(&hook).status, WebhookStatus::Active);
    finish(&mut f, 410, t0() + 5);
    assert_eq!(f.reload(&hook).status, WebhookStatus::AutoDisabled);
    // The next step fails what is still pending, with a visible reason.
    assert!(f.core.run_once(at(t0() + 6)).unwrap().is_empty());
    let last = f.message(&msgs[6]);
    assert_eq!(last.state, MessageState::Failed);
    assert_eq!(
        last.failure_reason.as_deref(),
        Some("webhook_auto_disabled")
    );
    let failed = f
        .store
        .list_webhook_deliveries(&hook.id, Some(DeliveryStatus::Failed), None, 50)
        .unwrap()
        .items;
    assert!(
        failed
            .iter()
            .any(|d| d.message_id == msgs[6] && d.error.as_deref() == Some("webhook_auto_disabled"))
    );
    assert_eq!(f.hub.metrics.webhook_auto_disabled.get(), 1);
    assert!(f.hub.outbox().is_empty());
}

#[test]
fn webhook_paused_hooks_hold_disabled_hooks_fail_and_endpoints_have_their_own_limit() {
    let mut f = fixture(&[("MAX_IN_FLIGHT_PER_ENDPOINT", "2"), ("MAX_IN_FLIGHT", "3")]);
    let (busy, quiet) = (f.hook(), f.hook());
    f.messages(&busy, 5, at(t0()));
    let quiet_msg = f.messages(&quiet, 1, at(t0()))[0];
    let jobs = f.core.run_once(at(t0())).unwrap();
    let per_hook = |h: &Webhook| jobs.iter().filter(|j| j.hook == h.id).count();
    assert_eq!((per_hook(&busy), per_hook(&quiet)), (2, 1));
    for j in &jobs {
        f.core
            .complete(j, &outcome(Some(200), t0()), at(t0()))
            .unwrap();
    }
    assert_eq!(f.message(&quiet_msg).state, MessageState::Succeeded);
    // Paused: held, not failed; sent once active again.
    f.set_status(&busy, WebhookStatus::Paused);
    assert!(f.core.run_once(at(t0() + 1)).unwrap().is_empty());
    assert_eq!(f.hub.outbox().pending_of(&busy.id), 3);
    f.set_status(&busy, WebhookStatus::Active);
    assert_eq!(f.core.run_once(at(t0() + 2)).unwrap().len(), 2);
    // Disabled: what is queued fails (the two in flight finish normally).
    f.set_status(&busy, WebhookStatus::Disabled);
    assert!(f.core.run_once(at(t0() + 3)).unwrap().is_empty());
    assert_eq!(f.hub.outbox().pending_of(&busy.id), 2);
    assert_eq!(f.hub.metrics.webhook_failed_disabled.get(), 1);
}

#[test]
fn webhook_outbox_over_capacity_fails_the_oldest_of_the_busiest_endpoint() {
    let mut f = fixture(&[("OUTBOX_CAPACITY", "4")]);
    let (busy, quiet) = (f.hook(), f.hook());
    f.set_status(&busy, WebhookStatus::Paused);
    f.set_status(&quiet, WebhookStatus::Paused);
    let old = f.messages(&busy, 4, at(t0()));
    let kept = f.messages(&quiet, 2, at(t0()));
    f.core.run_once(at(t0())).unwrap();
    assert_eq!(f.hub.outbox().len(), 4);
    for m in &old[..2] {
        let m = f.message(m);
        assert_eq!(m.state, MessageState::Failed);
        assert_eq!(m.failure_reason.as_deref(), Some("outbox_full"));
    }
    for m in old[2..].iter().chain(&kept) {
        assert_eq!(f.message(m).state, MessageState::Pending);
    }
    assert_eq!(f.hub.metrics.webhook_failed_outbox_full.get(), 2);
}

#[test]
fn outbox_full_is_logged_at_most_once_a_minute_with_the_count_since() {
    let mut f = fixture(&[("OUTBOX_CAPACITY", "2")]);
    let hook = f.hook();
    f.set_status(&hook, WebhookStatus::Paused);
    f.messages(&hook, 3, at(t0()));
    f.core.run_once(at(t0())).unwrap();
    assert_eq!(f.hub.outbox_full_log().logged_ms, Some(t0()));
    assert_eq!(f.hub.outbox_full_log().unlogged, 0);
    // Within the minute: counted, not logged.
    for step in 1..=3 {
        f.messages(&hook, 2, at(t0()));
        f.core.run_once(at(t0() + step * 1_000)).unwrap();
    }
    assert_eq!(f.hub.outbox_full_log().unlogged, 6);
    assert_eq!(f.hub.outbox_full_log().logged_ms, Some(t0()));
    // A minute on: one line for all of them.
    f.messages(&hook, 1, at(t0()));
    f.core.run_once(at(t0() + 60_000)).unwrap();
    assert_eq!(f.hub.outbox_full_log().unlogged, 0);
    assert_eq!(f.hub.outbox_full_log().logged_ms, Some(t0() + 60_000));
    assert_eq!(f.hub.metrics.webhook_failed_outbox_full.get(), 8);
}

#[test]
fn webhook_messages_derived_again_after_a_crash_are_the_same_messages() {
    let f = fixture(&[]);
    let hook = f.hook();
    let link = LinkId::generate();
    // Enough events that their messages take two of the consumer's
    // transactions.
    let n = crate::actors::webhooks::MESSAGES_PER_TX;
    let mut ids: Vec<EventId> = (0..n).map(|_| EventId::generate()).collect();
    ids.sort();
    let mut events: Vec<ScanEvent> = ids
        .into_iter()
        .map(|id| ScanEvent::sample(id, f.ws, link))
        .collect();
    events[1].bot = true;
    f.store.commit_scans(&events).unwrap();
    let settings = f.hub.settings.webhooks.consumer();
    let mut w = ConsumerWorker::load(
        Webhooks::new(f.hub.clone()),
        f.store.clone(),
        settings.clone(),
    )
    .unwrap();
    while !w.run_once(at(t0())).unwrap() {}
    w.checkpoint(at(t0() + 10_000)).unwrap();
    let pending = f.store.pending_webhook_messages().unwrap();
    // Two types for each person; the bot makes none.
    let expected = 2 * (n - 1);
    assert!(expected > n);
    assert_eq!(pending.len(), expected);
    assert_eq!(f.hub.outbox().len(), expected);
    // A crash before the position was saved: the same events are derived
    // again and overwrite nothing.
    f.store
        .save_consumer("webhooks", &crate::store::ConsumerRecord::default())
        .unwrap();
    let mut again =
        ConsumerWorker::load(Webhooks::new(f.hub.clone()), f.store.clone(), settings).unwrap();
    while !again.run_once(at(t0())).unwrap() {}
    again.checkpoint(at(t0() + 20_000)).unwrap();
    assert_eq!(f.store.pending_webhook_messages().unwrap().len(), expected);
    assert_eq!(
        f.store
            .webhook_messages_since(&hook.id, at(0))
            .unwrap()
            .len(),
        expected
    );
    let first = &events[0];
    let scanned = message_id_for(first, &hook, EventType::QrScanned);
    let m = f.message(&scanned);
    let body: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
    assert_eq!(body["type"], "qr.scanned");
    assert_eq!(body["data"]["scan_id"], first.id.to_string());
}

#[test]
fn the_webhooks_worker_keeps_a_full_outbox_within_its_capacity_as_it_writes() {
    let f = fixture(&[("OUTBOX_CAPACITY", "10")]);
    let hook = f.hook();
    // Eight older messages waiting, then 20 scans: 40 new messages (two
    // types each) into room for 2. No delivery step runs meanwhile.
    let older = f.messages(&hook, 8, at(t0()));
    let events = f.scans(20);
    let mut w = f.webhooks_worker();
    while !w.run_once(at(t0())).unwrap() {}
    w.checkpoint(at(t0() + 10_000)).unwrap();
    assert_eq!(f.hub.outbox().len(), 10);
    assert_eq!(f.hub.metrics.webhook_outbox_depth.get(), 10);
    assert_eq!(f.store.pending_webhook_messages().unwrap().len(), 10);
    // The oldest went first (message IDs sort by time): of all 48, the
    // 10 largest are pending and the rest failed.
    let mut all: Vec<MessageId> = events
        .iter()
        .flat_map(|e| {
            [EventType::QrScanned, EventType::StepCompleted].map(|ty| message_id_for(e, &hook, ty))
        })
        .chain(older)
        .collect();
    all.sort();
    let (failed, kept) = all.split_at(38);
    for m in failed {
        let m = f.message(m);
        assert_eq!(m.state, MessageState::Failed);
        assert_eq!(m.failure_reason.as_deref(), Some("outbox_full"));
    }
    for m in kept {
        assert_eq!(f.message(m).state, MessageState::Pending);
    }
    assert_eq!(f.hub.metrics.webhook_failed_outbox_full.get(), 8 + 30);
    assert!(f.hub.outbox_full_log().logged_ms.is_some());
}

fn message_id_for(e: &ScanEvent, hook: &Webhook, ty: EventType) -> MessageId {
    crate::domain::webhook::message_id(&e.id, &hook.id, ty)
}

#[test]
fn webhook_pruning_removes_only_finished_records_made_before_the_cutoff() {
    let mut f = fixture(&[]);
    let hook = f.hook();
    let msgs = f.messages(&hook, 2, at(t0()));
    assert!(f.store.webhook_message_in_any_hook(&msgs[0]).is_some());
    // The first is delivered; the second stays pending.
    let jobs = f.core.run_once(at(t0())).unwrap();
    let first = jobs.iter().find(|j| j.message == msgs[0]).unwrap();
    f.core
        .complete(first, &outcome(Some(204), t0()), at(t0()))
        .unwrap();
    // Records made after the cutoff stay, finished or not.
    assert_eq!(
        f.store.prune_webhook_records(&hook.id, at(0), 100).unwrap(),
        0
    );
    let cutoff = at(Timestamp::now().as_millis() + 60_000);
    let removed = f
        .store
        .prune_webhook_records(&hook.id, cutoff, 100)
        .unwrap();
    // The delivered message and its one delivery record; nothing pending.
    assert_eq!(removed, 2);
    assert!(f.store.webhook_message_in_any_hook(&msgs[0]).is_none());
    assert!(f.store.webhook_message_in_any_hook(&msgs[1]).is_some());
    assert_eq!(
        f.store
            .prune_webhook_records(&hook.id, cutoff, 100)
            .unwrap(),
        0
    );
}

#[test]
fn webhook_outbox_far_over_capacity_fails_the_excess_in_one_step() {
    let mut f = fixture(&[("OUTBOX_CAPACITY", "10")]);
    let hook = f.hook();
    f.set_status(&hook, WebhookStatus::Paused);
    // More than two transactions' worth over the capacity.
    let excess = 2 * FAIL_PER_TX + 5;
    let msgs = f.messages(&hook, 10 + excess, at(t0()));
    f.core.run_once(at(t0())).unwrap();
    assert_eq!(f.hub.outbox().len(), 10);
    let failed = msgs
        .iter()
        .filter(|m| f.message(m).state == MessageState::Failed)
        .count();
    assert_eq!(failed, excess);
    // The oldest went: message IDs sort by creation.
    for m in &msgs[excess..] {
        assert_eq!(f.message(m).state, MessageState::Pending);
    }
    assert_eq!(
        f.hub.metrics.webhook_failed_outbox_full.get(),
        excess as u64
    );
    let failed_deliveries = f
        .store
        .list_webhook_deliveries(&hook.id, Some(DeliveryStatus::Failed), None, 1_000)
        .unwrap();
    assert_eq!(failed_deliveries.items.len(), excess);
}

#[test]
fn webhook_outcomes_recorded_together_each_count_once() {
    let mut f = fixture(&[]);
    let hook = f.hook();
    let msgs = f.messages(&hook, 3, at(t0()));
    let jobs = f.core.run_once(at(t0())).unwrap();
    assert_eq!(jobs.len(), 3);
    let done: Vec<(Job, Outcome)> = jobs
        .iter()
        .map(|j| {
            let status = if j.message == msgs[2] { 500 } else { 200 };
            (j.clone(), outcome(Some(status), t0()))
        })
        .collect();
    f.core.complete_all(&done, at(t0())).unwrap();
    let h = f.reload(&hook);
    assert_eq!((h.success_count, h.failure_count), (2, 1));
    assert_eq!(f.message(&msgs[0]).state, MessageState::Succeeded);
    assert_eq!(f.message(&msgs[1]).state, MessageState::Succeeded);
    // The failed one is pending again, queued for its retry.
    assert_eq!(f.message(&msgs[2]).state, MessageState::Pending);
    assert_eq!(f.hub.outbox().len(), 1);
    assert_eq!(f.hub.outbox().in_flight(), 0);
    assert_eq!(f.hub.metrics.webhook_retries.get(), 1);
    assert_eq!(f.hub.metrics.webhook_attempts_succeeded.get(), 2);
    let records = f
        .store
        .list_webhook_deliveries(&hook.id, None, None, 100)
        .unwrap();
    // Three attempts made and the retry's pending record.
    assert_eq!(records.items.len(), 4);
}

#[test]
fn a_hook_at_build_ahead_waits_in_the_event_log_and_gets_every_message_as_it_takes_them() {
    let mut f = fixture(&[("BUILD_AHEAD", "6")]);
    let hook = f.hook();
    let events = f.scans(20);
    let mut w = f.webhooks_worker();
    while !w.run_once(at(t0())).unwrap() {}
    w.checkpoint(at(t0() + 10_000)).unwrap();
    // Room for three scans' messages (two types each): the fourth scan and
    // the later ones wait in the log, and nothing failed.
    assert_eq!(f.store.pending_webhook_messages().unwrap().len(), 6);
    assert_eq!(f.hub.outbox().pending_of(&hook.id), 6);
    assert_eq!(f.hub.metrics.webhook_failed_outbox_full.get(), 0);
    let waiting = Some(events[3].id.just_before());
    assert_eq!(w.state().after(&hook.id), waiting);
    assert_eq!(f.hub.metrics.webhook_backlog_hooks.get(), 1);
    // Stored with the position: a restarted worker goes on from there.
    let mut w = f.webhooks_worker();
    assert_eq!(w.state().after(&hook.id), waiting);
    // With 3 or more pending (half of 6), nothing more is built.
    w.run_once(at(t0() + 20_000)).unwrap();
    assert_eq!(f.store.pending_webhook_messages().unwrap().len(), 6);
    // Delivering them makes room: a step a checkpoint interval later builds
    // the next, and one at the same moment does not (the pace is held).
    let base = Timestamp::now().as_millis() + 60_000;
    let later = || at(base + 60_000);
    let mut delivered = 0;
    for step in 0..50 {
        let now = at(base + step * 1_000);
        let jobs = f.core.run_once(later()).unwrap();
        for job in &jobs {
            f.core
                .complete(job, &outcome(Some(200), t0()), later())
                .unwrap();
        }
        delivered += jobs.len();
        if step == 3 {
            // A crash mid-backlog: what was built is not built twice.
            w = f.webhooks_worker();
        }
        w.run_once(now).unwrap();
        if step == 1 {
            let (built, mark) = (f.hub.outbox().pending_of(&hook.id), w.state().clone());
            let mut sent = 0;
            for job in f.core.run_once(later()).unwrap() {
                f.core
                    .complete(&job, &outcome(Some(200), t0()), later())
                    .unwrap();
                sent += 1;
            }
            delivered += sent;
            w.run_once(now).unwrap();
            assert_eq!(w.state(), &mark, "nothing built again within the interval");
            assert_eq!(f.hub.outbox().pending_of(&hook.id), built - sent);
        }
        if delivered == 40 {
            break;
        }
    }
    assert_eq!(delivered, 40);
    assert!(w.state().is_empty(), "{:?}", w.state());
    assert_eq!(f.hub.metrics.webhook_backlog_hooks.get(), 0);
    for e in &events {
        for ty in [EventType::QrScanned, EventType::StepCompleted] {
            let m = f.message(&message_id_for(e, &hook, ty));
            assert_eq!(m.state, MessageState::Succeeded);
        }
    }
    assert_eq!(f.hub.metrics.webhook_failed_outbox_full.get(), 0);
    // Scans after the backlog emptied get their messages as they come.
    f.scans(1);
    while !w.run_once(at(base + 100_000)).unwrap() {}
    w.checkpoint(at(base + 100_000)).unwrap();
    assert_eq!(f.hub.outbox().pending_of(&hook.id), 2);
}

#[test]
fn a_waiting_hook_that_stops_taking_messages_leaves_the_backlog() {
    let f = fixture(&[("BUILD_AHEAD", "2")]);
    let hook = f.hook();
    f.scans(5);
    let mut w = f.webhooks_worker();
    while !w.run_once(at(t0())).unwrap() {}
    w.checkpoint(at(t0() + 10_000)).unwrap();
    assert_eq!(f.hub.outbox().pending_of(&hook.id), 2);
    assert!(!w.state().is_empty());
    // Disabled (its queued messages are failed by the delivery step): the
    // waiting scans make no messages, as they would not have when scanned.
    f.set_status(&hook, WebhookStatus::Disabled);
    f.hub.outbox().take_queued(hook.id);
    w.run_once(at(t0() + 20_000)).unwrap();
    assert!(w.state().is_empty());
    assert_eq!(f.store.pending_webhook_messages().unwrap().len(), 2);
}
