//! Operations endpoints (no auth): liveness, readiness, Prometheus metrics.

use actix_web::{HttpResponse, get, web};
use serde_json::json;

use super::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(healthz)
        .service(readyz)
        .service(metrics)
        .service(openapi_json);
}

#[get("/healthz")]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready: the store is open (it is for as long as the process runs) and
/// every background worker is running; 503 from SIGTERM on.
#[get("/readyz")]
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

#[get("/metrics")]
async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let mut text = state.metrics.render(state.links.len());
    state
        .workers
        .render_metrics(&mut text, state.metrics.scans_recorded.get());
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text)
}

#[get("/openapi.json")]
async fn openapi_json(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(state.openapi_json.clone())
}
