//! Analytics and retention at scale: the targets of docs/DESIGN.md
//! ("Targets") measured on stores of a million events and more.
//!
//! For each size N (`ANALYTICS_EVENTS`, default `1000000`; e.g.
//! `1000000,10000000`) the bench writes N synthetic scan events straight
//! into a `Store`, in batches of 512 (the Recorder's default) with
//! timestamps spread over the last 365 days in ascending order, for one
//! workspace (plan `business`, so no retention applies) with one hot link
//! carrying all N events. Then:
//!
//! - `count`: starts the real app (`Application::build`) on that store and
//!   waits until the Counters worker has caught up (`/metrics`:
//!   `scanhop_consumer_lag_events{consumer="counters"} 0`).
//! - `scans`: `GET /v1/links/{id}/scans?days=365` of the hot link, sequential
//!   requests on one keep-alive connection after a warm-up (target < 10 ms).
//! - `events`: pages of 100 events (`GET /v1/events`): the first page of the
//!   hot link, a page deep in its history (`to` at 5% of the history), pages
//!   ending at random instants, 200 pages in a row following
//!   `next_page_token`, and the workspace's first page (target < 5 ms).
//!
//! At the first size only (1,000,000 by default; at the other sizes `rss`
//! only measures the child process's memory after start-up and counting):
//!
//! - `export`: the real binary as a child process on the store;
//!   `GET /v1/events/export` as NDJSON and as CSV (bots included, so all N
//!   events): wall time (target < 10 s) and the server's VmRSS sampled every
//!   50 ms, before and during.
//! - `rss`: a copy of the store (made before any counting) with 100,000 more
//!   links (`ANALYTICS_LINKS`); the child process's VmRSS/VmHWM after
//!   start-up, after the Counters caught up, and after a short mixed load
//!   (redirects of random links and analytics reads) (target < 150 MB).
//! - `purge`: a Purger pass (`Application::purger`) deleting the older half
//!   of the events on an otherwise idle server (events/s); then, on a fresh
//!   copy of the store, the redirect of the hot link under load (the client
//!   of `redirect_load`, 64 connections) idle, and again while the same pass
//!   runs on another thread: p50/p99/throughput of both.
//!
//! Run: `cargo bench --bench analytics`; env `ANALYTICS_ONLY=count,scans,...`
//! (the scenarios above; `build` alone writes the store), `ANALYTICS_REQUESTS`
//! (timed requests per read scenario, default 200), `ANALYTICS_WARMUP`
//! (default 20), `ANALYTICS_LINKS` (default 100000), `LOAD_SECS` (redirect
//! load per run, default 5), `ANALYTICS_DIR` (where the stores go, default
//! the temp dir; they are deleted at the end unless `ANALYTICS_KEEP=1`).
//! `SCANHOP__*` variables override the servers' settings, and `MIMALLOC_*`
//! ones reach the servers' allocator (its options, e.g.
//! `MIMALLOC_PAGE_MAX_CANDIDATES`).

#[path = "support/http.rs"]
mod http;
#[path = "support/load.rs"]
mod load;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::{Conn, Stats};
use load::Outcome;
use scanhop::accounts;
use scanhop::actors::purger::Purger;
use scanhop::app::Application;
use scanhop::config::Settings;
use scanhop::domain::{
    Destination, DeviceType, Link, LinkStatus, ScanEvent, ScanMethod, Slug, Timestamp,
};
use scanhop::ids::{EventId, LinkId, WorkspaceId};
use scanhop::store::Store;

const DAY_MS: i64 = 86_400_000;
/// Events per committed segment: the Recorder's default `batch_size`.
const BATCH: usize = 512;
const HOT_SLUG: &str = "hot";
const DESTINATION: &str = "https://example.com/menu";
/// The workspace's plan: 730 days, so nothing in the last 365 days is due.
const PLAN: &str = "business";
const PLAN_RETENTION_DAYS: i64 = 730;
/// 1 in this many synthetic events is a bot.
const BOT_EVERY: u64 = 50;

// ---------------------------------------------------------------- options

struct Options {
    sizes: Vec<u64>,
    only: Option<Vec<String>>,
    requests: usize,
    warmup: usize,
    links: usize,
    load_secs: f64,
    dir: PathBuf,
    keep: bool,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a valid value")),
        Err(_) => default,
    }
}

impl Options {
    fn from_env() -> Options {
        let sizes = std::env::var("ANALYTICS_EVENTS")
            .unwrap_or_else(|_| "1000000".into())
            .split(',')
            .map(|s| s.trim().replace('_', "").parse().expect("ANALYTICS_EVENTS"))
            .collect();
        let only = std::env::var("ANALYTICS_ONLY")
            .ok()
            .map(|s| s.split(',').map(|p| p.trim().to_owned()).collect());
        Options {
            sizes,
            only,
            requests: env_or("ANALYTICS_REQUESTS", 200),
            warmup: env_or("ANALYTICS_WARMUP", 20),
            links: env_or("ANALYTICS_LINKS", 100_000),
            load_secs: env_or("LOAD_SECS", 5.0),
            dir: std::env::var("ANALYTICS_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|_| std::env::temp_dir()),
            keep: std::env::var("ANALYTICS_KEEP").is_ok_and(|v| v == "1"),
        }
    }

    fn wants(&self, scenario: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|s| s == scenario))
    }
}

// ---------------------------------------------------------------- results

