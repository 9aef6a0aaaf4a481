//! `X-Request-Id` on every response: echoed when the client sent a sane one,
//! generated otherwise, and visible to error bodies through a task-local.

use std::sync::Arc;
use std::time::Instant;

use actix_web::{Error, web};

use super::AppState;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");
const MAX_LEN: usize = 128;

tokio::task_local! {
    static REQUEST_ID: Arc<str>;
}

/// The current request's ID, or `"-"` outside a request.
pub fn current() -> String {
    REQUEST_ID
        .try_with(|id| id.to_string())
        .unwrap_or_else(|_| "-".to_owned())
}

fn accepted(value: &HeaderValue) -> Option<Arc<str>> {
    let s = value.to_str().ok()?;
    let sane = !s.is_empty() && s.len() <= MAX_LEN && s.bytes().all(|b| b.is_ascii_graphic());
    sane.then(|| Arc::from(s))
}

fn generate() -> Arc<str> {
    Arc::from(uuid::Uuid::now_v7().simple().to_string())
}

/// Sets the request ID and, with `log.access`, writes the access line.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let started = Instant::now();
    let access_log = req
        .app_data::<web::Data<AppState>>()
        .is_some_and(|s| s.settings.log.access);
    let method = access_log.then(|| req.method().clone());
    let id = req
        .headers()
        .get(&HEADER)
        .and_then(accepted)
        .unwrap_or_else(generate);
    // Handlers' and extractors' errors become responses inside this scope, so
    // their bodies carry the ID; an `Err` here would come from actix itself.
    let mut res = REQUEST_ID
        .scope(id.clone(), next.call(req))
        .await?
        .map_into_boxed_body();
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(HEADER, value);
    }
    if let Some(method) = method {
        // The route pattern, not the path: no IDs, slugs or query strings.
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "(unmatched)".to_owned());
        tracing::info!(
            target: "scanhop::access",
            request_id = %id,
            method = %method,
            route = %route,
            status = res.status().as_u16(),
            latency_us = started.elapsed().as_micros() as u64,
            "request"
        );
    }
    Ok(res)
}
