//! The client behind a request. Normally the socket peer. When the peer is a
//! trusted proxy, the forwarding headers are read: every line of
//! `X-Forwarded-For` and every line of `Forwarded`, in order, as one list per
//! field (RFC 9110, section 5.3: the lines of a field are one comma-separated
//! list), walked from the right past trusted proxies; the first other hop is
//! the client. A proxy that appends its own line (HAProxy's `option
//! forwardfor` does) therefore decides, whatever the client wrote before it.
//!
//! A hop that names no address (`unknown`, an obfuscated `_name`, anything
//! unparseable, a `Forwarded` element without `for=`) where the client should
//! be makes the client hidden: no address to look up or hash, never the
//! proxy's own. Headers from untrusted peers are ignored.
//!
//! Both headers present: each is resolved alone and they must name the same
//! client, or the client is hidden. A client can send either header itself
//! and the proxy appends to only the one it writes, so letting either header
//! win would let the client pick its address through the other one.

use std::net::IpAddr;

use ipnet::IpNet;

use super::forwarding::{Hop, forwarded_chain, xff_chain};

/// Who sent a request, as far as the socket and the trusted proxies tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Client {
    /// The client's address.
    Addr(IpAddr),
    /// Behind the trusted proxy `proxy` (the socket peer), the client is not
    /// named: an `unknown`, obfuscated or unreadable hop, or forwarding
    /// headers that disagree. Limits count such clients per proxy.
    Hidden { proxy: IpAddr },
    /// No socket peer (not a TCP connection).
    NoPeer,
}

impl Client {
    /// The address to look up and hash: only a named client has one.
    pub fn address(self) -> Option<IpAddr> {
        match self {
            Client::Addr(ip) => Some(ip),
            Client::Hidden { .. } | Client::NoPeer => None,
        }
    }
}

/// The client of a request from `peer` whose `X-Forwarded-For` and
/// `Forwarded` field lines are given in the order received.
pub fn client_ip<'a>(
    peer: Option<IpAddr>,
    forwarded_for: impl IntoIterator<Item = &'a [u8]>,
    forwarded: impl IntoIterator<Item = &'a [u8]>,
    trusted: &[IpNet],
) -> Client {
    let Some(peer) = peer.map(canonical) else {
        return Client::NoPeer;
    };
    if !is_trusted(&peer, trusted) {
        return Client::Addr(peer);
    }
    let by_xff = resolve(&xff_chain(forwarded_for), peer, trusted);
    let by_forwarded = resolve(&forwarded_chain(forwarded), peer, trusted);
    match (by_xff, by_forwarded) {
        // The proxy's own request, or one it forwarded without saying for whom.
        (None, None) => Client::Addr(peer),
        (Some(client), None) | (None, Some(client)) => client,
        (Some(a), Some(b)) if a == b => a,
        (Some(_), Some(_)) => Client::Hidden { proxy: peer },
    }
}

fn is_trusted(ip: &IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(ip))
}

