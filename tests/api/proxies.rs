//! The client behind a trusted proxy, with forwarding headers written as they
//! arrive from real proxies: several lines of one field, `Forwarded` beside
//! `X-Forwarded-For`, `unknown` and obfuscated hops, garbage. Requests are
//! written byte for byte over a TCP stream, so two lines are really two
//! lines on the wire (an HTTP client may merge them). The test app listens on
//! 127.0.0.1, its trusted proxy.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::enrichment::{geo_app_with, stored_event};
use crate::helpers::{IPHONE_UA, TestApp};

/// In the test City database: GB (London) and SE (Linköping).
const LONDON: &str = "81.2.69.142";
const LINKOPING: &str = "89.160.20.1";

/// A response read off the wire.
struct RawReply {
    status: u16,
    head: String,
}

impl RawReply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// `GET path` on a fresh connection with these header lines, each written
/// as its own line in the order given.
async fn raw_get(app: &TestApp, path: &str, lines: &[(&str, &[u8])]) -> RawReply {
    let host = app.base.trim_start_matches("http://");
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {IPHONE_UA}\r\nConnection: close\r\n"
    )
    .into_bytes();
    for (name, value) in lines {
        request.extend_from_slice(name.as_bytes());
        request.extend_from_slice(b": ");
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
        stream.write_all(&request).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        answer
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("answer within 10 s");
    let text = String::from_utf8_lossy(&answer);
    let head = text.split("\r\n\r\n").next().unwrap().to_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    RawReply { status, head }
}

/// Scans `/p` with these header lines and returns the stored event.
async fn scan(app: &TestApp, lines: &[(&str, &[u8])]) -> Value {
    let r = raw_get(app, "/p", lines).await;
    assert_eq!(r.status, 302, "{}", r.head);
    stored_event(app, r.header("location").unwrap()).await
}

async fn app_with_link(dir: &std::path::Path, extra: &[(&str, &str)]) -> TestApp {
    let app = geo_app_with(dir, extra).await;
    app.create_link(
        json!({"destination": "https://example.com/", "slug": "p", "conversion_tracking": true}),
    )
    .await;
    app
}

const XFF: &str = "X-Forwarded-For";
const FWD: &str = "Forwarded";

/// What the tests compare against: the event of a client the proxy names
/// alone, and of a client hidden behind an `unknown` hop.
struct Known {
    london: Value,
    linkoping: Value,
    hidden: Value,
    proxy_itself: Value,
}

async fn known(app: &TestApp) -> Known {
    let london = scan(app, &[(XFF, LONDON.as_bytes())]).await;
    let linkoping = scan(app, &[(XFF, LINKOPING.as_bytes())]).await;
    assert_eq!(
        (&london["country"], &linkoping["country"]),
        (&json!("GB"), &json!("SE"))
    );
    assert_ne!(london["ip_hash"], linkoping["ip_hash"]);
    let hidden = scan(app, &[(XFF, b"unknown")]).await;
    let proxy_itself = scan(app, &[]).await;
    assert_ne!(hidden["ip_hash"], proxy_itself["ip_hash"]);
    Known {
        london,
        linkoping,
        hidden,
        proxy_itself,
    }
}

/// `event` is the London client's: its country and its `ip_hash`.
fn assert_london(event: &Value, k: &Known, what: &str) {
    assert_eq!(event["country"], "GB", "{what}: {event}");
    assert_eq!(event["ip_hash"], k.london["ip_hash"], "{what}");
}

/// `event` is a hidden client's: no geo, the hash of no address, and neither
/// a forged address nor the proxy's own.
fn assert_hidden(event: &Value, k: &Known, what: &str) {
    for field in ["country", "region", "city", "asn", "isp"] {
        assert_eq!(event[field], json!(null), "{what}: {field}");
    }
    assert_eq!(event["ip_hash"], k.hidden["ip_hash"], "{what}");
    for other in [&k.london, &k.linkoping, &k.proxy_itself] {
        assert_ne!(event["ip_hash"], other["ip_hash"], "{what}");
    }
}

