//! `/v1/links`: create, list, get, update, delete.

use actix_web::{HttpResponse, delete, get, patch, post, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{parse_id, present};
use crate::actors::{CreateLink, DeleteLink, UpdateLink};
use crate::domain::link::rules;
use crate::domain::{FieldError, Form, Link, LinkPatch, LinkStatus, NewLink, Timestamp};
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
            short_url: format!("{}/{}", state.settings.short_url_base(), link.slug.as_str()),
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

/// `POST /v1/links`: only `destination` is required.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLinkBody {
    destination: Option<String>,
    slug: Option<String>,
    name: Option<String>,
    tags: Option<Vec<String>>,
    conversion_tracking: Option<bool>,
    fallback_destination: Option<String>,
    expires_at: Option<String>,
    form: Option<Form>,
    status: Option<LinkStatus>,
}

fn parse_expiry(raw: &str, errors: &mut Vec<FieldError>) -> Option<Timestamp> {
    raw.parse()
        .map_err(|e: crate::domain::time::TimestampError| {
            errors.push(FieldError::new("expires_at", e.to_string()))
        })
        .ok()
}

impl CreateLinkBody {
    fn parse(self) -> Result<NewLink, ApiError> {
        let mut errors = Vec::new();
        let destination = match self.destination.as_deref() {
            Some(d) => rules::destination("destination", d, &mut errors),
            None => {
                errors.push(FieldError::new("destination", "is required"));
                None
            }
        };
        let slug = self
            .slug
            .as_deref()
            .and_then(|s| rules::slug(s, &mut errors));
        let name = rules::name(self.name, &mut errors);
        let tags = rules::tags(self.tags.unwrap_or_default(), &mut errors);
        let fallback = self
            .fallback_destination
            .as_deref()
            .and_then(|d| rules::destination("fallback_destination", d, &mut errors));
        let expires_at = self
            .expires_at
            .as_deref()
            .and_then(|t| parse_expiry(t, &mut errors));
        let form = rules::form(self.form, &mut errors);
        match destination {
            Some(destination) if errors.is_empty() => Ok(NewLink {
                slug,
                destination,
                name,
                tags,
                conversion_tracking: self.conversion_tracking.unwrap_or(false),
                fallback_destination: fallback,
                expires_at,
                form,
                status: self.status.unwrap_or(LinkStatus::Active),
            }),
            _ => Err(ApiError::validation(errors)),
        }
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
    tag: Option<String>,
    /// `active` or `disabled`.
    #[param(value_type = Option<LinkStatus>)]
    status: Option<String>,
    /// 1 to 500, default 50.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    page_size: Option<String>,
    /// `next_page_token` of the previous page.
    page_token: Option<String>,
}

#[utoipa::path(tag = "links", params(ListLinksQuery),
    responses((status = 200, description = "Links, newest first", body = ListResponse<LinkView>)))]
#[get("/links")]
async fn list_links(
    state: web::Data<AppState>,
    caller: SecretCaller,
    q: web::Query<ListLinksQuery>,
) -> Result<HttpResponse, ApiError> {
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some("active") => Some(LinkStatus::Active),
        Some("disabled") => Some(LinkStatus::Disabled),
        Some(_) => {
            return Err(ApiError::bad_request(
                "status must be `active` or `disabled`.",
            ));
        }
    };
    let query = LinkQuery {
        tag: q.tag.clone().filter(|t| !t.is_empty()),
        status,
    };
    let filters = format!("tag={:?}&status={:?}", query.tag, query.status);
    let scope = QueryScope::new(&caller.0.workspace_id, "links", &filters);
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

fn find_link(state: &AppState, caller: &SecretCaller, raw_id: &str) -> Result<Link, ApiError> {
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

/// `PATCH /v1/links/{id}`: keys present are set; `null` clears a nullable field.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateLinkBody {
    #[serde(default, deserialize_with = "present")]
    destination: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    slug: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    tags: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present")]
    conversion_tracking: Option<Option<bool>>,
    #[serde(default, deserialize_with = "present")]
    fallback_destination: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    expires_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    form: Option<Option<Form>>,
    #[serde(default, deserialize_with = "present")]
    status: Option<Option<LinkStatus>>,
}

/// A key that may be omitted but not set to null.
fn required<T>(field: &str, v: Option<Option<T>>, errors: &mut Vec<FieldError>) -> Option<T> {
    match v {
        Some(None) => {
            errors.push(FieldError::new(field, "cannot be null"));
            None
        }
        Some(Some(v)) => Some(v),
        None => None,
    }
}

impl UpdateLinkBody {
    fn parse(self) -> Result<LinkPatch, ApiError> {
        let mut e = Vec::new();
        let patch = LinkPatch {
            destination: required("destination", self.destination, &mut e)
                .and_then(|d| rules::destination("destination", &d, &mut e)),
            slug: required("slug", self.slug, &mut e).and_then(|s| rules::slug(&s, &mut e)),
            name: self.name.map(|n| rules::name(n, &mut e)),
            tags: required("tags", self.tags, &mut e).map(|t| rules::tags(t, &mut e)),
            conversion_tracking: required("conversion_tracking", self.conversion_tracking, &mut e),
            fallback_destination: self
                .fallback_destination
                .map(|f| f.and_then(|d| rules::destination("fallback_destination", &d, &mut e))),
            expires_at: self
                .expires_at
                .map(|t| t.and_then(|t| parse_expiry(&t, &mut e))),
            form: self.form.map(|f| rules::form(f, &mut e)),
            status: required("status", self.status, &mut e),
        };
        if e.is_empty() {
            Ok(patch)
        } else {
            Err(ApiError::validation(e))
        }
    }
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
