//! Rate limits per workspace by plan, with headers on every /v1 answer.

use serde_json::json;

use crate::helpers::spawn_app_with;

#[actix_rt::test]
async fn the_plan_limit_answers_429_with_headers_and_spares_redirects() {
    let app = spawn_app_with(&[("SCANHOP__PLANS__FREE__REQUESTS_PER_MINUTE", "5")]).await;
    let now = jiff::Timestamp::now().as_second() as u64;
    let mut remaining = Vec::new();
    for _ in 0..5 {
        let r = app.get("/v1/workspace").await;
        assert_eq!(r.status.as_u16(), 200);
        assert_eq!(r.header("x-ratelimit-limit"), Some("5"));
        remaining.push(
            r.header("x-ratelimit-remaining")
                .unwrap()
                .parse::<u32>()
                .unwrap(),
        );
        let reset: u64 = r.header("x-ratelimit-reset").unwrap().parse().unwrap();
        assert!(reset >= now && reset <= now + 61, "{reset} vs {now}");
    }
    assert_eq!(remaining, [4, 3, 2, 1, 0]);
    let refused = app.get("/v1/links").await;
    refused.assert_problem(429, "rate_limited");
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=13).contains(&retry), "{retry}");
    assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(refused.header("x-ratelimit-limit"), Some("5"));
    // Refused requests change nothing.
    let r = app
        .post("/v1/links", json!({"destination": "https://example.com/"}))
        .await;
    assert_eq!(r.status.as_u16(), 429);
    // Another workspace has its own allowance.
    let other = app.other_workspace();
    let r = app
        .send_as(&other, app.client.get(app.url("/v1/links")), None)
        .await;
    assert_eq!(r.status.as_u16(), 200);
    assert_eq!(r.json()["data"], json!([]));
    // Redirects are never limited by plan.
    let link = app
        .send_as(
            &other,
            app.client.post(app.url("/v1/links")),
            Some(json!({"destination": "https://example.com/", "slug": "free"})),
        )
        .await;
    assert_eq!(link.status.as_u16(), 201);
    for _ in 0..30 {
        let r = app.scan("free").await;
        assert_eq!(r.status.as_u16(), 302);
        assert!(r.header("x-ratelimit-limit").is_none());
    }
    let metrics = app
        .raw(app.client.get(app.url("/metrics")), "")
        .await
        .text();
    assert!(
        metrics.contains("scanhop_rate_limited_requests_total 2"),
        "{metrics}"
    );
}

#[actix_rt::test]
async fn unauthenticated_answers_carry_rate_limit_headers_too() {
    let app = spawn_app_with(&[]).await;
    let r = app.raw(app.client.get(app.url("/v1/links")), "").await;
    r.assert_problem(401, "unauthorized");
    assert_eq!(r.header("x-ratelimit-limit"), Some("600"));
    assert!(r.header("x-ratelimit-remaining").is_some());
    assert!(r.header("x-ratelimit-reset").is_some());
}
