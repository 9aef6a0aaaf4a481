//! The redirect load client of the benchmarks: keep-alive HTTP/1.1
//! connections on one client thread (a current-thread tokio runtime), each
//! sending its requests back to back and timing every answer. One request
//! in `miss_every()` carries a user agent never seen before, so caches keyed by
//! user agent see a realistic share of misses.
#![allow(dead_code)] // each bench uses its own part of the support modules

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const CONNECTIONS: usize = 64;
/// One request in this many carries a never-seen user agent: 10, or
/// `LOAD_NEW_EVERY` (1: every scan is a device never seen, as in a campaign
/// where each scan is another person).
pub fn miss_every() -> u64 {
    std::env::var("LOAD_NEW_EVERY")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(10)
}

/// `LOAD_PEOPLE=1`: every scan comes from a person never seen before (a
/// client network and language never seen together, `person`), with its
/// connection's browser user agent, as when a printed code is scanned by a
/// crowd. (`LOAD_NEW_EVERY` makes new
/// devices by new user agents instead, which also defeats the caches keyed by
/// user agent.)
pub fn people() -> bool {
    std::env::var("LOAD_PEOPLE").is_ok_and(|v| v == "1")
}

/// Accept-Language values of the new people: a device's fingerprint keys on
/// its user agent, language and /24 network, and the bench's GeoIP
/// databases hold 120,000 networks, so the language tells apart people of
/// one network.
pub const PEOPLE_LANGUAGES: [&str; 32] = [
    "de-AT,de;q=0.9",
    "en-US,en;q=0.9",
    "en-GB,en;q=0.9",
    "fr-FR,fr;q=0.9",
    "es-ES,es;q=0.9",
    "it-IT,it;q=0.9",
    "nl-NL,nl;q=0.9",
    "pt-BR,pt;q=0.9",
    "pl-PL,pl;q=0.9",
    "sv-SE,sv;q=0.9",
    "da-DK,da;q=0.9",
    "fi-FI,fi;q=0.9",
    "nb-NO,nb;q=0.9",
    "cs-CZ,cs;q=0.9",
    "hu-HU,hu;q=0.9",
    "ro-RO,ro;q=0.9",
    "el-GR,el;q=0.9",
    "tr-TR,tr;q=0.9",
    "ru-RU,ru;q=0.9",
    "uk-UA,uk;q=0.9",
    "ja-JP,ja;q=0.9",
    "ko-KR,ko;q=0.9",
    "zh-CN,zh;q=0.9",
    "zh-TW,zh;q=0.9",
    "ar-SA,ar;q=0.9",
    "he-IL,he;q=0.9",
    "hi-IN,hi;q=0.9",
    "th-TH,th;q=0.9",
    "vi-VN,vi;q=0.9",
    "id-ID,id;q=0.9",
    "de-CH,de;q=0.9",
    "fr-CA,fr;q=0.9",
];

/// The client address and language of the `n`-th new person: an address
/// inside the bench's GeoIP networks (120,000 networks of 256 addresses from
/// `1.0.0.0`: see `support/geo.rs`) and one of `PEOPLE_LANGUAGES`, no pair
/// repeated for 3.84 million scans.
pub fn person(n: u64) -> (std::net::Ipv4Addr, &'static str) {
    const NETWORKS: u64 = 120_000;
    let network = n % NETWORKS;
    let round = n / NETWORKS;
    let host = 1 + round % 254;
    let address = std::net::Ipv4Addr::from(((1u64 << 24) + (network << 8) + host) as u32);
    (address, PEOPLE_LANGUAGES[(round % 32) as usize])
}

/// Numbers the new people of a run across its connections.
static PEOPLE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// `head` with the value of its header `field` (as `"Name: "`) replaced.
fn with_header(head: &str, field: &str, value: &str) -> String {
    let Some(at) = head.find(field) else {
        return head.to_owned();
    };
    let start = at + field.len();
    let end = head[start..].find("\r\n").map_or(head.len(), |e| start + e);
    format!("{}{value}{}", &head[..start], &head[end..])
}

pub struct Outcome {
    /// Answers with the expected status after the warm-up.
    pub requests: u64,
    pub errors: u64,
    /// Measured time (after the warm-up).
    pub secs: f64,
    /// Sorted.
    pub latencies_us: Vec<u32>,
    /// Percentiles (fraction, milliseconds) reported by an outside client
    /// that keeps no latencies of its own (wrk).
    pub quantiles_ms: Vec<(f64, f64)>,
}

