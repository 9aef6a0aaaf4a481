//! Malformed input gets a clear 4xx and changes nothing; never a 500.

use std::io::{Read, Write};
use std::net::TcpStream;

use awc::http::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

#[actix_rt::test]
async fn bodies_that_are_too_large_bad_or_mistyped_are_rejected() {
    let app = spawn_app().await;
    let auth = ("Authorization", format!("Bearer {}", app.token));
    let post = || {
        app.client
            .post(app.url("/v1/links"))
            .insert_header(auth.clone())
    };
    let huge = format!(
        "{{\"destination\": \"https://example.com/\", \"name\": \"{}\"}}",
        "x".repeat(200_000)
    );
    app.raw(post().content_type("application/json"), huge)
        .await
        .assert_problem(413, "payload_too_large");
    app.raw(
        post().content_type("application/json"),
        "{\"destination\": ",
    )
    .await
    .assert_problem(400, "bad_request");
    app.raw(post().content_type("application/json"), "not json at all")
        .await
        .assert_problem(400, "bad_request");
    app.raw(
        post().content_type("text/plain"),
        "{\"destination\": \"https://example.com/\"}",
    )
    .await
    .assert_problem(400, "bad_request");
    app.raw(post(), "{\"destination\": \"https://example.com/\"}")
        .await
        .assert_problem(400, "bad_request");
    app.raw(post().content_type("application/json"), "[1, 2]")
        .await
        .assert_problem(422, "validation_failed");
    app.raw(
        post().content_type("application/json"),
        "{\"destination\": 42}",
    )
    .await
    .assert_problem(422, "validation_failed");
    app.raw(
        post().content_type("application/json"),
        "{\"tags\": \"one\", \"destination\": \"https://e.com/\"}",
    )
    .await
    .assert_problem(422, "validation_failed");
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    app.raw(post().content_type("application/json"), deep)
        .await
        .assert_problem(422, "validation_failed");
    let deep_value = format!(
        "{{\"destination\": \"https://e.com/\", \"form\": {}{}}}",
        "{\"a\":".repeat(3000) + "1",
        "}".repeat(3000)
    );
    // Deep nesting in an unknown key: refused by shape, without a stack overflow.
    app.raw(post().content_type("application/json"), deep_value)
        .await
        .assert_problem(422, "validation_failed");
    app.raw(
        post().content_type("application/json"),
        [0xffu8, 0xfe, 0x00]
            .iter()
            .map(|b| *b as char)
            .collect::<String>(),
    )
    .await
    .assert_problem(400, "bad_request");
    assert_eq!(
        app.get("/v1/links").await.json()["data"],
        json!([]),
        "nothing was created"
    );
}

#[actix_rt::test]
async fn malformed_ids_and_queries_are_400_and_unknown_routes_404() {
    let app = spawn_app().await;
    for path in [
        "/v1/links/123",
        "/v1/links/lnk_",
        "/v1/links/lnk_%00",
        "/v1/links/ws_01h455vb4pex5vsknk084sn02q",
        "/v1/events/x",
    ] {
        app.get(path).await.assert_problem(400, "bad_request");
    }
    app.delete("/v1/tokens/tok_nope")
        .await
        .assert_problem(400, "bad_request");
    app.get("/v1/events?from=%ZZ")
        .await
        .assert_problem(400, "bad_request");
    // A parameter sent empty is refused, as its schema says, rather than
    // read as absent; only an empty `page_token` means the first page.
    for query in [
        "/v1/events?to=",
        "/v1/events?from=",
        "/v1/events?country=",
        "/v1/events?link_id=",
        "/v1/events?device_type=",
        "/v1/events?include_bots=",
        "/v1/events?tag=",
        "/v1/links?tag=",
        "/v1/links?status=",
    ] {
        let body = app.get(query).await.assert_problem(400, "bad_request");
        assert!(
            body["detail"].as_str().unwrap().contains("empty"),
            "{query}: {body}"
        );
    }
    for first_page in ["/v1/links?page_token=", "/v1/events?page_token="] {
        assert_eq!(
            app.get(first_page).await.status.as_u16(),
            200,
            "{first_page}"
        );
    }
    app.get("/v1/nothing")
        .await
        .assert_problem(404, "not_found");
    app.get("/v1/links/a/b/c")
        .await
        .assert_problem(404, "not_found");
}

fn raw_request(base: &str, request: &[u8]) -> String {
    let addr = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let _ = stream.write_all(request);
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

#[actix_rt::test]
async fn huge_headers_and_garbage_requests_get_4xx_not_500() {
    let app = spawn_app().await;
    let big = format!(
        "GET /v1/links HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(100_000)
    );
    let base = app.base.clone();
    let answer = actix_web::rt::task::spawn_blocking(move || raw_request(&base, big.as_bytes()))
        .await
        .unwrap();
    let status = answer.split_whitespace().nth(1).unwrap_or("closed");
    assert!(status == "closed" || status.starts_with('4'), "{status}");
    let base = app.base.clone();
    let garbage = actix_web::rt::task::spawn_blocking(move || {
        raw_request(&base, b"\x16\x03\x01garbage\r\n\r\n")
    })
    .await
    .unwrap();
    assert!(!garbage.contains(" 500 "), "{garbage}");
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let req = format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}Connection: close\r\n\r\n");
    let base = app.base.clone();
    let answer = actix_web::rt::task::spawn_blocking(move || raw_request(&base, req.as_bytes()))
        .await
        .unwrap();
    let status = answer.split_whitespace().nth(1).unwrap_or("closed");
    assert!(
        status == "closed" || status.starts_with('4') || status == "200",
        "{status}"
    );
    // The server is still fine.
    assert_eq!(app.get("/healthz").await.status.as_u16(), 200);
}

