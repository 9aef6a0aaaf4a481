//! The HTTP side of a delivery attempt: awc with rustls (ring provider),
//! no redirects, the configured timeouts, and a resolver that refuses
//! non-public addresses after DNS, at every connection (awc skips custom
//! resolvers for IP literals, which are checked here before sending).

use std::error::Error as StdError;
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use actix_tls::connect::{Resolve, Resolver};
use awc::error::{ConnectError, SendRequestError};
use awc::http::header;
use futures_util::StreamExt;
use futures_util::future::LocalBoxFuture;

use super::{ErrorClass, Job, Outcome};
use crate::config::WebhookSettings;
use crate::domain::Timestamp;
use crate::domain::webhook::{RESPONSE_BODY_BYTES, is_forbidden_ip, signature_header};

/// `User-Agent` of every delivery.
pub const USER_AGENT: &str = concat!("scanhop-webhooks/", env!("CARGO_PKG_VERSION"));

/// rustls 0.23 needs a process-wide crypto provider before the first client
/// is built; installing it twice is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Every address a name resolved to was refused.
#[derive(Debug)]
pub struct BlockedAddress;

impl fmt::Display for BlockedAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the host resolves only to non-public addresses")
    }
}

impl StdError for BlockedAddress {}

/// Resolves with the system resolver, then drops every non-public address
/// (unless private targets are allowed); nothing left is an error. The
/// connection is made only to the addresses answered here.
struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> LocalBoxFuture<'a, Result<Vec<SocketAddr>, Box<dyn StdError>>> {
        let host = host.to_owned();
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = actix_rt::task::spawn_blocking(move || {
                (host.as_str(), port)
                    .to_socket_addrs()
                    .map(Iterator::collect::<Vec<_>>)
            })
            .await
            .map_err(|e| Box::new(e) as Box<dyn StdError>)??;
            if allow_private {
                return Ok(addrs);
            }
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| !is_forbidden_ip(a.ip()))
                .collect();
            match allowed.is_empty() {
                true => Err(Box::new(BlockedAddress) as Box<dyn StdError>),
                false => Ok(allowed),
            }
        })
    }
}

/// The client of the delivery worker (one per arbiter: it is `!Send`).
pub fn build(settings: &WebhookSettings) -> awc::Client {
    let tcp = actix_tls::connect::Connector::new(Resolver::custom(GuardedResolver {
        allow_private: settings.allow_private_targets,
    }))
    .service();
    let connect = Duration::from_millis(settings.connect_timeout_ms.min(settings.timeout_ms));
    let connector = awc::Connector::new()
        .connector(tcp)
        .timeout(connect)
        .handshake_timeout(connect)
        .limit(settings.max_in_flight);
    awc::Client::builder()
        .connector(connector)
        .disable_redirects()
        .timeout(Duration::from_millis(settings.timeout_ms))
        .finish()
}

/// The host of `url` when it is an IP literal.
fn literal_ip(url: &str) -> Option<IpAddr> {
    match url::Url::parse(url).ok()?.host()? {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        url::Host::Domain(_) => None,
    }
}

fn classify(err: &SendRequestError, https: bool) -> ErrorClass {
    match err {
        SendRequestError::Timeout => ErrorClass::Timeout,
        SendRequestError::Connect(c) => match c {
            ConnectError::Timeout => ErrorClass::Timeout,
            ConnectError::Resolver(e) if e.is::<BlockedAddress>() => ErrorClass::BlockedIp,
            ConnectError::Resolver(_) | ConnectError::NoRecords | ConnectError::Unresolved => {
                ErrorClass::Dns
            }
            ConnectError::Io(io) if https && is_tls(io) => ErrorClass::Tls,
            _ => ErrorClass::Connect,
        },
        SendRequestError::Send(io) if https && is_tls(io) => ErrorClass::Tls,
        _ => ErrorClass::Connect,
    }
}

fn is_tls(io: &std::io::Error) -> bool {
    io.kind() == std::io::ErrorKind::InvalidData
        || io.get_ref().is_some_and(|e| e.is::<rustls::Error>())
}

/// `Retry-After` in seconds (an HTTP date is not read).
fn retry_after_ms(headers: &awc::http::header::HeaderMap) -> Option<u64> {
    let secs: u64 = headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(secs.saturating_mul(1000))
}

/// Makes one attempt: signs the stored body with this attempt's time, posts
/// it, and reads at most 1 KiB of the answer within the attempt's time.
pub async fn attempt(client: &awc::Client, settings: &WebhookSettings, job: &Job) -> Outcome {
    let started_at = Timestamp::now();
    let t0 = Instant::now();
    let signatures = job.keys.len().min(u8::MAX as usize) as u8;
    let failed = |error: ErrorClass, status: Option<u16>, body: Option<String>| Outcome {
        started_at,
        duration_ms: t0.elapsed().as_millis() as u64,
        status,
        body,
        error: Some(error),
        retry_after_ms: None,
        signatures,
    };
    if !settings.allow_private_targets && literal_ip(&job.url).is_some_and(is_forbidden_ip) {
        return failed(ErrorClass::BlockedIp, None, None);
    }
    let id = job.message.to_string();
    let timestamp = started_at.as_millis().div_euclid(1000);
    let signature = signature_header(&job.keys, &id, timestamp, &job.body);
    let request = client
        .post(job.url.as_str())
        .insert_header(("webhook-id", id.as_str()))
        .insert_header(("webhook-timestamp", timestamp.to_string()))
        .insert_header(("webhook-signature", signature))
        .insert_header((header::USER_AGENT, USER_AGENT))
        .insert_header((header::CONTENT_TYPE, "application/json"));
    let https = job.url.starts_with("https:");
    let mut response = match request.send_body(job.body.as_ref().clone()).await {
        Ok(r) => r,
        Err(e) => {
            let class = classify(&e, https);
            tracing::debug!(webhook = %job.hook, message = %id, error = %e, class = class.as_str(), "webhook attempt failed");
            return failed(class, None, None);
        }
    };
    let status = response.status();
    let retry_after = retry_after_ms(response.headers());
    // The verdict is the status alone; the body is read only for the log,
    // and only as far as 1 KiB and the attempt's time allow.
    let budget = Duration::from_millis(settings.timeout_ms).saturating_sub(t0.elapsed());
    let mut body = Vec::new();
    let _ = actix_rt::time::timeout(budget, async {
        while body.len() < RESPONSE_BODY_BYTES {
            match response.next().await {
                Some(Ok(chunk)) => body.extend_from_slice(&chunk),
                _ => break,
            }
        }
    })
    .await;
    body.truncate(RESPONSE_BODY_BYTES);
    let body = String::from_utf8_lossy(&body).into_owned();
    Outcome {
        started_at,
        duration_ms: t0.elapsed().as_millis() as u64,
        status: Some(status.as_u16()),
        body: Some(body),
        error: (!status.is_success()).then_some(ErrorClass::HttpStatus),
        retry_after_ms: retry_after,
        signatures,
    }
}
