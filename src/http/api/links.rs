//! `/v1/links`: create, list, get, update, delete.

use actix_web::{HttpResponse, delete, get, patch, post, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub use super::link_bodies::{CreateLinkBody, UpdateLinkBody};
use super::{parse_id, query_value};
use crate::actors::{CreateLink, DeleteLink, UpdateLink};
use crate::domain::{Form, Link, LinkStatus, Timestamp};
use crate::http::AppState;
use crate::http::auth::SecretCaller;
use crate::http::body::JsonObject;
use crate::http::error::{ApiError, Problem};
use crate::http::pagination::{ListResponse, PageParams, QueryScope};
use crate::ids::{LinkId, LinkKind, WorkspaceId};
use crate::store::LinkQuery;

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(create_link)
        .service(list_links)
        .service(get_link)
        .service(update_link)
        .service(delete_link);
}

/// A short link (a QR code encodes its `short_url`): the slug, where it
/// redirects, its optional form step, fallback and expiry, and its scan count.
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkView {
    pub id: LinkId,
    pub workspace_id: WorkspaceId,
    pub slug: String,
    pub short_url: String,
    pub destination: String,
    pub name: Option<String>,
    pub tags: Vec<String>,
    pub conversion_tracking: bool,
    pub fallback_destination: Option<String>,
    pub expires_at: Option<Timestamp>,
    pub form: Option<Form>,
    pub status: LinkStatus,
    pub total_scans: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl LinkView {
    pub fn build(state: &AppState, link: Link) -> Result<LinkView, ApiError> {
        let total_scans = state.store.link_total_scans(&link.id)?;
        Ok(LinkView {
            id: link.id,
            workspace_id: link.workspace_id,
            short_url: state.settings.short_url(link.slug.as_str()),
            slug: link.slug.as_str().to_owned(),
            destination: link.destination.as_str().to_owned(),
            name: link.name,
            tags: link.tags,
            conversion_tracking: link.conversion_tracking,
            fallback_destination: link.fallback_destination.map(|d| d.as_str().to_owned()),
            expires_at: link.expires_at,
            form: link.form,
            status: link.status,
            total_scans,
            created_at: link.created_at,
            updated_at: link.updated_at,
        })
    }
}

#[utoipa::path(tag = "links", request_body = CreateLinkBody,
    responses((status = 201, description = "The created link", body = LinkView),
        (status = 409, description = "The slug is taken", body = Problem, content_type = "application/problem+json")))]
#[post("/links")]
async fn create_link(
    state: web::Data<AppState>,
    caller: SecretCaller,
    body: JsonObject<CreateLinkBody>,
) -> Result<HttpResponse, ApiError> {
    let link = body.into_inner().parse()?;
    let created = state
        .resolver
        .send(CreateLink {
            workspace_id: caller.0.workspace_id,
            link,
        })
        .await??;
    Ok(HttpResponse::Created().json(LinkView::build(&state, created)?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListLinksQuery {
    /// Only links with this tag.
    #[param(min_length = 1)]
    tag: Option<String>,
    /// `active` or `disabled`.
    #[param(value_type = Option<LinkStatus>)]
    status: Option<String>,
    /// 1 to 500, default 50.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    page_size: Option<String>,
    /// `next_page_token` of the previous page; empty means the first page.
    page_token: Option<String>,
}

impl ListLinksQuery {
    fn parse(&self) -> Result<LinkQuery, ApiError> {
        let status = match query_value("status", &self.status)? {
            None => None,
            Some("active") => Some(LinkStatus::Active),
            Some("disabled") => Some(LinkStatus::Disabled),
            Some(_) => {
                return Err(ApiError::bad_request(
                    "status must be `active` or `disabled`.",
                ));
            }
        };
        let tag = query_value("tag", &self.tag)?.map(str::to_owned);
        Ok(LinkQuery { tag, status })
    }
}

#[utoipa::path(tag = "links", params(ListLinksQuery),
    responses((status = 200, description = "Links, newest first", body = ListResponse<LinkView>)))]
#[get("/links")]
async fn list_links(
    state: web::Data<AppState>,
    caller: SecretCaller,
    q: web::Query<ListLinksQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = q.parse()?;
    let filters = format!("tag={:?}&status={:?}", query.tag, query.status);
    let scope = QueryScope::new(
        &state.page_tokens,
        &caller.0.workspace_id,
        "links",
        &filters,
    );
    let page = PageParams::parse(q.page_size.as_deref(), q.page_token.as_deref(), &scope)?;
    let found = state.store.list_links(
        &caller.0.workspace_id,
        &query,
        page.cursor.as_deref(),
        page.size,
    )?;
    let data = found
        .items
        .into_iter()
        .map(|l| LinkView::build(&state, l))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HttpResponse::Ok().json(ListResponse {
        data,
        next_page_token: scope.token(found.next_cursor),
    }))
}

pub(super) fn find_link(
    state: &AppState,
    caller: &SecretCaller,
    raw_id: &str,
) -> Result<Link, ApiError> {
    let id = parse_id::<LinkKind>("id", raw_id)?;
    state
        .store
        .owned_link(&caller.0.workspace_id, &id)?
        .ok_or_else(|| ApiError::not_found("No link with this ID."))
}

#[utoipa::path(tag = "links", params(("id" = LinkId, Path, description = "Link ID (lnk_...)")),
    responses((status = 200, description = "The link", body = LinkView)))]
#[get("/links/{id}")]
async fn get_link(
    state: web::Data<AppState>,
    caller: SecretCaller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let link = find_link(&state, &caller, &id)?;
    Ok(HttpResponse::Ok().json(LinkView::build(&state, link)?))
}

#[utoipa::path(tag = "links", params(("id" = LinkId, Path, description = "Link ID (lnk_...)")), request_body = UpdateLinkBody,
    responses((status = 200, description = "The updated link", body = LinkView),
        (status = 409, description = "The new slug is taken", body = Problem, content_type = "application/problem+json")))]
#[patch("/links/{id}")]
async fn update_link(
    state: web::Data<AppState>,
    caller: SecretCaller,
    id: web::Path<String>,
    body: JsonObject<UpdateLinkBody>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id::<LinkKind>("id", &id)?;
    let patch = body.into_inner().parse()?;
    let updated = state
        .resolver
        .send(UpdateLink {
            workspace_id: caller.0.workspace_id,
            id,
            patch,
        })
        .await??;
    Ok(HttpResponse::Ok().json(LinkView::build(&state, updated)?))
}

#[utoipa::path(tag = "links", params(("id" = LinkId, Path, description = "Link ID (lnk_...)")),
    responses((status = 204, description = "Deleted; the slug stops resolving at once")))]
#[delete("/links/{id}")]
async fn delete_link(
    state: web::Data<AppState>,
    caller: SecretCaller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id::<LinkKind>("id", &id)?;
    state
        .resolver
        .send(DeleteLink {
            workspace_id: caller.0.workspace_id,
            id,
        })
        .await??;
    Ok(HttpResponse::NoContent().finish())
}
