//! One operation on the `/docs` page: method and path, summary and
//! description, parameters, request body and responses with their headers.

use serde_json::Value;

use super::{anchor, array_at, esc, headers, paragraphs, requirement, schema, yes_no};

/// One operation of the document: a method on a path.
pub(super) struct Operation<'a> {
    pub path: &'a str,
    pub method: &'a str,
    pub op: &'a Value,
}

impl Operation<'_> {
    pub fn anchor(&self) -> String {
        anchor("op", &format!("{}-{}", self.method, self.path))
    }

    pub fn first_tag(&self) -> Option<&str> {
        self.op.get("tags")?.as_array()?.first()?.as_str()
    }
}

/// The article of one operation; `doc` gives the default security.
pub(super) fn render(doc: &Value, o: &Operation<'_>) -> String {
    let op = o.op;
    let summary = op.get("summary").and_then(Value::as_str);
    let deprecated = match op.get("deprecated").and_then(Value::as_bool) {
        Some(true) => "<p><strong>Deprecated.</strong></p>",
        _ => "",
    };
    let op_id = op
        .get("operationId")
        .and_then(Value::as_str)
        .map(|id| format!("Operation <code>{}</code> · ", esc(id)))
        .unwrap_or_default();
    let security = requirement(op.get("security").or_else(|| doc.get("security")));
    format!(
        "<article class=\"op\" id=\"{}\"><h3><span class=\"m m-{m}\">{}</span> <code>{}</code></h3>\
         {}{}{deprecated}<p class=\"meta\">{op_id}Auth: {security}</p>{}{}{}</article>",
        o.anchor(),
        o.method.to_uppercase(),
        esc(o.path),
        paragraphs(summary),
        paragraphs(op.get("description").and_then(Value::as_str)),
        parameters(op),
        request_body(op),
        responses(op),
        m = o.method,
    )
}

fn parameters(op: &Value) -> String {
    let rows: String = array_at(op, &["parameters"])
        .iter()
        .map(|p| {
            if let Some(r) = p.get("$ref").and_then(Value::as_str) {
                return format!("<tr><td colspan=\"5\">{}</td></tr>", schema::ref_link(r));
            }
            let schema = p.get("schema").unwrap_or(&Value::Null);
            format!(
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}{}</td></tr>",
                esc(p.get("name").and_then(Value::as_str).unwrap_or("")),
                esc(p.get("in").and_then(Value::as_str).unwrap_or("")),
                yes_no(p.get("required").and_then(Value::as_bool).unwrap_or(false)),
                schema::type_label(schema),
                paragraphs(p.get("description").and_then(Value::as_str)),
                schema::constraints(schema),
            )
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    format!(
        "<h4>Parameters</h4><table><tr><th>Name</th><th>In</th><th>Required</th>\
         <th>Type</th><th>Description</th></tr>{rows}</table>"
    )
}

fn request_body(op: &Value) -> String {
    let Some(body) = op.get("requestBody") else {
        return String::new();
    };
    let required = body
        .get("required")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    format!(
        "<h4>Request body ({})</h4>{}{}",
        if required { "required" } else { "optional" },
        paragraphs(body.get("description").and_then(Value::as_str)),
        content(body, true)
    )
}

fn responses(op: &Value) -> String {
    let Some(responses) = op.get("responses").and_then(Value::as_object) else {
        return String::new();
    };
    // Headers every response carries are named once, below the table.
    let mut common: Vec<&str> = responses
        .values()
        .next()
        .map(headers::names)
        .unwrap_or_default();
    common.retain(|name| responses.values().all(|r| headers::names(r).contains(name)));
    let rows: String = responses
        .iter()
        .map(|(status, r)| {
            format!(
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(status),
                paragraphs(r.get("description").and_then(Value::as_str)),
                content(r, false),
                headers::links(r, &common),
            )
        })
        .collect();
    let every = match responses.values().next() {
        Some(first) if !common.is_empty() => format!(
            "<p class=\"meta\">Every response carries {}.</p>",
            common
                .iter()
                .map(|name| headers::link(name, &first["headers"][*name]))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => String::new(),
    };
    format!(
        "<h4>Responses</h4><table><tr><th>Status</th><th>Description</th>\
         <th>Body</th><th>Headers</th></tr>{rows}</table>{every}"
    )
}

/// The media types of a body or response with their schemas; inline object
/// schemas get their property table when `expand` is set.
fn content(holder: &Value, expand: bool) -> String {
    let Some(media) = holder.get("content").and_then(Value::as_object) else {
        return "<span class=\"c\">no body</span>".to_owned();
    };
    media
        .iter()
        .map(|(media_type, m)| {
            let schema = m.get("schema").unwrap_or(&Value::Null);
            let table = if expand && schema.get("$ref").is_none() {
                schema::property_table(schema, 0)
            } else {
                String::new()
            };
            format!(
                "<p><code>{}</code>: {}</p>{table}",
                esc(media_type),
                schema::type_label(schema)
            )
        })
        .collect()
}
