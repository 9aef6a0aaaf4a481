//! The Webhooks worker: a consumer of committed events (`actors::consumer`)
//! that derives the messages of every hook from scans after its durable
//! position and writes them to the outbox (`store::webhooks`), at most
//! `MESSAGES_PER_TX` per transaction, the last with that position; in the
//! same transaction, a full outbox fails as many of its oldest queued (or
//! new) messages as the new ones take it over its capacity
//! (`WebhookHub::store_within_capacity`). A message's ID comes from its event,
//! hook and type, and it is only written when absent, so deriving the same
//! events again after a crash never makes a second message. A hook with
//! `webhooks.build_ahead` pending messages gets no more: its later scans
//! wait in the event log (`Backlog`, the worker's stored state) and are read
//! back as it takes the ones built.
//!
//! `WebhookHub` is what the worker, the API handlers and the delivery worker
//! (`actors::delivery`) share: the store, the settings, and the in-memory
//! schedule of pending messages (`Outbox`), loaded from the store at start
//! and kept in step by everyone who writes a pending message.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, btree_map};
use std::iter::Peekable;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use actix::prelude::*;
use serde::Serialize;

use super::consumer::{Consumer, ConsumerStarter, ConsumerWorker};
use super::delivery::OutboxFullLog;
use super::pacing::CpuPacer;
use crate::config::Settings;
use crate::domain::webhook::{
    Delivery, EventType, Message, MessageState, Trigger, Webhook, message_id,
};
use crate::domain::{EventView, Link, ScanEvent, Timestamp};
use crate::ids::{DeliveryId, EventId, LinkId, MessageId, VisitorId, WebhookId, WorkspaceId};
use crate::metrics::Metrics;
use crate::store::{
    ConsumerRecord, PendingMessage, Store, StoreError, StoreResult, TxError, WebhookTx,
};

/// Ask the delivery worker to run a step now.
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct WakeDelivery;

/// The schedule of pending messages: per hook, the messages waiting for an
/// attempt (by due time), those in flight, and those whose attempt ended
/// but whose outcome is not recorded yet. A pending message is in exactly
/// one of the three; only those in flight count against the in-flight
/// limits.
#[derive(Debug, Default)]
pub struct Outbox {
    hooks: HashMap<WebhookId, HookQueue>,
}

#[derive(Debug, Default)]
struct HookQueue {
    by_due: BTreeSet<(i64, MessageId)>,
    due_of: BTreeMap<MessageId, i64>,
    in_flight: HashSet<MessageId>,
    /// Attempts that ended, waiting for their outcome to be recorded (the
    /// delivery worker records outcomes together): not taken again, and no
    /// longer holding a request slot.
    recording: HashSet<MessageId>,
    /// Messages queued again while in flight or recording (`recover`, `redeliver` racing
    /// the end of an attempt): queued when that attempt ends.
    again: HashMap<MessageId, i64>,
}

impl HookQueue {
    fn is_empty(&self) -> bool {
        self.due_of.is_empty() && self.in_flight.is_empty() && self.recording.is_empty()
    }

    /// In flight or waiting for its outcome to be recorded.
    fn busy(&self, msg: &MessageId) -> bool {
        self.in_flight.contains(msg) || self.recording.contains(msg)
    }

    fn len(&self) -> usize {
        self.due_of.len() + self.in_flight.len() + self.recording.len()
    }

    fn queue(&mut self, msg: MessageId, due: i64) {
        if let Some(old) = self.due_of.insert(msg, due) {
            self.by_due.remove(&(old, msg));
        }
        self.by_due.insert((due, msg));
    }
}

impl Outbox {
    /// Queues `msg` for an attempt at `due` (moves it when queued already).
    /// While it is in flight or its outcome is being recorded, it is queued
    /// when that attempt is done: the store may already hold the attempt's
    /// end (the message failed, then was recovered) while the worker has not
    /// yet called `done`. A message no longer pending by then is dropped when
    /// its job is made.
    pub fn add(&mut self, hook: WebhookId, msg: MessageId, due: Timestamp) {
        let q = self.hooks.entry(hook).or_default();
        if q.busy(&msg) {
            q.again.insert(msg, due.as_millis());
            return;
        }
        q.queue(msg, due.as_millis());
    }

    /// Hooks with a message due at `now`, with their requests in flight.
    pub fn due_hooks(&self, now: Timestamp) -> Vec<(WebhookId, usize)> {
        let mut due: Vec<(WebhookId, usize, i64)> = self
            .hooks
            .iter()
            .filter_map(|(h, q)| {
                let (first, _) = q.by_due.first()?;
                (*first <= now.as_millis()).then_some((*h, q.in_flight.len(), *first))
            })
            .collect();
        // The longest waiting first, so a busy hook cannot starve the others
        // of the global limit.
        due.sort_by_key(|(h, _, first)| (*first, *h));
        due.into_iter().map(|(h, n, _)| (h, n)).collect()
    }

    /// Takes up to `n` of `hook`'s messages due at `now` (earliest first)
    /// and marks them in flight.
    pub fn take_due(&mut self, hook: WebhookId, now: Timestamp, n: usize) -> Vec<MessageId> {
        let Some(q) = self.hooks.get_mut(&hook) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while out.len() < n {
            match q.by_due.first().copied() {
                Some((due, msg)) if due <= now.as_millis() => {
                    q.by_due.remove(&(due, msg));
                    q.due_of.remove(&msg);
                    q.in_flight.insert(msg);
                    out.push(msg);
                }
                _ => break,
            }
        }
        out
    }

