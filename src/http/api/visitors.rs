//! `/v1/visitors`: the visitors the registry told apart, with the profiles
//! the Visitors worker keeps (`actors::visitors`) and the attributes
//! `identify` attached.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, delete, get, options, post, web};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::events::{EventFilters, EventPageQuery, EventView, list_page};
use super::{parse_id, query_value};
use crate::actors::webhooks;
use crate::domain::schemas;
use crate::domain::visitor::{
    DeviceSeen, MAX_ATTRIBUTES, MAX_KEY_BYTES, MAX_STRING_BYTES, VisitorProfile, lead_score,
};
use crate::domain::webhook::EventType;
use crate::domain::{FieldError, Timestamp};
use crate::http::AppState;
use crate::http::auth::{Caller, SecretCaller};
use crate::http::body::JsonObject;
use crate::http::error::{ApiError, Problem};
use crate::http::pagination::{ListResponse, PageParams, QueryScope};
use crate::ids::{EventId, MessageId, VisitorId, VisitorKind};
use crate::store::{EventIndex, EventQuery, StoredAttributes};

/// Events a visitor's answer carries in `recent_events`.
const RECENT_EVENTS: usize = 20;

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    // `identify` before `{id}`, which would otherwise take it for an ID.
    cfg.service(identify)
        .service(identify_preflight)
        .service(list_visitors)
        .service(get_visitor)
        .service(erase_visitor)
        .service(visitor_events);
}

/// Segments rewritten per step of an erasure (each in its own transaction).
const ERASE_STEP: usize = 64;
/// How long an erasure waits for scans already on their way to be stored.
const SETTLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `POST /v1/visitors/identify`: a scan's ID, and what to attach to its visitor.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentifyBody {
    /// The `scan_id` the destination received (an event ID, `evt_...`).
    #[schema(value_type = EventId)]
    scan_id: String,
    #[schema(schema_with = schemas::visitor_attributes)]
    attributes: Map<String, Value>,
}

/// The attribute rules; every broken one is reported.
fn check_attributes(attributes: &Map<String, Value>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if attributes.len() > MAX_ATTRIBUTES {
        errors.push(FieldError::new(
            "attributes",
            format!(
                "has {} keys; at most {MAX_ATTRIBUTES} are allowed",
                attributes.len()
            ),
        ));
    }
    for (key, value) in attributes {
        let field = format!("attributes.{key}");
        if key.is_empty() || key.len() > MAX_KEY_BYTES || key.chars().any(char::is_control) {
            errors.push(FieldError::new(
                &field,
                format!("keys are 1 to {MAX_KEY_BYTES} bytes without control characters"),
            ));
        }
        match value {
            Value::String(s) if s.len() > MAX_STRING_BYTES => errors.push(FieldError::new(
                &field,
                format!("strings are at most {MAX_STRING_BYTES} bytes"),
            )),
            Value::Array(_) | Value::Object(_) => errors.push(FieldError::new(
                &field,
                "must be a string, number, boolean or null (no arrays or objects)",
            )),
            _ => {}
        }
    }
    errors
}

/// Answers of `identify` may be read by any web page: the token travels in
/// `Authorization`, never in a cookie, so no credentials are shared.
fn with_cors(mut resp: HttpResponse) -> HttpResponse {
    let headers = resp.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("X-Request-Id, RateLimit, RateLimit-Policy, Retry-After"),
    );
    resp
}

#[utoipa::path(tag = "visitors", request_body = IdentifyBody,
    responses((status = 200, description = "The visitor of the scan, with the merged attributes. \
        Publishable tokens may call this (and nothing else); any origin may (CORS).", body = Visitor),
        (status = 404, description = "No scan with this ID in the caller's workspace, or a bot's \
            (bots have no visitor)", body = Problem, content_type = "application/problem+json")))]
#[post("/visitors/identify")]
async fn identify(
    state: web::Data<AppState>,
    caller: Caller,
    body: JsonObject<IdentifyBody>,
) -> HttpResponse {
    let answer = identify_scan(&state, &caller, body.into_inner()).await;
    with_cors(answer.unwrap_or_else(|e| e.error_response()))
}

