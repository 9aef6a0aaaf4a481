//! Workspaces: the tenant that owns links, events and tokens.

use serde::{Deserialize, Serialize};

use super::{FieldError, Timestamp};
use crate::ids::WorkspaceId;

/// In characters, as sent (before trimming).
pub const MAX_NAME_LEN: usize = 100;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Workspace {
    pub id: WorkspaceId,
    pub name: String,
    pub plan: String,
    /// Days scan events are kept before the Purger deletes them: the plan's
    /// retention, or on the `enterprise` plan the workspace's own.
    pub retention_days: u32,
    pub timezone: String,
    pub created_at: Timestamp,
}

/// A validated `PATCH /v1/workspace`.
#[derive(Debug, Clone, Default)]
pub struct WorkspacePatch {
    pub name: Option<String>,
    pub timezone: Option<String>,
}

/// 1 to 100 characters as sent, no control character, not only spaces;
/// stored trimmed.
pub fn validate_name(name: &str) -> Result<String, FieldError> {
    if !super::schemas::is_visible_text(name, MAX_NAME_LEN) {
        return Err(FieldError::new(
            "name",
            format!("must be 1 to {MAX_NAME_LEN} characters without control characters"),
        ));
    }
    Ok(name.trim().to_owned())
}

/// An IANA time zone name such as `Europe/Vienna`, or `UTC`.
pub fn validate_timezone(tz: &str) -> Result<String, FieldError> {
    match jiff::tz::TimeZone::get(tz) {
        Ok(_) if !tz.is_empty() => Ok(tz.to_owned()),
        _ => Err(FieldError::new(
            "timezone",
            "must be an IANA time zone name such as Europe/Vienna",
        )),
    }
}

impl WorkspacePatch {
    pub fn apply(self, ws: &mut Workspace) {
        if let Some(name) = self.name {
            ws.name = name;
        }
        if let Some(tz) = self.timezone {
            ws.timezone = tz;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timezone_names_are_checked() {
        assert!(validate_timezone("Europe/Vienna").is_ok());
        assert!(validate_timezone("UTC").is_ok());
        assert!(validate_timezone("Mars/Olympus").is_err());
        assert!(validate_timezone("").is_err());
        assert!(validate_name("  ").is_err());
        assert_eq!(validate_name(" Acme ").unwrap(), "Acme");
    }
}