    /// Takes every queued (not in-flight) message of `hook`.
    pub fn take_queued(&mut self, hook: WebhookId) -> Vec<MessageId> {
        let Some(q) = self.hooks.get_mut(&hook) else {
            return Vec::new();
        };
        q.by_due.clear();
        let out: Vec<MessageId> = std::mem::take(&mut q.due_of).into_keys().collect();
        if q.is_empty() {
            self.hooks.remove(&hook);
        }
        out
    }

    /// The request of `msg` ended; its outcome is not recorded yet. It frees
    /// its request slot, and the message is not taken again until `done`.
    pub fn ended(&mut self, hook: WebhookId, msg: MessageId) {
        if let Some(q) = self.hooks.get_mut(&hook)
            && q.in_flight.remove(&msg)
        {
            q.recording.insert(msg);
        }
    }

    /// An attempt of `msg` is over and recorded (or it was not sent after
    /// all).
    pub fn done(&mut self, hook: WebhookId, msg: MessageId) {
        if let Some(q) = self.hooks.get_mut(&hook) {
            q.in_flight.remove(&msg);
            q.recording.remove(&msg);
            if let Some(due) = q.again.remove(&msg) {
                q.queue(msg, due);
            }
            if q.is_empty() {
                self.hooks.remove(&hook);
            }
        }
    }

    /// Takes `n` queued messages to fail because the outbox is over its
    /// capacity (see `victims`).
    pub fn evict(&mut self, n: usize) -> Vec<(WebhookId, MessageId)> {
        let out = self.victims(&[], n);
        for (hook, msg) in &out {
            self.remove_queued(*hook, *msg);
        }
        out
    }

    /// The `n` messages to fail because the outbox, with `new` messages
    /// added (not in it yet), is over its capacity: each time the oldest
    /// queued or new message of the hook with the most of them. In-flight
    /// messages are never chosen. Changes nothing.
    pub fn victims(&self, new: &[(WebhookId, MessageId)], n: usize) -> Vec<(WebhookId, MessageId)> {
        // Per hook: the new ones sorted newest first, so the oldest is taken
        // from the end, and the queued ones, oldest first, with how many are
        // left.
        let mut fresh: HashMap<WebhookId, Vec<MessageId>> = HashMap::new();
        for (hook, msg) in new {
            fresh.entry(*hook).or_default().push(*msg);
        }
        for msgs in fresh.values_mut() {
            msgs.sort_unstable_by(|a, b| b.cmp(a));
        }
        let mut queued: HashMap<WebhookId, (usize, Peekable<btree_map::Keys<'_, MessageId, i64>>)> =
            self.hooks
                .iter()
                .filter(|(_, q)| !q.due_of.is_empty())
                .map(|(h, q)| (*h, (q.due_of.len(), q.due_of.keys().peekable())))
                .collect();
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let Some((_, hook)) = queued
                .keys()
                .chain(fresh.keys())
                .map(|h| {
                    let left = queued.get(h).map_or(0, |(left, _)| *left)
                        + fresh.get(h).map_or(0, Vec::len);
                    (left, *h)
                })
                .filter(|(left, _)| *left > 0)
                .max_by_key(|(left, h)| (*left, std::cmp::Reverse(*h)))
            else {
                break;
            };
            let oldest_queued = queued
                .get_mut(&hook)
                .and_then(|(_, keys)| keys.peek().map(|m| **m));
            let msg = match (oldest_queued, fresh.get_mut(&hook)) {
                (Some(q), Some(f)) if f.last().is_some_and(|m| *m < q) => f.pop(),
                (None, Some(f)) => f.pop(),
                (Some(_), _) => queued.get_mut(&hook).and_then(|(left, keys)| {
                    *left -= 1;
                    keys.next().copied()
                }),
                (None, None) => None,
            };
            match msg {
                Some(msg) => out.push((hook, msg)),
                None => break,
            }
        }
        out
    }

    /// Takes a queued message out (one chosen by `victims`).
    pub fn remove_queued(&mut self, hook: WebhookId, msg: MessageId) {
        if let Some(q) = self.hooks.get_mut(&hook) {
            if let Some(due) = q.due_of.remove(&msg) {
                q.by_due.remove(&(due, msg));
            }
            if q.is_empty() {
                self.hooks.remove(&hook);
            }
        }
    }

    /// Pending messages: queued, in flight and being recorded.
    pub fn len(&self) -> usize {
        self.hooks.values().map(HookQueue::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }

    pub fn in_flight(&self) -> usize {
        self.hooks.values().map(|q| q.in_flight.len()).sum()
    }

    /// Pending messages of one hook: queued, in flight and being recorded.
    pub fn pending_of(&self, hook: &WebhookId) -> usize {
        self.hooks.get(hook).map_or(0, HookQueue::len)
    }
}

/// What the Webhooks worker, the API and the delivery worker share.
pub struct WebhookHub {
    pub store: Store,
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
    outbox: Mutex<Outbox>,
    delivery: OnceLock<Recipient<WakeDelivery>>,
    /// Held while a hook is created, so a plan's limit is never passed by
    /// two requests at once.
    pub create_lock: Mutex<()>,
    outbox_full_log: Mutex<OutboxFullLog>,
    /// The budget of the Webhooks and delivery workers' CPU time while the
    /// machine is busy (`pacing`).
    pacer: Mutex<CpuPacer>,
}

impl WebhookHub {
    /// Loads every pending message of the store into the schedule.
    pub fn load(
        store: Store,
        settings: Arc<Settings>,
        metrics: Arc<Metrics>,
    ) -> StoreResult<Arc<WebhookHub>> {
        let mut outbox = Outbox::default();
        for p in store.pending_webhook_messages()? {
            outbox.add(p.hook, p.message, p.due);
        }
        metrics.webhook_outbox_depth.set(outbox.len() as u64);
        let pacer = CpuPacer::new(settings.webhooks.busy_cpu_percent);
        Ok(Arc::new(WebhookHub {
            store,
            settings,
            metrics,
            outbox: Mutex::new(outbox),
            delivery: OnceLock::new(),
            create_lock: Mutex::new(()),
            outbox_full_log: Mutex::default(),
            pacer: Mutex::new(pacer),
        }))
    }

