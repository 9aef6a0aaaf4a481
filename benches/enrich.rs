//! Enrichment of one scan with both GeoIP databases loaded (target: < 10 µs).
//! Run: `cargo bench --bench enrich`.
//!
//! Besides the time of a user-agent cache hit and miss, it times the two
//! GeoIP lookups for an address seen lately and for one not, a known
//! device's visitor fingerprint (remembered, and the HMAC), replays a mixed
//! stream (regular browsers drawn from a Zipf distribution, and one request
//! in ten with a user agent never seen before) and prints the cache's hit
//! rate.

#[path = "support/geo.rs"]
mod geo_support;

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use scanhop::domain::{Destination, Link, LinkStatus, ScanMethod, Slug, Timestamp};
use scanhop::enrich::geo::GeoDatabases;
use scanhop::enrich::privacy::{self, SaltBook};
use scanhop::enrich::{Enricher, ScanRequest};
use scanhop::ids::{LinkId, WorkspaceId};

fn link() -> Link {
    Link {
        id: LinkId::generate(),
        workspace_id: WorkspaceId::generate(),
        slug: Slug::parse("menu").expect("slug"),
        destination: Destination::parse("https://example.com/menu").expect("destination"),
        name: None,
        tags: vec![],
        conversion_tracking: true,
        fallback_destination: None,
        expires_at: None,
        form: None,
        status: LinkStatus::Active,
        created_at: Timestamp::now(),
        updated_at: Timestamp::now(),
    }
}

/// One scan through the enricher, as the redirect path does it.
struct Scanner {
    enricher: Enricher,
    salts: SaltBook,
    link: Link,
    client: std::net::IpAddr,
}

impl Scanner {
    fn new(geo: &Arc<GeoDatabases>) -> Scanner {
        // As on the redirect path: the day's salt read from the book the salt
        // rotation worker fills.
        let salts = SaltBook::default();
        let today = privacy::utc_day(jiff::Timestamp::now().as_millisecond());
        salts.publish(today, [7; 32], today - 1);
        Scanner {
            enricher: Enricher::new(geo.clone()),
            salts,
            link: link(),
            client: std::net::IpAddr::V4(geo_support::address(4242)),
        }
    }

    fn scan(&self, ua: &str) -> scanhop::domain::ScanEvent {
        let req = ScanRequest {
            client_ip: Some(self.client),
            user_agent: Some(ua),
            accept_language: Some("de-AT,de;q=0.9,en;q=0.8"),
            referer: Some("https://news.example/article"),
            ip_salt: self.salts.salt_at(jiff::Timestamp::now().as_millisecond()),
        };
        let event = self.enricher.scan_event(
            black_box(&req),
            &self.link,
            ScanMethod::Get,
            self.link.destination.as_str().to_owned(),
        );
        assert!(event.country.is_some());
        black_box(event)
    }
}

const UAS: [&str; 3] = [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
];

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (city, asn) = geo_support::write_databases(dir.path());
    let geo = Arc::new(GeoDatabases::open(&city, &asn).expect("geo"));
    let parser = woothee::parser::Parser::new();
    c.bench_function("baseline: woothee parse alone", |b| {
        b.iter(|| black_box(parser.parse(black_box(UAS[0]))))
    });
    // The bot check of a cache miss on its own: a browser matches nothing, so
    // every rule runs to the end.
    c.bench_function("baseline: bot check alone (isbot list + our rules)", |b| {
        b.iter(|| black_box(scanhop::enrich::bots::is_bot(black_box(UAS[1]))))
    });
    // Both databases for one address: one seen lately (the per-address
    // cache), and one not (a walk of each database's tree to a cached
    // record: more addresses than the per-address cache holds, in turn).
    let seen = Some(std::net::IpAddr::V4(geo_support::address(4242)));
    c.bench_function("GeoIP city + ASN, an address seen lately", |b| {
        b.iter(|| black_box(geo.lookup(black_box(seen))))
    });
    let mut a = 0u32;
    c.bench_function("GeoIP city + ASN, an address not seen lately", |b| {
        b.iter(|| {
            a = (a + 7_919) % geo_support::NETWORKS;
            black_box(geo.lookup(Some(std::net::IpAddr::V4(geo_support::address(a)))))
        })
    });
    visitor_fingerprint(c, dir.path());
    let scanner = Scanner::new(&geo);
    let mut i = 0usize;
    c.bench_function(
        "enrich one scan, known user agent (UA cache hit) + city + ASN + ip_hash",
        |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                scanner.scan(UAS[i % UAS.len()])
            })
        },
    );
    // A user agent never seen before: the full woothee parse and our rules.
    let unseen: Vec<String> = (0..200_000)
        .map(|n| format!("{} Build/{n}", UAS[n % UAS.len()]))
        .collect();
    let mut n = 0usize;
    c.bench_function(
        "enrich one scan, new user agent (UA cache miss) + city + ASN + ip_hash",
        |b| {
            b.iter(|| {
                n = (n + 1) % unseen.len();
                scanner.scan(&unseen[n])
            })
        },
    );
    mixed_stream(c, &geo);
}

