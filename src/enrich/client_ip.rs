//! The client's IP: the socket peer, unless the peer is a trusted proxy; then
//! the right-most address in `X-Forwarded-For` (or `Forwarded`) that is not a
//! trusted proxy. Headers from untrusted peers are ignored, so they cannot be
//! spoofed; malformed headers fall back to the peer.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

pub fn client_ip(
    peer: Option<IpAddr>,
    forwarded_for: Option<&str>,
    forwarded: Option<&str>,
    trusted: &[IpNet],
) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(&canonical(*ip)));
    if !is_trusted(&peer) {
        return Some(canonical(peer));
    }
    let chain: Option<Vec<IpAddr>> = match (forwarded_for, forwarded) {
        (Some(xff), _) => xff.split(',').map(|s| parse_xff_entry(s.trim())).collect(),
        (None, Some(fwd)) => parse_forwarded(fwd),
        (None, None) => None,
    };
    let Some(chain) = chain else {
        return Some(canonical(peer));
    };
    // Walk from the nearest hop outwards; the first untrusted address is the client.
    let found = chain
        .iter()
        .rev()
        .map(|ip| canonical(*ip))
        .find(|ip| !is_trusted(ip));
    // Every hop trusted: the left-most is the farthest we can see.
    Some(
        found
            .or_else(|| chain.first().copied().map(canonical))
            .unwrap_or(canonical(peer)),
    )
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) as plain IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn parse_xff_entry(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|sa| sa.ip()))
}

/// RFC 7239: the `for=` parameter of each element, in order.
fn parse_forwarded(header: &str) -> Option<Vec<IpAddr>> {
    let mut out = Vec::new();
    for element in header.split(',') {
        let value = element
            .split(';')
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))?
            .1
            .trim()
            .trim_matches('"');
        let host = if let Some(rest) = value.strip_prefix('[') {
            rest.split(']').next()?
        } else {
            value
                .split(':')
                .next()
                .filter(|_| value.matches(':').count() <= 1)
                .unwrap_or(value)
        };
        out.push(host.parse().ok()?);
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }
    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn untrusted_peer_headers_are_ignored() {
        assert_eq!(
            client_ip(
                ip("203.0.113.9"),
                Some("1.2.3.4"),
                None,
                &nets(&["10.0.0.0/8"])
            ),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(ip("203.0.113.9"), Some("1.2.3.4"), None, &[]),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn trusted_chain_resolves_to_rightmost_untrusted() {
        let trusted = nets(&["10.0.0.0/8", "127.0.0.1/32"]);
        assert_eq!(
            client_ip(
                ip("127.0.0.1"),
                Some("6.6.6.6, 198.51.100.7, 10.1.1.1"),
                None,
                &trusted
            ),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), Some("198.51.100.7"), None, &trusted),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), Some("10.9.9.9, 10.1.1.1"), None, &trusted),
            ip("10.9.9.9")
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), Some("198.51.100.7:4711"), None, &trusted),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn forwarded_header_and_malformed_fallback() {
        let trusted = nets(&["127.0.0.0/8"]);
        let fwd = "for=192.0.2.60;proto=http;by=203.0.113.43, for=\"[2001:db8:cafe::17]:4711\"";
        assert_eq!(
            client_ip(ip("127.0.0.1"), None, Some(fwd), &trusted),
            ip("2001:db8:cafe::17")
        );
        assert_eq!(
            client_ip(ip("127.0.0.1"), Some("not-an-ip"), None, &trusted),
            ip("127.0.0.1")
        );
        assert_eq!(
            client_ip(ip("127.0.0.1"), None, Some("for=unknown"), &trusted),
            ip("127.0.0.1")
        );
        assert_eq!(
            client_ip(ip("::ffff:127.0.0.1"), Some("198.51.100.1"), None, &trusted),
            ip("198.51.100.1")
        );
    }
}
