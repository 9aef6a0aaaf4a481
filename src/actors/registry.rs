//! The visitor registry on the redirect path: fingerprint → visitor ID,
//! answered without a mailbox round trip, in bounded memory.
//!
//! - A bounded cache (quick_cache, S3-FIFO) holds recently seen devices;
//!   the redirect asks only the cache and the pending visitors
//!   (`visitor_cached`), never the store.
//! - A device in neither is resolved by the Recorder when it takes the scan
//!   from its queue (`resolve`): the store's registry is read there (one sled
//!   lookup). A sled read on an HTTP worker waits whenever any transaction
//!   commits (sled serialises reads behind every commit), which put the
//!   Recorder's commit time into the redirect's tail latency.
//! - A device never seen gets a fresh visitor ID, held in `pending` until the
//!   Recorder commits the first event carrying it: the Recorder writes the
//!   registry entry in the same transaction as that event (`new_in`), so a
//!   `kill -9` can never leave a stored event whose device maps to another
//!   visitor. Two first scans of one device racing each other find the same
//!   pending entry, so a device never gets two visitors.
//!
//! Each workspace has its own fingerprint key, made on first use and kept in
//! the store; workspaces therefore never share a visitor.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError, RwLock};

use quick_cache::sync::Cache;

use crate::config::FingerprintScope;
use crate::domain::ScanEvent;
use crate::enrich::fingerprint::{Fingerprint, FingerprintKey, fingerprint};
use crate::enrich::privacy::Salt;
use crate::ids::{VisitorId, WorkspaceId};
use crate::store::{NewVisitor, Store, StoreResult};

#[derive(Default)]
struct Pending {
    by_fingerprint: HashMap<(WorkspaceId, Fingerprint), VisitorId>,
    by_visitor: HashMap<VisitorId, (WorkspaceId, Fingerprint)>,
}

/// What the redirect reads of a scan to find its visitor.
#[derive(Debug, Clone, Copy)]
pub struct Device<'a> {
    pub user_agent: Option<&'a str>,
    pub accept_language: Option<&'a str>,
    pub ip: Option<IpAddr>,
    /// The salt of the scan's UTC day (mixed in with the daily scope).
    pub day_salt: &'a Salt,
}

pub struct VisitorRegistry {
    store: Store,
    scope: FingerprintScope,
    keys: RwLock<HashMap<WorkspaceId, FingerprintKey>>,
    cache: Cache<(WorkspaceId, Fingerprint), VisitorId>,
    pending: Mutex<Pending>,
}

impl VisitorRegistry {
    pub fn new(store: Store, scope: FingerprintScope, cache_entries: usize) -> VisitorRegistry {
        VisitorRegistry {
            store,
            scope,
            keys: RwLock::default(),
            cache: Cache::new(cache_entries.max(1)),
            pending: Mutex::default(),
        }
    }

    /// The name of a workspace's fingerprint key in the store.
    pub fn key_name(ws: &WorkspaceId) -> String {
        format!("fingerprint:{ws}")
    }

    fn key(&self, ws: &WorkspaceId) -> StoreResult<FingerprintKey> {
        if let Some(k) = self
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(ws)
        {
            return Ok(*k);
        }
        let key: FingerprintKey = self.store.secret(&Self::key_name(ws))?;
        self.keys
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(*ws, key);
        Ok(key)
    }

    /// The fingerprint of `device` in workspace `ws`.
    pub fn fingerprint(&self, ws: &WorkspaceId, device: &Device) -> StoreResult<Fingerprint> {
        let daily = (self.scope == FingerprintScope::Daily).then_some(device.day_salt);
        Ok(fingerprint(
            &self.key(ws)?,
            device.user_agent,
            device.accept_language,
            device.ip,
            daily,
        ))
    }

