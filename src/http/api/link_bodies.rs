//! The bodies of `POST /v1/links` and `PATCH /v1/links/{id}` and their
//! validation. Both take the same fields with the same rules; `null` is
//! accepted only for the nullable ones (`name`, `fallback_destination`,
//! `expires_at`, `form`), where it means "none".

use serde::Deserialize;
use utoipa::ToSchema;

use super::{not_null, present};
use crate::domain::link::rules;
use crate::domain::schemas;
use crate::domain::{FieldError, Form, LinkPatch, LinkStatus, NewLink, Timestamp};
use crate::http::error::ApiError;

/// `POST /v1/links`: only `destination` is required.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLinkBody {
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = schemas::destination, required = true)]
    destination: Option<Option<String>>,
    /// Generated (7 base62 characters) when omitted.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = schemas::slug)]
    slug: Option<Option<String>>,
    #[schema(schema_with = schemas::link_name)]
    name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = schemas::tags)]
    tags: Option<Option<Vec<String>>>,
    /// Adds `scan_id` to the redirect (default false).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = bool)]
    conversion_tracking: Option<Option<bool>>,
    #[schema(schema_with = schemas::fallback_destination)]
    fallback_destination: Option<String>,
    #[schema(schema_with = schemas::expires_at)]
    expires_at: Option<String>,
    #[schema(schema_with = schemas::form_or_null)]
    form: Option<Form>,
    /// Default `active`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = LinkStatus)]
    status: Option<Option<LinkStatus>>,
}

fn parse_expiry(raw: &str, errors: &mut Vec<FieldError>) -> Option<Timestamp> {
    raw.parse()
        .map_err(|e: crate::domain::time::TimestampError| {
            errors.push(FieldError::new("expires_at", e.to_string()))
        })
        .ok()
}

impl CreateLinkBody {
    pub fn parse(self) -> Result<NewLink, ApiError> {
        let mut e = Vec::new();
        let destination = match self.destination {
            None => {
                e.push(FieldError::new("destination", "is required"));
                None
            }
            sent => not_null("destination", sent, &mut e)
                .and_then(|d| rules::destination("destination", &d, &mut e)),
        };
        let slug = not_null("slug", self.slug, &mut e).and_then(|s| rules::slug(&s, &mut e));
        let name = rules::name(self.name, &mut e);
        let tags = not_null("tags", self.tags, &mut e).unwrap_or_default();
        let tags = rules::tags(tags, &mut e);
        let conversion_tracking = not_null("conversion_tracking", self.conversion_tracking, &mut e);
        let fallback_destination = self
            .fallback_destination
            .and_then(|d| rules::destination("fallback_destination", &d, &mut e));
        let expires_at = self.expires_at.and_then(|t| parse_expiry(&t, &mut e));
        let form = rules::form(self.form, &mut e);
        let status = not_null("status", self.status, &mut e);
        match destination {
            Some(destination) if e.is_empty() => Ok(NewLink {
                slug,
                destination,
                name,
                tags,
                conversion_tracking: conversion_tracking.unwrap_or(false),
                fallback_destination,
                expires_at,
                form,
                status: status.unwrap_or(LinkStatus::Active),
            }),
            _ => Err(ApiError::validation(e)),
        }
    }
}

/// `PATCH /v1/links/{id}`: keys present are set; `null` clears a nullable field.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateLinkBody {
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = schemas::destination)]
    destination: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = schemas::slug)]
    slug: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = schemas::link_name)]
    name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = schemas::tags)]
    tags: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = bool)]
    conversion_tracking: Option<Option<bool>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = schemas::fallback_destination)]
    fallback_destination: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = schemas::expires_at)]
    expires_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = schemas::form_or_null)]
    form: Option<Option<Form>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = LinkStatus)]
    status: Option<Option<LinkStatus>>,
}

impl UpdateLinkBody {
    pub fn parse(self) -> Result<LinkPatch, ApiError> {
        let mut e = Vec::new();
        let patch = LinkPatch {
            destination: not_null("destination", self.destination, &mut e)
                .and_then(|d| rules::destination("destination", &d, &mut e)),
            slug: not_null("slug", self.slug, &mut e).and_then(|s| rules::slug(&s, &mut e)),
            name: self.name.map(|n| rules::name(n, &mut e)),
            tags: not_null("tags", self.tags, &mut e).map(|t| rules::tags(t, &mut e)),
            conversion_tracking: not_null("conversion_tracking", self.conversion_tracking, &mut e),
            fallback_destination: self
                .fallback_destination
                .map(|f| f.and_then(|d| rules::destination("fallback_destination", &d, &mut e))),
            expires_at: self
                .expires_at
                .map(|t| t.and_then(|t| parse_expiry(&t, &mut e))),
            form: self.form.map(|f| rules::form(f, &mut e)),
            status: not_null("status", self.status, &mut e),
        };
        if e.is_empty() {
            Ok(patch)
        } else {
            Err(ApiError::validation(e))
        }
    }
}
