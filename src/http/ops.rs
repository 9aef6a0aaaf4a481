//! Operations endpoints (no auth): liveness, readiness, Prometheus metrics,
//! the OpenAPI document and its rendering for people.

use actix_web::{HttpResponse, get, web};
use serde_json::json;

use super::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(healthz)
        .service(readyz)
        .service(metrics)
        .service(openapi_json)
        .service(docs);
}

#[get("/healthz")]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

#[get("/readyz")]
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let actors = state.recorder.addr().connected() && state.resolver.connected();
    if state.is_draining() || !actors {
        let reason = if state.is_draining() {
            "draining"
        } else {
            "actors_stopped"
        };
        return HttpResponse::ServiceUnavailable()
            .json(json!({"status": "unavailable", "reason": reason}));
    }
    HttpResponse::Ok().json(json!({"status": "ready"}))
}

#[get("/metrics")]
async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    state
        .metrics
        .recorder_queue_depth
        .set(state.recorder.queue_depth() as u64);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render(state.links.len()))
}

#[get("/openapi.json")]
async fn openapi_json(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(state.openapi_json.clone())
}

/// The page allows its inline style and nothing else: no script, no fetch,
/// no external asset, even if a document string slipped through unescaped.
const DOCS_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'";

#[get("/docs")]
async fn docs(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Content-Security-Policy", DOCS_POLICY))
        .body(state.docs_html.clone())
}
