//! `/v1/tokens`: a workspace's API tokens (secret callers only).

use actix_web::{HttpResponse, delete, get, post, web};
use serde::Deserialize;

use super::parse_id;
use crate::accounts::issue_token;
use crate::domain::{Timestamp, TokenType};
use crate::error::ApiError;
use crate::http::AppState;
use crate::http::auth::SecretCaller;
use crate::ids::TokenKind;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(create_token)
        .service(list_tokens)
        .service(revoke_token);
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenBody {
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[post("/tokens")]
async fn create_token(
    state: web::Data<AppState>,
    caller: SecretCaller,
    body: web::Json<CreateTokenBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let kind = match body.kind.as_deref() {
        None => TokenType::Secret,
        Some(k) => TokenType::parse(k)
            .ok_or_else(|| ApiError::field("type", "must be `secret` or `publishable`"))?,
    };
    if let Some(name) = &body.name
        && (name.len() > 100 || name.chars().any(char::is_control))
    {
        return Err(ApiError::field(
            "name",
            "must be at most 100 bytes without control characters",
        ));
    }
    let (token, secret) = issue_token(&state.store, caller.0.workspace_id, kind, body.name)?;
    Ok(HttpResponse::Created().json(serde_json::json!({
        "id": token.id, "type": token.kind, "name": token.name, "hint": token.hint,
        "created_at": token.created_at, "revoked_at": token.revoked_at, "token": secret.expose(),
    })))
}

#[get("/tokens")]
async fn list_tokens(
    state: web::Data<AppState>,
    caller: SecretCaller,
) -> Result<HttpResponse, ApiError> {
    let tokens = state.store.tokens(&caller.0.workspace_id)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "data": tokens, "next_page_token": null })))
}

#[delete("/tokens/{id}")]
async fn revoke_token(
    state: web::Data<AppState>,
    caller: SecretCaller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id::<TokenKind>("id", &id)?;
    match state
        .store
        .revoke_token(&caller.0.workspace_id, &id, Timestamp::now())?
    {
        Some(_) => Ok(HttpResponse::NoContent().finish()),
        None => Err(ApiError::not_found("No token with this ID.")),
    }
}
