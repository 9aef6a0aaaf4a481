//! TypeID-style identifiers: `<prefix>_<26 chars Crockford base32 of a UUIDv7>`.
//! Each kind of record has its own ID type, so a link ID can never be passed
//! where an event ID is expected. In the store an ID is its 16 UUID bytes,
//! which sort by creation time.

use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const ENCODED_LEN: usize = 26;

/// The prefix of one kind of ID.
pub trait IdKind: Send + Sync + 'static {
    const PREFIX: &'static str;
    /// The schema name in the OpenAPI document, e.g. `LinkId`.
    const NAME: &'static str;
}

macro_rules! id_kinds {
    ($($kind:ident => $prefix:literal as $alias:ident),* $(,)?) => {
        $(
            #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
            pub struct $kind;
            impl IdKind for $kind {
                const PREFIX: &'static str = $prefix;
                const NAME: &'static str = stringify!($alias);
            }
            pub type $alias = Id<$kind>;
        )*
    };
}

id_kinds! {
    WorkspaceKind => "ws" as WorkspaceId,
    TokenKind => "tok" as TokenId,
    LinkKind => "lnk" as LinkId,
    EventKind => "evt" as EventId,
    VisitorKind => "vis" as VisitorId,
    WebhookKind => "wh" as WebhookId,
    MessageKind => "msg" as MessageId,
    DeliveryKind => "dlv" as DeliveryId,
}

/// A typed, time-ordered identifier.
pub struct Id<K: IdKind> {
    uuid: Uuid,
    kind: PhantomData<K>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("expected an ID starting with `{0}_`")]
    Prefix(&'static str),
    #[error("the part after `_` must be 26 lower-case Crockford base32 characters")]
    Suffix,
}

impl<K: IdKind> Id<K> {
    /// A new ID at the current time; IDs made by one process are strictly ordered.
    pub fn generate() -> Self {
        Self::from_uuid(Uuid::now_v7())
    }

    /// A new ID carrying millisecond `ms` (since the Unix epoch) as its
    /// time, random otherwise (tests; the Recorder and the registry take
    /// their random bits from a `random::Block`, through `at`).
    #[cfg(test)]
    pub fn generate_at(ms: i64) -> Self {
        Self::at(ms, &crate::random::bytes())
    }

    /// The UUIDv7 ID of millisecond `ms` whose 74 random bits are taken from
    /// `random` (the version and variant bits replace the rest).
    pub fn at(ms: i64, random: &[u8; 10]) -> Self {
        let ms = ms.max(0) as u64;
        Self::from_uuid(uuid::Builder::from_unix_timestamp_millis(ms, random).into_uuid())
    }

    pub fn from_uuid(uuid: Uuid) -> Self {
        Id {
            uuid,
            kind: PhantomData,
        }
    }

    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self::from_uuid(Uuid::from_bytes(bytes))
    }

    /// Reads an ID from the first 16 bytes of a store key.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let array: [u8; 16] = bytes.get(..16)?.try_into().ok()?;
        Some(Self::from_bytes(array))
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        self.uuid.as_bytes()
    }

    /// The 16-byte value just below this ID (not an ID itself), so that
    /// "after it" includes this ID: for reads that start at an ID.
    pub fn just_before(&self) -> Self {
        let n = u128::from_be_bytes(*self.as_bytes()).saturating_sub(1);
        Self::from_bytes(n.to_be_bytes())
    }

    /// Milliseconds since the Unix epoch encoded in a UUIDv7 (its first 48 bits).
    pub fn timestamp_ms(&self) -> i64 {
        let b = self.uuid.as_bytes();
        let mut ms = [0u8; 8];
        ms[2..].copy_from_slice(&b[..6]);
        i64::from_be_bytes(ms)
    }

    /// The smallest 16-byte key of any UUIDv7 made at or after `ms`.
    pub fn lower_bound_bytes(ms: i64) -> [u8; 16] {
        let mut out = [0u8; 16];
        let ms = ms.clamp(0, (1 << 48) - 1).to_be_bytes();
        out[..6].copy_from_slice(&ms[2..]);
        out
    }

    fn encode(&self) -> [u8; ENCODED_LEN] {
        let value = u128::from_be_bytes(*self.uuid.as_bytes());
        let mut out = [0u8; ENCODED_LEN];
        for (i, slot) in out.iter_mut().enumerate() {
            let shift = 5 * (ENCODED_LEN - 1 - i);
            *slot = ALPHABET[((value >> shift) & 0x1f) as usize];
        }
        out
    }

    fn decode(suffix: &str) -> Result<Uuid, IdError> {
        let bytes = suffix.as_bytes();
        // 26 × 5 = 130 bits: the first character may only carry 3 bits.
        if bytes.len() != ENCODED_LEN || bytes[0] > b'7' {
            return Err(IdError::Suffix);
        }
        let mut value: u128 = 0;
        for &c in bytes {
            let digit = ALPHABET
                .iter()
                .position(|&a| a == c)
                .ok_or(IdError::Suffix)?;
            value = (value << 5) | digit as u128;
        }
        Ok(Uuid::from_u128(value))
    }
}

