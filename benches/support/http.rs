//! A small blocking HTTP/1.1 client for benchmarks: one keep-alive
//! connection, requests one after another, bodies by Content-Length or
//! chunked, handed to a sink as they arrive (so a long stream is never held
//! in memory). Also latency statistics.
#![allow(dead_code)] // each bench uses its own part of the support modules

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

pub struct Conn {
    addr: SocketAddr,
    token: Option<String>,
    reader: BufReader<TcpStream>,
}

pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}, not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

fn connect(addr: SocketAddr) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    BufReader::with_capacity(64 * 1024, stream)
}

impl Conn {
    /// A connection sending `Authorization: Bearer <token>` when given.
    pub fn new(addr: SocketAddr, token: Option<&str>) -> Conn {
        Conn {
            addr,
            token: token.map(str::to_owned),
            reader: connect(addr),
        }
    }

    /// GET `path`; the body whole.
    pub fn get(&mut self, path: &str) -> Reply {
        let mut body = Vec::new();
        let status = self.get_into(path, &mut |b| body.extend_from_slice(b));
        Reply { status, body }
    }

    /// GET `path`, giving the body to `sink` piece by piece; the status.
    /// Reconnects once when the server closed the idle connection.
    pub fn get_into(&mut self, path: &str, sink: &mut dyn FnMut(&[u8])) -> u16 {
        match self.try_get(path, sink) {
            Ok(status) => status,
            Err(_) => {
                self.reader = connect(self.addr);
                self.try_get(path, sink).expect("request")
            }
        }
    }

    fn try_get(&mut self, path: &str, sink: &mut dyn FnMut(&[u8])) -> std::io::Result<u16> {
        let auth = self
            .token
            .as_ref()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n");
        self.reader.get_mut().write_all(request.as_bytes())?;
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let (mut length, mut chunked) = (None, false);
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':') {
                let v = v.trim();
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.parse::<u64>().ok();
                } else if k.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = v.eq_ignore_ascii_case("chunked");
                }
            }
        }
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line)?;
                let size = u64::from_str_radix(line.trim_end().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))?;
                if size == 0 {
                    // Trailers (none expected), then the empty line.
                    loop {
                        line.clear();
                        self.reader.read_line(&mut line)?;
                        if line.trim_end().is_empty() {
                            break;
                        }
                    }
                    break;
                }
                self.copy(size, sink)?;
                line.clear();
                self.reader.read_line(&mut line)?;
            }
        } else {
            self.copy(length.unwrap_or(0), sink)?;
        }
        Ok(status)
    }

    fn copy(&mut self, mut left: u64, sink: &mut dyn FnMut(&[u8])) -> std::io::Result<()> {
        while left > 0 {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let n = buf.len().min(left as usize);
            sink(&buf[..n]);
            self.reader.consume(n);
            left -= n as u64;
        }
        Ok(())
    }

    /// Times `n` GETs of `path` (made by `path_of(i)`) after `warmup`
    /// untimed ones; every answer must be `expect`.
    pub fn time(
        &mut self,
        warmup: usize,
        n: usize,
        expect: u16,
        mut path_of: impl FnMut(usize) -> String,
    ) -> Stats {
        let mut sink = |_: &[u8]| {};
        for i in 0..warmup {
            let path = path_of(i);
            let status = self.get_into(&path, &mut sink);
            assert_eq!(status, expect, "GET {path}");
        }
        let mut times = Vec::with_capacity(n);
        let mut bytes = 0u64;
        for i in 0..n {
            let path = path_of(warmup + i);
            let started = Instant::now();
            let status = self.get_into(&path, &mut |b| bytes += b.len() as u64);
            times.push(started.elapsed());
            assert_eq!(status, expect, "GET {path}");
        }
        Stats::new(times, bytes / n.max(1) as u64)
    }
}

/// Latencies of sequential requests.
pub struct Stats {
    /// Sorted.
    pub times: Vec<Duration>,
    /// Mean body size.
    pub body_bytes: u64,
}

impl Stats {
    pub fn new(mut times: Vec<Duration>, body_bytes: u64) -> Stats {
        times.sort_unstable();
        Stats { times, body_bytes }
    }
    /// Milliseconds at quantile `p` (nearest rank).
    pub fn ms(&self, p: f64) -> f64 {
        if self.times.is_empty() {
            return f64::NAN;
        }
        let i = ((self.times.len() as f64 - 1.0) * p).round() as usize;
        self.times[i].as_secs_f64() * 1000.0
    }
    pub fn max_ms(&self) -> f64 {
        self.times
            .last()
            .map_or(f64::NAN, |t| t.as_secs_f64() * 1000.0)
    }
}
