//! `/v1/events`: list with filters, export (streamed), get one.

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{HttpResponse, get, web};
use futures_util::Stream;
use serde::Deserialize;
use utoipa::IntoParams;

use super::{parse_id, query_value};
pub use crate::domain::EventView;
use crate::domain::{DeviceType, Timestamp};
use crate::export::{ExportFormat, ExportWalk};
use crate::http::auth::SecretCaller;
use crate::http::error::ApiError;
use crate::http::pagination::{ListResponse, PageParams, QueryScope};
use crate::http::{AppState, request_id};
use crate::ids::{EventId, EventKind, LinkId, LinkKind, VisitorId, VisitorKind, WorkspaceId};
use crate::store::{EventIndex, EventQuery};

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    // `export` before `{id}`, which would otherwise take it for an ID.
    cfg.service(list_events)
        .service(export_events)
        .service(get_event);
}

/// The filters of `GET /v1/events` and its export, as sent. The command line
/// (`scanhop export`) fills them from its options, so both read them alike.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventFilters {
    /// Only events of this link (also of a deleted one).
    #[param(value_type = Option<LinkId>)]
    pub link_id: Option<String>,
    /// Only events of links with this tag.
    #[param(min_length = 1)]
    pub tag: Option<String>,
    /// Only events of this visitor.
    #[param(value_type = Option<VisitorId>)]
    pub visitor_id: Option<String>,
    /// Inclusive lower bound, RFC 3339.
    #[param(value_type = Option<String>, format = DateTime)]
    pub from: Option<String>,
    /// Exclusive upper bound, RFC 3339.
    #[param(value_type = Option<String>, format = DateTime)]
    pub to: Option<String>,
    /// Two-letter ISO 3166 country code, any case.
    #[param(pattern = "^[A-Za-z]{2}$")]
    pub country: Option<String>,
    #[param(value_type = Option<DeviceType>)]
    pub device_type: Option<String>,
    /// Include bots and link previewers (default false).
    #[param(value_type = Option<bool>)]
    pub include_bots: Option<String>,
}

/// The paging parameters of `GET /v1/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventPageQuery {
    /// 1 to 500, default 50.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    pub page_size: Option<String>,
    /// `next_page_token` of the previous page; empty means the first page.
    pub page_token: Option<String>,
}

/// The filters, checked: the store's query, and the link to check on each
/// event when a visitor's events are walked (the store walks one index).
#[derive(Debug)]
pub struct ParsedFilters {
    pub query: EventQuery,
    pub link_filter: Option<LinkId>,
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

impl EventFilters {
    /// Checks every filter: a bad one is a `400` naming the parameter.
    pub fn parse(&self, workspace_id: WorkspaceId) -> Result<ParsedFilters, ApiError> {
        let link = query_value("link_id", &self.link_id)?
            .map(|s| parse_id::<LinkKind>("link_id", s))
            .transpose()?;
        let visitor = query_value("visitor_id", &self.visitor_id)?
            .map(|s| parse_id::<VisitorKind>("visitor_id", s))
            .transpose()?;
        // With both visitor_id and link_id, the visitor index is walked and
        // the link is a filter.
        let (index, link_filter) = match (visitor, link) {
            (Some(v), l) => (EventIndex::Visitor(v), l),
            (None, Some(l)) => (EventIndex::Link(l), None),
            (None, None) => (EventIndex::Workspace, None),
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
        let query = EventQuery {
            workspace_id,
            index,
            from_ms: parse_time("from", query_value("from", &self.from)?)?,
            to_ms: parse_time("to", query_value("to", &self.to)?)?,
            tag: query_value("tag", &self.tag)?.map(str::to_owned),
            country: parse_country(query_value("country", &self.country)?)?,
            device_type: parse_device_type(query_value("device_type", &self.device_type)?)?,
            include_bots,
        };
        Ok(ParsedFilters { query, link_filter })
    }
}

/// Canonical form of a query's filters: what a page token is bound to.
fn canonical(q: &EventQuery, link: Option<LinkId>) -> String {
    format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{}",
        q.index, link, q.from_ms, q.to_ms, q.tag, q.country, q.device_type, q.include_bots
    )
}

#[utoipa::path(tag = "events", params(EventFilters, EventPageQuery),
    responses((status = 200, description = "Scan events, newest first", body = ListResponse<EventView>)))]
