//! The documented shape of the validated request fields: each schema here
//! states in JSON Schema what a rule of this module enforces, so the OpenAPI
//! document refuses what the server refuses. Lengths are in characters
//! (JSON Schema counts code points, and so do the rules).
//!
//! Patterns are written to mean the same in the three dialects that read
//! them: ECMA-262 (the document's), Python `re` (schemathesis) and the Rust
//! `regex` syntax (jsonschema validators): only `\xHH`/`\uHHHH` escapes,
//! explicit classes instead of `\s`, and no inline flags.

use utoipa::openapi::schema::{
    ArrayBuilder, KnownFormat, Object, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat,
    SchemaType, Type,
};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use super::link::{
    MAX_FORM_FIELDS, MAX_NAME_LEN, MAX_SLUG_LEN, MAX_TAG_LEN, MAX_TAGS, MAX_URL_BYTES,
    RESERVED_SLUGS,
};

/// No control character (Unicode category Cc, what `char::is_control` tests).
pub const NO_CONTROL: &str = "^[^\\x00-\\x1F\\x7F-\\x9F]*$";

/// No control character, and at least one character that is neither
/// control nor white space (`char::is_whitespace`): what is left after
/// `str::trim` is not empty.
pub const VISIBLE: &str = "^[^\\x00-\\x1F\\x7F-\\x9F]*\
    [^\\x00-\\x20\\x7F-\\xA0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]\
    [^\\x00-\\x1F\\x7F-\\x9F]*$";

/// An absolute http(s) URL in the canonical form `Destination::parse` keeps
/// as it is: an ASCII host whose last label is letters (so never an IPv4
/// address) and no label holds `--` (so no punycode to decode), an optional
/// port below 10000, then a path and optional query and fragment of
/// characters the URL parser never percent-encodes. Every such string of at
/// most 2048 characters is accepted and is not lengthened by normalisation.
/// The server also accepts other absolute http(s) URLs (an international
/// domain name, a non-ASCII path) and stores them normalised.
pub const URL: &str = "^https?://\
    [A-Za-z0-9]+(?:-[A-Za-z0-9]+)*(?:\\.[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*)*\\.[A-Za-z]{2,24}\
    (?::[1-9][0-9]{0,3})?\
    /[A-Za-z0-9._~!$&'()*+,;=:@%/-]*\
    (?:\\?[A-Za-z0-9._~!$&()*+,;=:@%/?-]*)?\
    (?:#[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*)?$";

/// At most `max` characters, no control character, and not only white space:
/// the rule `VISIBLE` states.
pub fn is_visible_text(s: &str, max: usize) -> bool {
    !s.trim().is_empty() && is_plain_text(s, max)
}

/// At most `max` characters and no control character: the rule `NO_CONTROL`
/// states.
pub fn is_plain_text(s: &str, max: usize) -> bool {
    s.chars().count() <= max && !s.chars().any(char::is_control)
}

/// Form field names: 1 to 64 of `[A-Za-z0-9_]`.
pub const FORM_FIELD_NAME: &str = "^[A-Za-z0-9_]{1,64}$";

fn string(nullable: bool) -> ObjectBuilder {
    let ty = match nullable {
        true => SchemaType::from_iter([Type::String, Type::Null]),
        false => SchemaType::Type(Type::String),
    };
    ObjectBuilder::new().schema_type(ty)
}

fn text(pattern: &str, max: usize, nullable: bool) -> Object {
    string(nullable)
        .max_length(Some(max))
        .pattern(Some(pattern))
        .build()
}

/// `T` or `null`, for a field whose schema is a named component.
fn ref_or_null(name: &str) -> RefOr<Schema> {
    OneOfBuilder::new()
        .item(Ref::from_schema_name(name))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .into()
}

fn url(nullable: bool, description: &str) -> Object {
    string(nullable)
        .max_length(Some(MAX_URL_BYTES))
        .pattern(Some(URL))
        .description(Some(description))
        .examples(["https://example.com/menu"])
        .build()
}

pub fn destination() -> Object {
    url(
        false,
        "Absolute http or https URL. The pattern is the canonical form; other absolute \
         http(s) URLs (international domain names, non-ASCII paths) are accepted too \
         and stored normalised.",
    )
}

pub fn fallback_destination() -> Object {
    url(
        true,
        "Where a disabled or expired link sends scanners; same rules as `destination`.",
    )
}

