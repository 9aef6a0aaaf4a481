//! Webhooks through HTTP, with a real receiver: an actix-web server in the
//! test on 127.0.0.1 that logs every request, answers what the test scripts,
//! and checks every signature with its own implementation of the Standard
//! Webhooks algorithm (not the server's). Signed, retried, auto-disabled,
//! held while paused, rotated, redelivered and recovered messages; the SSRF
//! rules; bad input; and a kill -9 with messages pending.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::helpers::{BinaryServer, IPHONE_UA, TestApp, metric, spawn_app_with};

/// What the in-process tests run with: receivers on 127.0.0.1 allowed,
/// quick checkpoints, steps and retries, no plan limit.
pub(crate) const FAST: &[(&str, &str)] = &[
    ("SCANHOP__WEBHOOKS__ALLOW_PRIVATE_TARGETS", "true"),
    ("SCANHOP__WEBHOOKS__CHECKPOINT_INTERVAL_MS", "50"),
    ("SCANHOP__WEBHOOKS__POLL_INTERVAL_MS", "20"),
    ("SCANHOP__WEBHOOKS__RETRY_BASE_MS", "50"),
    ("SCANHOP__WEBHOOKS__RETRY_MAX_MS", "200"),
    ("SCANHOP__PLANS__FREE__WEBHOOK_ENDPOINTS", "0"),
];

fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut env = FAST.to_vec();
    env.extend_from_slice(extra);
    env
}

const BOT_UA: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

/// One request the receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    path: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Received {
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
    pub(crate) fn id(&self) -> &str {
        self.header("webhook-id")
    }
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// How the receiver answers the next request.
#[derive(Debug, Clone)]
enum Answer {
    Status(u16),
    Slow(Duration),
    RedirectTo(String),
}

#[derive(Default)]
struct ReceiverState {
    log: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<Answer>>,
    /// What it answers once the script is used up.
    otherwise: Mutex<Option<u16>>,
}

pub(crate) struct Receiver {
    port: u16,
    state: Arc<ReceiverState>,
    handle: actix_web::dev::ServerHandle,
}

async fn receive(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<ReceiverState>,
) -> HttpResponse {
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    state.log.lock().unwrap().push(Received {
        path: req.path().to_owned(),
        headers,
        body: body.to_vec(),
    });
    let next = state.script.lock().unwrap().pop_front();
    match next {
        Some(Answer::Status(s)) => {
            HttpResponse::build(s.try_into().unwrap()).body(format!("answer {s}"))
        }
        Some(Answer::Slow(d)) => {
            actix_rt::time::sleep(d).await;
            HttpResponse::Ok().body("late")
        }
        Some(Answer::RedirectTo(to)) => HttpResponse::Found()
            .insert_header(("Location", to))
            .finish(),
        None => {
            let s = state.otherwise.lock().unwrap().unwrap_or(200);
            HttpResponse::build(s.try_into().unwrap()).body(format!("answer {s}"))
        }
    }
}

impl Receiver {
    pub(crate) async fn start() -> Receiver {
        Self::on(TcpListener::bind("127.0.0.1:0").unwrap())
    }

    fn on(listener: TcpListener) -> Receiver {
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(ReceiverState::default());
        let data = web::Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(receive))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        actix_rt::spawn(server);
        Receiver {
            port,
            state,
            handle,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.state.script.lock().unwrap().extend(answers);
    }

    fn otherwise(&self, status: u16) {
        *self.state.otherwise.lock().unwrap() = Some(status);
    }

    pub(crate) fn log(&self) -> Vec<Received> {
        self.state.log.lock().unwrap().clone()
    }

    /// Waits (up to 15 s) until the receiver has `n` requests on `/hook`.
    pub(crate) async fn wait_for(&self, n: usize) -> Vec<Received> {
        self.wait_for_within(n, Duration::from_secs(15)).await
    }

    /// `wait_for`, up to `limit`.
    pub(crate) async fn wait_for_within(&self, n: usize, limit: Duration) -> Vec<Received> {
        let deadline = Instant::now() + limit;
        loop {
            let got: Vec<Received> = self
                .log()
                .into_iter()
                .filter(|r| r.path == "/hook")
                .collect();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "the receiver got {} of {n} requests",
                got.len()
            );
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        actix_rt::spawn(async move { handle.stop(false).await });
    }
}

/// The receiver's own Standard Webhooks verification: the key is the base64
/// after `whsec_`; the signed content is `{id}.{timestamp}.{body}`; any
/// `v1,` entry may match; the timestamp must be within 5 minutes.
pub(crate) fn verifies(secret: &str, r: &Received) -> bool {
    let Some(b64) = secret.strip_prefix("whsec_") else {
        return false;
    };
    let Ok(key) = STANDARD.decode(b64) else {
        return false;
    };
    let Ok(ts) = r.header("webhook-timestamp").parse::<i64>() else {
        return false;
    };
    let now = jiff::Timestamp::now().as_second();
    if (now - ts).abs() > 300 {
        return false;
    }
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{ts}.", r.id()).as_bytes());
    mac.update(&r.body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    r.header("webhook-signature")
        .split(' ')
        .any(|entry| entry == expected)
}

#[test]
fn the_receivers_verifier_agrees_with_the_standard_webhooks_test_vector() {
    let mut headers = BTreeMap::new();
    headers.insert(
        "webhook-id".into(),
        "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk".into(),
    );
    let now = jiff::Timestamp::now().as_second();
    headers.insert("webhook-timestamp".into(), now.to_string());
    let body = br#"{"email":"test@example.com","username":"test_user"}"#.to_vec();
    let secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    // The vector's signature belongs to its timestamp; at another time the
    // verifier must compute another one, so check the vector by hand.
    let key = STANDARD.decode(&secret[6..]).unwrap();
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
    mac.update(b"msg_27UH4WbU6Z5A5EzD8u03UvzRbpk.1649367553.");
    mac.update(&body);
    assert_eq!(
        STANDARD.encode(mac.finalize().into_bytes()),
        "tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
    );
    headers.insert(
        "webhook-signature".into(),
        "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=".into(),
    );
    let r = Received {
        path: "/hook".into(),
        headers,
        body,
    };
    assert!(!verifies(secret, &r), "a signature of another time fails");
}

async fn create_hook(app: &TestApp, body: Value) -> Value {
    let r = app.post("/v1/webhooks", body).await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text());
    r.json()
}

