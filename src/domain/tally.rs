//! Scan tallies: what the Counters worker keeps per link and per workspace
//! for each day (in the workspace's time zone). A tally is a sum: tallies of
//! the same owner merge by adding, so a day, a period or a lifetime is the
//! merge of the tallies it covers.
//!
//! Each dimension keeps at most `MAX_DISTINCT` values per tally; scans with a
//! value beyond that are counted in `overflow` (they are in `scans` and in no
//! top list). Only referer hosts come near the cap in practice.
//!
//! Unique visitors are exact up to `EXACT_VISITORS` per tally, then a
//! HyperLogLog sketch of 2^12 registers (standard error 1.04 / sqrt(4096),
//! about 1.6%); sketches merge by taking the larger register, so the visitors
//! of a period are the union of its days, never a sum.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ScanEvent;
use crate::ids::VisitorId;

/// Distinct values kept per dimension and tally.
pub const MAX_DISTINCT: usize = 1000;
/// Visitors counted exactly per tally before the sketch takes over.
pub const EXACT_VISITORS: usize = 512;
const HLL_BITS: u32 = 12;
const HLL_REGISTERS: usize = 1 << HLL_BITS;

/// Scans counted by value; `None` is "unknown".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub values: BTreeMap<Option<String>, u64>,
    /// Scans whose value did not fit under `MAX_DISTINCT`.
    pub overflow: u64,
}

thread_local! {
    /// The lookup key of `Counts::add`, reused so that counting a value the
    /// tally already holds allocates nothing (the Counters worker counts five
    /// values per scan, twice).
    static LOOKUP: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

impl Counts {
    pub fn add(&mut self, value: Option<&str>, n: u64) {
        let counted = match value {
            None => self.values.get_mut(&None).map(|count| *count += n),
            Some(v) => LOOKUP.with_borrow_mut(|key| {
                let buf = key.get_or_insert_with(String::new);
                buf.clear();
                buf.push_str(v);
                self.values.get_mut(&*key).map(|count| *count += n)
            }),
        }
        .is_some();
        if counted {
            return;
        }
        if self.values.len() < MAX_DISTINCT {
            self.values.insert(value.map(str::to_owned), n);
        } else {
            self.overflow += n;
        }
    }

    fn merge(&mut self, other: &Counts) {
        for (value, n) in &other.values {
            self.add(value.as_deref(), *n);
        }
        self.overflow += other.overflow;
    }

    /// What `self` holds beyond `other` (`other` is part of `self`).
    fn minus(&self, other: &Counts) -> Counts {
        let mut out = Counts::default();
        for (value, n) in &self.values {
            let less = other.values.get(value).copied().unwrap_or(0);
            if *n > less {
                out.values.insert(value.clone(), n - less);
            }
        }
        out.overflow = self.overflow.saturating_sub(other.overflow);
        out
    }

    /// The `cap` largest, ties by value (`null` last) so the order is stable.
    pub fn top(&self, cap: usize) -> Vec<(Option<String>, u64)> {
        let mut all: Vec<(Option<String>, u64)> =
            self.values.iter().map(|(v, n)| (v.clone(), *n)).collect();
        all.sort_by(|(va, na), (vb, nb)| {
            nb.cmp(na).then_with(|| match (va, vb) {
                (Some(a), Some(b)) => a.cmp(b),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            })
        });
        all.truncate(cap);
        all
    }
}

/// Distinct visitors: exact 64-bit hashes, or a HyperLogLog sketch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Uniques {
    /// Sorted, distinct.
    Exact(Vec<u64>),
    /// `HLL_REGISTERS` registers.
    Sketch(Vec<u8>),
}

impl Default for Uniques {
    fn default() -> Self {
        Uniques::Exact(Vec::new())
    }
}

/// MurmurHash3's 64-bit finaliser: spreads the bits of a visitor ID (whose
/// first half is a timestamp) evenly. Stable across releases: sketches are stored.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

pub fn visitor_hash(id: &VisitorId) -> u64 {
    id_hash(id.as_bytes())
}

/// A 64-bit hash of a 16-byte ID, for `Uniques`.
pub fn id_hash(b: &[u8; 16]) -> u64 {
    let hi = u64::from_be_bytes(b[..8].try_into().unwrap_or_default());
    let lo = u64::from_be_bytes(b[8..].try_into().unwrap_or_default());
    fmix64(lo ^ fmix64(hi))
}

fn hll_insert(registers: &mut [u8], hash: u64) {
    let index = (hash >> (64 - HLL_BITS)) as usize;
    let rest = hash << HLL_BITS;
    // Rank: position of the first 1 bit in the remaining 52 bits (1-based).
    let rank = (rest.leading_zeros().min(64 - HLL_BITS) + 1) as u8;
    if registers[index] < rank {
        registers[index] = rank;
    }
}