/// Walks `chain` from the nearest hop outwards: trusted proxies are passed,
/// the first other hop is the client. `None` for an empty chain.
fn resolve(chain: &[Hop], peer: IpAddr, trusted: &[IpNet]) -> Option<Client> {
    for hop in chain.iter().rev() {
        match hop {
            Hop::Addr(ip) if is_trusted(ip, trusted) => continue,
            Hop::Addr(ip) => return Some(Client::Addr(*ip)),
            Hop::Unnamed => return Some(Client::Hidden { proxy: peer }),
        }
    }
    // Every hop a trusted proxy: the farthest one is as far as we can see.
    match chain.first() {
        Some(Hop::Addr(ip)) => Some(Client::Addr(*ip)),
        _ => None,
    }
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) as plain IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }
    fn addr(s: &str) -> Client {
        Client::Addr(s.parse().unwrap())
    }
    const LOCAL: &str = "127.0.0.1";
    fn hidden() -> Client {
        Client::Hidden {
            proxy: LOCAL.parse().unwrap(),
        }
    }

    /// The client of a request from 127.0.0.1 (trusted with 10/8) with these lines.
    fn via_proxy(xff: &[&str], fwd: &[&str]) -> Client {
        client_ip(
            LOCAL.parse().ok(),
            xff.iter().map(|l| l.as_bytes()),
            fwd.iter().map(|l| l.as_bytes()),
            &nets(&["10.0.0.0/8", "127.0.0.1/32"]),
        )
    }

    #[test]
    fn untrusted_peer_headers_are_ignored() {
        let from = |trusted: &[IpNet]| {
            client_ip(
                "203.0.113.9".parse().ok(),
                [&b"1.2.3.4"[..]],
                [&b"for=1.2.3.4"[..]],
                trusted,
            )
        };
        assert_eq!(from(&nets(&["10.0.0.0/8"])), addr("203.0.113.9"));
        assert_eq!(from(&[]), addr("203.0.113.9"));
        assert_eq!(
            client_ip(None, [], [], &nets(&["0.0.0.0/0"])),
            Client::NoPeer
        );
    }

    #[test]
    fn trusted_chain_resolves_to_rightmost_untrusted() {
        let chain = via_proxy(&["6.6.6.6, 198.51.100.7, 10.1.1.1"], &[]);
        assert_eq!(chain, addr("198.51.100.7"));
        assert_eq!(via_proxy(&["198.51.100.7"], &[]), addr("198.51.100.7"));
        assert_eq!(
            via_proxy(&["10.9.9.9, 10.1.1.1"], &[]),
            addr("10.9.9.9"),
            "all trusted: the farthest"
        );
        assert_eq!(via_proxy(&["198.51.100.7:4711"], &[]), addr("198.51.100.7"));
        assert_eq!(via_proxy(&["[2001:db8::7]:80"], &[]), addr("2001:db8::7"));
        assert_eq!(via_proxy(&[], &[]), addr(LOCAL), "the proxy's own request");
        assert_eq!(via_proxy(&["", " , "], &[]), addr(LOCAL), "empty lists");
        let mapped = client_ip(
            "::ffff:127.0.0.1".parse().ok(),
            [&b"198.51.100.1"[..]],
            [],
            &nets(&["127.0.0.0/8"]),
        );
        assert_eq!(mapped, addr("198.51.100.1"));
    }

    #[test]
    fn every_line_counts_and_the_last_decides() {
        assert_eq!(
            via_proxy(&["8.8.8.8", "198.51.100.7"], &[]),
            addr("198.51.100.7")
        );
        assert_eq!(
            via_proxy(&["8.8.8.8, 9.9.9.9", "198.51.100.7, 10.1.1.1"], &[]),
            addr("198.51.100.7")
        );
        assert_eq!(
            via_proxy(&[], &["for=8.8.8.8", "for=198.51.100.7;proto=https"]),
            addr("198.51.100.7")
        );
        // A client's garbage before the proxy's line changes nothing.
        assert_eq!(
            via_proxy(&["not-an-ip, ###", "198.51.100.7"], &[]),
            addr("198.51.100.7")
        );
        assert_eq!(
            via_proxy(&[], &["for=\"unterminated", "for=198.51.100.7"]),
            addr("198.51.100.7")
        );
        let bytes: [&[u8]; 2] = [b"\xff\xfe", b"198.51.100.7"];
        let c = client_ip(LOCAL.parse().ok(), bytes, [], &nets(&["127.0.0.1/32"]));
        assert_eq!(c, addr("198.51.100.7"));
    }

    #[test]
    fn an_unnamed_hop_where_the_client_should_be_hides_it() {
        for xff in [
            &["unknown"][..],
            &["198.51.100.7", "unknown"],
            &["198.51.100.7", "_hidden"],
            &["198.51.100.7, not-an-ip"],
            &["198.51.100.7", "unknown, 10.1.1.1"],
        ] {
            assert_eq!(via_proxy(xff, &[]), hidden(), "{xff:?}");
        }
        for fwd in [
            &["for=unknown"][..],
            &["for=198.51.100.7", "for=_hidden"],
            &["for=\"_x.y-z\""],
            &["for=198.51.100.7", "proto=https"],
            &["for=198.51.100.7;for=198.51.100.8"],
            &["for=198.51.100.7;garbage"],
            &["for=198.51.100.7", "for=\"198.51.100.8"],
        ] {
            assert_eq!(via_proxy(&[], fwd), hidden(), "{fwd:?}");
        }
        // Farther unnamed hops do not matter once a client is found.
        assert_eq!(
            via_proxy(&["unknown", "198.51.100.7"], &[]),
            addr("198.51.100.7")
        );
    }

    #[test]
    fn both_headers_must_agree() {
        assert_eq!(
            via_proxy(&["198.51.100.7"], &["for=198.51.100.7"]),
            addr("198.51.100.7")
        );
        // The client forges one header; the proxy writes the other.
        assert_eq!(via_proxy(&["198.51.100.7"], &["for=8.8.8.8"]), hidden());
        assert_eq!(via_proxy(&["8.8.8.8"], &["for=198.51.100.7"]), hidden());
        // An empty header is no header.
        assert_eq!(
            via_proxy(&[""], &["for=198.51.100.7"]),
            addr("198.51.100.7")
        );
    }
}
