//! Load benchmark of the redirect path against a ceiling measured in the same
//! run: a bare actix-web route answering the same 302 with no work. Both are
//! driven alternately by the same client (64 keep-alive connections, one
//! thread) for a fixed time each. Scenarios:
//! - `sqlite shortener (reference)`: not scanhop, a reference comparator in
//!   the bench: a minimal SQLite hit-counter URL shortener modelled on Chhoto
//!   URL's redirect path (a read-only SQLite connection per worker queried on
//!   every redirect, counts batched every 500 ms into SQLite in WAL mode;
//!   `support/shortener.rs`), on 2 workers like the others, answering 308.
//!   After the table, each scanhop scenario's median ratio to the ceiling
//!   is given as a multiple of the shortener's when both ran. Its counts are read back
//!   from its database after the load ("Hits written to SQLite: N of M
//!   answered") and its "every answered scan stored" is n/a (it stores
//!   counts, no scans);
//! - `batched`: the defaults (user agent, fingerprint and visitor, stored
//!   event, counters), no GeoIP database;
//! - `full tracking`: the same with City and ASN databases of 120k networks;
//! - `strict`: full tracking, each redirect waiting for its fsync;
//! - `full tracking + webhook`: and a webhook subscribed to `qr.scanned`,
//!   delivered to a local receiver (run last: its server may keep
//!   delivering a backlog after it is dropped).
//!
//! scanhop runs with its logging installed as the binary installs it (the
//! default `[log]` settings, written to a file).
//!
//! For each run it also reports where the CPU went (by thread, from
//! `/proc/self/task`), the Recorder's CPU per committed event, the bytes
//! stored per event, in `strict` mode the scan log's appends (their
//! number, mean fdatasync time and scans each), and whether every answered
//! scan was stored. With a
//! webhook, it lets the outbox drain for up to a minute after the load and
//! reports the CPU per message delivered then, with no redirect beside it:
//! what a message costs, which the ratio under load cannot isolate.
//!
//! The machine is a virtual one, and its hypervisor at times gives a large
//! share of its time to other guests (steal, in `/proc/stat`): a round where
//! that happens in one half and not the other measures the neighbours, not
//! scanhop (rounds of one build have read 0.44 and 1.05 in the same hour).
//! So each half's steal is read from `/proc/stat` and shown with its round,
//! and a round with more than `LOAD_MAX_STEAL` (default 0.05) in either half
//! is run again, up to `LOAD_ROUNDS` times more; the rounds set aside are
//! listed.
//!
//! Run: `cargo bench --bench redirect_load` (env `LOAD_SECS`, default 8;
//! `LOAD_ROUNDS`, default 5 (this machine has spells where a round runs a
//! third slower than the next; five rounds keep one from setting the median);
//! `LOAD_ONLY=strict` for the scenarios whose name contains `strict`
//! (`LOAD_ONLY="=full tracking"` for the one of that exact name; a
//! comma-separated list runs a scenario when any item matches it:
//! `LOAD_ONLY="shortener,=full tracking"`);
//! `LOAD_CLIENT=wrk` to drive both servers with wrk instead of the bench's
//! own client; `LOAD_NEW_EVERY=1` to make every scan a device never seen,
//! default one in 10; `LOAD_PEOPLE=1` to make every scan a person never
//! seen: a new client network and language each time, with a known browser
//! user agent).

#[path = "support/geo.rs"]
mod geo_support;

#[path = "support/load.rs"]
mod load;

#[path = "support/threads.rs"]
mod threads;

#[path = "support/alloc_count.rs"]
mod alloc_count;

#[path = "support/machine.rs"]
mod machine;

#[global_allocator]
static ALLOCATOR: alloc_count::Counting = alloc_count::Counting;

#[path = "support/http.rs"]
mod http;

#[path = "support/wrk.rs"]
mod wrk;

#[path = "support/shortener.rs"]
mod shortener;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use load::{CONNECTIONS, Outcome};
use scanhop::app::Application;
use scanhop::config::Settings;

