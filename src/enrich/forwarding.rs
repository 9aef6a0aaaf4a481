//! Parsing of forwarding header lines into chains of hops, nearest last:
//! `X-Forwarded-For` (comma-separated addresses) and `Forwarded` (RFC 7239
//! elements with quoted strings). Lenient about what real proxies write
//! (ports, brackets, IPv4-mapped IPv6), and never fails: what cannot be read
//! is a hop that names nobody. `client_ip` decides what a chain means.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv6Addr};

use smallvec::SmallVec;

use super::client_ip::canonical;

/// A chain of hops; one to four (most requests) are kept inline, without an
/// allocation on the redirect path.
pub(crate) type Chain = SmallVec<[Hop; 4]>;

/// One hop of a forwarding chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hop {
    Addr(IpAddr),
    /// `unknown`, obfuscated, or unreadable.
    Unnamed,
}

/// Every entry of every `X-Forwarded-For` line, in order. Empty entries are
/// no hops (RFC 9110 lists may hold empty elements).
pub(crate) fn xff_chain<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Chain {
    let mut chain = Chain::new();
    for line in lines {
        let line = String::from_utf8_lossy(line);
        chain.extend(
            line.split(',')
                .map(str::trim)
                .filter(|entry| !entry.is_empty())
                .map(|entry| parse_node(entry).map_or(Hop::Unnamed, Hop::Addr)),
        );
    }
    chain
}

/// The `for=` node of every element of every `Forwarded` line (RFC 7239), in
/// order. Each line is split on its own, so an unbalanced quote cannot swallow
/// a later line.
pub(crate) fn forwarded_chain<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Chain {
    let mut chain = Chain::new();
    for line in lines {
        let line = String::from_utf8_lossy(line);
        chain.extend(
            split_unquoted(&line, b',')
                .into_iter()
                .filter(|element| !element.trim().is_empty())
                .map(forwarded_element),
        );
    }
    chain
}

/// One element: exactly one well-formed `for=` pair names its hop; anything
/// else (no `for`, two, a pair without `=`, bad quoting) leaves it unnamed.
fn forwarded_element(element: &str) -> Hop {
    let mut node = None;
    for pair in split_unquoted(element, b';') {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let Some((key, value)) = pair.split_once('=') else {
            return Hop::Unnamed;
        };
        let Some(value) = unquote(value) else {
            return Hop::Unnamed;
        };
        if key.eq_ignore_ascii_case("for") {
            if node.is_some() {
                return Hop::Unnamed;
            }
            node = Some(value);
        }
    }
    node.and_then(|n| parse_node(&n))
        .map_or(Hop::Unnamed, Hop::Addr)
}

/// Splits `s` at the ASCII byte `sep` wherever it is outside a quoted string.
fn split_unquoted(s: &str, sep: u8) -> Vec<&str> {
    let mut pieces = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, b) in s.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            // `sep` is ASCII, so `i` is a character boundary.
            _ if b == sep && !quoted => {
                pieces.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    pieces.push(&s[start..]);
    pieces
}

/// A token as it is, or a quoted string without its quotes and escapes;
/// `None` when the quoting is broken.
fn unquote(value: &str) -> Option<Cow<'_, str>> {
    let Some(inner) = value.strip_prefix('"') else {
        return (!value.contains('"')).then_some(Cow::Borrowed(value));
    };
    let inner = inner.strip_suffix('"')?;
    if !inner.contains('\\') {
        return (!inner.contains('"')).then_some(Cow::Borrowed(inner));
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(Cow::Owned(out))
}

/// An address with an optional port: `192.0.2.1`, `192.0.2.1:4711`,
/// `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:4711`, and RFC 7239's
/// obfuscated ports (`:_x`). `unknown`, `_name` and the rest give `None`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    let (ip, port) = match node.strip_prefix('[') {
        Some(rest) => {
            let (host, after) = rest.split_once(']')?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':')?),
            };
            (IpAddr::V6(host.parse::<Ipv6Addr>().ok()?), port)
        }
        None => {
            let (host, port) = node.split_once(':')?;
            (IpAddr::V4(host.parse().ok()?), Some(port))
        }
    };
    port.is_none_or(|p| p.parse::<u16>().is_ok() || is_obfuscated(p))
        .then_some(canonical(ip))
}

/// RFC 7239's `obfnode` / `obfport`: `_` and letters, digits, `.`, `_`, `-`.
fn is_obfuscated(s: &str) -> bool {
    s.strip_prefix('_').is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-_".contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(lines: &[&str]) -> Vec<Hop> {
        xff_chain(lines.iter().map(|l| l.as_bytes())).into_vec()
    }
    fn fwd(lines: &[&str]) -> Vec<Hop> {
        forwarded_chain(lines.iter().map(|l| l.as_bytes())).into_vec()
    }
    fn a(s: &str) -> Hop {
        Hop::Addr(s.parse().unwrap())
    }

    #[test]
    fn x_forwarded_for_entries() {
        assert_eq!(
            xff(&["192.0.2.1, 192.0.2.2:4711", "[2001:db8::1]:80 ,2001:db8::2"]),
            [
                a("192.0.2.1"),
                a("192.0.2.2"),
                a("2001:db8::1"),
                a("2001:db8::2")
            ]
        );
        assert_eq!(xff(&["", " , ,"]), [], "empty elements are no hops");
        assert_eq!(
            xff(&["unknown, _x, 1.2.3.4:99999, [::1, ::ffff:192.0.2.1"]),
            [
                Hop::Unnamed,
                Hop::Unnamed,
                Hop::Unnamed,
                Hop::Unnamed,
                a("192.0.2.1")
            ]
        );
        let bytes: [&[u8]; 1] = [b"\xff, 192.0.2.1"];
        assert_eq!(xff_chain(bytes).as_slice(), [Hop::Unnamed, a("192.0.2.1")]);
    }

    #[test]
    fn forwarded_elements() {
        assert_eq!(
            fwd(&["for=192.0.2.60;proto=http;by=203.0.113.43, for=\"[2001:db8:cafe::17]:4711\""]),
            [a("192.0.2.60"), a("2001:db8:cafe::17")]
        );
        assert_eq!(fwd(&["FOR=\"192.0.2.43:47011\""]), [a("192.0.2.43")]);
        assert_eq!(fwd(&["for=\"192.0.2.43:_port\""]), [a("192.0.2.43")]);
        assert_eq!(
            fwd(&["for=192.0.2.43;x=\"a,b;c\""]),
            [a("192.0.2.43")],
            "separators inside quotes"
        );
        assert_eq!(
            fwd(&["for=\"\\[2001:db8::1\\]\""]),
            [a("2001:db8::1")],
            "escapes"
        );
        assert_eq!(fwd(&[" , "]), [], "no element at all");
        for unnamed in [
            "for=unknown",
            "for=_hidden",
            "for=\"_x.y-z\"",
            "proto=https",
            ";",
            "for=192.0.2.1;for=192.0.2.2",
            "for=192.0.2.1;garbage",
            "for=\"192.0.2.1",
            "for=192.0.2.1\"",
            "for",
        ] {
            assert_eq!(fwd(&[unnamed]), [Hop::Unnamed], "{unnamed}");
        }
        // Each line is split alone: a broken quote stays in its line.
        assert_eq!(
            fwd(&["for=\"x", "for=192.0.2.1"]),
            [Hop::Unnamed, a("192.0.2.1")]
        );
    }
}
