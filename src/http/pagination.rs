//! Cursor pagination. A page token is opaque: a version byte, a digest of the
//! query it belongs to (workspace, route, filters), and the store cursor.
//! A token from another query or workspace fails the digest check: 400.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use utoipa::openapi::{Array, ArrayBuilder, Ref};

use crate::http::error::ApiError;
use crate::ids::WorkspaceId;

pub const DEFAULT_PAGE_SIZE: usize = 50;
pub const MAX_PAGE_SIZE: usize = 500;
const TOKEN_VERSION: u8 = 1;
const DIGEST_LEN: usize = 8;
const MAX_TOKEN_LEN: usize = 256;

/// One page of a list: its items, in the order the operation states, and the
/// token for the next page.
// Each use is its own component in the document, named by utoipa after the
// item (`ListResponse_LinkView`, ...): generated clients rely on those names.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListResponse<T: Serialize> {
    // utoipa writes a generic argument's whole schema in place, which gave
    // generated clients a second model per item type; a `$ref` keeps one.
    #[schema(schema_with = items_of::<T>)]
    pub data: Vec<T>,
    /// Pass as `page_token` for the next page; `null` on the last page.
    // Always serialized (no `skip_serializing_if`), so required though nullable.
    #[schema(required = true)]
    pub next_page_token: Option<String>,
}

/// `data` of a `ListResponse<T>`: an array of references to `T`'s component.
/// `T` must be a named component (a derived `ToSchema` struct or enum), which
/// every list item is. The operation answering with the list registers `T`;
/// tests/api/openapi.rs fails on any `$ref` that points nowhere.
fn items_of<T: ToSchema>() -> Array {
    ArrayBuilder::new()
        .items(Ref::from_schema_name(T::name()))
        .description(Some("The items of this page."))
        .build()
}

/// The identity of one listing: what a token is only valid for.
pub struct QueryScope([u8; DIGEST_LEN]);

impl QueryScope {
    /// `filters` must be canonical: the same query always gives the same string.
    pub fn new(workspace: &WorkspaceId, route: &str, filters: &str) -> QueryScope {
        let mut h = Sha256::new();
        h.update(workspace.as_bytes());
        h.update(route.as_bytes());
        h.update([0]);
        h.update(filters.as_bytes());
        let digest = h.finalize();
        let mut out = [0u8; DIGEST_LEN];
        out.copy_from_slice(&digest[..DIGEST_LEN]);
        QueryScope(out)
    }

    pub fn token(&self, cursor: Option<Vec<u8>>) -> Option<String> {
        let cursor = cursor?;
        let mut raw = Vec::with_capacity(1 + DIGEST_LEN + cursor.len());
        raw.push(TOKEN_VERSION);
        raw.extend_from_slice(&self.0);
        raw.extend_from_slice(&cursor);
        Some(URL_SAFE_NO_PAD.encode(raw))
    }

    fn cursor(&self, token: &str) -> Result<Vec<u8>, ApiError> {
        let bad = || {
            ApiError::bad_request("page_token is invalid, expired, or belongs to another query.")
        };
        if token.len() > MAX_TOKEN_LEN {
            return Err(bad());
        }
        let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
        match raw.split_first() {
            Some((&TOKEN_VERSION, rest))
                if rest.len() > DIGEST_LEN && rest[..DIGEST_LEN] == self.0 =>
            {
                Ok(rest[DIGEST_LEN..].to_vec())
            }
            _ => Err(bad()),
        }
    }
}

/// A validated `page_size` and decoded `page_token`.
pub struct PageParams {
    pub size: usize,
    pub cursor: Option<Vec<u8>>,
}

impl PageParams {
    pub fn parse(
        page_size: Option<&str>,
        page_token: Option<&str>,
        scope: &QueryScope,
    ) -> Result<PageParams, ApiError> {
        let size = match page_size {
            None => DEFAULT_PAGE_SIZE,
            Some(s) => match s.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => n,
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "page_size must be an integer from 1 to {MAX_PAGE_SIZE}."
                    )));
                }
            },
        };
        let cursor = match page_token {
            None | Some("") => None,
            Some(t) => Some(scope.cursor(t)?),
        };
        Ok(PageParams { size, cursor })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_only_work_for_their_query() {
        let ws = WorkspaceId::generate();
        let a = QueryScope::new(&ws, "events", "link_id=x");
        let b = QueryScope::new(&ws, "events", "link_id=y");
        let other_ws = QueryScope::new(&WorkspaceId::generate(), "events", "link_id=x");
        let token = a.token(Some(vec![1, 2, 3])).unwrap();
        assert_eq!(
            PageParams::parse(None, Some(&token), &a).unwrap().cursor,
            Some(vec![1, 2, 3])
        );
        assert!(PageParams::parse(None, Some(&token), &b).is_err());
        assert!(PageParams::parse(None, Some(&token), &other_ws).is_err());
        assert!(PageParams::parse(None, Some("!!"), &a).is_err());
        assert!(PageParams::parse(Some("0"), None, &a).is_err());
        assert!(PageParams::parse(Some("501"), None, &a).is_err());
        assert!(PageParams::parse(Some("x"), None, &a).is_err());
        assert_eq!(a.token(None), None);
    }
}