#[actix_rt::test]
async fn two_x_forwarded_for_lines_the_proxys_line_decides() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_with_link(dir.path(), &[]).await;
    let k = known(&app).await;
    // The client forges a line; the proxy appends the real address.
    let forged = scan(
        &app,
        &[(XFF, LINKOPING.as_bytes()), (XFF, LONDON.as_bytes())],
    )
    .await;
    assert_london(&forged, &k, "forged first line");
    let forged = scan(&app, &[(XFF, b"8.8.8.8"), (XFF, LONDON.as_bytes())]).await;
    assert_london(&forged, &k, "8.8.8.8 first");
    // Order matters: the last line is the nearest hop.
    let reversed = scan(
        &app,
        &[(XFF, LONDON.as_bytes()), (XFF, LINKOPING.as_bytes())],
    )
    .await;
    assert_eq!(reversed["country"], "SE");
    assert_eq!(reversed["ip_hash"], k.linkoping["ip_hash"]);
    // Lists within lines and trusted hops after the client.
    let chain = format!("{LINKOPING}, {LONDON}");
    let lines = scan(
        &app,
        &[
            (XFF, b"8.8.8.8, 9.9.9.9"),
            (XFF, chain.as_bytes()),
            (XFF, b"127.0.0.1"),
        ],
    )
    .await;
    assert_london(&lines, &k, "three lines");
}

#[actix_rt::test]
async fn two_forwarded_lines_the_proxys_line_decides() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_with_link(dir.path(), &[]).await;
    let k = known(&app).await;
    let proxy_line = format!("for=\"{LONDON}:4711\";proto=https;by=127.0.0.1");
    let forged = scan(
        &app,
        &[(FWD, b"for=89.160.20.1"), (FWD, proxy_line.as_bytes())],
    )
    .await;
    assert_london(&forged, &k, "forged Forwarded line");
    let alone = scan(&app, &[(FWD, format!("for={LONDON}").as_bytes())]).await;
    assert_london(&alone, &k, "one Forwarded line");
    let v6 = scan(
        &app,
        &[(FWD, b"for=8.8.8.8"), (FWD, b"for=\"[2a02:c7f::1]:443\"")],
    )
    .await;
    assert_eq!(v6["country"], "AT");
}

#[actix_rt::test]
async fn forwarded_and_x_forwarded_for_must_name_the_same_client() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_with_link(dir.path(), &[]).await;
    let k = known(&app).await;
    let fwd_london = format!("for={LONDON}");
    let fwd_linkoping = format!("for={LINKOPING}");
    // A proxy that writes both: they agree.
    let both = scan(
        &app,
        &[(FWD, fwd_london.as_bytes()), (XFF, LONDON.as_bytes())],
    )
    .await;
    assert_london(&both, &k, "both agree");
    // The proxy writes X-Forwarded-For, the client forged Forwarded (and the
    // other way round): neither header wins, the client is hidden.
    let forged = scan(
        &app,
        &[(FWD, fwd_linkoping.as_bytes()), (XFF, LONDON.as_bytes())],
    )
    .await;
    assert_hidden(&forged, &k, "forged Forwarded");
    let forged = scan(
        &app,
        &[(XFF, LINKOPING.as_bytes()), (FWD, fwd_london.as_bytes())],
    )
    .await;
    assert_hidden(&forged, &k, "forged X-Forwarded-For");
    // An empty field is no field.
    let empty = scan(&app, &[(XFF, b""), (FWD, fwd_london.as_bytes())]).await;
    assert_london(&empty, &k, "empty X-Forwarded-For");
}

#[actix_rt::test]
async fn an_unknown_or_obfuscated_hop_hides_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_with_link(dir.path(), &[]).await;
    let k = known(&app).await;
    let cases: [&[(&str, &[u8])]; 6] = [
        &[(XFF, LONDON.as_bytes()), (XFF, b"unknown")],
        &[(XFF, b"81.2.69.142, unknown, 127.0.0.1")],
        &[(FWD, b"for=81.2.69.142"), (FWD, b"for=unknown")],
        &[(FWD, b"for=\"_hidden\"")],
        &[(FWD, b"for=81.2.69.142, for=_a1-b.2")],
        &[
            (FWD, b"for=81.2.69.142"),
            (FWD, b"proto=https;by=127.0.0.1"),
        ],
    ];
    for lines in cases {
        let event = scan(&app, lines).await;
        assert_hidden(&event, &k, &format!("{lines:?}"));
    }
    // An unknown hop beyond the client changes nothing.
    let beyond = scan(&app, &[(XFF, b"unknown"), (XFF, LONDON.as_bytes())]).await;
    assert_london(&beyond, &k, "unknown farther out");
}

