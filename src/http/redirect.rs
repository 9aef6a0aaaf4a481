//! `GET`/`HEAD /{slug}`: the hot path. The link comes from the Resolver's
//! cache (a miss reads it from the store on this thread), enrichment runs
//! inline, and the only await is the Recorder's acknowledgement. No
//! middleware but the request ID.

use std::time::Instant;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};

use std::net::IpAddr;

use super::error::{ApiError, ErrorCode};
use super::{AppState, client_ip_of, header_str};
use crate::actors::RecordOutcome;
use crate::actors::registry::Device;
use crate::domain::{Link, ScanMethod, Timestamp};
use crate::enrich::ScanRequest;
use crate::enrich::client_ip::Client;
use crate::ids::EventId;

const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
const REFERRER_POLICY: HeaderValue = HeaderValue::from_static("no-referrer-when-downgrade");

/// The name of the scan resource (`/{slug}`): the access log leaves its
/// requests out unless `log.access_redirects` is set.
pub const SCAN_ROUTE: &str = "scan";

/// Before `/{slug}` the router only compares static paths (the `/v1` prefix,
/// the operations endpoints), so a scan costs one regex match: the `regex`
/// crate's, through actix-web's `unicode` feature (regex-lite's took about 4%
/// of an HTTP worker's CPU per scan). A slug never holds `/`, so
/// `/{slug}/form` is never shadowed by it.
///
/// The scan's one route has no method guard: `by_method` answers `GET` and
/// `HEAD` and refuses the rest. actix-web's method guards note every method
/// they check in the request's extensions (a `Vec`, boxed, in a map): with
/// the forwarding chain kept inline, 5 allocations a scan fewer.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/{slug}")
            .name(SCAN_ROUTE)
            .route(web::route().to(by_method)),
    )
    .service(
        web::resource("/{slug}/form")
            .route(web::post().to(super::form::submit))
            .default_service(web::to(|req: HttpRequest| async move {
                super::allow::method_not_allowed(&req, super::allow::FORM)
            })),
    );
}

/// `GET` and `HEAD` scan; any other method gets 405 with `Allow`.
async fn by_method(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    match *req.method() {
        Method::GET => scan(req, state, false).await,
        Method::HEAD => scan(req, state, true).await,
        _ => super::allow::method_not_allowed(&req, super::allow::SLUG),
    }
}

