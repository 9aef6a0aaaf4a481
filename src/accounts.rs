//! Making workspaces and tokens: shared by the CLI, first start and `/v1/tokens`.

use crate::config::{ENTERPRISE_PLAN, Settings};
use crate::domain::token::token_digest;
use crate::domain::{Timestamp, Token, TokenSecret, TokenType, Workspace};
use crate::ids::{TokenId, WorkspaceId};
use crate::store::{Store, StoreResult};

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("unknown plan `{plan}`; the config defines: {known}")]
    UnknownPlan { plan: String, known: String },
    #[error("{0}")]
    InvalidName(String),
    #[error("no workspace has the ID or name `{0}`")]
    UnknownWorkspace(String),
    #[error("{count} workspaces are named `{name}`; name one by its ID (ws_...)")]
    AmbiguousWorkspace { name: String, count: usize },
    #[error(
        "--retention-days is required with --plan {ENTERPRISE_PLAN}: an enterprise workspace keeps events as long as its own setting says"
    )]
    RetentionRequired,
    #[error(
        "--retention-days applies only to --plan {ENTERPRISE_PLAN}; plan `{plan}` keeps events {days} days, as plans.{plan}.retention_days in the config says"
    )]
    RetentionNotAllowed { plan: String, days: u32 },
    #[error("--retention-days must be at least 1")]
    RetentionZero,
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
    let plan = known_plan(settings, plan_name)?;
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

fn known_plan<'s>(
    settings: &'s Settings,
    name: &str,
) -> Result<&'s crate::config::PlanSettings, AccountError> {
    settings
        .plans
        .get(name)
        .ok_or_else(|| AccountError::UnknownPlan {
            plan: name.to_owned(),
            known: settings
                .plans
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The workspace with this ID (`ws_...`) or, failing that, this name (which
/// must then be unique).
pub fn find_workspace(store: &Store, id_or_name: &str) -> Result<Workspace, AccountError> {
    if let Ok(id) = id_or_name.parse::<WorkspaceId>()
        && let Some(ws) = store.workspace(&id)?
    {
        return Ok(ws);
    }
    let mut named: Vec<Workspace> = store
        .workspaces()?
        .into_iter()
        .filter(|w| w.name == id_or_name)
        .collect();
    match named.len() {
        0 => Err(AccountError::UnknownWorkspace(id_or_name.to_owned())),
        1 => Ok(named.remove(0)),
        count => Err(AccountError::AmbiguousWorkspace {
            name: id_or_name.to_owned(),
            count,
        }),
    }
}

/// Moves the workspace `id_or_name` to `plan`. Only `enterprise` takes a
/// retention of the workspace's own (`retention_days`, then required); every
/// other plan's retention is the config's, and stored as it is now only for
/// information. Nothing is written when anything is refused.
pub fn set_plan(
    store: &Store,
    settings: &Settings,
    id_or_name: &str,
    plan: &str,
    retention_days: Option<u32>,
) -> Result<Workspace, AccountError> {
    let config = known_plan(settings, plan)?;
    let days = match (plan == ENTERPRISE_PLAN, retention_days) {
        (true, None) => return Err(AccountError::RetentionRequired),
        (true, Some(0)) => return Err(AccountError::RetentionZero),
        (true, Some(days)) => days,
        (false, None) => config.retention_days,
        (false, Some(_)) => {
            return Err(AccountError::RetentionNotAllowed {
                plan: plan.to_owned(),
                days: config.retention_days,
            });
        }
    };
    let mut ws = find_workspace(store, id_or_name)?;
    ws.plan = plan.to_owned();
    ws.retention_days = days;
    store.put_workspace(&ws)?;
    Ok(ws)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_set_by_id_or_name_and_only_enterprise_takes_a_retention() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 4).unwrap();
        let settings = Settings::load_with_env(None, Vec::new()).unwrap();
        let (ws, _) = create_workspace(&store, &settings, "Acme", None).unwrap();
        let by_name = set_plan(&store, &settings, "Acme", "pro", None).unwrap();
        assert_eq!(
            (by_name.plan.as_str(), by_name.retention_days),
            ("pro", 365)
        );
        let by_id = set_plan(
            &store,
            &settings,
            &ws.id.to_string(),
            ENTERPRISE_PLAN,
            Some(90),
        )
        .unwrap();
        assert_eq!(by_id.retention_days, 90);
        assert_eq!(store.workspace(&ws.id).unwrap().unwrap(), by_id);
        let refused = [
            set_plan(&store, &settings, "Acme", "platinum", None).unwrap_err(),
            set_plan(&store, &settings, "Acme", ENTERPRISE_PLAN, None).unwrap_err(),
            set_plan(&store, &settings, "Acme", ENTERPRISE_PLAN, Some(0)).unwrap_err(),
            set_plan(&store, &settings, "Acme", "free", Some(10)).unwrap_err(),
            set_plan(&store, &settings, "Nobody", "free", None).unwrap_err(),
        ];
        let messages: Vec<String> = refused.iter().map(ToString::to_string).collect();
        assert!(
            messages[0].contains("platinum")
                && messages[0].contains("business, enterprise, free, pro"),
            "{}",
            messages[0]
        );
        assert!(messages[1].contains("--retention-days is required"));
        assert!(messages[2].contains("at least 1"));
        assert!(
            messages[3].contains("only to --plan enterprise") && messages[3].contains("30 days")
        );
        assert!(messages[4].contains("`Nobody`"));
        assert_eq!(
            store.workspace(&ws.id).unwrap().unwrap(),
            by_id,
            "nothing changed"
        );
        create_workspace(&store, &settings, "Acme", None).unwrap();
        let twice = set_plan(&store, &settings, "Acme", "free", None).unwrap_err();
        assert!(
            twice.to_string().contains("2 workspaces are named"),
            "{twice}"
        );
    }
}
