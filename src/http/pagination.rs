//! Cursor pagination. A page token is opaque: a version byte and the store
//! cursor, followed by an HMAC-SHA256 tag over them and over the query they
//! belong to (workspace, route, filters), keyed with a server secret kept in
//! the store. Any change to a token, and any token of another query, workspace
//! or server, fails the tag: 400. Parsing never fails any other way.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::Sha256;
use utoipa::ToSchema;
use utoipa::openapi::{Array, ArrayBuilder, Ref};

use crate::http::error::ApiError;
use crate::ids::WorkspaceId;

pub const DEFAULT_PAGE_SIZE: usize = 50;
pub const MAX_PAGE_SIZE: usize = 500;
/// 2: tokens with an HMAC tag (1 had a plain digest of the query).
const TOKEN_VERSION: u8 = 2;
const TAG_LEN: usize = 32;
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

/// The server's key for page tokens. Its secret is as long as SHA-256's
/// block, so HMAC uses it as it is (no hashing or padding of the key).
#[derive(Clone)]
pub struct PageTokenKey(Hmac<Sha256>);

impl PageTokenKey {
    /// The name of its secret in the store (`Store::secret`).
    pub const SECRET_NAME: &str = "page_tokens";

    pub fn new(secret: &[u8; 64]) -> PageTokenKey {
        PageTokenKey(<Hmac<Sha256> as KeyInit>::new(&(*secret).into()))
    }
}

impl std::fmt::Debug for PageTokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageTokenKey(..)")
    }
}

/// The identity of one listing: what a token is only valid for.
pub struct QueryScope(Hmac<Sha256>);

impl QueryScope {
    /// `filters` must be canonical: the same query always gives the same string.
    pub fn new(
        key: &PageTokenKey,
        workspace: &WorkspaceId,
        route: &str,
        filters: &str,
    ) -> QueryScope {
        let mut mac = key.0.clone();
        mac.update(workspace.as_bytes());
        // Lengths first, so no two (route, filters, token) triples give the same input.
        for part in [route, filters] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        QueryScope(mac)
    }

    /// The tag of a token body (version and cursor) in this scope.
    fn mac(&self, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.0.clone();
        mac.update(body);
        mac
    }

    pub fn token(&self, cursor: Option<Vec<u8>>) -> Option<String> {
        let mut raw = Vec::with_capacity(1 + cursor.as_ref()?.len() + TAG_LEN);
        raw.push(TOKEN_VERSION);
        raw.extend_from_slice(&cursor?);
        let tag = self.mac(&raw).finalize().into_bytes();
        raw.extend_from_slice(&tag);
        Some(URL_SAFE_NO_PAD.encode(raw))
    }

