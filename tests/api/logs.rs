//! Logs: one line per request, and never a token, secret or client IP.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{BinaryServer, IPHONE_UA};

/// The binary with `env`, logging to a file in its own temp dir, and a
/// client that does not follow redirects.
struct Logged {
    _dir: tempfile::TempDir,
    log_path: std::path::PathBuf,
    server: BinaryServer,
    client: awc::Client,
}

impl Logged {
    fn start(env: &[(&str, &str)]) -> Logged {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("server.log");
        let server = BinaryServer::start_logging_to_file(&dir.path().join("data"), env, &log_path);
        let client = awc::Client::builder()
            .disable_redirects()
            .timeout(Duration::from_secs(10))
            .finish();
        Logged {
            _dir: dir,
            log_path,
            server,
            client,
        }
    }

    /// Stops the server (SIGTERM) and answers its whole log with the JSON
    /// access lines in it.
    async fn stop(self) -> (String, Vec<Value>) {
        let mut server = self.server;
        server.signal(libc::SIGTERM);
        let _ = actix_web::rt::task::spawn_blocking(move || server.wait()).await;
        let logs = std::fs::read_to_string(&self.log_path).unwrap();
        let access = logs
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["target"] == "scanhop::access")
            .collect();
        (logs, access)
    }
}

#[actix_rt::test]
async fn logs_have_a_line_per_request_and_no_token_secret_or_ip_at_any_level() {
    let logged = Logged::start(&[
        ("SCANHOP__LOG__FORMAT", "json"),
        ("SCANHOP__LOG__LEVEL", "trace"),
        ("SCANHOP__SERVER__TRUSTED_PROXIES", "127.0.0.1/32"),
        ("SCANHOP__LOG__ACCESS_REDIRECTS", "true"),
    ]);
    let (server, c) = (&logged.server, &logged.client);
    let token = server.token.clone().unwrap();
    let auth = ("Authorization", format!("Bearer {token}"));
    let mut r = c
        .post(format!("{}/v1/tokens", server.base))
        .insert_header(auth.clone())
        .send_json(&json!({"name": "ci"}))
        .await
        .unwrap();
    let created: Value = r.json().await.unwrap();
    let new_secret = created["token"].as_str().unwrap().to_owned();
    let r = c
        .post(format!("{}/v1/links", server.base))
        .insert_header(auth.clone())
        .send_json(&json!({"destination": "https://example.com/", "slug": "logged"}))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let client_ip = "203.0.113.77";
    let r = c
        .get(format!("{}/logged?token={token}", server.base))
        .insert_header(("User-Agent", IPHONE_UA))
        .insert_header(("X-Forwarded-For", client_ip))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 302);
    let bogus = "sk_bogusbogusbogusbogusbogus12345";
    let r = c
        .get(format!("{}/v1/links", server.base))
        .insert_header(("Authorization", format!("Bearer {bogus}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = c
        .get(format!("{}/v1/links?page_token={new_secret}", server.base))
        .insert_header(auth.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // A webhook with its own secret, rotated, and a test message sent.
    let hook_secret = "logs-webhook-secret-never-printed";
    let mut r = c
        .post(format!("{}/v1/webhooks", server.base))
        .insert_header(auth.clone())
        .send_json(&json!({"url": "https://hooks.example.invalid/x",
                           "events": ["qr.scanned"], "secret": hook_secret}))
        .await
        .unwrap();
    let hook: Value = r.json().await.unwrap();
    let hook_id = hook["id"].as_str().unwrap();
    let canonical = hook["secret"].as_str().unwrap().to_owned();
    let mut r = c
        .post(format!(
            "{}/v1/webhooks/{hook_id}/rotate-secret",
            server.base
        ))
        .insert_header(auth.clone())
        .send()
        .await
        .unwrap();
    let rotated: Value = r.json().await.unwrap();
    let rotated = rotated["secret"].as_str().unwrap().to_owned();
    let r = c
        .post(format!("{}/v1/webhooks/{hook_id}/test", server.base))
        .insert_header(auth.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    actix_rt::time::sleep(Duration::from_millis(500)).await;
    let (logs, access) = logged.stop().await;
    for (what, secret) in [
        ("first token", token.as_str()),
        ("created token", new_secret.as_str()),
        ("bogus token", bogus),
        ("client IP", client_ip),
        ("webhook secret", hook_secret),
        ("webhook secret, whsec_ form", &canonical[6..]),
        ("rotated webhook secret", &rotated[6..]),
    ] {
        assert!(!logs.contains(secret), "{what} appears in the logs");
    }
    assert_eq!(access.len(), 8, "one line per request:\n{logs}");
    assert!(
        logs.lines().count() > access.len() + 5,
        "trace-level lines were captured too"
    );
    let routes: Vec<&str> = access
        .iter()
        .map(|l| l["fields"]["route"].as_str().unwrap())
        .collect();
    assert!(
        routes.contains(&"/v1/tokens") && routes.contains(&"/{slug}"),
        "{routes:?}"
    );
    for line in &access {
        let f = &line["fields"];
        assert!(f["request_id"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(
            f["status"].as_u64().is_some()
                && f["latency_us"].as_u64().is_some()
                && f["method"].is_string(),
            "{line}"
        );
    }
}

#[actix_rt::test]
async fn by_default_api_requests_have_an_access_line_and_scans_do_not() {
    // The default level (the helper starts servers at `warn`).
    let logged = Logged::start(&[
        ("SCANHOP__LOG__FORMAT", "json"),
        ("SCANHOP__LOG__LEVEL", "info"),
    ]);
    let (server, c) = (&logged.server, &logged.client);
    let token = server.token.clone().unwrap();
    let r = c
        .post(format!("{}/v1/links", server.base))
        .insert_header(("Authorization", format!("Bearer {token}")))
        .send_json(&json!({"destination": "https://example.com/", "slug": "quiet"}))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    for path in ["/quiet", "/quiet", "/no-such-slug"] {
        let r = c
            .get(format!("{}{path}", server.base))
            .insert_header(("User-Agent", IPHONE_UA))
            .send()
            .await
            .unwrap();
        assert!([302, 404].contains(&r.status().as_u16()));
    }
    let r = c
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (logs, access) = logged.stop().await;
    let routes: Vec<&str> = access
        .iter()
        .map(|l| l["fields"]["route"].as_str().unwrap())
        .collect();
    assert_eq!(routes, ["/v1/links", "/healthz"], "{logs}");
}
