//! Making workspaces and tokens: shared by the CLI, first start and `/v1/tokens`.

use crate::config::Settings;
use crate::domain::token::token_digest;
use crate::domain::{Timestamp, Token, TokenSecret, TokenType, Workspace};
use crate::ids::{TokenId, WorkspaceId};
use crate::store::{Store, StoreResult};

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("unknown plan `{0}` (plans are defined under [plans] in the config)")]
    UnknownPlan(String),
    #[error("{0}")]
    InvalidName(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Creates a workspace on `plan` with its first secret token.
pub fn create_workspace(
    store: &Store,
    settings: &Settings,
    name: &str,
    plan: Option<&str>,
) -> Result<(Workspace, TokenSecret), AccountError> {
    let plan_name = plan.unwrap_or(settings.default_plan());
    let plan = settings
        .plans
        .get(plan_name)
        .ok_or_else(|| AccountError::UnknownPlan(plan_name.to_owned()))?;
    let name = crate::domain::workspace::validate_name(name)
        .map_err(|e| AccountError::InvalidName(format!("name {}", e.message)))?;
    let now = Timestamp::now();
    let ws = Workspace {
        id: WorkspaceId::generate(),
        name,
        plan: plan_name.to_owned(),
        retention_days: plan.retention_days,
        timezone: "UTC".to_owned(),
        created_at: now,
    };
    let (token, secret) = new_token(
        ws.id,
        TokenType::Secret,
        Some("first token".to_owned()),
        now,
    );
    store.create_workspace(&ws, &token, &token_digest(secret.expose()))?;
    Ok((ws, secret))
}

/// Issues a new token for `ws`; the secret is shown once and never stored.
pub fn issue_token(
    store: &Store,
    ws: WorkspaceId,
    kind: TokenType,
    name: Option<String>,
) -> StoreResult<(Token, TokenSecret)> {
    let (token, secret) = new_token(ws, kind, name, Timestamp::now());
    store.insert_token(&token, &token_digest(secret.expose()))?;
    Ok((token, secret))
}

fn new_token(
    ws: WorkspaceId,
    kind: TokenType,
    name: Option<String>,
    now: Timestamp,
) -> (Token, TokenSecret) {
    let secret = TokenSecret::generate(kind);
    let token = Token {
        id: TokenId::generate(),
        workspace_id: ws,
        kind,
        name,
        hint: secret.hint(),
        created_at: now,
        revoked_at: None,
    };
    (token, secret)
}
