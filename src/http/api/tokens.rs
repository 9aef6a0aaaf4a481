//! `/v1/tokens`: a workspace's API tokens (secret callers only).

use actix_web::{HttpResponse, delete, get, post, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use super::{not_null, parse_id, present};
use crate::accounts::issue_token;
use crate::domain::schemas;
use crate::domain::token::{MAX_NAME_LEN, name_is_valid};
use crate::domain::{FieldError, Timestamp, Token, TokenType};
use crate::http::AppState;
use crate::http::auth::SecretCaller;
use crate::http::body::JsonObject;
use crate::http::error::ApiError;
use crate::http::pagination::ListResponse;
use crate::ids::{TokenId, TokenKind};

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(create_token)
        .service(list_tokens)
        .service(revoke_token);
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenBody {
    #[schema(schema_with = schemas::token_name)]
    name: Option<String>,
    /// `secret` (default) or `publishable`.
    #[serde(rename = "type", default, deserialize_with = "present")]
    #[schema(value_type = TokenType)]
    kind: Option<Option<String>>,
}

impl CreateTokenBody {
    fn parse(self) -> Result<(TokenType, Option<String>), ApiError> {
        let mut errors = Vec::new();
        let kind = match not_null("type", self.kind, &mut errors).as_deref() {
            None => TokenType::Secret,
            Some(k) => TokenType::parse(k).unwrap_or_else(|| {
                errors.push(FieldError::new("type", "must be `secret` or `publishable`"));
                TokenType::Secret
            }),
        };
        if self.name.as_deref().is_some_and(|n| !name_is_valid(n)) {
            errors.push(FieldError::new(
                "name",
                format!("must be at most {MAX_NAME_LEN} characters without control characters"),
            ));
        }
        match errors.is_empty() {
            true => Ok((kind, self.name)),
            false => Err(ApiError::validation(errors)),
        }
    }
}

/// A new token: the only answer that ever carries the token itself.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    id: TokenId,
    #[serde(rename = "type")]
    kind: TokenType,
    name: Option<String>,
    hint: String,
    created_at: Timestamp,
    revoked_at: Option<Timestamp>,
    /// The token; store it now, it is not shown again.
    token: String,
}

#[utoipa::path(tag = "tokens", request_body = CreateTokenBody,
    responses((status = 201, description = "The token, shown once", body = CreatedToken)))]
#[post("/tokens")]
async fn create_token(
    state: web::Data<AppState>,
    caller: SecretCaller,
    body: JsonObject<CreateTokenBody>,
) -> Result<HttpResponse, ApiError> {
    let (kind, name) = body.into_inner().parse()?;
    let (token, secret) = issue_token(&state.store, caller.0.workspace_id, kind, name)?;
    Ok(HttpResponse::Created().json(CreatedToken {
        id: token.id,
        kind: token.kind,
        name: token.name,
        hint: token.hint,
        created_at: token.created_at,
        revoked_at: token.revoked_at,
        token: secret.expose().to_owned(),
    }))
}

#[utoipa::path(tag = "tokens", responses((status = 200, description = "The workspace's tokens, oldest first (never the tokens themselves)", body = ListResponse<Token>)))]
#[get("/tokens")]
async fn list_tokens(
    state: web::Data<AppState>,
    caller: SecretCaller,
) -> Result<HttpResponse, ApiError> {
    let data = state.store.tokens(&caller.0.workspace_id)?;
    Ok(HttpResponse::Ok().json(ListResponse {
        data,
        next_page_token: None,
    }))
}

#[utoipa::path(tag = "tokens", params(("id" = TokenId, Path, description = "Token ID (tok_...)")),
    responses((status = 204, description = "Revoked; the token stops working at once")))]
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