impl Uniques {
    pub fn insert(&mut self, hash: u64) {
        match self {
            Uniques::Exact(hashes) => {
                if let Err(at) = hashes.binary_search(&hash) {
                    hashes.insert(at, hash);
                    if hashes.len() > EXACT_VISITORS {
                        self.promote();
                    }
                }
            }
            Uniques::Sketch(registers) => hll_insert(registers, hash),
        }
    }

    fn promote(&mut self) {
        if let Uniques::Exact(hashes) = self {
            let mut registers = vec![0u8; HLL_REGISTERS];
            for h in hashes.iter() {
                hll_insert(&mut registers, *h);
            }
            *self = Uniques::Sketch(registers);
        }
    }

    pub fn merge(&mut self, other: &Uniques) {
        match other {
            Uniques::Exact(hashes) => {
                for h in hashes {
                    self.insert(*h);
                }
            }
            Uniques::Sketch(theirs) => {
                self.promote();
                if let Uniques::Sketch(ours) = self {
                    if ours.len() != theirs.len() {
                        // An unreadable sketch: keep ours rather than corrupt it.
                        return;
                    }
                    for (a, b) in ours.iter_mut().zip(theirs) {
                        *a = (*a).max(*b);
                    }
                }
            }
        }
    }

    pub fn count(&self) -> u64 {
        match self {
            Uniques::Exact(hashes) => hashes.len() as u64,
            Uniques::Sketch(registers) => {
                let m = registers.len() as f64;
                let alpha = 0.7213 / (1.0 + 1.079 / m);
                let sum: f64 = registers.iter().map(|r| 2f64.powi(-(*r as i32))).sum();
                let raw = alpha * m * m / sum;
                let zeros = registers.iter().filter(|r| **r == 0).count();
                let estimate = if raw <= 2.5 * m && zeros > 0 {
                    // Linear counting for small cardinalities.
                    m * (m / zeros as f64).ln()
                } else {
                    raw
                };
                estimate.round() as u64
            }
        }
    }
}

/// One owner's scans in one day (or in its lifetime), bots excluded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub scans: u64,
    pub countries: Counts,
    pub devices: Counts,
    pub os: Counts,
    pub browsers: Counts,
    pub referers: Counts,
    pub visitors: Uniques,
}

/// A calendar day as `yyyymmdd` (sorts like the date, readable in the store).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(pub u32);

impl Day {
    pub fn from_date(d: jiff::civil::Date) -> Day {
        // Dates of scans are after 1970, so the year is positive.
        Day(d.year().max(0) as u32 * 10_000 + d.month() as u32 * 100 + d.day() as u32)
    }

    /// The day of instant `ms` in `tz`.
    pub fn of(ms: i64, tz: &jiff::tz::TimeZone) -> Day {
        let ts = jiff::Timestamp::from_millisecond(ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        Day::from_date(ts.to_zoned(tz.clone()).date())
    }

    pub fn date(self) -> jiff::civil::Date {
        let (y, m, d) = (self.0 / 10_000, (self.0 / 100) % 100, self.0 % 100);
        jiff::civil::Date::new(y as i16, m as i8, d as i8).unwrap_or_default()
    }

    /// `n` days earlier.
    pub fn minus_days(self, n: i32) -> Day {
        Day::from_date(
            self.date()
                .checked_sub(jiff::Span::new().days(n))
                .unwrap_or_default(),
        )
    }

    /// The first day of this day's month.
    pub fn month_start(self) -> Day {
        Day(self.0 / 100 * 100 + 1)
    }
}

impl std::fmt::Display for Day {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.date())
    }
}

/// The host of a referer URL, lower-case; `None` when it has none.
pub fn referer_host(referer: &str) -> Option<String> {
    let url = url::Url::parse(referer).ok()?;
    url.host_str().map(|h| h.to_ascii_lowercase())
}

impl Tally {
    /// Counts one (non-bot) scan.
    pub fn add_event(&mut self, e: &ScanEvent) {
        self.scans += 1;
        self.countries.add(e.country.as_deref(), 1);
        self.devices.add(Some(e.device_type.as_str()), 1);
        self.os.add(e.os.as_deref(), 1);
        self.browsers.add(e.browser.as_deref(), 1);
        let host = e.referer.as_deref().and_then(referer_host);
        self.referers.add(host.as_deref(), 1);
        if let Some(v) = &e.visitor_id {
            self.visitors.insert(visitor_hash(v));
        }
    }

    pub fn merge(&mut self, other: &Tally) {
        self.scans += other.scans;
        self.countries.merge(&other.countries);
        self.devices.merge(&other.devices);
        self.os.merge(&other.os);
        self.browsers.merge(&other.browsers);
        self.referers.merge(&other.referers);
        self.visitors.merge(&other.visitors);
    }

