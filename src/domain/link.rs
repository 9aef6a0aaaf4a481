//! Links: what a slug redirects to, and the rules for slugs, destinations,
//! tags and form definitions.

use serde::{Deserialize, Serialize};

use super::schemas::is_visible_text;
use super::{FieldError, Timestamp};
use crate::ids::{LinkId, WorkspaceId};

pub const MAX_URL_BYTES: usize = 2048;
pub const MAX_SLUG_LEN: usize = 64;
pub const GENERATED_SLUG_LEN: usize = 7;
/// Names, form titles and labels, in characters.
pub const MAX_NAME_LEN: usize = 256;
pub const MAX_TAGS: usize = 20;
/// In characters, as sent (before trimming).
pub const MAX_TAG_LEN: usize = 64;
pub const MAX_FORM_FIELDS: usize = 20;

/// Paths the server answers itself; a slug may never shadow them.
pub const RESERVED_SLUGS: &[&str] = &[
    "v1",
    "v2",
    "api",
    "healthz",
    "readyz",
    "livez",
    "health",
    "metrics",
    "openapi",
    "ui",
    "static",
    "assets",
    "admin",
    "docs",
    "login",
    "logout",
    "signup",
    "settings",
    "well-known",
    "favicon",
    "robots",
    "sitemap",
];

/// A validated slug: 1–64 of `[A-Za-z0-9_-]`, not reserved.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Slug(String);

