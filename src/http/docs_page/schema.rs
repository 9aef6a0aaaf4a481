//! Schemas on the `/docs` page: a type label for any schema (with `$ref`s as
//! links to the component's anchor), constraints, and property tables (name,
//! type, required, nullable, description), nested for inline objects.

use serde_json::Value;

use super::{anchor, esc, paragraphs, yes_no};

const SCHEMA_PREFIX: &str = "#/components/schemas/";
/// Inline objects nested deeper than this are shown by type only.
const MAX_DEPTH: usize = 3;
/// Keywords shown as constraints, with their label.
const CONSTRAINTS: [(&str, &str); 11] = [
    ("default", "default"),
    ("minimum", "minimum"),
    ("maximum", "maximum"),
    ("exclusiveMinimum", "greater than"),
    ("exclusiveMaximum", "less than"),
    ("minLength", "min length"),
    ("maxLength", "max length"),
    ("minItems", "min items"),
    ("maxItems", "max items"),
    ("pattern", "pattern"),
    ("example", "example"),
];

fn schemas(doc: &Value) -> impl Iterator<Item = (&String, &Value)> {
    doc.pointer("/components/schemas")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
}

/// Links to every component schema, for the table of contents.
pub(super) fn contents(doc: &Value) -> String {
    schemas(doc)
        .map(|(name, _)| {
            format!(
                "<li><a href=\"#{}\">{}</a></li>",
                anchor("schema", name),
                esc(name)
            )
        })
        .collect()
}

/// Every component schema as an article with its anchor.
pub(super) fn section(doc: &Value) -> String {
    let articles: String = schemas(doc).map(|(name, s)| article(name, s)).collect();
    format!("<section id=\"schemas\"><h2>Schemas</h2>{articles}</section>")
}

fn article(name: &str, s: &Value) -> String {
    let closed = match s.get("additionalProperties") {
        Some(Value::Bool(false)) => "<p class=\"c\">Other keys are rejected.</p>",
        _ => "",
    };
    let nullable = match is_nullable(s) {
        true => " or <code>null</code>",
        false => "",
    };
    format!(
        "<article class=\"schema\" id=\"{}\"><h3>{}</h3>{}<p>Type: {}{nullable}{}</p>{}{closed}</article>",
        anchor("schema", name),
        esc(name),
        paragraphs(description(s)),
        type_label(s),
        constraints(s),
        property_table(s, 0),
    )
}

/// A link to the schema a `$ref` names; other references are shown as text.
pub(super) fn ref_link(reference: &str) -> String {
    match reference.strip_prefix(SCHEMA_PREFIX) {
        Some(name) => {
            let name = name.replace("~1", "/").replace("~0", "~");
            format!(
                "<a href=\"#{}\">{}</a>",
                anchor("schema", &name),
                esc(&name)
            )
        }
        None => format!("<code>{}</code>", esc(reference)),
    }
}

/// What a value of this schema is, as HTML: `string (date-time)`,
/// `array of LinkView`, `active | disabled`, ... `null` is left out (see
/// `is_nullable`).
pub(super) fn type_label(s: &Value) -> String {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        return ref_link(r);
    }
    for (key, separator) in [("oneOf", " | "), ("anyOf", " | "), ("allOf", " &amp; ")] {
        if let Some(variants) = s.get(key).and_then(Value::as_array) {
            let labels: Vec<String> = variants
                .iter()
                .filter(|v| !is_null_type(v))
                .map(type_label)
                .collect();
            return labels.join(separator);
        }
    }
    let mut label = base_type(s);
    if let Some(format) = s.get("format").and_then(Value::as_str) {
        label.push_str(&format!(" ({})", esc(format)));
    }
    if let Some(values) = s.get("enum").and_then(Value::as_array) {
        let values: Vec<String> = values.iter().map(|v| code(&literal(v))).collect();
        label.push_str(&format!(": one of {}", values.join(", ")));
    }
    label
}

