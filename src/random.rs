//! The one source of random bytes for secrets, salts, slugs and tokens: the
//! operating system's generator.

/// Fills `buf` from the operating system's random source.
pub fn fill(buf: &mut [u8]) {
    // The OS RNG failing means the system cannot make secrets at all; there is
    // no safe way to go on.
    getrandom::fill(buf).expect("operating system random source failed");
}

/// `N` random bytes.
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    fill(&mut out);
    out
}

/// `len` characters drawn uniformly from `alphabet` (at most 256 symbols).
pub fn string_from(alphabet: &[u8], len: usize) -> String {
    // Rejecting bytes at or above the largest multiple of the alphabet size
    // keeps every symbol equally likely.
    let n = alphabet.len();
    let limit = 256 - 256 % n;
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for b in bytes::<32>() {
            if usize::from(b) < limit && out.len() < len {
                out.push(char::from(alphabet[usize::from(b) % n]));
            }
        }
    }
    out
}

/// The base62 alphabet of slugs and tokens.
pub const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_use_only_the_alphabet_and_differ() {
        let a = string_from(BASE62, 40);
        assert_eq!(a.len(), 40);
        assert!(a.bytes().all(|b| BASE62.contains(&b)));
        assert_ne!(a, string_from(BASE62, 40));
        assert_ne!(bytes::<16>(), [0; 16]);
    }
}
