//! Visitors: what the Visitors worker derives from a visitor's scans (the
//! profile), what `identify` attaches (attributes), and the lead score.

use serde::{Deserialize, Serialize};

use super::tally::{Uniques, id_hash};
use super::{ScanEvent, Timestamp};
use crate::ids::{VisitorId, WorkspaceId};

/// Most attribute keys a visitor holds (and a request sends).
pub const MAX_ATTRIBUTES: usize = 50;
/// Longest attribute key, in bytes.
pub const MAX_KEY_BYTES: usize = 64;
/// Longest string value, in bytes.
pub const MAX_STRING_BYTES: usize = 1024;

/// Distinct countries and devices a profile lists.
pub const MAX_LISTED: usize = 100;
const MS_PER_DAY: i64 = 86_400_000;

/// One device a visitor scanned with.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
pub struct DeviceSeen {
    pub device_type: String,
    pub os: Option<String>,
    pub browser: Option<String>,
}

/// Derived from the visitor's events, in event order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitorProfile {
    pub id: VisitorId,
    pub workspace_id: WorkspaceId,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub event_count: u64,
    /// Distinct links: exact up to 512, then estimated (see `Uniques`).
    pub links: Uniques,
    pub countries: Vec<String>,
    pub devices: Vec<DeviceSeen>,
    /// Distinct UTC days with a scan, and the last of them.
    pub days_seen: u32,
    pub last_day: i64,
}

/// Inserts the value `make` builds where `order` (comparing an element with
/// the value) finds its place, unless it is there already or the list is
/// full; the value is only built when it is inserted.
fn insert_sorted<T>(
    list: &mut Vec<T>,
    order: impl FnMut(&T) -> std::cmp::Ordering,
    make: impl FnOnce() -> T,
) {
    if let Err(at) = list.binary_search_by(order)
        && list.len() < MAX_LISTED
    {
        list.insert(at, make());
    }
}

impl VisitorProfile {
    pub fn new(id: VisitorId, workspace_id: WorkspaceId, at: Timestamp) -> VisitorProfile {
        VisitorProfile {
            id,
            workspace_id,
            first_seen: at,
            last_seen: at,
            event_count: 0,
            links: Uniques::default(),
            countries: Vec::new(),
            devices: Vec::new(),
            days_seen: 0,
            last_day: i64::MIN,
        }
    }

    /// Folds one of the visitor's events (in ID order).
    pub fn links_scanned(&self) -> u64 {
        self.links.count()
    }

    pub fn add_event(&mut self, e: &ScanEvent) {
        let ms = e.timestamp_ms();
        let at = Timestamp::from_millis(ms);
        if self.event_count == 0 || at < self.first_seen {
            self.first_seen = at;
        }
        if at > self.last_seen {
            self.last_seen = at;
        }
        self.event_count += 1;
        self.links.insert(id_hash(e.link_id.as_bytes()));
        if let Some(c) = &e.country {
            insert_sorted(&mut self.countries, |x| x.as_str().cmp(c), || c.to_string());
        }
        // Compared as borrowed fields, in `DeviceSeen`'s (derived) order.
        let seen = (
            e.device_type.as_str(),
            e.os.as_deref(),
            e.browser.as_deref(),
        );
        insert_sorted(
            &mut self.devices,
            |d| {
                (
                    d.device_type.as_str(),
                    d.os.as_deref(),
                    d.browser.as_deref(),
                )
                    .cmp(&seen)
            },
            || DeviceSeen {
                device_type: seen.0.to_owned(),
                os: e.os.as_deref().map(str::to_owned),
                browser: e.browser.as_deref().map(str::to_owned),
            },
        );
        let day = ms.div_euclid(MS_PER_DAY);
        if day > self.last_day {
            self.days_seen += 1;
            self.last_day = day;
        }
    }
}

