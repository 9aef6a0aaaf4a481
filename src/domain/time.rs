//! `Timestamp`: milliseconds since the Unix epoch, written as RFC 3339 UTC
//! with millisecond precision and `Z` in JSON, as an integer in the store.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

#[derive(Debug, thiserror::Error)]
#[error("expected an RFC 3339 timestamp such as 2026-06-05T14:32:18Z")]
pub struct TimestampError;

impl Timestamp {
    pub fn now() -> Self {
        Timestamp(jiff::Timestamp::now().as_millisecond())
    }

    pub fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    pub fn as_millis(&self) -> i64 {
        self.0
    }

    fn to_jiff(self) -> jiff::Timestamp {
        jiff::Timestamp::from_millisecond(self.0).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3}", self.to_jiff())
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;

    /// Accepts RFC 3339 with any offset (`Z`, `+02:00`); normalises to UTC.
    fn from_str(s: &str) -> Result<Self, TimestampError> {
        match s.parse::<jiff::Timestamp>() {
            Ok(ts) => Ok(Timestamp(ts.as_millisecond())),
            Err(_) => past_the_end(s).ok_or(TimestampError),
        }
    }
}

/// RFC 3339 reaches up to 9999-12-31 in any offset, a day past the latest
/// instant jiff keeps (9999-12-30T22:00Z); such a timestamp is read as that
/// instant, which no link or event will ever reach, rather than refused.
fn past_the_end(s: &str) -> Option<Timestamp> {
    let pieces = jiff::fmt::temporal::Pieces::parse(s).ok()?;
    pieces.offset()?;
    (pieces.time().is_some() && pieces.date().year() == 9999)
        .then(|| Timestamp(jiff::Timestamp::MAX.as_second() * 1000))
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            serializer.serialize_i64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let s = String::deserialize(deserializer)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            i64::deserialize(deserializer).map(Timestamp)
        }
    }
}

impl utoipa::PartialSchema for Timestamp {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .description(Some("RFC 3339, UTC, millisecond precision"))
            .examples(["2026-06-05T14:32:18.123Z"])
            .into()
    }
}

impl utoipa::ToSchema for Timestamp {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_millis_and_z() {
        let ts: Timestamp = "2026-06-05T16:32:18.123456+02:00".parse().unwrap();
        assert_eq!(ts.to_string(), "2026-06-05T14:32:18.123Z");
        assert_eq!(
            "2026-06-05T14:32:18Z"
                .parse::<Timestamp>()
                .unwrap()
                .to_string(),
            "2026-06-05T14:32:18.000Z"
        );
        assert!("yesterday".parse::<Timestamp>().is_err());
        let last = "9999-12-31T23:59:59-23:59".parse::<Timestamp>().unwrap();
        assert_eq!(last.to_string(), "9999-12-30T22:00:00.000Z");
        assert!("9999-12-31".parse::<Timestamp>().is_err());
        assert!("9999-12-31T23:59:59".parse::<Timestamp>().is_err());
        assert!("2026-06-05".parse::<Timestamp>().is_err());
    }
}
