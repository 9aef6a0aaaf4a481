//! `405 Method Not Allowed` with the `Allow` header (RFC 9110 §15.5.6).
//!
//! Under `/v1` a known path with a method it does not take used to fall
//! through to the scope's 404. The methods of each path are read from the
//! OpenAPI document, which is generated from the same route table as the
//! server, so `Allow` lists exactly what the document declares.

use actix_web::dev::ResourceDef;
use actix_web::http::header::{ALLOW, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use utoipa::openapi::OpenApi;
use utoipa::openapi::path::PathItem;

use crate::http::error::{ApiError, ErrorCode};

/// `Allow` of the redirect's path, `/{slug}`.
pub const SLUG: &str = "GET, HEAD";
/// `Allow` of a form step's submission, `/{slug}/form`.
pub const FORM: &str = "POST";
/// `Allow` of the operations endpoints.
pub const OPERATIONS: &str = "GET";

/// Each documented path template and the `Allow` value of its methods.
pub struct AllowTable(Vec<(ResourceDef, String)>);

impl AllowTable {
    pub fn from_document(doc: &OpenApi) -> AllowTable {
        let rows = doc
            .paths
            .paths
            .iter()
            .map(|(path, item)| (ResourceDef::new(path.as_str()), methods_of(item)))
            .filter(|(_, allow)| !allow.is_empty())
            .collect();
        AllowTable(rows)
    }

    /// The `Allow` value of the documented path `path` matches, if any.
    pub fn allow_for(&self, path: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(def, _)| def.is_match(path))
            .map(|(_, allow)| allow.as_str())
    }
}

fn methods_of(item: &PathItem) -> String {
    let declared = [
        ("GET", &item.get),
        ("HEAD", &item.head),
        ("POST", &item.post),
        ("PUT", &item.put),
        ("PATCH", &item.patch),
        ("DELETE", &item.delete),
        ("OPTIONS", &item.options),
        ("TRACE", &item.trace),
    ];
    declared
        .iter()
        .filter(|(_, op)| op.is_some())
        .map(|(method, _)| *method)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The answer for a known path and a method it does not take.
pub fn method_not_allowed(req: &HttpRequest, allow: &str) -> HttpResponse {
    let err = ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!(
            "{} is not allowed on {}; allowed: {allow}.",
            req.method(),
            req.path()
        ),
    );
    let mut resp = err.error_response();
    if let Ok(value) = HeaderValue::from_str(allow) {
        resp.headers_mut().insert(ALLOW, value);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_follows_the_document() {
        let table = AllowTable::from_document(&crate::http::openapi::document());
        assert_eq!(table.allow_for("/v1/links"), Some("GET, POST"));
        assert_eq!(
            table.allow_for("/v1/links/lnk_x"),
            Some("GET, PATCH, DELETE")
        );
        assert_eq!(table.allow_for("/v1/workspace"), Some("GET, PATCH"));
        assert_eq!(table.allow_for("/v1/tokens/tok_x"), Some("DELETE"));
        assert_eq!(table.allow_for("/v1/links/a/b"), None);
        assert_eq!(table.allow_for("/v1/nothing"), None);
    }
}
