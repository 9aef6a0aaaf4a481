//! `GET /docs`: the OpenAPI document rendered for people, once at start-up,
//! as one self-contained HTML page: inline CSS, no script, no external asset,
//! so it works offline and behind any firewall. Every string taken from the
//! document is HTML-escaped; `$ref`s become links to in-page anchors.
//! Operations are rendered by `operation.rs`, component schemas by `schema.rs`,
//! response headers by `headers.rs`.

mod headers;
mod operation;
mod schema;

use serde_json::Value;

use operation::Operation;

/// HTTP methods in the order operations of one path are listed.
const METHODS: [&str; 8] = [
    "get", "post", "put", "patch", "delete", "head", "options", "trace",
];

const STYLE: &str = "\
body{font:15px/1.5 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1b1f24;background:#fff}\
header,nav,main,footer{max-width:64rem;margin:0 auto;padding:0 1.25rem}\
header{padding-top:1.5rem}h1{margin:.2em 0}h1 small{font-size:.5em;color:#57606a}\
h2{border-bottom:2px solid #e3e6ea;padding-bottom:.2em;margin-top:2.5rem}\
h3{margin:.9rem 0 .4rem;font-size:1.05rem}h4{margin:1rem 0 .3rem;font-size:.95rem;color:#3d444d}\
code{font:13px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#f3f4f6;padding:.05em .3em;border-radius:3px}\
table{border-collapse:collapse;width:100%;font-size:14px;margin:.3rem 0}\
th,td{border:1px solid #e3e6ea;padding:.3rem .5rem;text-align:left;vertical-align:top}\
th{background:#f7f8fa}td table{margin-top:.4rem}\
.op,.schema{border:1px solid #e3e6ea;border-radius:6px;padding:0 1rem .8rem;margin:1rem 0}\
.m{display:inline-block;min-width:4em;text-align:center;border-radius:4px;color:#fff;font-size:.8rem;padding:.1em .4em;margin-right:.4em}\
.m-get{background:#1f7a3d}.m-post{background:#1b5fb4}.m-patch{background:#8a5a00}.m-put{background:#6b3fa0}\
.m-delete{background:#b42318}.m-head,.m-options,.m-trace{background:#57606a}\
.meta,.c{color:#57606a;font-size:.85rem}nav ul{padding-left:1.2rem}nav li{margin:.1rem 0}\
footer{margin-top:3rem;padding-bottom:2rem;color:#57606a;font-size:.85rem}a{color:#0b5cad}";

/// The whole page for an OpenAPI document (as JSON).
pub fn render(doc: &Value) -> String {
    let title = str_at(doc, &["info", "title"]).unwrap_or("API reference");
    let version = str_at(doc, &["info", "version"]).unwrap_or("");
    let groups = group_by_tag(doc);
    let sections: String = groups
        .iter()
        .map(|(tag, ops)| tag_section(doc, tag, ops))
        .collect();
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{t} {v}</title><style>{STYLE}</style></head><body>\
         <header><h1>{t} <small>version {v}</small></h1>{desc}</header>\
         {nav}<main>{auth}{sections}{headers}{schemas}</main>\
         <footer>Rendered from the OpenAPI {oas} document at \
         <a href=\"/openapi.json\">/openapi.json</a>.</footer></body></html>",
        t = esc(title),
        v = esc(version),
        desc = paragraphs(str_at(doc, &["info", "description"])),
        nav = contents(doc, &groups),
        auth = auth_section(doc),
        headers = headers::section(doc),
        schemas = schema::section(doc),
        oas = esc(str_at(doc, &["openapi"]).unwrap_or("")),
    )
}

