//! Operations endpoints (no auth): liveness, readiness, Prometheus metrics,
//! the OpenAPI document and its rendering for people.

use actix_web::{HttpRequest, HttpResponse, Route, web};
use serde_json::json;

use super::AppState;
use super::allow::{OPERATIONS, method_not_allowed};
use crate::metrics::{Kind, family};

/// Each endpoint is a resource of its own, so another method on its path is
/// a 405 with `Allow: GET` rather than a trip to `/{slug}`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/healthz", web::get().to(healthz)))
        .service(endpoint("/readyz", web::get().to(readyz)))
        .service(endpoint("/metrics", web::get().to(metrics)))
        .service(endpoint("/openapi.json", web::get().to(openapi_json)))
        .service(endpoint("/docs", web::get().to(docs)));
}

fn endpoint(path: &str, get: Route) -> actix_web::Resource {
    web::resource(path)
        .route(get)
        .default_service(web::to(|req: HttpRequest| async move {
            method_not_allowed(&req, OPERATIONS)
        }))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready: the store is open (it is for as long as the process runs) and
/// every background worker is running; 503 from SIGTERM on.
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.is_draining() {
        return HttpResponse::ServiceUnavailable()
            .json(json!({"status": "unavailable", "reason": "draining"}));
    }
    let not_ready = state.workers.not_ready();
    if !not_ready.is_empty() {
        return HttpResponse::ServiceUnavailable().json(
            json!({"status": "unavailable", "reason": "workers_not_ready", "workers": not_ready}),
        );
    }
    HttpResponse::Ok().json(json!({"status": "ready"}))
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let mut text = state.metrics.render(state.links.len());
    state
        .workers
        .render_metrics(&mut text, state.metrics.scans_recorded.get());
    let (hits, misses) = state.enricher.agent_cache_stats();
    family(
        &mut text,
        "scanhop_useragent_cache_lookups_total",
        "User agents of scans answered from the parsed-agent cache (hit) or parsed (miss).",
        Kind::Counter,
        &[("result=\"hit\"", hits), ("result=\"miss\"", misses)],
    );
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text)
}

async fn openapi_json(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(state.openapi_json.clone())
}

/// The page allows its inline style and nothing else: no script, no fetch,
/// no external asset, even if a document string slipped through unescaped.
const DOCS_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'";

async fn docs(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Content-Security-Policy", DOCS_POLICY))
        .body(state.docs_html.clone())
}