struct Row {
    scenario: String,
    events: String,
    result: String,
    target: String,
    load: String,
}

#[derive(Default)]
struct Results {
    rows: Vec<Row>,
}

impl Results {
    fn add(&mut self, scenario: &str, n: u64, result: String, target: &str, load: &str) {
        eprintln!(
            "  => {scenario} ({}): {result} [{target}] (load {load})",
            millions(n)
        );
        self.rows.push(Row {
            scenario: scenario.to_owned(),
            events: millions(n),
            result,
            target: target.to_owned(),
            load: load.to_owned(),
        });
    }

    fn print(&self) {
        println!("\n| scenario | events | result | target | load avg (1 min) at start |");
        println!("|---|---|---|---|---|");
        for r in &self.rows {
            println!(
                "| {} | {} | {} | {} | {} |",
                r.scenario, r.events, r.result, r.target, r.load
            );
        }
    }
}

fn millions(n: u64) -> String {
    if n >= 1_000_000 && n.is_multiple_of(100_000) {
        format!("{}M", n as f64 / 1e6)
    } else {
        n.to_string()
    }
}

/// The 1-minute load average now (as `uptime` shows it).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**missed**" }
}

/// Whether the median and the 99th percentile are under `limit_ms`.
fn latency_verdict(s: &Stats, limit_ms: f64) -> String {
    match (s.ms(0.5) < limit_ms, s.ms(0.99) < limit_ms) {
        (true, true) => format!("< {limit_ms} ms: met (p50 and p99)"),
        (true, false) => format!("< {limit_ms} ms: met at p50, **missed at p99**"),
        _ => format!("< {limit_ms} ms: **missed**"),
    }
}

fn stats_text(s: &Stats) -> String {
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} requests, {} B each)",
        s.ms(0.5),
        s.ms(0.99),
        s.max_ms(),
        s.times.len(),
        s.body_bytes
    )
}

// ------------------------------------------------------- synthetic events

/// splitmix64: deterministic, fast, good enough to pick from pools.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// (device, OS, OS version, browser, browser version)
const AGENTS: [(DeviceType, &str, &str, &str, &str); 8] = [
    (DeviceType::Mobile, "iOS", "17.4", "Safari", "17.4"),
    (DeviceType::Mobile, "iOS", "16.6", "Safari", "16.6"),
    (
        DeviceType::Mobile,
        "Android",
        "14",
        "Chrome",
        "124.0.6367.113",
    ),
    (
        DeviceType::Mobile,
        "Android",
        "13",
        "Samsung Internet",
        "24.0",
    ),
    (DeviceType::Tablet, "iOS", "17.2", "Safari", "17.2"),
    (
        DeviceType::Desktop,
        "Windows 10",
        "NT 10.0",
        "Chrome",
        "124.0.0.0",
    ),
    (
        DeviceType::Desktop,
        "Mac OSX",
        "10.15.7",
        "Safari",
        "17.4.1",
    ),
    (DeviceType::Desktop, "Linux", "UNKNOWN", "Firefox", "125.0"),
];

/// (country, region, city, ISP, ASN)
const PLACES: [(&str, &str, &str, &str, u32); 10] = [
    ("AT", "Vienna", "Vienna", "A1 Telekom Austria AG", 8447),
    ("DE", "Bavaria", "Munich", "Deutsche Telekom AG", 3320),
    ("DE", "Berlin", "Berlin", "Vodafone GmbH", 3209),
    ("US", "California", "San Francisco", "Comcast Cable", 7922),
    ("US", "New York", "New York", "Verizon Business", 701),
    (
        "GB",
        "England",
        "London",
        "British Telecommunications PLC",
        2856,
    ),
    ("FR", "Île-de-France", "Paris", "Orange S.A.", 3215),
    ("JP", "Tokyo", "Tokyo", "NTT Communications", 4713),
    ("BR", "São Paulo", "São Paulo", "Claro S.A.", 28573),
    (
        "IN",
        "Maharashtra",
        "Mumbai",
        "Reliance Jio Infocomm",
        55836,
    ),
];

const LANGUAGES: [&str; 8] = ["de", "en", "en", "fr", "ja", "pt", "hi", "es"];

/// An event at `ms`; `seq` (ascending) makes IDs unique and ascending.
fn synthetic_event(rng: &mut Rng, seq: u64, ms: i64, ws: WorkspaceId, link: LinkId) -> ScanEvent {
    let mut id = EventId::lower_bound_bytes(ms);
    id[6] = 0x70; // UUIDv7: version 7
    id[8] = 0x80; // RFC 9562 variant
    id[10..16].copy_from_slice(&seq.to_be_bytes()[2..]);
    let bot = seq.is_multiple_of(BOT_EVERY);
    let (device, os, os_version, browser, browser_version) = AGENTS[rng.below(AGENTS.len())];
    let (country, region, city, isp, asn) = PLACES[rng.below(PLACES.len())];
    let referer = match rng.below(4) {
        0 => None,
        _ => Some(format!(
            "https://site{}.example/page/{}",
            rng.below(40),
            rng.below(1000)
        )),
    };
    let mut ip_hash = [0u8; 32];
    for chunk in ip_hash.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next().to_le_bytes());
    }
    ScanEvent {
        id: EventId::from_bytes(id),
        workspace_id: ws,
        link_id: link,
        visitor_id: None,
        method: ScanMethod::Get,
        device_type: if bot { DeviceType::Bot } else { device },
        os: Some(os.into()),
        os_version: Some(os_version.into()),
        browser: Some(if bot { "Googlebot" } else { browser }.into()),
        browser_version: Some(browser_version.into()),
        country: Some(country.into()),
        region: Some(region.into()),
        city: Some(city.into()),
        isp: Some(isp.into()),
        asn: Some(asn),
        language: Some(LANGUAGES[rng.below(LANGUAGES.len())].into()),
        referer,
        destination: DESTINATION.into(),
        ip_hash,
        bot,
    }
}

