//! Enrichment of a scan on the redirect path: plain functions on the worker
//! thread, no I/O. What changes over time comes in as values: the day's IP
//! salt in the request (rotated by `actors::salts`), the GeoIP databases as
//! memory-mapped readers (reloaded by `actors::geo_reloader`).

pub mod agent_cache;
pub mod bots;
pub mod client_ip;
pub mod fingerprint;
mod forwarding;
pub mod geo;
pub mod privacy;
pub mod recent;
pub mod useragent;

use std::net::IpAddr;
use std::sync::Arc;

use crate::domain::{DeviceType, Link, ScanEvent, ScanMethod};
use crate::ids::EventId;
use geo::GeoDatabases;
use privacy::Salt;
use useragent::Agent;

const MAX_REFERER_BYTES: usize = 1024;
/// Distinct user agents remembered parsed (see `agent_cache` for the policy).
const AGENT_CACHE_ENTRIES: usize = 10_000;

/// The parts of a request that enrichment reads. `client_ip` is already
/// resolved through the trusted proxies (`http::client_ip_of`).
#[derive(Debug, Default, Clone, Copy)]
pub struct ScanRequest<'a> {
    pub client_ip: Option<IpAddr>,
    pub user_agent: Option<&'a str>,
    pub accept_language: Option<&'a str>,
    pub referer: Option<&'a str>,
    /// The salt of the scan's day, for `ip_hash`.
    pub ip_salt: Salt,
}

pub struct Enricher {
    agents: Arc<agent_cache::AgentCache>,
    geo: Arc<GeoDatabases>,
}

impl Enricher {
    pub fn new(geo: Arc<GeoDatabases>) -> Enricher {
        Enricher {
            agents: Arc::new(agent_cache::AgentCache::new(AGENT_CACHE_ENTRIES)),
            geo,
        }
    }

    /// The parsed user agents, shared with the Recorder, which parses those
    /// the redirect leaves to it (`known_agent`).
    pub fn agents(&self) -> Arc<agent_cache::AgentCache> {
        self.agents.clone()
    }

    /// The parsed user agent if parsing it is not needed: the cache knows it,
    /// or the request has none (a bot). `None` leaves it to the Recorder
    /// (`AgentCache::parse_unseen`, then `apply_agent`).
    pub fn known_agent(&self, ua: Option<&str>) -> Option<Agent> {
        match ua {
            Some(ua) => self.agents.cached(ua),
            None => Some(self.agents.parse(None)),
        }
    }

    /// User-agent cache lookups so far: (hits, misses).
    pub fn agent_cache_stats(&self) -> (u64, u64) {
        self.agents.stats()
    }

    /// Builds the scan event for `link` from `req`, its user agent parsed;
    /// the Recorder assigns its ID when it takes the event (IDs follow the
    /// Recorder's queue order). The client IP is used for the hash (and geo)
    /// here and never leaves this function.
    pub fn scan_event(
        &self,
        req: &ScanRequest,
        link: &Link,
        method: ScanMethod,
        destination: String,
    ) -> ScanEvent {
        let agent = self.agents.parse(req.user_agent);
        self.scan_event_with(req, link, method, destination, Some(agent))
    }

    /// `scan_event` with the user agent as `known_agent` gave it: `None`
    /// leaves the event's device, OS, browser and bot flag for `apply_agent`.
    pub fn scan_event_with(
        &self,
        req: &ScanRequest,
        link: &Link,
        method: ScanMethod,
        destination: String,
        agent: Option<Agent>,
    ) -> ScanEvent {
        let ip = req.client_ip;
        let geo = self.geo.lookup(ip);
        let mut event = ScanEvent {
            id: EventId::from_bytes([0; 16]),
            workspace_id: link.workspace_id,
            link_id: link.id,
            visitor_id: None,
            method,
            device_type: DeviceType::Other,
            os: None,
            os_version: None,
            browser: None,
            browser_version: None,
            country: geo.country,
            region: geo.region,
            city: geo.city,
            isp: geo.isp,
            asn: geo.asn,
            language: req.accept_language.and_then(primary_language),
            referer: req.referer.and_then(truncate_referer),
            destination,
            ip_hash: privacy::ip_hash(&req.ip_salt, ip),
            bot: false,
        };
        if let Some(agent) = agent {
            apply_agent(&mut event, agent);
        }
        event
    }
}

/// Fills in what the user agent says of the scan's device.
pub fn apply_agent(event: &mut ScanEvent, agent: Agent) {
    event.device_type = agent.device_type.unwrap_or(DeviceType::Other);
    event.os = agent.os;
    event.os_version = agent.os_version;
    event.browser = agent.browser;
    event.browser_version = agent.browser_version;
    event.bot = agent.bot;
}

/// The primary subtag of the first language in `Accept-Language`, lower-case.
pub fn primary_language(header: &str) -> Option<compact_str::CompactString> {
    let first = header.split(',').next()?.split(';').next()?.trim();
    let primary = first.split(['-', '_']).next()?;
    let ok = (1..=8).contains(&primary.len()) && primary.bytes().all(|b| b.is_ascii_alphabetic());
    ok.then(|| {
        let mut lower = compact_str::CompactString::from(primary);
        lower.make_ascii_lowercase();
        lower
    })
}

/// The referer as sent, cut to 1024 bytes on a character boundary.
pub fn truncate_referer(referer: &str) -> Option<String> {
    if referer.is_empty() {
        return None;
    }
    let mut end = referer.len().min(MAX_REFERER_BYTES);
    while !referer.is_char_boundary(end) {
        end -= 1;
    }
    Some(referer[..end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_is_the_first_primary_subtag() {
        assert_eq!(
            primary_language("de-AT,de;q=0.9,en;q=0.8").as_deref(),
            Some("de")
        );
        assert_eq!(primary_language("EN_us").as_deref(), Some("en"));
        assert_eq!(primary_language("*"), None);
        assert_eq!(primary_language(""), None);
        assert_eq!(primary_language("zh-Hant-TW;q=1").as_deref(), Some("zh"));
    }

    #[test]
    fn referer_is_truncated_safely() {
        let long = "é".repeat(600);
        let cut = truncate_referer(&long).unwrap();
        assert!(cut.len() <= 1024 && cut.len() >= 1022);
        assert_eq!(truncate_referer(""), None);
    }
}
