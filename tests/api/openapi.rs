//! The OpenAPI document: generated from the code, and in step with the router.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::helpers::spawn_app;

/// (METHOD, path) of every actix route macro under `src/http/api/`.
fn routes_in_source() -> BTreeSet<(String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/http/api");
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines().map(str::trim) {
            for method in ["get", "post", "patch", "put", "delete", "head"] {
                if let Some(rest) = line.strip_prefix(&format!("#[{method}(\"")) {
                    let path = rest.split('"').next().unwrap();
                    out.insert((method.to_uppercase(), format!("/v1{path}")));
                }
            }
        }
    }
    out
}

fn routes_in_document(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            out.insert((method.to_uppercase(), path.clone()));
        }
    }
    out
}

#[actix_rt::test]
async fn every_route_in_the_router_is_in_the_document_and_back() {
    let app = spawn_app().await;
    let r = app.raw(app.client.get(app.url("/openapi.json")), "").await;
    assert_eq!(r.status.as_u16(), 200);
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let source = routes_in_source();
    let documented = routes_in_document(&doc);
    assert!(source.len() >= 11, "{source:?}");
    let missing: Vec<_> = source.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes not in /openapi.json: {missing:?}"
    );
    let extra: Vec<_> = documented.difference(&source).collect();
    assert!(extra.is_empty(), "documented but not routed: {extra:?}");
    // Every documented operation reaches a real handler (not the /v1 fallback).
    for (method, path) in &documented {
        let url = app.url(&path.replace("{id}", "lnk_01h455vb4pex5vsknk084sn02q"));
        let req = app.client.request(method.parse().unwrap(), url);
        let reply = app.send(req, None).await;
        let body = String::from_utf8_lossy(&reply.body);
        assert!(
            !body.contains("No route for"),
            "{method} {path} is not routed: {body}"
        );
    }
}

#[actix_rt::test]
async fn the_document_declares_bearer_auth_and_problem_errors() {
    let app = spawn_app().await;
    let doc = app
        .raw(app.client.get(app.url("/openapi.json")), "")
        .await
        .json();
    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    assert_eq!(doc["security"][0]["bearer"], serde_json::json!([]));
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for status in ["400", "401", "403", "404", "422", "429", "500"] {
                let content = &op["responses"][status]["content"]["application/problem+json"]["schema"]
                    ["$ref"];
                assert_eq!(
                    content, "#/components/schemas/Problem",
                    "{method} {path} {status}"
                );
            }
        }
    }
    let problem = &doc["components"]["schemas"]["Problem"]["properties"];
    for field in [
        "type",
        "title",
        "status",
        "detail",
        "code",
        "request_id",
        "errors",
    ] {
        assert!(problem.get(field).is_some(), "Problem.{field}");
    }
    let event = &doc["components"]["schemas"]["EventView"]["properties"];
    for field in [
        "id",
        "link_id",
        "visitor_id",
        "timestamp",
        "device_type",
        "country",
        "asn",
        "ip_hash",
        "bot",
    ] {
        assert!(event.get(field).is_some(), "EventView.{field}");
    }
}
