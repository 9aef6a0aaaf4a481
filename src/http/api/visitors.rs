//! `/v1/visitors`: the visitors the registry told apart, with the profiles
//! the Visitors worker keeps (`actors::visitors`) and the attributes
//! `identify` attached.

use actix_web::{HttpResponse, get, web};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::events::{EventFilters, EventPageQuery, EventView, list_page};
use super::{parse_id, query_value};
use crate::domain::Timestamp;
use crate::domain::visitor::{DeviceSeen, VisitorProfile, lead_score};
use crate::http::AppState;
use crate::http::auth::SecretCaller;
use crate::http::error::ApiError;
use crate::http::pagination::{ListResponse, PageParams, QueryScope};
use crate::ids::{VisitorId, VisitorKind};
use crate::store::{EventIndex, EventQuery};

/// Events a visitor's answer carries in `recent_events`.
const RECENT_EVENTS: usize = 20;

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(list_visitors)
        .service(get_visitor)
        .service(visitor_events);
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

/// The caller's visitor `raw_id`; another workspace's is as absent as none.
fn find_visitor(
    state: &AppState,
    caller: &SecretCaller,
    raw_id: &str,
) -> Result<VisitorProfile, ApiError> {
    let id = parse_id::<VisitorKind>("id", raw_id)?;
    state
        .visitors
        .profile(&id)?
        .filter(|p| p.workspace_id == caller.0.workspace_id)
        .ok_or_else(|| ApiError::not_found("No visitor with this ID."))
}

#[utoipa::path(tag = "visitors", params(("id" = VisitorId, Path, description = "Visitor ID (vis_...)")),
    responses((status = 200, description = "The visitor with its newest events", body = VisitorDetail)))]
#[get("/visitors/{id}")]
async fn get_visitor(
    state: web::Data<AppState>,
    caller: SecretCaller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let profile = find_visitor(&state, &caller, &id)?;
    let query = EventQuery {
        workspace_id: caller.0.workspace_id,
        index: EventIndex::Visitor(profile.id),
        from_ms: None,
        to_ms: None,
        tag: None,
        country: None,
        device_type: None,
        include_bots: false,
    };
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
    let profile = find_visitor(&state, &caller, &id)?;
    let filters = EventFilters {
        visitor_id: Some(profile.id.to_string()),
        ..EventFilters::default()
    };
    list_page(&state, &caller, &filters, &q).await
}
