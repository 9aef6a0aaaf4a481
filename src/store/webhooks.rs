//! Webhooks, their messages (the outbox) and the delivery log.
//!
//! - `webhooks`: hook ID → `Webhook`; `webhooks_by_workspace`: workspace ID
//!   ++ hook ID → empty.
//! - `hook_messages`: hook ID ++ message ID → `Message` (message IDs carry
//!   their event's time, so a hook's messages are one time-ordered range).
//! - `hook_deliveries`: hook ID ++ delivery ID → `Delivery`.
//! - `webhook_outbox`: message ID → hook ID, exactly the pending messages.
//!
//! A message costs the Webhooks worker three sled keys (message, outbox
//! entry, first delivery record); stores of an earlier version, which kept
//! messages and deliveries under their own IDs with an index per hook
//! beside them (five keys), are moved at open
//! (`move_webhook_records_of_former_layout`).
//!
//! Every change of a message, its delivery records and its hook's counters
//! happens in one transaction over these trees (`Store::webhook_tx`), which
//! also holds the `consumers` tree, so the Webhooks worker saves new
//! messages and its position together.

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::codec::{self, Record};
use super::scan::{self, Page};
use super::{ConsumerRecord, Store, StoreError, StoreResult, keys, layout};
use crate::domain::Timestamp;
use crate::domain::webhook::{Delivery, DeliveryStatus, Message, MessageState, Webhook};
use crate::ids::{DeliveryId, MessageId, MessageKind, WebhookId, WebhookKind, WorkspaceId};

/// Delivery records examined at most to fill one page of a filtered list.
const DELIVERY_SCAN_BUDGET: usize = 10_000;

impl Record for Webhook {
    const VERSION: u8 = 1;
}

impl Record for Message {
    const VERSION: u8 = 1;
}

impl Record for Delivery {
    const VERSION: u8 = 1;
}

pub type TxError = ConflictableTransactionError<StoreError>;

fn abort(e: StoreError) -> TxError {
    ConflictableTransactionError::Abort(e)
}

/// The webhook trees inside one transaction, with typed reads and writes
/// that keep the indexes in step.
pub struct WebhookTx<'a> {
    hooks: &'a TransactionalTree,
    messages: &'a TransactionalTree,
    deliveries: &'a TransactionalTree,
    outbox: &'a TransactionalTree,
    consumers: &'a TransactionalTree,
}

impl WebhookTx<'_> {
    pub fn hook(&self, id: &WebhookId) -> Result<Option<Webhook>, TxError> {
        self.hooks
            .get(id.as_bytes())?
            .map(|v| codec::decode(&v).map_err(abort))
            .transpose()
    }

    /// Writes an existing hook (its workspace index is written at creation).
    pub fn put_hook(&self, hook: &Webhook) -> Result<(), TxError> {
        self.hooks
            .insert(&hook.id.as_bytes()[..], codec::encode(hook).map_err(abort)?)?;
        Ok(())
    }

    pub fn message(&self, hook: &WebhookId, id: &MessageId) -> Result<Option<Message>, TxError> {
        self.messages
            .get(keys::pair(hook, id))?
            .map(|v| codec::decode(&v).map_err(abort))
            .transpose()
    }

    /// Writes a message, and keeps its outbox entry exactly while it is
    /// pending.
    pub fn put_message(&self, m: &Message) -> Result<(), TxError> {
        self.messages.insert(
            &keys::pair(&m.hook_id, &m.id)[..],
            codec::encode(m).map_err(abort)?,
        )?;
        self.put_outbox_entry(m)
    }

    fn put_outbox_entry(&self, m: &Message) -> Result<(), TxError> {
        if m.state == MessageState::Pending {
            self.outbox
                .insert(&m.id.as_bytes()[..], &m.hook_id.as_bytes()[..])?;
        } else {
            self.outbox.remove(&m.id.as_bytes()[..])?;
        }
        Ok(())
    }

    /// Writes a new message with the record of its first delivery, unless a
    /// message with its ID is stored already (then nothing changes); answers
    /// whether it wrote. One read of the message's key, the insert's own.
    pub fn add_message(&self, m: &Message, first: &Delivery) -> Result<bool, TxError> {
        let key = keys::pair(&m.hook_id, &m.id);
        let bytes = codec::encode(m).map_err(abort)?;
        if let Some(stored) = self.messages.insert(&key[..], bytes)? {
            self.messages.insert(&key[..], stored)?;
            return Ok(false);
        }
        self.put_outbox_entry(m)?;
        self.put_delivery(first)?;
        Ok(true)
    }

    pub fn delivery(&self, hook: &WebhookId, id: &DeliveryId) -> Result<Option<Delivery>, TxError> {
        self.deliveries
            .get(keys::pair(hook, id))?
            .map(|v| codec::decode(&v).map_err(abort))
            .transpose()
    }

    pub fn put_delivery(&self, d: &Delivery) -> Result<(), TxError> {
        self.deliveries.insert(
            &keys::pair(&d.hook_id, &d.id)[..],
            codec::encode(d).map_err(abort)?,
        )?;
        Ok(())
    }

    pub fn save_consumer(&self, name: &str, record: &ConsumerRecord) -> Result<(), TxError> {
        self.consumers
            .insert(name.as_bytes(), codec::encode(record).map_err(abort)?)?;
        Ok(())
    }
}

