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
