//! The workers behind the Recorder keep durable positions, and every worker
//! drains in pipeline order on SIGTERM. A test consumer (`Tally`, defined
//! here, plugged in through the same seam the built-in consumers use) keeps
//! the ID of every event it folded: counting through its position, it must
//! see each committed event exactly once, however many wake-ups it misses and
//! however the process dies.

use std::cell::Cell;
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use scanhop::actors::{Consumer, ConsumerWorker};
use scanhop::config::ConsumerSettings;
use scanhop::domain::ScanEvent;
use scanhop::ids::EventId;
use scanhop::store::Store;
use serde_json::json;

use crate::helpers::{BinaryServer, IPHONE_UA, metric, spawn_app_with_consumers};
use crate::powercut::PowerCutFs;

/// Remembers every event ID it folds; slow on purpose, so wake-ups pile up
/// and a mailbox of one drops most of them.
struct Tally;

impl Consumer for Tally {
    const NAME: &'static str = "tally";
    type State = Vec<EventId>;

    fn apply(&mut self, seen: &mut Vec<EventId>, events: &[ScanEvent]) {
        std::thread::sleep(Duration::from_millis(2));
        seen.extend(events.iter().map(|e| e.id));
    }
}

/// A mailbox of one (most wake-ups are dropped and read back from the
/// store) and checkpoints on the 100 ms timer only: pages of 1,024 put the
/// early store of unsaved events (8 pages' worth) beyond a test's burst, so
/// a kill lands between commit and counting as the crash test needs.
fn tally_settings() -> ConsumerSettings {
    ConsumerSettings {
        mailbox_capacity: 1,
        read_batch_size: 1024,
        checkpoint_interval_ms: 100,
    }
}

/// The stored tally, checked against the stored events: every event once, in order.
fn assert_tally_matches_the_store(store: &Store) -> usize {
    let record = store
        .consumer("tally")
        .unwrap()
        .expect("the tally checkpointed");
    let (seen, _): (Vec<EventId>, usize) =
        bincode::serde::decode_from_slice(&record.state, bincode::config::standard()).unwrap();
    let stored: Vec<EventId> = store
        .events_after(None, usize::MAX)
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(seen.len(), stored.len(), "every stored event counted once");
    assert_eq!(seen, stored, "the same events, in commit order");
    assert_eq!(record.events, stored.len() as u64);
    assert_eq!(record.position, stored.last().copied());
    stored.len()
}

#[actix_rt::test]
async fn a_consumer_with_a_mailbox_of_one_counts_every_scan_once_under_a_burst() {
    // Batches of 4: the burst commits one after another (a full batch is
    // committed at once), so wake-ups come faster than the tally folds them.
    let app = spawn_app_with_consumers(
        &[("SCANHOP__RECORDER__BATCH_SIZE", "4")],
        vec![ConsumerWorker::starter(Tally, tally_settings())],
    )
    .await;
    app.create_link(json!({"destination": "https://example.com/", "slug": "burst"}))
        .await;
    let scans = (0..16).map(|_| async {
        for _ in 0..40 {
            assert_eq!(app.scan("burst").await.status.as_u16(), 302);
        }
    });
    futures_util::future::join_all(scans).await;
    let lag = "scanhop_consumer_lag_events{consumer=\"tally\"}";
    app.eventually("the tally to catch up", || async {
        let text = app
            .raw(app.client.get(app.url("/metrics")), "")
            .await
            .text();
        metric(&text, lag) == Some(0)
            && metric(&text, "scanhop_consumer_events_total{consumer=\"tally\"}") == Some(640)
    })
    .await;
    let text = app
        .raw(app.client.get(app.url("/metrics")), "")
        .await
        .text();
    assert!(
        metric::<u64>(&text, "scanhop_downstream_full_total").unwrap() > 0,
        "the burst overflowed the mailbox of one, so some wake-ups were dropped"
    );
    app.eventually("the tally to checkpoint", || async {
        app.store
            .consumer("tally")
            .unwrap()
            .is_some_and(|r| r.events == 640)
    })
    .await;
    assert_eq!(assert_tally_matches_the_store(&app.store), 640);
}

/// Not a test of its own: the server process of the tests below, which run
/// this test binary again with `SCANHOP_TEST_TALLY_SERVER=1` and kill it. It
/// serves like `scanhop serve`, with the tally plugged in.
#[actix_rt::test]
#[ignore = "the server process of the worker crash tests, started by them"]
async fn tally_server_process() {
    if std::env::var_os("SCANHOP_TEST_TALLY_SERVER").is_none() {
        return;
    }
    let settings = scanhop::config::Settings::load(None).expect("settings");
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .try_init();
    let app = scanhop::app::Application::build_with(
        settings,
        vec![ConsumerWorker::starter(Tally, tally_settings())],
    )
    .expect("app builds");
    if let Some(token) = app.first_token() {
        println!("token {token}");
    }
    println!("scanhop listening on http://127.0.0.1:{}", app.port());
    app.run_until(scanhop::app::termination_signal())
        .await
        .expect("serves");
}

