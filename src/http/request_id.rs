//! `X-Request-Id` on every response: echoed when the client sent a sane one,
//! generated otherwise, and visible to error bodies through a task-local.
//! With `log.access`, this middleware also writes the access line (for a
//! scan of a short link only with `log.access_redirects`).
//!
//! This runs on every redirect, so it allocates nothing: a generated ID is a
//! random per-process prefix and a counter, as 16 hex digits in a fixed buffer.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, web};

use super::AppState;

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");
const MAX_LEN: usize = 128;

/// A request ID, stored inline.
#[derive(Clone, Copy)]
pub struct RequestId {
    buf: [u8; MAX_LEN],
    len: u8,
}

impl RequestId {
    pub fn as_str(&self) -> &str {
        // Only ASCII graphic bytes are ever stored.
        std::str::from_utf8(&self.buf[..self.len as usize]).unwrap_or("-")
    }

    fn accepted(value: &HeaderValue) -> Option<RequestId> {
        let bytes = value.as_bytes();
        let sane =
            !bytes.is_empty() && bytes.len() <= MAX_LEN && bytes.iter().all(u8::is_ascii_graphic);
        sane.then(|| {
            let mut buf = [0u8; MAX_LEN];
            buf[..bytes.len()].copy_from_slice(bytes);
            RequestId {
                buf,
                len: bytes.len() as u8,
            }
        })
    }

    fn generate() -> RequestId {
        static PREFIX: OnceLock<u32> = OnceLock::new();
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let prefix = *PREFIX.get_or_init(|| u32::from_le_bytes(crate::random::bytes()));
        let n = (u64::from(prefix) << 32) | u64::from(COUNTER.fetch_add(1, Ordering::Relaxed));
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; MAX_LEN];
        for (i, slot) in buf[..16].iter_mut().enumerate() {
            *slot = HEX[((n >> (60 - 4 * i)) & 0xf) as usize];
        }
        RequestId { buf, len: 16 }
    }
}

tokio::task_local! {
    static REQUEST_ID: RequestId;
}

/// The current request's ID, or `"-"` outside a request.
pub fn current() -> String {
    REQUEST_ID
        .try_with(|id| id.as_str().to_owned())
        .unwrap_or_else(|_| "-".to_owned())
}

/// Sets the request ID and, with `log.access`, writes the access line.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let id = req
        .headers()
        .get(&HEADER)
        .and_then(RequestId::accepted)
        .unwrap_or_else(RequestId::generate);
    let (access, access_redirects) = req
        .app_data::<web::Data<AppState>>()
        .map_or((false, false), |s| {
            (s.settings.log.access, s.settings.log.access_redirects)
        });
    let access_log = access && tracing::enabled!(target: "scanhop::access", tracing::Level::INFO);
    let started = access_log.then(|| (Instant::now(), req.method().clone()));
    // Handlers' and extractors' errors become responses inside this scope, so
    // their bodies carry the ID; an `Err` here would come from actix itself.
    let mut res = REQUEST_ID
        .scope(id, next.call(req))
        .await?
        .map_into_boxed_body();
    if let Ok(value) = HeaderValue::from_str(id.as_str()) {
        res.headers_mut().insert(HEADER, value);
    }
    let logged =
        access_redirects || res.request().match_name() != Some(super::redirect::SCAN_ROUTE);
    if let Some((started, method)) = started.filter(|_| logged) {
        // The route pattern, not the path: no IDs, slugs or query strings.
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "(unmatched)".to_owned());
        tracing::info!(
            target: "scanhop::access",
            request_id = id.as_str(),
            method = %method,
            route = %route,
            status = res.status().as_u16(),
            latency_us = started.elapsed().as_micros() as u64,
            "request"
        );
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_distinct_hex() {
        let a = RequestId::generate();
        let b = RequestId::generate();
        assert_eq!(a.as_str().len(), 16);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.as_str(), b.as_str());
        assert!(RequestId::accepted(&HeaderValue::from_static("has space")).is_none());
        assert_eq!(
            RequestId::accepted(&HeaderValue::from_static("abc-1"))
                .unwrap()
                .as_str(),
            "abc-1"
        );
    }
}
