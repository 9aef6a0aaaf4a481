//! `/v1/workspace`: the caller's workspace.

use actix_web::{HttpResponse, get, patch, web};
use serde::Deserialize;
use utoipa::ToSchema;

use super::{not_null, present};
use crate::domain::schemas;
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

/// The workspace as answered: `retention_days` is the retention in effect
/// (the plan's from the current config, or the workspace's own on enterprise).
fn answer(state: &AppState, mut ws: Workspace) -> HttpResponse {
    ws.retention_days = state.settings.retention_days(&ws.plan, ws.retention_days);
    HttpResponse::Ok().json(ws)
}

#[utoipa::path(tag = "workspace", responses((status = 200, description = "The caller's workspace", body = Workspace)))]
#[get("/workspace")]
async fn get_workspace(
    state: web::Data<AppState>,
    caller: SecretCaller,
) -> Result<HttpResponse, ApiError> {
    Ok(answer(&state, load(&state, &caller)?))
}

/// Keys present are set; neither may be `null`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWorkspaceBody {
    /// Stored without leading and trailing spaces.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = schemas::workspace_name)]
    name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = schemas::TimeZone)]
    timezone: Option<Option<String>>,
}

impl UpdateWorkspaceBody {
    fn parse(self) -> Result<WorkspacePatch, ApiError> {
        let mut errors = Vec::new();
        let name = not_null("name", self.name, &mut errors);
        let timezone = not_null("timezone", self.timezone, &mut errors);
        let name = name
            .map(|n| validate_name(&n))
            .transpose()
            .map_err(|e| errors.push(e))
            .ok()
            .flatten();
        let timezone = timezone
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
    let zone_before = ws.timezone.clone();
    patch.apply(&mut ws);
    state.store.put_workspace(&ws)?;
    if ws.timezone != zone_before {
        // The Counters worker re-buckets the days it still holds events for.
        state.counters.zone_changed(ws.id);
    }
    Ok(answer(&state, ws))
}