/// Operations grouped by their first tag: the document's tags in order, then
/// tags only operations name, then untagged operations.
fn group_by_tag(doc: &Value) -> Vec<(String, Vec<Operation<'_>>)> {
    let mut groups: Vec<(String, Vec<Operation<'_>>)> = array_at(doc, &["tags"])
        .iter()
        .filter_map(|t| t.get("name")?.as_str())
        .map(|name| (name.to_owned(), Vec::new()))
        .collect();
    for op in operations(doc) {
        let tag = op.first_tag().unwrap_or("untagged").to_owned();
        match groups.iter_mut().find(|(name, _)| *name == tag) {
            Some((_, ops)) => ops.push(op),
            None => groups.push((tag, vec![op])),
        }
    }
    groups.retain(|(_, ops)| !ops.is_empty());
    groups
}

fn operations(doc: &Value) -> Vec<Operation<'_>> {
    let Some(paths) = doc.get("paths").and_then(Value::as_object) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (path, item) in paths {
        for method in METHODS {
            if let Some(op) = item.get(method).filter(|op| op.is_object()) {
                out.push(Operation { path, method, op });
            }
        }
    }
    out
}

fn contents(doc: &Value, groups: &[(String, Vec<Operation<'_>>)]) -> String {
    let tags: String = groups
        .iter()
        .map(|(tag, ops)| {
            let items: String = ops
                .iter()
                .map(|o| {
                    let (m, p) = (o.method.to_uppercase(), esc(o.path));
                    format!("<li><a href=\"#{}\">{m} {p}</a></li>", o.anchor())
                })
                .collect();
            let id = anchor("tag", tag);
            format!(
                "<li><a href=\"#{id}\">{}</a><ul>{items}</ul></li>",
                esc(tag)
            )
        })
        .collect();
    format!(
        "<nav><h2>Contents</h2><ul><li><a href=\"#authentication\">Authentication</a></li>\
         {tags}{}<li><a href=\"#schemas\">Schemas</a><ul>{}</ul></li></ul></nav>",
        headers::contents(doc),
        schema::contents(doc)
    )
}

fn auth_section(doc: &Value) -> String {
    let schemes = doc
        .pointer("/components/securitySchemes")
        .and_then(Value::as_object);
    let rows: String = schemes
        .into_iter()
        .flatten()
        .map(|(name, s)| {
            let fields = ["type", "scheme", "bearerFormat", "in", "name"]
                .iter()
                .filter_map(|k| Some(format!("{k} <code>{}</code>", esc(s.get(*k)?.as_str()?))))
                .collect::<Vec<_>>()
                .join(", ");
            let desc = paragraphs(s.get("description").and_then(Value::as_str));
            format!(
                "<tr><td><code>{}</code></td><td>{fields}</td><td>{desc}</td></tr>",
                esc(name)
            )
        })
        .collect();
    let table = match rows.is_empty() {
        true => "<p>The document declares no security schemes.</p>".to_owned(),
        false => format!(
            "<table><tr><th>Scheme</th><th>Kind</th><th>Description</th></tr>{rows}</table>"
        ),
    };
    format!(
        "<section id=\"authentication\"><h2>Authentication</h2>{table}\
         <p>Unless an operation says otherwise, every operation requires: {}.</p></section>",
        requirement(doc.get("security"))
    )
}

/// A security requirement list as text: alternatives joined with "or".
fn requirement(security: Option<&Value>) -> String {
    let Some(list) = security.and_then(Value::as_array) else {
        return "nothing".to_owned();
    };
    let alternatives: Vec<String> = list
        .iter()
        .filter_map(Value::as_object)
        .map(|req| match req.is_empty() {
            true => "no authentication".to_owned(),
            false => req
                .keys()
                .map(|k| format!("<code>{}</code>", esc(k)))
                .collect::<Vec<_>>()
                .join(" and "),
        })
        .collect();
    match alternatives.is_empty() {
        true => "no authentication".to_owned(),
        false => alternatives.join(" or "),
    }
}

fn tag_section(doc: &Value, tag: &str, ops: &[Operation<'_>]) -> String {
    let desc = array_at(doc, &["tags"])
        .iter()
        .find(|t| t.get("name").and_then(Value::as_str) == Some(tag))
        .and_then(|t| t.get("description")?.as_str());
    let body: String = ops.iter().map(|o| operation::render(doc, o)).collect();
    format!(
        "<section id=\"{}\"><h2>{}</h2>{}{body}</section>",
        anchor("tag", tag),
        esc(tag),
        paragraphs(desc)
    )
}

/// Escapes text for element content and quoted attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Prose from the document: escaped, `backticked` spans as `<code>`, blank
/// lines as paragraph breaks. `None` gives nothing.
fn paragraphs(text: Option<&str>) -> String {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return String::new();
    };
    text.split("\n\n")
        .map(|p| format!("<p>{}</p>", inline_code(p.trim())))
        .collect()
}

fn inline_code(text: &str) -> String {
    let parts: Vec<&str> = text.split('`').collect();
    if parts.len().is_multiple_of(2) {
        return esc(text); // an unpaired backtick: show the text as it is
    }
    parts
        .iter()
        .enumerate()
        .map(|(i, part)| match i % 2 {
            1 => format!("<code>{}</code>", esc(part)),
            _ => esc(part),
        })
        .collect()
}

/// An element ID from any name: only `[A-Za-z0-9_-]` survive, so the result
/// needs no escaping.
fn anchor(kind: &str, name: &str) -> String {
    let name: String = name
        .chars()
        .map(
            |c| match c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                true => c,
                false => '-',
            },
        )
        .collect();
    format!("{kind}-{name}")
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(*k))?.as_str()
}