async fn identify_scan(
    state: &AppState,
    caller: &Caller,
    body: IdentifyBody,
) -> Result<HttpResponse, ApiError> {
    let mut errors = check_attributes(&body.attributes);
    let scan_id = body.scan_id.parse::<EventId>().map_err(|_| {
        errors.push(FieldError::new("scan_id", "must be a scan ID (evt_...)"));
    });
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let Ok(scan_id) = scan_id else {
        return Err(ApiError::validation(errors));
    };
    // A scan answered a moment ago may still be queued: it is waited for.
    let event = state
        .scan_event(scan_id)
        .await?
        .filter(|e| e.workspace_id == caller.workspace_id)
        .ok_or_else(|| ApiError::not_found("No scan with this ID."))?;
    let visitor = event
        .visitor_id
        .ok_or_else(|| ApiError::not_found("This scan has no visitor (it was a bot's)."))?;
    let incoming = body.attributes;
    let mut too_many = None;
    let written = state.store.update_visitor_attributes(&visitor, |current| {
        let mut merged: Map<String, Value> = current
            .and_then(|c| serde_json::from_str(&c.json).ok())
            .unwrap_or_default();
        for (k, v) in &incoming {
            if v.is_null() {
                merged.remove(k);
            } else {
                merged.insert(k.clone(), v.clone());
            }
        }
        if merged.len() > MAX_ATTRIBUTES {
            too_many = Some(merged.len());
            return None;
        }
        Some(StoredAttributes {
            json: Value::Object(merged).to_string(),
        })
    })?;
    let written = match (written, too_many) {
        (None, Some(n)) => {
            return Err(ApiError::validation(vec![FieldError::new(
                "attributes",
                format!("would give the visitor {n} keys; at most {MAX_ATTRIBUTES} are allowed"),
            )]));
        }
        (written, _) => written,
    };
    let all: Map<String, Value> = written
        .and_then(|w| serde_json::from_str(&w.json).ok())
        .unwrap_or_default();
    let now = Timestamp::now();
    let body = webhooks::identified_body(visitor, &all, &incoming, scan_id, now)?;
    webhooks::emit(
        &state.webhooks,
        &caller.workspace_id,
        EventType::VisitorIdentified,
        &event.link_id,
        &body,
        |_| MessageId::generate(),
        now,
    )?;
    // The profile may still be on its way (the scan was just made): then it
    // is built from this scan alone until the Visitors worker has it.
    let profile = match state.visitors.profile(&event.workspace_id, &visitor)? {
        Some(p) => p,
        None => {
            let mut p = VisitorProfile::new(
                visitor,
                event.workspace_id,
                Timestamp::from_millis(event.timestamp_ms()),
            );
            p.add_event(&event);
            p
        }
    };
    let answer = Visitor::build(state, profile, Timestamp::now())?;
    tracing::info!(visitor = %visitor, "visitor identified");
    Ok(HttpResponse::Ok().json(answer))
}

/// The CORS preflight of `identify`, so a web page on any origin can call it.
#[utoipa::path(tag = "visitors", security(()),
    responses((status = 204, description = "CORS preflight: `Access-Control-Allow-Origin: *`, \
        methods `POST`, headers `Authorization` and `Content-Type`")))]
#[options("/visitors/identify")]
async fn identify_preflight() -> HttpResponse {
    let mut resp = with_cors(HttpResponse::NoContent().finish());
    let headers = resp.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    resp
}

/// A visitor: the server's best guess at one person across scans.
#[derive(Debug, Serialize, ToSchema)]
pub struct Visitor {
    pub id: VisitorId,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub event_count: u64,
    /// Distinct links scanned (exact up to 512, then estimated).
    pub links_scanned: u64,
    /// Countries scanned from (ISO 3166 codes), up to 100.
    pub countries: Vec<String>,
    /// Distinct device, OS and browser combinations, up to 100.
    pub devices: Vec<DeviceSeen>,
    /// Set through `POST /v1/visitors/identify`; `{}` until then.
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
    /// 0 to 100, from engagement (see the README for the formula).
    #[schema(minimum = 0, maximum = 100)]
    pub lead_score: u8,
    pub identified: bool,
}

