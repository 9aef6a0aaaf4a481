//! API tokens, keyed by the SHA-256 of the token.

use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use super::codec::{self, Record};
use super::{Store, StoreError, StoreResult, keys};
use crate::domain::{Timestamp, Token};
use crate::ids::{TokenId, WorkspaceId};

impl Record for Token {
    const VERSION: u8 = 1;
}

impl Store {
    pub fn insert_token(&self, token: &Token, digest: &[u8; 32]) -> StoreResult<()> {
        let t = &self.inner;
        let bytes = codec::encode(token)?;
        (&t.tokens, &t.tokens_by_workspace).transaction(|(tk, by_ws)| {
            tk.insert(digest, bytes.as_slice())?;
            by_ws.insert(&keys::pair(&token.workspace_id, &token.id), digest)?;
            Ok::<_, ConflictableTransactionError<StoreError>>(())
        })?;
        Ok(())
    }

    /// The token stored under `digest`, revoked or not.
    pub fn token_by_digest(&self, digest: &[u8; 32]) -> StoreResult<Option<Token>> {
        self.inner
            .tokens
            .get(digest)?
            .map(|v| codec::decode(&v))
            .transpose()
    }

    /// A workspace's tokens, oldest first.
    pub fn tokens(&self, ws: &WorkspaceId) -> StoreResult<Vec<Token>> {
        let mut out = Vec::new();
        for entry in self.inner.tokens_by_workspace.scan_prefix(ws.as_bytes()) {
            let (_, digest) = entry?;
            if let Some(v) = self.inner.tokens.get(&digest)? {
                out.push(codec::decode(&v)?);
            }
        }
        Ok(out)
    }

    /// Marks a token revoked; `None` when the workspace has no such token.
    pub fn revoke_token(
        &self,
        ws: &WorkspaceId,
        id: &TokenId,
        at: Timestamp,
    ) -> StoreResult<Option<Token>> {
        let Some(digest) = self.inner.tokens_by_workspace.get(keys::pair(ws, id))? else {
            return Ok(None);
        };
        let Some(v) = self.inner.tokens.get(&digest)? else {
            return Ok(None);
        };
        let mut token: Token = codec::decode(&v)?;
        if token.revoked_at.is_none() {
            token.revoked_at = Some(at);
            self.inner.tokens.insert(&digest, codec::encode(&token)?)?;
        }
        Ok(Some(token))
    }

    /// Finds a token by ID in any workspace (the CLI revokes by ID alone).
    pub fn token_workspace(&self, id: &TokenId) -> StoreResult<Option<WorkspaceId>> {
        for entry in self.inner.tokens_by_workspace.iter().keys() {
            let key = entry?;
            if keys::pair_suffix::<crate::ids::TokenKind>(&key).as_ref() == Some(id) {
                return Ok(WorkspaceId::from_slice(&key));
            }
        }
        Ok(None)
    }
}