#[get("/events")]
async fn list_events(
    state: web::Data<AppState>,
    caller: SecretCaller,
    filters: web::Query<EventFilters>,
    q: web::Query<EventPageQuery>,
) -> Result<HttpResponse, ApiError> {
    list_page(&state, &caller, &filters, &q).await
}

/// One page of `GET /v1/events` (also `GET /v1/visitors/{id}/events`).
pub(super) async fn list_page(
    state: &AppState,
    caller: &SecretCaller,
    filters: &EventFilters,
    q: &EventPageQuery,
) -> Result<HttpResponse, ApiError> {
    let ParsedFilters { query, link_filter } = filters.parse(caller.0.workspace_id)?;
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

/// The format of an export.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// `ndjson` (default): one event object per line; `csv`: a header row,
    /// then one row per event.
    #[param(value_type = Option<ExportFormat>)]
    format: Option<String>,
}

#[utoipa::path(tag = "events", params(EventFilters, ExportQuery),
    responses((status = 200,
        description = "Every matching event, oldest first, streamed: each as the object \
            `GET /v1/events` lists. NDJSON has one object per line; CSV has a header row \
            naming every field of the object in order, then one row per event (RFC 4180 \
            quoting and CRLF line ends, `null` as an empty cell, booleans as `true` and \
            `false`). Events recorded after the export began are not part of it.",
        headers(("Content-Disposition" = String,
            description = "`attachment; filename=\"scanhop-events-<UTC time>.ndjson\"` (or `.csv`)")),
        content((String = "application/x-ndjson"), (String = "text/csv")))))]
#[get("/events/export")]
async fn export_events(
    state: web::Data<AppState>,
    caller: SecretCaller,
    filters: web::Query<EventFilters>,
    q: web::Query<ExportQuery>,
) -> Result<HttpResponse, ApiError> {
    let format = match query_value("format", &q.format)? {
        None => ExportFormat::default(),
        Some(f) => ExportFormat::parse(f)
            .ok_or_else(|| ApiError::bad_request("`format` must be ndjson or csv."))?,
    };
    let ParsedFilters { query, link_filter } = filters.parse(caller.0.workspace_id)?;
    let walk = ExportWalk::start(state.store.clone(), query, link_filter, format)
        .map_err(|e| ApiError::internal(&e))?;
    let disposition = format!(
        "attachment; filename=\"{}\"",
        format.filename(Timestamp::now())
    );
    let header_row = Bytes::from(format.header());
    let body = futures_util::stream::iter((!header_row.is_empty()).then_some(Ok(header_row)));
    Ok(HttpResponse::Ok()
        .content_type(format.content_type())
        .insert_header((header::CONTENT_DISPOSITION, disposition))
        .streaming(futures_util::StreamExt::chain(
            body,
            export_pages(walk, request_id::current()),
        )))
}

/// The pages of an export, each read and encoded on a blocking thread only
/// when the connection has taken the previous one: memory stays at about
/// one page, and a client that goes away drops the stream, which ends the
/// reading. A failure mid-stream is logged and aborts the response, so the
/// client sees a cut transfer rather than an export that looks complete.
fn export_pages(
    walk: ExportWalk,
    request_id: String,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold(Some(walk), move |walk| {
        let request_id = request_id.clone();
        async move {
            let mut walk = walk?;
            loop {
                let step = web::block(move || {
                    let next = walk.next_chunk();
                    (walk, next)
                })
                .await;
                let failure = match step {
                    Ok((back, Ok(Some(chunk)))) if chunk.bytes.is_empty() => {
                        walk = back;
                        continue;
                    }
                    Ok((back, Ok(Some(chunk)))) => {
                        return Some((Ok(Bytes::from(chunk.bytes)), Some(back)));
                    }
                    Ok((_, Ok(None))) => return None,
                    Ok((_, Err(e))) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                tracing::error!(request_id = %request_id, error = %failure, "export stopped");
                let abort = std::io::Error::other("the export stopped");
                return Some((Err(abort), None));
            }
        }
    })
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
    match state.scan_event(id).await? {
        Some(e) if e.workspace_id == caller.0.workspace_id => {
            Ok(HttpResponse::Ok().json(EventView::from(e)))
        }
        _ => Err(ApiError::not_found("No event with this ID.")),
    }
}