fn new_link(ws: WorkspaceId, slug: &str) -> Link {
    let now = Timestamp::now();
    Link {
        id: LinkId::generate(),
        workspace_id: ws,
        slug: Slug::parse(slug).expect("slug"),
        destination: Destination::parse(DESTINATION).expect("destination"),
        name: None,
        tags: vec![],
        conversion_tracking: false,
        fallback_destination: None,
        expires_at: None,
        form: None,
        status: LinkStatus::Active,
        created_at: now,
        updated_at: now,
    }
}

// ------------------------------------------------------------ the stores

/// Settings of a server on `data`: the defaults, 2 HTTP workers, port 0,
/// then any `SCANHOP__*` of the environment.
fn settings_for(data: &Path, extra: &[(&str, &str)]) -> Settings {
    Settings::load_with_env(None, env_for(data, extra)).expect("settings")
}

fn env_for(data: &Path, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("SCANHOP__SERVER__BIND".into(), "127.0.0.1:0".into()),
        ("SCANHOP__SERVER__WORKERS".into(), "2".into()),
        ("SCANHOP__STORAGE__PATH".into(), data.display().to_string()),
        ("SCANHOP__LOG__LEVEL".into(), "warn".into()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env.extend(
        std::env::vars().filter(|(k, _)| k.starts_with("SCANHOP__") || k.starts_with("MIMALLOC_")),
    );
    env
}

/// What `build_store` made.
#[derive(Clone)]
struct Built {
    data: PathBuf,
    n: u64,
    token: String,
    ws: WorkspaceId,
    hot: LinkId,
    /// Scans of the hot link, bots excluded (its `total_scans`).
    human: u64,
    first_ms: i64,
    last_ms: i64,
}

impl Built {
    /// The instant of the event at fraction `f` of the history.
    fn at(&self, f: f64) -> i64 {
        self.first_ms + ((self.last_ms - self.first_ms) as f64 * f) as i64
    }
}

/// Writes the workspace, the hot link and `n` events into a new store at
/// `data`, in batches of 512; answers what it made and the seconds the
/// batches took to commit (and the final flush).
fn build_store(data: &Path, n: u64) -> (Built, f64) {
    let settings = settings_for(data, &[]);
    let store = Store::open(data, settings.storage.cache_capacity_mb).expect("store");
    let (ws, token) =
        accounts::create_workspace(&store, &settings, "bench", Some(PLAN)).expect("workspace");
    let hot = new_link(ws.id, HOT_SLUG);
    store.insert_link(&hot).expect("link");
    let now = Timestamp::now().as_millis();
    let (first_ms, last_ms) = (now - 365 * DAY_MS + 3_600_000, now - 60_000);
    let span = (last_ms - first_ms) as i128;
    let mut rng = Rng(0x05ca_9409);
    let mut batch = Vec::with_capacity(BATCH);
    let mut busy = Duration::ZERO;
    let mut human = 0;
    let started = Instant::now();
    let mut reported = Instant::now();
    let mut seq = 0u64;
    while seq < n {
        batch.clear();
        while batch.len() < BATCH && seq < n {
            let ms = first_ms + (span * seq as i128 / n as i128) as i64;
            let e = synthetic_event(&mut rng, seq, ms, ws.id, hot.id);
            human += u64::from(!e.bot);
            batch.push(e);
            seq += 1;
        }
        let t = Instant::now();
        store.commit_scans(&batch).expect("commit");
        busy += t.elapsed();
        if reported.elapsed() > Duration::from_secs(15) {
            reported = Instant::now();
            eprintln!(
                "  built {seq} of {n} events ({:.0}/s)",
                seq as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    let t = Instant::now();
    store.flush().expect("flush");
    busy += t.elapsed();
    let built = Built {
        data: data.to_owned(),
        n,
        token: token.expose().to_owned(),
        ws: ws.id,
        hot: hot.id,
        human,
        first_ms,
        last_ms,
    };
    (built, busy.as_secs_f64())
}

/// `n` slugs of `links` picked at random, each once.
fn pick_distinct(rng: &mut Rng, links: &[(LinkId, String)], n: usize) -> Vec<String> {
    let mut picked = std::collections::BTreeSet::new();
    while picked.len() < n.min(links.len()) {
        picked.insert(rng.below(links.len()));
    }
    let mut slugs: Vec<String> = picked.into_iter().map(|i| links[i].1.clone()).collect();
    // In a random order, not the links' order of creation.
    for i in (1..slugs.len()).rev() {
        slugs.swap(i, rng.below(i + 1));
    }
    slugs
}

/// Adds `count` links (slugs `r0000000`...) to the built store.
fn add_links(built: &Built, count: usize) -> Vec<(LinkId, String)> {
    let store = open_when_free(&built.data);
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let slug = format!("r{i:07}");
        let link = new_link(built.ws, &slug);
        store.insert_link(&link).expect("link");
        out.push((link.id, slug));
    }
    store.flush().expect("flush");
    out
}

/// Opens the store at `data`, waiting while a stopping server still holds it.
fn open_when_free(data: &Path) -> Store {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match Store::open(data, 64) {
            Ok(store) => return store,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("the store at {} stays locked: {e}", data.display()),
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn dir_size(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => dir_size(&e.path()),
                    _ => e.metadata().map(|m| m.len()).unwrap_or(0),
                })
                .sum()
        })
        .unwrap_or(0)
}

// ------------------------------------------------------------ the servers

/// The app in this process, on a thread with its own actix system.
struct InProcess {
    addr: SocketAddr,
    store: Store,
    purger: Option<Purger>,
    /// How long `Application::build` took.
    build: Duration,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProcess {
    fn start(settings: Settings) -> InProcess {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let started = Instant::now();
                let app = Application::build(settings).expect("scanhop builds");
                let build = started.elapsed();
                tx.send((app.port(), app.store().clone(), app.purger(), build))
                    .expect("send");
                let _ = app
                    .run_until(async move {
                        let _ = stop_rx.await;
                    })
                    .await;
            })
        });
        let (port, store, purger, build) = rx.recv().expect("scanhop started");
        InProcess {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            store,
            purger: Some(purger),
            build,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Waits until the Counters' stored position is the newest event, so a
    /// purge may delete everything retention allows.
    fn wait_durable_position(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let last = self.store.last_event_id().expect("last event");
            let stored = self
                .store
                .consumer("counters")
                .expect("consumer")
                .and_then(|r| r.position);
            if stored.is_some() && stored == last {
                return;
            }
            assert!(Instant::now() < deadline, "the counters never checkpointed");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Shuts down in order (the consumers checkpoint) and waits until the
    /// store is closed.
    fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The real binary in a child process, so its memory is its own.
struct ChildServer {
    child: Child,
    addr: SocketAddr,
}

impl ChildServer {
    fn start(data: &Path) -> (ChildServer, Duration) {
        let started = Instant::now();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_scanhop"));
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env_for(data, &[]))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("start scanhop");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
        let mut addr = None;
        for line in lines.by_ref() {
            let line = line.expect("stdout");
            if let Some((_, url)) = line.split_once("scanhop listening on http://") {
                addr = Some(url.trim().parse::<SocketAddr>().expect("address"));
                break;
            }
        }
        let took = started.elapsed();
        // Keep reading, so a later line never meets a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let addr = addr.expect("scanhop printed its address");
        (ChildServer { child, addr }, took)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, and the exit (a clean shutdown checkpoints the consumers).
    fn stop(mut self) {
        // SAFETY: a signal to our own child, which has not been reaped yet.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "scanhop exited with {status}");
    }
}

/// VmRSS and VmHWM of `pid`, in kB.
fn memory_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mb(kb: u64) -> String {
    format!("{:.0} MB", kb as f64 / 1024.0)
}

/// Samples VmRSS of a process every 50 ms until finished.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(Duration, u64)>>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                samples.push((started.elapsed(), memory_kb(pid).0));
                std::thread::sleep(Duration::from_millis(50));
            }
            samples.push((started.elapsed(), memory_kb(pid).0));
            samples
        });
        Sampler { stop, thread }
    }

    /// The VmRSS samples (kB) by time since the start.
    fn finish(self) -> Vec<(Duration, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("sampler")
    }
}