/// A visitor with its newest events.
#[derive(Debug, Serialize, ToSchema)]
pub struct VisitorDetail {
    #[serde(flatten)]
    pub visitor: Visitor,
    /// Up to 20, newest first.
    pub recent_events: Vec<EventView>,
}

impl Visitor {
    pub fn build(state: &AppState, p: VisitorProfile, now: Timestamp) -> Result<Visitor, ApiError> {
        let stored = state.store.visitor_attributes(&p.id)?;
        let identified = stored.is_some();
        let attributes: Map<String, Value> = stored
            .and_then(|a| serde_json::from_str(&a.json).ok())
            .unwrap_or_default();
        Ok(Visitor {
            id: p.id,
            first_seen: p.first_seen,
            last_seen: p.last_seen,
            event_count: p.event_count,
            links_scanned: p.links_scanned(),
            lead_score: lead_score(&p, attributes.len(), identified, now),
            countries: p.countries,
            devices: p.devices,
            attributes,
            identified,
        })
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListVisitorsQuery {
    /// Only visitors with (`true`) or without (`false`) attributes.
    #[param(value_type = Option<bool>)]
    identified: Option<String>,
    /// 1 to 500, default 50.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    page_size: Option<String>,
    /// `next_page_token` of the previous page; empty means the first page.
    page_token: Option<String>,
}

#[utoipa::path(tag = "visitors", params(ListVisitorsQuery),
    responses((status = 200, description = "Visitors, newest first", body = ListResponse<Visitor>)))]
#[get("/visitors")]
async fn list_visitors(
    state: web::Data<AppState>,
    caller: SecretCaller,
    q: web::Query<ListVisitorsQuery>,
) -> Result<HttpResponse, ApiError> {
    let identified = match query_value("identified", &q.identified)? {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => {
            return Err(ApiError::bad_request(
                "`identified` must be `true` or `false`.",
            ));
        }
    };
    let ws = caller.0.workspace_id;
    let scope = QueryScope::new(
        &state.page_tokens,
        &ws,
        "visitors",
        &format!("{identified:?}"),
    );
    let page = PageParams::parse(q.page_size.as_deref(), q.page_token.as_deref(), &scope)?;
    let store = state.store.clone();
    let found = web::block(move || {
        store.list_visitors(&ws, page.cursor.as_deref(), page.size, |p| {
            Ok(match identified {
                None => true,
                Some(want) => store.visitor_attributes(&p.id)?.is_some() == want,
            })
        })
    })
    .await
    .map_err(|e| ApiError::internal(&e))??;
    let now = Timestamp::now();
    let data = found
        .items
        .into_iter()
        .map(|p| Visitor::build(&state, p, now))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HttpResponse::Ok().json(ListResponse {
        data,
        next_page_token: scope.token(found.next_cursor),
    }))
}

/// `/visitors/identify` with a method it does not take reaches the `{id}`
/// routes: answer it as the path it is (405 with `Allow`).
fn not_an_id(req: &HttpRequest, state: &AppState, raw_id: &str) -> Option<HttpResponse> {
    (raw_id == "identify")
        .then(|| state.allow.allow_for(req.path()))
        .flatten()
        .map(|allow| crate::http::allow::method_not_allowed(req, allow))
}