const DESTINATION: &str = "https://example.com/menu";

/// The client address and user agent of each of the 64 connections: an
/// address in the GeoIP range and a real browser user agent.
fn connections() -> Vec<(String, String)> {
    let uas = load::browser_user_agents();
    (0..CONNECTIONS)
        .map(|i| {
            let client = geo_support::address(i as u32 * 37 % geo_support::NETWORKS);
            (client.to_string(), uas[i * 7 % uas.len()].clone())
        })
        .collect()
}

/// Which client drives the load: the bench's own, or wrk (`LOAD_CLIENT=wrk`)
/// with its script.
enum Client {
    Own,
    Wrk(std::path::PathBuf),
}

/// Drives `addr` with 64 connections for `1 s + secs`, counting answers
/// with status `expect` (wrk counts any 2xx or 3xx).
fn drive(client: &Client, addr: SocketAddr, path: &str, secs: u64, expect: u16) -> Outcome {
    match client {
        Client::Own => {
            let heads = connections()
                .iter()
                .map(|(ip, ua)| vec![load::redirect_head(path, ip, ua)])
                .collect();
            load::drive(
                addr,
                heads,
                expect,
                Duration::from_secs(1),
                secs as f64,
                None,
            )
        }
        Client::Wrk(script) => wrk::drive(addr, path, script, Duration::from_secs(1), secs as f64),
    }
}

/// The ceiling: the same 302, no work at all.
fn start_ceiling() -> (SocketAddr, actix_web::dev::ServerHandle) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = HttpServer::new(|| {
                App::new().route(
                    "/{slug}",
                    web::get().to(|| async {
                        HttpResponse::Found()
                            .insert_header(("Location", DESTINATION))
                            .finish()
                    }),
                )
            })
            .workers(2)
            .disable_signals()
            .bind("127.0.0.1:0")
            .expect("bind");
            let addr = server.addrs()[0];
            let server = server.run();
            tx.send((addr, server.handle())).expect("send");
            let _ = server.await;
        })
    });
    rx.recv().expect("ceiling started")
}

/// A webhook receiver on a thread of its own ("receiver"): answers every
/// request with 204 on keep-alive connections and counts them.
fn start_receiver() -> (SocketAddr, Arc<AtomicU64>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let count = Arc::new(AtomicU64::new(0));
    let counted = count.clone();
    load::on_thread("receiver", async move {
        listener.set_nonblocking(true).expect("nonblocking");
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(serve_receiver(stream, counted.clone()));
        }
    });
    (addr, count)
}

async fn serve_receiver(mut stream: tokio::net::TcpStream, count: Arc<AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    loop {
        // One request: the head, then Content-Length bytes.
        let total = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                break end + 4 + len;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        while buf.len() < total {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..total);
        count.fetch_add(1, Ordering::Relaxed);
        if stream
            .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
    }
}

struct Scanhop {
    addr: SocketAddr,
    token: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Scanhop {
    /// Starts scanhop with `env` over the bench's settings and creates the
    /// link `/bench`; with `hook`, a webhook on `qr.scanned` sending there.
    fn start(env: Vec<(String, String)>, hook: Option<SocketAddr>) -> Scanhop {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut vars = vec![
            ("SCANHOP__SERVER__BIND".to_owned(), "127.0.0.1:0".to_owned()),
            ("SCANHOP__SERVER__WORKERS".to_owned(), "2".to_owned()),
            (
                "SCANHOP__STORAGE__PATH".to_owned(),
                dir.path().join("data").display().to_string(),
            ),
            (
                "SCANHOP__SERVER__TRUSTED_PROXIES".to_owned(),
                "127.0.0.1/32".to_owned(),
            ),
        ];
        vars.extend(env);
        // SCANHOP__* from the environment override the scenario (for experiments).
        vars.extend(std::env::vars().filter(|(k, _)| k.starts_with("SCANHOP__")));
        let settings = Settings::load_with_env(None, vars).expect("settings");
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let app = Application::build(settings).expect("scanhop builds");
                let token = app.first_token().expect("token").to_owned();
                tx.send((app.port(), token)).expect("send");
                let _ = app
                    .run_until(async move {
                        let _ = stop_rx.await;
                    })
                    .await;
            })
        });
        let (port, token) = rx.recv().expect("scanhop started");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let link = format!("{{\"destination\": \"{DESTINATION}\", \"slug\": \"bench\"}}");
        post(addr, &token, "/v1/links", &link);
        if let Some(receiver) = hook {
            let body = format!(
                "{{\"url\": \"http://localhost:{}/hook\", \"events\": [\"qr.scanned\"]}}",
                receiver.port()
            );
            post(addr, &token, "/v1/webhooks", &body);
        }
        Scanhop {
            addr,
            token,
            stop: Some(stop_tx),
            thread: Some(thread),
            _dir: dir,
        }
    }
}