impl Outcome {
    /// Nothing counted yet, over `secs`.
    pub fn empty(secs: f64) -> Outcome {
        Outcome {
            requests: 0,
            errors: 0,
            secs,
            latencies_us: Vec::new(),
            quantiles_ms: Vec::new(),
        }
    }

    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.secs
    }
    /// Milliseconds.
    pub fn percentile(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return self
                .quantiles_ms
                .iter()
                .find(|(q, _)| (q - p).abs() < 1e-9)
                .map_or(f64::NAN, |(_, ms)| *ms);
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

/// When a run ends: at `deadline`, or earlier once `stop` is set.
#[derive(Clone)]
struct Until {
    deadline: Instant,
    stop: Option<Arc<AtomicBool>>,
}

impl Until {
    fn reached(&self) -> bool {
        Instant::now() >= self.deadline
            || self
                .stop
                .as_ref()
                .is_some_and(|s| s.load(Ordering::Relaxed))
    }
}

/// One keep-alive connection sending its request heads in turn until `until`.
/// Each head ends with the user agent, so a miss can extend it.
async fn connection(
    addr: SocketAddr,
    heads: Vec<String>,
    expect: u16,
    warmup_until: Instant,
    until: Until,
) -> (u64, u64, Vec<u32>) {
    let (mut ok, mut errors, mut lat) = (0u64, 0u64, Vec::with_capacity(200_000));
    let mut buf = Vec::with_capacity(8192);
    let mut stream = None;
    let requests: Vec<Vec<u8>> = heads
        .iter()
        .map(|h| format!("{h}\r\n\r\n").into_bytes())
        .collect();
    let mut n: u64 = 0;
    let miss_every = miss_every();
    let people = people();
    while !until.reached() {
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
        let which = (n as usize) % heads.len();
        let started = Instant::now();
        let sent = if people {
            let (client, language) = person(PEOPLE.fetch_add(1, Ordering::Relaxed));
            let head = with_header(&heads[which], "X-Forwarded-For: ", &client.to_string());
            let fresh = format!(
                "{}\r\n\r\n",
                with_header(&head, "Accept-Language: ", language)
            );
            s.write_all(fresh.as_bytes()).await
        } else if n.is_multiple_of(miss_every) {
            let fresh = format!("{} Build/{n}-{:p}\r\n\r\n", heads[which], &buf);
            s.write_all(fresh.as_bytes()).await
        } else {
            s.write_all(&requests[which]).await
        };
        let result = match sent {
            Ok(()) => read_response(s, &mut buf).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(status) if status == expect => {
                if started >= warmup_until {
                    ok += 1;
                    lat.push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
                }
            }
            other => {
                // The first few errors of a run are shown: a status or an I/O error.
                if errors < 2 {
                    match &other {
                        Ok(status) => {
                            eprintln!("  load client: answer {status} (expected {expect})")
                        }
                        Err(e) => eprintln!("  load client: {e}"),
                    }
                }
                errors += 1;
                stream = None;
            }
        }
    }
    (ok, errors, lat)
}

/// Real browser user agents (no bots) from the test corpus.
pub fn browser_user_agents() -> Vec<String> {
    include_str!("../../tests/data/user_agents.tsv")
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

/// A redirect request head as a phone sends it; the user agent goes last.
pub fn redirect_head(path: &str, client: impl std::fmt::Display, user_agent: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept-Language: de-AT,de;q=0.9\r\nX-Forwarded-For: {client}\r\nUser-Agent: {user_agent}"
    )
}

/// Drives `addr` from a thread of its own, one connection per element of
/// `heads` (the request heads it sends in turn), for `warmup + secs`, or
/// until `stop` is set after the warm-up. Counts answers with status
/// `expect`; anything else is an error and reconnects.
pub fn drive(
    addr: SocketAddr,
    heads: Vec<Vec<String>>,
    expect: u16,
    warmup: Duration,
    secs: f64,
    stop: Option<Arc<AtomicBool>>,
) -> Outcome {
    on_thread("load client", async move {
        let warmup_until = Instant::now() + warmup;
        let until = Until {
            deadline: warmup_until + Duration::from_secs_f64(secs),
            stop,
        };
        let tasks: Vec<_> = heads
            .into_iter()
            .map(|h| tokio::spawn(connection(addr, h, expect, warmup_until, until.clone())))
            .collect();
        let mut out = Outcome::empty(secs);
        for t in tasks {
            let (ok, errors, lat) = t.await.expect("task");
            out.requests += ok;
            out.errors += errors;
            out.latencies_us.extend(lat);
        }
        out.secs = warmup_until.elapsed().as_secs_f64();
        out.latencies_us.sort_unstable();
        out
    })
    .join()
    .expect("load thread")
}

/// Runs `work` on a new thread named `name` (so per-thread CPU figures can
/// tell it apart) with a current-thread tokio runtime of its own.
pub fn on_thread<T: Send + 'static>(
    name: &str,
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(work)
        })
        .expect("spawn a thread")
}