impl<K: IdKind> Clone for Id<K> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K: IdKind> Copy for Id<K> {}
impl<K: IdKind> PartialEq for Id<K> {
    fn eq(&self, other: &Self) -> bool {
        self.uuid == other.uuid
    }
}
impl<K: IdKind> Eq for Id<K> {}
impl<K: IdKind> PartialOrd for Id<K> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<K: IdKind> Ord for Id<K> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.uuid.cmp(&other.uuid)
    }
}
impl<K: IdKind> Hash for Id<K> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.uuid.hash(state)
    }
}

/// The longest prefix an ID kind may have (checked by a test of every kind).
const PREFIX_MAX: usize = 8;

/// An ID's text form, `prefix_suffix`, built on the stack: JSON writes IDs
/// by the thousand (listings, exports, webhook bodies) without an
/// allocation or a pass through `fmt` each.
pub struct IdText {
    buf: [u8; PREFIX_MAX + 1 + ENCODED_LEN],
    len: usize,
}

impl IdText {
    pub fn as_str(&self) -> &str {
        // Built from an ASCII prefix, `_` and the ASCII alphabet.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl<K: IdKind> Id<K> {
    /// The text form, `prefix_suffix`, as `Display` writes it.
    pub fn text(&self) -> IdText {
        let prefix = &K::PREFIX.as_bytes()[..K::PREFIX.len().min(PREFIX_MAX)];
        let mut buf = [0u8; PREFIX_MAX + 1 + ENCODED_LEN];
        buf[..prefix.len()].copy_from_slice(prefix);
        buf[prefix.len()] = b'_';
        let len = prefix.len() + 1 + ENCODED_LEN;
        buf[prefix.len() + 1..len].copy_from_slice(&self.encode());
        IdText { buf, len }
    }
}

impl<K: IdKind> fmt::Display for Id<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text().as_str())
    }
}

impl<K: IdKind> fmt::Debug for Id<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<K: IdKind> FromStr for Id<K> {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, IdError> {
        let suffix = s
            .strip_prefix(K::PREFIX)
            .and_then(|rest| rest.strip_prefix('_'))
            .ok_or(IdError::Prefix(K::PREFIX))?;
        Self::decode(suffix).map(Self::from_uuid)
    }
}

/// JSON carries the TypeID string; the store (bincode) carries the 16 bytes.
impl<K: IdKind> Serialize for Id<K> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(self.text().as_str())
        } else {
            self.uuid.serialize(serializer)
        }
    }
}

impl<'de, K: IdKind> Deserialize<'de> for Id<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let s = String::deserialize(deserializer)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            Uuid::deserialize(deserializer).map(Self::from_uuid)
        }
    }
}

impl<K: IdKind> utoipa::PartialSchema for Id<K> {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(format!(
                "^{}_[0-7][0-9a-hjkmnp-tv-z]{{25}}$",
                K::PREFIX
            )))
            .description(Some(format!("TypeID with prefix `{}_`", K::PREFIX)))
            .examples([format!("{}_01h455vb4pex5vsknk084sn02q", K::PREFIX)])
            .into()
    }
}

