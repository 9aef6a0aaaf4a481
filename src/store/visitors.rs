//! The visitor registry: which visitor a fingerprint belongs to, per
//! workspace. An entry is written in the same transaction as the first event
//! of its visitor (`Store::commit_scans_with`), so after any crash a stored
//! event's visitor is always the one its device maps to.

use crate::enrich::fingerprint::Fingerprint;
use crate::ids::{VisitorId, WorkspaceId};

use super::{Store, StoreResult};

/// A visitor first seen in a batch: its registry entry to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewVisitor {
    pub workspace_id: WorkspaceId,
    pub fingerprint: Fingerprint,
    pub visitor_id: VisitorId,
}

/// `workspace (16) ++ fingerprint (16)`.
pub(super) fn registry_key(ws: &WorkspaceId, fp: &Fingerprint) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(ws.as_bytes());
    key[16..].copy_from_slice(fp);
    key
}

impl Store {
    /// The visitor fingerprint `fp` belongs to in `ws`, if any.
    pub fn visitor_of(&self, ws: &WorkspaceId, fp: &Fingerprint) -> StoreResult<Option<VisitorId>> {
        Ok(self
            .inner
            .visitor_registry
            .get(registry_key(ws, fp))?
            .and_then(|v| VisitorId::from_slice(&v)))
    }
}
