//! The OpenAPI document: generated from the code, and in step with the router.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::helpers::spawn_app;

mod contract;

/// (METHOD, path) of every actix route macro under `src/http/api/`.
fn routes_in_source() -> BTreeSet<(String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/http/api");
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines().map(str::trim) {
            for method in ["get", "post", "patch", "put", "delete", "head", "options"] {
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

/// Every node of `v` with its JSON pointer, depth first.
fn walk<'a>(v: &'a Value, at: &str, out: &mut Vec<(String, &'a Value)>) {
    out.push((at.to_owned(), v));
    match v {
        Value::Object(map) => {
            for (key, child) in map {
                let key = key.replace('~', "~0").replace('/', "~1");
                walk(child, &format!("{at}/{key}"), out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                walk(child, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// The `type` of a schema as a list (3.1 allows `"object"` or `["object", "null"]`).
fn types_of(schema: &Value) -> Vec<&str> {
    match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    }
}

/// Follows a `#/components/schemas/...` reference, or gives the schema itself.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> Option<&'a Value> {
    match schema["$ref"].as_str() {
        Some(r) => doc.pointer(r.strip_prefix('#')?),
        None => Some(schema),
    }
}

fn is_list(schema: &Value) -> bool {
    types_of(&schema["properties"]["data"]).contains(&"array")
}

// Code generators turn every inline object into a model of its own, so an
// inline copy of an item schema gives clients a second, incompatible class
// for the same object; and a description pointing at a file of this
// repository means nothing to a reader of the document.
#[actix_rt::test]
async fn the_document_names_every_object_and_every_list_is_a_page_of_refs() {
    let app = spawn_app().await;
    let doc = app
        .raw(app.client.get(app.url("/openapi.json")), "")
        .await
        .json();
    let mut nodes = Vec::new();
    walk(&doc, "", &mut nodes);

    let mut problems = Vec::new();
    for (at, node) in &nodes {
        if let Some(items) = node
            .get("items")
            .filter(|_| types_of(node).contains(&"array"))
        {
            let inline_object = items.get("$ref").is_none()
                && (types_of(items).contains(&"object") || items.get("properties").is_some());
            if inline_object {
                problems.push(format!("{at}/items is an inline object, not a $ref"));
            }
        }
        if let Some(r) = node.get("$ref").and_then(Value::as_str)
            && resolve(&doc, node).is_none()
        {
            problems.push(format!("{at}: $ref {r} points nowhere"));
        }
        if let Value::String(text) = node {
            for outside in ["API.md", "DESIGN.md", "shared/"] {
                if text.contains(outside) {
                    problems.push(format!("{at} points outside the document: {text:?}"));
                }
            }
        }
    }

    // A list is whatever an operation answers with a `data` array: it must be
    // a named component, with both keys always present.
    let mut lists = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let schema = &op["responses"]["200"]["content"]["application/json"]["schema"];
            match (schema["$ref"].as_str(), resolve(&doc, schema)) {
                (None, Some(s)) if is_list(s) => {
                    problems.push(format!(
                        "{method} {path}: the list is not a named component"
                    ));
                }
                (Some(r), Some(s)) if is_list(s) => {
                    lists.insert(r.to_owned());
                }
                _ => {}
            }
        }
    }
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        if is_list(schema) {
            lists.insert(format!("#/components/schemas/{name}"));
        }
    }
    assert!(
        lists.len() >= 3,
        "events, links and tokens are lists: {lists:?}"
    );
    for r in &lists {
        let schema = resolve(&doc, &serde_json::json!({ "$ref": r }))
            .unwrap()
            .clone();
        let required = schema["required"].as_array().cloned().unwrap_or_default();
        for key in ["data", "next_page_token"] {
            if !required.contains(&Value::from(key)) {
                problems.push(format!("{r}: `{key}` is not required"));
            }
        }
        let mut token = types_of(&schema["properties"]["next_page_token"]);
        token.sort_unstable();
        if token != ["null", "string"] {
            problems.push(format!(
                "{r}: next_page_token is not string-or-null: {token:?}"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[actix_rt::test]
async fn a_last_page_says_so_with_an_explicit_null() {
    let app = spawn_app().await;
    for path in ["/v1/links", "/v1/events", "/v1/tokens"] {
        let page = app.get(path).await.json();
        assert!(page["data"].is_array(), "{path}: {page}");
        let token = page.as_object().unwrap().get("next_page_token");
        assert_eq!(token, Some(&Value::Null), "{path}: {page}");
    }
}

#[actix_rt::test]
async fn every_answer_declares_the_rate_limit_headers() {
    let app = spawn_app().await;
    let doc = app
        .raw(app.client.get(app.url("/openapi.json")), "")
        .await
        .json();
    let declared = &doc["components"]["headers"];
    let all = [
        ("X-RateLimit-Limit", "integer"),
        ("X-RateLimit-Remaining", "integer"),
        ("X-RateLimit-Reset", "integer"),
        ("RateLimit-Policy", "string"),
        ("RateLimit", "string"),
    ];
    for (name, kind) in all.iter().chain(&[("Retry-After", "integer")]) {
        assert_eq!(declared[name]["schema"]["type"], *kind, "{name}");
        assert!(declared[name]["description"].is_string(), "{name}");
    }
    assert_eq!(
        declared["RateLimit-Policy"]["example"],
        "\"default\";q=600;w=60"
    );
    let mut answers = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for (status, response) in op["responses"].as_object().unwrap() {
                let headers = &response["headers"];
                for (name, _) in &all {
                    assert_eq!(
                        headers[name]["$ref"],
                        format!("#/components/headers/{name}"),
                        "{method} {path} {status}"
                    );
                }
                assert_eq!(
                    headers.get("Retry-After").is_some(),
                    status == "429",
                    "{method} {path} {status}"
                );
                answers += 1;
            }
        }
    }
    assert!(answers > 50, "{answers}");
}