pub(crate) async fn hook_with(app: &TestApp, rx: &Receiver, events: &[&str]) -> (String, String) {
    let hook = create_hook(
        app,
        json!({"url": rx.url(), "events": events, "name": "CRM"}),
    )
    .await;
    (
        hook["id"].as_str().unwrap().to_owned(),
        hook["secret"].as_str().unwrap().to_owned(),
    )
}

async fn get_hook(app: &TestApp, id: &str) -> Value {
    let r = app.get(&format!("/v1/webhooks/{id}")).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    r.json()
}

async fn deliveries(app: &TestApp, id: &str, query: &str) -> Vec<Value> {
    let r = app
        .get(&format!("/v1/webhooks/{id}/deliveries{query}"))
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    r.json()["data"].as_array().unwrap().clone()
}

async fn send_test(app: &TestApp, id: &str) -> String {
    let r = app
        .post(&format!("/v1/webhooks/{id}/test"), json!({}))
        .await;
    assert_eq!(r.status.as_u16(), 202, "{}", r.text());
    r.json()["message_id"].as_str().unwrap().to_owned()
}

/// Polls until `f` holds (up to 15 s).
async fn until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        actix_rt::time::sleep(Duration::from_millis(25)).await;
    }
}

#[actix_rt::test]
async fn webhooks_a_scan_sends_a_signed_qr_scanned_and_step_completed_as_the_contract_says() {
    let app = spawn_app_with(FAST).await;
    let rx = Receiver::start().await;
    let link = app
        .create_link(
            json!({"destination": "https://example.com/menu", "slug": "menu",
                            "name": "Menu", "tags": ["restaurant"]}),
        )
        .await;
    let (id, secret) = hook_with(&app, &rx, &["qr.scanned", "step.completed"]).await;
    assert!(secret.starts_with("whsec_") && STANDARD.decode(&secret[6..]).unwrap().len() >= 24);
    // A bot makes no message; a person makes one of each type.
    app.scan_with("menu", &[("User-Agent", BOT_UA)]).await;
    app.scan("menu").await;
    let got = rx.wait_for(2).await;
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.log().len(), 2, "the bot's scan made no message");
    let events = app.all_events("").await;
    assert_eq!(events.len(), 1);
    let event = &events[0];
    let by_type: BTreeMap<String, &Received> = got
        .iter()
        .map(|r| (r.json()["type"].as_str().unwrap().to_owned(), r))
        .collect();
    for (ty, r) in &by_type {
        assert!(verifies(&secret, r), "{ty} verifies");
        assert!(r.id().starts_with("msg_"), "{}", r.id());
        assert_eq!(r.header("content-type"), "application/json");
        assert_eq!(
            r.header("user-agent"),
            concat!("scanhop-webhooks/", env!("CARGO_PKG_VERSION"))
        );
        let body = r.json();
        assert_eq!(body["timestamp"], event["timestamp"]);
        assert_eq!(
            &body["data"]["event"], event,
            "the event object as the API lists it"
        );
        assert_eq!(body["data"]["scan_id"], event["id"]);
        assert_eq!(
            body["data"]["visitor"],
            json!({"id": event["visitor_id"], "attributes": {}})
        );
        assert_eq!(
            body["data"]["link"],
            json!({"id": link["id"], "name": "Menu", "slug": "menu",
                   "short_url": "https://scan.example/menu",
                   "destination": "https://example.com/menu", "tags": ["restaurant"]})
        );
    }
    assert_ne!(by_type["qr.scanned"].id(), by_type["step.completed"].id());
    assert!(by_type["qr.scanned"].json()["data"].get("step").is_none());
    assert_eq!(
        by_type["step.completed"].json()["data"]["step"],
        json!({"kind": "exit", "action": "redirect", "answers": {}})
    );
    until("the counters", || async {
        get_hook(&app, &id).await["success_count"] == 2
    })
    .await;
    let hook = get_hook(&app, &id).await;
    assert_eq!(hook["status"], "active");
    assert_eq!(hook["failure_count"], 0);
    assert!(hook["last_delivered_at"].is_string() && hook["last_sent_at"].is_string());
    assert!(
        hook.get("secret").is_none(),
        "the secret is shown only at creation"
    );
    let log = deliveries(&app, &id, "?status=succeeded").await;
    assert_eq!(log.len(), 2);
    assert_eq!(log[0]["response_status"], 200);
    assert_eq!(log[0]["response_body"], "answer 200");
    assert_eq!(log[0]["attempt"], 1);
    assert_eq!(log[0]["trigger"], "auto");
    let m = app.get("/v1/metrics").await.json();
    assert_eq!(m["active_webhooks"], 1);
    let metrics = app
        .raw(app.client.get(app.url("/metrics")), "")
        .await
        .text();
    assert!(
        metrics.contains("scanhop_webhook_deliveries_total{result=\"succeeded\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("scanhop_consumer_lag_events{consumer=\"webhooks\"}"));
    assert!(metrics.contains("scanhop_webhook_outbox_depth 0"));
}