fn peak(samples: &[(Duration, u64)]) -> u64 {
    samples.iter().map(|(_, kb)| *kb).max().unwrap_or(0)
}

/// VmRSS at each whole second of `samples` from `from` on, for stderr.
fn timeline(samples: &[(Duration, u64)], from: Duration) -> String {
    let mut out = Vec::new();
    let mut next = from;
    for (t, kb) in samples {
        if *t >= next {
            out.push(format!("{:.0}s {}", (*t - from).as_secs_f64(), mb(*kb)));
            next += Duration::from_secs(1);
        }
    }
    out.join(", ")
}

/// The Counters' lag on `/metrics`.
fn counters_lag(conn: &mut Conn) -> u64 {
    let reply = conn.get("/metrics");
    let text = String::from_utf8_lossy(&reply.body);
    text.lines()
        .find_map(|l| l.strip_prefix("scanhop_consumer_lag_events{consumer=\"counters\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no counters lag on /metrics:\n{text}"))
}

/// Polls `/metrics` until the Counters have caught up; the time it took.
fn wait_counters(addr: SocketAddr) -> Duration {
    let started = Instant::now();
    let mut conn = Conn::new(addr, None);
    let mut reported = Instant::now();
    loop {
        let lag = counters_lag(&mut conn);
        if lag == 0 {
            return started.elapsed();
        }
        if reported.elapsed() > Duration::from_secs(15) {
            reported = Instant::now();
            eprintln!("  counters: {lag} events behind");
        }
        assert!(
            started.elapsed() < Duration::from_secs(3600),
            "the counters never caught up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ------------------------------------------------------------ scenarios

fn scenario_count(results: &mut Results, app: &InProcess, built: &Built, load: &str) {
    let took = wait_counters(app.addr);
    let secs = took.as_secs_f64();
    results.add(
        "Counters catch up on a fresh store (in-process app)",
        built.n,
        format!(
            "{:.1} s after start-up ({:.0} events/s); `Application::build` took {:.2} s",
            secs,
            built.n as f64 / secs,
            app.build.as_secs_f64()
        ),
        "(report)",
        load,
    );
}

fn scenario_scans(results: &mut Results, opts: &Options, app: &InProcess, built: &Built) {
    let load = load_average();
    let mut conn = Conn::new(app.addr, Some(&built.token));
    let path = format!("/v1/links/{}/scans?days=365", built.hot);
    let body = conn.get(&path).json();
    assert_eq!(body["total_scans"], built.human, "{body}");
    let days = body["scans_by_day"].as_array().map_or(0, Vec::len);
    let stats = conn.time(opts.warmup, opts.requests, 200, |_| path.clone());
    results.add(
        "`GET /v1/links/{id}/scans?days=365`, one link with every event",
        built.n,
        format!(
            "{}; {days} days, period_scans {}",
            stats_text(&stats),
            body["period_scans"]
        ),
        &latency_verdict(&stats, 10.0),
        &load,
    );
}

fn scenario_events(results: &mut Results, opts: &Options, app: &InProcess, built: &Built) {
    let mut conn = Conn::new(app.addr, Some(&built.token));
    let link = built.hot;
    let target = |s: &Stats| latency_verdict(s, 5.0);
    let page = |conn: &mut Conn, path: &str| {
        let body = conn.get(path).json();
        assert_eq!(
            body["data"].as_array().map_or(0, Vec::len),
            100,
            "{path}: {body}"
        );
        body
    };

    let load = load_average();
    let first = format!("/v1/events?link_id={link}&page_size=100");
    page(&mut conn, &first);
    let stats = conn.time(opts.warmup, opts.requests, 200, |_| first.clone());
    results.add(
        "`GET /v1/events?link_id=...&page_size=100`, first page",
        built.n,
        stats_text(&stats),
        &target(&stats),
        &load,
    );

    let load = load_average();
    let deep_to = Timestamp::from_millis(built.at(0.05));
    let deep = format!("/v1/events?link_id={link}&page_size=100&to={deep_to}");
    page(&mut conn, &deep);
    let stats = conn.time(opts.warmup, opts.requests, 200, |_| deep.clone());
    results.add(
        "same, deep page: `to` at 5% of the history (about 347 days back)",
        built.n,
        stats_text(&stats),
        &target(&stats),
        &load,
    );

    let load = load_average();
    let mut rng = Rng(42);
    let spread = built.clone();
    let stats = conn.time(opts.warmup, opts.requests, 200, |_| {
        let f = 0.01 + (rng.below(9_900) as f64) / 10_000.0;
        let to = Timestamp::from_millis(spread.at(f));
        format!("/v1/events?link_id={link}&page_size=100&to={to}")
    });
    results.add(
        "same, `to` at a random instant of the year (cold pages)",
        built.n,
        stats_text(&stats),
        &target(&stats),
        &load,
    );

    // Pages in a row, each following the previous page's token.
    let load = load_average();
    let mut token: Option<String> = None;
    let mut times = Vec::with_capacity(opts.requests);
    let mut bytes = 0u64;
    for _ in 0..opts.requests {
        let path = match &token {
            None => first.clone(),
            Some(t) => format!("{first}&page_token={t}"),
        };
        let started = Instant::now();
        let reply = conn.get(&path);
        times.push(started.elapsed());
        bytes += reply.body.len() as u64;
        assert_eq!(reply.status, 200, "{path}");
        token = reply.json()["next_page_token"].as_str().map(str::to_owned);
        assert!(token.is_some(), "the history ended early");
    }
    let stats = Stats::new(times, bytes / opts.requests.max(1) as u64);
    results.add(
        &format!(
            "same, {} pages in a row following `next_page_token`",
            opts.requests
        ),
        built.n,
        stats_text(&stats),
        &target(&stats),
        &load,
    );

    let load = load_average();
    let ws_first = "/v1/events?page_size=100".to_owned();
    page(&mut conn, &ws_first);
    let stats = conn.time(opts.warmup, opts.requests, 200, |_| ws_first.clone());
    results.add(
        "`GET /v1/events?page_size=100` (workspace), first page",
        built.n,
        stats_text(&stats),
        &target(&stats),
        &load,
    );
}

fn scenario_export(results: &mut Results, built: &Built) {
    // A fresh server per format, so each starts from the same memory.
    for format in ["ndjson", "csv"] {
        let (server, startup) = ChildServer::start(&built.data);
        wait_counters(server.addr);
        eprintln!("  export: server up in {:.2} s", startup.as_secs_f64());
        std::thread::sleep(Duration::from_secs(1));
        let load = load_average();
        let (rss_before, hwm_before) = memory_kb(server.pid());
        let mut conn = Conn::new(server.addr, Some(&built.token));
        let sampler = Sampler::start(server.pid());
        let (mut bytes, mut lines) = (0u64, 0u64);
        let started = Instant::now();
        let status = conn.get_into(
            &format!("/v1/events/export?format={format}&include_bots=true"),
            &mut |b| {
                bytes += b.len() as u64;
                lines += b.iter().filter(|&&c| c == b'\n').count() as u64;
            },
        );
        let wall = started.elapsed().as_secs_f64();
        let peak = peak(&sampler.finish());
        let (_, hwm_after) = memory_kb(server.pid());
        assert_eq!(status, 200);
        let want = built.n + u64::from(format == "csv");
        assert_eq!(lines, want, "{format}: every event, one line each");
        results.add(
            &format!("`GET /v1/events/export?format={format}` (child process)"),
            built.n,
            format!(
                "{wall:.2} s ({:.0} events/s, {:.0} MB); VmRSS {} before, peak {} during (+{}); VmHWM {} → {}",
                built.n as f64 / wall,
                bytes as f64 / 1e6,
                mb(rss_before),
                mb(peak),
                mb(peak.saturating_sub(rss_before)),
                mb(hwm_before),
                mb(hwm_after)
            ),
            &format!(
                "< 10 s without memory growth: time {}, memory {} (+{} at the peak)",
                verdict(wall < 10.0),
                // One page of 1,000 events is well under a megabyte.
                verdict(peak.saturating_sub(rss_before) < 32 * 1024),
                mb(peak.saturating_sub(rss_before))
            ),
            &load,
        );
        server.stop();
    }
}

fn scenario_rss(results: &mut Results, opts: &Options, built: &Built) {
    let load = load_average();
    let started = Instant::now();
    let links = add_links(built, opts.links);
    eprintln!(
        "  rss: {} links added in {:.1} s",
        links.len(),
        started.elapsed().as_secs_f64()
    );
    let n_links = links.len() + 1;
    let (server, startup) = ChildServer::start(&built.data);
    let pid = server.pid();
    let (rss_up, _) = memory_kb(pid);
    let sampled_from = Instant::now();
    let sampler = Sampler::start(pid);
    let counting = wait_counters(server.addr);
    std::thread::sleep(Duration::from_millis(500));
    let (rss_counted, hwm_counted) = memory_kb(pid);

    // Hot versus cold redirects, before any other read touches a link's
    // pages: one link again and again (in the link cache after the first),
    // each request followed by one of 500 links picked at random among all
    // (not scanned or read since the start: a cache miss and a sled read of
    // pages no request brought in yet). Interleaved, so both meet the same
    // machine: how fast an idle thread wakes moves a sequential client's
    // round trip more than anything the server does.
    let mut conn = Conn::new(server.addr, Some(&built.token));
    let hot_slug = links[0].1.clone();
    let cold_slugs = pick_distinct(&mut Rng(13), &links[1..], 500);
    conn.time(20, 0, 302, |_| format!("/{hot_slug}"));
    let (mut hot_times, mut cold_times) = (Vec::new(), Vec::new());
    for cold_slug in &cold_slugs {
        hot_times.extend(conn.time(0, 1, 302, |_| format!("/{hot_slug}")).times);
        cold_times.extend(conn.time(0, 1, 302, |_| format!("/{cold_slug}")).times);
    }
    let (hot, cold) = (Stats::new(hot_times, 0), Stats::new(cold_times, 0));

    // The reads of the mixed load below, idle first.
    let idle_load = load_average();
    let mut rng = Rng(11);
    let idle_paths: [Box<dyn FnMut() -> String>; 4] = [
        Box::new(|| {
            let random = links[rng.below(links.len())].0;
            format!("/v1/links/{random}/scans?days=30")
        }),
        Box::new(|| format!("/v1/links/{}/scans?days=365", built.hot)),
        Box::new(|| format!("/v1/events?link_id={}&page_size=100", built.hot)),
        Box::new(|| "/v1/metrics".to_owned()),
    ];
    let idle: Vec<Stats> = idle_paths
        .into_iter()
        .map(|mut path| conn.time(5, 50, 200, |_| path()))
        .collect();
    drop(conn);
    results.add(
        &format!("Redirect of a hot and a cold link, {n_links} links (child process, one connection, interleaved)"),
        built.n,
        format!(
            "hot: p50 {:.3} ms, p99 {:.3} ms; cold (a random link not read since the start): p50 {:.3} ms, p99 {:.3} ms; cold/hot p50 {:.2}",
            hot.ms(0.5),
            hot.ms(0.99),
            cold.ms(0.5),
            cold.ms(0.99),
            cold.ms(0.5) / hot.ms(0.5)
        ),
        &format!(
            "cold within 2x of hot: {}",
            verdict(cold.ms(0.5) <= 2.0 * hot.ms(0.5))
        ),
        &idle_load,
    );

    // Mixed load: redirects of random links on 64 connections, and on
    // another thread sequential analytics reads of random links.
    let mut rng = Rng(7);
    let uas = load::browser_user_agents();
    let heads: Vec<Vec<String>> = (0..load::CONNECTIONS)
        .map(|c| {
            (0..100)
                .map(|_| {
                    let slug = &links[rng.below(links.len())].1;
                    let client = format!("198.51.100.{}", c + 1);
                    load::redirect_head(&format!("/{slug}"), client, &uas[c * 7 % uas.len()])
                })
                .collect()
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    const READS: [&str; 4] = [
        "scans of a random link, 30 days",
        "scans of the hot link, 365 days",
        "first event page of the hot link",
        "`/v1/metrics` (workspace)",
    ];
    let reads = {
        let (stop, addr, token, hot) = (stop.clone(), server.addr, built.token.clone(), built.hot);
        let ids: Vec<LinkId> = links.iter().map(|(id, _)| *id).collect();
        std::thread::spawn(move || {
            let mut conn = Conn::new(addr, Some(&token));
            let mut rng = Rng(9);
            let mut times: [Vec<Duration>; 4] = Default::default();
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let random = ids[rng.below(ids.len())];
                let path = match i % 4 {
                    0 => format!("/v1/links/{random}/scans?days=30"),
                    1 => format!("/v1/links/{hot}/scans?days=365"),
                    2 => format!("/v1/events?link_id={hot}&page_size=100"),
                    _ => "/v1/metrics".to_owned(),
                };
                let started = Instant::now();
                let status = conn.get_into(&path, &mut |_| {});
                times[i % 4].push(started.elapsed());
                assert_eq!(status, 200, "{path}");
                i += 1;
            }
            times.map(|t| Stats::new(t, 0))
        })
    };
    let load_from = sampled_from.elapsed();
    let outcome = load::drive(
        server.addr,
        heads,
        302,
        Duration::from_secs(1),
        opts.load_secs,
        None,
    );
    stop.store(true, Ordering::Relaxed);
    let reads = reads.join().expect("reads");
    std::thread::sleep(Duration::from_millis(500));
    let (rss_after, hwm_after) = memory_kb(pid);
    // What the server still holds once the load is over.
    std::thread::sleep(Duration::from_millis(4_500));
    let (rss_settled, _) = memory_kb(pid);
    let samples = sampler.finish();
    let peak = peak(&samples);
    server.stop();
    eprintln!(
        "  VmRSS during the mixed load: {}",
        timeline(&samples, load_from)
    );
    let reads_text: Vec<String> = READS
        .iter()
        .zip(&reads)
        .map(|(what, s)| {
            format!(
                "{what}: {} reads, p50 {:.2} ms, p99 {:.2} ms",
                s.times.len(),
                s.ms(0.5),
                s.ms(0.99)
            )
        })
        .collect();
    let idle_text: Vec<String> = READS
        .iter()
        .zip(&idle)
        .map(|(what, s)| format!("{what}: p50 {:.2} ms, p99 {:.2} ms", s.ms(0.5), s.ms(0.99)))
        .collect();
    results.add(
        &format!("Reads with {n_links} links, idle (child process, 50 each)"),
        built.n,
        idle_text.join("; "),
        "(report)",
        &idle_load,
    );
    results.add(
        &format!("Resident memory, {n_links} links (child process)"),
        built.n,
        format!(
            "VmRSS {} once listening ({:.2} s after spawn), {} once the counters caught up ({:.1} s later), {} after {:.0} s of mixed load ({:.0} redirects/s of random links on 64 connections, p99 {:.2} ms; meanwhile on one connection: {}), {} 5 s after the load; VmHWM {} after counting, {} at the end; highest VmRSS sampled {}",
            mb(rss_up),
            startup.as_secs_f64(),
            mb(rss_counted),
            counting.as_secs_f64(),
            mb(rss_after),
            outcome.secs,
            outcome.rps(),
            outcome.percentile(0.99),
            reads_text.join("; "),
            mb(rss_settled),
            mb(hwm_counted),
            mb(hwm_after),
            mb(peak)
        ),
        &format!(
            "< 150 MB: {}",
            verdict(hwm_after.max(peak) < 150 * 1024)
        ),
        &load,
    );
}

/// At the larger sizes: the child process's memory once listening and once
/// the Counters caught up on a store they never counted (no extra links, no
/// load), to see how memory scales with the events read.
fn scenario_startup_memory(results: &mut Results, built: &Built) {
    let load = load_average();
    let (server, startup) = ChildServer::start(&built.data);
    let pid = server.pid();
    let (rss_up, _) = memory_kb(pid);
    let sampler = Sampler::start(pid);
    let counting = wait_counters(server.addr);
    std::thread::sleep(Duration::from_millis(500));
    let (rss_counted, hwm) = memory_kb(pid);
    let peak = peak(&sampler.finish());
    server.stop();
    results.add(
        "Resident memory, 1 link, no load (child process)",
        built.n,
        format!(
            "VmRSS {} once listening ({:.1} s after spawn), {} once the counters caught up ({:.1} s later); VmHWM {}, highest VmRSS sampled {}",
            mb(rss_up),
            startup.as_secs_f64(),
            mb(rss_counted),
            counting.as_secs_f64(),
            mb(hwm),
            mb(peak)
        ),
        "(report)",
        &load,
    );
}

fn redirect_heads() -> Vec<Vec<String>> {
    let uas = load::browser_user_agents();
    (0..load::CONNECTIONS)
        .map(|i| {
            let client = format!("198.51.100.{}", i + 1);
            vec![load::redirect_head(
                &format!("/{HOT_SLUG}"),
                client,
                &uas[i * 7 % uas.len()],
            )]
        })
        .collect()
}

fn outcome_text(o: &Outcome) -> String {
    format!(
        "{:.0} req/s, p50 {:.2} ms, p99 {:.2} ms over {:.2} s{}",
        o.rps(),
        o.percentile(0.5),
        o.percentile(0.99),
        o.secs,
        if o.errors > 0 {
            format!(" ({} errors)", o.errors)
        } else {
            String::new()
        }
    )
}

fn scenario_purge(results: &mut Results, opts: &Options, built: &Built, spare: &Path) {
    // The cut-off halves the history: `now` is the instant at which events
    // older than it are past the plan's retention.
    let cutoff = built.at(0.5);
    let now = Timestamp::from_millis(cutoff + PLAN_RETENTION_DAYS * DAY_MS);

    // 1. A pass on an idle server.
    let load = load_average();
    let mut app = InProcess::start(settings_for(&built.data, &[]));
    wait_counters(app.addr);
    app.wait_durable_position();
    let mut purger = app.purger.take().expect("purger");
    let started = Instant::now();
    let pass = purger.pass(now, false, None).expect("purge");
    let secs = started.elapsed().as_secs_f64();
    let total = pass.total();
    assert!(total.events > 0, "the pass deleted nothing: {pass:?}");
    drop(purger);
    app.stop();
    results.add(
        "Purge: one Purger pass deleting the older half, idle server",
        built.n,
        format!(
            "{} events ({} segments rewritten, {} removed) in {secs:.2} s: {:.0} events/s",
            total.events,
            total.segments_rewritten,
            total.segments_removed,
            total.events as f64 / secs
        ),
        "(report)",
        &load,
    );

    // 2. The redirect idle, then while the same pass runs (on a fresh copy).
    let mut app = InProcess::start(settings_for(spare, &[]));
    wait_counters(app.addr);
    app.wait_durable_position();
    let load = load_average();
    let idle = load::drive(
        app.addr,
        redirect_heads(),
        302,
        Duration::from_secs(1),
        opts.load_secs,
        None,
    );
    results.add(
        "Redirect of the hot link (64 connections), idle",
        built.n,
        outcome_text(&idle),
        "(baseline of the next row)",
        &load,
    );
    wait_counters(app.addr);
    app.wait_durable_position();
    let load = load_average();
    let stop = Arc::new(AtomicBool::new(false));
    let purging = {
        let stop = stop.clone();
        let mut purger = app.purger.take().expect("purger");
        std::thread::spawn(move || {
            // After the load's warm-up.
            std::thread::sleep(Duration::from_secs(1));
            let started = Instant::now();
            let pass = purger.pass(now, false, None).expect("purge");
            let secs = started.elapsed().as_secs_f64();
            stop.store(true, Ordering::Relaxed);
            (pass.total(), secs)
        })
    };
    let during = load::drive(
        app.addr,
        redirect_heads(),
        302,
        Duration::from_secs(1),
        3600.0,
        Some(stop),
    );
    let (total, secs) = purging.join().expect("purge thread");
    app.stop();
    let p99_ratio = during.percentile(0.99) / idle.percentile(0.99);
    results.add(
        "Redirect of the hot link while that pass runs",
        built.n,
        format!(
            "{}; the pass: {} events in {secs:.2} s ({:.0} events/s); p99 {p99_ratio:.2}× idle, throughput {:.2}× idle",
            outcome_text(&during),
            total.events,
            total.events as f64 / secs,
            during.rps() / idle.rps()
        ),
        "(report; redirect p99 < 5 ms)",
        &load,
    );
}

// ------------------------------------------------------------------ main

fn main() {
    let opts = Options::from_env();
    let root = tempfile::Builder::new()
        .prefix("scanhop-analytics-")
        .tempdir_in(&opts.dir)
        .expect("tempdir");
    eprintln!("stores under {}", root.path().display());
    let mut results = Results::default();
    for (k, &n) in opts.sizes.iter().enumerate() {
        let first = k == 0;
        let dir = root.path().join(format!("n{n}"));
        let base = dir.join("base");
        eprintln!("\n== {n} events: building the store");
        let load = load_average();
        let (built, secs) = build_store(&base, n);
        results.add(
            "Store build: `commit_scans` in batches of 512, one link",
            n,
            format!(
                "{secs:.1} s, {:.0} events/s; {:.0} MB on disk",
                n as f64 / secs,
                dir_size(&base) as f64 / 1e6
            ),
            "(report)",
            &load,
        );
        // Copies made before any counting, for the scenarios that need one.
        let rss = dir.join("rss");
        let spare = dir.join("spare");
        if opts.wants("rss") {
            copy_dir(&base, &rss);
        }
        if first && opts.wants("purge") {
            copy_dir(&base, &spare);
        }
        let reads = ["count", "scans", "events", "purge", "export"];
        if reads.iter().any(|s| opts.wants(s)) {
            let load = load_average();
            let app = InProcess::start(settings_for(&base, &[]));
            eprintln!("== {n} events: counting");
            scenario_count(&mut results, &app, &built, &load);
            if opts.wants("scans") {
                eprintln!("== {n} events: scans");
                scenario_scans(&mut results, &opts, &app, &built);
            }
            if opts.wants("events") {
                eprintln!("== {n} events: event pages");
                scenario_events(&mut results, &opts, &app, &built);
            }
            app.stop();
        }
        if first && opts.wants("export") {
            eprintln!("== {n} events: export");
            scenario_export(&mut results, &built);
        }
        if opts.wants("rss") {
            eprintln!("== {n} events: resident memory");
            let rss_built = Built {
                data: rss.clone(),
                ..built.clone()
            };
            if first {
                scenario_rss(&mut results, &opts, &rss_built);
            } else {
                scenario_startup_memory(&mut results, &rss_built);
            }
        }
        if first && opts.wants("purge") {
            eprintln!("== {n} events: purge");
            scenario_purge(&mut results, &opts, &built, &spare);
        }
        if !opts.keep {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    results.print();
    if opts.keep {
        eprintln!("kept {}", root.keep().display());
    }
}
