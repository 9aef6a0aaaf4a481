//! `/v1/workspace`: the caller's workspace.

use actix_web::{HttpResponse, get, patch, web};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::domain::workspace::{validate_name, validate_timezone};
use crate::domain::{Workspace, WorkspacePatch};
use crate::http::AppState;
use crate::http::auth::SecretCaller;
use crate::http::body::JsonObject;
use crate::http::error::ApiError;

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(get_workspace).service(update_workspace);
}

fn load(state: &AppState, caller: &SecretCaller) -> Result<Workspace, ApiError> {
    state
        .store
        .workspace(&caller.0.workspace_id)?
        .ok_or_else(|| ApiError::not_found("The token's workspace no longer exists."))
}

#[utoipa::path(tag = "workspace", responses((status = 200, description = "The caller's workspace", body = Workspace)))]
#[get("/workspace")]
async fn get_workspace(
    state: web::Data<AppState>,
    caller: SecretCaller,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(load(&state, &caller)?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWorkspaceBody {
    name: Option<String>,
    /// IANA time zone, e.g. `Europe/Vienna`.
    timezone: Option<String>,
}

impl UpdateWorkspaceBody {
    fn parse(self) -> Result<WorkspacePatch, ApiError> {
        let mut errors = Vec::new();
        let name = self
            .name
            .map(|n| validate_name(&n))
            .transpose()
            .map_err(|e| errors.push(e))
            .ok()
            .flatten();
        let timezone = self
            .timezone
            .map(|t| validate_timezone(&t))
            .transpose()
            .map_err(|e| errors.push(e))
            .ok()
            .flatten();
        if errors.is_empty() {
            Ok(WorkspacePatch { name, timezone })
        } else {
            Err(ApiError::validation(errors))
        }
    }
}

#[utoipa::path(tag = "workspace", request_body = UpdateWorkspaceBody,
    responses((status = 200, description = "The updated workspace", body = Workspace)))]
#[patch("/workspace")]
async fn update_workspace(
    state: web::Data<AppState>,
    caller: SecretCaller,
    body: JsonObject<UpdateWorkspaceBody>,
) -> Result<HttpResponse, ApiError> {
    let patch = body.into_inner().parse()?;
    let mut ws = load(&state, &caller)?;
    patch.apply(&mut ws);
    state.store.put_workspace(&ws)?;
    Ok(HttpResponse::Ok().json(ws))
}
