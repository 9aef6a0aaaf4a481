//! API tokens. A token is shown once when made; the store keeps only its
//! SHA-256, so a stolen store yields no usable token.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Timestamp;
use crate::ids::{TokenId, WorkspaceId};

const SECRET_LEN: usize = 32;
/// A token's name, in characters.
pub const MAX_NAME_LEN: usize = 100;

/// A token's optional name: at most 100 characters, no control character.
pub fn name_is_valid(name: &str) -> bool {
    super::schemas::is_plain_text(name, MAX_NAME_LEN)
}

/// Secret tokens (`sk_`) call the whole API; publishable ones (`pk_`) may
/// only identify visitors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TokenType {
    Secret,
    Publishable,
}

impl TokenType {
    pub fn prefix(&self) -> &'static str {
        match self {
            TokenType::Secret => "sk_",
            TokenType::Publishable => "pk_",
        }
    }

    pub fn parse(s: &str) -> Option<TokenType> {
        match s {
            "secret" => Some(TokenType::Secret),
            "publishable" => Some(TokenType::Publishable),
            _ => None,
        }
    }
}

/// The plain token, held only long enough to show it once.
pub struct TokenSecret(String);

impl TokenSecret {
    pub fn generate(kind: TokenType) -> TokenSecret {
        let secret = crate::random::string_from(crate::random::BASE62, SECRET_LEN);
        TokenSecret(format!("{}{secret}", kind.prefix()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What list views show: the prefix and the first four characters.
    pub fn hint(&self) -> String {
        format!("{}…", &self.0[..7])
    }
}

/// SHA-256 of a presented token: the key it is stored under.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A stored token (its digest is the key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Token {
    pub id: TokenId,
    pub workspace_id: WorkspaceId,
    #[serde(rename = "type")]
    pub kind: TokenType,
    pub name: Option<String>,
    pub hint: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_their_prefix_and_entropy() {
        let a = TokenSecret::generate(TokenType::Secret);
        let b = TokenSecret::generate(TokenType::Publishable);
        assert!(a.expose().starts_with("sk_") && a.expose().len() == 35);
        assert!(b.expose().starts_with("pk_"));
        assert_ne!(
            a.expose(),
            TokenSecret::generate(TokenType::Secret).expose()
        );
        assert_eq!(a.hint().chars().count(), 8);
        assert_ne!(token_digest(a.expose()), token_digest(b.expose()));
    }
}