    pub fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The webhook work's CPU budget (see `pacing`).
    pub fn pacer(&self) -> MutexGuard<'_, CpuPacer> {
        self.pacer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn outbox_full_log(&self) -> MutexGuard<'_, OutboxFullLog> {
        self.outbox_full_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Connects the delivery worker (once, at start).
    pub fn set_delivery(&self, wake: Recipient<WakeDelivery>) {
        let _ = self.delivery.set(wake);
    }

    /// Schedules messages just written as pending, and wakes the delivery.
    pub fn queue(&self, pending: &[PendingMessage]) {
        if pending.is_empty() {
            return;
        }
        {
            let mut outbox = self.outbox();
            for p in pending {
                outbox.add(p.hook, p.message, p.due);
            }
            self.metrics.webhook_outbox_depth.set(outbox.len() as u64);
        }
        self.wake();
    }

    /// Asks the delivery worker for a step now (a hook changed, say).
    pub fn wake(&self) {
        if let Some(d) = self.delivery.get() {
            d.do_send(WakeDelivery);
        }
    }

    pub fn depth(&self) -> usize {
        self.outbox().len()
    }

    /// Active hooks of a workspace (for `GET /v1/metrics`).
    pub fn active_count(&self, ws: &WorkspaceId) -> StoreResult<u64> {
        Ok(self
            .store
            .webhooks_of(ws)?
            .iter()
            .filter(|h| h.status == crate::domain::webhook::WebhookStatus::Active)
            .count() as u64)
    }
}

/// A new pending message and the delivery record of its first attempt.
pub fn new_message(
    id: MessageId,
    hook: &Webhook,
    event_type: EventType,
    body: Vec<u8>,
    now: Timestamp,
) -> (Message, Delivery) {
    let delivery_id = DeliveryId::generate();
    let message = Message {
        id,
        hook_id: hook.id,
        workspace_id: hook.workspace_id,
        event_type,
        body,
        created_at: now,
        state: MessageState::Pending,
        attempts: 0,
        round_attempts: 0,
        trigger: Trigger::Auto,
        next_attempt_at: now,
        next_delivery: Some(delivery_id),
        failure_reason: None,
        finished_at: None,
    };
    let delivery = Delivery::pending(delivery_id, &message, 1, hook.url.clone(), now, now);
    (message, delivery)
}

/// Writes new messages (only those not stored yet) and, when given, a
/// consumer's record, in one transaction; answers the messages written.
pub fn store_messages(
    store: &Store,
    new: &[(Message, Delivery)],
    consumer: Option<(&str, &ConsumerRecord)>,
) -> StoreResult<Vec<PendingMessage>> {
    store.webhook_tx(|tx| write_messages(tx, new, consumer))
}

/// `store_messages` inside a transaction: answers the messages written
/// (those not stored already).
pub(crate) fn write_messages(
    tx: &WebhookTx,
    new: &[(Message, Delivery)],
    consumer: Option<(&str, &ConsumerRecord)>,
) -> Result<Vec<PendingMessage>, TxError> {
    let mut written = Vec::new();
    for (m, d) in new {
        if tx.add_message(m, d)? {
            written.push(PendingMessage {
                hook: m.hook_id,
                message: m.id,
                due: m.next_attempt_at,
            });
        }
    }
    if let Some((name, record)) = consumer {
        tx.save_consumer(name, record)?;
    }
    Ok(written)
}

/// The body of every message: `{"type", "timestamp", "data"}`.
#[derive(Serialize)]
struct Envelope<D: Serialize> {
    #[serde(rename = "type")]
    event_type: EventType,
    timestamp: Timestamp,
    data: D,
}

/// The link of a scan as messages show it (borrowed from the link).
#[derive(Serialize)]
struct LinkData<'a> {
    id: LinkId,
    name: Option<&'a str>,
    slug: &'a str,
    short_url: String,
    destination: &'a str,
    tags: &'a [String],
}

#[derive(Serialize)]
struct VisitorData<'a> {
    id: VisitorId,
    attributes: &'a serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize)]
struct StepData<'a> {
    kind: &'static str,
    action: &'static str,
    answers: &'a serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize)]
struct ScanData<'a> {
    event: EventView,
    /// `null` when the link was deleted since.
    link: Option<LinkData<'a>>,
    /// `null` until the scan has a visitor.
    visitor: Option<VisitorData<'a>>,
    scan_id: EventId,
    #[serde(skip_serializing_if = "Option::is_none")]
    step: Option<StepData<'a>>,
}

/// Room for a scan's body: most are under a kilobyte, so one allocation
/// each and no growing.
const BODY_CAPACITY: usize = 1_536;

/// `value` as JSON bytes, written into one buffer of `BODY_CAPACITY`.
fn to_body<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    let mut body = Vec::with_capacity(BODY_CAPACITY);
    serde_json::to_writer(&mut body, value).map_err(codec_error)?;
    Ok(body)
}