fn start_tally_server(
    data: &std::path::Path,
    env: &[(&str, &str)],
    log: &std::fs::File,
) -> BinaryServer {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args([
        "--exact",
        "workers::tally_server_process",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("SCANHOP_TEST_TALLY_SERVER", "1");
    BinaryServer::launch(cmd, data, env, Stdio::from(log.try_clone().unwrap()))
}

fn client() -> awc::Client {
    awc::Client::builder()
        .disable_redirects()
        .timeout(Duration::from_secs(20))
        .finish()
}

async fn get_text(url: String) -> (u16, String) {
    match client().get(url).send().await {
        Ok(mut r) => {
            let body = r.body().await.map(|b| b.to_vec()).unwrap_or_default();
            (
                r.status().as_u16(),
                String::from_utf8_lossy(&body).into_owned(),
            )
        }
        Err(_) => (0, String::new()),
    }
}

/// Scans `/burst` from 16 connections until `stop` says so; answers the
/// redirects received.
fn burst(
    base: &str,
    stop: Rc<Cell<bool>>,
    answered: Rc<Cell<u64>>,
) -> Vec<actix_rt::task::JoinHandle<()>> {
    (0..16)
        .map(|_| {
            let (url, stop, answered) = (format!("{base}/burst"), stop.clone(), answered.clone());
            actix_rt::spawn(async move {
                let c = client();
                while !stop.get() {
                    match c
                        .get(&url)
                        .insert_header(("User-Agent", IPHONE_UA))
                        .send()
                        .await
                    {
                        Ok(r) if r.status().as_u16() == 302 => answered.set(answered.get() + 1),
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            })
        })
        .collect()
}

/// Waits until `answered` reaches `n` (at most 30 s: the machine may be busy).
async fn until_answered(answered: &Cell<u64>, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while answered.get() < n && Instant::now() < deadline {
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn create_burst_link(base: &str, token: &str) {
    let r = client()
        .post(format!("{base}/v1/links"))
        .insert_header(("Authorization", format!("Bearer {token}")))
        .send_json(&json!({"destination": "https://example.com/", "slug": "burst"}))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
}

async fn wait_for_lag_zero(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, text) = get_text(format!("{base}/metrics")).await;
        if metric(&text, "scanhop_consumer_lag_events{consumer=\"tally\"}") == Some(0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the tally never caught up:\n{text}"
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for the process to exit, off the test's thread.
async fn exit_status(mut server: BinaryServer) -> std::process::ExitStatus {
    actix_web::rt::task::spawn_blocking(move || server.wait())
        .await
        .unwrap()
}

/// Where the crash test keeps its data: on the power-cut filesystem when it
/// can be mounted (so the crash also loses every write not fsynced), else in
/// a plain directory (a kill -9 only).
fn crash_disk(test: &str) -> (Option<PowerCutFs>, tempfile::TempDir) {
    let fs = PowerCutFs::mount_or_skip(test);
    (fs, tempfile::tempdir().unwrap())
}

#[actix_rt::test]
async fn after_kill_9_between_commit_and_counting_the_consumer_resumes_from_its_position() {
    let (mut disk, plain) = crash_disk(
        "workers::after_kill_9_between_commit_and_counting_the_consumer_resumes_from_its_position",
    );
    let data = disk
        .as_ref()
        .map_or(plain.path(), |d| d.path())
        .join("data");
    let log = tempfile::tempfile().unwrap();
    // The kill must land between a commit and its counting. It usually does
    // (the tally checkpoints every 100 ms while the Recorder commits every
    // 10 ms), but a kill, or the power cut's last fsync, right after a
    // checkpoint that caught up leaves nothing behind: then the scenario is
    // played again on the same store, up to five times.
    for attempt in 1.. {
        let server = start_tally_server(&data, &[], &log);
        if attempt == 1 {
            let token = server.token.clone().expect("first start prints a token");
            create_burst_link(&server.base, &token).await;
        }
        let (stop, answered): (Rc<Cell<bool>>, Rc<Cell<u64>>) = Default::default();
        let tasks = burst(&server.base, Rc::clone(&stop), Rc::clone(&answered));
        until_answered(&answered, 1000).await;
        server.signal(libc::SIGKILL);
        let _ = exit_status(server).await;
        stop.set(true);
        futures_util::future::join_all(tasks).await;
        assert!(
            answered.get() >= 1000,
            "the burst got going ({} scans)",
            answered.get()
        );
        if let Some(disk) = disk.as_mut() {
            // The machine goes down with the process: what was not fsynced is gone.
            disk.power_cut_and_remount();
        }
        let store = Store::open(&data, 16).unwrap();
        let behind = store
            .count_events_after(store.consumer("tally").unwrap().and_then(|r| r.position))
            .unwrap();
        if behind > 0 {
            break;
        }
        assert!(
            attempt < 5,
            "in five tries the kill never landed between commit and counting"
        );
    }
    let restarted = start_tally_server(&data, &[], &log);
    wait_for_lag_zero(&restarted.base).await;
    restarted.signal(libc::SIGTERM);
    assert!(exit_status(restarted).await.success());
    let store = Store::open(&data, 16).unwrap();
    assert!(assert_tally_matches_the_store(&store) > 100);
}

/// The `drained` log lines, as (worker, stage) in the order they were written.
fn drain_order(log: &mut std::fs::File) -> Vec<(String, String)> {
    use std::io::{Read, Seek};
    let mut text = String::new();
    log.rewind().unwrap();
    log.read_to_string(&mut text).unwrap();
    let field = |line: &str, name: &str| -> String {
        let rest = line.split(&format!(" {name}=")).nth(1).unwrap_or_default();
        rest.split_whitespace()
            .next()
            .unwrap_or_default()
            .trim_matches('"')
            .to_owned()
    };
    text.lines()
        .filter(|l| l.contains(" drained "))
        .map(|l| (field(l, "worker"), field(l, "stage")))
        .collect()
}

#[actix_rt::test]
async fn sigterm_during_a_burst_turns_readyz_503_then_drains_every_worker_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut log = tempfile::tempfile().unwrap();
    let env = [("SCANHOP__SERVER__DRAIN_GRACE_MS", "1500")];
    let server = start_tally_server(&data, &env, &log);
    let token = server.token.clone().expect("first start prints a token");
    create_burst_link(&server.base, &token).await;
    assert_eq!(get_text(format!("{}/readyz", server.base)).await.0, 200);
    let (stop, answered): (Rc<Cell<bool>>, Rc<Cell<u64>>) = Default::default();
    let tasks = burst(&server.base, Rc::clone(&stop), Rc::clone(&answered));
    until_answered(&answered, 300).await;
    server.signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let (status, body) = get_text(format!("{}/readyz", server.base)).await;
        if status == 503 {
            assert!(body.contains("draining"), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never turned 503 (last {status})"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let status = exit_status(server).await;
    stop.set(true);
    futures_util::future::join_all(tasks).await;
    assert!(status.success(), "SIGTERM exits 0, got {status:?}");
    let order = drain_order(&mut log);
    let stages: Vec<&str> = order.iter().map(|(_, s)| s.as_str()).collect();
    let rank = |s: &str| {
        ["Intake", "Consumers", "Delivery", "Maintenance", "Storage"]
            .iter()
            .position(|x| *x == s)
            .unwrap_or_else(|| panic!("unknown stage {s}"))
    };
    assert!(
        stages.windows(2).all(|w| rank(w[0]) <= rank(w[1])),
        "stages drain in pipeline order: {order:?}"
    );
    let workers: Vec<&str> = order.iter().map(|(w, _)| w.as_str()).collect();
    for w in [
        "resolver",
        "recorder",
        "tally",
        "webhooks",
        "webhook_delivery",
        "salts",
        "rate_limit_pruner",
        "flusher",
    ] {
        assert!(workers.contains(&w), "{w} drained: {order:?}");
    }
    let store = Store::open(&data, 16).unwrap();
    assert_tally_matches_the_store(&store);
}

/// A server embedded in a process that goes on (the benches, an embedder)
/// leaves nothing running once `run_until` returns: its workers' threads
/// stop, without stopping the actix system around it, and its store can be
/// opened again. Run alone in a process of its own (the test binary again),
/// so no other test's threads are counted.
#[test]
fn a_stopped_server_keeps_no_worker_thread_or_store_open() {
    let run = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "workers::stopped_server_process",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SCANHOP_TEST_STOPPED_SERVER", "1")
        .output()
        .expect("runs");
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
#[ignore = "run alone by a_stopped_server_keeps_no_worker_thread_or_store_open"]
fn stopped_server_process() {
    if std::env::var_os("SCANHOP_TEST_STOPPED_SERVER").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let settings = crate::helpers::test_settings(&dir, &[]);
    let path = settings.storage.path.clone();
    let before = thread_names();
    let (served_tx, served_rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let app = scanhop::app::Application::build(settings).expect("app builds");
            let url = format!("http://127.0.0.1:{}/no-such-link", app.port());
            let stop = async move {
                // One request served before stopping.
                let (status, _) = get_text(url).await;
                served_tx.send(status).expect("the test waits");
            };
            app.run_until(stop).await.expect("serves");
        });
    });
    assert_eq!(served_rx.recv().unwrap(), 404);
    server.join().unwrap();
    // sled's I/O threads are a pool of the process, shared by every store.
    // A stopped thread ends on its own, soon after.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<String> = thread_names()
            .into_iter()
            .filter(|n| !before.contains(n) && !n.starts_with("sled-io"))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "threads left running: {left:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Store::open(&path, 8).expect("the stopped server holds no store handle");
}

/// The names of this process's threads.
fn thread_names() -> Vec<String> {
    let tasks = std::fs::read_dir("/proc/self/task").expect("Linux /proc");
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect()
}
