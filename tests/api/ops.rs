//! Operations endpoints and request IDs.

use crate::helpers::{metric, spawn_app};

#[actix_rt::test]
async fn health_readiness_and_metrics_answer_without_auth() {
    let app = spawn_app().await;
    let r = app.raw(app.client.get(app.url("/healthz")), "").await;
    assert_eq!(r.status.as_u16(), 200);
    let r = app.raw(app.client.get(app.url("/readyz")), "").await;
    assert_eq!(r.status.as_u16(), 200);
    assert_eq!(r.json()["status"], "ready");
    let r = app.raw(app.client.get(app.url("/metrics")), "").await;
    assert_eq!(r.status.as_u16(), 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let text = r.text();
    for name in [
        "scanhop_actor_messages_total{actor=\"resolver\"}",
        "scanhop_store_flush_duration_seconds_count",
        "scanhop_scan_log_sync_duration_seconds_count",
        "scanhop_rate_limited_requests_total",
        "scanhop_bot_scans_total",
        "scanhop_redirects_total",
        "scanhop_scans_recorded_total",
        "scanhop_orphan_scans_total",
        "scanhop_redirect_duration_seconds_bucket",
        "scanhop_useragent_cache_lookups_total{result=\"hit\"}",
        "scanhop_useragent_cache_lookups_total{result=\"miss\"}",
    ] {
        assert!(text.contains(name), "{name} missing");
    }
    // Every background worker reports readiness and its queue.
    for worker in [
        "resolver",
        "recorder",
        "salts",
        "rate_limit_pruner",
        "flusher",
    ] {
        let ready = format!("scanhop_worker_ready{{worker=\"{worker}\"}} 1");
        assert!(text.contains(&ready), "{ready} missing:\n{text}");
        let depth = format!("scanhop_worker_queue_depth{{worker=\"{worker}\"}}");
        assert!(text.contains(&depth), "{depth} missing");
    }
}

#[actix_rt::test]
async fn the_recorders_commits_report_their_cpu_and_wall_clock_time() {
    let app = spawn_app().await;
    app.create_link(serde_json::json!({"destination": "https://example.com/", "slug": "timed"}))
        .await;
    for _ in 0..20 {
        assert_eq!(app.scan("timed").await.status.as_u16(), 302);
    }
    app.eventually("20 scans recorded", || async {
        let text = app.get("/metrics").await.text();
        metric::<f64>(&text, "scanhop_scans_recorded_total").is_some_and(|n| n >= 20.0)
    })
    .await;
    let text = app.get("/metrics").await.text();
    let cpu: f64 = metric(&text, "scanhop_recorder_cpu_seconds_total").unwrap();
    let busy: f64 = metric(&text, "scanhop_recorder_busy_seconds_total").unwrap();
    assert!(cpu > 0.0, "cpu {cpu}");
    // The wall-clock time of a commit encloses its CPU time.
    assert!(busy >= cpu, "busy {busy} < cpu {cpu}");
}

#[actix_rt::test]
async fn request_ids_are_echoed_or_generated() {
    let app = spawn_app().await;
    let r = app
        .raw(
            app.client
                .get(app.url("/healthz"))
                .insert_header(("X-Request-Id", "abc-123")),
            "",
        )
        .await;
    assert_eq!(r.header("x-request-id"), Some("abc-123"));
    let r = app
        .raw(
            app.client
                .get(app.url("/v1/links"))
                .insert_header(("X-Request-Id", "trace-9")),
            "",
        )
        .await;
    assert_eq!(
        r.assert_problem(401, "unauthorized")["request_id"],
        "trace-9"
    );
    let r = app
        .raw(
            app.client
                .get(app.url("/healthz"))
                .insert_header(("X-Request-Id", "bad id with spaces")),
            "",
        )
        .await;
    let id = r.header("x-request-id").unwrap();
    assert!(!id.contains(' ') && !id.is_empty());
    let a = app.raw(app.client.get(app.url("/healthz")), "").await;
    let b = app.raw(app.client.get(app.url("/healthz")), "").await;
    assert_ne!(a.header("x-request-id"), b.header("x-request-id"));
}
