//! `/v1`: the REST API, one file per resource family.

pub mod analytics;
pub mod events;
mod link_bodies;
pub mod links;
pub mod qr;
pub mod tokens;
pub mod visitors;
mod webhook_bodies;
pub mod webhooks;
pub mod workspace;

use serde::{Deserialize, Deserializer};

use crate::domain::FieldError;
use crate::http::error::ApiError;
use crate::ids::{Id, IdKind};

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.configure(links::configure)
        .configure(analytics::configure)
        .configure(qr::configure)
        .configure(events::configure)
        .configure(workspace::configure)
        .configure(tokens::configure)
        .configure(visitors::configure)
        .configure(webhooks::configure);
}

/// Parses a path or query ID; a malformed one is a 400 naming the parameter.
pub fn parse_id<K: IdKind>(param: &str, raw: &str) -> Result<Id<K>, ApiError> {
    raw.parse()
        .map_err(|e| ApiError::bad_request(format!("`{param}` is not a valid ID: {e}.")))
}

/// For PATCH bodies: a present key (even `null`) becomes `Some(..)`.
pub fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A key that may be omitted but not set to `null` (read with `present`):
/// `null` is accepted only where the document says "or null".
pub fn not_null<T>(field: &str, v: Option<Option<T>>, errors: &mut Vec<FieldError>) -> Option<T> {
    match v {
        Some(None) => {
            errors.push(FieldError::new(field, "cannot be null"));
            None
        }
        Some(Some(v)) => Some(v),
        None => None,
    }
}

/// A query parameter that was sent must have a value: an empty one (`?tag=`)
/// is refused rather than read as absent, as its schema says.
pub fn query_value<'a>(param: &str, raw: &'a Option<String>) -> Result<Option<&'a str>, ApiError> {
    match raw.as_deref() {
        Some("") => Err(ApiError::bad_request(format!(
            "`{param}` is empty; leave it out instead."
        ))),
        other => Ok(other),
    }
}
