//! `X-Request-Id` on every response: echoed when the client sent a sane one,
//! generated otherwise, and visible to error bodies through a task-local.

use std::sync::Arc;

use actix_web::Error;
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

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
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
    Ok(res)
}