/// A scan: `is_head` answers without recording (and without a body).
async fn scan(req: HttpRequest, state: web::Data<AppState>, is_head: bool) -> HttpResponse {
    let started = Instant::now();
    let slug = req.match_info().get("slug").unwrap_or_default();
    // Resolved once per redirect: the limit and the enrichment both use it.
    let client = client_ip_of(&req, &state.settings.server.trusted_proxies);
    if let Some(retry_after) = over_client_limit(&state, client) {
        state.metrics.redirects_rate_limited.inc();
        let mut resp = page(
            &req,
            ErrorCode::RateLimited,
            "Too many requests from your address; retry shortly.",
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        return resp;
    }
    let link = match state.links.get(slug) {
        Ok(Some(link)) => link,
        Ok(None) => {
            if !is_head {
                state.metrics.orphan_scans.inc();
            }
            return page(&req, ErrorCode::NotFound, "No link with this address.");
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read a scanned link from the store");
            return page(
                &req,
                ErrorCode::Unavailable,
                "Please try again in a moment.",
            );
        }
    };
    let now = state.clock.now();
    if !link.is_live_at(now) {
        return match &link.fallback_destination {
            Some(fallback) => redirect(StatusCode::FOUND, fallback.as_str()),
            None => page(&req, ErrorCode::Gone, "This link is no longer available."),
        };
    }
    let status =
        StatusCode::from_u16(state.settings.server.redirect_status).unwrap_or(StatusCode::FOUND);
    if is_head {
        if link.form.is_some() {
            return super::form::head();
        }
        return redirect(status, link.destination.as_str());
    }
    let scan_id = match record(&req, &state, &link, client.address(), now).await {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    if let (Some(form), Some(id)) = (&link.form, scan_id) {
        // The form step: the scan is recorded; the destination comes after
        // the form is submitted (`form::submit`).
        return super::form::show(&state, &link, form, id);
    }
    let with_scan_id;
    let location = match scan_id {
        Some(id) if link.conversion_tracking => {
            with_scan_id = link.destination.with_scan_id(&id.to_string());
            with_scan_id.as_str()
        }
        _ => link.destination.as_str(),
    };
    state.metrics.redirects.inc();
    state.metrics.redirect_seconds.observe(started.elapsed());
    redirect(status, location)
}

/// With `server.redirect_limit_per_minute` set: the seconds to wait when this
/// client is over its limit. Off by default, and then free.
fn over_client_limit(state: &AppState, client: Client) -> Option<u64> {
    if state.settings.server.redirect_limit_per_minute == 0 {
        return None;
    }
    state
        .limits
        .check_redirect(client)
        .and_then(|d| d.retry_after)
}

/// Records the scan; answers its ID (`None`: dropped by the overflow
/// policy), or the error response.
async fn record(
    req: &HttpRequest,
    state: &AppState,
    link: &Link,
    client_ip: Option<IpAddr>,
    now: Timestamp,
) -> Result<Option<EventId>, HttpResponse> {
    let scan = ScanRequest {
        client_ip,
        user_agent: header_str(req, header::USER_AGENT),
        accept_language: header_str(req, header::ACCEPT_LANGUAGE),
        referer: header_str(req, header::REFERER),
        ip_salt: state.salts.salt_at(now.as_millis()),
    };
    // A user agent the cache does not know is parsed by the Recorder, with
    // the others of its batch (`RecorderHandle::record`).
    let agent = state.enricher.known_agent(scan.user_agent);
    let unparsed = scan.user_agent.filter(|_| agent.is_none());
    let mut event = state.enricher.scan_event_with(
        &scan,
        link,
        ScanMethod::Get,
        link.destination.as_str().to_owned(),
        agent,
    );
    // A device the registry's cache does not know goes to the Recorder as a
    // fingerprint; it finds the visitor there, off this thread. So does
    // every device whose user agent is left to the Recorder: it may be a
    // bot's, which gets no visitor.
    let mut device = None;
    if event.bot {
        state.metrics.bot_scans.inc();
    } else {
        let scanner = Device {
            user_agent: scan.user_agent,
            accept_language: scan.accept_language,
            ip: client_ip,
            day_salt: &scan.ip_salt,
        };
        let ws = &link.workspace_id;
        let found = match unparsed {
            Some(_) => state.registry.fingerprint(ws, &scanner).map(Err),
            None => state.registry.visitor_cached(ws, &scanner),
        };
        match found {
            Ok(Ok(v)) => event.visitor_id = Some(v),
            Ok(Err(fp)) => device = Some(fp),
            // The scan still counts, without a visitor.
            Err(e) => tracing::warn!(error = %e, "cannot look up the visitor of a scan"),
        }
    }
    match state
        .recorder
        .record(event, device, unparsed.map(Box::from))
        .await
    {
        Ok(RecordOutcome::Recorded(id)) => Ok(Some(id)),
        Ok(RecordOutcome::Dropped) => Ok(None),
        Err(e) => {
            state.metrics.scans_dropped_unavailable.inc();
            tracing::warn!(error = %e, "scan not recorded; answering 503");
            Err(
                ApiError::unavailable("The scan could not be recorded; please retry.")
                    .error_response(),
            )
        }
    }
}

pub(super) fn redirect(status: StatusCode, location: &str) -> HttpResponse {
    let mut resp = HttpResponse::build(status);
    if let Ok(value) = HeaderValue::from_str(location) {
        resp.insert_header((header::LOCATION, value));
    }
    resp.insert_header((header::CACHE_CONTROL, NO_STORE))
        .insert_header((header::REFERRER_POLICY, REFERRER_POLICY))
        .finish()
}

/// A small HTML page, or problem+json when the client asks for JSON.
pub(super) fn page(req: &HttpRequest, code: ErrorCode, message: &str) -> HttpResponse {
    let wants_json = header_str(req, header::ACCEPT).is_some_and(|a| a.contains("json"));
    if wants_json {
        let mut resp = ApiError::new(code, message).error_response();
        resp.headers_mut().insert(header::CACHE_CONTROL, NO_STORE);
        return resp;
    }
    let title = code.title();
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{title}</title></head><body style=\"font-family:system-ui;margin:4rem auto;max-width:32rem;text-align:center\">\
         <h1>{title}</h1><p>{message}</p></body></html>"
    );
    HttpResponse::build(code.status())
        .insert_header((header::CACHE_CONTROL, NO_STORE))
        .content_type("text/html; charset=utf-8")
        .body(body)
}
