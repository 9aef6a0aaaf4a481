//! Test plumbing: an in-process app on a random port with its own temp store
//! (`spawn_app`), an HTTP client that does not follow redirects, and the real
//! binary for crash tests (`BinaryServer`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use awc::http::StatusCode;
use scanhop::app::Application;
use scanhop::config::Settings;
use serde_json::Value;
use tempfile::TempDir;

pub struct TestApp {
    pub base: String,
    pub token: String,
    pub client: awc::Client,
    /// Keeps the temp store alive as long as the app.
    pub _dir: TempDir,
    pub store: scanhop::store::Store,
    pub settings: Settings,
    /// The redirect's clock: `advance` it to scan in the future.
    pub clock: scanhop::clock::Clock,
    /// A Purger like the app's own (`Application::purger`), for passes at a
    /// time the test chooses.
    pub purger: std::sync::Mutex<scanhop::actors::purger::Purger>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A response with its body read.
pub struct Reply {
    pub status: StatusCode,
    pub headers: awc::http::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// The `scan_id` a redirect with conversion tracking carries in its
    /// `Location`.
    pub fn scan_id(&self) -> String {
        let location = self.header("location").expect("a Location header");
        let (_, id) = location.split_once("scan_id=").expect("a scan_id");
        id.to_owned()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// Asserts a problem+json error with this status and code.
    pub fn assert_problem(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text());
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "body: {}",
            self.text()
        );
        let body = self.json();
        assert_eq!(body["code"], code, "{body}");
        assert_eq!(body["status"], status);
        assert_eq!(body["type"], format!("https://scanhop.dev/errors/{code}"));
        assert!(
            body["title"].is_string() && body["detail"].is_string(),
            "{body}"
        );
        assert_eq!(
            Some(body["request_id"].as_str().unwrap()),
            self.header("x-request-id")
        );
        body
    }
}

pub fn test_settings(dir: &TempDir, overrides: &[(&str, &str)]) -> Settings {
    let mut env: Vec<(String, String)> = vec![
        ("SCANHOP__SERVER__BIND".into(), "127.0.0.1:0".into()),
        (
            "SCANHOP__STORAGE__PATH".into(),
            dir.path().join("data").display().to_string(),
        ),
        (
            "SCANHOP__SERVER__PUBLIC_BASE_URL".into(),
            "https://scan.example".into(),
        ),
        ("SCANHOP__SERVER__WORKERS".into(), "2".into()),
        ("SCANHOP__STORAGE__CACHE_CAPACITY_MB".into(), "16".into()),
    ];
    env.extend(
        overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    Settings::load_with_env(None, env).expect("test settings")
}

/// The value of the sample `name` (with its labels, if any) in the
/// Prometheus text `text`.
pub fn metric<T: std::str::FromStr>(text: &str, name: &str) -> Option<T> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    spawn_app_with_consumers(overrides, Vec::new()).await
}