/// The caller's visitor `raw_id`; another workspace's is as absent as none.
/// A visitor exists from its first committed scan (its registry and index
/// entries are written with that scan), but its profile
/// appears when the Visitors worker has folded the scan in, a moment later
/// (longer on a busy server): for a visitor of this workspace without a
/// profile yet, that moment is waited for, up to `PROFILE_SETTLE_TIMEOUT`,
/// so a client that just scanned or identified never sees a 404.
async fn find_visitor(
    state: &AppState,
    caller: &SecretCaller,
    raw_id: &str,
) -> Result<VisitorProfile, ApiError> {
    let id = parse_id::<VisitorKind>("id", raw_id)?;
    let ws = caller.0.workspace_id;
    let not_found = || ApiError::not_found("No visitor with this ID.");
    let deadline = std::time::Instant::now() + PROFILE_SETTLE_TIMEOUT;
    loop {
        if let Some(p) = state.visitors.profile(&ws, &id)? {
            return Ok(p);
        }
        let registered = state.store.visitor_has_events_in(&ws, &id)?;
        if !registered || std::time::Instant::now() >= deadline {
            return Err(not_found());
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// How long a read of a registered visitor waits for its profile.
const PROFILE_SETTLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[utoipa::path(tag = "visitors", params(("id" = VisitorId, Path, description = "Visitor ID (vis_...)")),
    responses((status = 200, description = "The visitor with its newest events", body = VisitorDetail)))]
#[get("/visitors/{id}")]
async fn get_visitor(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: SecretCaller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if let Some(resp) = not_an_id(&req, &state, &id) {
        return Ok(resp);
    }
    let profile = find_visitor(&state, &caller, &id).await?;
    let query = EventQuery::all(caller.0.workspace_id, EventIndex::Visitor(profile.id));
    let store = state.store.clone();
    let recent = web::block(move || store.list_events(&query, None, RECENT_EVENTS))
        .await
        .map_err(|e| ApiError::internal(&e))??;
    let visitor = Visitor::build(&state, profile, Timestamp::now())?;
    Ok(HttpResponse::Ok().json(VisitorDetail {
        visitor,
        recent_events: recent.items.into_iter().map(EventView::from).collect(),
    }))
}

#[utoipa::path(tag = "visitors", params(("id" = VisitorId, Path, description = "Visitor ID (vis_...)")),
    responses((status = 204, description = "Erased: the profile, attributes and fingerprint \
        entries are deleted, and the visitor's events no longer point to it (`visitor_id: null`); \
        counts stay")))]
#[delete("/visitors/{id}")]
async fn erase_visitor(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: SecretCaller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if let Some(resp) = not_an_id(&req, &state, &id) {
        return Ok(resp);
    }
    let profile = find_visitor(&state, &caller, &id).await?;
    let id = profile.id;
    let ws = caller.0.workspace_id;
    // 1. The device becomes a stranger: no new scan gets this visitor.
    let fingerprint = state.registry.forget(&ws, &id)?;
    // 2. Scans already given this visitor are stored before we go on.
    if !state.recorder.settled(SETTLE_TIMEOUT).await {
        return Err(ApiError::unavailable(
            "Scans in flight were not stored in time; retry the erasure.",
        ));
    }
    // 3. The Visitors worker drops it; 4. its records go and its events are
    // detached, segment by segment. Each step can be redone, so a retry
    // after a failure finishes the job.
    state.visitors.erase(&id);
    let store = state.store.clone();
    web::block(move || -> Result<(), crate::store::StoreError> {
        while store.detach_visitor_step(&id, ERASE_STEP)? > 0 {}
        store.erase_visitor_records(&id, &ws, fingerprint)?;
        store.flush()?;
        Ok(())
    })
    .await
    .map_err(|e| ApiError::internal(&e))??;
    tracing::info!(visitor = %id, "visitor erased");
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(tag = "visitors",
    params(("id" = VisitorId, Path, description = "Visitor ID (vis_...)"), EventPageQuery),
    responses((status = 200, description = "The visitor's events, newest first", body = ListResponse<EventView>)))]
#[get("/visitors/{id}/events")]
async fn visitor_events(
    state: web::Data<AppState>,
    caller: SecretCaller,
    id: web::Path<String>,
    q: web::Query<EventPageQuery>,
) -> Result<HttpResponse, ApiError> {
    let profile = find_visitor(&state, &caller, &id).await?;
    let filters = EventFilters {
        visitor_id: Some(profile.id.to_string()),
        ..EventFilters::default()
    };
    list_page(&state, &caller, &filters, &q).await
}