fn base_type(s: &Value) -> String {
    let types: Vec<&str> = types_of(s).into_iter().filter(|t| *t != "null").collect();
    if types.is_empty() {
        let inferred = match (s.get("properties"), s.get("enum")) {
            (Some(_), _) => "object",
            (None, Some(_)) => "value",
            _ => "any",
        };
        return inferred.to_owned();
    }
    types
        .iter()
        .map(|t| match *t {
            "array" => match s.get("items") {
                Some(items) => format!("array of {}", type_label(items)),
                None => "array".to_owned(),
            },
            other => esc(other),
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

fn types_of(s: &Value) -> Vec<&str> {
    match s.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn is_null_type(s: &Value) -> bool {
    let types = types_of(s);
    !types.is_empty() && types.iter().all(|t| *t == "null")
}

/// Whether `null` is a valid value: a `null` type, `nullable: true` (OpenAPI
/// 3.0), or a `null` alternative of `oneOf`/`anyOf`.
fn is_nullable(s: &Value) -> bool {
    types_of(s).contains(&"null")
        || s.get("nullable").and_then(Value::as_bool) == Some(true)
        || ["oneOf", "anyOf"].iter().any(|k| {
            s.get(*k)
                .and_then(Value::as_array)
                .is_some_and(|vs| vs.iter().any(is_null_type))
        })
}

/// The schema's description, or the first one of its alternatives.
fn description(s: &Value) -> Option<&str> {
    if let Some(d) = s.get("description").and_then(Value::as_str) {
        return Some(d);
    }
    ["oneOf", "anyOf", "allOf"]
        .iter()
        .filter_map(|k| s.get(*k)?.as_array())
        .flatten()
        .find_map(|v| v.get("description")?.as_str())
}

/// Limits, pattern, default and example, as a small line of HTML.
pub(super) fn constraints(s: &Value) -> String {
    let mut items: Vec<String> = CONSTRAINTS
        .iter()
        .filter_map(|(key, label)| Some(format!("{label} {}", code(&literal(s.get(*key)?)))))
        .collect();
    if let Some(first) = s
        .get("examples")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        items.push(format!("example {}", code(&literal(first))));
    }
    match items.is_empty() {
        true => String::new(),
        false => format!(" <span class=\"c\">({})</span>", items.join("; ")),
    }
}

/// The properties of an object schema as a table; empty for other schemas.
pub(super) fn property_table(s: &Value, depth: usize) -> String {
    let Some(props) = s.get("properties").and_then(Value::as_object) else {
        return String::new();
    };
    let required: Vec<&str> = s
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let rows: String = props
        .iter()
        .map(|(name, p)| {
            format!(
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}{}{}</td></tr>",
                esc(name),
                type_label(p),
                yes_no(required.contains(&name.as_str())),
                yes_no(is_nullable(p)),
                paragraphs(description(p)),
                constraints(p),
                nested(p, depth),
            )
        })
        .collect();
    format!(
        "<table><tr><th>Name</th><th>Type</th><th>Required</th><th>Nullable</th>\
         <th>Description</th></tr>{rows}</table>"
    )
}

/// The property table of an inline object inside `p` (itself, its items, or
/// a non-null alternative), so it can be read without a schema of its own.
fn nested(p: &Value, depth: usize) -> String {
    if depth >= MAX_DEPTH {
        return String::new();
    }
    let alternatives = ["oneOf", "anyOf", "allOf"]
        .iter()
        .filter_map(|k| p.get(*k)?.as_array())
        .flatten();
    std::iter::once(p)
        .chain(p.get("items"))
        .chain(alternatives)
        .find(|s| s.get("properties").is_some() && s.get("$ref").is_none())
        .map(|s| property_table(s, depth + 1))
        .unwrap_or_default()
}

/// A JSON value as written in the document (strings without quotes).
fn literal(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn code(text: &str) -> String {
    format!("<code>{}</code>", esc(text))
}