fn codec_error(e: serde_json::Error) -> StoreError {
    StoreError::Codec(e.to_string())
}

/// The body of a `qr.scanned` or `step.completed` message about `event`;
/// `attributes` are the visitor's as stored now, `answers` those of the
/// scan's form step (`step.completed` of a link with a form), else the
/// redirect ended the scan.
pub fn scan_body(
    event_type: EventType,
    event: &ScanEvent,
    link: Option<&Link>,
    attributes: &serde_json::Map<String, serde_json::Value>,
    answers: Option<&serde_json::Map<String, serde_json::Value>>,
    settings: &Settings,
) -> StoreResult<Vec<u8>> {
    let none = serde_json::Map::new();
    let step = (event_type == EventType::StepCompleted).then(|| StepData {
        kind: "exit",
        action: if answers.is_some() {
            "form"
        } else {
            "redirect"
        },
        answers: answers.unwrap_or(&none),
    });
    let envelope = Envelope {
        event_type,
        timestamp: Timestamp::from_millis(event.timestamp_ms()),
        data: ScanData {
            event: EventView::from(event.clone()),
            link: link.map(|l| LinkData {
                id: l.id,
                name: l.name.as_deref(),
                slug: l.slug.as_str(),
                short_url: settings.short_url(l.slug.as_str()),
                destination: l.destination.as_str(),
                tags: &l.tags,
            }),
            visitor: event.visitor_id.map(|id| VisitorData { id, attributes }),
            scan_id: event.id,
            step,
        },
    };
    to_body(&envelope)
}

/// The body of a `visitor.identified` message: the visitor with all its
/// attributes, the attributes this call set, and the scan it came through.
pub fn identified_body(
    visitor: VisitorId,
    attributes: &serde_json::Map<String, serde_json::Value>,
    set: &serde_json::Map<String, serde_json::Value>,
    scan_id: EventId,
    now: Timestamp,
) -> StoreResult<Vec<u8>> {
    #[derive(Serialize)]
    struct IdentifiedData<'a> {
        visitor: VisitorData<'a>,
        attributes: &'a serde_json::Map<String, serde_json::Value>,
        scan_id: EventId,
    }
    let envelope = Envelope {
        event_type: EventType::VisitorIdentified,
        timestamp: now,
        data: IdentifiedData {
            visitor: VisitorData {
                id: visitor,
                attributes,
            },
            attributes: set,
            scan_id,
        },
    };
    to_body(&envelope)
}

/// Messages of type `ty` about `link` for every hook of `ws` that wants
/// them now, each with the ID `id_for` gives it; written and scheduled.
pub fn emit(
    hub: &WebhookHub,
    ws: &WorkspaceId,
    ty: EventType,
    link: &LinkId,
    body: &[u8],
    id_for: impl Fn(&Webhook) -> MessageId,
    now: Timestamp,
) -> StoreResult<usize> {
    let store = &hub.store;
    let new: Vec<(Message, Delivery)> = store
        .webhooks_of(ws)?
        .iter()
        .filter(|h| h.wants(ty, link, now))
        .map(|h| new_message(id_for(h), h, ty, body.to_vec(), now))
        .collect();
    if new.is_empty() {
        return Ok(0);
    }
    let written = store_messages(store, &new, None)?;
    hub.queue(&written);
    Ok(written.len())
}

/// The visitor's attributes as stored (`{}` when none).
pub fn stored_attributes(
    store: &Store,
    visitor: &VisitorId,
) -> StoreResult<serde_json::Map<String, serde_json::Value>> {
    Ok(store
        .visitor_attributes(visitor)?
        .and_then(|a| serde_json::from_str(&a.json).ok())
        .unwrap_or_default())
}

/// The body of a `webhook.test` message.
pub fn test_body(hook: &Webhook, now: Timestamp) -> StoreResult<Vec<u8>> {
    #[derive(Serialize)]
    struct TestData {
        webhook_id: WebhookId,
    }
    to_body(&Envelope {
        event_type: EventType::WebhookTest,
        timestamp: now,
        data: TestData {
            webhook_id: hook.id,
        },
    })
}

/// Messages written per transaction by the consumer. sled's cost per write
/// grows with the size of the transaction (a checkpoint of 8,192 messages in
/// one cost about 2.5 times as much CPU per message as parts of 128, measured with
/// `benches/redirect_load.rs`), and a long transaction holds up every other
/// writer of the store.
pub(crate) const MESSAGES_PER_TX: usize = 128;

/// The consumer: keeps the non-bot events it folded until the checkpoint,
/// then derives their messages and stores them with its position, at most
/// `webhooks.build_ahead` pending per hook (see `Backlog`).
pub struct Webhooks {
    hub: Arc<WebhookHub>,
    kept: Vec<Kept>,
    /// Kept batches whose messages are built (`prepare`) and waiting in
    /// `ready` to be written (`persist`).
    built: usize,
    ready: Vec<(Message, Delivery)>,
    /// When waiting hooks were last caught up (`maintain`), in ms.
    caught_up_ms: i64,
    /// Whether this worker's thread counts in the hub's pacer yet (it is
    /// registered from the thread, at the first batch).
    paced: bool,
}

/// A batch kept until the checkpoint (shared with the Recorder's message,
/// not copied) and the positions in it of the events that can make a
/// message.
struct Kept {
    batch: Arc<[ScanEvent]>,
    positions: Vec<u32>,
}

