//! The document and the server agree: what the document says is required,
//! nullable or refused is what the server requires, takes or refuses, and
//! its links chain the operations that feed each other.

use awc::http::Method;
use serde_json::{Value, json};

use super::{resolve, types_of};
use crate::helpers::spawn_app;

/// The operation with this `operationId`, as (path, method, operation).
fn operation<'a>(doc: &'a Value, id: &str) -> (&'a str, &'a str, &'a Value) {
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if op["operationId"] == id {
                return (path, method, op);
            }
        }
    }
    panic!("no operation {id}");
}

#[actix_rt::test]
async fn the_document_states_what_the_server_requires() {
    let app = spawn_app().await;
    let doc = app
        .raw(app.client.get(app.url("/openapi.json")), "")
        .await
        .json();
    let schemas = &doc["components"]["schemas"];
    let create = &schemas["CreateLinkBody"];
    assert_eq!(create["required"], serde_json::json!(["destination"]));
    let destination = &create["properties"]["destination"];
    assert_eq!(destination["type"], "string", "not nullable: {destination}");
    assert_eq!(destination["maxLength"], 2048);
    assert!(
        destination["pattern"]
            .as_str()
            .unwrap()
            .starts_with("^https?://")
    );
    // Every body is an object that names all its keys.
    for name in [
        "CreateLinkBody",
        "UpdateLinkBody",
        "CreateTokenBody",
        "UpdateWorkspaceBody",
    ] {
        assert_eq!(schemas[name]["type"], "object", "{name}");
        assert_eq!(schemas[name]["additionalProperties"], false, "{name}");
    }
    // Strings the server refuses are outside their schema.
    let workspace_name = &schemas["UpdateWorkspaceBody"]["properties"]["name"];
    assert_eq!(workspace_name["maxLength"], 100);
    assert!(workspace_name["pattern"].is_string());
    let zones = schemas["TimeZone"]["enum"].as_array().unwrap();
    for zone in ["UTC", "Europe/Vienna"] {
        assert!(zones.contains(&Value::from(zone)), "{zone}");
    }
    assert!(!zones.contains(&Value::from("")));
    let (_, _, events) = operation(&doc, "list_events");
    for param in events["parameters"].as_array().unwrap() {
        let name = param["name"].as_str().unwrap();
        let schema = resolve(&doc, &param["schema"]).unwrap();
        let refuses_empty = schema["minLength"].as_u64() >= Some(1)
            || schema["pattern"].is_string()
            || schema["enum"].is_array()
            || schema["format"].is_string()
            || types_of(schema) != ["string"];
        assert!(
            refuses_empty || name == "page_token",
            "`{name}=` is refused: {schema}"
        );
    }
}

// Links let clients, and schemathesis's stateful phase, chain calls: the ID
// a create or list answers with feeds the operations on that object.
#[actix_rt::test]
async fn the_document_links_each_answer_to_the_operations_it_feeds() {
    let app = spawn_app().await;
    let doc = app
        .raw(app.client.get(app.url("/openapi.json")), "")
        .await
        .json();
    let expected = [
        ("create_link", "201", "get_link", "id", "$response.body#/id"),
        (
            "create_link",
            "201",
            "update_link",
            "id",
            "$response.body#/id",
        ),
        (
            "create_link",
            "201",
            "delete_link",
            "id",
            "$response.body#/id",
        ),
        (
            "create_link",
            "201",
            "list_events",
            "link_id",
            "$response.body#/id",
        ),
        (
            "list_links",
            "200",
            "get_link",
            "id",
            "$response.body#/data/0/id",
        ),
        ("update_link", "200", "get_link", "id", "$response.body#/id"),
        (
            "list_events",
            "200",
            "get_event",
            "id",
            "$response.body#/data/0/id",
        ),
        (
            "create_token",
            "201",
            "revoke_token",
            "id",
            "$response.body#/id",
        ),
        (
            "create_webhook",
            "201",
            "get_webhook",
            "id",
            "$response.body#/id",
        ),
        (
            "create_webhook",
            "201",
            "list_webhook_deliveries",
            "id",
            "$response.body#/id",
        ),
        (
            "test_webhook",
            "202",
            "redeliver_webhook_message",
            "msg_id",
            "$response.body#/message_id",
        ),
        (
            "test_webhook",
            "202",
            "redeliver_webhook_message",
            "id",
            "$request.path.id",
        ),
    ];
    for (from, status, to, param, value) in expected {
        let (_, _, op) = operation(&doc, from);
        let links = op["responses"][status]["links"].as_object().unwrap();
        let found = links
            .values()
            .any(|l| l["operationId"] == to && l["parameters"][param] == value);
        assert!(
            found,
            "{from} {status} -> {to}({param} = {value}): {links:?}"
        );
    }
    // Every link names an operation of the document and one of its parameters.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for op in item.as_object().unwrap().values() {
            for response in op["responses"].as_object().unwrap().values() {
                let Some(links) = response["links"].as_object() else {
                    continue;
                };
                for link in links.values() {
                    let (_, _, target) = operation(&doc, link["operationId"].as_str().unwrap());
                    for param in link["parameters"].as_object().unwrap().keys() {
                        let declared = target["parameters"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|p| p["name"] == *param);
                        assert!(declared, "{path}: link parameter {param}");
                    }
                }
            }
        }
    }
}

/// The `type` of a schema as a list (3.1 allows `"string"` or `["string", "null"]`),
/// with `oneOf: [..., {"type": "null"}]` counting as nullable too.
fn accepts_null(schema: &Value) -> bool {
    let listed = match &schema["type"] {
        Value::String(t) => t == "null",
        Value::Array(ts) => ts.iter().any(|t| t == "null"),
        _ => false,
    };
    let in_one_of = schema["oneOf"]
        .as_array()
        .is_some_and(|branches| branches.iter().any(|b| b["type"] == "null"));
    listed || in_one_of
}

// A field the document calls nullable takes `null`; every other field
// refuses it with a 422 naming the field, in create and update alike.
#[actix_rt::test]
async fn null_is_taken_exactly_where_the_document_says_or_null() {
    let app = spawn_app().await;
    let doc = app
        .raw(app.client.get(app.url("/openapi.json")), "")
        .await
        .json();
    let link = app
        .create_link(json!({"destination": "https://example.com/"}))
        .await;
    let link_path = format!("/v1/links/{}", link["id"].as_str().unwrap());
    let bodies = [
        (
            "CreateLinkBody",
            Method::POST,
            "/v1/links",
            json!({"destination": "https://example.com/n"}),
        ),
        (
            "UpdateLinkBody",
            Method::PATCH,
            link_path.as_str(),
            json!({}),
        ),
        ("CreateTokenBody", Method::POST, "/v1/tokens", json!({})),
        (
            "UpdateWorkspaceBody",
            Method::PATCH,
            "/v1/workspace",
            json!({}),
        ),
    ];
    let mut checked = 0;
    for (schema, method, path, base) in bodies {
        let properties = doc["components"]["schemas"][schema]["properties"]
            .as_object()
            .unwrap();
        for (field, property) in properties {
            let mut body = base.clone();
            body[field] = Value::Null;
            let req = app.client.request(method.clone(), app.url(path));
            let reply = app.send(req, Some(body)).await;
            if accepts_null(property) {
                assert!(
                    reply.status.is_success(),
                    "{schema}.{field}: {}",
                    reply.text()
                );
            } else {
                let problem = reply.assert_problem(422, "validation_failed");
                assert_eq!(problem["errors"][0]["field"], *field, "{schema}: {problem}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 22, "{checked}");
}
