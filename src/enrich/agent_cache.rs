//! The cache of parsed user agents on the redirect path.
//!
//! Real traffic repeats a modest set of browser user agents, and parsing one
//! costs microseconds; but bots, scanners and one-off clients send a stream of
//! user agents seen once. The cache is quick_cache's S3-FIFO: a new entry goes
//! to a small probationary queue and is promoted only if it is asked for again
//! while there, so one-off user agents pass through without evicting the
//! browsers that scan every second (the former cache started over when full,
//! and a flood of one-offs emptied it of everything).

use quick_cache::sync::Cache;
use woothee::parser::Parser;

use super::useragent::{Agent, parse};

/// A browser's user agent that takes the parsers through all of their rules.
const WARM_UP_AGENT: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36";

/// Parsed user agents, bounded by entry count.
pub struct AgentCache {
    parser: Parser,
    entries: Cache<Box<str>, Agent>,
}

impl AgentCache {
    pub fn new(capacity: usize) -> AgentCache {
        AgentCache {
            parser: Parser::new(),
            entries: Cache::new(capacity),
        }
    }

    pub fn parse(&self, ua: Option<&str>) -> Agent {
        let Some(key) = ua else {
            return parse(&self.parser, None);
        };
        self.cached(key).unwrap_or_else(|| self.parse_and_keep(key))
    }

    /// The parsed agent of `ua` if the cache holds it (a lookup, counted in
    /// `stats`), without parsing.
    pub fn cached(&self, ua: &str) -> Option<Agent> {
        self.entries.get(ua)
    }

    /// Parses `ua`, a user agent `cached` did not know, and keeps it. Not
    /// counted as a lookup again; one parsed meanwhile is not parsed twice.
    pub fn parse_unseen(&self, ua: Box<str>) -> Agent {
        self.entries
            .peek(ua.as_ref())
            .unwrap_or_else(|| self.parse_and_keep(ua))
    }

    fn parse_and_keep(&self, ua: impl AsRef<str> + Into<Box<str>>) -> Agent {
        let agent = parse(&self.parser, Some(ua.as_ref()));
        self.entries.insert(ua.into(), agent.clone());
        agent
    }

    /// Parses a user agent without keeping it: the parsers compile their
    /// rules on first use (50 ms in a release build), which the server does
    /// before it serves rather than on its first scans.
    pub fn warm_up(&self) {
        parse(&self.parser, Some(WARM_UP_AGENT));
    }

    /// Lookups answered from the cache and lookups that parsed, since start.
    pub fn stats(&self) -> (u64, u64) {
        (self.entries.hits(), self.entries.misses())
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_answers_like_the_parser_and_stays_bounded() {
        let cache = AgentCache::new(100);
        let uas: Vec<String> = (0..1000)
            .map(|n| format!("Mozilla/5.0 Probe/{n}"))
            .collect();
        let ipad = "Mozilla/5.0 (iPad; CPU OS 17_2 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148 Safari/604.1";
        for ua in uas.iter().map(String::as_str).chain([ipad, "curl/8.5.0"]) {
            assert_eq!(
                cache.parse(Some(ua)),
                parse(&Parser::new(), Some(ua)),
                "{ua}"
            );
            assert!(cache.len() <= 110, "{}", cache.len());
        }
        assert_eq!(cache.parse(None), parse(&Parser::new(), None));
    }

    #[test]
    fn one_off_user_agents_do_not_evict_the_regular_ones() {
        let cache = AgentCache::new(1000);
        let regular: Vec<String> = (0..200)
            .map(|n| format!("Mozilla/5.0 Regular/{n}"))
            .collect();
        for ua in &regular {
            cache.parse(Some(ua));
            cache.parse(Some(ua));
        }
        for n in 0..50_000 {
            cache.parse(Some(&format!("OneOff/{n}")));
            let ua = &regular[n % regular.len()];
            cache.parse(Some(ua));
        }
        let (hits, misses) = cache.stats();
        // Every regular lookup after the first two rounds hits.
        assert!(hits >= 50_000 + 200, "{hits} hits, {misses} misses");
    }
}