/// The Webhooks worker's state, stored with its position: per hook whose
/// scans wait in the event log, the last scan whose messages it built. A
/// hook with `webhooks.build_ahead` pending messages gets no more; the scans
/// after wait in the log until its pending messages fall to half of it,
/// and are then read back from the store (`maintain`). So an endpoint slower
/// than its traffic gets messages built about as fast as it takes them,
/// not built only to be failed because the outbox is full.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Backlog {
    after: BTreeMap<WebhookId, EventId>,
}

impl Backlog {
    /// Hooks with scans waiting in the log.
    pub fn len(&self) -> usize {
        self.after.len()
    }

    pub fn is_empty(&self) -> bool {
        self.after.is_empty()
    }

    /// The last scan whose messages are built for `hook`, when later ones wait.
    pub fn after(&self, hook: &WebhookId) -> Option<EventId> {
        self.after.get(hook).copied()
    }
}

/// Pages of events read per hook in one `maintain`, so a hook whose filter
/// matches few scans cannot hold the worker.
const BACKLOG_PAGES: usize = 8;

impl Webhooks {
    pub fn new(hub: Arc<WebhookHub>) -> Webhooks {
        Webhooks {
            hub,
            kept: Vec::new(),
            built: 0,
            ready: Vec::new(),
            caught_up_ms: i64::MIN,
            paced: false,
        }
    }

    /// A starter for the app (see `actors::consumer`).
    pub fn starter(hub: Arc<WebhookHub>) -> ConsumerStarter {
        let settings = hub.settings.webhooks.consumer();
        ConsumerWorker::starter(Webhooks::new(hub), settings)
    }

