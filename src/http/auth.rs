//! Bearer-token authentication. `Caller` accepts any valid token;
//! `SecretCaller` additionally refuses publishable tokens with 403.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};

use super::AppState;
use crate::domain::TokenType;
use crate::domain::token::token_digest;
use crate::error::ApiError;
use crate::ids::{TokenId, WorkspaceId};

/// Who is calling: the token's workspace and kind.
#[derive(Debug, Clone)]
pub struct Caller {
    pub workspace_id: WorkspaceId,
    pub token_id: TokenId,
    pub token_type: TokenType,
}

/// A caller holding a secret (`sk_`) token.
#[derive(Debug, Clone)]
pub struct SecretCaller(pub Caller);

fn authenticate(req: &HttpRequest) -> Result<Caller, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::unavailable("The service is starting."))?;
    let header = req.headers().get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::unauthorized("Send your API token as `Authorization: Bearer <token>`.")
    })?;
    let value = header
        .to_str()
        .map_err(|_| ApiError::unauthorized("The Authorization header is malformed."))?;
    let token = match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => {
            return Err(ApiError::unauthorized(
                "The Authorization header must use the Bearer scheme.",
            ));
        }
    };
    if !(token.starts_with("sk_") || token.starts_with("pk_")) || token.len() > 128 {
        return Err(ApiError::unauthorized("The token is not valid."));
    }
    let stored = state.store.token_by_digest(&token_digest(token))?;
    match stored {
        Some(t) if t.revoked_at.is_none() => Ok(Caller {
            workspace_id: t.workspace_id,
            token_id: t.id,
            token_type: t.kind,
        }),
        Some(_) => Err(ApiError::unauthorized("This token has been revoked.")),
        None => Err(ApiError::unauthorized("The token is not valid.")),
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Caller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

impl FromRequest for SecretCaller {
    type Error = ApiError;
    type Future = Ready<Result<SecretCaller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req).and_then(|caller| match caller.token_type {
            TokenType::Secret => Ok(SecretCaller(caller)),
            TokenType::Publishable => Err(ApiError::forbidden(
                "Publishable tokens may only call POST /v1/visitors/identify; use a secret token.",
            )),
        }))
    }
}