/// The lead score, 0 to 100, from engagement:
///
/// | part | points |
/// |---|---|
/// | scans | 3 per scan, at most 30 (10 scans) |
/// | distinct links | 4 per link, at most 20 (5 links) |
/// | return days | 4 per day with a scan after the first, at most 20 |
/// | recency | 15 if the last scan is under a day old, 10 under a week, 5 under 30 days |
/// | identified | 10 once `identify` attached attributes |
/// | attributes (e.g. form answers) | 1 per attribute, at most 5 |
pub fn lead_score(p: &VisitorProfile, attributes: usize, identified: bool, now: Timestamp) -> u8 {
    let scans = (p.event_count.min(10) * 3) as i64;
    let links = (p.links_scanned().min(5) * 4) as i64;
    let returns = (i64::from(p.days_seen).saturating_sub(1).clamp(0, 5)) * 4;
    let age = now.as_millis() - p.last_seen.as_millis();
    let recency = if age < MS_PER_DAY {
        15
    } else if age < 7 * MS_PER_DAY {
        10
    } else if age < 30 * MS_PER_DAY {
        5
    } else {
        0
    };
    let identified = if identified { 10 } else { 0 };
    let attributes = attributes.min(5) as i64;
    (scans + links + returns + recency + identified + attributes).clamp(0, 100) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{EventId, LinkId};

    fn event(ms: i64, link: LinkId, country: Option<&str>) -> ScanEvent {
        let mut id = EventId::lower_bound_bytes(ms);
        id[15] = 1;
        ScanEvent {
            country: country.map(Into::into),
            ..ScanEvent::sample(EventId::from_bytes(id), WorkspaceId::generate(), link)
        }
    }

    #[test]
    fn a_profile_counts_events_links_countries_devices_and_days() {
        let (a, b) = (LinkId::generate(), LinkId::generate());
        let day = MS_PER_DAY;
        let mut p = VisitorProfile::new(
            VisitorId::generate(),
            WorkspaceId::generate(),
            Timestamp::from_millis(0),
        );
        for e in [
            event(100 * day + 5, a, Some("AT")),
            event(100 * day + 9, b, Some("AT")),
            event(101 * day + 1, a, None),
            event(103 * day, a, Some("DE")),
        ] {
            p.add_event(&e);
        }
        assert_eq!(p.event_count, 4);
        assert_eq!(p.links_scanned(), 2);
        assert_eq!(p.countries, ["AT", "DE"]);
        assert_eq!(p.devices.len(), 1);
        assert_eq!(p.days_seen, 3);
        assert_eq!(p.first_seen.as_millis(), 100 * day + 5);
        assert_eq!(p.last_seen.as_millis(), 103 * day);
    }

    #[test]
    fn devices_and_countries_stay_sorted_and_distinct() {
        use crate::domain::DeviceType;
        let mut p = VisitorProfile::new(
            VisitorId::generate(),
            WorkspaceId::generate(),
            Timestamp::from_millis(0),
        );
        let link = LinkId::generate();
        let seen = [
            (DeviceType::Mobile, Some("iOS"), Some("Safari"), Some("US")),
            (DeviceType::Desktop, None, Some("Firefox"), Some("AT")),
            (DeviceType::Mobile, Some("Android"), None, None),
            (DeviceType::Mobile, Some("iOS"), Some("Safari"), Some("DE")),
            (DeviceType::Mobile, Some("iOS"), None, Some("AT")),
            (DeviceType::Desktop, None, Some("Firefox"), Some("US")),
        ];
        for (i, (device, os, browser, country)) in seen.into_iter().enumerate() {
            let mut e = event(i as i64, link, country);
            e.device_type = device;
            e.os = os.map(Into::into);
            e.browser = browser.map(Into::into);
            p.add_event(&e);
        }
        assert_eq!(p.countries, ["AT", "DE", "US"]);
        assert_eq!(p.devices.len(), 4);
        assert!(p.devices.windows(2).all(|w| w[0] < w[1]), "{:?}", p.devices);
    }

    #[test]
    fn the_lead_score_follows_its_table() {
        let now = Timestamp::from_millis(1_000 * MS_PER_DAY);
        let mut p = VisitorProfile::new(VisitorId::generate(), WorkspaceId::generate(), now);
        p.event_count = 1;
        p.links.insert(1);
        p.days_seen = 1;
        p.last_seen = now;
        // 3 + 4 + 0 + 15
        assert_eq!(lead_score(&p, 0, false, now), 22);
        let week_later = Timestamp::from_millis(now.as_millis() + 3 * MS_PER_DAY);
        assert_eq!(lead_score(&p, 0, false, week_later), 17);
        let long_after = Timestamp::from_millis(now.as_millis() + 60 * MS_PER_DAY);
        assert_eq!(lead_score(&p, 0, false, long_after), 7);
        p.event_count = 50;
        for l in 2..10 {
            p.links.insert(l);
        }
        p.days_seen = 12;
        assert_eq!(lead_score(&p, 2, true, now), 30 + 20 + 20 + 15 + 10 + 2);
        assert_eq!(lead_score(&p, 40, true, now), 100);
    }
}