/// A pending message as the delivery scheduler needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingMessage {
    pub hook: WebhookId,
    pub message: MessageId,
    pub due: Timestamp,
}

/// The trees of messages and of delivery records.
pub(super) const MESSAGES_TREE: &str = "hook_messages";
pub(super) const DELIVERIES_TREE: &str = "hook_deliveries";

/// The former layout: records under their own IDs, an index per hook beside.
const FORMER_MESSAGES: &str = "webhook_messages";
const FORMER_MESSAGES_BY_HOOK: &str = "webhook_messages_by_hook";
const FORMER_DELIVERIES: &str = "webhook_deliveries";
const FORMER_DELIVERIES_BY_HOOK: &str = "webhook_deliveries_by_hook";

/// Moves the records of the tree `former` into `tree` under hook ID ++
/// record ID (`hook_of` reads a record's hook); answers how many.
fn move_records<R: Record>(
    db: &sled::Db,
    former: &str,
    tree: &sled::Tree,
    hook_of: impl Fn(&R) -> WebhookId,
) -> StoreResult<usize> {
    if !layout::has_tree(db, former) {
        return Ok(0);
    }
    let former = db.open_tree(former)?;
    layout::write_in_batches(
        tree,
        former.iter().map(|entry| {
            let (id, value) = entry?;
            let hook = hook_of(&codec::decode::<R>(&value)?);
            let key = [hook.as_bytes(), &id[..]].concat();
            Ok((key.into(), Some(value)))
        }),
    )
}

/// Moves the messages and delivery records a store of an earlier version
/// holds under their own IDs to `messages` and `deliveries`, keyed by hook
/// and ID, and drops the former trees and their per-hook indexes
/// (`layout`); answers how many records moved.
pub(super) fn move_webhook_records_of_former_layout(
    db: &sled::Db,
    messages: &sled::Tree,
    deliveries: &sled::Tree,
) -> StoreResult<usize> {
    let moved = move_records(db, FORMER_MESSAGES, messages, |m: &Message| m.hook_id)?
        + move_records(db, FORMER_DELIVERIES, deliveries, |d: &Delivery| d.hook_id)?;
    layout::drop_trees(
        db,
        &[
            FORMER_MESSAGES,
            FORMER_MESSAGES_BY_HOOK,
            FORMER_DELIVERIES,
            FORMER_DELIVERIES_BY_HOOK,
        ],
    )?;
    Ok(moved)
}

impl Store {
    /// Runs `f` in one transaction over the webhook trees (and `consumers`).
    /// sled may run `f` more than once when transactions conflict.
    pub fn webhook_tx<T>(&self, f: impl Fn(&WebhookTx) -> Result<T, TxError>) -> StoreResult<T> {
        let t = &self.inner;
        let result = (
            &t.webhooks,
            &t.hook_messages,
            &t.hook_deliveries,
            &t.webhook_outbox,
            &t.consumers,
        )
            .transaction(|(hooks, messages, deliveries, outbox, consumers)| {
                f(&WebhookTx {
                    hooks,
                    messages,
                    deliveries,
                    outbox,
                    consumers,
                })
            })?;
        Ok(result)
    }

    /// Stores a new hook with its workspace index entry.
    pub fn insert_webhook(&self, hook: &Webhook) -> StoreResult<()> {
        let t = &self.inner;
        let bytes = codec::encode(hook)?;
        (&t.webhooks, &t.webhooks_by_workspace).transaction(|(hooks, by_ws)| {
            hooks.insert(&hook.id.as_bytes()[..], bytes.as_slice())?;
            by_ws.insert(&keys::pair(&hook.workspace_id, &hook.id)[..], &[])?;
            Ok::<_, TxError>(())
        })?;
        Ok(())
    }

