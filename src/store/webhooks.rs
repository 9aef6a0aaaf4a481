//! Webhooks, their messages (the outbox) and the delivery log.
//!
//! - `webhooks`: hook ID → `Webhook`; `webhooks_by_workspace`: workspace ID
//!   ++ hook ID → empty.
//! - `webhook_messages`: message ID → `Message`; `webhook_messages_by_hook`:
//!   hook ID ++ message ID → empty (message IDs carry their event's time).
//! - `webhook_deliveries`: delivery ID → `Delivery`;
//!   `webhook_deliveries_by_hook`: hook ID ++ delivery ID → empty.
//! - `webhook_outbox`: message ID → hook ID, exactly the pending messages.
//!
//! Every change of a message, its delivery records and its hook's counters
//! happens in one transaction over these trees (`Store::webhook_tx`), which
//! also holds the `consumers` tree, so the Webhooks worker saves new
//! messages and its position together.

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::codec::{self, Record};
use super::scan::{self, Page};
use super::{ConsumerRecord, Store, StoreError, StoreResult, keys};
use crate::domain::Timestamp;
use crate::domain::webhook::{Delivery, DeliveryStatus, Message, MessageState, Webhook};
use crate::ids::{
    DeliveryId, DeliveryKind, MessageId, MessageKind, WebhookId, WebhookKind, WorkspaceId,
};

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
    messages_by_hook: &'a TransactionalTree,
    deliveries: &'a TransactionalTree,
    deliveries_by_hook: &'a TransactionalTree,
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

    pub fn message(&self, id: &MessageId) -> Result<Option<Message>, TxError> {
        self.messages
            .get(id.as_bytes())?
            .map(|v| codec::decode(&v).map_err(abort))
            .transpose()
    }

    /// Writes a message with its hook index entry, and keeps the outbox
    /// entry exactly while it is pending.
    pub fn put_message(&self, m: &Message) -> Result<(), TxError> {
        self.messages
            .insert(&m.id.as_bytes()[..], codec::encode(m).map_err(abort)?)?;
        self.messages_by_hook
            .insert(&keys::pair(&m.hook_id, &m.id)[..], &[])?;
        if m.state == MessageState::Pending {
            self.outbox
                .insert(&m.id.as_bytes()[..], &m.hook_id.as_bytes()[..])?;
        } else {
            self.outbox.remove(&m.id.as_bytes()[..])?;
        }
        Ok(())
    }

    pub fn delivery(&self, id: &DeliveryId) -> Result<Option<Delivery>, TxError> {
        self.deliveries
            .get(id.as_bytes())?
            .map(|v| codec::decode(&v).map_err(abort))
            .transpose()
    }

    pub fn put_delivery(&self, d: &Delivery) -> Result<(), TxError> {
        self.deliveries
            .insert(&d.id.as_bytes()[..], codec::encode(d).map_err(abort)?)?;
        self.deliveries_by_hook
            .insert(&keys::pair(&d.hook_id, &d.id)[..], &[])?;
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

impl Store {
    /// Runs `f` in one transaction over the webhook trees (and `consumers`).
    /// sled may run `f` more than once when transactions conflict.
    pub fn webhook_tx<T>(&self, f: impl Fn(&WebhookTx) -> Result<T, TxError>) -> StoreResult<T> {
        let t = &self.inner;
        let result = (
            &t.webhooks,
            &t.webhook_messages,
            &t.webhook_messages_by_hook,
            &t.webhook_deliveries,
            &t.webhook_deliveries_by_hook,
            &t.webhook_outbox,
            &t.consumers,
        )
            .transaction(
                |(
                    hooks,
                    messages,
                    messages_by_hook,
                    deliveries,
                    deliveries_by_hook,
                    outbox,
                    consumers,
                )| {
                    f(&WebhookTx {
                        hooks,
                        messages,
                        messages_by_hook,
                        deliveries,
                        deliveries_by_hook,
                        outbox,
                        consumers,
                    })
                },
            )?;
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
    /// their index and outbox entries); answers how many records it removed,
    /// 0 when none are left.
    pub fn purge_webhook_records(&self, id: &WebhookId, max: usize) -> StoreResult<usize> {
        let t = &self.inner;
        let mut removed = 0;
        let messages: Vec<sled::IVec> = t
            .webhook_messages_by_hook
            .scan_prefix(id.as_bytes())
            .keys()
            .take(max)
            .collect::<Result<_, _>>()?;
        for key in messages {
            let Some(msg) = keys::pair_suffix::<MessageKind>(&key) else {
                continue;
            };
            (
                &t.webhook_messages,
                &t.webhook_messages_by_hook,
                &t.webhook_outbox,
            )
                .transaction(|(m, by_hook, outbox)| {
                    m.remove(&msg.as_bytes()[..])?;
                    by_hook.remove(&key)?;
                    outbox.remove(&msg.as_bytes()[..])?;
                    Ok::<_, TxError>(())
                })?;
            removed += 1;
        }
        let deliveries: Vec<sled::IVec> = t
            .webhook_deliveries_by_hook
            .scan_prefix(id.as_bytes())
            .keys()
            .take(max)
            .collect::<Result<_, _>>()?;
        for key in deliveries {
            let Some(d) = keys::pair_suffix::<DeliveryKind>(&key) else {
                continue;
            };
            (&t.webhook_deliveries, &t.webhook_deliveries_by_hook).transaction(
                |(d_tree, idx)| {
                    d_tree.remove(&d.as_bytes()[..])?;
                    idx.remove(&key)?;
                    Ok::<_, TxError>(())
                },
            )?;
            removed += 1;
        }
        Ok(removed)
    }

    pub fn webhook_message(&self, id: &MessageId) -> StoreResult<Option<Message>> {
        self.inner
            .webhook_messages
            .get(id.as_bytes())?
            .map(|v| codec::decode(&v))
            .transpose()
    }

    pub fn webhook_delivery(&self, id: &DeliveryId) -> StoreResult<Option<Delivery>> {
        self.inner
            .webhook_deliveries
            .get(id.as_bytes())?
            .map(|v| codec::decode(&v))
            .transpose()
    }

    /// Every pending message with its due time (the outbox, read at start).
    pub fn pending_webhook_messages(&self) -> StoreResult<Vec<PendingMessage>> {
        let mut out = Vec::new();
        for entry in self.inner.webhook_outbox.iter() {
            let (key, _) = entry?;
            let Some(id) = MessageId::from_slice(&key) else {
                continue;
            };
            if let Some(m) = self.webhook_message(&id)?
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
            .webhook_messages_by_hook
            .range(start..=end)
            .keys()
            .map(|k| {
                let k = k?;
                keys::pair_suffix::<MessageKind>(&k)
                    .ok_or_else(|| StoreError::Codec("message index key".into()))
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
            .webhook_deliveries_by_hook
            .range(start..end)
            .rev()
            .map(|entry| {
                let (key, _) = entry?;
                let found = match keys::pair_suffix::<DeliveryKind>(&key) {
                    Some(d) => self
                        .webhook_delivery(&d)?
                        .filter(|d| status.is_none_or(|s| d.status == s)),
                    None => None,
                };
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
        let messages = prune_finished(
            (&t.webhook_messages, &t.webhook_messages_by_hook),
            start..bound,
            max,
            |v| Ok(codec::decode::<Message>(v)?.state != MessageState::Pending),
        )?;
        let deliveries = prune_finished(
            (&t.webhook_deliveries, &t.webhook_deliveries_by_hook),
            start..bound,
            max,
            |v| Ok(codec::decode::<Delivery>(v)?.status != DeliveryStatus::Pending),
        )?;
        Ok(messages + deliveries)
    }
}

/// Removes up to `max` records whose index keys (owner ++ record ID) fall in
/// `range`, each with its index entry in one transaction, when `finished`
/// says so of the stored record (or it is gone); answers how many.
fn prune_finished(
    (records, index): (&sled::Tree, &sled::Tree),
    range: std::ops::Range<[u8; 32]>,
    max: usize,
    finished: impl Fn(&[u8]) -> StoreResult<bool>,
) -> StoreResult<usize> {
    let old: Vec<sled::IVec> = index
        .range(range)
        .keys()
        .take(max)
        .collect::<Result<_, _>>()?;
    let mut removed = 0;
    for key in old {
        let Some(id) = key.get(16..32) else {
            continue;
        };
        let done = (records, index).transaction(|(r, idx)| {
            let done = match r.get(id)? {
                Some(v) => finished(&v).map_err(abort)?,
                None => true,
            };
            if done {
                r.remove(id)?;
                idx.remove(&key)?;
            }
            Ok::<_, TxError>(done)
        })?;
        removed += usize::from(done);
    }
    Ok(removed)
}
