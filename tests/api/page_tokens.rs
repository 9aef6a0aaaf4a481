//! Page tokens are signed by the server: a token cut, padded or with one bit
//! flipped, and a real token of another workspace or query, are all
//! `400 bad_request` on both paginated lists; never a 500.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use crate::helpers::{IPHONE_UA, TestApp, spawn_app_with};

/// The `next_page_token` of `path` (which must have a next page) as `token`.
async fn next_token(app: &TestApp, token: &str, path: &str) -> String {
    let r = app
        .send_as(token, app.client.get(app.url(path)), None)
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    r.json()["next_page_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{path} has no next page"))
        .to_owned()
}

/// Two links and two scans in the workspace of `token`.
async fn fill(app: &TestApp, token: &str, prefix: &str) {
    for n in 0..2 {
        let body = json!({"destination": "https://example.com/", "slug": format!("{prefix}{n}")});
        let r = app
            .send_as(token, app.client.post(app.url("/v1/links")), Some(body))
            .await;
        assert_eq!(r.status.as_u16(), 201, "{}", r.text());
        app.scan_with(&format!("{prefix}{n}"), &[("User-Agent", IPHONE_UA)])
            .await;
    }
    app.eventually("2 events", || async {
        let r = app
            .send_as(token, app.client.get(app.url("/v1/events")), None)
            .await;
        r.json()["data"].as_array().unwrap().len() == 2
    })
    .await;
}

/// Cut, padded and bit-flipped versions of `token`.
fn variations(token: &str) -> Vec<String> {
    let mut out = Vec::new();
    for keep in [
        token.len() - 1,
        token.len() - 2,
        token.len() - 4,
        token.len() / 2,
        1,
    ] {
        out.push(token[..keep].to_owned());
    }
    for pad in ["A", "AA", "AAAA", "AAAAAAAAAAAAAAAAAAAAAA", "=", "%3D%3D"] {
        out.push(format!("{token}{pad}"));
    }
    let raw = URL_SAFE_NO_PAD.decode(token).unwrap();
    for i in 0..raw.len() {
        let mut flipped = raw.clone();
        flipped[i] ^= 1 << (i % 8);
        out.push(URL_SAFE_NO_PAD.encode(flipped));
    }
    // The body without its tag, and the tag alone.
    out.push(URL_SAFE_NO_PAD.encode(&raw[..raw.len() - 32]));
    out.push(URL_SAFE_NO_PAD.encode(&raw[raw.len() - 32..]));
    out
}

#[actix_rt::test]
async fn every_variation_of_a_real_page_token_is_400() {
    let app = spawn_app_with(&[("SCANHOP__PLANS__FREE__REQUESTS_PER_MINUTE", "100000")]).await;
    let other = app.other_workspace();
    let mine = app.token.clone();
    fill(&app, &mine, "m").await;
    fill(&app, &other, "o").await;
    let events = next_token(&app, &mine, "/v1/events?page_size=1").await;
    let links = next_token(&app, &mine, "/v1/links?page_size=1").await;
    let foreign: Vec<(&str, String)> = vec![
        (
            "events",
            next_token(&app, &other, "/v1/events?page_size=1").await,
        ),
        (
            "links",
            next_token(&app, &other, "/v1/links?page_size=1").await,
        ),
        (
            "events",
            next_token(&app, &mine, "/v1/events?page_size=1&device_type=mobile").await,
        ),
        (
            "links",
            next_token(&app, &mine, "/v1/links?page_size=1&status=active").await,
        ),
    ];
    for (list, genuine, cross) in [("events", &events, &links), ("links", &links, &events)] {
        let path = |t: &str| format!("/v1/{list}?page_size=1&page_token={t}");
        // The real token works, and is answered the second item.
        let r = app.get(&path(genuine)).await;
        assert_eq!(r.status.as_u16(), 200, "{}", r.text());
        assert_eq!(r.json()["data"].as_array().unwrap().len(), 1);
        let mut bad = variations(genuine);
        // A token of the other list, of another workspace's same list, and
        // of the same list with other filters.
        bad.push(cross.clone());
        bad.extend(foreign.iter().map(|(_, t)| t.clone()));
        for token in &bad {
            let r = app.get(&path(token)).await;
            let body = r.assert_problem(400, "bad_request");
            assert!(
                body["detail"].as_str().unwrap().contains("page_token"),
                "{token}: {body}"
            );
        }
    }
    // A foreign token on its own query (its owner, its filters) still works.
    for (list, token) in &foreign[..2] {
        let r = app
            .send_as(
                &other,
                app.client
                    .get(app.url(&format!("/v1/{list}?page_size=1&page_token={token}"))),
                None,
            )
            .await;
        assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    }
}
