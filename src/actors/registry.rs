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
//!   registry entry in the transaction of that event (`new_in`), so a
//!   `kill -9` can never leave a stored event whose device maps to another
//!   visitor. Two first scans
//!   of one device racing each other find the same pending entry, so a
//!   device never gets two visitors.
//!
//! - Most devices a Recorder resolves were never seen (a first scan): the
//!   store answers "absent" from its index in memory, without a read
//!   (`store::registry`).
//!
//! Each workspace has its own fingerprint key, made on first use and kept in
//! the store; workspaces therefore never share a visitor.

use std::collections::HashMap;
use std::hash::Hasher;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use quick_cache::sync::Cache;

use crate::config::FingerprintScope;
use crate::domain::ScanEvent;
use crate::enrich::fingerprint::{self, Fingerprint, FingerprintKey, Keyed};
use crate::enrich::privacy::Salt;
use crate::enrich::recent::Recent;
use crate::ids::{VisitorId, WorkspaceId};
use crate::store::{NewVisitor, Store, StoreResult};

#[derive(Default)]
struct Pending {
    by_fingerprint: HashMap<(WorkspaceId, Fingerprint), VisitorId>,
    by_visitor: HashMap<VisitorId, (WorkspaceId, Fingerprint)>,
    /// The random bits of new visitors' IDs, fetched in blocks.
    random: crate::random::Block,
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

/// Slots of the fingerprints of devices seen lately, 64 bytes each (64 KiB;
/// a larger array costs a device not seen lately a cache miss on its slot,
/// as the GeoIP address cache measured).
const FINGERPRINT_SLOTS: usize = 1_024;

pub struct VisitorRegistry {
    store: Store,
    scope: FingerprintScope,
    keys: RwLock<HashMap<WorkspaceId, Arc<Keyed>>>,
    /// The fingerprints of devices seen lately, by what goes into them: a
    /// device scanning again skips the HMAC (two SHA-256 blocks or more and
    /// the outer one), which was two thirds of finding a known visitor on
    /// the redirect. It keeps no user agent or address (`Recent`).
    fingerprints: Recent<Fingerprint>,
    cache: Cache<(WorkspaceId, Fingerprint), VisitorId>,
    pending: Mutex<Pending>,
}

impl VisitorRegistry {
    pub fn new(store: Store, scope: FingerprintScope, cache_entries: usize) -> VisitorRegistry {
        VisitorRegistry {
            store,
            scope,
            keys: RwLock::default(),
            fingerprints: Recent::new(FINGERPRINT_SLOTS),
            cache: Cache::new(cache_entries.max(1)),
            pending: Mutex::default(),
        }
    }

    /// The name of a workspace's fingerprint key in the store.
    pub fn key_name(ws: &WorkspaceId) -> String {
        format!("fingerprint:{ws}")
    }

    /// The workspace's fingerprint key, ready to hash; read from the store
    /// once per workspace.
    fn key(&self, ws: &WorkspaceId) -> StoreResult<Arc<Keyed>> {
        if let Some(k) = self
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(ws)
        {
            return Ok(Arc::clone(k));
        }
        let key: FingerprintKey = self.store.secret(&Self::key_name(ws))?;
        let keyed = Arc::new(Keyed::new(&key));
        self.keys
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(*ws, Arc::clone(&keyed));
        Ok(keyed)
    }

    /// The fingerprint of `device` in workspace `ws`.
    pub fn fingerprint(&self, ws: &WorkspaceId, device: &Device) -> StoreResult<Fingerprint> {
        let daily = (self.scope == FingerprintScope::Daily).then_some(device.day_salt);
        // What the HMAC takes, the workspace first (its key never changes).
        let (net, net_len) = fingerprint::network(device.ip);
        let inputs = [
            device.user_agent.unwrap_or_default().as_bytes(),
            device.accept_language.unwrap_or_default().as_bytes(),
            &net[..net_len],
            daily.map_or(&[][..], |s| &s[..]),
        ];
        let memo = self.fingerprints.key(|h| {
            h.write(ws.as_bytes());
            for part in inputs {
                h.write_usize(part.len());
                h.write(part);
            }
        });
        if let Some(fp) = self.fingerprints.get(memo, |fp| Some(*fp)) {
            return Ok(fp);
        }
        let fp =
            self.key(ws)?
                .fingerprint(device.user_agent, device.accept_language, device.ip, daily);
        self.fingerprints.insert(memo, fp);
        Ok(fp)
    }

