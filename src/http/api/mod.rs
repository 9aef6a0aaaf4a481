//! `/v1`: the REST API, one file per resource family.

pub mod events;
pub mod links;
pub mod tokens;
pub mod workspace;

use serde::{Deserialize, Deserializer};

use crate::http::error::ApiError;
use crate::ids::{Id, IdKind};

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.configure(links::configure)
        .configure(events::configure)
        .configure(workspace::configure)
        .configure(tokens::configure);
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
