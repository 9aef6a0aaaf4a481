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

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
const TEXT_LEN: usize = 24;

impl Timestamp {
    /// The RFC 3339 text `Display` writes, built on the stack for years
    /// 0000 to 9999 within jiff's range (every timestamp scanhop makes);
    /// `None` outside, where jiff writes it as before.
    fn text(&self) -> Option<[u8; TEXT_LEN]> {
        const DAY_MS: i64 = 86_400_000;
        let (days, ms_of_day) = (self.0.div_euclid(DAY_MS), self.0.rem_euclid(DAY_MS));
        // Days since 1970-01-01 to a civil date (H. Hinnant's days_from_civil,
        // inverted), in eras of 400 years from 0000-03-01.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        if !(0..=9999).contains(&year) || self.0 > jiff::Timestamp::MAX.as_millisecond() {
            return None;
        }
        let mut out = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut value: i64| {
            for slot in out[at..at + width].iter_mut().rev() {
                *slot = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, month);
        put(8, 2, day);
        put(11, 2, ms_of_day / 3_600_000);
        put(14, 2, ms_of_day / 60_000 % 60);
        put(17, 2, ms_of_day / 1_000 % 60);
        put(20, 3, ms_of_day % 1_000);
        Some(out)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.text() {
            // ASCII digits and separators.
            Some(text) => f.write_str(std::str::from_utf8(&text).unwrap_or_default()),
            None => write!(f, "{:.3}", self.to_jiff()),
        }
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
            match self.text() {
                Some(text) => {
                    serializer.serialize_str(std::str::from_utf8(&text).unwrap_or_default())
                }
                None => serializer.collect_str(self),
            }
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

    #[test]
    fn the_text_built_on_the_stack_is_jiffs_for_every_year_it_covers() {
        let jiff_text = |t: Timestamp| format!("{:.3}", t.to_jiff());
        let mut edges = vec![
            0,
            -1,
            1,
            951_782_400_000,     // 2000-02-29
            951_868_799_999,     // the last millisecond of that day
            4_107_542_400_000,   // 2100-03-01
            -62_167_219_200_000, // 0000-01-01
            -62_167_219_200_001, // a millisecond before: year -1
            253_402_207_200_000, // 9999-12-30T22:00, jiff's last instant
            253_402_300_799_999, // 9999-12-31T23:59:59.999, past it
            253_402_300_800_000, // year 10000
            i64::MIN,
            i64::MAX,
        ];
        // A deterministic sweep over years 0 to 9999 and beyond them.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            edges.push((x % 700_000_000_000_000) as i64 - 350_000_000_000_000);
        }
        for ms in edges {
            let t = Timestamp::from_millis(ms);
            if let Some(text) = t.text() {
                assert_eq!(std::str::from_utf8(&text).unwrap(), jiff_text(t), "{ms}");
            }
            assert_eq!(t.to_string(), jiff_text(t), "{ms}");
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", jiff_text(t)), "{ms}");
        }
    }
}