    /// The visitor of `device` in `ws`: known, pending, or new, as the
    /// redirect and the Recorder decide it together (`visitor_cached`, then
    /// `resolve`); for tests.
    #[cfg(test)]
    pub fn visitor_for(&self, ws: &WorkspaceId, device: &Device) -> StoreResult<VisitorId> {
        match self.visitor_cached(ws, device)? {
            Ok(v) => Ok(v),
            Err(fp) => self.resolve(ws, fp, crate::domain::Timestamp::now().as_millis()),
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

    /// The visitor of fingerprint `fp` in `ws`: known, pending, or new. A
    /// new visitor's ID carries millisecond `at_ms`: the Recorder passes the
    /// time of its batch's first event ID, so the segment of the visitor's
    /// first events is found from its ID and needs no index entry (see
    /// "Home segments" in `store::events`).
    pub fn resolve(&self, ws: &WorkspaceId, fp: Fingerprint, at_ms: i64) -> StoreResult<VisitorId> {
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
        let v = VisitorId::at(at_ms, &pending.random.take());
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
        let mut seen = std::collections::HashSet::new();
        for v in events.iter().filter_map(|e| e.visitor_id) {
            if let Some((ws, fp)) = pending.by_visitor.get(&v)
                && seen.insert(v)
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
    /// scan gets a new visitor). Answers the visitor's fingerprint, if it had
    /// one, for `Store::erase_visitor_records`.
    /// The registry's lock is held throughout, so a lookup of the device
    /// running meanwhile (`resolve`) cannot put it back in the cache, and the
    /// Recorder cannot take a visitor it is committing out of `pending`
    /// unseen: its fingerprint is there or in the store.
    pub fn forget(&self, ws: &WorkspaceId, id: &VisitorId) -> StoreResult<Option<Fingerprint>> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let fingerprint = match pending.by_visitor.remove(id) {
            Some(key) => {
                pending.by_fingerprint.remove(&key);
                Some(key.1)
            }
            None => self.store.visitor_fingerprint(ws, id)?,
        };
        if let Some(fp) = fingerprint {
            self.cache.remove(&(*ws, fp));
            self.store.forget_fingerprint(ws, &fp, id)?;
        }
        Ok(fingerprint)
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

    impl Fixture {
        /// The Recorder commits the fixture's scan, its visitor's first.
        fn commit_first_scan(&self) -> Vec<NewVisitor> {
            let new = self.registry.new_in(std::slice::from_ref(&self.event));
            self.store
                .commit_scans_with(std::slice::from_ref(&self.event), &new)
                .unwrap();
            self.registry.committed(&new);
            new
        }
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
        // A restarted registry finds it in the store, and so does a
        // reopened store (its index is filled from the stored batches).
        let again = VisitorRegistry::new(store.clone(), FingerprintScope::Persistent, 10);
        assert_eq!(again.visitor_for(&ws, &me).unwrap(), v);
        assert_ne!(again.visitor_for(&other_ws, &me).unwrap(), v);
        let dir = _dir;
        drop((again, registry, store));
        let store = Store::open(dir.path(), 8).unwrap();
        let reopened = VisitorRegistry::new(store, FingerprintScope::Persistent, 10);
        assert_eq!(reopened.visitor_for(&ws, &me).unwrap(), v);
    }

    #[test]
    fn strangers_in_many_workspaces_are_new_and_the_stored_device_is_found_among_them() {
        let f = fixture();
        f.commit_first_scan();
        // One device in 200 other workspaces: 200 strangers (each workspace
        // keys its fingerprints with a key of its own), committed in one
        // batch.
        let stranger_ws: Vec<WorkspaceId> = (0..200).map(|_| WorkspaceId::generate()).collect();
        let events: Vec<ScanEvent> = stranger_ws
            .iter()
            .map(|ws| ScanEvent {
                visitor_id: Some(f.registry.visitor_for(ws, &me()).unwrap()),
                ..ScanEvent::sample(EventId::generate(), *ws, LinkId::generate())
            })
            .collect();
        let mut ids: Vec<VisitorId> = events.iter().filter_map(|e| e.visitor_id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 200);
        assert!(!ids.contains(&f.event.visitor_id.unwrap()));
        let new = f.registry.new_in(&events);
        assert_eq!(new.len(), 200);
        f.store.commit_scans_with(&events, &new).unwrap();
        f.registry.committed(&new);
        let fresh = VisitorRegistry::new(f.store.clone(), FingerprintScope::Persistent, 10);
        assert_eq!(
            fresh.visitor_for(&f.ws, &me()).unwrap(),
            f.event.visitor_id.unwrap()
        );
        for (ws, e) in stranger_ws.iter().zip(&events) {
            assert_eq!(fresh.visitor_for(ws, &me()).unwrap(), e.visitor_id.unwrap());
        }
        assert_eq!(fresh.pending_len(), 0, "every one was found in the store");
    }

    #[test]
    fn a_visitor_erased_while_its_first_batch_is_written_does_not_come_back() {
        let f = fixture();
        // The Recorder has taken the batch; the erasure comes before it is
        // committed.
        let new = f.registry.new_in(std::slice::from_ref(&f.event));
        let id = f.event.visitor_id.unwrap();
        let fingerprint = f.registry.forget(&f.ws, &id).unwrap();
        assert_eq!(
            fingerprint,
            Some(new[0].fingerprint),
            "found among the pending"
        );
        f.store.commit_scans_with(&[f.event], &new).unwrap();
        f.registry.committed(&new);
        assert_eq!(f.registry.pending_len(), 0);
        assert!(
            f.registry.visitor_cached(&f.ws, &me()).unwrap().is_err(),
            "the erased visitor is not in the cache"
        );
        // The commit wrote the entry after the registry forgot the device:
        // the erasure's last step removes it with the fingerprint it got.
        let stored = || f.store.visitor_of(&f.ws, &new[0].fingerprint).unwrap();
        assert_eq!(stored(), Some(id));
        f.store
            .erase_visitor_records(&id, &f.ws, fingerprint)
            .unwrap();
        assert_eq!(stored(), None);
    }

    #[test]
    fn a_stored_visitor_is_forgotten_through_its_registry_entry() {
        let f = fixture();
        let new = f.commit_first_scan();
        let id = f.event.visitor_id.unwrap();
        assert_eq!(f.registry.visitor_cached(&f.ws, &me()).unwrap(), Ok(id));
        // Another workspace's erasure of the same ID finds nothing.
        assert_eq!(
            f.registry.forget(&WorkspaceId::generate(), &id).unwrap(),
            None
        );
        assert_eq!(
            f.registry.forget(&f.ws, &id).unwrap(),
            Some(new[0].fingerprint)
        );
        assert_eq!(
            f.store.visitor_of(&f.ws, &new[0].fingerprint).unwrap(),
            None
        );
        assert!(f.registry.visitor_cached(&f.ws, &me()).unwrap().is_err());
        // Forgotten already: nothing left to find.
        assert_eq!(f.registry.forget(&f.ws, &id).unwrap(), None);
    }

    #[test]
    fn a_device_seen_lately_gets_the_fingerprint_its_hmac_gives() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8).unwrap();
        let (monday, tuesday) = ([1; 32], [2; 32]);
        let (ws, other_ws) = (WorkspaceId::generate(), WorkspaceId::generate());
        let devices = [
            device("phone", "81.2.69.1", &monday),
            device("phone", "81.2.69.200", &monday),
            device("phone", "81.2.70.1", &monday),
            device("phone", "81.2.69.1", &tuesday),
            device("tablet", "81.2.69.1", &monday),
            device("phone", "2a02:1::1", &monday),
            device("phone", "2a02:1:0:ff::1", &monday),
            Device {
                accept_language: None,
                ..device("phone", "81.2.69.1", &monday)
            },
            Device {
                ip: None,
                ..device("phone", "81.2.69.1", &monday)
            },
        ];
        for scope in [FingerprintScope::Persistent, FingerprintScope::Daily] {
            let registry = VisitorRegistry::new(store.clone(), scope, 10);
            let mut seen = std::collections::HashSet::new();
            for ws in [&ws, &other_ws] {
                for d in &devices {
                    let daily = (scope == FingerprintScope::Daily).then_some(d.day_salt);
                    let hmac = registry.key(ws).unwrap().fingerprint(
                        d.user_agent,
                        d.accept_language,
                        d.ip,
                        daily,
                    );
                    // The first time computed, then remembered.
                    for _ in 0..2 {
                        assert_eq!(registry.fingerprint(ws, d).unwrap(), hmac, "{d:?}");
                    }
                    seen.insert(hmac);
                }
            }
            // The two addresses of one /24 (and of one /48) share theirs;
            // the days' salts only split them in the daily scope.
            let per_ws = if scope == FingerprintScope::Daily {
                7
            } else {
                6
            };
            assert_eq!(seen.len(), 2 * per_ws, "{scope:?}");
            assert!(registry.fingerprints.filled() > 0);
        }
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