impl<K: IdKind> utoipa::ToSchema for Id<K> {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed(K::NAME)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typeid_spec_vector_round_trips() {
        // From the TypeID spec's valid test cases.
        let uuid = Uuid::parse_str("01890a5d-ac96-774b-bcce-b302099a8057").unwrap();
        let id = LinkId::from_uuid(uuid);
        assert_eq!(id.to_string(), "lnk_01h455vb4pex5vsknk084sn02q");
        assert_eq!(
            "lnk_01h455vb4pex5vsknk084sn02q".parse::<LinkId>().unwrap(),
            id
        );
    }

    fn text_is_prefix_and_suffix<K: IdKind>() {
        assert!(K::PREFIX.len() <= PREFIX_MAX, "{}", K::PREFIX);
        for id in [
            Id::<K>::generate(),
            Id::from_bytes([0; 16]),
            Id::from_bytes([0xff; 16]),
        ] {
            let suffix = id.encode().map(char::from).iter().collect::<String>();
            let text = format!("{}_{suffix}", K::PREFIX);
            assert_eq!(id.text().as_str(), text);
            assert_eq!(id.to_string(), text);
            assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{text}\""));
            assert_eq!(text.parse::<Id<K>>().unwrap(), id);
        }
    }

    #[test]
    fn every_kind_writes_its_whole_prefix_an_underscore_and_the_suffix() {
        text_is_prefix_and_suffix::<WorkspaceKind>();
        text_is_prefix_and_suffix::<TokenKind>();
        text_is_prefix_and_suffix::<LinkKind>();
        text_is_prefix_and_suffix::<EventKind>();
        text_is_prefix_and_suffix::<VisitorKind>();
        text_is_prefix_and_suffix::<WebhookKind>();
        text_is_prefix_and_suffix::<MessageKind>();
        text_is_prefix_and_suffix::<DeliveryKind>();
    }

    #[test]
    fn malformed_ids_are_errors_not_panics() {
        for bad in [
            "",
            "lnk",
            "lnk_",
            "evt_01h455vb4pex5vsknk084sn02q",
            "lnk_01h455vb4pex5vsknk084sn02",
            "lnk_81h455vb4pex5vsknk084sn02q",
            "lnk_01H455VB4PEX5VSKNK084SN02Q",
            "lnk_01h455vb4pex5vsknk084sn0uq",
            "lnk_01h455vb4pex5vsknk084sn02qq",
            "lnk_ü1h455vb4pex5vsknk084sn02",
        ] {
            assert!(bad.parse::<LinkId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn generated_ids_are_ordered_and_carry_their_time() {
        let a = EventId::generate();
        let b = EventId::generate();
        assert!(a < b);
        assert!(a.as_bytes() < b.as_bytes());
        let now = jiff::Timestamp::now().as_millisecond();
        assert!((now - a.timestamp_ms()).abs() < 5_000);
        assert!(EventId::lower_bound_bytes(a.timestamp_ms()).as_slice() <= a.as_bytes().as_slice());
        assert!(
            EventId::lower_bound_bytes(a.timestamp_ms() + 1).as_slice() > a.as_bytes().as_slice()
        );
    }

    #[test]
    fn an_id_made_for_a_time_carries_it_and_differs_from_its_twin() {
        let ms = 1_764_000_000_123;
        let (a, b) = (VisitorId::generate_at(ms), VisitorId::generate_at(ms));
        assert_eq!((a.timestamp_ms(), b.timestamp_ms()), (ms, ms));
        assert_ne!(a, b);
        assert_eq!(a.uuid.get_version_num(), 7);
        assert!(VisitorId::lower_bound_bytes(ms).as_slice() <= a.as_bytes().as_slice());
        assert!(VisitorId::lower_bound_bytes(ms + 1).as_slice() > a.as_bytes().as_slice());
    }
}
