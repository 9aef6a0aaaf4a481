//! `GET /v1/links/{id}/qr`: the link's QR code as SVG or PNG. The rendering
//! and its scannability rules live in `crate::qr`; this only maps the query,
//! the caching headers and the errors.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, get, web};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::links::find_link;
use super::query_value;
use crate::http::auth::SecretCaller;
use crate::http::error::ApiError;
use crate::http::{AppState, header_str};
use crate::ids::LinkId;
use crate::qr::{self, QrError, QrOptions, RawOptions};

/// The image changes only when the slug or `public_base_url` does, and then
/// its ETag changes too; an hour bounds how long a stale copy may live.
const CACHE_CONTROL: &str = "private, max-age=3600";

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(link_qr);
}

/// Image format of a QR code.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // Only describes the parameter in the OpenAPI document.
pub enum QrFormat {
    Svg,
    Png,
}

/// Error correction level of a QR code: L 7 %, M 15 %, Q 25 %, H 30 % of the
/// code may be damaged and still read.
#[derive(ToSchema)]
#[allow(dead_code, clippy::upper_case_acronyms)] // Only describes the parameter.
pub enum QrEcc {
    L,
    M,
    Q,
    H,
}

/// A PNG image: bytes, not the array of integers `Vec<u8>` would document.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary, content_media_type = "image/png")]
#[allow(dead_code)] // Only describes the answer in the OpenAPI document.
pub struct PngImage(Vec<u8>);

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QrQuery {
    /// `svg` (default) or `png`.
    #[param(value_type = Option<QrFormat>)]
    format: Option<String>,
    /// Width and height of the image in pixels, 64 to 4096, default 512. Modules
    /// are whole pixels (PNG); what is left over widens the quiet zone.
    #[param(value_type = Option<u32>, minimum = 64, maximum = 4096)]
    size: Option<String>,
    /// Quiet zone around the code in modules, 2 to 16, default 4. (0 and 1
    /// parse, but are refused as unscannable, so the schema starts at 2.)
    #[param(value_type = Option<u32>, minimum = 2, maximum = 16)]
    margin: Option<String>,
    /// Error correction level, default `M`.
    #[param(value_type = Option<QrEcc>)]
    ecc: Option<String>,
    /// Colour of the dark modules: 6 hex digits, no `#`, default `000000`.
    #[param(value_type = Option<String>, pattern = "^[0-9A-Fa-f]{6}$")]
    fg: Option<String>,
    /// Background colour: 6 hex digits, no `#`, default `ffffff`. Must be
    /// lighter than `fg` with a contrast ratio of at least 3:1.
    #[param(value_type = Option<String>, pattern = "^[0-9A-Fa-f]{6}$")]
    bg: Option<String>,
}

impl QrQuery {
    /// An empty value (`?size=`) is refused like in every other query, rather
    /// than read as the default.
    fn options(&self) -> Result<QrOptions, ApiError> {
        Ok(QrOptions::parse(RawOptions {
            format: query_value("format", &self.format)?,
            size: query_value("size", &self.size)?,
            margin: query_value("margin", &self.margin)?,
            ecc: query_value("ecc", &self.ecc)?,
            fg: query_value("fg", &self.fg)?,
            bg: query_value("bg", &self.bg)?,
        })?)
    }
}

impl From<QrError> for ApiError {
    fn from(e: QrError) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

#[utoipa::path(tag = "links",
    params(("id" = LinkId, Path, description = "Link ID (lnk_...)"), QrQuery),
    responses(
        (status = 200, description = "The QR code of the link's `short_url`, with `ETag` and \
            `Cache-Control: private, max-age=3600`",
            content((String = "image/svg+xml"), (PngImage = "image/png"))),
        (status = 304, description = "Not modified: `If-None-Match` named the current `ETag`")))]
#[get("/links/{id}/qr")]
async fn link_qr(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: SecretCaller,
    id: web::Path<String>,
    q: web::Query<QrQuery>,
) -> Result<HttpResponse, ApiError> {
    let link = find_link(&state, &caller, &id)?;
    let options = q.options()?;
    let text = state.settings.short_url(link.slug.as_str());
    let etag = qr::etag(&text, &options);
    let not_modified = matches_etag(header_str(&req, header::IF_NONE_MATCH), &etag);
    let mut resp = if not_modified {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    resp.insert_header((header::ETAG, etag)).insert_header((
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    ));
    if not_modified {
        return Ok(resp.finish());
    }
    // A 4096-pixel PNG takes tens of milliseconds: off the worker thread, so
    // redirects served by the same worker do not wait for it.
    let (bytes, content_type) = web::block(move || qr::render(&text, &options))
        .await
        .map_err(|e| ApiError::internal(&e))??;
    Ok(resp.content_type(content_type).body(bytes))
}

/// `If-None-Match` uses weak comparison (RFC 9110, 13.1.2): `W/` is ignored,
/// and `*` matches any current image.
fn matches_etag(if_none_match: Option<&str>, etag: &str) -> bool {
    if_none_match.is_some_and(|v| {
        v.split(',')
            .map(str::trim)
            .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
    })
}
