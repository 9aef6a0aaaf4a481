//! The dirty data of one file: byte ranges written through the mount that the
//! backing file does not have yet. They are what a power cut loses.

use std::collections::BTreeMap;

/// Written but not yet fsynced bytes of one file, as non-overlapping extents.
/// The file's size grows with them: a write past the end of the backing file
/// is a pending size change, lost with the data.
#[derive(Default)]
pub struct Overlay {
    /// start offset → bytes; no two extents overlap or touch.
    extents: BTreeMap<u64, Vec<u8>>,
}

impl Overlay {
    pub fn is_empty(&self) -> bool {
        self.extents.is_empty()
    }

    /// Bytes held (what a power cut would lose).
    pub fn len(&self) -> u64 {
        self.extents.values().map(|b| b.len() as u64).sum()
    }

    /// The file's size as readers see it, given the backing file's length.
    pub fn size(&self, backing_len: u64) -> u64 {
        let end = self
            .extents
            .last_key_value()
            .map_or(0, |(s, b)| s + b.len() as u64);
        backing_len.max(end)
    }

    /// Records a write. The extent reaching `offset` from below grows in place
    /// (sequential writes, sled's pattern, never copy what is already held);
    /// later extents the write overlaps or touches are folded into it.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let end = offset + data.len() as u64;
        let below = self
            .extents
            .range(..=offset)
            .next_back()
            .filter(|(s, b)| **s + b.len() as u64 >= offset)
            .map(|(s, _)| *s);
        let (start, mut buf) = match below.and_then(|s| self.extents.remove_entry(&s)) {
            Some(found) => found,
            None => (offset, Vec::new()),
        };
        let later: Vec<u64> = self.extents.range(offset..=end).map(|(s, _)| *s).collect();
        for s in later {
            let Some(old) = self.extents.remove(&s) else {
                continue;
            };
            // Any gap before `s` lies inside [offset, end): the new data fills it.
            let at = (s - start) as usize;
            if buf.len() < at + old.len() {
                buf.resize(at + old.len(), 0);
            }
            buf[at..at + old.len()].copy_from_slice(&old);
        }
        let (from, to) = ((offset - start) as usize, (end - start) as usize);
        if buf.len() < to {
            buf.resize(to, 0);
        }
        buf[from..to].copy_from_slice(data);
        self.extents.insert(start, buf);
    }

    /// Lays the dirty bytes of [offset, offset + buf.len()) over `buf`, which
    /// holds what the backing file has there (zeros past its end).
    pub fn read_into(&self, offset: u64, buf: &mut [u8]) {
        let end = offset + buf.len() as u64;
        let first = self
            .extents
            .range(..=offset)
            .next_back()
            .map_or(offset, |(s, _)| *s);
        for (&s, bytes) in self.extents.range(first..end) {
            let (from, to) = (s.max(offset), (s + bytes.len() as u64).min(end));
            if from < to {
                buf[(from - offset) as usize..(to - offset) as usize]
                    .copy_from_slice(&bytes[(from - s) as usize..(to - s) as usize]);
            }
        }
    }

    /// Forgets dirty bytes at or past `len` (the file was truncated).
    pub fn truncate(&mut self, len: u64) {
        self.extents.split_off(&len);
        if let Some((s, bytes)) = self.extents.last_key_value()
            && s + bytes.len() as u64 > len
        {
            let s = *s;
            if let Some(b) = self.extents.get_mut(&s) {
                b.truncate((len - s) as usize);
            }
        }
    }

    /// The extents, by offset.
    pub fn extents(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.extents.iter().map(|(s, b)| (*s, b.as_slice()))
    }

    /// Takes every extent out, leaving the overlay clean.
    pub fn take(&mut self) -> BTreeMap<u64, Vec<u8>> {
        std::mem::take(&mut self.extents)
    }
}

#[cfg(test)]
mod tests {
    use super::Overlay;

    fn read(o: &Overlay, backing: &[u8], offset: u64, len: usize) -> Vec<u8> {
        let size = o.size(backing.len() as u64);
        let len = len.min(size.saturating_sub(offset) as usize);
        let mut buf = vec![0; len];
        let start = (offset as usize).min(backing.len());
        let have = (backing.len() - start).min(len);
        buf[..have].copy_from_slice(&backing[start..start + have]);
        o.read_into(offset, &mut buf);
        buf
    }

    #[test]
    fn overlapping_and_touching_writes_merge_and_the_newest_byte_wins() {
        let mut o = Overlay::default();
        o.write(10, b"aaaa");
        o.write(20, b"bbbb");
        o.write(12, b"XXXXXXXXXX"); // 12..22: overlaps both
        o.write(24, b"cc"); // touches the merged extent
        assert_eq!(o.extents.len(), 1);
        assert_eq!(o.len(), 16);
        assert_eq!(read(&o, b"", 8, 100), b"\0\0aaXXXXXXXXXXbbcc");
    }

    #[test]
    fn reads_see_backing_bytes_under_holes_and_zeros_past_its_end() {
        let mut o = Overlay::default();
        o.write(2, b"zz");
        o.write(8, b"yy");
        assert_eq!(o.size(5), 10);
        assert_eq!(read(&o, b"01234", 0, 100), b"01zz4\0\0\0yy");
        assert_eq!(read(&o, b"01234", 3, 2), b"z4");
    }

    #[test]
    fn truncate_cuts_dirty_bytes_and_the_pending_size() {
        let mut o = Overlay::default();
        o.write(0, b"abcdef");
        o.write(10, b"gh");
        o.truncate(4);
        assert_eq!(o.size(0), 4);
        assert_eq!(read(&o, b"", 0, 100), b"abcd");
        o.truncate(0);
        assert!(o.is_empty());
    }
}