    /// The messages of `events` for the hooks as they are now (`only`: for
    /// that hook alone). A hook in `backlog` gets none; a hook that reaches
    /// `build_ahead` pending messages gets none for the rest, and goes into
    /// `backlog` after the last scan it got messages for. A scan's messages
    /// for one hook are built together.
    fn build<'e>(
        &self,
        store: &Store,
        events: impl IntoIterator<Item = &'e ScanEvent>,
        backlog: &mut Backlog,
        only: Option<WebhookId>,
        now: Timestamp,
    ) -> StoreResult<Vec<(Message, Delivery)>> {
        let build_ahead = self.hub.settings.webhooks.build_ahead;
        let mut hooks: HashMap<WorkspaceId, Vec<Webhook>> = HashMap::new();
        let mut links: HashMap<LinkId, Option<Link>> = HashMap::new();
        let mut attributes: HashMap<VisitorId, serde_json::Map<String, serde_json::Value>> =
            HashMap::new();
        let mut room: HashMap<WebhookId, usize> = HashMap::new();
        let no_attributes = serde_json::Map::new();
        let mut out = Vec::new();
        for e in events {
            let ws_hooks = match hooks.entry(e.workspace_id) {
                Entry::Occupied(o) => o.into_mut(),
                Entry::Vacant(v) => v.insert(store.webhooks_of(&e.workspace_id)?),
            };
            let at = Timestamp::from_millis(e.timestamp_ms());
            for hook in ws_hooks.iter() {
                if only.is_some_and(|h| h != hook.id) || backlog.after.contains_key(&hook.id) {
                    continue;
                }
                let mut types = Vec::with_capacity(2);
                for ty in [EventType::QrScanned, EventType::StepCompleted] {
                    if !hook.wants(ty, &e.link_id, at) {
                        continue;
                    }
                    let link = match links.entry(e.link_id) {
                        Entry::Occupied(o) => o.into_mut(),
                        Entry::Vacant(v) => {
                            v.insert(store.owned_link(&e.workspace_id, &e.link_id)?)
                        }
                    };
                    // A link with a form step ends with the form: its
                    // `step.completed` comes from the form's submission.
                    if ty == EventType::StepCompleted
                        && link.as_ref().is_some_and(|l| l.form.is_some())
                    {
                        continue;
                    }
                    types.push(ty);
                }
                if types.is_empty() {
                    continue;
                }
                let left = room.entry(hook.id).or_insert_with(|| {
                    build_ahead.saturating_sub(self.hub.outbox().pending_of(&hook.id))
                });
                if *left == 0 {
                    backlog.after.insert(hook.id, e.id.just_before());
                    continue;
                }
                *left = left.saturating_sub(types.len());
                let link = links.get(&e.link_id).and_then(Option::as_ref);
                for ty in types {
                    let attrs = match e.visitor_id {
                        Some(v) => match attributes.entry(v) {
                            Entry::Occupied(o) => o.into_mut(),
                            Entry::Vacant(slot) => slot.insert(stored_attributes(store, &v)?),
                        },
                        None => &no_attributes,
                    };
                    let body = scan_body(ty, e, link, attrs, None, &self.hub.settings)?;
                    out.push(new_message(
                        message_id(&e.id, &hook.id, ty),
                        hook,
                        ty,
                        body,
                        now,
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Builds the messages of one hook's scans waiting in the log, read from
    /// the store after `after` up to `position`, while it has room. Answers
    /// them; `backlog` holds the hook again when scans still wait.
    fn catch_up(
        &self,
        store: &Store,
        hook: WebhookId,
        after: EventId,
        position: EventId,
        backlog: &mut Backlog,
        now: Timestamp,
    ) -> StoreResult<Vec<(Message, Delivery)>> {
        let size = self.hub.settings.webhooks.read_batch_size;
        let mut out = Vec::new();
        let mut after = after;
        for _ in 0..BACKLOG_PAGES {
            let page = store.events_after(Some(after), size)?;
            let last = page.last().map(|e| e.id);
            let events = page.iter().filter(|e| !e.bot && e.id <= position);
            out.extend(self.build(store, events, backlog, Some(hook), now)?);
            let reached = page.len() < size || last.is_none_or(|l| l >= position);
            match last {
                // Out of room: `build` put the hook back.
                _ if backlog.after.contains_key(&hook) => return Ok(out),
                Some(l) if !reached => after = l,
                _ => return Ok(out),
            }
        }
        backlog.after.insert(hook, after);
        Ok(out)
    }

    /// Counts this worker's thread in the hub's pacer, once (called on it).
    fn count_in_pacer(&mut self) {
        if !self.paced {
            self.hub.pacer().register_current_thread();
            self.paced = true;
        }
    }

    /// Writes messages in transactions of at most `MESSAGES_PER_TX`, the
    /// last with `record` when given.
    fn write(
        &self,
        new: &[(Message, Delivery)],
        record: Option<&ConsumerRecord>,
    ) -> StoreResult<()> {
        let mut parts = new.chunks(MESSAGES_PER_TX).peekable();
        while let Some(part) = parts.next() {
            let last = parts.peek().is_none();
            // A full outbox makes room here, in the same transaction, not on
            // the delivery worker, whose time then goes to sending.
            self.hub.store_within_capacity(
                part,
                record.filter(|_| last).map(|r| (Self::NAME, r)),
                Timestamp::now(),
            )?;
        }
        if new.is_empty()
            && let Some(record) = record
        {
            store_messages(&self.hub.store, &[], Some((Self::NAME, record)))?;
        }
        Ok(())
    }

    /// Pending messages below which a waiting hook is caught up.
    fn catch_up_below(&self) -> usize {
        (self.hub.settings.webhooks.build_ahead / 2).max(1)
    }

    /// Whether a hook whose scans wait in the log has room again.
    fn has_room(&self, backlog: &Backlog) -> bool {
        let below = self.catch_up_below();
        let outbox = self.hub.outbox();
        backlog.after.keys().any(|h| outbox.pending_of(h) < below)
    }
}

impl Consumer for Webhooks {
    const NAME: &'static str = "webhooks";
    type State = Backlog;

    /// Events given as a slice are copied into a batch of their own, then
    /// kept as `apply_shared` keeps a batch.
    fn apply(&mut self, state: &mut Backlog, events: &[ScanEvent]) {
        self.apply_shared(state, &Arc::from(events), None);
    }

    /// Keeps the batch itself until the checkpoint (shared with the
    /// Recorder's message or the page read from the store, not copied),
    /// with the positions of its non-bot events that can make a message; a
    /// batch with none is not kept. An event of a workspace without a hook
    /// now, scanned before `now`, makes none: hooks are created under
    /// `create_lock` with their creation time taken there, so a hook made
    /// after this check was created at `now` or later and wants only scans
    /// from then on.
    fn apply_shared(
        &mut self,
        _: &mut Backlog,
        events: &Arc<[ScanEvent]>,
        _: Option<&[VisitorId]>,
    ) {
        self.count_in_pacer();
        let mut has_hooks: HashMap<WorkspaceId, bool> = HashMap::new();
        let now = {
            let _no_hook_created_meanwhile = self
                .hub
                .create_lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for e in events.iter().filter(|e| !e.bot) {
                has_hooks.entry(e.workspace_id).or_insert_with(|| {
                    // Unreadable: keep the events; `prepare` reads the hooks again.
                    self.hub.store.has_webhooks(&e.workspace_id).unwrap_or(true)
                });
            }
            Timestamp::now().as_millis()
        };
        let positions: Vec<u32> = (0u32..)
            .zip(events.iter())
            .filter(|(_, e)| !e.bot)
            .filter(|(_, e)| has_hooks[&e.workspace_id] || e.timestamp_ms() >= now)
            .map(|(i, _)| i)
            .collect();
        if !positions.is_empty() {
            self.kept.push(Kept {
                batch: events.clone(),
                positions,
            });
        }
    }

    /// Builds the messages of the kept batches not built yet (a `persist`
    /// that failed leaves them built), for the hooks as they are now, and
    /// puts the hooks out of room into the backlog, which is stored with
    /// the position.
    fn prepare(&mut self, backlog: &mut Backlog, store: &Store) -> StoreResult<()> {
        let events: Vec<&ScanEvent> = self.kept[self.built..]
            .iter()
            .flat_map(|k| k.positions.iter().filter_map(|&i| k.batch.get(i as usize)))
            .collect();
        let waiting = backlog.len();
        let new = self.build(store, events, backlog, None, Timestamp::now())?;
        self.ready.extend(new);
        self.built = self.kept.len();
        if backlog.len() > waiting {
            tracing::info!(
                waiting = backlog.len(),
                build_ahead = self.hub.settings.webhooks.build_ahead,
                "webhook endpoint slower than its scans: their messages wait in the event log until it takes the ones built"
            );
        }
        self.hub
            .metrics
            .webhook_backlog_hooks
            .set(backlog.len() as u64);
        Ok(())
    }

    /// Writes the built messages in transactions of at most
    /// `MESSAGES_PER_TX`, the last with the consumer's record (position and
    /// backlog); each part is scheduled once written. A crash between two
    /// parts loses nothing: the position was not saved, so the events are
    /// derived again and the messages already written are skipped (their
    /// IDs come from the event, hook and type).
    fn persist(&mut self, _: &Store, record: &ConsumerRecord) -> StoreResult<()> {
        self.write(&self.ready, Some(record))?;
        self.ready.clear();
        self.kept.clear();
        self.built = 0;
        Ok(())
    }

    /// A hook waits, has room, and the last catch-up is a checkpoint
    /// interval ago: not at every step (the worker steps more often while it
    /// reads behind the Recorder), nor when the delivery makes room. A
    /// waiting hook so gets between half of `build_ahead` and all of it an
    /// interval (2,500 to 5,000 messages a second with the defaults), and
    /// its delivery does not take the cores from the redirects it is behind
    /// on: woken at every recorded outcome, the delivery in the load bench
    /// sent 66,346 messages during the load against 23,326, and the
    /// redirects fell from 0.66 to 0.58 of the bare route's throughput.
    fn needs_maintenance(&self, backlog: &Backlog, now: Timestamp) -> bool {
        let interval = self.hub.settings.webhooks.checkpoint_interval_ms as i64;
        !backlog.is_empty()
            && now.as_millis().saturating_sub(self.caught_up_ms) >= interval
            && self.has_room(backlog)
    }

    /// Builds the messages of scans waiting in the log for the hooks that
    /// have room again, and writes them; the backlog that remains is stored
    /// by the checkpoint after. A crash in between builds the same messages
    /// again, and they are skipped as stored. A hook's mark moves only once
    /// its messages are written, so an error leaves it where it was. A hook
    /// deleted or no longer taking messages leaves the backlog: its waiting
    /// scans make none, as they would have made none when scanned.
    fn maintain(
        &mut self,
        backlog: &mut Backlog,
        store: &Store,
        position: Option<EventId>,
        now: Timestamp,
    ) -> StoreResult<bool> {
        self.count_in_pacer();
        let Some(position) = position else {
            return Ok(false);
        };
        self.caught_up_ms = now.as_millis();
        let below = self.catch_up_below();
        let waiting: Vec<(WebhookId, EventId)> =
            backlog.after.iter().map(|(h, e)| (*h, *e)).collect();
        let mut changed = false;
        for (hook, after) in waiting {
            let takes = store
                .webhook(&hook)?
                .is_some_and(|h| h.status.takes_messages());
            if !takes {
                backlog.after.remove(&hook);
                changed = true;
                continue;
            }
            if self.hub.outbox().pending_of(&hook) >= below {
                continue;
            }
            let mut next = backlog.clone();
            next.after.remove(&hook);
            let new = self.catch_up(store, hook, after, position, &mut next, now)?;
            self.write(&new, None)?;
            *backlog = next;
            changed = true;
        }
        self.hub
            .metrics
            .webhook_backlog_hooks
            .set(backlog.len() as u64);
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::LinkId;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    #[test]
    fn webhook_outbox_takes_due_messages_per_hook_and_evicts_the_busiest_hooks_oldest() {
        let mut o = Outbox::default();
        let (a, b) = (WebhookId::generate(), WebhookId::generate());
        let ids: Vec<MessageId> = (0..5).map(|_| MessageId::generate()).collect();
        o.add(a, ids[0], at(10));
        o.add(a, ids[1], at(5));
        o.add(a, ids[2], at(100));
        o.add(b, ids[3], at(1));
        assert_eq!(o.len(), 4);
        assert_eq!(o.due_hooks(at(0)), vec![]);
        assert_eq!(o.due_hooks(at(10)), vec![(b, 0), (a, 0)]);
        assert_eq!(o.take_due(a, at(10), 5), vec![ids[1], ids[0]]);
        assert_eq!(o.due_hooks(at(10)), vec![(b, 0)]);
        assert_eq!(o.in_flight(), 2);
        // In flight: a new schedule waits for the attempt's end, then holds.
        o.add(a, ids[0], at(1));
        assert_eq!(o.take_due(a, at(10), 5), vec![]);
        o.done(a, ids[0]);
        o.done(a, ids[1]);
        assert_eq!(o.len(), 3, "ids[0] is queued again");
        assert_eq!(o.take_due(a, at(10), 5), vec![ids[0]]);
        o.done(a, ids[0]);
        assert_eq!(o.len(), 2);
        o.add(b, ids[4], at(1));
        // b has two queued, a one: b's oldest goes first, then a tie is
        // broken the same way every time.
        assert_eq!(o.evict(1), vec![(b, ids[3])]);
        assert_eq!(o.len(), 2);
        assert_eq!(o.take_queued(a), vec![ids[2]]);
        assert_eq!(o.pending_of(&b), 1);
    }

    #[test]
    fn an_attempt_waiting_to_be_recorded_frees_its_slot_but_is_not_taken_again() {
        let mut o = Outbox::default();
        let a = WebhookId::generate();
        let (m, n) = (MessageId::generate(), MessageId::generate());
        o.add(a, m, at(1));
        o.add(a, n, at(2));
        assert_eq!(o.take_due(a, at(5), 1), vec![m]);
        assert_eq!(o.due_hooks(at(5)), vec![(a, 1)]);
        o.ended(a, m);
        // The slot is free, the message still pending and not due.
        assert_eq!(o.in_flight(), 0);
        assert_eq!(o.due_hooks(at(5)), vec![(a, 0)]);
        assert_eq!(o.len(), 2);
        assert_eq!(o.pending_of(&a), 2);
        // Queued again meanwhile (a redeliver racing the record): it waits.
        o.add(a, m, at(3));
        assert_eq!(o.take_due(a, at(5), 5), vec![n]);
        assert_eq!(o.evict(5), vec![], "neither is queued");
        o.done(a, m);
        assert_eq!(o.take_due(a, at(5), 5), vec![m]);
        o.done(a, m);
        o.done(a, n);
        assert!(o.is_empty());
    }

    #[test]
    fn room_for_new_messages_is_made_from_the_busiest_hooks_oldest_queued_or_new() {
        let mut o = Outbox::default();
        let (a, b) = (WebhookId::generate(), WebhookId::generate());
        let mut ids: Vec<MessageId> = (0..8).map(|_| MessageId::generate()).collect();
        ids.sort();
        // a: 0 in flight, 2 and 5 queued; b: 1 queued.
        o.add(a, ids[0], at(1));
        assert_eq!(o.take_due(a, at(1), 1), vec![ids[0]]);
        o.add(a, ids[2], at(1));
        o.add(a, ids[5], at(1));
        o.add(b, ids[1], at(1));
        // New: 3, 4 and 7 for a, 6 for b.
        let new = [(a, ids[7]), (a, ids[3]), (b, ids[6]), (a, ids[4])];
        // a has 5 (2 queued, 3 new) against b's 2: a's oldest go first
        // (2, 3, 4), then the tie of a and b at 2 each is broken the same
        // way every time; the one in flight is never chosen.
        let four = o.victims(&new, 4);
        assert_eq!(&four[..3], &[(a, ids[2]), (a, ids[3]), (a, ids[4])]);
        let next = if a > b { (b, ids[1]) } else { (a, ids[5]) };
        assert_eq!(four[3], next);
        assert_eq!(o.victims(&new, 100).len(), 7, "all but the one in flight");
        assert_eq!(o.len(), 4, "victims changes nothing");
        assert_eq!(o.victims(&[], 1), vec![(a, ids[2])]);
        o.remove_queued(a, ids[2]);
        assert_eq!(o.len(), 3);
    }

    #[test]
    fn webhook_bodies_follow_the_contract() {
        let settings = Settings::load_with_env(None, Vec::new()).unwrap();
        let (ws, link_id) = (WorkspaceId::generate(), LinkId::generate());
        let event = ScanEvent::sample(EventId::generate(), ws, link_id);
        let none = serde_json::Map::new();
        let body = scan_body(
            EventType::StepCompleted,
            &event,
            None,
            &none,
            None,
            &settings,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["type"], "step.completed");
        assert_eq!(v["data"]["scan_id"], event.id.to_string());
        assert_eq!(v["data"]["event"]["id"], event.id.to_string());
        assert_eq!(v["data"]["link"], serde_json::Value::Null);
        assert_eq!(v["data"]["visitor"], serde_json::Value::Null);
        assert_eq!(v["data"]["step"]["action"], "redirect");
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["type", "timestamp", "data"]);
        let scanned =
            scan_body(EventType::QrScanned, &event, None, &none, None, &settings).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&scanned).unwrap();
        assert!(v["data"].get("step").is_none());
    }

    #[test]
    fn a_scan_body_carries_the_whole_event_its_link_and_its_visitor() {
        let settings = Settings::load_with_env(None, Vec::new()).unwrap();
        let ws = WorkspaceId::generate();
        let mut link = Link::sample(ws, "menu", "https://example.com/menu");
        link.name = Some("Menu \"dinner\"".into());
        link.tags = vec!["table".into(), "ünïcode".into()];
        let mut event = ScanEvent::sample(EventId::generate(), ws, link.id);
        event.visitor_id = Some(VisitorId::generate());
        event.os = Some("iOS".into());
        event.os_version = Some("17.4".into());
        event.browser = Some("Mobile Safari".into());
        event.browser_version = Some("17.4".into());
        event.country = Some("FR".into());
        event.region = Some("Île-de-France".into());
        event.city = Some("Paris, a city name longer than twenty-four bytes".into());
        event.isp = Some("Orange".into());
        event.asn = Some(3215);
        event.language = Some("fr".into());
        event.referer = Some("https://news.example/?q=\"x\"".into());
        event.ip_hash = [0xab; 32];
        let attributes: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(r#"{"email": "a@b.example", "vip": true}"#).unwrap();
        let answers: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(r#"{"size": "L"}"#).unwrap();
        let body = scan_body(
            EventType::StepCompleted,
            &event,
            Some(&link),
            &attributes,
            Some(&answers),
            &settings,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let expected_event = serde_json::json!({
            "id": event.id.to_string(),
            "link_id": link.id.to_string(),
            "visitor_id": event.visitor_id.unwrap().to_string(),
            "timestamp": Timestamp::from_millis(event.timestamp_ms()).to_string(),
            "method": "GET",
            "device_type": "mobile",
            "os": "iOS",
            "os_version": "17.4",
            "browser": "Mobile Safari",
            "browser_version": "17.4",
            "country": "FR",
            "region": "Île-de-France",
            "city": "Paris, a city name longer than twenty-four bytes",
            "isp": "Orange",
            "asn": 3215,
            "language": "fr",
            "referer": "https://news.example/?q=\"x\"",
            "destination": "https://e.com/",
            "ip_hash": "ab".repeat(32),
            "bot": false,
        });
        assert_eq!(v["data"]["event"], expected_event);
        let expected_link = serde_json::json!({
            "id": link.id.to_string(),
            "name": "Menu \"dinner\"",
            "slug": "menu",
            "short_url": settings.short_url("menu"),
            "destination": "https://example.com/menu",
            "tags": ["table", "ünïcode"],
        });
        assert_eq!(v["data"]["link"], expected_link);
        assert_eq!(
            v["data"]["visitor"],
            serde_json::json!({
                "id": event.visitor_id.unwrap().to_string(),
                "attributes": {"email": "a@b.example", "vip": true},
            })
        );
        assert_eq!(
            v["data"]["step"],
            serde_json::json!({"kind": "exit", "action": "form", "answers": {"size": "L"}})
        );
        assert_eq!(v["timestamp"], expected_event["timestamp"]);
    }
}
