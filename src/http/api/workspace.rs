//! `/v1/workspace`: the caller's workspace.

use actix_web::{HttpResponse, get, patch, web};
use serde::Deserialize;

use crate::domain::workspace::{validate_name, validate_timezone};
use crate::domain::{Workspace, WorkspacePatch};
use crate::error::ApiError;
use crate::http::AppState;
use crate::http::auth::SecretCaller;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(get_workspace).service(update_workspace);
}

fn load(state: &AppState, caller: &SecretCaller) -> Result<Workspace, ApiError> {
    state
        .store
        .workspace(&caller.0.workspace_id)?
        .ok_or_else(|| ApiError::not_found("The token's workspace no longer exists."))
}

#[get("/workspace")]
async fn get_workspace(
    state: web::Data<AppState>,
    caller: SecretCaller,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(load(&state, &caller)?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateWorkspaceBody {
    name: Option<String>,
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

#[patch("/workspace")]
async fn update_workspace(
    state: web::Data<AppState>,
    caller: SecretCaller,
    body: web::Json<UpdateWorkspaceBody>,
) -> Result<HttpResponse, ApiError> {
    let patch = body.into_inner().parse()?;
    let mut ws = load(&state, &caller)?;
    patch.apply(&mut ws);
    state.store.put_workspace(&ws)?;
    Ok(HttpResponse::Ok().json(ws))
}