#[actix_rt::test]
async fn webhooks_a_500_is_retried_at_once_with_the_same_webhook_id_and_a_fresh_signature() {
    let app = spawn_app_with(FAST).await;
    let rx = Receiver::start().await;
    rx.script([Answer::Status(500)]);
    let (id, secret) = hook_with(&app, &rx, &["qr.scanned"]).await;
    let msg = send_test(&app, &id).await;
    let got = rx.wait_for(2).await;
    assert_eq!(got[0].id(), msg);
    assert_eq!(got[1].id(), msg, "the same webhook-id on the retry");
    assert_eq!(got[0].body, got[1].body, "the same bytes");
    assert!(got.iter().all(|r| verifies(&secret, r)));
    assert_eq!(got[0].json()["type"], "webhook.test");
    assert_eq!(got[0].json()["data"]["webhook_id"], id.as_str());
    until("the second attempt's record", || async {
        deliveries(&app, &id, "?status=succeeded").await.len() == 1
    })
    .await;
    let log = deliveries(&app, &id, "").await;
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(
        (log[1]["attempt"].clone(), log[1]["status"].clone()),
        (json!(1), json!("failed"))
    );
    assert_eq!(log[1]["response_status"], 500);
    assert_eq!(log[1]["response_body"], "answer 500");
    assert_eq!(log[1]["error"], "http_status");
    assert_eq!(log[0]["attempt"], 2);
    assert_eq!(log[0]["message_id"], msg.as_str());
    // The log pages like every list.
    let first = app
        .get(&format!("/v1/webhooks/{id}/deliveries?page_size=1"))
        .await
        .json();
    assert_eq!(first["data"][0]["id"], log[0]["id"]);
    let token = first["next_page_token"].as_str().unwrap();
    let second = app
        .get(&format!(
            "/v1/webhooks/{id}/deliveries?page_size=1&page_token={token}"
        ))
        .await
        .json();
    assert_eq!(second["data"][0]["id"], log[1]["id"]);
    assert_eq!(
        second["next_page_token"],
        Value::Null,
        "the last page says so"
    );
    // A token belongs to its query: not to another status filter.
    app.get(&format!(
        "/v1/webhooks/{id}/deliveries?status=failed&page_size=1&page_token={token}"
    ))
    .await
    .assert_problem(400, "bad_request");
    let hook = get_hook(&app, &id).await;
    assert_eq!(
        (hook["success_count"].clone(), hook["failure_count"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(hook["consecutive_failures"], 0);
}

#[actix_rt::test]
async fn webhooks_an_answer_slower_than_the_timeout_is_a_failed_attempt() {
    let app = spawn_app_with(&with(&[("SCANHOP__WEBHOOKS__TIMEOUT_MS", "300")])).await;
    let rx = Receiver::start().await;
    rx.script([Answer::Slow(Duration::from_secs(2))]);
    let (id, _) = hook_with(&app, &rx, &["qr.scanned"]).await;
    send_test(&app, &id).await;
    until("the retry after the timeout", || async {
        deliveries(&app, &id, "?status=succeeded").await.len() == 1
    })
    .await;
    let failed = deliveries(&app, &id, "?status=failed").await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["error"], "timeout");
    assert_eq!(failed[0]["response_status"], Value::Null);
    assert!(failed[0]["duration_ms"].as_u64().unwrap() < 2000);
}

#[actix_rt::test]
async fn webhooks_ten_failed_messages_auto_disable_the_hook_and_reactivation_resets_it() {
    let app = spawn_app_with(FAST).await;
    let rx = Receiver::start().await;
    rx.otherwise(503);
    let (id, _) = hook_with(&app, &rx, &["qr.scanned"]).await;
    app.create_link(json!({"destination": "https://example.com/", "slug": "ad"}))
        .await;
    for _ in 0..10 {
        send_test(&app, &id).await;
    }
    until("auto_disabled", || async {
        get_hook(&app, &id).await["status"] == "auto_disabled"
    })
    .await;
    let hook = get_hook(&app, &id).await;
    assert_eq!(hook["consecutive_failures"], 10);
    assert_eq!(hook["failure_count"], 30, "three attempts each");
    assert_eq!(rx.log().len(), 30);
    // Auto-disabled: nothing is derived or sent, a test is refused.
    app.scan("ad").await;
    let r = app
        .post(&format!("/v1/webhooks/{id}/test"), json!({}))
        .await;
    r.assert_problem(409, "conflict");
    actix_rt::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(rx.log().len(), 30);
    assert_eq!(app.get("/v1/metrics").await.json()["active_webhooks"], 0);
    // Active again: the count starts over and messages flow.
    rx.otherwise(200);
    let r = app
        .patch(&format!("/v1/webhooks/{id}"), json!({"status": "active"}))
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    assert_eq!(r.json()["consecutive_failures"], 0);
    assert_eq!(r.json()["status"], "active");
    app.scan("ad").await;
    rx.wait_for(31).await;
    assert_eq!(rx.log()[30].json()["type"], "qr.scanned");
}

#[actix_rt::test]
async fn webhooks_link_ids_limit_a_hook_to_those_links() {
    let app = spawn_app_with(FAST).await;
    let rx = Receiver::start().await;
    let a = app
        .create_link(json!({"destination": "https://example.com/a", "slug": "la"}))
        .await;
    app.create_link(json!({"destination": "https://example.com/b", "slug": "lb"}))
        .await;
    let hook = create_hook(
        &app,
        json!({"url": rx.url(), "events": ["qr.scanned"], "link_ids": [a["id"]]}),
    )
    .await;
    assert_eq!(hook["link_ids"], json!([a["id"]]));
    app.scan("lb").await;
    app.scan("la").await;
    app.scan("lb").await;
    let got = rx.wait_for(1).await;
    actix_rt::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(rx.log().len(), 1);
    assert_eq!(got[0].json()["data"]["link"]["id"], a["id"]);
    // Back to all links.
    let id = hook["id"].as_str().unwrap();
    let r = app
        .patch(&format!("/v1/webhooks/{id}"), json!({"link_ids": null}))
        .await;
    assert_eq!(r.json()["link_ids"], Value::Null);
    app.scan("lb").await;
    let got = rx.wait_for(2).await;
    assert_eq!(got[1].json()["data"]["link"]["slug"], "lb");
}

#[actix_rt::test]
async fn webhooks_a_paused_hook_holds_its_messages_until_it_is_active_again() {
    let app = spawn_app_with(FAST).await;
    let rx = Receiver::start().await;
    app.create_link(json!({"destination": "https://example.com/", "slug": "hold"}))
        .await;
    let (id, secret) = hook_with(&app, &rx, &["qr.scanned"]).await;
    let r = app
        .patch(&format!("/v1/webhooks/{id}"), json!({"status": "paused"}))
        .await;
    assert_eq!(r.json()["status"], "paused");
    for _ in 0..3 {
        app.scan("hold").await;
    }
    until("three held messages", || async {
        deliveries(&app, &id, "?status=pending").await.len() == 3
    })
    .await;
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.log().is_empty(), "nothing is sent while paused");
    app.patch(&format!("/v1/webhooks/{id}"), json!({"status": "active"}))
        .await;
    let got = rx.wait_for(3).await;
    assert!(got.iter().all(|r| verifies(&secret, r)));
    let ids: BTreeSet<&str> = got.iter().map(Received::id).collect();
    assert_eq!(ids.len(), 3);
}

#[actix_rt::test]
async fn webhooks_an_endpoint_at_build_ahead_gets_the_waiting_scans_messages_once_it_takes_the_built_ones()
 {
    let app = spawn_app_with(&with(&[("SCANHOP__WEBHOOKS__BUILD_AHEAD", "2")])).await;
    let rx = Receiver::start().await;
    app.create_link(json!({"destination": "https://example.com/", "slug": "ahead"}))
        .await;
    let (id, secret) = hook_with(&app, &rx, &["qr.scanned"]).await;
    app.patch(&format!("/v1/webhooks/{id}"), json!({"status": "paused"}))
        .await;
    for _ in 0..6 {
        assert_eq!(app.scan("ahead").await.status.as_u16(), 302);
    }
    // Two messages built and held; the other four scans wait in the log.
    until("two built, four scans waiting", || async {
        let text = app.get("/metrics").await.text();
        deliveries(&app, &id, "?status=pending").await.len() == 2
            && metric::<u64>(&text, "scanhop_webhook_backlog_hooks") == Some(1)
    })
    .await;
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(deliveries(&app, &id, "?status=pending").await.len(), 2);
    assert!(deliveries(&app, &id, "?status=failed").await.is_empty());
    assert!(rx.log().is_empty());
    // Active again: it takes the two, then gets the other four.
    app.patch(&format!("/v1/webhooks/{id}"), json!({"status": "active"}))
        .await;
    let got = rx.wait_for(6).await;
    assert!(got.iter().all(|r| verifies(&secret, r)));
    let scans: BTreeSet<String> = got
        .iter()
        .map(|r| r.json()["data"]["scan_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(scans.len(), 6, "one message per scan");
    until("no hook waiting", || async {
        let text = app.get("/metrics").await.text();
        metric::<u64>(&text, "scanhop_webhook_backlog_hooks") == Some(0)
    })
    .await;
    assert!(deliveries(&app, &id, "?status=failed").await.is_empty());
}

/// Spins on every core from threads of the test's process until dropped:
/// a machine busy with work other than the server's webhooks.
struct BusyMachine {
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl BusyMachine {
    fn start() -> BusyMachine {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = (0..cores)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        for i in 0..10_000u64 {
                            x = x.wrapping_mul(31).wrapping_add(std::hint::black_box(i));
                        }
                    }
                    std::hint::black_box(x);
                })
            })
            .collect();
        BusyMachine { stop, threads }
    }
}

