//! `/v1/events`: list with filters, get one.

use actix_web::{HttpResponse, get, web};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{parse_id, query_value};
pub use crate::domain::EventView;
use crate::domain::{DeviceType, Timestamp};
use crate::http::AppState;
use crate::http::auth::SecretCaller;
use crate::http::error::ApiError;
use crate::http::pagination::{ListResponse, PageParams, QueryScope};
use crate::ids::{EventId, EventKind, LinkId, LinkKind, VisitorId, VisitorKind};
use crate::store::{EventIndex, EventQuery};

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(list_events).service(get_event);
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListEventsQuery {
    /// Only events of this link (also of a deleted one).
    #[param(value_type = Option<LinkId>)]
    link_id: Option<String>,
    /// Only events of links with this tag.
    #[param(min_length = 1)]
    tag: Option<String>,
    /// Only events of this visitor.
    #[param(value_type = Option<VisitorId>)]
    visitor_id: Option<String>,
    /// Inclusive lower bound, RFC 3339.
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<String>,
    /// Exclusive upper bound, RFC 3339.
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<String>,
    /// Two-letter ISO 3166 country code, any case.
    #[param(pattern = "^[A-Za-z]{2}$")]
    country: Option<String>,
    #[param(value_type = Option<DeviceType>)]
    device_type: Option<String>,
    /// Include bots and link previewers (default false).
    #[param(value_type = Option<bool>)]
    include_bots: Option<String>,
    /// 1 to 500, default 50.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    page_size: Option<String>,
    /// `next_page_token` of the previous page; empty means the first page.
    page_token: Option<String>,
}

fn parse_time(param: &str, raw: Option<&str>) -> Result<Option<i64>, ApiError> {
    raw.map(|s| {
        s.parse::<Timestamp>().map(|t| t.as_millis()).map_err(|_| {
            ApiError::bad_request(format!(
                "`{param}` must be an RFC 3339 timestamp such as 2026-06-05T14:32:18Z."
            ))
        })
    })
    .transpose()
}

fn parse_country(raw: Option<&str>) -> Result<Option<String>, ApiError> {
    raw.map(
        |c| match c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()) {
            true => Ok(c.to_ascii_uppercase()),
            false => Err(ApiError::bad_request(
                "`country` must be a two-letter ISO 3166 code.",
            )),
        },
    )
    .transpose()
}

fn parse_device_type(raw: Option<&str>) -> Result<Option<DeviceType>, ApiError> {
    raw.map(|d| {
        DeviceType::parse(d).ok_or_else(|| {
            ApiError::bad_request("`device_type` must be mobile, tablet, desktop, bot or other.")
        })
    })
    .transpose()
}

impl ListEventsQuery {
    fn parse(&self, caller: &SecretCaller) -> Result<EventQuery, ApiError> {
        let link = self.link_filter()?;
        let visitor = query_value("visitor_id", &self.visitor_id)?
            .map(|s| parse_id::<VisitorKind>("visitor_id", s))
            .transpose()?;
        let index = match (visitor, link) {
            (Some(v), _) => EventIndex::Visitor(v),
            (None, Some(l)) => EventIndex::Link(l),
            (None, None) => EventIndex::Workspace,
        };
        let include_bots = match query_value("include_bots", &self.include_bots)? {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                return Err(ApiError::bad_request(
                    "`include_bots` must be true or false.",
                ));
            }
        };
        Ok(EventQuery {
            workspace_id: caller.0.workspace_id,
            index,
            from_ms: parse_time("from", query_value("from", &self.from)?)?,
            to_ms: parse_time("to", query_value("to", &self.to)?)?,
            tag: query_value("tag", &self.tag)?.map(str::to_owned),
            country: parse_country(query_value("country", &self.country)?)?,
            device_type: parse_device_type(query_value("device_type", &self.device_type)?)?,
            include_bots,
        })
    }

    fn link_filter(&self) -> Result<Option<LinkId>, ApiError> {
        query_value("link_id", &self.link_id)?
            .map(|s| parse_id::<LinkKind>("link_id", s))
            .transpose()
    }
}

/// Canonical form of a query's filters: what a page token is bound to.
fn canonical(q: &EventQuery, link: Option<LinkId>) -> String {
    format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{}",
        q.index, link, q.from_ms, q.to_ms, q.tag, q.country, q.device_type, q.include_bots
    )
}

#[utoipa::path(tag = "events", params(ListEventsQuery),
    responses((status = 200, description = "Scan events, newest first", body = ListResponse<EventView>)))]
#[get("/events")]
async fn list_events(
    state: web::Data<AppState>,
    caller: SecretCaller,
    q: web::Query<ListEventsQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = q.parse(&caller)?;
    // With both visitor_id and link_id, the visitor index is walked and the link is a filter.
    let link_filter = match query.index {
        EventIndex::Visitor(_) => q.link_filter()?,
        _ => None,
    };
    let scope = QueryScope::new(
        &state.page_tokens,
        &caller.0.workspace_id,
        "events",
        &canonical(&query, link_filter),
    );
    let page = PageParams::parse(q.page_size.as_deref(), q.page_token.as_deref(), &scope)?;
    let store = state.store.clone();
    let size = page.size;
    let found = web::block(move || store.list_events(&query, page.cursor.as_deref(), size))
        .await
        .map_err(|e| ApiError::internal(&e))??;
    let data: Vec<EventView> = found
        .items
        .into_iter()
        .filter(|e| link_filter.is_none_or(|l| e.link_id == l))
        .map(EventView::from)
        .collect();
    Ok(HttpResponse::Ok().json(ListResponse {
        data,
        next_page_token: scope.token(found.next_cursor),
    }))
}

#[utoipa::path(tag = "events", params(("id" = EventId, Path, description = "Event ID (evt_...)")),
    responses((status = 200, description = "The scan event", body = EventView)))]
#[get("/events/{id}")]
async fn get_event(
    state: web::Data<AppState>,
    caller: SecretCaller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id::<EventKind>("id", &id)?;
    match state.store.event(&id)? {
        Some(e) if e.workspace_id == caller.0.workspace_id => {
            Ok(HttpResponse::Ok().json(EventView::from(e)))
        }
        _ => Err(ApiError::not_found("No event with this ID.")),
    }
}