/// Every operation that takes a JSON body, with a valid body for it.
async fn json_body_operations(app: &TestApp) -> Vec<(Method, String, Value)> {
    let link = app
        .create_link(json!({"destination": "https://example.com/", "slug": "kept"}))
        .await;
    let link_path = format!("/v1/links/{}", link["id"].as_str().unwrap());
    vec![
        (
            Method::POST,
            "/v1/links".to_owned(),
            json!({"destination": "https://example.com/other"}),
        ),
        (Method::PATCH, link_path, json!({"name": "Menu"})),
        (
            Method::PATCH,
            "/v1/workspace".to_owned(),
            json!({"name": "Acme"}),
        ),
        (Method::POST, "/v1/tokens".to_owned(), json!({"name": "ci"})),
    ]
}

// serde reads a struct from a JSON array field by field, so before bodies
// had to be objects, `[null, null]` was a valid workspace update and a
// 9-element array created a link.
#[actix_rt::test]
async fn only_a_json_object_is_a_body() {
    let app = spawn_app().await;
    let positional_link = json!([
        "https://example.com/",
        "positional",
        null,
        null,
        null,
        null,
        null,
        null,
        null
    ]);
    let not_objects = [
        "[]".to_owned(),
        "[null, null]".to_owned(),
        positional_link.to_string(),
        "\"https://example.com/\"".to_owned(),
        "42".to_owned(),
        "true".to_owned(),
        "null".to_owned(),
    ];
    let workspace_before = app.get("/v1/workspace").await.json();
    let tokens_before = app.get("/v1/tokens").await.json()["data"].clone();
    let operations = json_body_operations(&app).await;
    for (method, path, _) in &operations {
        for body in &not_objects {
            let req = app
                .client
                .request(method.clone(), app.url(path))
                .insert_header(("Authorization", format!("Bearer {}", app.token)))
                .content_type("application/json");
            let problem = app
                .raw(req, body.clone())
                .await
                .assert_problem(422, "validation_failed");
            assert_eq!(
                problem["errors"][0]["field"], "body",
                "{method} {path} {body}"
            );
            assert!(
                problem["detail"]
                    .as_str()
                    .unwrap()
                    .contains("a JSON object"),
                "{method} {path} {body}: {problem}"
            );
        }
    }
    let links = app.get("/v1/links").await.json()["data"].clone();
    assert_eq!(links.as_array().unwrap().len(), 1, "{links}");
    assert_eq!(links[0]["slug"], "kept");
    assert_eq!(links[0]["name"], Value::Null);
    assert_eq!(app.get("/v1/workspace").await.json(), workspace_before);
    assert_eq!(app.get("/v1/tokens").await.json()["data"], tokens_before);
    // Each operation takes the object.
    for (method, path, valid) in operations {
        let req = app.client.request(method.clone(), app.url(&path));
        let ok = app.send(req, Some(valid)).await;
        assert!(ok.status.is_success(), "{method} {path}: {}", ok.text());
    }
}

/// The methods of each documented path, from the document itself.
fn declared_methods(doc: &Value) -> Vec<(String, Vec<String>)> {
    doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(path, item)| {
            let methods = item
                .as_object()
                .unwrap()
                .keys()
                .map(|m| m.to_uppercase())
                .collect();
            (path.clone(), methods)
        })
        .collect()
}

fn allow_set(reply: &crate::helpers::Reply) -> Vec<String> {
    let mut methods: Vec<String> = reply
        .header("allow")
        .unwrap_or_else(|| panic!("no Allow header: {}", reply.text()))
        .split(',')
        .map(|m| m.trim().to_owned())
        .collect();
    methods.sort();
    methods
}

// RFC 9110: a known path with a method it does not take is a 405 whose
// `Allow` lists the methods it does take; under /v1 exactly the document's.
#[actix_rt::test]
async fn other_methods_on_known_paths_are_405_with_allow() {
    let app = spawn_app().await;
    let doc = app
        .raw(app.client.get(app.url("/openapi.json")), "")
        .await
        .json();
    let undeclared = [
        "GET", "PUT", "POST", "PATCH", "DELETE", "TRACE", "OPTIONS", "QUERY",
    ];
    for (template, mut declared) in declared_methods(&doc) {
        declared.sort();
        let path = template.replace("{id}", "lnk_01h455vb4pex5vsknk084sn02q");
        for method in undeclared
            .iter()
            .filter(|m| !declared.contains(&m.to_string()))
        {
            let req = app.client.request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                app.url(&path),
            );
            let reply = app.send(req, None).await;
            reply.assert_problem(405, "method_not_allowed");
            assert_eq!(allow_set(&reply), declared, "{method} {template}");
        }
    }
    app.create_link(json!({"destination": "https://example.com/", "slug": "m"}))
        .await;
    let others = [
        (Method::PUT, "/healthz", "GET"),
        (Method::TRACE, "/metrics", "GET"),
        (Method::POST, "/openapi.json", "GET"),
        (Method::DELETE, "/docs", "GET"),
        (Method::PUT, "/m", "GET, HEAD"),
        (Method::TRACE, "/m", "GET, HEAD"),
    ];
    for (method, path, allow) in others {
        let reply = app
            .raw(app.client.request(method.clone(), app.url(path)), "")
            .await;
        reply.assert_problem(405, "method_not_allowed");
        assert_eq!(reply.header("allow"), Some(allow), "{method} {path}");
    }
    // A path nothing serves is still a 404, whatever the method.
    let req = app.client.request(Method::TRACE, app.url("/v1/nothing"));
    app.send(req, None).await.assert_problem(404, "not_found");
}