impl Drop for Scanhop {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// POSTs `body` (JSON) and insists on 201.
fn post(addr: SocketAddr, token: &str, path: &str, body: &str) {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.write_all(req.as_bytes()).expect("write");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
}

/// A value of `/metrics` (the first sample of `name`), 0 when absent.
fn metric(addr: SocketAddr, token: &str, name: &str) -> f64 {
    let text = String::from_utf8(http::Conn::new(addr, Some(token)).get("/metrics").body)
        .unwrap_or_default();
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == name).then(|| v.parse().ok())?
        })
        .unwrap_or(0.0)
}

/// Settings of a scenario, as `SCANHOP__*` variables.
type Env = Vec<(String, String)>;

/// What a scenario measures: scanhop with its settings, with or without a
/// webhook to the receiver, or the reference shortener.
enum Target {
    Scanhop(Env, bool),
    Shortener,
}

/// A scenario's server while it runs.
enum Server {
    Scanhop(Scanhop),
    Shortener(shortener::Shortener),
}

impl Server {
    fn start(target: &Target, receiver: SocketAddr) -> Server {
        match target {
            Target::Scanhop(env, hook) => {
                Server::Scanhop(Scanhop::start(env.clone(), hook.then_some(receiver)))
            }
            Target::Shortener => {
                Server::Shortener(shortener::Shortener::start("bench", DESTINATION))
            }
        }
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Server::Scanhop(s) => s.addr,
            Server::Shortener(s) => s.addr,
        }
    }

    /// The status its redirects answer with.
    fn status(&self) -> u16 {
        match self {
            Server::Scanhop(_) => 302,
            Server::Shortener(_) => shortener::STATUS,
        }
    }
}

/// What one run of a scenario measured besides the load.
struct Run {
    load: Outcome,
    base: Outcome,
    /// CPU nanoseconds by thread group during the load.
    cpu: Vec<(String, u64)>,
    /// The same during the ceiling's run.
    base_cpu: Vec<(String, u64)>,
    /// Allocations by thread group during the load.
    allocations: Vec<(String, u64)>,
    /// The same during the ceiling's run.
    base_allocations: Vec<(String, u64)>,
    recorded: f64,
    redirects: f64,
    recorder_cpu_secs: f64,
    recorder_busy_secs: f64,
    backpressure_waits: f64,
    recorder_batches: f64,
    event_bytes: f64,
    /// Strict mode: the scan log's appends (each an fdatasync) and their
    /// seconds in all.
    log_syncs: f64,
    log_sync_secs: f64,
    /// Webhook requests the receiver got during the run, and in all.
    delivered_during: u64,
    delivered: u64,
    /// After the load: CPU nanoseconds by thread group while the outbox
    /// drained, and the messages received meanwhile.
    drain_cpu: Vec<(String, u64)>,
    drained: u64,
    /// The machine during the ceiling's run and during the scenario's.
    base_machine: machine::Shares,
    load_machine: machine::Shares,
    /// For the reference shortener, the transactions that wrote its hit
    /// counts (`redirects` are the redirects it answered, `recorded` the
    /// hits read back from its database); `None` for scanhop.
    shortener: Option<u64>,
}

