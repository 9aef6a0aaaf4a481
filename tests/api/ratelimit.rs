//! Rate limits per workspace by plan, with headers on every /v1 answer: the
//! `X-RateLimit-*` ones and the IETF `RateLimit-Policy` and `RateLimit`.

use serde_json::json;

use crate::helpers::{Reply, spawn_app_with};

/// A Structured Field item as the IETF fields use it: a String naming the
/// policy, then `;key=integer` parameters. Panics on anything else.
fn sf_item(field: &str) -> (String, Vec<(String, u64)>) {
    let rest = field
        .strip_prefix('"')
        .unwrap_or_else(|| panic!("no string: {field}"));
    let (name, params) = rest.split_once('"').unwrap();
    assert!(
        name.bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'\\')
    );
    let params = params
        .strip_prefix(';')
        .unwrap_or_else(|| panic!("no parameters: {field}"))
        .split(';')
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or_else(|| panic!("{field}"));
            assert!(k.bytes().all(|b| b.is_ascii_lowercase()), "{field}");
            assert!(v.bytes().all(|b| b.is_ascii_digit()), "{field}");
            (k.to_owned(), v.parse().unwrap())
        })
        .collect();
    (name.to_owned(), params)
}

/// The IETF fields of `r`, checked against its `X-RateLimit-*` headers:
/// the policy is `"default";q=<limit>;w=60`; returns `(r, t)` of `RateLimit`.
fn ietf(r: &Reply, limit: u32) -> (u64, u64) {
    let policy = r.header("ratelimit-policy").expect("RateLimit-Policy");
    assert_eq!(policy, format!("\"default\";q={limit};w=60"));
    assert_eq!(
        sf_item(policy),
        (
            "default".into(),
            vec![("q".into(), u64::from(limit)), ("w".into(), 60)]
        )
    );
    let (name, params) = sf_item(r.header("ratelimit").expect("RateLimit"));
    assert_eq!(name, "default");
    let keys: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["r", "t"]);
    let remaining: u64 = r.header("x-ratelimit-remaining").unwrap().parse().unwrap();
    assert_eq!(params[0].1, remaining, "r is X-RateLimit-Remaining");
    (params[0].1, params[1].1)
}

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
        // `t`: seconds until the allowance is full again, as X-RateLimit-Reset says.
        let (_, t) = ietf(&r, 5);
        let later = jiff::Timestamp::now().as_second() as u64;
        assert!(
            reset.abs_diff(later + t) <= 1,
            "t={t}, reset={reset}, now={later}"
        );
        assert!((1..=60).contains(&t), "{t}");
    }
    assert_eq!(remaining, [4, 3, 2, 1, 0]);
    let refused = app.get("/v1/links").await;
    refused.assert_problem(429, "rate_limited");
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=13).contains(&retry), "{retry}");
    assert_eq!(
        ietf(&refused, 5),
        (0, retry),
        "a 429: nothing left until Retry-After"
    );
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
        assert!(r.header("ratelimit").is_none());
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
    assert_eq!(ietf(&r, 600), (599, 1));
    // Every other kind of /v1 answer carries them too.
    let answers = [
        app.get("/v1/nowhere").await,
        app.get("/v1/links/lnk_nope").await,
        app.post("/v1/links", json!({"destination": "ftp://x"}))
            .await,
        app.get("/v1/workspace").await,
    ];
    for (r, status) in answers.iter().zip([404, 400, 422, 200]) {
        assert_eq!(r.status.as_u16(), status, "{}", r.text());
        ietf(r, 600);
    }
    // Redirects carry none.
    let scan = app.scan("nothing-here").await;
    assert!(scan.header("ratelimit").is_none() && scan.header("ratelimit-policy").is_none());
}

#[actix_rt::test]
async fn the_optional_per_ip_redirect_limit_refuses_one_client_not_others() {
    let app = spawn_app_with(&[
        ("SCANHOP__SERVER__REDIRECT_LIMIT_PER_MINUTE", "3"),
        ("SCANHOP__SERVER__TRUSTED_PROXIES", "127.0.0.1/32"),
    ])
    .await;
    app.create_link(json!({"destination": "https://example.com/", "slug": "hot"}))
        .await;
    let from = |ip: &'static str| {
        [
            ("User-Agent", crate::helpers::IPHONE_UA),
            ("X-Forwarded-For", ip),
        ]
    };
    for _ in 0..3 {
        assert_eq!(
            app.scan_with("hot", &from("81.2.69.142"))
                .await
                .status
                .as_u16(),
            302
        );
    }
    let refused = app.scan_with("hot", &from("81.2.69.142")).await;
    assert_eq!(refused.status.as_u16(), 429);
    assert!(
        refused
            .header("retry-after")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    app.scan_with(
        "hot",
        &[
            ("X-Forwarded-For", "81.2.69.142"),
            ("Accept", "application/json"),
        ],
    )
    .await
    .assert_problem(429, "rate_limited");
    assert_eq!(
        app.scan_with("hot", &from("89.160.20.1"))
            .await
            .status
            .as_u16(),
        302,
        "another client is not limited"
    );
    app.eventually("4 scans stored", || async {
        app.all_events("").await.len() == 4
    })
    .await;
    actix_rt::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(
        app.all_events("").await.len(),
        4,
        "refused redirects are not recorded"
    );
    let metrics = app
        .raw(app.client.get(app.url("/metrics")), "")
        .await
        .text();
    assert!(
        metrics.contains("scanhop_redirects_rate_limited_total 2"),
        "{metrics}"
    );
}

#[actix_rt::test]
async fn redirects_are_unlimited_by_default() {
    let app = spawn_app_with(&[]).await;
    app.create_link(json!({"destination": "https://example.com/", "slug": "many"}))
        .await;
    for _ in 0..100 {
        assert_eq!(app.scan("many").await.status.as_u16(), 302);
    }
}

#[actix_rt::test]
async fn callers_behind_a_trusted_proxy_are_limited_by_their_own_address() {
    let app = spawn_app_with(&[
        ("SCANHOP__PLANS__FREE__REQUESTS_PER_MINUTE", "2"),
        ("SCANHOP__SERVER__TRUSTED_PROXIES", "127.0.0.1/32"),
    ])
    .await;
    let anonymous = |header: (&'static str, &'static str)| {
        app.raw(
            app.client.get(app.url("/v1/links")).insert_header(header),
            "",
        )
    };
    for _ in 0..2 {
        assert_eq!(
            anonymous(("Forwarded", "for=81.2.69.142"))
                .await
                .status
                .as_u16(),
            401
        );
    }
    anonymous(("Forwarded", "for=81.2.69.142"))
        .await
        .assert_problem(429, "rate_limited");
    // Another client behind the same proxy, named by either header, has its own allowance.
    assert_eq!(
        anonymous(("Forwarded", "for=89.160.20.1"))
            .await
            .status
            .as_u16(),
        401
    );
    assert_eq!(
        anonymous(("X-Forwarded-For", "89.160.20.2"))
            .await
            .status
            .as_u16(),
        401
    );
}