    pub fn webhook(&self, id: &WebhookId) -> StoreResult<Option<Webhook>> {
        self.inner
            .webhooks
            .get(id.as_bytes())?
            .map(|v| codec::decode(&v))
            .transpose()
    }

    /// The hook `id` if it belongs to `ws` (another workspace's is absent).
    pub fn owned_webhook(&self, ws: &WorkspaceId, id: &WebhookId) -> StoreResult<Option<Webhook>> {
        Ok(self.webhook(id)?.filter(|h| h.workspace_id == *ws))
    }

    /// A workspace's hooks, oldest first.
    /// Whether workspace `ws` has a hook, in any state.
    pub fn has_webhooks(&self, ws: &WorkspaceId) -> StoreResult<bool> {
        Ok(self
            .inner
            .webhooks_by_workspace
            .scan_prefix(ws.as_bytes())
            .keys()
            .next()
            .transpose()?
            .is_some())
    }

    pub fn webhooks_of(&self, ws: &WorkspaceId) -> StoreResult<Vec<Webhook>> {
        let mut out = Vec::new();
        for key in self
            .inner
            .webhooks_by_workspace
            .scan_prefix(ws.as_bytes())
            .keys()
        {
            let key = key?;
            if let Some(hook) = keys::pair_suffix::<WebhookKind>(&key)
                .map(|id| self.webhook(&id))
                .transpose()?
                .flatten()
            {
                out.push(hook);
            }
        }
        Ok(out)
    }

    /// Every hook's ID.
    pub fn webhook_ids(&self) -> StoreResult<Vec<WebhookId>> {
        self.inner
            .webhooks
            .iter()
            .keys()
            .map(|k| {
                let k = k?;
                WebhookId::from_slice(&k).ok_or_else(|| StoreError::Codec("webhook key".into()))
            })
            .collect()
    }

