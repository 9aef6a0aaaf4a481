//! Load benchmark of the redirect path against a ceiling measured in the same
//! run: a bare actix-web route answering the same 302 with no work. Both are
//! driven alternately by the same client (64 keep-alive connections, one
//! thread) for a fixed time each. Scenarios: batched, strict, and batched with
//! GeoIP databases of 120k networks each.
//!
//! Run: `cargo bench --bench redirect_load` (env `LOAD_SECS`, default 8;
//! `LOAD_ROUNDS`, default 3;
//! `LOAD_ONLY=strict` for the scenarios whose name contains `strict`).

#[path = "support/geo.rs"]
mod geo_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use scanhop::app::Application;
use scanhop::config::Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONNECTIONS: usize = 64;
/// One request in this many carries a never-seen user agent.
const MISS_EVERY: u64 = 10;
const DESTINATION: &str = "https://example.com/menu";

struct Outcome {
    requests: u64,
    errors: u64,
    secs: f64,
    latencies_us: Vec<u32>,
}

impl Outcome {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.secs
    }
    fn percentile(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.latencies_us[i]) / 1000.0
    }
}

/// Reads one HTTP/1.1 response (headers, then Content-Length bytes).
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).map_err(std::io::Error::other)?;
            let status: u16 = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.split_once(':')
                        .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                        .map(|(_, v)| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            let total = end + 4 + len;
            while buf.len() < total {
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..total);
            return Ok(status);
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// One keep-alive connection sending requests until `deadline`. Every
/// `MISS_EVERY`-th request carries a user agent never seen before, so caches
/// keyed by user agent see a realistic share of misses.
async fn connection(
    addr: SocketAddr,
    head: String,
    warmup_until: Instant,
    deadline: Instant,
) -> (u64, u64, Vec<u32>) {
    let (mut ok, mut errors, mut lat) = (0u64, 0u64, Vec::with_capacity(200_000));
    let mut buf = Vec::with_capacity(8192);
    let mut stream = None;
    let request = format!("{head}\r\n\r\n").into_bytes();
    let mut n: u64 = 0;
    while Instant::now() < deadline {
        if stream.is_none() {
            stream = TcpStream::connect(addr).await.ok();
            buf.clear();
            if stream.is_none() {
                errors += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        }
        let Some(s) = stream.as_mut() else { continue };
        n += 1;
        let started = Instant::now();
        let sent = if n.is_multiple_of(MISS_EVERY) {
            let fresh = format!("{head} Build/{n}-{:p}\r\n\r\n", &buf);
            s.write_all(fresh.as_bytes()).await
        } else {
            s.write_all(&request).await
        };
        let result = match sent {
            Ok(()) => read_response(s, &mut buf).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(302) if started >= warmup_until => {
                ok += 1;
                lat.push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
            Ok(302) => {}
            Ok(_) | Err(_) => {
                errors += 1;
                stream = None;
            }
        }
    }
    (ok, errors, lat)
}

/// Real browser user agents (no bots) from the test corpus.
fn browser_user_agents() -> Vec<String> {
    include_str!("../tests/data/user_agents.tsv")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut parts = l.splitn(3, '\t');
            let kind = parts.next()?;
            let ua = parts.nth(1)?;
            matches!(kind, "mobile" | "tablet" | "desktop").then(|| ua.to_owned())
        })
        .collect()
}

/// Drives `addr` from a thread of its own for `warmup + secs`.
fn drive(addr: SocketAddr, path: &str, secs: u64) -> Outcome {
    let path = path.to_owned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let warmup_until = Instant::now() + Duration::from_secs(1);
            let deadline = warmup_until + Duration::from_secs(secs);
            let uas = browser_user_agents();
            let tasks: Vec<_> = (0..CONNECTIONS)
                .map(|i| {
                    let client = geo_support::address(i as u32 * 37 % geo_support::NETWORKS);
                    let ua = &uas[i * 7 % uas.len()];
                    // The user agent goes last, so a miss can extend it.
                    let head = format!(
                        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept-Language: de-AT,de;q=0.9\r\nX-Forwarded-For: {client}\r\nUser-Agent: {ua}"
                    );
                    tokio::spawn(connection(addr, head, warmup_until, deadline))
                })
                .collect();
            let mut out = Outcome { requests: 0, errors: 0, secs: secs as f64, latencies_us: Vec::new() };
            for t in tasks {
                let (ok, errors, lat) = t.await.expect("task");
                out.requests += ok;
                out.errors += errors;
                out.latencies_us.extend(lat);
            }
            out.latencies_us.sort_unstable();
            out
        })
    })
    .join()
    .expect("load thread")
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

struct Scanhop {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Scanhop {
    fn start(env: Vec<(String, String)>) -> Scanhop {
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
        create_link(addr, &token);
        Scanhop {
            addr,
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

fn create_link(addr: SocketAddr, token: &str) {
    use std::io::{Read, Write};
    let body = format!("{{\"destination\": \"{DESTINATION}\", \"slug\": \"bench\"}}");
    let req = format!(
        "POST /v1/links HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.write_all(req.as_bytes()).expect("write");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
}

fn main() {
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
    let scenarios: Vec<(&str, Vec<(String, String)>)> = vec![
        ("batched", durability("batched")),
        ("strict", durability("strict")),
        (
            "batched + GeoIP (120k networks)",
            [durability("batched"), geo_env].concat(),
        ),
    ];
    // LOAD_ONLY=strict runs just the scenarios whose name contains it.
    let only = std::env::var("LOAD_ONLY").ok();
    let scenarios: Vec<_> = scenarios
        .into_iter()
        .filter(|(name, _)| only.as_deref().is_none_or(|o| name.contains(o)))
        .collect();
    let (ceiling_addr, ceiling) = start_ceiling();
    println!(
        "\n{CONNECTIONS} connections, {secs} s per run after 1 s warm-up, client on one thread, servers with 2 workers\n"
    );
    let rounds: usize = std::env::var("LOAD_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    println!(
        "Each round runs the ceiling, then the scenario; the row is the round with the median ratio of {rounds}.\n"
    );
    println!(
        "| scenario | req/s | p50 ms | p99 ms | ceiling req/s (same round) | ratio | ratios of all rounds |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, env) in scenarios {
        let mut results: Vec<(Outcome, Outcome)> = Vec::new();
        for _ in 0..rounds {
            let base = drive(ceiling_addr, "/bench", secs);
            let server = Scanhop::start(env.clone());
            let run = drive(server.addr, "/bench", secs);
            drop(server);
            if run.errors > 0 || base.errors > 0 {
                eprintln!(
                    "  ({name}: errors: scanhop {}, ceiling {})",
                    run.errors, base.errors
                );
            }
            results.push((run, base));
        }
        results.sort_by(|a, b| (a.0.rps() / a.1.rps()).total_cmp(&(b.0.rps() / b.1.rps())));
        let all: Vec<String> = results
            .iter()
            .map(|(r, b)| format!("{:.2}", r.rps() / b.rps()))
            .collect();
        let (run, base) = &results[results.len() / 2];
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {:.0} (p50 {:.2}, p99 {:.2}) | {:.2} | {} |",
            run.rps(),
            run.percentile(0.5),
            run.percentile(0.99),
            base.rps(),
            base.percentile(0.5),
            base.percentile(0.99),
            run.rps() / base.rps(),
            all.join(", ")
        );
    }
    let rt = actix_web::rt::System::new();
    rt.block_on(ceiling.stop(true));
}
