//! The bodies of `POST /v1/webhooks`, `PATCH /v1/webhooks/{id}` and
//! `POST /v1/webhooks/{id}/recover`, their validation, and the schemas that
//! state those rules in the OpenAPI document.

use serde::Deserialize;
use utoipa::openapi::schema::{
    ArrayBuilder, KnownFormat, Object, ObjectBuilder, OneOfBuilder, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use super::{not_null, present};
use crate::domain::schemas::{NO_CONTROL, URL, is_plain_text};
use crate::domain::webhook::{
    EventType, MAX_EVENTS, MAX_LINK_IDS, MAX_NAME_LEN, MAX_SECRET_LEN, MIN_RAW_SECRET_LEN,
    WebhookStatus, parse_secret, webhook_url,
};
use crate::domain::{FieldError, Timestamp};
use crate::ids::LinkId;

/// A `whsec_` secret whose base64 part is canonical and decodes to 16 to 66
/// bytes.
const WHSEC: &str = "whsec_(?:[A-Za-z0-9+/]{4}){5,21}\
    (?:[A-Za-z0-9+/]{4}|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=|[A-Za-z0-9+/][AQgw]==)";

/// What `parse_secret` accepts: a `WHSEC` secret, or any other 16 to 100
/// characters without control characters.
fn secret_pattern() -> String {
    format!("^(?:{WHSEC}|(?!whsec_)[^\\x00-\\x1F\\x7F-\\x9F]{{16,100}})$")
}

fn url_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(crate::domain::link::MAX_URL_BYTES))
        .pattern(Some(URL))
        .description(Some(
            "Absolute http or https URL without credentials. The pattern is the canonical \
             form; other absolute http(s) URLs are accepted too and stored normalised. A \
             URL whose host is a loopback, private, link-local or otherwise non-public IP \
             address is refused (422) unless the server allows private targets; names are \
             checked when they are resolved, at every delivery.",
        ))
        .examples(["https://crm.example/hooks/scanhop"])
        .build()
}

fn events_schema() -> ArrayBuilder {
    let names: Vec<&str> = EventType::SUBSCRIBABLE.iter().map(|t| t.as_str()).collect();
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(names)),
        )
        .min_items(Some(1))
        .max_items(Some(MAX_EVENTS))
        .description(Some(
            "Event types to send (duplicates are dropped). `webhook.test` messages are sent \
             whatever the hook subscribes to.",
        ))
}

fn link_ids_schema() -> RefOr<Schema> {
    OneOfBuilder::new()
        .item(
            ArrayBuilder::new()
                .items(LinkId::schema())
                .min_items(Some(1))
                .max_items(Some(MAX_LINK_IDS)),
        )
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .description(Some(
            "Links of the workspace whose events are sent; `null` (the default) means all.",
        ))
        .into()
}

fn name_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .max_length(Some(MAX_NAME_LEN))
        .pattern(Some(NO_CONTROL))
        .build()
}

fn secret_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(MIN_RAW_SECRET_LEN))
        .max_length(Some(MAX_SECRET_LEN))
        .pattern(Some(secret_pattern()))
        .description(Some(
            "Your own secret: `whsec_` + standard base64 (16 to 66 bytes), or any 16 to 100 \
             characters, used as their UTF-8 bytes. Generated when left out. The answer \
             always shows the `whsec_` form.",
        ))
        .build()
}

/// `active`, `paused` or `disabled` (`auto_disabled` is set by the server).
fn settable_status_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["active", "paused", "disabled"]))
        .description(Some(
            "`active` re-enables a `paused`, `disabled` or `auto_disabled` hook and resets \
             `consecutive_failures`; `paused` holds messages until it is active again; \
             `disabled` stops new messages and fails the pending ones.",
        ))
        .build()
}

fn since_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
        .description(Some(
            "Messages made at or after this time that failed are queued again.",
        ))
        .build()
}

/// A validated hook definition (each field when given).
#[derive(Debug, Default)]
pub struct HookFields {
    pub url: Option<String>,
    pub events: Option<Vec<EventType>>,
    pub name: Option<Option<String>>,
    pub link_ids: Option<Option<Vec<LinkId>>>,
    pub status: Option<WebhookStatus>,
}

fn url_rule(raw: &str, allow_private: bool, e: &mut Vec<FieldError>) -> Option<String> {
    webhook_url(raw, allow_private)
        .map_err(|m| e.push(FieldError::new("url", m)))
        .ok()
}

fn events_rule(raw: Vec<String>, e: &mut Vec<FieldError>) -> Option<Vec<EventType>> {
    if raw.is_empty() || raw.len() > MAX_EVENTS {
        e.push(FieldError::new(
            "events",
            format!("must list 1 to {MAX_EVENTS} event types"),
        ));
        return None;
    }
    let mut out = Vec::new();
    for name in &raw {
        match EventType::parse_subscribable(name) {
            Some(t) if !out.contains(&t) => out.push(t),
            Some(_) => {}
            None => {
                e.push(FieldError::new(
                    "events",
                    format!(
                        "`{name}` is not an event type; use qr.scanned, step.completed or \
                         visitor.identified"
                    ),
                ));
                return None;
            }
        }
    }
    Some(out)
}

fn name_rule(raw: Option<String>, e: &mut Vec<FieldError>) -> Option<String> {
    let name = raw?;
    if !is_plain_text(&name, MAX_NAME_LEN) {
        e.push(FieldError::new(
            "name",
            format!("must be at most {MAX_NAME_LEN} characters without control characters"),
        ));
    }
    Some(name)
}

