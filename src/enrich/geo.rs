//! GeoIP: a City database (GeoLite2-City or DB-IP City Lite layout) and an ASN
//! database (GeoLite2-ASN layout), both optional. Each is read into memory and
//! held behind an `Arc` that a reload swaps atomically; a reload that fails
//! keeps the database already loaded. Files are read, not memory-mapped: a
//! database overwritten in place under a mapping would crash the process.

use std::hash::Hash;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use compact_str::CompactString;
use maxminddb::Reader;
use serde::Deserialize;

use super::recent::Recent;

/// Geo and network fields of a scan; all `None` when unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GeoInfo {
    pub country: Option<CompactString>,
    pub region: Option<CompactString>,
    pub city: Option<CompactString>,
    pub isp: Option<CompactString>,
    pub asn: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("cannot read GeoIP database {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid MaxMind DB: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Deserialize)]
struct Names {
    en: Option<String>,
}

#[derive(Deserialize)]
struct Named {
    names: Option<Names>,
}

#[derive(Deserialize)]
struct Country {
    iso_code: Option<String>,
}

#[derive(Deserialize)]
struct CityRecord {
    country: Option<Country>,
    subdivisions: Option<Vec<Named>>,
    city: Option<Named>,
}

#[derive(Deserialize)]
struct AsnRecord {
    // GeoLite2 stores uint32, and maxminddb decodes integer widths strictly.
    autonomous_system_number: Option<u32>,
    autonomous_system_organization: Option<String>,
}

struct LoadedDb {
    reader: Reader<Vec<u8>>,
    stamp: FileStamp,
    /// Decoded records by their offset in the data section. Many networks
    /// share a record (a city's, an ISP's), and decoding one (its names in
    /// every language walked past) was most of a lookup's cost; the tree
    /// walk to the offset still runs for every address. Part of the loaded
    /// version, so a reload starts with an empty cache.
    records: quick_cache::sync::Cache<usize, Arc<GeoInfo>>,
}

/// Records each database keeps decoded (a few hundred bytes each).
const RECORD_CACHE_ENTRIES: usize = 16_384;

/// Slots of the per-address cache, about 144 bytes each (a scan's geo
/// fields, copied): 144 KiB. A larger array made a lookup of an address not
/// seen lately slower than the walks alone by more than it saved a repeat
/// (4,096 slots: 0.3 to 0.8 µs in the enrich bench, against 0.17 at 1,024):
/// every miss is a cache miss on its slot too.
const ADDRESS_SLOTS: usize = 1_024;

impl LoadedDb {
    /// The fields of `ip`'s record, decoded by `decode` on a cache miss;
    /// `None` for no data (or a record of another shape).
    fn fields(
        &self,
        ip: IpAddr,
        decode: impl FnOnce(&maxminddb::LookupResult<'_, Vec<u8>>) -> Option<GeoInfo>,
    ) -> Option<Arc<GeoInfo>> {
        let found = self.reader.lookup(ip).ok()?;
        let offset = found.offset()?;
        if let Some(fields) = self.records.get(&offset) {
            return Some(fields);
        }
        let fields = Arc::new(decode(&found)?);
        self.records.insert(offset, fields.clone());
        Some(fields)
    }
}

/// What identifies a version of a file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &Path) -> Result<FileStamp, GeoError> {
    let meta = std::fs::metadata(path).map_err(|source| GeoError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(FileStamp {
        modified: meta.modified().ok(),
        len: meta.len(),
    })
}

fn load(path: &Path) -> Result<LoadedDb, GeoError> {
    let stamp = stamp(path)?;
    let bytes = std::fs::read(path).map_err(|source| GeoError::Read {
        path: path.to_owned(),
        source,
    })?;
    let reader = Reader::from_source(bytes).map_err(|e| GeoError::Invalid {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    Ok(LoadedDb {
        reader,
        stamp,
        records: quick_cache::sync::Cache::new(RECORD_CACHE_ENTRIES),
    })
}

/// One optional database file and what is loaded from it.
struct Slot {
    path: Option<PathBuf>,
    db: RwLock<Option<Arc<LoadedDb>>>,
}

impl Slot {
    fn open(path: &Path) -> Result<Slot, GeoError> {
        if path.as_os_str().is_empty() {
            return Ok(Slot {
                path: None,
                db: RwLock::new(None),
            });
        }
        let db = load(path)?;
        Ok(Slot {
            path: Some(path.to_owned()),
            db: RwLock::new(Some(Arc::new(db))),
        })
    }

    fn current(&self) -> Option<Arc<LoadedDb>> {
        self.db.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reloads when the file changed (or always, with `force`). Returns
    /// `Ok(true)` when a new version was swapped in.
    fn reload(&self, force: bool) -> Result<bool, GeoError> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        let on_disk = stamp(path)?;
        if !force && self.current().is_some_and(|db| db.stamp == on_disk) {
            return Ok(false);
        }
        let fresh = Arc::new(load(path)?);
        *self.db.write().unwrap_or_else(|p| p.into_inner()) = Some(fresh);
        Ok(true)
    }
}

pub struct GeoDatabases {
    city: Slot,
    asn: Slot,
    /// What both databases found for an address seen lately, as a scan's
    /// fields, with the `generation` it was found in (an entry answers only
    /// that one). An address scanned again (the same phone, a carrier's
    /// NAT, an office) skips both tree walks: in a City database of millions of networks a
    /// walk is some thirty reads spread over tens of megabytes, and with
    /// the two record caches it was most of the redirect's enrichment. The
    /// cache keeps no address (`Recent`).
    addresses: Recent<(u64, GeoInfo)>,
    /// Bumped after every reload that swapped a database in: the entries of
    /// earlier generations are never read again (and age out).
    generation: AtomicU64,
}

impl GeoDatabases {
    /// Opens the configured databases; an empty path means none. A missing or
    /// unreadable file is an error naming its path.
    pub fn open(city_db: &Path, asn_db: &Path) -> Result<GeoDatabases, GeoError> {
        Ok(GeoDatabases::with_slots(
            Slot::open(city_db)?,
            Slot::open(asn_db)?,
        ))
    }

    fn with_slots(city: Slot, asn: Slot) -> GeoDatabases {
        GeoDatabases {
            city,
            asn,
            addresses: Recent::new(ADDRESS_SLOTS),
            generation: AtomicU64::new(0),
        }
    }

    pub fn none() -> GeoDatabases {
        let empty = || Slot {
            path: None,
            db: RwLock::new(None),
        };
        GeoDatabases::with_slots(empty(), empty())
    }

    pub fn is_configured(&self) -> bool {
        self.city.path.is_some() || self.asn.path.is_some()
    }

    /// Reloads changed files (all configured files with `force`); a bad new
    /// file is logged and the old database keeps serving.
    pub fn reload(&self, force: bool) -> usize {
        let mut swapped = 0;
        for (name, slot) in [("city", &self.city), ("asn", &self.asn)] {
            match slot.reload(force) {
                Ok(true) => {
                    swapped += 1;
                    tracing::info!(database = name, path = ?slot.path, "GeoIP database reloaded");
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(database = name, error = %e, "GeoIP reload failed; keeping the loaded database")
                }
            }
        }
        if swapped > 0 {
            // After the swap: a lookup that reads the new generation finds
            // the new database.
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        swapped
    }

    /// Geo fields for `ip`; private, loopback and unknown addresses give nulls.
    pub fn lookup(&self, ip: Option<IpAddr>) -> GeoInfo {
        let Some(ip) = ip.filter(is_routable) else {
            return GeoInfo::default();
        };
        if !self.is_configured() {
            return GeoInfo::default();
        }
        // Read before the databases: an entry found in a database swapped
        // in meanwhile is kept under the generation before it, never read.
        let generation = self.generation.load(Ordering::Acquire);
        let key = self.addresses.key(|h| ip.hash(h));
        // The fields are kept by value and copied under the slot's lock:
        // the records' reference counts are left alone, and replacing an
        // entry frees nothing but names too long to be kept inline.
        let cached = self
            .addresses
            .get(key, |(g, info)| (*g == generation).then(|| info.clone()));
        if let Some(info) = cached {
            return info;
        }
        let info = self.find(ip);
        self.addresses.insert(key, (generation, info.clone()));
        info
    }

    /// The fields both databases hold for `ip`, walking their trees.
    fn find(&self, ip: IpAddr) -> GeoInfo {
        let mut info = GeoInfo::default();
        let place = self.city.current().and_then(|db| {
            db.fields(ip, |found| {
                let rec = decode::<CityRecord>(found)?;
                Some(GeoInfo {
                    country: rec
                        .country
                        .and_then(|c| c.iso_code)
                        .map(CompactString::from),
                    region: rec
                        .subdivisions
                        .and_then(|s| s.into_iter().next())
                        .and_then(english),
                    city: rec.city.and_then(english),
                    ..GeoInfo::default()
                })
            })
        });
        let network = self.asn.current().and_then(|db| {
            db.fields(ip, |found| {
                let rec = decode::<AsnRecord>(found)?;
                Some(GeoInfo {
                    asn: rec.autonomous_system_number,
                    isp: rec.autonomous_system_organization.map(CompactString::from),
                    ..GeoInfo::default()
                })
            })
        });
        if let Some(place) = place {
            info.country.clone_from(&place.country);
            info.region.clone_from(&place.region);
            info.city.clone_from(&place.city);
        }
        if let Some(network) = network {
            info.asn = network.asn;
            info.isp.clone_from(&network.isp);
        }
        info
    }
}

fn english(n: Named) -> Option<CompactString> {
    n.names.and_then(|n| n.en).map(CompactString::from)
}

/// A found address's record, or `None` for no data or a record of another
/// shape.
fn decode<T: for<'de> Deserialize<'de>>(found: &maxminddb::LookupResult<'_, Vec<u8>>) -> Option<T> {
    found.decode::<T>().ok().flatten()
}

/// Addresses a public GeoIP database can know.
fn is_routable(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            let cgnat = o[0] == 100 && (o[1] & 0xc0) == 64;
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || cgnat)
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            let ula = (first & 0xfe00) == 0xfc00;
            let link_local = (first & 0xffc0) == 0xfe80;
            !(v6.is_loopback() || v6.is_unspecified() || v6.is_multicast() || ula || link_local)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_loopback_are_not_looked_up() {
        for ip in [
            "10.1.2.3",
            "192.168.1.1",
            "172.16.0.1",
            "127.0.0.1",
            "100.64.1.1",
            "169.254.169.254",
            "::1",
            "fd00::1",
            "fe80::1",
        ] {
            assert!(!is_routable(&ip.parse().unwrap()), "{ip}");
        }
        assert!(is_routable(&"81.2.69.142".parse().unwrap()));
        assert!(is_routable(&"2a02:1::1".parse().unwrap()));
        assert_eq!(
            GeoDatabases::none().lookup(Some("81.2.69.142".parse().unwrap())),
            GeoInfo::default()
        );
    }

    #[test]
    fn networks_sharing_a_record_decode_it_once_and_answer_alike() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("city.mmdb");
        let mut w = mmdb_writer::Writer::new("GeoLite2-City");
        let place = |country: &str, region: &str, city: &str| {
            serde_json::json!({
                "country": {"iso_code": country},
                "subdivisions": [{"names": {"en": region}}, {"names": {"en": "second"}}],
                "city": {"names": {"en": city, "de": "anders"}},
            })
        };
        // The writer stores equal records once: both London networks point
        // at the same offset.
        let london = place("GB", "England", "London");
        for net in ["81.2.69.0/24", "81.2.70.0/24"] {
            w.insert(net.parse::<ipnet::IpNet>().unwrap(), &london)
                .unwrap();
        }
        let vienna = place("AT", "Vienna", "Vienna");
        w.insert("2.16.0.0/16".parse::<ipnet::IpNet>().unwrap(), &vienna)
            .unwrap();
        std::fs::write(&path, w.to_bytes().unwrap()).unwrap();
        let geo = GeoDatabases::open(&path, Path::new("")).unwrap();
        let lookup = |ip: &str| geo.lookup(Some(ip.parse().unwrap()));
        let expected_london = GeoInfo {
            country: Some("GB".into()),
            region: Some("England".into()),
            city: Some("London".into()),
            ..GeoInfo::default()
        };
        for _ in 0..3 {
            assert_eq!(lookup("81.2.69.142"), expected_london);
            assert_eq!(lookup("81.2.70.1"), expected_london);
            assert_eq!(lookup("2.16.5.5").city.as_deref(), Some("Vienna"));
            assert_eq!(lookup("8.8.8.8"), GeoInfo::default(), "no data");
        }
        let db = geo.city.current().unwrap();
        assert_eq!(db.records.len(), 2, "one decoded record per offset");
    }

    #[test]
    fn an_address_seen_before_is_answered_from_the_new_database_after_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("city.mmdb");
        let write = |city: &str| {
            let mut w = mmdb_writer::Writer::new("GeoLite2-City");
            let record = serde_json::json!({
                "country": {"iso_code": "GB"},
                "city": {"names": {"en": city}},
            });
            w.insert("81.2.69.0/24".parse::<ipnet::IpNet>().unwrap(), &record)
                .unwrap();
            std::fs::write(&path, w.to_bytes().unwrap()).unwrap();
        };
        write("London");
        let geo = GeoDatabases::open(&path, Path::new("")).unwrap();
        let city = |ip: &str| geo.lookup(Some(ip.parse().unwrap())).city;
        let london: IpAddr = "81.2.69.142".parse().unwrap();
        let london = geo.addresses.key(|h| london.hash(h));
        for _ in 0..3 {
            assert_eq!(city("81.2.69.142").as_deref(), Some("London"));
            let cached = geo.addresses.get(london, |(g, info)| {
                assert_eq!(*g, 0, "the first generation");
                Some(info.clone())
            });
            assert_eq!(cached.unwrap().city.as_deref(), Some("London"));
            assert_eq!(city("8.8.8.8"), None, "no data");
        }
        assert!(
            (1..=2).contains(&geo.addresses.filled()),
            "a slot an address"
        );
        write("Edinburgh");
        assert_eq!(geo.reload(true), 1);
        assert_eq!(city("81.2.69.142").as_deref(), Some("Edinburgh"));
        // A failed reload swaps nothing and keeps what was found.
        std::fs::write(&path, b"not a database").unwrap();
        assert_eq!(geo.reload(true), 0);
        assert_eq!(city("81.2.69.142").as_deref(), Some("Edinburgh"));
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let err = GeoDatabases::open(Path::new("/nonexistent/city.mmdb"), Path::new(""))
            .err()
            .unwrap();
        assert!(err.to_string().contains("/nonexistent/city.mmdb"));
    }
}
