//! Visitor fingerprints: a keyed hash (HMAC-SHA256 with the workspace's own
//! secret) of the user agent, `Accept-Language` and the network part of the
//! client's address (/24 for IPv4, /48 for IPv6). The address itself goes
//! into the hash and nowhere else; without the workspace's secret a
//! fingerprint cannot be tested against guesses, and two workspaces never
//! share one. With the daily scope the day's salt is hashed in too, so a
//! fingerprint (and the visitor it maps to) lasts one UTC day.

use std::net::IpAddr;

use hmac::{KeyInit, Mac};
use sha2::Sha256;

use super::privacy::Salt;

pub type Fingerprint = [u8; 16];

/// The key of one workspace's fingerprints.
pub type FingerprintKey = [u8; 32];

/// The network prefix that goes into the fingerprint: a tag and the
/// prefix's bytes, then how many of the array's bytes are used.
pub fn network(ip: Option<IpAddr>) -> ([u8; 7], usize) {
    let mut out = [0u8; 7];
    match ip.map(|ip| ip.to_canonical()) {
        Some(IpAddr::V4(v4)) => {
            out[0] = 4;
            out[1..4].copy_from_slice(&v4.octets()[..3]);
            (out, 4)
        }
        Some(IpAddr::V6(v6)) => {
            out[0] = 6;
            out[1..7].copy_from_slice(&v6.octets()[..6]);
            (out, 7)
        }
        None => (out, 1),
    }
}

/// A workspace's fingerprint key, made ready to hash: HMAC's keyed inner
/// and outer states are computed once here, not on every scan.
pub struct Keyed(hmac::Hmac<Sha256>);

impl Keyed {
    pub fn new(key: &FingerprintKey) -> Keyed {
        Keyed(
            <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key)
                .expect("HMAC takes keys of any length"),
        )
    }

    /// The fingerprint of a scan. Each part is length-prefixed so no two
    /// different inputs hash alike.
    pub fn fingerprint(
        &self,
        user_agent: Option<&str>,
        accept_language: Option<&str>,
        ip: Option<IpAddr>,
        daily_salt: Option<&Salt>,
    ) -> Fingerprint {
        let mut mac = self.0.clone();
        let (net, net_len) = network(ip);
        for part in [
            user_agent.unwrap_or_default().as_bytes(),
            accept_language.unwrap_or_default().as_bytes(),
            &net[..net_len],
            daily_salt.map_or(&[][..], |s| &s[..]),
        ] {
            mac.update(&(part.len() as u32).to_be_bytes());
            mac.update(part);
        }
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UA: &str = "Mozilla/5.0 (iPhone)";

    fn fp(key: u8, ua: &str, lang: &str, ip: &str, salt: Option<u8>) -> Fingerprint {
        let salt = salt.map(|s| [s; 32]);
        Keyed::new(&[key; 32]).fingerprint(
            Some(ua),
            Some(lang),
            Some(ip.parse().unwrap()),
            salt.as_ref(),
        )
    }

    /// One `Keyed` hashes scan after scan: each fingerprint is the HMAC of
    /// its own parts alone, as a key made afresh and the plain HMAC answer.
    #[test]
    fn a_keyed_state_used_again_hashes_each_scan_alone() {
        let keyed = Keyed::new(&[3; 32]);
        let ip = Some("81.2.69.10".parse().unwrap());
        let first = keyed.fingerprint(Some(UA), Some("de"), ip, None);
        let _other = keyed.fingerprint(Some("curl/8"), None, None, Some(&[9; 32]));
        assert_eq!(keyed.fingerprint(Some(UA), Some("de"), ip, None), first);
        assert_eq!(fp(3, UA, "de", "81.2.69.10", None), first);
        let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&[3; 32]).unwrap();
        for part in [UA.as_bytes(), b"de", &[4, 81, 2, 69], b""] {
            mac.update(&(part.len() as u32).to_be_bytes());
            mac.update(part);
        }
        assert_eq!(first[..], mac.finalize().into_bytes()[..16]);
    }

    /// The bytes hashed for the network: a stored fingerprint stays the
    /// same only while these do.
    #[test]
    fn the_network_part_is_a_tagged_prefix_of_the_address() {
        let net = |ip: Option<&str>| {
            let (buf, len) = network(ip.map(|ip| ip.parse().unwrap()));
            buf[..len].to_vec()
        };
        assert_eq!(net(Some("203.0.113.9")), [4, 203, 0, 113]);
        assert_eq!(net(Some("::ffff:203.0.113.9")), [4, 203, 0, 113]);
        assert_eq!(
            net(Some("2001:db8:1:2::1")),
            [6, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01]
        );
        assert_eq!(net(None), [0]);
    }

    #[test]
    fn same_device_same_network_same_fingerprint_anything_else_differs() {
        let base = fp(1, UA, "de", "81.2.69.10", None);
        assert_eq!(base, fp(1, UA, "de", "81.2.69.200", None), "same /24");
        assert_ne!(base, fp(1, UA, "de", "81.2.70.10", None), "another /24");
        assert_ne!(
            base,
            fp(1, "Mozilla/5.0 (Android)", "de", "81.2.69.10", None)
        );
        assert_ne!(base, fp(1, UA, "en", "81.2.69.10", None));
        assert_ne!(
            base,
            fp(2, UA, "de", "81.2.69.10", None),
            "another workspace's key"
        );
        assert_ne!(base, fp(1, UA, "de", "81.2.69.10", Some(7)), "daily salt");
        assert_ne!(
            fp(1, UA, "de", "81.2.69.10", Some(7)),
            fp(1, UA, "de", "81.2.69.10", Some(8))
        );
        // IPv6: the /48 counts, the rest does not; mapped IPv4 is IPv4.
        let v6 = fp(1, UA, "de", "2a02:c7f:1234:1::1", None);
        assert_eq!(v6, fp(1, UA, "de", "2a02:c7f:1234:ffff::9", None));
        assert_ne!(v6, fp(1, UA, "de", "2a02:c7f:1235:1::1", None));
        assert_eq!(base, fp(1, UA, "de", "::ffff:81.2.69.77", None));
        // Parts cannot slide into each other.
        assert_ne!(
            fp(1, "ab", "c", "81.2.69.1", None),
            fp(1, "a", "bc", "81.2.69.1", None)
        );
    }
}