    /// The visitor of `device` in `ws`: known, pending, or new, as the
    /// redirect and the Recorder decide it together (`visitor_cached`, then
    /// `resolve`); for tests.
    #[cfg(test)]
    pub fn visitor_for(&self, ws: &WorkspaceId, device: &Device) -> StoreResult<VisitorId> {
        match self.visitor_cached(ws, device)? {
            Ok(v) => Ok(v),
            Err(fp) => self.resolve(ws, fp),
        }
    }

    /// The visitor of `device` in `ws` if the cache or the pending visitors
    /// know it, else its fingerprint, for the Recorder to `resolve`. Reads
    /// the store only for a workspace's fingerprint key, once per workspace.
    pub fn visitor_cached(
        &self,
        ws: &WorkspaceId,
        device: &Device,
    ) -> StoreResult<Result<VisitorId, Fingerprint>> {
        let fp = self.fingerprint(ws, device)?;
        let key = (*ws, fp);
        if let Some(v) = self.cache.get(&key) {
            return Ok(Ok(v));
        }
        let pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(pending.by_fingerprint.get(&key).copied().ok_or(fp))
    }

    /// The visitor of fingerprint `fp` in `ws`: known, pending, or new.
    pub fn resolve(&self, ws: &WorkspaceId, fp: Fingerprint) -> StoreResult<VisitorId> {
        let key = (*ws, fp);
        if let Some(v) = self.cache.get(&key) {
            return Ok(v);
        }
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(v) = pending.by_fingerprint.get(&key) {
            return Ok(*v);
        }
        // Under the lock: a racing first scan of the same device waits here
        // and then finds the pending entry.
        if let Some(v) = self.store.visitor_of(ws, &fp)? {
            // Still under the lock, which `forget` holds throughout: an
            // erasure either comes after this (and removes the entry) or
            // before the read (which then finds nothing).
            self.cache.insert(key, v);
            return Ok(v);
        }
        let v = VisitorId::generate();
        pending.by_fingerprint.insert(key, v);
        pending.by_visitor.insert(v, key);
        Ok(v)
    }

    /// The registry entries the Recorder writes with `events`: those of
    /// visitors not yet committed.
    pub fn new_in(&self, events: &[ScanEvent]) -> Vec<NewVisitor> {
        let pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.by_visitor.is_empty() {
            return Vec::new();
        }
        let mut out: Vec<NewVisitor> = Vec::new();
        for v in events.iter().filter_map(|e| e.visitor_id) {
            if let Some((ws, fp)) = pending.by_visitor.get(&v)
                && !out.iter().any(|n| n.visitor_id == v)
            {
                out.push(NewVisitor {
                    workspace_id: *ws,
                    fingerprint: *fp,
                    visitor_id: v,
                });
            }
        }
        out
    }

    /// The Recorder committed these entries: from now on the store and the
    /// cache answer for them.
    pub fn committed(&self, new: &[NewVisitor]) {
        if new.is_empty() {
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        for n in new {
            // A visitor erased while its first batch was being written is
            // no longer pending: it must not come back through the cache.
            if pending.by_visitor.remove(&n.visitor_id).is_none() {
                continue;
            }
            let key = (n.workspace_id, n.fingerprint);
            pending.by_fingerprint.remove(&key);
            self.cache.insert(key, n.visitor_id);
        }
    }

    /// Erasure: the device of visitor `id` is a stranger from now on (a new
    /// scan gets a new visitor).
    /// The registry's lock is held throughout, so a lookup of the device
    /// running meanwhile (`resolve`) cannot put it back in the cache.
    pub fn forget(&self, id: &VisitorId) -> StoreResult<()> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(key) = pending.by_visitor.remove(id) {
            pending.by_fingerprint.remove(&key);
            self.cache.remove(&key);
        }
        if let Some(key) = self.store.visitor_fingerprint(id)? {
            self.cache.remove(&key);
        }
        self.store.forget_fingerprint(id)
    }