/// An app with extra consumers of committed scans beside the built-in ones.
///
/// The app runs on a thread of its own, in its own actix system. Dropping
/// the `TestApp` shuts it down the way SIGTERM does and waits for that, then
/// stops the system's arbiters: no worker of a finished test keeps running
/// beside the next test's (sled shares one lock between all the databases of
/// a process).
pub async fn spawn_app_with_consumers(
    overrides: &[(&str, &str)],
    consumers: Vec<scanhop::actors::ConsumerStarter>,
) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let settings = test_settings(&dir, overrides);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let app_settings = settings.clone();
    let thread = std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let app = Application::build_with(app_settings, consumers).expect("app builds");
            let token = app
                .first_token()
                .expect("first start makes a token")
                .to_owned();
            let parts = (
                app.port(),
                token,
                app.store().clone(),
                app.purger(),
                app.clock(),
            );
            ready_tx.send(parts).expect("the test waits");
            let _ = app
                .run_until(async move {
                    let _ = rx.await;
                })
                .await;
            actix_rt::System::current().stop();
        });
    });
    let (port, token, store, purger, clock) = ready_rx.recv().expect("the app started");
    let client = awc::Client::builder()
        .disable_redirects()
        .timeout(Duration::from_secs(30))
        .finish();
    TestApp {
        base: format!("http://127.0.0.1:{port}"),
        token,
        client,
        _dir: dir,
        store,
        settings,
        purger: std::sync::Mutex::new(purger),
        clock,
        stop: Some(tx),
        thread: Some(thread),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn read(mut resp: awc::ClientResponse) -> Reply {
        let body = resp
            .body()
            .limit(64 * 1024 * 1024)
            .await
            .expect("body")
            .to_vec();
        Reply {
            status: resp.status(),
            headers: resp.headers().clone(),
            body,
        }
    }

    /// Sends `req` with the app's token.
    pub async fn send(&self, req: awc::ClientRequest, body: Option<Value>) -> Reply {
        self.send_as(&self.token.clone(), req, body).await
    }

    pub async fn send_as(
        &self,
        token: &str,
        req: awc::ClientRequest,
        body: Option<Value>,
    ) -> Reply {
        let req = req.insert_header(("Authorization", format!("Bearer {token}")));
        let resp = match body {
            Some(b) => req.send_json(&b).await,
            None => req.send().await,
        }
        .expect("request");
        Self::read(resp).await
    }

    pub async fn raw(&self, req: awc::ClientRequest, body: impl Into<String>) -> Reply {
        let resp = req.send_body(body.into()).await.expect("request");
        Self::read(resp).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.client.get(self.url(path)), None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(self.client.post(self.url(path)), Some(body))
            .await
    }
    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.send(self.client.patch(self.url(path)), Some(body))
            .await
    }
    pub async fn delete(&self, path: &str) -> Reply {
        self.send(self.client.delete(self.url(path)), None).await
    }

    /// Creates a link and returns its JSON.
    pub async fn create_link(&self, body: Value) -> Value {
        let r = self.post("/v1/links", body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        r.json()
    }

    /// Scans `/{slug}` like a phone would, with extra headers.
    pub async fn scan_with(&self, slug: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = self.client.get(self.url(&format!("/{slug}")));
        for (k, v) in headers {
            req = req.insert_header((*k, *v));
        }
        Self::read(req.send().await.expect("scan")).await
    }

    pub async fn scan(&self, slug: &str) -> Reply {
        self.scan_with(slug, &[("User-Agent", IPHONE_UA)]).await
    }

    /// A second workspace and its secret token.
    pub fn other_workspace(&self) -> String {
        let (_, token) =
            scanhop::accounts::create_workspace(&self.store, &self.settings, "other", None)
                .unwrap();
        token.expose().to_owned()
    }

    /// Every event of the workspace (walking all pages), newest first.
    pub async fn all_events(&self, query: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut path = format!("/v1/events?page_size=500&{query}");
            if let Some(t) = &token {
                path.push_str(&format!("&page_token={t}"));
            }
            let r = self.get(&path).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text());
            let body = r.json();
            out.extend(body["data"].as_array().unwrap().iter().cloned());
            match body["next_page_token"].as_str() {
                Some(t) => token = Some(t.to_owned()),
                None => return out,
            }
        }
    }

    /// Polls until `f` is true or 10 s pass.
    pub async fn eventually<F, Fut>(&self, what: &str, mut f: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f().await {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            // A panic in the app's thread was reported there already.
            let _ = thread.join();
        }
    }
}

pub const IPHONE_UA: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1";

/// The real binary, for tests that kill it.
pub struct BinaryServer {
    pub child: Child,
    pub base: String,
    pub token: Option<String>,
}

impl BinaryServer {
    pub fn start(data_dir: &std::path::Path, env: &[(&str, &str)]) -> BinaryServer {
        Self::start_logging_to(data_dir, env, Stdio::inherit())
    }

    /// Like `start`, with the server's logs written to a new file at `log`.
    pub fn start_logging_to_file(
        data_dir: &std::path::Path,
        env: &[(&str, &str)],
        log: &std::path::Path,
    ) -> BinaryServer {
        let file = std::fs::File::create(log).expect("create the log file");
        Self::start_logging_to(data_dir, env, file.into())
    }

    /// Like `start`, with the server's stderr (its logs) sent to `stderr`.
    pub fn start_logging_to(
        data_dir: &std::path::Path,
        env: &[(&str, &str)],
        stderr: Stdio,
    ) -> BinaryServer {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_scanhop"));
        cmd.arg("serve");
        Self::launch(cmd, data_dir, env, stderr)
    }

    /// Runs `cmd` as a server on `data_dir` and waits until it prints its
    /// address (and, on a first start, its token) like `scanhop serve` does.
    pub fn launch(
        mut cmd: Command,
        data_dir: &std::path::Path,
        env: &[(&str, &str)],
        stderr: Stdio,
    ) -> BinaryServer {
        cmd.env("SCANHOP__SERVER__BIND", "127.0.0.1:0")
            .env("SCANHOP__STORAGE__PATH", data_dir)
            .env("SCANHOP__LOG__LEVEL", "warn")
            .stdout(Stdio::piped())
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start the server");
        let stdout = child.stdout.take().unwrap();
        let mut token = None;
        let mut base = None;
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let line = line.expect("stdout");
            if let Some(t) = line.split_whitespace().find(|w| w.starts_with("sk_")) {
                token = Some(t.to_owned());
            }
            // Anywhere in the line: a test harness may print before it.
            if let Some((_, url)) = line.split_once("scanhop listening on ") {
                base = Some(url.trim().to_owned());
                break;
            }
        }
        // Keep reading, so a later line never meets a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        BinaryServer {
            child,
            base: base.expect("server printed its address"),
            token,
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with a PID we own and a valid signal number.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().expect("wait")
    }
}

impl Drop for BinaryServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
