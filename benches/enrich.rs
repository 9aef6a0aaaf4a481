//! Enrichment of one scan with both GeoIP databases loaded (target: < 10 µs).
//! Run: `cargo bench --bench enrich`.

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

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (city, asn) = geo_support::write_databases(dir.path());
    let geo = Arc::new(GeoDatabases::open(&city, &asn).expect("geo"));
    let enricher = Enricher::new(geo);
    // As on the redirect path: the day's salt read from the book the salt
    // rotation worker fills.
    let salts = SaltBook::default();
    let today = privacy::utc_day(jiff::Timestamp::now().as_millisecond());
    salts.publish(today, [7; 32], today - 1);
    let link = link();
    let client = std::net::IpAddr::V4(geo_support::address(4242));
    let uas = [
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    ];
    let parser = woothee::parser::Parser::new();
    c.bench_function("baseline: woothee parse alone", |b| {
        b.iter(|| black_box(parser.parse(black_box(uas[0]))))
    });
    let enrich = |ua: &str| {
        let req = ScanRequest {
            client_ip: Some(client),
            user_agent: Some(ua),
            accept_language: Some("de-AT,de;q=0.9,en;q=0.8"),
            referer: Some("https://news.example/article"),
            ip_salt: salts.salt_at(jiff::Timestamp::now().as_millisecond()),
        };
        let event = enricher.scan_event(
            black_box(&req),
            &link,
            ScanMethod::Get,
            link.destination.as_str().to_owned(),
        );
        assert!(event.country.is_some());
        black_box(event)
    };
    let mut i = 0usize;
    c.bench_function(
        "enrich one scan, known user agent (UA cache hit) + city + ASN + ip_hash",
        |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                enrich(uas[i % uas.len()])
            })
        },
    );
    // A user agent never seen before: the full woothee parse and our rules.
    let unseen: Vec<String> = (0..200_000)
        .map(|n| format!("{} Build/{n}", uas[n % uas.len()]))
        .collect();
    let mut n = 0usize;
    c.bench_function(
        "enrich one scan, new user agent (UA cache miss) + city + ASN + ip_hash",
        |b| {
            b.iter(|| {
                n = (n + 1) % unseen.len();
                enrich(&unseen[n])
            })
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