#[actix_rt::test]
async fn a_malformed_line_among_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_with_link(dir.path(), &[]).await;
    let k = known(&app).await;
    // The client's garbage comes before the proxy's line: the proxy decides.
    let garbage: [&[u8]; 4] = [
        b"not an ip, ###",
        b"\xff\xfe\xfd",
        b"[::1",
        b"1.2.3.4:99999",
    ];
    for bad in garbage {
        let event = scan(&app, &[(XFF, bad), (XFF, LONDON.as_bytes())]).await;
        assert_london(&event, &k, &String::from_utf8_lossy(bad));
    }
    let event = scan(
        &app,
        &[(FWD, b"for=\"unterminated"), (FWD, b"for=81.2.69.142")],
    )
    .await;
    assert_london(
        &event,
        &k,
        "unterminated quote in an earlier Forwarded line",
    );
    let event = scan(&app, &[(FWD, b"for"), (FWD, b"for=81.2.69.142")]).await;
    assert_london(&event, &k, "a pair without a value");
    // Garbage where the client should be: hidden, never the proxy.
    let event = scan(&app, &[(XFF, LONDON.as_bytes()), (XFF, b"not-an-ip")]).await;
    assert_hidden(&event, &k, "garbage last");
    let event = scan(
        &app,
        &[(FWD, b"for=81.2.69.142"), (FWD, b"for=\"81.2.69.143")],
    )
    .await;
    assert_hidden(&event, &k, "broken quoting last");
}

#[actix_rt::test]
async fn hidden_clients_are_limited_per_proxy_and_named_ones_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_with_link(
        dir.path(),
        &[("SCANHOP__SERVER__REDIRECT_LIMIT_PER_MINUTE", "2")],
    )
    .await;
    let hidden: [&[u8]; 3] = [b"for=_one", b"for=_two", b"for=unknown"];
    let statuses: Vec<u16> = {
        let mut out = Vec::new();
        for name in hidden {
            out.push(raw_get(&app, "/p", &[(FWD, name)]).await.status);
        }
        out
    };
    assert_eq!(
        statuses,
        [302, 302, 429],
        "every hidden client shares the proxy's allowance"
    );
    assert_eq!(
        raw_get(&app, "/p", &[(XFF, LONDON.as_bytes())])
            .await
            .status,
        302
    );
    assert_eq!(
        raw_get(&app, "/p", &[]).await.status,
        302,
        "the proxy's own requests count apart"
    );
    // A forged first line does not give a client a fresh allowance.
    let mut statuses = Vec::new();
    for forged in [&b"1.1.1.1"[..], b"2.2.2.2"] {
        let lines = [(XFF, forged), (XFF, LINKOPING.as_bytes())];
        statuses.push(raw_get(&app, "/p", &lines).await.status);
    }
    assert_eq!(statuses, [302, 302]);
    let lines = [(XFF, &b"3.3.3.3"[..]), (XFF, LINKOPING.as_bytes())];
    assert_eq!(raw_get(&app, "/p", &lines).await.status, 429);
}

#[actix_rt::test]
async fn the_api_limit_per_address_follows_the_proxys_line() {
    let dir = tempfile::tempdir().unwrap();
    let app = geo_app_with(
        dir.path(),
        &[("SCANHOP__PLANS__FREE__REQUESTS_PER_MINUTE", "2")],
    )
    .await;
    let mut statuses = Vec::new();
    for forged in [&b"1.1.1.1"[..], b"2.2.2.2", b"3.3.3.3"] {
        let lines = [(XFF, forged), (XFF, LONDON.as_bytes())];
        statuses.push(raw_get(&app, "/v1/links", &lines).await.status);
    }
    assert_eq!(
        statuses,
        [401, 401, 429],
        "without a token: limited by the proxy's entry"
    );
    let other = [(XFF, &b"1.1.1.1"[..]), (XFF, LINKOPING.as_bytes())];
    assert_eq!(raw_get(&app, "/v1/links", &other).await.status, 401);
}
