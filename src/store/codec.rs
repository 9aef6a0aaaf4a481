//! Values on disk: one schema-version byte, then bincode (serde mode). A record
//! type can change shape by bumping its version and decoding both.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{StoreError, StoreResult};

/// A type stored as a value, with its current schema version.
pub trait Record: Serialize + DeserializeOwned {
    const VERSION: u8;
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

pub fn encode<T: Record>(value: &T) -> StoreResult<Vec<u8>> {
    let mut out = vec![T::VERSION];
    bincode::serde::encode_into_std_write(value, &mut out, config())
        .map_err(|e| StoreError::Codec(e.to_string()))?;
    Ok(out)
}

pub fn decode<T: Record>(bytes: &[u8]) -> StoreResult<T> {
    match bytes.split_first() {
        Some((&v, body)) if v == T::VERSION => bincode::serde::decode_from_slice(body, config())
            .map(|(value, _)| value)
            .map_err(|e| StoreError::Codec(e.to_string())),
        Some((v, _)) => Err(StoreError::Codec(format!("unknown schema version {v}"))),
        None => Err(StoreError::Codec("empty record".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Timestamp, Workspace};
    use crate::ids::WorkspaceId;

    impl Record for (u32, String) {
        const VERSION: u8 = 7;
    }

    #[test]
    fn round_trip_and_version_byte() {
        let v = (42u32, "x".to_owned());
        let bytes = encode(&v).unwrap();
        assert_eq!(bytes[0], 7);
        assert_eq!(decode::<(u32, String)>(&bytes).unwrap(), v);
        let mut wrong = bytes.clone();
        wrong[0] = 8;
        assert!(decode::<(u32, String)>(&wrong).is_err());
        assert!(decode::<(u32, String)>(&[]).is_err());
    }

    #[test]
    fn ids_and_timestamps_are_compact_in_the_store() {
        let ws = Workspace {
            id: WorkspaceId::generate(),
            name: "a".into(),
            plan: "free".into(),
            retention_days: 30,
            timezone: "UTC".into(),
            created_at: Timestamp::now(),
        };
        let bytes = encode(&ws).unwrap();
        assert!(bytes.len() < 48, "{} bytes", bytes.len());
        assert_eq!(decode::<Workspace>(&bytes).unwrap(), ws);
    }
}