impl Drop for BusyMachine {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[actix_rt::test]
async fn webhooks_on_a_busy_machine_the_delivery_keeps_to_its_cpu_share_and_every_message_arrives()
{
    let app = spawn_app_with(&with(&[("SCANHOP__WEBHOOKS__BUSY_CPU_PERCENT", "1")])).await;
    let rx = Receiver::start().await;
    app.create_link(json!({"destination": "https://example.com/", "slug": "busy"}))
        .await;
    let (_, secret) = hook_with(&app, &rx, &["qr.scanned"]).await;
    let busy = BusyMachine::start();
    // Windows of the pacer see the busy machine before the first scan.
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..20 {
        assert_eq!(app.scan("busy").await.status.as_u16(), 302);
    }
    // 1% of the machine's CPU (2 ms a window on two cores) is less than 20
    // messages take: the delivery holds back until a window ends, and says
    // so.
    until("the delivery held back", || async {
        let text = app.get("/metrics").await.text();
        metric::<u64>(&text, "scanhop_webhook_delivery_paced_total").unwrap_or(0) > 0
    })
    .await;
    drop(busy);
    // Every message arrives, once, signed: at full speed once the load is
    // gone, or still at 1% while other work keeps the machine busy (other
    // tests running beside this one, say).
    let got = rx.wait_for_within(20, Duration::from_secs(90)).await;
    assert!(got.iter().all(|r| verifies(&secret, r)));
    let scans: BTreeSet<String> = got
        .iter()
        .map(|r| r.json()["data"]["scan_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(scans.len(), 20, "one message per scan");
}

#[actix_rt::test]
async fn webhooks_a_rotated_secret_signs_alongside_the_new_one() {
    let app = spawn_app_with(FAST).await;
    let rx = Receiver::start().await;
    let (id, old) = hook_with(&app, &rx, &["qr.scanned"]).await;
    let r = app
        .post(&format!("/v1/webhooks/{id}/rotate-secret"), json!({}))
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    let new = r.json()["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    send_test(&app, &id).await;
    let got = rx.wait_for(1).await;
    let entries: Vec<&str> = got[0].header("webhook-signature").split(' ').collect();
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(entries.iter().all(|e| e.starts_with("v1,")));
    assert!(verifies(&old, &got[0]) && verifies(&new, &got[0]));
    // Each entry verifies with exactly one of the secrets.
    let only = |secret: &str, entry: &str| {
        let mut r = got[0].clone();
        r.headers
            .insert("webhook-signature".into(), entry.to_owned());
        verifies(secret, &r)
    };
    assert!(only(&old, entries[0]) ^ only(&new, entries[0]));
    assert!(only(&old, entries[1]) ^ only(&new, entries[1]));
}

#[actix_rt::test]
async fn webhooks_own_secrets_are_answered_in_whsec_form_and_sign() {
    let app = spawn_app_with(FAST).await;
    let rx = Receiver::start().await;
    let raw = "correct horse battery staple";
    let hook = create_hook(
        &app,
        json!({"url": rx.url(), "events": ["qr.scanned"], "secret": raw}),
    )
    .await;
    let canonical = format!("whsec_{}", STANDARD.encode(raw));
    assert_eq!(hook["secret"], canonical.as_str());
    let id = hook["id"].as_str().unwrap();
    send_test(&app, id).await;
    let got = rx.wait_for(1).await;
    assert!(verifies(&canonical, &got[0]));
    // A whsec_ secret keeps its form.
    let given = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    let hook = create_hook(
        &app,
        json!({"url": rx.url(), "events": ["qr.scanned"], "secret": given}),
    )
    .await;
    assert_eq!(hook["secret"], given);
}

#[actix_rt::test]
async fn webhooks_redeliver_sends_the_same_webhook_id_and_body_again() {
    let app = spawn_app_with(FAST).await;
    let rx = Receiver::start().await;
    let (id, secret) = hook_with(&app, &rx, &["qr.scanned"]).await;
    let msg = send_test(&app, &id).await;
    rx.wait_for(1).await;
    until("the delivery to be recorded", || async {
        deliveries(&app, &id, "?status=succeeded").await.len() == 1
    })
    .await;
    let r = app
        .post(
            &format!("/v1/webhooks/{id}/messages/{msg}/redeliver"),
            json!({}),
        )
        .await;
    assert_eq!(r.status.as_u16(), 202, "{}", r.text());
    assert_eq!(r.json()["message_id"], msg.as_str());
    let got = rx.wait_for(2).await;
    assert_eq!(got[1].id(), msg);
    assert_eq!(got[1].body, got[0].body);
    assert!(verifies(&secret, &got[1]));
    until("the manual attempt's record", || async {
        deliveries(&app, &id, "?status=succeeded").await.len() == 2
    })
    .await;
    let log = deliveries(&app, &id, "").await;
    assert_eq!(
        (log[0]["attempt"].clone(), log[0]["trigger"].clone()),
        (json!(2), json!("manual"))
    );
    // Unknown and malformed message IDs.
    let other = "msg_01h455vb4pex5vsknk084sn02q";
    app.post(
        &format!("/v1/webhooks/{id}/messages/{other}/redeliver"),
        json!({}),
    )
    .await
    .assert_problem(404, "not_found");
    app.post(
        &format!("/v1/webhooks/{id}/messages/evt_01h455vb4pex5vsknk084sn02q/redeliver"),
        json!({}),
    )
    .await
    .assert_problem(400, "bad_request");
}

#[actix_rt::test]
async fn webhooks_recover_queues_the_failed_messages_of_a_window_again() {
    let app = spawn_app_with(&with(&[("SCANHOP__WEBHOOKS__MAX_ATTEMPTS", "1")])).await;
    let rx = Receiver::start().await;
    rx.otherwise(500);
    let (id, _) = hook_with(&app, &rx, &["qr.scanned"]).await;
    let early = send_test(&app, &id).await;
    until("the early message to fail", || async {
        deliveries(&app, &id, "?status=failed").await.len() == 1
    })
    .await;
    actix_rt::time::sleep(Duration::from_millis(20)).await;
    let since = jiff::Timestamp::now();
    actix_rt::time::sleep(Duration::from_millis(20)).await;
    let late: BTreeSet<String> = [send_test(&app, &id).await, send_test(&app, &id).await].into();
    until("the late messages to fail", || async {
        deliveries(&app, &id, "?status=failed").await.len() == 3
    })
    .await;
    rx.otherwise(200);
    let r = app
        .post(
            &format!("/v1/webhooks/{id}/recover"),
            json!({"since": since.to_string()}),
        )
        .await;
    assert_eq!(r.status.as_u16(), 202, "{}", r.text());
    assert_eq!(r.json()["queued"], 2);
    let got = rx.wait_for(5).await;
    let resent: BTreeSet<String> = got[3..].iter().map(|r| r.id().to_owned()).collect();
    assert_eq!(resent, late);
    assert!(!resent.contains(&early));
    // Nothing failed since: nothing to queue.
    let r = app
        .post(
            &format!("/v1/webhooks/{id}/recover"),
            json!({"since": "2999-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(r.json()["queued"], 0);
}

#[actix_rt::test]
async fn webhooks_private_addresses_are_refused_at_registration_by_default() {
    let app = spawn_app_with(&[]).await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://[::1]/hook",
        "http://10.0.0.7/",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/",
        "http://[fd00:ec2::254]/",
        "http://[::ffff:127.0.0.1]/",
        "http://0x7f.1/",
        "http://0.0.0.0/",
    ] {
        let r = app
            .post(
                "/v1/webhooks",
                json!({"url": url, "events": ["qr.scanned"]}),
            )
            .await;
        let body = r.assert_problem(422, "validation_failed");
        assert_eq!(body["errors"][0]["field"], "url", "{url}: {body}");
    }
    let list = app.get("/v1/webhooks").await.json();
    assert_eq!(list["data"], json!([]), "nothing was created");
    // A public one is fine, and a private one is refused in a PATCH too.
    let hook = create_hook(
        &app,
        json!({"url": "https://hooks.example.com/x", "events": ["qr.scanned"]}),
    )
    .await;
    let id = hook["id"].as_str().unwrap();
    app.patch(
        &format!("/v1/webhooks/{id}"),
        json!({"url": "http://127.0.0.1/"}),
    )
    .await
    .assert_problem(422, "validation_failed");
    assert_eq!(
        get_hook(&app, id).await["url"],
        "https://hooks.example.com/x"
    );
}

#[actix_rt::test]
async fn webhooks_a_name_that_resolves_to_loopback_is_refused_when_delivering() {
    let app = spawn_app_with(&[
        ("SCANHOP__WEBHOOKS__POLL_INTERVAL_MS", "20"),
        ("SCANHOP__WEBHOOKS__MAX_ATTEMPTS", "1"),
    ])
    .await;
    let rx = Receiver::start().await;
    let url = format!("http://localhost:{}/hook", rx.port);
    let hook = create_hook(&app, json!({"url": url, "events": ["qr.scanned"]})).await;
    let id = hook["id"].as_str().unwrap();
    send_test(&app, id).await;
    until("the refused attempt", || async {
        deliveries(&app, id, "?status=failed").await.len() == 1
    })
    .await;
    let failed = deliveries(&app, id, "?status=failed").await;
    assert_eq!(failed[0]["error"], "blocked_ip");
    assert_eq!(failed[0]["response_status"], Value::Null);
    assert!(rx.log().is_empty(), "no connection was made");
}

#[actix_rt::test]
async fn webhooks_redirects_are_not_followed() {
    let app = spawn_app_with(&with(&[("SCANHOP__WEBHOOKS__MAX_ATTEMPTS", "1")])).await;
    let rx = Receiver::start().await;
    rx.script([Answer::RedirectTo(format!(
        "http://127.0.0.1:{}/elsewhere",
        rx.port
    ))]);
    let (id, _) = hook_with(&app, &rx, &["qr.scanned"]).await;
    send_test(&app, &id).await;
    until("the failed attempt", || async {
        deliveries(&app, &id, "?status=failed").await.len() == 1
    })
    .await;
    let failed = deliveries(&app, &id, "?status=failed").await;
    assert_eq!(failed[0]["response_status"], 302);
    assert_eq!(failed[0]["error"], "http_status");
    actix_rt::time::sleep(Duration::from_millis(200)).await;
    let paths: Vec<String> = rx.log().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/hook"], "the redirect was not followed");
}

#[actix_rt::test]
async fn webhooks_a_hanging_endpoint_delays_neither_other_endpoints_nor_redirects() {
    let app = spawn_app_with(FAST).await;
    let (slow, quick) = (Receiver::start().await, Receiver::start().await);
    slow.script((0..12).map(|_| Answer::Slow(Duration::from_secs(3))));
    let (slow_id, _) = hook_with(&app, &slow, &["qr.scanned"]).await;
    let (quick_id, _) = hook_with(&app, &quick, &["qr.scanned"]).await;
    for _ in 0..10 {
        send_test(&app, &slow_id).await;
    }
    // The slow endpoint has its 4 requests in flight and 6 waiting.
    slow.wait_for(4).await;
    let started = Instant::now();
    send_test(&app, &quick_id).await;
    quick.wait_for(1).await;
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "the other endpoint waited {:?}",
        started.elapsed()
    );
    assert_eq!(slow.log().len(), 4, "at most 4 in flight to one endpoint");
    // Listed newest first, a page at a time.
    let page = app.get("/v1/webhooks?page_size=1").await.json();
    assert_eq!(page["data"][0]["id"], quick_id.as_str());
    let token = page["next_page_token"].as_str().unwrap();
    let page = app
        .get(&format!("/v1/webhooks?page_size=1&page_token={token}"))
        .await
        .json();
    assert_eq!(page["data"][0]["id"], slow_id.as_str());
    app.create_link(json!({"destination": "https://example.com/", "slug": "fast"}))
        .await;
    let started = Instant::now();
    assert_eq!(app.scan("fast").await.status.as_u16(), 302);
    assert!(started.elapsed() < Duration::from_millis(500));
}

#[actix_rt::test]
async fn webhooks_a_failed_tls_handshake_is_a_failed_attempt() {
    let app = spawn_app_with(&with(&[("SCANHOP__WEBHOOKS__MAX_ATTEMPTS", "1")])).await;
    // The receiver speaks plain HTTP: an https:// URL to it fails in TLS.
    let rx = Receiver::start().await;
    let url = format!("https://127.0.0.1:{}/hook", rx.port);
    let hook = create_hook(&app, json!({"url": url, "events": ["qr.scanned"]})).await;
    let id = hook["id"].as_str().unwrap();
    send_test(&app, id).await;
    until("the failed attempt", || async {
        deliveries(&app, id, "?status=failed").await.len() == 1
    })
    .await;
    let failed = deliveries(&app, id, "?status=failed").await;
    assert_eq!(failed[0]["error"], "tls", "{failed:?}");
    assert_eq!(failed[0]["response_status"], Value::Null);
    assert!(rx.log().iter().all(|r| r.path != "/hook"));
}

#[actix_rt::test]
async fn webhooks_plan_limits_and_bad_input_are_refused_and_change_nothing() {
    let app = spawn_app_with(&[]).await;
    let link = app
        .create_link(json!({"destination": "https://example.com/", "slug": "bi"}))
        .await;
    let good = json!({"url": "https://hooks.example.com/a", "events": ["qr.scanned"]});
    let bad: Vec<(Value, &str)> = vec![
        (json!({"events": ["qr.scanned"]}), "url"),
        (json!({"url": "https://hooks.example.com/"}), "events"),
        (json!({"url": null, "events": ["qr.scanned"]}), "url"),
        (
            json!({"url": "ftp://hooks.example.com/", "events": ["qr.scanned"]}),
            "url",
        ),
        (
            json!({"url": "https://u:p@hooks.example.com/", "events": ["qr.scanned"]}),
            "url",
        ),
        (
            json!({"url": "https://hooks.example.com/", "events": []}),
            "events",
        ),
        (
            json!({"url": "https://hooks.example.com/", "events": ["qr.scanned", "nope"]}),
            "events",
        ),
        (
            json!({"url": "https://hooks.example.com/", "events": ["webhook.test"]}),
            "events",
        ),
        (
            json!({"url": "https://hooks.example.com/", "events": "qr.scanned"}),
            "body",
        ),
        (
            json!({"url": "https://hooks.example.com/", "events": ["qr.scanned"], "link_ids": []}),
            "link_ids",
        ),
        (
            json!({"url": "https://hooks.example.com/", "events": ["qr.scanned"], "link_ids": ["lnk_01h455vb4pex5vsknk084sn02q"]}),
            "link_ids",
        ),
        (
            json!({"url": "https://hooks.example.com/", "events": ["qr.scanned"], "link_ids": ["evt_01h455vb4pex5vsknk084sn02q"]}),
            "link_ids",
        ),
        (
            json!({"url": "https://hooks.example.com/", "events": ["qr.scanned"], "secret": "short"}),
            "secret",
        ),
        (
            json!({"url": "https://hooks.example.com/", "events": ["qr.scanned"], "secret": "whsec_not-base64!!!!!!!!!!"}),
            "secret",
        ),
        (
            json!({"url": "https://hooks.example.com/", "events": ["qr.scanned"], "secret": null}),
            "secret",
        ),
        (
            json!({"url": "https://hooks.example.com/", "events": ["qr.scanned"], "name": "a\u{7}"}),
            "name",
        ),
        (
            json!({"url": "https://hooks.example.com/", "events": ["qr.scanned"], "colour": "red"}),
            "body",
        ),
    ];
    for (body, field) in &bad {
        let r = app.post("/v1/webhooks", body.clone()).await;
        let p = r.assert_problem(422, "validation_failed");
        assert_eq!(p["errors"][0]["field"], *field, "{body}: {p}");
    }
    let r = app
        .raw(
            app.client
                .post(app.url("/v1/webhooks"))
                .insert_header(("Authorization", format!("Bearer {}", app.token)))
                .insert_header(("Content-Type", "application/json")),
            "{not json",
        )
        .await;
    r.assert_problem(400, "bad_request");
    assert_eq!(app.get("/v1/webhooks").await.json()["data"], json!([]));

    // The free plan allows one endpoint.
    let hook = create_hook(&app, good.clone()).await;
    let id = hook["id"].as_str().unwrap().to_owned();
    let p = app
        .post("/v1/webhooks", good.clone())
        .await
        .assert_problem(403, "forbidden");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("`free` plan allows 1"),
        "{p}"
    );
    let listed = app.get("/v1/webhooks").await.json();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);

    // PATCH: a bad field changes nothing.
    let before = get_hook(&app, &id).await;
    for (body, field) in [
        (json!({"status": "auto_disabled"}), "status"),
        (json!({"status": "sleeping"}), "status"),
        (json!({"status": null}), "status"),
        (
            json!({"url": "https://hooks.example.com/b", "events": []}),
            "events",
        ),
        (json!({"events": null}), "events"),
        (
            json!({"link_ids": [link["id"]], "url": "gopher://x"}),
            "url",
        ),
        (
            json!({"secret": "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"}),
            "body",
        ),
    ] {
        let p = app
            .patch(&format!("/v1/webhooks/{id}"), body.clone())
            .await
            .assert_problem(422, "validation_failed");
        assert_eq!(p["errors"][0]["field"], field, "{body}: {p}");
    }
    assert_eq!(get_hook(&app, &id).await, before);
    for body in [
        json!({}),
        json!({"since": "yesterday"}),
        json!({"since": null}),
    ] {
        app.post(&format!("/v1/webhooks/{id}/recover"), body)
            .await
            .assert_problem(422, "validation_failed");
    }
    // IDs, query parameters, other workspaces, publishable tokens.
    app.get("/v1/webhooks/lnk_01h455vb4pex5vsknk084sn02q")
        .await
        .assert_problem(400, "bad_request");
    app.get("/v1/webhooks/wh_01h455vb4pex5vsknk084sn02q")
        .await
        .assert_problem(404, "not_found");
    app.get(&format!("/v1/webhooks/{id}/deliveries?status=lost"))
        .await
        .assert_problem(400, "bad_request");
    app.get(&format!("/v1/webhooks/{id}/deliveries?status="))
        .await
        .assert_problem(400, "bad_request");
    let other = app.other_workspace();
    let r = app
        .send_as(
            &other,
            app.client.get(app.url(&format!("/v1/webhooks/{id}"))),
            None,
        )
        .await;
    r.assert_problem(404, "not_found");
    let pk = app
        .post("/v1/tokens", json!({"type": "publishable"}))
        .await
        .json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .send_as(&pk, app.client.get(app.url("/v1/webhooks")), None)
        .await;
    r.assert_problem(403, "forbidden");
    assert_eq!(get_hook(&app, &id).await, before);

    // Deleted: gone with its log.
    assert_eq!(
        app.delete(&format!("/v1/webhooks/{id}"))
            .await
            .status
            .as_u16(),
        204
    );
    app.get(&format!("/v1/webhooks/{id}"))
        .await
        .assert_problem(404, "not_found");
    app.get(&format!("/v1/webhooks/{id}/deliveries"))
        .await
        .assert_problem(404, "not_found");
    create_hook(&app, good).await;
}

/// Sends `n` scans of `slug` from a phone.
async fn scans(base: &str, slug: &str, n: usize) {
    let client = awc::Client::builder()
        .disable_redirects()
        .timeout(Duration::from_secs(20))
        .finish();
    for _ in 0..n {
        let r = client
            .get(format!("{base}/{slug}"))
            .insert_header(("User-Agent", IPHONE_UA))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 302);
    }
}

async fn api(base: &str, token: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(20))
        .finish();
    let req = match method {
        "POST" => client.post(format!("{base}{path}")),
        _ => client.get(format!("{base}{path}")),
    }
    .insert_header(("Authorization", format!("Bearer {token}")));
    let mut r = match body {
        Some(b) => req.send_json(&b).await,
        None => req.send().await,
    }
    .unwrap();
    r.json().limit(64 << 20).await.unwrap()
}

#[actix_rt::test]
async fn webhooks_after_kill_9_with_messages_pending_every_message_arrives_once() {
    let dir = tempfile::tempdir().unwrap();
    // The receiver is down at first: its port is known but nothing listens.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let env = [
        ("SCANHOP__WEBHOOKS__ALLOW_PRIVATE_TARGETS", "true"),
        ("SCANHOP__WEBHOOKS__MAX_ATTEMPTS", "1000"),
        ("SCANHOP__WEBHOOKS__RETRY_BASE_MS", "100"),
        ("SCANHOP__WEBHOOKS__RETRY_MAX_MS", "300"),
        ("SCANHOP__WEBHOOKS__AUTO_DISABLE_AFTER", "100000"),
        ("SCANHOP__WEBHOOKS__POLL_INTERVAL_MS", "50"),
        ("SCANHOP__PLANS__FREE__WEBHOOK_ENDPOINTS", "0"),
    ];
    let server = BinaryServer::start(dir.path(), &env);
    let (base, token) = (server.base.clone(), server.token.clone().unwrap());
    api(
        &base,
        &token,
        "POST",
        "/v1/links",
        Some(json!({"destination": "https://example.com/", "slug": "k9"})),
    )
    .await;
    let hook = api(
        &base,
        &token,
        "POST",
        "/v1/webhooks",
        Some(json!({"url": format!("http://127.0.0.1:{port}/hook"),
                    "events": ["qr.scanned", "step.completed"]})),
    )
    .await;
    let (id, secret) = (
        hook["id"].as_str().unwrap().to_owned(),
        hook["secret"].as_str().unwrap().to_owned(),
    );
    scans(&base, "k9", 20).await;
    // Some messages are derived and failing (connection refused), the last
    // scans may not be derived yet.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let failed = api(
            &base,
            &token,
            "GET",
            &format!("/v1/webhooks/{id}/deliveries?status=failed"),
            None,
        )
        .await;
        if !failed["data"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "attempts were made");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    scans(&base, "k9", 10).await;
    actix_rt::time::sleep(Duration::from_millis(150)).await;
    let mut server = server;
    server.signal(libc::SIGKILL);
    server.wait();
    {
        let store = scanhop::store::Store::open(dir.path(), 8).unwrap();
        let pending = store.pending_webhook_messages().unwrap();
        assert!(!pending.is_empty(), "messages were pending at the kill");
    }

    // The receiver comes up on its port, the server restarts on its store.
    let rx = Receiver::on(TcpListener::bind(("127.0.0.1", port)).unwrap());
    let server = BinaryServer::start(dir.path(), &env);
    let base = server.base.clone();
    let events: Vec<Value> =
        api(&base, &token, "GET", "/v1/events?page_size=500", None).await["data"]
            .as_array()
            .unwrap()
            .clone();
    assert!(events.len() >= 20, "{} events", events.len());
    let want: BTreeSet<(String, String)> = events
        .iter()
        .flat_map(|e| {
            let scan = e["id"].as_str().unwrap().to_owned();
            [
                ("qr.scanned".to_owned(), scan.clone()),
                ("step.completed".to_owned(), scan),
            ]
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut by_id: BTreeMap<String, (String, String)> = BTreeMap::new();
    loop {
        for r in rx.log() {
            assert!(verifies(&secret, &r), "every delivery verifies");
            let body = r.json();
            let key = (
                body["type"].as_str().unwrap().to_owned(),
                body["data"]["scan_id"].as_str().unwrap().to_owned(),
            );
            // The receiver's dedupe: one webhook-id is one message.
            let seen = by_id
                .entry(r.id().to_owned())
                .or_insert_with(|| key.clone());
            assert_eq!(*seen, key, "a webhook-id always carries the same message");
        }
        if by_id.len() >= want.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} messages arrived",
            by_id.len(),
            want.len()
        );
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    let got: BTreeSet<(String, String)> = by_id.values().cloned().collect();
    assert_eq!(
        got.len(),
        by_id.len(),
        "no message arrived under two webhook-ids"
    );
    assert_eq!(
        got, want,
        "every message of every stored scan, none missing"
    );
    drop(server);
}