/// 1 to 64 of `[A-Za-z0-9_-]`, none of the reserved words in any case.
pub fn slug() -> Object {
    let reserved: Vec<String> = RESERVED_SLUGS.iter().map(|w| any_case(w)).collect();
    let pattern = format!(
        "^(?!(?:{})$)[A-Za-z0-9_-]{{1,{MAX_SLUG_LEN}}}$",
        reserved.join("|")
    );
    string(false)
        .min_length(Some(1))
        .max_length(Some(MAX_SLUG_LEN))
        .pattern(Some(pattern))
        .description(Some(format!(
            "Case-sensitive and unique. Reserved in any case: {}.",
            RESERVED_SLUGS.join(", ")
        )))
        .build()
}

/// `api` → `[Aa][Pp][Ii]`: matches the word in any case without a flag.
fn any_case(word: &str) -> String {
    word.chars()
        .map(|c| match c.is_ascii_alphabetic() {
            true => format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase()),
            false => c.to_string(),
        })
        .collect()
}

pub fn link_name() -> Object {
    text(NO_CONTROL, MAX_NAME_LEN, true)
}

/// Up to 20 tags as sent; duplicates are dropped after trimming.
pub fn tags() -> ArrayBuilder {
    ArrayBuilder::new()
        .items(text(VISIBLE, MAX_TAG_LEN, false))
        .max_items(Some(MAX_TAGS))
}

pub fn expires_at() -> Object {
    string(true)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
        .description(Some("From this moment on the link behaves as disabled."))
        .build()
}

pub fn form_or_null() -> RefOr<Schema> {
    ref_or_null("Form")
}

/// A form title or field label: 1 to 256 characters, not only spaces.
pub fn form_text() -> Object {
    text(VISIBLE, MAX_NAME_LEN, false)
}

pub fn form_fields() -> ArrayBuilder {
    ArrayBuilder::new()
        .items(Ref::from_schema_name("FormField"))
        .min_items(Some(1))
        .max_items(Some(MAX_FORM_FIELDS))
        .description(Some("Each field name is used once."))
}

pub fn form_field_name() -> Object {
    string(false).pattern(Some(FORM_FIELD_NAME)).build()
}

pub fn token_name() -> Object {
    text(NO_CONTROL, super::token::MAX_NAME_LEN, true)
}

pub fn workspace_name() -> Object {
    text(VISIBLE, super::workspace::MAX_NAME_LEN, false)
}

/// The `TimeZone` component: every time zone name the server's database
/// knows (what `validate_timezone` accepts, in canonical case).
pub struct TimeZone;

impl PartialSchema for TimeZone {
    fn schema() -> RefOr<Schema> {
        let names: Vec<String> = jiff::tz::db()
            .available()
            .map(|n| n.as_str().to_owned())
            .collect();
        string(false)
            .enum_values(Some(names))
            .description(Some(
                "An IANA time zone name such as `Europe/Vienna`, or `UTC`.",
            ))
            .into()
    }
}

impl ToSchema for TimeZone {}

/// `attributes` of `POST /v1/visitors/identify`: at most 50 keys of 1 to 64
/// characters without control characters; values are strings of at most
/// 1024 characters, numbers, booleans or `null`. (The server counts bytes:
/// keys of at most 64 and strings of at most 1024 bytes in UTF-8, which a
/// JSON Schema cannot state; ASCII text is the same either way.)
pub fn visitor_attributes() -> Object {
    let value = OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(crate::domain::visitor::MAX_STRING_BYTES)),
        )
        .item(ObjectBuilder::new().schema_type(Type::Number))
        .item(ObjectBuilder::new().schema_type(Type::Boolean))
        .item(ObjectBuilder::new().schema_type(Type::Null));
    let name = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(crate::domain::visitor::MAX_KEY_BYTES))
        .pattern(Some(NO_CONTROL));
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(Schema::from(value.build())))
        .property_names(Some(name.build()))
        .max_properties(Some(crate::domain::visitor::MAX_ATTRIBUTES))
        .description(Some(
            "Merged into the visitor's attributes; `null` removes a key. At most 50 keys \
             (also after merging) of at most 64 bytes; strings of at most 1024 bytes (UTF-8).",
        ))
        .examples([serde_json::json!({"email": "a@b.c", "converted": true, "order_value": 42.5})])
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_rules_count_characters_and_know_unicode_spaces() {
        assert!(is_visible_text("ü", 1) && is_visible_text(" a ", 3));
        for blank in ["", " ", "\u{a0}", "\u{3000}\u{2028}", "\u{85}"] {
            assert!(!is_visible_text(blank, 5), "{blank:?}");
        }
        assert!(!is_plain_text("a\u{9f}", 5) && is_plain_text("\u{a0}", 1));
        assert_eq!(
            any_case("well-known"),
            "[Ww][Ee][Ll][Ll]-[Kk][Nn][Oo][Ww][Nn]"
        );
    }
}