    /// The cursor of a token this scope made; 400 for anything else.
    fn cursor(&self, token: &str) -> Result<Vec<u8>, ApiError> {
        let bad = || {
            ApiError::bad_request("page_token is invalid, expired, or belongs to another query.")
        };
        if token.len() > MAX_TOKEN_LEN {
            return Err(bad());
        }
        let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
        let body_len = raw.len().checked_sub(TAG_LEN).ok_or_else(bad)?;
        let (body, tag) = raw.split_at(body_len);
        self.mac(body).verify_slice(tag).map_err(|_| bad())?;
        match body.split_first() {
            Some((&TOKEN_VERSION, cursor)) if !cursor.is_empty() => Ok(cursor.to_vec()),
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

    fn key(byte: u8) -> PageTokenKey {
        PageTokenKey::new(&[byte; 64])
    }

    fn parse(token: &str, scope: &QueryScope) -> Result<Option<Vec<u8>>, ApiError> {
        PageParams::parse(None, Some(token), scope).map(|p| p.cursor)
    }

    #[test]
    fn tokens_only_work_for_their_query() {
        let (k, ws) = (key(1), WorkspaceId::generate());
        let a = QueryScope::new(&k, &ws, "events", "link_id=x");
        let b = QueryScope::new(&k, &ws, "events", "link_id=y");
        let route = QueryScope::new(&k, &ws, "links", "link_id=x");
        let other_ws = QueryScope::new(&k, &WorkspaceId::generate(), "events", "link_id=x");
        let other_key = QueryScope::new(&key(2), &ws, "events", "link_id=x");
        let token = a.token(Some(vec![1, 2, 3])).unwrap();
        assert_eq!(parse(&token, &a).unwrap(), Some(vec![1, 2, 3]));
        for scope in [&b, &route, &other_ws, &other_key] {
            assert!(parse(&token, scope).is_err());
        }
        // Moving bytes between route and filters is another query.
        let shifted = QueryScope::new(&k, &ws, "eventsl", "ink_id=x");
        assert!(parse(&token, &shifted).is_err());
        assert!(parse("!!", &a).is_err());
        assert!(PageParams::parse(Some("0"), None, &a).is_err());
        assert!(PageParams::parse(Some("501"), None, &a).is_err());
        assert!(PageParams::parse(Some("x"), None, &a).is_err());
        assert_eq!(a.token(None), None);
        assert_eq!(parse("", &a).unwrap(), None, "empty is no token");
    }

    /// xorshift64*: a fixed sequence, so a failure reproduces.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    /// One fuzz input: random text, random bytes as base64, or a genuine
    /// token cut, padded, with a bit flipped, a character replaced, or its
    /// tag replaced.
    fn mutant(rng: &mut Rng, genuine: &str) -> String {
        const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let raw = URL_SAFE_NO_PAD.decode(genuine).unwrap_or_default();
        match rng.below(7) {
            0 => {
                let len = rng.below(300);
                String::from_utf8_lossy(&rng.bytes(len)).into_owned()
            }
            1 => {
                let len = rng.below(120);
                URL_SAFE_NO_PAD.encode(rng.bytes(len))
            }
            2 => genuine[..rng.below(genuine.len())].to_owned(),
            3 => {
                let pad: String = (0..1 + rng.below(8))
                    .map(|_| char::from(B64[rng.below(64)]))
                    .collect();
                format!("{genuine}{pad}")
            }
            4 => {
                let mut flipped = raw.clone();
                let i = rng.below(flipped.len());
                flipped[i] ^= 1 << rng.below(8);
                URL_SAFE_NO_PAD.encode(flipped)
            }
            5 => {
                let mut chars: Vec<u8> = genuine.bytes().collect();
                let i = rng.below(chars.len());
                chars[i] = B64[rng.below(64)];
                String::from_utf8_lossy(&chars).into_owned()
            }
            _ => {
                let mut forged = raw[..raw.len() - TAG_LEN].to_vec();
                forged.extend(rng.bytes(TAG_LEN));
                URL_SAFE_NO_PAD.encode(forged)
            }
        }
    }

    #[test]
    fn fuzz_only_a_genuine_token_yields_a_cursor() {
        let mut rng = Rng(0x5EED_CAFE_F00D_0001);
        let scope = QueryScope::new(&key(7), &WorkspaceId::generate(), "events", "");
        let cursors: Vec<Vec<u8>> = vec![vec![7; 16], vec![9; 32], vec![0], rng.bytes(16)];
        let genuine: Vec<(String, Vec<u8>)> = cursors
            .into_iter()
            .map(|c| (scope.token(Some(c.clone())).unwrap(), c))
            .collect();
        let mut accepted = 0;
        for _ in 0..20_000 {
            let (token, cursor) = &genuine[rng.below(genuine.len())];
            let input = mutant(&mut rng, token);
            match parse(&input, &scope) {
                Ok(None) => assert!(input.is_empty(), "{input:?}"),
                Ok(Some(found)) => {
                    assert_eq!(&input, token, "only a genuine token passes");
                    assert_eq!(&found, cursor);
                    accepted += 1;
                }
                Err(e) => {
                    assert!(e.to_string().starts_with("bad_request:"), "{e}");
                    assert_ne!(&input, token, "a genuine token passes");
                }
            }
        }
        // A replaced character can be the same character: the token itself.
        assert!(accepted < 1_000, "{accepted} mutants accepted");
    }
}
