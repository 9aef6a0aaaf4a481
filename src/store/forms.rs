//! Form steps: the completion of a scan's form, written once. Recording the
//! completion, counting it for the link and merging the answers into the
//! visitor's attributes is one transaction, so a submission is either
//! stored whole or not at all, and a second one for the same scan is
//! refused.

use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use super::codec::{self, Record};
use super::links::decode_count;
use super::{Store, StoreError, StoreResult, StoredAttributes, keys};
use crate::domain::Timestamp;
use crate::ids::{EventId, LinkId, VisitorId, WorkspaceId};

/// A scan's form, completed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FormCompletion {
    pub scan_id: EventId,
    pub link_id: LinkId,
    pub workspace_id: WorkspaceId,
    pub visitor_id: Option<VisitorId>,
    /// (field name, answer as JSON text), in the form's order.
    pub answers: Vec<(String, String)>,
    pub completed_at: Timestamp,
}

impl Record for FormCompletion {
    const VERSION: u8 = 1;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormWrite {
    Completed,
    /// This scan's form was completed before: nothing was written.
    AlreadyCompleted,
}

impl Store {
    pub fn form_completion(&self, scan_id: &EventId) -> StoreResult<Option<FormCompletion>> {
        self.inner
            .form_completions
            .get(scan_id.as_bytes())?
            .map(|v| codec::decode(&v))
            .transpose()
    }

    /// Forms completed on link `id`.
    pub fn form_completions(&self, id: &LinkId) -> StoreResult<u64> {
        let key = keys::counter(keys::CounterKind::FormCompletions, id);
        Ok(self
            .inner
            .counters
            .get(key)?
            .map(|v| decode_count(&v))
            .unwrap_or(0))
    }

    /// Stores `c` once per scan, counts it, and merges the answers into the
    /// visitor's attributes with `merge` (given the stored ones; `None`
    /// leaves them as they are), in one transaction.
    pub fn complete_form(
        &self,
        c: &FormCompletion,
        merge: impl Fn(Option<StoredAttributes>) -> Option<StoredAttributes>,
    ) -> StoreResult<FormWrite> {
        let encoded = codec::encode(c)?;
        let counter = keys::counter(keys::CounterKind::FormCompletions, &c.link_id);
        let t = &self.inner;
        let abort = ConflictableTransactionError::Abort;
        let written = (&t.form_completions, &t.counters, &t.visitor_attributes).transaction(
            |(completions, counters, attributes)| {
                if completions.get(c.scan_id.as_bytes())?.is_some() {
                    return Ok(FormWrite::AlreadyCompleted);
                }
                completions.insert(c.scan_id.as_bytes(), encoded.as_slice())?;
                let n = counters
                    .get(counter)?
                    .map(|v| decode_count(&v))
                    .unwrap_or(0);
                counters.insert(&counter[..], &(n + 1).to_be_bytes())?;
                if let Some(v) = &c.visitor_id {
                    let stored = attributes
                        .get(v.as_bytes())?
                        .map(|b| codec::decode::<StoredAttributes>(&b))
                        .transpose()
                        .map_err(abort)?;
                    if let Some(next) = merge(stored) {
                        let bytes = codec::encode(&next).map_err(abort)?;
                        attributes.insert(v.as_bytes(), bytes)?;
                    }
                }
                Ok::<_, ConflictableTransactionError<StoreError>>(FormWrite::Completed)
            },
        )?;
        Ok(written)
    }
}
