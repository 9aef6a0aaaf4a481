//! Exporting scan events: the whole filtered list, oldest first, streamed as
//! NDJSON or CSV, equal item for item to what `GET /v1/events` lists; and
//! `scanhop export`, which writes the same bytes from a stopped server's store.

use std::process::Command;

use serde_json::{Value, json};

use crate::helpers::{BinaryServer, IPHONE_UA, Reply, TestApp, spawn_app};

const DESKTOP_UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
const ANDROID_TABLET_UA: &str = "Mozilla/5.0 (Linux; Android 14; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
/// Commas, double quotes, a semicolon, a tab and a leading `=`: everything a
/// header can carry that CSV must quote or keep. (A header cannot carry a line
/// break; the encoder's unit tests cover those.)
const TRICKY_REFERER: &str = "=https://news.example/a,b?q=\"x, y\"&z=1;\tp=\"\"";

fn lines(r: &Reply) -> Vec<Value> {
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    r.text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// An event object as CSV cells: `null` empty, everything else as written.
fn cells(event: &Value) -> Vec<String> {
    event
        .as_object()
        .unwrap()
        .values()
        .map(|v| match v {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

/// The header and the rows of a CSV answer, read with the csv crate.
fn csv_rows(r: &Reply) -> (Vec<String>, Vec<Vec<String>>) {
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    let mut reader = csv::Reader::from_reader(r.body.as_slice());
    let header = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    let rows = reader
        .records()
        .map(|row| row.unwrap().iter().map(str::to_owned).collect())
        .collect();
    (header, rows)
}

async fn export(app: &TestApp, query: &str) -> Reply {
    app.get(&format!("/v1/events/export?{query}")).await
}

/// Two links, scanned by phones, a tablet, a desktop and a bot, with and
/// without a tricky `Referer`; waits until every scan is stored.
async fn scanned_app() -> (TestApp, String) {
    let app = spawn_app().await;
    let a = app
        .create_link(json!({"destination": "https://a.example/", "slug": "a", "tags": ["print"]}))
        .await;
    app.create_link(json!({"destination": "https://b.example/?x=1,2", "slug": "b"}))
        .await;
    let scans: [(&str, &[(&str, &str)]); 8] = [
        ("a", &[("User-Agent", IPHONE_UA)]),
        (
            "a",
            &[("User-Agent", DESKTOP_UA), ("Referer", TRICKY_REFERER)],
        ),
        (
            "b",
            &[("User-Agent", IPHONE_UA), ("Accept-Language", "de-AT")],
        ),
        ("b", &[("User-Agent", "curl/8.5.0")]),
        (
            "a",
            &[
                ("User-Agent", ANDROID_TABLET_UA),
                ("Referer", "https://x.example/"),
            ],
        ),
        (
            "b",
            &[("User-Agent", DESKTOP_UA), ("Referer", TRICKY_REFERER)],
        ),
        ("a", &[("User-Agent", "Googlebot/2.1")]),
        ("b", &[("User-Agent", IPHONE_UA)]),
    ];
    for (slug, headers) in scans {
        assert_eq!(app.scan_with(slug, headers).await.status.as_u16(), 302);
    }
    app.eventually("8 stored", || async {
        app.all_events("include_bots=true").await.len() == 8
    })
    .await;
    (app, a["id"].as_str().unwrap().to_owned())
}

#[actix_rt::test]
async fn the_export_is_the_list_reversed_item_for_item_in_ndjson_and_csv() {
    let (app, a) = scanned_app().await;
    let all = app.all_events("include_bots=true").await;
    assert!(
        all.iter().any(|e| e["referer"] == TRICKY_REFERER),
        "the referer is kept as sent"
    );
    // From the 3rd oldest (inclusive) to the 2nd newest (exclusive).
    let from = all[5]["timestamp"].as_str().unwrap().to_owned();
    let to = all[1]["timestamp"].as_str().unwrap().to_owned();
    let queries = [
        String::new(),
        "include_bots=true".to_owned(),
        format!("link_id={a}"),
        format!("link_id={a}&include_bots=true"),
        "device_type=desktop".to_owned(),
        "include_bots=true&device_type=bot".to_owned(),
        format!("from={from}&to={to}&include_bots=true"),
        format!("from={from}"),
        "tag=print".to_owned(),
        "to=2000-01-01T00:00:00Z".to_owned(),
    ];
    let mut non_empty = 0;
    for q in &queries {
        let mut listed = app.all_events(q).await;
        listed.reverse();
        non_empty += usize::from(!listed.is_empty());
        let exported = lines(&export(&app, q).await);
        assert_eq!(exported, listed, "ndjson, `{q}`");
        assert_eq!(
            lines(&export(&app, &format!("format=ndjson&{q}")).await),
            listed,
            "explicit ndjson, `{q}`"
        );
        let (header, rows) = csv_rows(&export(&app, &format!("format=csv&{q}")).await);
        let fields: Vec<String> = all[0].as_object().unwrap().keys().cloned().collect();
        assert_eq!(header, fields, "every field, in the list's order");
        let expected: Vec<Vec<String>> = listed.iter().map(cells).collect();
        assert_eq!(rows, expected, "csv, `{q}`");
    }
    assert!(non_empty >= 8, "the filters are not all empty");
    // Oldest first: IDs (and so times) ascend.
    let exported = lines(&export(&app, "include_bots=true").await);
    let ids: Vec<&str> = exported.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted);
    assert_eq!(ids.len(), 8);
    // Bots and booleans in CSV.
    let (header, rows) = csv_rows(&export(&app, "format=csv&include_bots=true").await);
    let bot = header.iter().position(|h| h == "bot").unwrap();
    let visitor = header.iter().position(|h| h == "visitor_id").unwrap();
    assert_eq!(rows.iter().filter(|r| r[bot] == "true").count(), 2);
    assert_eq!(rows.iter().filter(|r| r[bot] == "false").count(), 6);
    // Bots have no visitor: `null` is an empty cell; people have theirs.
    for r in &rows {
        assert_eq!(r[visitor].is_empty(), r[bot] == "true", "{r:?}");
    }
}

#[actix_rt::test]
async fn the_answer_is_an_attachment_of_the_asked_media_type_and_bad_input_is_400() {
    let (app, _) = scanned_app().await;
    let r = export(&app, "").await;
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    let disposition = r.header("content-disposition").unwrap().to_owned();
    let name = disposition
        .strip_prefix("attachment; filename=\"scanhop-events-")
        .and_then(|n| n.strip_suffix("Z.ndjson\""))
        .unwrap_or_else(|| panic!("{disposition}"));
    assert!(
        name.len() == 15 && name.as_bytes()[8] == b'T',
        "UTC time in basic ISO form: {disposition}"
    );
    assert!(
        r.header("x-ratelimit-limit").is_some(),
        "like every /v1 answer"
    );
    assert!(r.body.ends_with(b"\n"));

    let r = export(&app, "format=csv").await;
    assert_eq!(r.header("content-type"), Some("text/csv; charset=utf-8"));
    let disposition = r.header("content-disposition").unwrap();
    assert!(
        disposition.starts_with("attachment; filename=\"scanhop-events-")
            && disposition.ends_with("Z.csv\""),
        "{disposition}"
    );
    let text = r.text();
    assert!(text.starts_with("id,link_id,visitor_id,timestamp,method,device_type,os,os_version,browser,browser_version,country,region,city,isp,asn,language,referer,destination,ip_hash,bot\r\n"), "{text}");
    // RFC 4180: the field quoted, its quotes doubled.
    let quoted = format!("\"{}\"", TRICKY_REFERER.replace('"', "\"\""));
    assert_eq!(text.matches(&quoted).count(), 2, "{text}");
    assert!(text.ends_with("\r\n"));

    // Paging parameters mean nothing here and, like any parameter the API
    // does not know, are ignored: the export is still complete.
    assert_eq!(lines(&export(&app, "page_size=1").await).len(), 6);

    for bad in [
        "format=xml",
        "format=CSV",
        "format=",
        "format=csv&from=yesterday",
        "to=2026-13-01T00:00:00Z",
        "link_id=lnk_123",
        "link_id=evt_01h455vb4pex5vsknk084sn02q",
        "visitor_id=nope",
        "device_type=fridge",
        "country=Austria",
        "include_bots=maybe",
        "tag=",
    ] {
        export(&app, bad).await.assert_problem(400, "bad_request");
    }
}

#[actix_rt::test]
async fn only_the_callers_workspace_is_exported_and_only_with_a_secret_token() {
    let (app, a) = scanned_app().await;
    let other = app.other_workspace();
    for q in [
        "include_bots=true",
        &format!("link_id={a}&include_bots=true"),
    ] {
        let url = app.url(&format!("/v1/events/export?{q}"));
        let r = app.send_as(&other, app.client.get(url.clone()), None).await;
        assert_eq!(r.status.as_u16(), 200);
        assert!(r.body.is_empty(), "{}", r.text());
        let r = app
            .send_as(&other, app.client.get(format!("{url}&format=csv")), None)
            .await;
        let (_, rows) = csv_rows(&r);
        assert!(rows.is_empty(), "only the header: {}", r.text());
    }
    let pk = app
        .post("/v1/tokens", json!({"type": "publishable"}))
        .await
        .json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = app.url("/v1/events/export");
    app.send_as(&pk, app.client.get(&url), None)
        .await
        .assert_problem(403, "forbidden");
    app.raw(app.client.get(&url), "")
        .await
        .assert_problem(401, "unauthorized");
}

/// Events written straight into the store, more than one page of the
/// export: the stream carries them all, in order, like the list.
#[actix_rt::test]
async fn an_export_longer_than_a_page_streams_whole() {
    use scanhop::domain::{DeviceType, ScanEvent, ScanMethod};
    use scanhop::ids::{EventId, LinkId};

    let app = spawn_app().await;
    let ws = app.get("/v1/workspace").await.json()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let link = LinkId::generate();
    // Millisecond IDs from a fixed past day, so they sort below any real scan.
    let start_ms = 1_780_000_000_000;
    let n = 2_500;
    for batch in 0..5 {
        let events: Vec<ScanEvent> = (0..n / 5)
            .map(|i| {
                let mut id = EventId::lower_bound_bytes(start_ms + batch * 1000 + i);
                id[15] = 1;
                ScanEvent {
                    id: EventId::from_bytes(id),
                    workspace_id: ws,
                    link_id: link,
                    visitor_id: None,
                    method: ScanMethod::Get,
                    device_type: DeviceType::Mobile,
                    os: None,
                    os_version: None,
                    browser: None,
                    browser_version: None,
                    country: None,
                    region: None,
                    city: None,
                    isp: None,
                    asn: None,
                    language: None,
                    referer: Some(format!("https://r.example/{batch},{i}")),
                    destination: "https://e.example/".into(),
                    ip_hash: [7; 32],
                    bot: false,
                }
            })
            .collect();
        app.store.commit_scans(&events).unwrap();
    }
    let mut listed = app.all_events("").await;
    listed.reverse();
    assert_eq!(listed.len(), n as usize);
    assert_eq!(lines(&export(&app, "").await), listed);
    let (_, rows) = csv_rows(&export(&app, "format=csv").await);
    assert_eq!(rows, listed.iter().map(cells).collect::<Vec<_>>());
}

fn scanhop(data: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_scanhop"))
        .args(args)
        .env("SCANHOP__STORAGE__PATH", data)
        .env("SCANHOP__LOG__LEVEL", "warn")
        .output()
        .expect("run scanhop")
}

#[actix_rt::test]
async fn the_cli_writes_what_the_api_answered_once_the_server_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let mut server = BinaryServer::start(data, &[]);
    let token = server.token.clone().expect("first start makes a token");
    let c = awc::Client::builder().disable_redirects().finish();
    let auth = ("Authorization", format!("Bearer {token}"));
    let mut r = c
        .post(format!("{}/v1/links", server.base))
        .insert_header(auth.clone())
        .send_json(&json!({"destination": "https://example.com/", "slug": "s"}))
        .await
        .unwrap();
    let link: Value = r.json().await.unwrap();
    let link_id = link["id"].as_str().unwrap().to_owned();
    for ua in [IPHONE_UA, DESKTOP_UA, "curl/8.5.0", IPHONE_UA] {
        let r = c
            .get(format!("{}/s", server.base))
            .insert_header(("User-Agent", ua))
            .insert_header(("Referer", TRICKY_REFERER))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 302);
    }
    let ask = |query: String| {
        let req = c
            .get(format!("{}/v1/events/export?{query}", server.base))
            .insert_header(auth.clone());
        async move {
            let mut r = req.send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200);
            r.body().await.unwrap().to_vec()
        }
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while ask("include_bots=true".into())
        .await
        .split(|b| *b == b'\n')
        .count()
        < 5
    {
        assert!(std::time::Instant::now() < deadline, "4 scans stored");
        actix_rt::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let api_ndjson = ask(String::new()).await;
    let api_csv = ask(format!("format=csv&include_bots=true&link_id={link_id}")).await;
    let api_from = ask("from=2000-01-01T00:00:00Z&to=2999-01-01T00:00:00Z".into()).await;
    assert_eq!(
        api_ndjson.split(|b| *b == b'\n').count(),
        4,
        "3 and a final newline"
    );

    // While the server runs, the store is its: the CLI says so at once.
    let locked = scanhop(data, &["export", "--workspace", "default"]);
    assert!(!locked.status.success());
    let err = String::from_utf8_lossy(&locked.stderr);
    assert!(err.contains("in use by another process"), "{err}");

    server.signal(libc::SIGTERM);
    assert!(server.wait().success());
    let ws_id = String::from_utf8(scanhop(data, &["workspace", "list"]).stdout)
        .unwrap()
        .split('\t')
        .next()
        .unwrap()
        .to_owned();
    let cli = |args: &[&str]| {
        let out = scanhop(data, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stderr.is_empty(), "no progress bar off a terminal");
        out.stdout
    };
    assert_eq!(cli(&["export", "--workspace", "default"]), api_ndjson);
    assert_eq!(
        cli(&["export", "--workspace", &ws_id, "--format", "ndjson"]),
        api_ndjson
    );
    assert_eq!(
        cli(&[
            "export",
            "--workspace",
            "default",
            "--format",
            "csv",
            "--include-bots",
            "--link",
            &link_id,
        ]),
        api_csv
    );
    assert_eq!(
        cli(&[
            "export",
            "--workspace",
            "default",
            "--from",
            "2000-01-01T00:00:00Z",
            "--to",
            "2999-01-01T00:00:00Z",
        ]),
        api_from
    );

    for (args, says) in [
        (&["export", "--workspace", "nobody"][..], "nobody"),
        (
            &["export", "--workspace", "default", "--format", "xml"],
            "--format",
        ),
        (
            &["export", "--workspace", "default", "--from", "yesterday"],
            "--from",
        ),
        (
            &["export", "--workspace", "default", "--link", "lnk_1"],
            "--link",
        ),
        (&["export"], "--workspace"),
    ] {
        let out = scanhop(data, args);
        assert!(!out.status.success(), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

/// `scanhop export | head -1`: the reader leaves early, and the export ends
/// quietly rather than panicking on the closed pipe.
#[test]
fn the_cli_ends_quietly_when_the_reader_leaves() {
    use scanhop::domain::{DeviceType, ScanEvent, ScanMethod};
    use scanhop::ids::{EventId, LinkId};
    use std::io::Read;
    use std::process::Stdio;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    assert!(
        scanhop(data, &["workspace", "create", "--name", "big"])
            .status
            .success()
    );
    let list = String::from_utf8(scanhop(data, &["workspace", "list"]).stdout).unwrap();
    let ws = list.split('\t').next().unwrap().parse().unwrap();
    {
        let store = scanhop::store::Store::open(data, 16).unwrap();
        let link = LinkId::generate();
        for batch in 0..10i64 {
            let events: Vec<ScanEvent> = (0..1000i64)
                .map(|i| ScanEvent {
                    id: EventId::from_bytes({
                        let mut id =
                            EventId::lower_bound_bytes(1_780_000_000_000 + batch * 1000 + i);
                        id[15] = 1;
                        id
                    }),
                    workspace_id: ws,
                    link_id: link,
                    visitor_id: None,
                    method: ScanMethod::Get,
                    device_type: DeviceType::Desktop,
                    os: None,
                    os_version: None,
                    browser: None,
                    browser_version: None,
                    country: None,
                    region: None,
                    city: None,
                    isp: None,
                    asn: None,
                    language: None,
                    referer: None,
                    destination: "https://e.example/".into(),
                    ip_hash: [1; 32],
                    bot: false,
                })
                .collect();
            store.commit_scans(&events).unwrap();
        }
        store.flush().unwrap();
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_scanhop"))
        .args(["export", "--workspace", "big", "--format", "csv"])
        .env("SCANHOP__STORAGE__PATH", data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 100];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The pipe's reading end is closed here.
    let out = child.wait_with_output().unwrap();
    assert!(first.starts_with(b"id,link_id,"));
    assert!(out.status.success(), "{:?}", out.status);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