impl Run {
    fn ratio(&self) -> f64 {
        self.load.rps() / self.base.rps()
    }

    /// Whether the hypervisor took more than `max` of the machine's time
    /// from either half of the round: the two halves then did not run on
    /// the same machine, and their ratio says nothing of scanhop.
    fn stolen(&self, max: f64) -> bool {
        self.base_machine.steal > max || self.load_machine.steal > max
    }

    /// The round's ratio with the HTTP workers' CPU per scan, the steal and
    /// the idle share of each half, and the CPU per scan of all the
    /// process's threads in the scenario's half.
    fn summary(&self) -> String {
        let all: u64 = self.cpu.iter().map(|(_, ns)| ns).sum();
        format!(
            "{:.2} ({:.1} µs; steal {:.0}%/{:.0}%; idle {:.0}%/{:.0}%; all threads {:.1} µs)",
            self.ratio(),
            self.http_cpu_per_scan(),
            100.0 * self.base_machine.steal,
            100.0 * self.load_machine.steal,
            100.0 * self.base_machine.idle,
            100.0 * self.load_machine.idle,
            all as f64 / 1000.0 / self.redirects.max(1.0)
        )
    }

    /// CPU microseconds of the HTTP workers (actix's threads) per scan.
    fn http_cpu_per_scan(&self) -> f64 {
        let ns: u64 = self
            .cpu
            .iter()
            .filter(|(group, _)| group.starts_with("actix-rt"))
            .map(|(_, ns)| ns)
            .sum();
        ns as f64 / 1000.0 / self.redirects.max(1.0)
    }
}

/// The first `take` thread groups of `counts` (busiest first), each as its
/// count divided by `per`: CPU nanoseconds by 1,000 times the scans for
/// microseconds per scan, allocations by the scans for allocations per scan.
fn per_unit(counts: &[(String, u64)], take: usize, per: f64) -> Vec<String> {
    counts
        .iter()
        .take(take)
        .map(|(group, n)| format!("{group} {:.1}", *n as f64 / per))
        .collect()
}

