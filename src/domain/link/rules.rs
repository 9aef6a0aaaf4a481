//! Field validators shared by create and update; each pushes onto `errors`.
//! `domain::schemas` states the same rules in the OpenAPI document.

use super::{Destination, FieldError, Form, MAX_NAME_LEN, MAX_TAG_LEN, MAX_TAGS, Slug};
use crate::domain::schemas::{is_plain_text, is_visible_text};

pub fn slug(raw: &str, errors: &mut Vec<FieldError>) -> Option<Slug> {
    Slug::parse(raw)
        .map_err(|m| errors.push(FieldError::new("slug", m)))
        .ok()
}

pub fn destination(field: &str, raw: &str, errors: &mut Vec<FieldError>) -> Option<Destination> {
    Destination::parse(raw)
        .map_err(|m| errors.push(FieldError::new(field, m)))
        .ok()
}

pub fn name(raw: Option<String>, errors: &mut Vec<FieldError>) -> Option<String> {
    let name = raw?;
    if !is_plain_text(&name, MAX_NAME_LEN) {
        errors.push(FieldError::new(
            "name",
            format!("must be at most {MAX_NAME_LEN} characters without control characters"),
        ));
    }
    Some(name)
}

/// Counted as sent, so the limit the document states (`maxItems`) is
/// the one enforced; duplicates are dropped after trimming.
pub fn tags(raw: Vec<String>, errors: &mut Vec<FieldError>) -> Vec<String> {
    if raw.len() > MAX_TAGS {
        errors.push(FieldError::new("tags", format!("at most {MAX_TAGS} tags")));
        return Vec::new();
    }
    let mut tags: Vec<String> = Vec::with_capacity(raw.len());
    for tag in raw {
        if !is_visible_text(&tag, MAX_TAG_LEN) {
            errors.push(FieldError::new(
                "tags",
                format!(
                    "each tag must be 1 to {MAX_TAG_LEN} characters without control characters"
                ),
            ));
            return tags;
        }
        let tag = tag.trim().to_owned();
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    tags
}

pub fn form(raw: Option<Form>, errors: &mut Vec<FieldError>) -> Option<Form> {
    let form = raw?;
    if let Err(m) = form.validate() {
        errors.push(FieldError::new("form", m));
    }
    Some(form)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Lengths are characters and counts are as sent: what the document's
    // `maxLength` and `maxItems` say (JSON Schema counts code points).
    #[test]
    fn limits_are_characters_and_tags_as_sent() {
        let mut e = Vec::new();
        assert!(name(Some("é".repeat(256)), &mut e).is_some() && e.is_empty());
        name(Some("é".repeat(257)), &mut e);
        name(Some("a\u{85}".into()), &mut e);
        assert_eq!(e.len(), 2, "{e:?}");
        let mut e = Vec::new();
        assert_eq!(tags(vec![" a ".into(), "a".into()], &mut e), ["a"]);
        assert!(e.is_empty());
        tags(vec!["a".into(); 21], &mut e);
        tags(vec![" \u{3000} ".into()], &mut e);
        tags(vec![format!(" {}", "t".repeat(64))], &mut e);
        assert_eq!(e.len(), 3, "{e:?}");
    }
}