/// A known device's fingerprint as the redirect finds its visitor: from the
/// registry's fingerprints of devices seen lately, and by the HMAC alone.
fn visitor_fingerprint(c: &mut Criterion, dir: &std::path::Path) {
    use scanhop::actors::registry::{Device, VisitorRegistry};
    let store = scanhop::store::Store::open(&dir.join("store"), 8).expect("store");
    let registry =
        VisitorRegistry::new(store, scanhop::config::FingerprintScope::Persistent, 1_000);
    let ws = WorkspaceId::generate();
    let salt = [7; 32];
    let device = Device {
        user_agent: Some(UAS[0]),
        accept_language: Some("de-AT,de;q=0.9,en;q=0.8"),
        ip: Some(std::net::IpAddr::V4(geo_support::address(4242))),
        day_salt: &salt,
    };
    c.bench_function("visitor fingerprint, a device seen lately", |b| {
        b.iter(|| black_box(registry.fingerprint(&ws, black_box(&device))))
    });
    let keyed = scanhop::enrich::fingerprint::Keyed::new(&[9; 32]);
    c.bench_function("visitor fingerprint, the HMAC alone", |b| {
        b.iter(|| {
            black_box(keyed.fingerprint(
                device.user_agent,
                device.accept_language,
                black_box(device.ip),
                None,
            ))
        })
    });
}

/// The hit rate of a fresh enricher's user-agent cache under the mixed
/// stream, then the time per scan of that stream.
fn mixed_stream(c: &mut Criterion, geo: &Arc<GeoDatabases>) {
    let scanner = Scanner::new(geo);
    let mut stream = MixedStream::new(&UAS);
    for _ in 0..STREAM {
        scanner.scan(&stream.next_ua());
    }
    let (hits0, misses0) = scanner.enricher.agent_cache_stats();
    let mut seen = std::collections::HashSet::new();
    let mut first_sights = 0usize;
    for _ in 0..STREAM {
        let ua = stream.next_ua();
        if seen.insert(ua.to_string()) {
            first_sights += 1;
        }
        scanner.scan(&ua);
    }
    let (hits, misses) = scanner.enricher.agent_cache_stats();
    let (hits, misses) = (hits - hits0, misses - misses0);
    println!(
        "mixed stream (1 in 10 never seen, {POPULATION} regular user agents, Zipf 1): \
         user-agent cache hit rate {:.1}% ({hits} hits, {misses} misses over {STREAM} scans; \
         {:.1}% of these scans repeat a user agent seen earlier in the measured window)",
        100.0 * hits as f64 / (hits + misses) as f64,
        100.0 * (STREAM - first_sights) as f64 / STREAM as f64,
    );
    c.bench_function(
        "enrich one scan, mixed stream (1 in 10 never seen) + city + ASN + ip_hash",
        |b| b.iter(|| scanner.scan(&stream.next_ua())),
    );
}

/// Regular user agents of the mixed stream: more distinct browsers than the
/// cache holds, so what the cache keeps matters.
const POPULATION: usize = 20_000;
/// Requests replayed to measure the hit rate (after as many to warm up).
const STREAM: usize = 1_000_000;

/// A deterministic request stream: nine in ten requests come from
/// `POPULATION` regular user agents with Zipf(1) popularity, one in ten
/// carries a user agent never seen before (a one-off bot or scanner).
struct MixedStream {
    regular: Vec<String>,
    cdf: Vec<f64>,
    state: u64,
    one_offs: u64,
}

impl MixedStream {
    fn new(bases: &[&str]) -> MixedStream {
        let regular = (0..POPULATION)
            .map(|n| format!("{} Build/R{n}", bases[n % bases.len()]))
            .collect();
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=POPULATION)
            .map(|rank| {
                acc += 1.0 / rank as f64;
                acc
            })
            .collect();
        cdf.iter_mut().for_each(|c| *c /= acc);
        MixedStream {
            regular,
            cdf,
            state: 42,
            one_offs: 0,
        }
    }

    /// splitmix64: a fixed stream without a rand dependency.
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn next_ua(&mut self) -> std::borrow::Cow<'_, str> {
        let r = self.next_u64();
        if r.is_multiple_of(10) {
            self.one_offs += 1;
            return format!(
                "Mozilla/5.0 (compatible; OneOffScanner/{}.0)",
                self.one_offs
            )
            .into();
        }
        let u = (r >> 11) as f64 / (1u64 << 53) as f64;
        let rank = self.cdf.partition_point(|c| *c < u).min(POPULATION - 1);
        self.regular[rank].as_str().into()
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