fn main() {
    scanhop::memory::configure();
    // `cargo bench` passes `--bench`; `cargo test --benches` would too: stay quick then.
    let secs: u64 = std::env::var("LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let geo_dir = tempfile::tempdir().expect("tempdir");
    eprintln!(
        "generating GeoIP databases ({} networks each)...",
        geo_support::NETWORKS
    );
    let (city, asn) = geo_support::write_databases(geo_dir.path());
    // scanhop's logging as the binary installs it, with the default `[log]`
    // settings (an access line per API request, none per scan), so every
    // scenario measures the service as it ships; written to a file here
    // instead of stderr.
    let log_settings = Settings::load_with_env(None, std::env::vars())
        .expect("settings")
        .log;
    let log_file = std::fs::File::create(geo_dir.path().join("scanhop.log")).expect("log file");
    let _log_guard = scanhop::logging::init(&log_settings, log_file).expect("logging");
    let geo_env = vec![
        (
            "SCANHOP__GEOIP__CITY_DB".to_owned(),
            city.display().to_string(),
        ),
        (
            "SCANHOP__GEOIP__ASN_DB".to_owned(),
            asn.display().to_string(),
        ),
    ];
    let durability = |d: &str| vec![("SCANHOP__STORAGE__DURABILITY".to_owned(), d.to_owned())];
    let private_hooks = vec![(
        "SCANHOP__WEBHOOKS__ALLOW_PRIVATE_TARGETS".to_owned(),
        "true".to_owned(),
    )];
    let (receiver, received) = start_receiver();
    let scenarios: Vec<(&str, Target)> = vec![
        // First: its server stops with its thread (its hit writer with it)
        // and leaves nothing running, so it cannot weigh on the scenarios
        // after it, and the webhook scenario must stay last.
        ("sqlite shortener (reference)", Target::Shortener),
        ("batched", Target::Scanhop(durability("batched"), false)),
        (
            "full tracking",
            Target::Scanhop([durability("batched"), geo_env.clone()].concat(), false),
        ),
        (
            "strict (full tracking)",
            Target::Scanhop([durability("strict"), geo_env.clone()].concat(), false),
        ),
        // Last: its server may still be delivering a backlog of messages
        // after it is dropped, which would weigh on a scenario after it.
        (
            "full tracking + webhook",
            Target::Scanhop(
                [durability("batched"), geo_env, private_hooks].concat(),
                true,
            ),
        ),
    ];
    // LOAD_ONLY=strict runs just the scenarios whose name contains it;
    // LOAD_ONLY="=full tracking" just the one of that exact name; a
    // comma-separated list, those matching any of its items.
    let only: Option<Vec<String>> = std::env::var("LOAD_ONLY")
        .ok()
        .map(|o| {
            o.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|items| !items.is_empty());
    let scenarios: Vec<_> = scenarios
        .into_iter()
        .filter(|(name, _)| {
            only.as_deref().is_none_or(|items| {
                items.iter().any(|o| match o.strip_prefix('=') {
                    Some(exact) => *name == exact,
                    None => name.contains(o.as_str()),
                })
            })
        })
        .collect();
    let (ceiling_addr, ceiling) = start_ceiling();
    let client = if std::env::var("LOAD_CLIENT").is_ok_and(|c| c == "wrk") {
        assert!(
            wrk::available(),
            "LOAD_CLIENT=wrk needs wrk (apt-get install wrk)"
        );
        let script = geo_dir.path().join("scans.lua");
        wrk::write_script(&script, &connections());
        Client::Wrk(script)
    } else {
        Client::Own
    };
    let client_name = match client {
        Client::Own => "the bench's client",
        Client::Wrk(_) => "wrk -t1 with a Lua script",
    };
    let scans = if load::people() {
        "every scan a person never seen (a new client network and language)".to_owned()
    } else {
        format!(
            "64 devices, one scan in {} with a user agent never seen",
            load::miss_every()
        )
    };
    println!(
        "\n{CONNECTIONS} connections, {secs} s per run after 1 s warm-up, {client_name} on one thread, servers with 2 workers; {scans}\n"
    );
    let rounds: usize = std::env::var("LOAD_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    // LOAD_MAX_STEAL: the share of a half's time the hypervisor may take
    // before the round is run again (default 0.05).
    let max_steal: f64 = std::env::var("LOAD_MAX_STEAL")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.05);
    println!(
        "Each round runs the ceiling, then the scenario; the row is the round with the median ratio of {rounds}. A round in which the hypervisor took over {:.0}% of either half's time is run again (at most {rounds} rounds more).\n",
        100.0 * max_steal
    );
    let mut rows = Vec::new();
    let mut details = Vec::new();
    // Each scenario's median ratio to the ceiling and median req/s over its
    // rounds, and whether it is the shortener: the comparison line after
    // the table.
    let mut medians: Vec<(&str, f64, f64, bool)> = Vec::new();
    for (name, target) in scenarios {
        let hook = matches!(target, Target::Scanhop(_, true));
        let mut runs: Vec<Run> = Vec::new();
        let mut discarded: Vec<Run> = Vec::new();
        // A round with steal is run again, at most `rounds` times more.
        while runs.len() < rounds && runs.len() + discarded.len() < 2 * rounds {
            let machine_before_base = machine::ticks();
            let before_base = threads::snapshot_with(alloc_count::of_thread);
            let base = drive(&client, ceiling_addr, "/bench", secs, 302);
            let after_base = threads::snapshot_with(alloc_count::of_thread);
            let base_machine = machine::between(&machine_before_base, &machine::ticks());
            let base_cpu = threads::spent(&before_base, &after_base);
            let base_allocations = threads::allocated(&before_base, &after_base);
            let server = Server::start(&target, receiver);
            let (before, received_before) = (
                threads::snapshot_with(alloc_count::of_thread),
                received.load(Ordering::Relaxed),
            );
            let machine_before = machine::ticks();
            let load = drive(&client, server.addr(), "/bench", secs, server.status());
            let load_machine = machine::between(&machine_before, &machine::ticks());
            let after = threads::snapshot_with(alloc_count::of_thread);
            let (cpu, allocations) = (
                threads::spent(&before, &after),
                threads::allocated(&before, &after),
            );
            let delivered_during = received.load(Ordering::Relaxed) - received_before;
            let mut run = Run {
                load,
                base,
                cpu,
                base_cpu,
                allocations,
                base_allocations,
                base_machine,
                load_machine,
                delivered_during,
                recorded: 0.0,
                redirects: 0.0,
                recorder_cpu_secs: 0.0,
                recorder_busy_secs: 0.0,
                backpressure_waits: 0.0,
                recorder_batches: 0.0,
                event_bytes: 0.0,
                log_syncs: 0.0,
                log_sync_secs: 0.0,
                delivered: 0,
                drain_cpu: Vec::new(),
                drained: 0,
                shortener: None,
            };
            match &server {
                Server::Scanhop(server) => {
                    // Every answered redirect is a recorded scan once the
                    // Recorder's queue is drained (at most a batch interval
                    // later).
                    let (addr, token) = (server.addr, server.token.clone());
                    let m = |n: &str| metric(addr, &token, n);
                    // Waits while the Recorder still makes progress (a
                    // backlog takes longer than one interval), so "no" means
                    // scans are missing. wrk exits with requests still in
                    // flight, which the server answers (and counts) after
                    // it: the count must settle first.
                    let mut redirects = m("scanhop_redirects_total");
                    loop {
                        std::thread::sleep(Duration::from_millis(100));
                        let now = m("scanhop_redirects_total");
                        if now == redirects {
                            break;
                        }
                        redirects = now;
                    }
                    let mut recorded = m("scanhop_scans_recorded_total");
                    let mut still = 0;
                    while recorded < redirects && still < 100 {
                        std::thread::sleep(Duration::from_millis(20));
                        let now = m("scanhop_scans_recorded_total");
                        still = if now > recorded { 0 } else { still + 1 };
                        recorded = now;
                    }
                    if hook {
                        // Let the outbox drain (bounded), to report what was
                        // delivered and what delivering cost with no load
                        // beside it.
                        let (start, received_start) = (
                            threads::snapshot_with(alloc_count::of_thread),
                            received.load(Ordering::Relaxed),
                        );
                        for _ in 0..600 {
                            if received.load(Ordering::Relaxed) - received_before >= recorded as u64
                            {
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(100));
                        }
                        let end = threads::snapshot_with(alloc_count::of_thread);
                        run.drain_cpu = threads::spent(&start, &end);
                        run.drained = received.load(Ordering::Relaxed) - received_start;
                    }
                    run.recorder_cpu_secs = m("scanhop_recorder_cpu_seconds_total");
                    run.recorder_busy_secs = m("scanhop_recorder_busy_seconds_total");
                    run.backpressure_waits = m("scanhop_recorder_backpressure_waits_total");
                    run.recorder_batches = m("scanhop_recorder_batches_total");
                    run.log_syncs = m("scanhop_scan_log_sync_duration_seconds_count");
                    run.log_sync_secs = m("scanhop_scan_log_sync_duration_seconds_sum");
                    run.event_bytes = m("scanhop_event_bytes_total");
                    run.delivered = received.load(Ordering::Relaxed) - received_before;
                    run.recorded = recorded;
                    run.redirects = redirects;
                }
                Server::Shortener(server) => {
                    // The redirects it answered, once wrk's last requests in
                    // flight are answered; then its hits as stored in SQLite,
                    // waiting while they still grow (a batch every 500 ms)
                    // and for at most three intervals without progress.
                    let mut answered = server.answered();
                    loop {
                        std::thread::sleep(Duration::from_millis(100));
                        let now = server.answered();
                        if now == answered {
                            break;
                        }
                        answered = now;
                    }
                    let mut written = server.hits();
                    let mut still = 0;
                    while written < answered && still < 30 {
                        std::thread::sleep(Duration::from_millis(50));
                        let now = server.hits();
                        still = if now > written { 0 } else { still + 1 };
                        written = now;
                    }
                    run.redirects = answered as f64;
                    run.recorded = written as f64;
                    run.shortener = Some(server.batches());
                }
            }
            drop(server);
            if run.load.errors > 0 || run.base.errors > 0 {
                eprintln!(
                    "  ({name}: errors: scenario {}, ceiling {})",
                    run.load.errors, run.base.errors
                );
            }
            if run.stolen(max_steal) {
                discarded.push(run);
            } else {
                runs.push(run);
            }
        }
        if runs.is_empty() {
            // Every round had steal: report them rather than nothing.
            runs = std::mem::take(&mut discarded);
        }
        // In the order they ran, with the HTTP workers' CPU per scan: a
        // scenario's later rounds can run slower than its first.
        let in_order: Vec<String> = runs.iter().map(Run::summary).collect();
        let stolen: Vec<String> = discarded.iter().map(Run::summary).collect();
        let mut rps: Vec<f64> = runs.iter().map(|r| r.load.rps()).collect();
        rps.sort_by(f64::total_cmp);
        runs.sort_by(|a, b| a.ratio().total_cmp(&b.ratio()));
        medians.push((
            name,
            runs[runs.len() / 2].ratio(),
            rps[rps.len() / 2],
            runs[0].shortener.is_some(),
        ));
        let all: Vec<String> = runs.iter().map(|r| format!("{:.2}", r.ratio())).collect();
        let r = &runs[runs.len() / 2];
        rows.push(format!(
            "| {name} | {:.0} | {:.2} | {:.2} | {:.0} (p50 {:.2}, p99 {:.2}) | {:.2} | {} | {} |",
            r.load.rps(),
            r.load.percentile(0.5),
            r.load.percentile(0.99),
            r.base.rps(),
            r.base.percentile(0.5),
            r.base.percentile(0.99),
            r.ratio(),
            all.join(", "),
            if r.shortener.is_some() {
                "n/a (counts only)".to_owned()
            } else if r.recorded >= r.redirects {
                "yes".to_owned()
            } else {
                format!("**no**: {} of {} recorded", r.recorded, r.redirects)
            },
        ));
        let scans = r.redirects.max(1.0);
        // The ceiling's requests: of the run and of its 1 s warm-up, at the
        // run's rate.
        let base_requests = (r.base.rps() * (r.base.secs + 1.0)).max(1.0);
        let per_scan = per_unit(&r.cpu, 8, scans * 1000.0);
        let base_per_request = per_unit(&r.base_cpu, 2, base_requests * 1000.0);
        let allocations = per_unit(&r.allocations, 6, scans);
        let base_allocations = per_unit(&r.base_allocations, 2, base_requests);
        // A scan for scanhop; for the shortener, a redirect it counts.
        let unit = if r.shortener.is_some() {
            "redirect"
        } else {
            "scan"
        };
        let mut detail = format!(
            "- **{name}**: rounds in the order they ran, ratio (HTTP workers' CPU µs per {unit}; the machine's time stolen by the hypervisor, then left idle, in the ceiling's half and the scenario's; the CPU µs per {unit} of all the process's threads in the scenario's half): {}{}. CPU µs per {unit} by thread: {} (the ceiling, per request: {}). Allocations per {unit} by thread: {} (the ceiling, per request: {}).",
            in_order.join(", "),
            if stolen.is_empty() {
                String::new()
            } else {
                format!(
                    "; run again for steal over {:.0}%: {}",
                    100.0 * max_steal,
                    stolen.join(", ")
                )
            },
            per_scan.join(", "),
            base_per_request.join(", "),
            allocations.join(", "),
            base_allocations.join(", "),
        );
        match r.shortener {
            Some(batches) => detail.push_str(&format!(
                " Hits written to SQLite: {:.0} of {:.0} answered ({batches} batches, one transaction each, {:.0} hits each; counts only, no scan stored).",
                r.recorded,
                r.redirects,
                r.recorded / batches.max(1) as f64,
            )),
            None => detail.push_str(&format!(
                " Recorder: {:.0} events per CPU second ({:.0}% of its commits' wall-clock time on the CPU; HTTP workers waited for room in its queue {:.2} times per 1,000 scans), {:.0} events per batch; {:.0} bytes per event (segment values).",
                r.recorded / r.recorder_cpu_secs.max(1e-9),
                100.0 * r.recorder_cpu_secs / r.recorder_busy_secs.max(1e-9),
                1000.0 * r.backpressure_waits / r.recorded.max(1.0),
                r.recorded / r.recorder_batches.max(1.0),
                r.event_bytes / r.recorded.max(1.0),
            )),
        }
        if r.log_syncs > 0.0 {
            detail.push_str(&format!(
                " Scan log: {:.0} appends, each fdatasynced, {:.0} µs each on average, {:.1} scans each.",
                r.log_syncs,
                1e6 * r.log_sync_secs / r.log_syncs,
                r.recorded / r.log_syncs,
            ));
        }
        detail.push_str(&format!(
            " The machine (all cores) in that round: idle {:.0}%, softirq {:.0}% in the ceiling's half; idle {:.0}%, softirq {:.0}% in the scenario's.",
            100.0 * r.base_machine.idle,
            100.0 * r.base_machine.softirq,
            100.0 * r.load_machine.idle,
            100.0 * r.load_machine.softirq,
        ));
        if hook {
            detail.push_str(&format!(
                " Webhook messages received: {} during the run, {} in all, of {:.0} scans.",
                r.delivered_during, r.delivered, r.recorded
            ));
            let messages = r.drained.max(1) as f64;
            let per_message = per_unit(&r.drain_cpu, 6, messages * 1000.0);
            let all: u64 = r.drain_cpu.iter().map(|(_, ns)| ns).sum();
            detail.push_str(&format!(
                " After the load, {} messages delivered: CPU µs per message by thread: {} ({:.1} in all).",
                r.drained,
                per_message.join(", "),
                all as f64 / 1000.0 / messages
            ));
        }
        details.push(detail);
    }
    println!(
        "| scenario | req/s | p50 ms | p99 ms | ceiling req/s (same round) | ratio | ratios of all rounds | every answered scan stored |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    // Each scanhop scenario against the shortener of the same run, when both
    // ran: their median ratios to the ceiling (each round's ratio is taken
    // against the ceiling measured just before it, so the machine's drift
    // between scenarios cancels out), then their median req/s.
    if let Some(&(_, reference, reference_rps, _)) =
        medians.iter().find(|(.., shortener)| *shortener)
    {
        let against: Vec<String> = medians
            .iter()
            .filter(|(.., shortener)| !shortener)
            .map(|(name, ratio, rps, _)| {
                format!(
                    "{name} {:.2}× ({ratio:.2} against {reference:.2}; {:.2}× in median req/s, {rps:.0} against {reference_rps:.0})",
                    ratio / reference,
                    rps / reference_rps,
                )
            })
            .collect();
        if !against.is_empty() {
            println!(
                "\nAgainst the SQLite shortener of the same run (each scenario's median ratio to the ceiling over the shortener's): {}.",
                against.join("; ")
            );
        }
    }
    println!();
    for d in details {
        println!("{d}");
    }
    let rt = actix_web::rt::System::new();
    rt.block_on(ceiling.stop(true));
}