impl Slug {
    pub fn parse(s: &str) -> Result<Slug, String> {
        if s.is_empty() || s.len() > MAX_SLUG_LEN {
            return Err(format!("must be 1 to {MAX_SLUG_LEN} characters long"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err("may contain only letters, digits, '_' and '-'".into());
        }
        if RESERVED_SLUGS.iter().any(|r| r.eq_ignore_ascii_case(s)) {
            return Err(format!("`{s}` is reserved"));
        }
        Ok(Slug(s.to_owned()))
    }

    /// A random slug of 7 base62 characters.
    pub fn generate() -> Slug {
        let out = crate::random::string_from(crate::random::BASE62, GENERATED_SLUG_LEN);
        match Slug::parse(&out) {
            Ok(slug) => slug,
            Err(_) => Slug::generate(), // a reserved word: astronomically rare
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An absolute http(s) URL of at most 2048 bytes, in normalised form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination(String);

impl Destination {
    pub fn parse(s: &str) -> Result<Destination, String> {
        if s.len() > MAX_URL_BYTES {
            return Err(format!("must be at most {MAX_URL_BYTES} bytes"));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must not contain spaces or control characters".into());
        }
        let url = url::Url::parse(s)
            .map_err(|e| format!("must be an absolute http or https URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("must be an absolute http or https URL".into());
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("must have a host".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not contain credentials".into());
        }
        let normalised: String = url.into();
        if normalised.len() > MAX_URL_BYTES {
            return Err(format!(
                "must be at most {MAX_URL_BYTES} bytes once normalised"
            ));
        }
        Ok(Destination(normalised))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// This destination with `scan_id=<id>` added to its query, keeping the
    /// other parameters and the fragment exactly as they are.
    pub fn with_scan_id(&self, scan_id: &str) -> String {
        let url = self.0.as_str();
        let (before_fragment, fragment) = match url.find('#') {
            Some(i) => url.split_at(i),
            None => (url, ""),
        };
        let separator = match before_fragment.find('?') {
            None => "?",
            Some(q) if q + 1 == before_fragment.len() || before_fragment.ends_with('&') => "",
            Some(_) => "&",
        };
        format!("{before_fragment}{separator}scan_id={scan_id}{fragment}")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LinkStatus {
    Active,
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FormFieldType {
    Email,
    Text,
    Tel,
    Number,
    Textarea,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FormField {
    #[schema(schema_with = super::schemas::form_field_name)]
    pub name: String,
    #[schema(schema_with = super::schemas::form_text)]
    pub label: String,
    #[serde(rename = "type")]
    pub field_type: FormFieldType,
    #[serde(default)]
    pub required: bool,
}

/// A form step shown before the redirect (1–20 fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Form {
    #[schema(schema_with = super::schemas::form_text)]
    pub title: String,
    #[schema(schema_with = super::schemas::form_fields)]
    pub fields: Vec<FormField>,
}

impl Form {
    pub fn validate(&self) -> Result<(), String> {
        if !is_visible_text(&self.title, MAX_NAME_LEN) {
            return Err(format!(
                "title must be 1 to {MAX_NAME_LEN} characters without control characters"
            ));
        }
        if self.fields.is_empty() || self.fields.len() > MAX_FORM_FIELDS {
            return Err(format!("must have 1 to {MAX_FORM_FIELDS} fields"));
        }
        let mut seen = std::collections::HashSet::new();
        for f in &self.fields {
            if f.name.is_empty()
                || f.name.len() > 64
                || !f
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return Err("field names must be 1 to 64 of [A-Za-z0-9_]".into());
            }
            if !seen.insert(f.name.as_str()) {
                return Err(format!("field name `{}` is used twice", f.name));
            }
            if !is_visible_text(&f.label, MAX_NAME_LEN) {
                return Err(format!(
                    "field labels must be 1 to {MAX_NAME_LEN} characters without control characters"
                ));
            }
        }
        Ok(())
    }
}

/// A stored link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    pub id: LinkId,
    pub workspace_id: WorkspaceId,
    pub slug: Slug,
    pub destination: Destination,
    pub name: Option<String>,
    pub tags: Vec<String>,
    pub conversion_tracking: bool,
    pub fallback_destination: Option<Destination>,
    pub expires_at: Option<Timestamp>,
    pub form: Option<Form>,
    pub status: LinkStatus,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Link {
    /// Whether a scan at `now` goes to the destination (else fallback or 410).
    pub fn is_live_at(&self, now: Timestamp) -> bool {
        self.status == LinkStatus::Active && self.expires_at.is_none_or(|at| now < at)
    }
}

#[cfg(test)]
impl Link {
    /// An active link of workspace `ws` with `slug` and `destination` and
    /// nothing else set, for tests.
    pub fn sample(ws: WorkspaceId, slug: &str, destination: &str) -> Link {
        NewLink {
            slug: None,
            destination: Destination::parse(destination).unwrap(),
            name: None,
            tags: Vec::new(),
            conversion_tracking: false,
            fallback_destination: None,
            expires_at: None,
            form: None,
            status: LinkStatus::Active,
        }
        .into_link(ws, Slug::parse(slug).unwrap(), Timestamp::now())
    }
}

/// A validated request to create a link; `slug: None` means generate one.
#[derive(Debug, Clone)]
pub struct NewLink {
    pub slug: Option<Slug>,
    pub destination: Destination,
    pub name: Option<String>,
    pub tags: Vec<String>,
    pub conversion_tracking: bool,
    pub fallback_destination: Option<Destination>,
    pub expires_at: Option<Timestamp>,
    pub form: Option<Form>,
    pub status: LinkStatus,
}

impl NewLink {
    pub fn into_link(self, workspace_id: WorkspaceId, slug: Slug, now: Timestamp) -> Link {
        Link {
            id: LinkId::generate(),
            workspace_id,
            slug,
            destination: self.destination,
            name: self.name,
            tags: self.tags,
            conversion_tracking: self.conversion_tracking,
            fallback_destination: self.fallback_destination,
            expires_at: self.expires_at,
            form: self.form,
            status: self.status,
            created_at: now,
            updated_at: now,
        }
    }
}

/// A validated partial update: `None` leaves a field alone, `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct LinkPatch {
    pub slug: Option<Slug>,
    pub destination: Option<Destination>,
    pub name: Option<Option<String>>,
    pub tags: Option<Vec<String>>,
    pub conversion_tracking: Option<bool>,
    pub fallback_destination: Option<Option<Destination>>,
    pub expires_at: Option<Option<Timestamp>>,
    pub form: Option<Option<Form>>,
    pub status: Option<LinkStatus>,
}

impl LinkPatch {
    pub fn apply(self, link: &mut Link, now: Timestamp) {
        set(&mut link.slug, self.slug);
        set(&mut link.destination, self.destination);
        set(&mut link.name, self.name);
        set(&mut link.tags, self.tags);
        set(&mut link.conversion_tracking, self.conversion_tracking);
        set(&mut link.fallback_destination, self.fallback_destination);
        set(&mut link.expires_at, self.expires_at);
        set(&mut link.form, self.form);
        set(&mut link.status, self.status);
        link.updated_at = now;
    }
}

/// Overwrites `slot` when a PATCH carried the field.
fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

/// Field validators shared by create and update; each pushes onto `errors`.
pub mod rules;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_rules() {
        assert!(Slug::parse("menu-2026").is_ok());
        assert!(Slug::parse("A_b-9").is_ok());
        assert!(Slug::parse("").is_err());
        assert!(Slug::parse(&"a".repeat(65)).is_err());
        assert!(Slug::parse("a/b").is_err());
        assert!(Slug::parse("café").is_err());
        assert!(Slug::parse("V1").is_err());
        assert!(Slug::parse("healthz").is_err());
        let g = Slug::generate();
        assert_eq!(g.as_str().len(), 7);
        assert!(g.as_str().bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn destination_rules() {
        assert!(Destination::parse("https://example.com/menu").is_ok());
        assert_eq!(
            Destination::parse("https://Example.COM").unwrap().as_str(),
            "https://example.com/"
        );
        for bad in [
            "javascript:alert(1)",
            "/relative",
            "example.com",
            "ftp://x.y/",
            "https://",
            "https://u:p@x.y/",
            "https://x.y/ a",
            "data:text/html,hi",
        ] {
            assert!(Destination::parse(bad).is_err(), "{bad}");
        }
        let long = format!("https://example.com/{}", "a".repeat(2048));
        assert!(Destination::parse(&long).is_err());
    }

    #[test]
    fn scan_id_keeps_query_and_fragment() {
        let d = |s: &str| Destination::parse(s).unwrap();
        assert_eq!(
            d("https://e.com/p").with_scan_id("evt_1"),
            "https://e.com/p?scan_id=evt_1"
        );
        assert_eq!(
            d("https://e.com/p?a=1&b=%20x").with_scan_id("evt_1"),
            "https://e.com/p?a=1&b=%20x&scan_id=evt_1"
        );
        assert_eq!(
            d("https://e.com/p#top").with_scan_id("evt_1"),
            "https://e.com/p?scan_id=evt_1#top"
        );
        assert_eq!(
            d("https://e.com/p?a=1#x?y").with_scan_id("evt_1"),
            "https://e.com/p?a=1&scan_id=evt_1#x?y"
        );
        assert_eq!(
            d("https://e.com/p?").with_scan_id("evt_1"),
            "https://e.com/p?scan_id=evt_1"
        );
    }
}