fn array_at<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    path.iter()
        .try_fold(v, |v, k| v.get(*k))
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const EVIL: &str = "<script>alert('x')</script>\"><img src=x>";

    /// A document with markup in every kind of string the page shows.
    fn hostile_document() -> Value {
        json!({
            "openapi": "3.1.0",
            "info": {"title": EVIL, "version": EVIL, "description": format!("`{EVIL}` and {EVIL}")},
            "tags": [{"name": EVIL, "description": EVIL}],
            "security": [{EVIL: []}],
            "paths": {format!("/v1/{EVIL}"): {"get": {
                "tags": [EVIL], "summary": EVIL, "description": EVIL, "operationId": EVIL,
                "parameters": [{"name": EVIL, "in": EVIL, "description": EVIL,
                    "schema": {"type": "string", "pattern": EVIL, "enum": [EVIL]}}],
                "requestBody": {"content": {EVIL: {"schema": {"type": "object",
                    "properties": {EVIL: {"type": ["string", "null"], "description": EVIL}}}}}},
                "responses": {EVIL: {"description": EVIL,
                    "headers": {EVIL: {"$ref": format!("#/components/headers/{EVIL}")}},
                    "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{EVIL}")}}}}}
            }}},
            "components": {
                "headers": {EVIL: {"schema": {"type": "string"}, "description": EVIL, "example": EVIL}},
                "securitySchemes": {EVIL: {"type": "http", "scheme": EVIL, "description": EVIL}},
                "schemas": {EVIL: {"type": "object", "description": EVIL, "required": [EVIL],
                    "properties": {EVIL: {"oneOf": [{"$ref": "#/components/schemas/Other"}, {"type": "null"}],
                        "examples": [EVIL]}}}}
            }
        })
    }

    #[test]
    fn every_string_of_the_document_is_escaped() {
        let page = render(&hostile_document());
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains("<img"), "{page}");
        assert!(!page.contains("'x'"), "single quotes escaped too");
        assert!(page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&quot;&gt;"));
        assert!(
            page.contains("<code>&lt;script&gt;"),
            "backticks still give code"
        );
    }

    #[test]
    fn refs_are_in_page_anchors_and_nullability_is_shown() {
        let page = render(&hostile_document());
        let anchor_id = anchor("schema", EVIL);
        assert!(
            anchor_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert!(page.contains(&format!("id=\"{anchor_id}\"")));
        assert!(page.contains(&format!("href=\"#{anchor_id}\"")));
        let header_id = anchor("header", EVIL);
        assert!(page.contains(&format!("id=\"{header_id}\"")));
        assert!(page.contains(&format!("href=\"#{header_id}\"")));
        assert!(page.contains("<a href=\"#schema-Other\">Other</a></td><td>yes</td><td>yes</td>"));
    }

    #[test]
    fn an_empty_document_still_renders_a_page() {
        let page = render(&Value::Null);
        assert!(page.starts_with("<!doctype html>") && page.ends_with("</html>"));
        assert!(page.contains("API reference"));
    }
}
