//! The HTTP surface: shared state, route table, extractor error mapping.
//! Routes of the server itself come before `/{slug}`, so no slug can shadow them.

pub mod allow;
pub mod api;
pub mod auth;
pub mod body;
pub mod docs_page;
pub mod error;
pub mod form;
pub mod form_page;
pub mod openapi;
pub mod ops;
pub mod pagination;
pub mod ratelimit;
pub mod redirect;
pub mod request_id;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix::Addr;
use actix_web::dev::{ServiceFactory, ServiceRequest};
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::{HttpRequest, HttpResponse, web};
use utoipa_actix_web::UtoipaApp;

use crate::actors::{LinkCache, RecorderHandle, Resolver, Workers};
use crate::config::Settings;
use crate::enrich::Enricher;
use crate::enrich::client_ip::Client;
use crate::enrich::privacy::SaltBook;
use crate::http::error::ApiError;
use crate::metrics::Metrics;
use crate::store::Store;

/// Everything handlers share.
pub struct AppState {
    pub settings: Arc<Settings>,
    /// The redirect's clock (the system clock outside tests).
    pub clock: crate::clock::Clock,
    pub store: Store,
    pub links: Arc<LinkCache>,
    pub resolver: Addr<Resolver>,
    pub recorder: RecorderHandle,
    /// Scan tallies per day, for the analytics answers.
    pub counters: Arc<crate::actors::counters::CounterView>,
    /// Fingerprint → visitor, for the redirect.
    pub registry: Arc<crate::actors::registry::VisitorRegistry>,
    /// Visitor profiles, for the visitors API.
    pub visitors: Arc<crate::actors::visitors::VisitorView>,
    /// Webhooks: the outbox schedule and the delivery worker's wake-up.
    pub webhooks: Arc<crate::actors::webhooks::WebhookHub>,
    pub enricher: Arc<Enricher>,
    /// The daily IP salts, kept current by the salt rotation worker.
    pub salts: Arc<SaltBook>,
    pub metrics: Arc<Metrics>,
    /// Every background worker, for `/readyz`, `/metrics` and shutdown.
    pub workers: Arc<Workers>,
    pub draining: Arc<AtomicBool>,
    /// `/openapi.json`, rendered once at start.
    pub openapi_json: String,
    /// `/docs`: the same document as one HTML page, rendered once at start.
    pub docs_html: String,
    pub limits: Arc<ratelimit::RateLimits>,
    /// Makes and checks the form step's per-scan tokens.
    pub form_key: [u8; 32],
    /// Signs and checks page tokens.
    pub page_tokens: pagination::PageTokenKey,
    /// The methods of each documented path, for `405` answers under `/v1`.
    pub allow: allow::AllowTable,
}

/// How long a lookup of a scan waits for the Recorder's queue.
const SCAN_SETTLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl AppState {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// The stored scan `id`. A scan is answered as soon as the Recorder has
    /// it and committed a moment later; a lookup that misses waits for
    /// what is queued and looks again, so a client that got a `scan_id`
    /// always finds its scan. (The miss costs one wait; reads run on the
    /// blocking pool.)
    pub async fn scan_event(
        &self,
        id: crate::ids::EventId,
    ) -> Result<Option<crate::domain::ScanEvent>, error::ApiError> {
        let read = || {
            let store = self.store.clone();
            actix_web::web::block(move || store.event(&id))
        };
        let found = read().await.map_err(|e| error::ApiError::internal(&e))??;
        if found.is_some() {
            return Ok(found);
        }
        self.recorder.settled(SCAN_SETTLE_TIMEOUT).await;
        Ok(read().await.map_err(|e| error::ApiError::internal(&e))??)
    }
}

/// A request header as text; absent or not visible ASCII gives `None`.
pub fn header_str(req: &HttpRequest, name: actix_web::http::header::HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The client: the socket peer, or behind a trusted proxy the client that
/// every line of `X-Forwarded-For` / `Forwarded` names (see
/// `enrich::client_ip`). Every caller that needs the client (enrichment,
/// rate limits) asks here.
pub fn client_ip_of(req: &HttpRequest, trusted_proxies: &[ipnet::IpNet]) -> Client {
    use actix_web::http::header::{FORWARDED, HeaderName, X_FORWARDED_FOR};
    // All lines of a field, in order: a proxy may append its own line after
    // the client's (RFC 9110, section 5.3 makes them one list).
    let lines = |name: HeaderName| {
        req.headers()
            .get_all(name)
            .map(actix_web::http::header::HeaderValue::as_bytes)
    };
    crate::enrich::client_ip::client_ip(
        req.peer_addr().map(|a| a.ip()),
        lines(X_FORWARDED_FOR),
        lines(FORWARDED),
        trusted_proxies,
    )
}

/// The documented part of the route table: `/v1`. The server and the
/// OpenAPI document are both built from this one function.
pub fn documented<T>(app: UtoipaApp<T>) -> UtoipaApp<T>
where
    T: ServiceFactory<ServiceRequest, Config = (), Error = actix_web::Error, InitError = ()>,
{
    app.service(
        utoipa_actix_web::scope("/v1")
            .wrap(actix_web::middleware::from_fn(auth::middleware))
            .configure(api::configure)
            .default_service(web::to(api_fallback)),
    )
}

/// The rest of the route table, after `/v1`: extractor error mapping,
/// operations endpoints, then `/{slug}` last so it shadows nothing.
pub fn configure(cfg: &mut web::ServiceConfig, body_limit: usize) {
    cfg.app_data(json_config(body_limit))
        .app_data(web::QueryConfig::default().error_handler(query_error))
        .app_data(web::PathConfig::default().error_handler(path_error))
        .app_data(web::PayloadConfig::new(body_limit))
        .configure(ops::configure)
        .configure(redirect::configure);
}

fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(json_error)
}

fn json_error(err: JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    let api = match &err {
        JsonPayloadError::Overflow { limit }
        | JsonPayloadError::OverflowKnownLength { limit, .. } => ApiError::new(
            crate::http::error::ErrorCode::PayloadTooLarge,
            format!("The request body exceeds {limit} bytes."),
        ),
        JsonPayloadError::ContentType => {
            ApiError::bad_request("Content-Type must be application/json.")
        }
        JsonPayloadError::Deserialize(e) if e.is_data() => {
            ApiError::validation(vec![crate::domain::FieldError::new("body", e.to_string())])
        }
        JsonPayloadError::Deserialize(e) => {
            ApiError::bad_request(format!("The body is not valid JSON: {e}"))
        }
        other => ApiError::bad_request(format!("The request body could not be read: {other}")),
    };
    api.into()
}

fn query_error(err: QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    ApiError::bad_request(format!("The query string is malformed: {err}")).into()
}

fn path_error(err: PathError, _: &HttpRequest) -> actix_web::Error {
    ApiError::bad_request(format!("The path is malformed: {err}")).into()
}

/// No handler took the request: a documented path with another method is a
/// 405 naming the methods it takes; anything else under `/v1` is a 404.
async fn api_fallback(req: HttpRequest) -> HttpResponse {
    let state = req.app_data::<web::Data<AppState>>();
    if let Some(allow) = state.and_then(|s| s.allow.allow_for(req.path())) {
        return allow::method_not_allowed(&req, allow);
    }
    let err = ApiError::not_found(format!("No route for {} {}.", req.method(), req.path()));
    actix_web::ResponseError::error_response(&err)
}
