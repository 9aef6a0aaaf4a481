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

/// Random bytes from the operating system, fetched 4 KiB at a time: for
/// IDs made many times a second, where a system call each would cost more
/// than the rest of the work (the Recorder's event IDs, new visitors' IDs).
pub struct Block {
    block: Box<[u8; 4096]>,
    used: usize,
}

impl Default for Block {
    fn default() -> Block {
        Block {
            block: Box::new([0; 4096]),
            used: 4096,
        }
    }
}

impl Block {
    /// The next `N` random bytes (`N` at most 4096).
    pub fn take<const N: usize>(&mut self) -> [u8; N] {
        if self.used + N > self.block.len() {
            fill(&mut self.block[..]);
            self.used = 0;
        }
        let mut out = [0u8; N];
        out.copy_from_slice(&self.block[self.used..self.used + N]);
        self.used += N;
        out
    }
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
        // A block hands out fresh bytes across its refills.
        let mut block = Block::default();
        let taken: Vec<[u8; 10]> = (0..1000).map(|_| block.take()).collect();
        let distinct: std::collections::HashSet<_> = taken.iter().collect();
        assert_eq!(distinct.len(), taken.len());
    }
}