#[actix_rt::test]
async fn webhooks_identify_sends_visitor_identified_and_later_scans_carry_the_attributes() {
    let app = spawn_app_with(FAST).await;
    let rx = Receiver::start().await;
    app.create_link(json!({"destination": "https://example.com/", "slug": "who",
        "conversion_tracking": true}))
        .await;
    let (_, secret) = hook_with(&app, &rx, &["visitor.identified", "qr.scanned"]).await;
    let r = app.scan("who").await;
    let scan_id = r
        .header("location")
        .and_then(|l| l.split("scan_id=").nth(1))
        .unwrap()
        .to_owned();
    rx.wait_for(1).await;
    let set = json!({"email": "a@b.c", "converted": true});
    until("the scan is stored", || async {
        app.get(&format!("/v1/events/{scan_id}"))
            .await
            .status
            .as_u16()
            == 200
    })
    .await;
    let r = app
        .post(
            "/v1/visitors/identify",
            json!({"scan_id": scan_id, "attributes": set}),
        )
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    let visitor = r.json()["id"].clone();
    let got = rx.wait_for(2).await;
    let message = got
        .iter()
        .find(|r| r.json()["type"] == "visitor.identified")
        .expect("a visitor.identified message");
    assert!(verifies(&secret, message));
    let body = message.json();
    assert_eq!(
        body["data"]["visitor"],
        json!({"id": visitor, "attributes": set})
    );
    assert_eq!(body["data"]["attributes"], set);
    assert_eq!(body["data"]["scan_id"], scan_id.as_str());
    // The next scan of this device carries the visitor's attributes.
    app.scan("who").await;
    let got = rx.wait_for(3).await;
    let later = got
        .iter()
        .filter(|r| r.json()["type"] == "qr.scanned")
        .map(|r| r.json())
        .find(|b| b["data"]["scan_id"] != scan_id.as_str())
        .expect("the second qr.scanned");
    assert_eq!(
        later["data"]["visitor"],
        json!({"id": visitor, "attributes": set})
    );
}
