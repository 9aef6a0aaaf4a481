//! Bearer-token authentication and rate limiting for `/v1`. The middleware
//! authenticates once, counts the request against the workspace's plan (or
//! the caller's address when there is no valid token), refuses with 429 when
//! over, and adds the rate-limit headers (`X-RateLimit-*`, `RateLimit-Policy`,
//! `RateLimit`) to every answer. `Caller` accepts any valid token;
//! `SecretCaller` refuses publishable ones with 403.

use std::future::{Ready, ready};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{Error, FromRequest, HttpMessage, HttpRequest, ResponseError, web};

use super::ratelimit::LimitKey;
use super::{AppState, client_ip_of};
use crate::domain::TokenType;
use crate::domain::token::token_digest;
use crate::http::error::ApiError;
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

/// Why a request is not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    Malformed,
    NotBearer,
    Invalid,
    Revoked,
    StoreUnavailable,
}

impl AuthFailure {
    fn to_error(self) -> ApiError {
        match self {
            AuthFailure::Missing => {
                ApiError::unauthorized("Send your API token as `Authorization: Bearer <token>`.")
            }
            AuthFailure::Malformed => {
                ApiError::unauthorized("The Authorization header is malformed.")
            }
            AuthFailure::NotBearer => {
                ApiError::unauthorized("The Authorization header must use the Bearer scheme.")
            }
            AuthFailure::Invalid => ApiError::unauthorized("The token is not valid."),
            AuthFailure::Revoked => ApiError::unauthorized("This token has been revoked."),
            AuthFailure::StoreUnavailable => {
                ApiError::unavailable("Authentication is unavailable; retry shortly.")
            }
        }
    }
}

/// The middleware's verdict, kept in the request's extensions.
#[derive(Debug, Clone)]
struct Authenticated(Result<Caller, AuthFailure>);

fn authenticate(state: &AppState, req: &HttpRequest) -> Result<Caller, AuthFailure> {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or(AuthFailure::Missing)?;
    let value = header.to_str().map_err(|_| AuthFailure::Malformed)?;
    let token = match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => return Err(AuthFailure::NotBearer),
    };
    if !(token.starts_with("sk_") || token.starts_with("pk_")) || token.len() > 128 {
        return Err(AuthFailure::Invalid);
    }
    let stored = state
        .store
        .token_by_digest(&token_digest(token))
        .map_err(|e| {
            tracing::error!(error = %e, "token lookup failed");
            AuthFailure::StoreUnavailable
        })?;
    match stored {
        Some(t) if t.revoked_at.is_none() => Ok(Caller {
            workspace_id: t.workspace_id,
            token_id: t.id,
            token_type: t.kind,
        }),
        Some(_) => Err(AuthFailure::Revoked),
        None => Err(AuthFailure::Invalid),
    }
}

/// Authenticates and rate-limits every `/v1` request.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let auth = authenticate(&state, req.request());
    let (plan, key) = match &auth {
        Ok(caller) => {
            let plan = state
                .store
                .workspace(&caller.workspace_id)
                .ok()
                .flatten()
                .map(|w| w.plan);
            (plan, LimitKey::Workspace(caller.workspace_id))
        }
        Err(_) => {
            let client = client_ip_of(req.request(), &state.settings.server.trusted_proxies);
            (None, LimitKey::Address(client))
        }
    };
    let decision = state.limits.check(plan.as_deref(), &key);
    if let Some(secs) = decision.retry_after {
        state.metrics.rate_limited.inc();
        let mut resp = ApiError::rate_limited(secs).error_response();
        decision.apply(resp.headers_mut());
        return Ok(req.into_response(resp));
    }
    req.extensions_mut().insert(Authenticated(auth));
    let mut res = next.call(req).await?.map_into_boxed_body();
    decision.apply(res.headers_mut());
    Ok(res)
}

fn caller_of(req: &HttpRequest) -> Result<Caller, ApiError> {
    if let Some(Authenticated(outcome)) = req.extensions().get::<Authenticated>() {
        return outcome.clone().map_err(AuthFailure::to_error);
    }
    // Outside the middleware (not under /v1): authenticate here.
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::unavailable("The service is starting."))?;
    authenticate(state, req).map_err(AuthFailure::to_error)
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Caller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(caller_of(req))
    }
}

impl FromRequest for SecretCaller {
    type Error = ApiError;
    type Future = Ready<Result<SecretCaller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(caller_of(req).and_then(|caller| match caller.token_type {
            TokenType::Secret => Ok(SecretCaller(caller)),
            TokenType::Publishable => Err(ApiError::forbidden(
                "Publishable tokens may only call POST /v1/visitors/identify; use a secret token.",
            )),
        }))
    }
}
