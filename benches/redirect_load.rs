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

#[path = "support/load.rs"]
mod load;

use std::net::SocketAddr;
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use load::{CONNECTIONS, Outcome};
use scanhop::app::Application;
use scanhop::config::Settings;

const DESTINATION: &str = "https://example.com/menu";

/// Drives `addr` with 64 connections for `1 s + secs`, each with its own
/// client address in the GeoIP range and a real browser user agent.
fn drive(addr: SocketAddr, path: &str, secs: u64) -> Outcome {
    let uas = load::browser_user_agents();
    let heads = (0..CONNECTIONS)
        .map(|i| {
            let client = geo_support::address(i as u32 * 37 % geo_support::NETWORKS);
            vec![load::redirect_head(path, client, &uas[i * 7 % uas.len()])]
        })
        .collect();
    load::drive(addr, heads, 302, Duration::from_secs(1), secs as f64, None)
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
