//! `GET /docs`: the OpenAPI document as one HTML page for people, that loads
//! nothing from outside and escapes every string of the document.

use std::collections::BTreeSet;

use crate::helpers::spawn_app;

/// A start tag of an HTML page: its name and attributes (values decoded).
struct Tag {
    name: String,
    attributes: Vec<(String, String)>,
}

/// The start tags of `html`, parsed the way a browser tokenizes them:
/// comments and end tags are skipped, `<style>`/`<script>` content is raw
/// text, attribute values may be double-, single- or unquoted.
fn start_tags(html: &str) -> Vec<Tag> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        rest = &rest[open + 1..];
        if let Some(comment) = rest.strip_prefix("!--") {
            rest = comment.split_once("-->").map_or("", |(_, after)| after);
            continue;
        }
        if rest.starts_with('!') || rest.starts_with('/') {
            rest = rest.split_once('>').map_or("", |(_, after)| after);
            continue;
        }
        let name_len = rest
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(rest.len());
        let name = rest[..name_len].to_ascii_lowercase();
        let (attributes, after) = attributes(&rest[name_len..]);
        rest = after;
        if name == "style" || name == "script" {
            let close = format!("</{name}");
            rest = rest.find(&close).map_or("", |i| &rest[i..]);
        }
        out.push(Tag { name, attributes });
    }
    out
}

/// Attributes up to the `>` that ends a start tag, and the text after it.
fn attributes(mut s: &str) -> (Vec<(String, String)>, &str) {
    let mut out = Vec::new();
    loop {
        s = s.trim_start_matches(|c: char| c.is_ascii_whitespace() || c == '/');
        if s.is_empty() || s.starts_with('>') {
            return (out, s.get(1..).unwrap_or(""));
        }
        let end = s
            .find(|c: char| c.is_ascii_whitespace() || c == '=' || c == '>' || c == '/')
            .unwrap_or(s.len())
            .max(1);
        let name = s[..end].to_ascii_lowercase();
        s = s[end..].trim_start();
        let mut value = String::new();
        if let Some(v) = s.strip_prefix('=') {
            let v = v.trim_start();
            let (raw, after) = match v.chars().next() {
                Some(q @ ('"' | '\'')) => v[1..].split_once(q).unwrap_or((&v[1..], "")),
                _ => {
                    let stop = v
                        .find(|c: char| c.is_ascii_whitespace() || c == '>')
                        .unwrap_or(v.len());
                    (&v[..stop], &v[stop..])
                }
            };
            value = decode_entities(raw);
            s = after;
        }
        out.push((name, value));
    }
}

/// Character references in an attribute value: named basics and numeric ones.
fn decode_entities(raw: &str) -> String {
    let mut out = String::new();
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semi) = rest.find(';') else { break };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e => e
                .strip_prefix("#x")
                .or_else(|| e.strip_prefix("#X"))
                .map(|h| u32::from_str_radix(h, 16))
                .or_else(|| e.strip_prefix('#').map(str::parse))
                .and_then(Result::ok)
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

async fn docs_page(app: &crate::helpers::TestApp) -> String {
    let r = app.raw(app.client.get(app.url("/docs")), "").await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    r.text()
}

#[actix_rt::test]
async fn the_docs_page_shows_every_path_and_schema_of_the_document_without_auth() {
    let app = spawn_app().await;
    let doc = app
        .raw(app.client.get(app.url("/openapi.json")), "")
        .await
        .json();
    let page = docs_page(&app).await;
    for path in doc["paths"].as_object().unwrap().keys() {
        assert!(
            page.contains(&format!("<code>{path}</code>")),
            "{path} missing"
        );
    }
    let tags = start_tags(&page);
    let ids: BTreeSet<&str> = tags
        .iter()
        .flat_map(|t| &t.attributes)
        .filter(|(name, _)| name == "id")
        .map(|(_, value)| value.as_str())
        .collect();
    for schema in doc["components"]["schemas"].as_object().unwrap().keys() {
        assert!(
            ids.contains(format!("schema-{schema}").as_str()),
            "{schema}"
        );
    }
    for header in doc["components"]["headers"].as_object().unwrap().keys() {
        assert!(
            ids.contains(format!("header-{header}").as_str()),
            "{header}"
        );
    }
    assert!(
        page.contains("<a href=\"#header-RateLimit-Policy\"><code>RateLimit-Policy</code></a>")
    );
    // Every in-page link ($refs included) lands on an element of the page.
    for (_, href) in tags.iter().flat_map(|t| &t.attributes) {
        if let Some(target) = href.strip_prefix('#') {
            assert!(ids.contains(target), "dangling link #{target}");
        }
    }
}

#[actix_rt::test]
async fn the_docs_page_loads_nothing_from_outside_and_runs_no_script() {
    let app = spawn_app().await;
    let r = app.raw(app.client.get(app.url("/docs")), "").await;
    let policy = r.header("content-security-policy").unwrap();
    assert!(policy.contains("default-src 'none'"), "{policy}");
    let page = docs_page(&app).await;
    let tags = start_tags(&page);
    assert!(tags.len() > 100, "parsed only {} tags", tags.len());
    for tag in &tags {
        assert_ne!(tag.name, "script", "no script needed");
        for (name, value) in &tag.attributes {
            let value = value.trim().to_ascii_lowercase();
            let external = ["http://", "https://", "//"]
                .iter()
                .any(|p| value.starts_with(p));
            assert!(
                !(matches!(name.as_str(), "src" | "href" | "srcset" | "action") && external),
                "<{} {name}=\"{value}\"> loads from outside",
                tag.name
            );
        }
    }
    assert!(
        !page.contains("url(") && !page.contains("@import"),
        "CSS stays inline"
    );
}

#[actix_rt::test]
async fn the_docs_page_escapes_the_strings_of_the_document() {
    let app = spawn_app().await;
    let page = docs_page(&app).await;
    // The API description says `Authorization: Bearer <token>`.
    assert!(page.contains("Bearer &lt;token&gt;"), "description escaped");
    assert!(!page.contains("<token>"));
    // Only the page's own markup is markup: a `<` from any description would
    // show up here as an unknown tag.
    let own = [
        "html", "head", "meta", "title", "style", "body", "header", "h1", "small", "p", "code",
        "nav", "h2", "ul", "li", "a", "main", "section", "table", "tr", "th", "td", "article",
        "h3", "span", "h4", "strong", "footer",
    ];
    for tag in start_tags(&page) {
        assert!(
            own.contains(&tag.name.as_str()),
            "unexpected <{}>",
            tag.name
        );
    }
}

#[test]
fn the_tag_parser_sees_attributes_the_way_a_browser_does() {
    let html = "<!doctype html><!-- <a href=\"https://no\"> --><style>a<b{}</style>\
        <link rel=stylesheet HREF = 'https://cdn.example/x.css'><img src=//cdn.example/i.png alt=\"a > b\">\
        <a href=\"&#x68;ttps://e.com\">x</a></p>";
    let tags = start_tags(html);
    let names: Vec<&str> = tags.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["style", "link", "img", "a"]);
    assert_eq!(
        tags[1].attributes[1],
        ("href".into(), "https://cdn.example/x.css".into())
    );
    assert_eq!(tags[2].attributes[0].1, "//cdn.example/i.png");
    assert_eq!(tags[2].attributes[1].1, "a > b");
    assert_eq!(tags[3].attributes[0].1, "https://e.com");
}