    /// Visitors waiting for their first event to be committed.
    pub fn pending_len(&self) -> usize {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_visitor
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{EventId, LinkId};

    fn device<'a>(ua: &'a str, ip: &str, salt: &'a Salt) -> Device<'a> {
        Device {
            user_agent: Some(ua),
            accept_language: Some("de"),
            ip: Some(ip.parse().unwrap()),
            day_salt: salt,
        }
    }

    /// A store, a registry over it with a new device in workspace `ws`, and
    /// that device's first scan (its visitor still pending).
    struct Fixture {
        _dir: tempfile::TempDir,
        store: Store,
        registry: VisitorRegistry,
        ws: WorkspaceId,
        event: ScanEvent,
    }

    const SALT: Salt = [1; 32];

    fn me() -> Device<'static> {
        device("phone", "81.2.69.1", &SALT)
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8).unwrap();
        let registry = VisitorRegistry::new(store.clone(), FingerprintScope::Persistent, 10);
        let ws = WorkspaceId::generate();
        let v = registry.visitor_for(&ws, &me()).unwrap();
        let event = ScanEvent {
            visitor_id: Some(v),
            ..ScanEvent::sample(EventId::generate(), ws, LinkId::generate())
        };
        Fixture {
            _dir: dir,
            store,
            registry,
            ws,
            event,
        }
    }

    #[test]
    fn a_new_visitor_is_pending_until_its_first_event_is_committed_then_stored() {
        let Fixture {
            _dir,
            store,
            registry,
            ws,
            event,
        } = fixture();
        let (me, v) = (me(), event.visitor_id.unwrap());
        assert_eq!(registry.visitor_for(&ws, &me).unwrap(), v, "pending");
        assert_eq!(registry.pending_len(), 1);
        let other_ws = WorkspaceId::generate();
        assert_ne!(registry.visitor_for(&other_ws, &me).unwrap(), v);
        // The Recorder writes the entry with the event, then reports it.
        let new = registry.new_in(std::slice::from_ref(&event));
        assert_eq!(new.len(), 1);
        store.commit_scans_with(&[event], &new).unwrap();
        registry.committed(&new);
        assert_eq!(
            registry.pending_len(),
            1,
            "the other workspace's is still pending"
        );
        // A restarted registry finds it in the store.
        let again = VisitorRegistry::new(store, FingerprintScope::Persistent, 10);
        assert_eq!(again.visitor_for(&ws, &me).unwrap(), v);
        assert_ne!(again.visitor_for(&other_ws, &me).unwrap(), v);
    }

    #[test]
    fn a_visitor_erased_while_its_first_batch_is_written_does_not_come_back() {
        let f = fixture();
        // The Recorder has taken the batch; the erasure comes before it is
        // committed.
        let new = f.registry.new_in(std::slice::from_ref(&f.event));
        f.registry.forget(&f.event.visitor_id.unwrap()).unwrap();
        f.store.commit_scans_with(&[f.event], &new).unwrap();
        f.registry.committed(&new);
        assert_eq!(f.registry.pending_len(), 0);
        assert!(
            f.registry.visitor_cached(&f.ws, &me()).unwrap().is_err(),
            "the erased visitor is not in the cache"
        );
    }

    #[test]
    fn the_daily_scope_splits_a_device_at_the_days_salt() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8).unwrap();
        let ws = WorkspaceId::generate();
        let (monday, tuesday) = ([1; 32], [2; 32]);
        let daily = VisitorRegistry::new(store.clone(), FingerprintScope::Daily, 10);
        let a = daily
            .visitor_for(&ws, &device("phone", "81.2.69.1", &monday))
            .unwrap();
        let b = daily
            .visitor_for(&ws, &device("phone", "81.2.69.1", &tuesday))
            .unwrap();
        assert_ne!(a, b);
        let persistent = VisitorRegistry::new(store, FingerprintScope::Persistent, 10);
        let c = persistent
            .visitor_for(&ws, &device("phone", "81.2.69.1", &monday))
            .unwrap();
        let d = persistent
            .visitor_for(&ws, &device("phone", "81.2.69.1", &tuesday))
            .unwrap();
        assert_eq!(c, d);
    }
}
