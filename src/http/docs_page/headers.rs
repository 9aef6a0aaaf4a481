//! Response headers on the `/docs` page: the document's `components.headers`
//! as one table, and under each operation the headers its responses carry,
//! as links into that table. Headers every response of an operation has are
//! named once below its responses, not on every row.

use serde_json::Value;

use super::{anchor, esc, paragraphs, schema};

const HEADER_PREFIX: &str = "#/components/headers/";

fn components(doc: &Value) -> impl Iterator<Item = (&String, &Value)> {
    doc.pointer("/components/headers")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
}

/// The entry of the page's contents; empty without declared headers.
pub(super) fn contents(doc: &Value) -> String {
    match components(doc).next() {
        Some(_) => "<li><a href=\"#headers\">Response headers</a></li>".to_owned(),
        None => String::new(),
    }
}

/// The table of declared headers; empty without any.
pub(super) fn section(doc: &Value) -> String {
    let rows: String = components(doc)
        .map(|(name, h)| {
            let example = h
                .get("example")
                .map(|e| format!("<code>{}</code>", esc(&example_text(e))))
                .unwrap_or_default();
            format!(
                "<tr id=\"{}\"><td><code>{}</code></td><td>{}</td><td>{}</td><td>{example}</td></tr>",
                anchor("header", name),
                esc(name),
                schema::type_label(h.get("schema").unwrap_or(&Value::Null)),
                paragraphs(h.get("description").and_then(Value::as_str)),
            )
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    format!(
        "<section id=\"headers\"><h2>Response headers</h2><table><tr><th>Header</th>\
         <th>Type</th><th>Description</th><th>Example</th></tr>{rows}</table></section>"
    )
}

fn example_text(example: &Value) -> String {
    match example {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The names of a response's headers.
pub(super) fn names(response: &Value) -> Vec<&str> {
    response
        .get("headers")
        .and_then(Value::as_object)
        .map(|h| h.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

/// The headers of `response` not in `skip`, each linked to its declaration.
pub(super) fn links(response: &Value, skip: &[&str]) -> String {
    let Some(headers) = response.get("headers").and_then(Value::as_object) else {
        return String::new();
    };
    headers
        .iter()
        .filter(|(name, _)| !skip.contains(&name.as_str()))
        .map(|(name, h)| link(name, h))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A header name; a link when it refers to a declared header.
pub(super) fn link(name: &str, header: &Value) -> String {
    match header.get("$ref").and_then(Value::as_str) {
        Some(r) if r.starts_with(HEADER_PREFIX) => {
            let target = r[HEADER_PREFIX.len()..]
                .replace("~1", "/")
                .replace("~0", "~");
            format!(
                "<a href=\"#{}\"><code>{}</code></a>",
                anchor("header", &target),
                esc(name)
            )
        }
        _ => format!("<code>{}</code>", esc(name)),
    }
}
