//! The same load from an outside client: `wrk` (Debian's package), one
//! thread, 64 connections, with a Lua script that sends the load client's
//! requests in turn (each its own `X-Forwarded-For` and browser user agent,
//! one in ten with a user agent never seen before; with `LOAD_PEOPLE=1`,
//! every one a person never seen: `load::person`). wrk costs more CPU per
//! request than the bench's own client, so the same server reaches a higher
//! ratio under it: both are reported.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::load::{CONNECTIONS, Outcome, PEOPLE_LANGUAGES, miss_every, people};

/// Whether `wrk` can be run.
pub fn available() -> bool {
    Command::new("wrk").arg("--version").output().is_ok()
}

/// Writes the Lua script that sends `heads` ((client address, user agent))
/// in turn to `path`.
pub fn write_script(path: &Path, heads: &[(String, String)]) {
    let mut lua = String::from("local heads = {\n");
    for (client, ua) in heads {
        lua.push_str(&format!("  {{ [==[{client}]==], [==[{ua}]==] }},\n"));
    }
    let miss_every = miss_every();
    // `LOAD_PEOPLE=1`: a new person per scan, as `load::person`.
    let people = if people() { "true" } else { "false" };
    let languages: Vec<String> = PEOPLE_LANGUAGES
        .iter()
        .map(|l| format!("\"{l}\""))
        .collect();
    let languages = languages.join(", ");
    lua.push_str(&format!(
        r#"}}
local reqs = {{}}
local n = 0
local function head(h, ua, language)
  return wrk.format("GET", wrk.path, {{
    ["Host"] = "127.0.0.1",
    ["Accept-Language"] = language or "de-AT,de;q=0.9",
    ["X-Forwarded-For"] = h[1],
    ["User-Agent"] = ua,
  }})
end
function init(args)
  for i, h in ipairs(heads) do reqs[i] = head(h, h[2]) end
end
local people = {people}
local languages = {{ {languages} }}
local function person(k)
  local round = math.floor(k / 120000)
  local v = 16777216 + (k % 120000) * 256 + 1 + round % 254
  local address = math.floor(v / 16777216) .. "." .. math.floor(v / 65536) % 256 .. "."
    .. math.floor(v / 256) % 256 .. "." .. v % 256
  return address, languages[round % 32 + 1]
end
function request()
  n = n + 1
  local i = n % #reqs + 1
  if people then
    local address, language = person(n)
    return head({{ address }}, heads[i][2], language)
  end
  if n % {miss_every} == 0 then
    return head(heads[i], heads[i][2] .. " Build/" .. n)
  end
  return reqs[i]
end
"#
    ));
    std::fs::write(path, lua).expect("write the wrk script");
}

fn run(addr: SocketAddr, path: &str, script: &Path, secs: f64) -> String {
    let out = Command::new("wrk")
        .args(["-t1", &format!("-c{CONNECTIONS}"), "--latency"])
        .arg(format!("-d{}s", secs.round().max(1.0) as u64))
        .arg("-s")
        .arg(script)
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("run wrk");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Milliseconds in a wrk duration ("512.00us", "5.24ms", "1.02s").
fn millis(text: &str) -> Option<f64> {
    let (num, unit) = text.split_at(text.find(|c: char| c.is_ascii_alphabetic())?);
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => v / 1000.0,
        "ms" => v,
        "s" => v * 1000.0,
        "m" => v * 60_000.0,
        _ => return None,
    })
}

/// Parses wrk's report: requests, errors and latency percentiles.
fn parse(report: &str, secs: f64) -> Outcome {
    let mut out = Outcome::empty(secs);
    let mut rps = 0.0;
    for line in report.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => rps = v.parse().unwrap_or(0.0),
            ["Non-2xx", "or", "3xx", "responses:", v] => out.errors += v.parse().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                out.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>()
            }
            [q, v] if q.ends_with('%') => {
                if let (Ok(q), Some(ms)) = (q.trim_end_matches('%').parse::<f64>(), millis(v)) {
                    out.quantiles_ms.push((q / 100.0, ms));
                }
            }
            _ => {}
        }
    }
    out.requests = (rps * secs).round() as u64;
    out
}

/// Drives `addr` with wrk for `warmup` (discarded), then `secs`.
pub fn drive(addr: SocketAddr, path: &str, script: &Path, warmup: Duration, secs: f64) -> Outcome {
    run(addr, path, script, warmup.as_secs_f64());
    parse(&run(addr, path, script, secs), secs)
}