    /// The scans `self` holds beyond `part` (which it contains), without
    /// visitors (a sketch cannot be subtracted).
    pub fn minus(&self, part: &Tally) -> Tally {
        Tally {
            scans: self.scans.saturating_sub(part.scans),
            countries: self.countries.minus(&part.countries),
            devices: self.devices.minus(&part.devices),
            os: self.os.minus(&part.os),
            browsers: self.browsers.minus(&part.browsers),
            referers: self.referers.minus(&part.referers),
            visitors: Uniques::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_in_half_hour_quarter_hour_and_dst_zones() {
        let tz = |n: &str| jiff::tz::TimeZone::get(n).unwrap();
        let ms = |s: &str| s.parse::<jiff::Timestamp>().unwrap().as_millisecond();
        // 18:29:59Z is 23:59:59 in Kolkata (+05:30); a second later is the next day.
        assert_eq!(
            Day::of(ms("2026-05-07T18:29:59Z"), &tz("Asia/Kolkata")),
            Day(20260507)
        );
        assert_eq!(
            Day::of(ms("2026-05-07T18:30:00Z"), &tz("Asia/Kolkata")),
            Day(20260508)
        );
        // Kathmandu is +05:45.
        assert_eq!(
            Day::of(ms("2026-05-07T18:14:59Z"), &tz("Asia/Kathmandu")),
            Day(20260507)
        );
        assert_eq!(
            Day::of(ms("2026-05-07T18:15:00Z"), &tz("Asia/Kathmandu")),
            Day(20260508)
        );
        assert_eq!(
            Day::of(ms("2026-05-07T15:00:00Z"), &tz("Asia/Tokyo")),
            Day(20260508)
        );
        // New York falls back on 2026-11-01 at 02:00 EDT: that day has 25 hours.
        let ny = tz("America/New_York");
        assert_eq!(Day::of(ms("2026-11-01T04:00:00Z"), &ny), Day(20261101));
        assert_eq!(Day::of(ms("2026-11-02T04:59:59Z"), &ny), Day(20261101));
        assert_eq!(Day::of(ms("2026-11-02T05:00:00Z"), &ny), Day(20261102));
        assert_eq!(Day(20260301).minus_days(1), Day(20260228));
        assert_eq!(Day(20260317).month_start(), Day(20260301));
        assert_eq!(Day(20260307).to_string(), "2026-03-07");
    }

    #[test]
    fn top_lists_break_ties_by_value_with_unknown_last() {
        let mut c = Counts::default();
        for (v, n) in [(Some("DE"), 3), (None, 3), (Some("AT"), 3), (Some("US"), 5)] {
            c.add(v, n);
        }
        let top = c.top(3);
        assert_eq!(
            top,
            [
                (Some("US".to_owned()), 5),
                (Some("AT".to_owned()), 3),
                (Some("DE".to_owned()), 3)
            ]
        );
        assert_eq!(c.top(10).last().unwrap(), &(None, 3));
    }

    #[test]
    fn values_past_the_cap_overflow_and_merge_and_minus_are_inverse() {
        let mut a = Counts::default();
        for i in 0..MAX_DISTINCT + 10 {
            a.add(Some(&format!("host{i}")), 1);
        }
        assert_eq!(a.values.len(), MAX_DISTINCT);
        assert_eq!(a.overflow, 10);
        let mut b = Counts::default();
        b.add(Some("host1"), 4);
        b.add(None, 2);
        let mut sum = a.clone();
        sum.merge(&b);
        // `null` found no room in the full sum: it went to the overflow.
        let mut expected = Counts::default();
        expected.add(Some("host1"), 4);
        expected.overflow = 2;
        assert_eq!(sum.minus(&a), expected);
        let mut small = Counts::default();
        small.merge(&b);
        assert_eq!(small.minus(&Counts::default()), b);
    }

    #[test]
    fn counting_a_value_finds_it_whatever_was_counted_before() {
        let mut c = Counts::default();
        for v in [
            Some("chrome-long"),
            Some("chrome"),
            None,
            Some("chrome"),
            None,
        ] {
            c.add(v, 1);
        }
        assert_eq!(c.values.get(&Some("chrome".to_owned())), Some(&2));
        assert_eq!(c.values.get(&Some("chrome-long".to_owned())), Some(&1));
        assert_eq!(c.values.get(&None), Some(&2));
        assert_eq!(c.values.len(), 3);
    }

    #[test]
    fn visitors_are_exact_then_within_the_sketchs_error() {
        let mut u = Uniques::default();
        for i in 0..EXACT_VISITORS as u64 {
            u.insert(fmix64(i));
            u.insert(fmix64(i));
        }
        assert_eq!(u.count(), EXACT_VISITORS as u64);
        assert!(matches!(u, Uniques::Exact(_)));
        for n in [1_000u64, 20_000, 200_000] {
            let (mut a, mut b) = (Uniques::default(), Uniques::default());
            for i in 0..n {
                a.insert(fmix64(i));
                // Half of b overlaps a: the union is 1.5 n.
                b.insert(fmix64(i + n / 2));
            }
            let err = |got: u64, want: f64| (got as f64 - want).abs() / want;
            assert!(err(a.count(), n as f64) < 0.05, "{n}: {}", a.count());
            a.merge(&b);
            assert!(
                err(a.count(), n as f64 * 1.5) < 0.05,
                "union of {n}: {}",
                a.count()
            );
        }
    }
}