    /// A workspace's hooks, newest first, below `cursor` (a hook ID).
    pub fn list_webhooks(
        &self,
        ws: &WorkspaceId,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> StoreResult<Page<Webhook>> {
        let below = scan::cursor_id(cursor)?.unwrap_or([0xff; 16]);
        let (start, end) = (keys::pair_raw(ws, &[0; 16]), keys::pair_raw(ws, &below));
        let candidates = self
            .inner
            .webhooks_by_workspace
            .range(start..end)
            .rev()
            .map(|entry| {
                let (key, _) = entry?;
                let hook = match keys::pair_suffix::<WebhookKind>(&key) {
                    Some(id) => self.webhook(&id)?,
                    None => None,
                };
                Ok((key[16..].to_vec(), hook))
            });
        scan::paginate(candidates, limit, usize::MAX)
    }

    /// Deletes a hook and its workspace index entry; its messages and
    /// deliveries go with `purge_webhook_records`.
    pub fn delete_webhook(&self, hook: &Webhook) -> StoreResult<()> {
        let t = &self.inner;
        (&t.webhooks, &t.webhooks_by_workspace).transaction(|(hooks, by_ws)| {
            hooks.remove(&hook.id.as_bytes()[..])?;
            by_ws.remove(&keys::pair(&hook.workspace_id, &hook.id)[..])?;
            Ok::<_, TxError>(())
        })?;
        Ok(())
    }

    /// Removes up to `max` messages and `max` deliveries of hook `id` (with
    /// the messages' outbox entries); answers how many records it removed,
    /// 0 when none are left.
    pub fn purge_webhook_records(&self, id: &WebhookId, max: usize) -> StoreResult<usize> {
        let t = &self.inner;
        let mut removed = 0;
        let messages: Vec<sled::IVec> = t
            .hook_messages
            .scan_prefix(id.as_bytes())
            .keys()
            .take(max)
            .collect::<Result<_, _>>()?;
        for key in messages {
            let Some(msg) = keys::pair_suffix::<MessageKind>(&key) else {
                continue;
            };
            (&t.hook_messages, &t.webhook_outbox).transaction(|(m, outbox)| {
                m.remove(&key)?;
                outbox.remove(&msg.as_bytes()[..])?;
                Ok::<_, TxError>(())
            })?;
            removed += 1;
        }
        let deliveries: Vec<sled::IVec> = t
            .hook_deliveries
            .scan_prefix(id.as_bytes())
            .keys()
            .take(max)
            .collect::<Result<_, _>>()?;
        for key in deliveries {
            t.hook_deliveries.remove(&key)?;
            removed += 1;
        }
        Ok(removed)
    }

    pub fn webhook_message(
        &self,
        hook: &WebhookId,
        id: &MessageId,
    ) -> StoreResult<Option<Message>> {
        self.inner
            .hook_messages
            .get(keys::pair(hook, id))?
            .map(|v| codec::decode(&v))
            .transpose()
    }

    /// Message `id` of whichever hook has it (tests only: a scan of every
    /// message).
    #[cfg(test)]
    pub fn webhook_message_in_any_hook(&self, id: &MessageId) -> Option<Message> {
        self.inner.hook_messages.iter().find_map(|entry| {
            let (key, value) = entry.unwrap();
            (&key[16..] == id.as_bytes()).then(|| codec::decode(&value).unwrap())
        })
    }

    pub fn webhook_delivery(
        &self,
        hook: &WebhookId,
        id: &DeliveryId,
    ) -> StoreResult<Option<Delivery>> {
        self.inner
            .hook_deliveries
            .get(keys::pair(hook, id))?
            .map(|v| codec::decode(&v))
            .transpose()
    }

    /// Every pending message with its due time (the outbox, read at start).
    pub fn pending_webhook_messages(&self) -> StoreResult<Vec<PendingMessage>> {
        let mut out = Vec::new();
        for entry in self.inner.webhook_outbox.iter() {
            let (key, hook) = entry?;
            let (Some(id), Some(hook)) =
                (MessageId::from_slice(&key), WebhookId::from_slice(&hook))
            else {
                continue;
            };
            if let Some(m) = self.webhook_message(&hook, &id)?
                && m.state == MessageState::Pending
            {
                out.push(PendingMessage {
                    hook: m.hook_id,
                    message: m.id,
                    due: m.next_attempt_at,
                });
            }
        }
        Ok(out)
    }

    /// IDs of hook `id`'s messages made at or after `since`, oldest first.
    pub fn webhook_messages_since(
        &self,
        id: &WebhookId,
        since: Timestamp,
    ) -> StoreResult<Vec<MessageId>> {
        let start = keys::pair_raw(id, &MessageId::lower_bound_bytes(since.as_millis()));
        let end = keys::pair_raw(id, &[0xff; 16]);
        self.inner
            .hook_messages
            .range(start..=end)
            .keys()
            .map(|k| {
                let k = k?;
                keys::pair_suffix::<MessageKind>(&k)
                    .ok_or_else(|| StoreError::Codec("message key".into()))
            })
            .collect()
    }

    /// Hook `id`'s delivery records, newest first, below `cursor` (a
    /// delivery ID), only those with `status` when given.
    pub fn list_webhook_deliveries(
        &self,
        id: &WebhookId,
        status: Option<DeliveryStatus>,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> StoreResult<Page<Delivery>> {
        let below = scan::cursor_id(cursor)?.unwrap_or([0xff; 16]);
        let (start, end) = (keys::pair_raw(id, &[0; 16]), keys::pair_raw(id, &below));
        let candidates = self
            .inner
            .hook_deliveries
            .range(start..end)
            .rev()
            .map(|entry| {
                let (key, value) = entry?;
                let d: Delivery = codec::decode(&value)?;
                let found = status.is_none_or(|s| d.status == s).then_some(d);
                Ok((key[16..].to_vec(), found))
            });
        scan::paginate(candidates, limit, DELIVERY_SCAN_BUDGET)
    }

    /// Removes hook `id`'s finished messages made before `cutoff` and its
    /// finished delivery records scheduled before it, at most `max` of each;
    /// answers how many records it removed.
    pub fn prune_webhook_records(
        &self,
        id: &WebhookId,
        cutoff: Timestamp,
        max: usize,
    ) -> StoreResult<usize> {
        let bound = keys::pair_raw(id, &MessageId::lower_bound_bytes(cutoff.as_millis()));
        let start = keys::pair_raw(id, &[0; 16]);
        let t = &self.inner;
        let messages = prune_finished(&t.hook_messages, start..bound, max, |v| {
            Ok(codec::decode::<Message>(v)?.state != MessageState::Pending)
        })?;
        let deliveries = prune_finished(&t.hook_deliveries, start..bound, max, |v| {
            Ok(codec::decode::<Delivery>(v)?.status != DeliveryStatus::Pending)
        })?;
        Ok(messages + deliveries)
    }
}

/// Removes up to `max` records of `tree` whose keys (hook ++ record ID)
/// fall in `range` when `finished` says so of them; answers how many. Each
/// is removed only if it is still the value that was judged finished.
fn prune_finished(
    tree: &sled::Tree,
    range: std::ops::Range<[u8; 32]>,
    max: usize,
    finished: impl Fn(&[u8]) -> StoreResult<bool>,
) -> StoreResult<usize> {
    let mut removed = 0;
    for entry in tree.range(range).take(max) {
        let (key, value) = entry?;
        if finished(&value)? {
            let gone = tree.compare_and_swap(&key, Some(&value), None::<&[u8]>)?;
            removed += usize::from(gone.is_ok());
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::webhooks::new_message;
    use crate::domain::webhook::EventType;

    fn hook(ws: WorkspaceId) -> Webhook {
        Webhook::new(
            ws,
            "https://hooks.example/x".into(),
            vec![EventType::QrScanned],
            None,
            vec![7; 24],
            Timestamp::from_millis(1_700_000_000_000),
        )
    }

    #[test]
    fn messages_and_deliveries_of_the_former_layout_move_to_their_hook_keys() {
        let dir = tempfile::tempdir().unwrap();
        let ws = WorkspaceId::generate();
        let (a, b) = (hook(ws), hook(ws));
        let now = Timestamp::from_millis(1_700_000_000_000);
        let made: Vec<(Message, Delivery)> = [&a, &a, &b]
            .into_iter()
            .map(|h| {
                new_message(
                    MessageId::generate(),
                    h,
                    EventType::QrScanned,
                    b"{}".to_vec(),
                    now,
                )
            })
            .collect();
        {
            let store = Store::open(dir.path(), 4).unwrap();
            let db = &store.inner.db;
            let trees = [
                FORMER_MESSAGES,
                FORMER_MESSAGES_BY_HOOK,
                FORMER_DELIVERIES,
                FORMER_DELIVERIES_BY_HOOK,
            ]
            .map(|name| db.open_tree(name).unwrap());
            for h in [&a, &b] {
                store.insert_webhook(h).unwrap();
            }
            // A record under its own ID, and its hook's index entry.
            let former = |n: usize, hook: &WebhookId, id: &[u8; 16], record: Vec<u8>| {
                trees[n].insert(id, record).unwrap();
                let entry = [hook.as_bytes(), &id[..]].concat();
                trees[n + 1].insert(entry, &[][..]).unwrap();
            };
            for (m, d) in &made {
                former(0, &m.hook_id, m.id.as_bytes(), codec::encode(m).unwrap());
                former(2, &d.hook_id, d.id.as_bytes(), codec::encode(d).unwrap());
                store
                    .inner
                    .webhook_outbox
                    .insert(m.id.as_bytes(), m.hook_id.as_bytes())
                    .unwrap();
            }
            store.flush().unwrap();
        }
        let store = Store::open(dir.path(), 4).unwrap();
        for (m, d) in &made {
            assert_eq!(
                store.webhook_message(&m.hook_id, &m.id).unwrap().as_ref(),
                Some(m)
            );
            assert_eq!(
                store.webhook_delivery(&d.hook_id, &d.id).unwrap().as_ref(),
                Some(d)
            );
        }
        let other = if made[0].0.hook_id == a.id { &b } else { &a };
        assert_eq!(
            store.webhook_message(&other.id, &made[0].0.id).unwrap(),
            None,
            "a message is found under its own hook only"
        );
        assert_eq!(store.pending_webhook_messages().unwrap().len(), 3);
        let listed = store
            .list_webhook_deliveries(&a.id, None, None, 10)
            .unwrap()
            .items;
        assert_eq!(listed.len(), 2);
        assert_eq!(
            store.webhook_messages_since(&b.id, now).unwrap(),
            [made[2].0.id]
        );
        let names = store.inner.db.tree_names();
        for former in [
            FORMER_MESSAGES,
            FORMER_MESSAGES_BY_HOOK,
            FORMER_DELIVERIES,
            FORMER_DELIVERIES_BY_HOOK,
        ] {
            assert!(
                !names.iter().any(|n| n == former.as_bytes()),
                "{former} dropped"
            );
        }
        // Purging a hook's records removes them and their outbox entries.
        while store.purge_webhook_records(&a.id, 1).unwrap() > 0 {}
        assert_eq!(store.webhook_message(&a.id, &made[0].0.id).unwrap(), None);
        assert_eq!(store.pending_webhook_messages().unwrap().len(), 1);
    }
}