/// The IDs as sent, without duplicates; whether each is a link of the
/// workspace is checked by the handler.
fn link_ids_rule(raw: Option<Vec<String>>, e: &mut Vec<FieldError>) -> Option<Vec<LinkId>> {
    let raw = raw?;
    if raw.is_empty() || raw.len() > MAX_LINK_IDS {
        e.push(FieldError::new(
            "link_ids",
            format!("must list 1 to {MAX_LINK_IDS} link IDs, or be null for all links"),
        ));
        return None;
    }
    let mut out = Vec::new();
    for id in &raw {
        match id.parse::<LinkId>() {
            Ok(id) if !out.contains(&id) => out.push(id),
            Ok(_) => {}
            Err(err) => {
                e.push(FieldError::new(
                    "link_ids",
                    format!("`{id}` is not a link ID: {err}"),
                ));
                return None;
            }
        }
    }
    Some(out)
}

/// `POST /v1/webhooks`: `url` and `events` are required.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookBody {
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = url_schema, required = true)]
    url: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = events_schema, required = true)]
    events: Option<Option<Vec<String>>>,
    /// A label for people, at most 100 characters.
    #[schema(schema_with = name_schema)]
    name: Option<String>,
    #[schema(schema_with = link_ids_schema)]
    link_ids: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = secret_schema)]
    secret: Option<Option<String>>,
}

impl CreateWebhookBody {
    /// The hook's fields and its key (`None`: generate one).
    pub fn parse(
        self,
        allow_private: bool,
    ) -> Result<(HookFields, Option<Vec<u8>>), Vec<FieldError>> {
        let mut e = Vec::new();
        let url = match self.url {
            None => {
                e.push(FieldError::new("url", "is required"));
                None
            }
            sent => not_null("url", sent, &mut e).and_then(|u| url_rule(&u, allow_private, &mut e)),
        };
        let events = match self.events {
            None => {
                e.push(FieldError::new("events", "is required"));
                None
            }
            sent => not_null("events", sent, &mut e).and_then(|v| events_rule(v, &mut e)),
        };
        let name = name_rule(self.name, &mut e);
        let link_ids = link_ids_rule(self.link_ids, &mut e);
        let key = not_null("secret", self.secret, &mut e).and_then(|s| {
            parse_secret(&s)
                .map_err(|m| e.push(FieldError::new("secret", m)))
                .ok()
        });
        if !e.is_empty() {
            return Err(e);
        }
        Ok((
            HookFields {
                url,
                events,
                name: Some(name),
                link_ids: Some(link_ids),
                status: None,
            },
            key,
        ))
    }
}

/// `PATCH /v1/webhooks/{id}`: keys present are set; `null` clears `name`,
/// and sets `link_ids` to all links.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhookBody {
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = url_schema)]
    url: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = events_schema)]
    events: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = name_schema)]
    name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = link_ids_schema)]
    link_ids: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = settable_status_schema)]
    status: Option<Option<String>>,
}

impl UpdateWebhookBody {
    pub fn parse(self, allow_private: bool) -> Result<HookFields, Vec<FieldError>> {
        let mut e = Vec::new();
        let url =
            not_null("url", self.url, &mut e).and_then(|u| url_rule(&u, allow_private, &mut e));
        let events = not_null("events", self.events, &mut e).and_then(|v| events_rule(v, &mut e));
        let name = self.name.map(|n| name_rule(n, &mut e));
        let link_ids = self.link_ids.map(|l| link_ids_rule(l, &mut e));
        let status = not_null("status", self.status, &mut e).and_then(|s| match s.as_str() {
            "active" => Some(WebhookStatus::Active),
            "paused" => Some(WebhookStatus::Paused),
            "disabled" => Some(WebhookStatus::Disabled),
            "auto_disabled" => {
                e.push(FieldError::new(
                    "status",
                    "`auto_disabled` is set by the server only; use `active`, `paused` or `disabled`",
                ));
                None
            }
            _ => {
                e.push(FieldError::new(
                    "status",
                    "must be `active`, `paused` or `disabled`",
                ));
                None
            }
        });
        match e.is_empty() {
            true => Ok(HookFields {
                url,
                events,
                name,
                link_ids,
                status,
            }),
            false => Err(e),
        }
    }
}

/// `POST /v1/webhooks/{id}/recover`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoverBody {
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = since_schema, required = true)]
    since: Option<Option<String>>,
}

impl RecoverBody {
    pub fn parse(self) -> Result<Timestamp, Vec<FieldError>> {
        let mut e = Vec::new();
        let since = match self.since {
            None => {
                e.push(FieldError::new("since", "is required"));
                None
            }
            sent => not_null("since", sent, &mut e),
        };
        match since.map(|s| s.parse::<Timestamp>()) {
            Some(Ok(t)) if e.is_empty() => Ok(t),
            Some(Err(err)) => Err(vec![FieldError::new("since", err.to_string())]),
            _ => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_secret_pattern_states_what_parse_secret_accepts() {
        let re = regex::Regex::new(&format!("^{WHSEC}$")).unwrap();
        assert!(secret_pattern().contains(WHSEC));
        for ok in [
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "whsec_QUFBQUFBQUFBQUFBQUFBQUE=",
            "whsec_QUFBQUFBQUFBQUFBQUFBQQ==",
        ] {
            assert!(re.is_match(ok), "{ok}");
            assert!(parse_secret(ok).is_ok(), "{ok}");
        }
        // Non-canonical trailing bits: refused by both.
        let bad = "whsec_QUFBQUFBQUFBQUFBQUFBQR==";
        assert!(parse_secret(bad).is_err());
        assert!(!re.is_match(bad));
    }
}
