//! The slug index's read copy: every slug's entry (the bytes its bucket in
//! `slug_hash_buckets` holds for it, `links.rs`) in a file of 4 KiB pages
//! of its own, where a lookup is one `pread` of one page.
//!
//! Why: a redirect to a link not in the Resolver's cache read the slug's
//! sled leaf, and sled 0.34 reads a leaf that is not in its cache from its
//! log one fragment at a time (the last full image and up to nine deltas)
//! and decodes all of it: up to 16 slug buckets, 2 to 4 KB at 100,000
//! links and 30 to 40 KB at 1,000,000, 17 to 49 µs. A page here holds the
//! entries of the slugs whose hash falls in it and nothing else, 1 to 2 KB
//! on average whatever the number of links, and the kernel's page cache,
//! not this process's memory, keeps the file.
//!
//! **sled stays the record.** A link write commits to sled first, then
//! changes the pages of the slugs it touched, under the lock every link
//! write holds (`links.rs`), before it answers. The file is trusted at open
//! only when its header says it was closed clean (`seal`) with the
//! generation number the store holds (`META_SLUG_PAGES_GENERATION`, written
//! and flushed by the same `seal`); otherwise (a crash, a store from a
//! backup or `scanhop compact`, a first open by this version, slugs moved
//! at open) it is built afresh from sled at open. Before the first write
//! after an open or a `seal`, the header is set to dirty and fsynced, and
//! only then does sled commit. A write to the file that fails leaves it
//! unused until the next open rebuilds it: lookups go to sled.
//!
//! **Layout.** `FILE`: page 0 is the header; page `p` of the table is at
//! `(p + 1) * PAGE`. A page is the number of its entries (u16 BE), the
//! overflow page that continues it (u32 BE, 0 for none), then each entry as
//! the slug's length (u8), the entry's length (u16 BE), the slug and the
//! entry, in no order; the rest is zeros. Overflow pages, for the entries a
//! page cannot hold, are pages of the same form in `OVERFLOW_FILE`, page
//! `n` at `n * PAGE` (from 1). Pages are addressed by linear hashing: with
//! `low = FIRST_PAGES << level`, a slug's page is its hash modulo `low`, or
//! modulo `2 * low` when that is below `split`; when the entries average
//! more than `FILL` bytes a page, page `split` is divided between itself
//! and page `split + low`, so the table grows a page at a time and no write
//! moves more than one page's entries. The hash is keyed (`hash`: a key
//! drawn when the file is built, in its header), so no one can choose
//! slugs that share a page. Overflow pages a write no longer needs are used
//! again by later writes; those still free when the file is sealed are
//! counted, and too many of them make the next open rebuild it.
//!
//! **Readers and the writer.** Readers take no lock: a sequence number is
//! odd while a write is under way, and a read that saw it odd, or changed
//! by the end of its `pread`s, is tried again (a sequence lock); after
//! `READ_TRIES` the lookup goes to sled.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use siphasher::sip::SipHasher13;

use super::bucket::Entries;
use super::{StoreError, StoreResult};

/// The files' names in the store's directory.
pub(super) const FILE: &str = "slug_pages";
pub(super) const OVERFLOW_FILE: &str = "slug_pages_overflow";

const PAGE: usize = 4096;
/// A page's own fields: its number of entries and its overflow page.
const PAGE_HEAD: usize = 6;
/// The file's kind and version: 2 since pages are placed by SipHash (a
/// file of 1, placed by SHA-256, is built again).
const MAGIC: [u8; 8] = *b"scanslg2";
/// Pages of a new table (a power of two).
const FIRST_PAGES: u64 = 16;
/// Bytes of entries a page holds on average before the table grows: 1.5
/// KiB, so the file is about 2.7 times its entries. A page not yet divided
/// in the current round holds twice what a divided one does, up to 3 KiB
/// on average just before the round ends, and a page's share of the slugs
/// varies as a Poisson count does: some of those need an overflow page (a
/// second `pread`). A quarter of a page made the file 3.6 times its
/// entries (698 MB for 1,000,000 links of the bench's size).
const FILL: u64 = 1536;
/// Reads tried while writes keep changing the file, before asking sled.
const READ_TRIES: usize = 16;
/// Overflow pages a lookup follows at most (more means a damaged file).
const MAX_CHAIN: usize = 64;

/// Header states.
const DIRTY: u8 = 0;
const CLEAN: u8 = 1;

/// What the pages say of a slug.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Found<T> {
    /// What was read from its entry.
    Entry(T),
    /// No link holds it.
    Absent,
    /// The pages cannot say (not in use, or writes kept changing them):
    /// ask sled.
    Ask,
}

/// The table's size: `FIRST_PAGES << level` pages, and `split` more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    level: u32,
    split: u64,
}

impl Shape {
    const FIRST: Shape = Shape { level: 0, split: 0 };

    fn pack(self) -> u64 {
        (u64::from(self.level) << 56) | self.split
    }

    fn unpack(v: u64) -> Shape {
        Shape {
            level: (v >> 56) as u32,
            split: v & ((1 << 56) - 1),
        }
    }

    fn low(self) -> u64 {
        FIRST_PAGES << self.level
    }

    fn pages(self) -> u64 {
        self.low() + self.split
    }

    fn page_of(self, hash: u64) -> u64 {
        let page = hash & (self.low() - 1);
        if page < self.split {
            hash & (2 * self.low() - 1)
        } else {
            page
        }
    }

    /// The shape after page `split` is divided.
    fn grown(self) -> Shape {
        match self.split + 1 {
            split if split == self.low() => Shape {
                level: self.level + 1,
                split: 0,
            },
            split => Shape { split, ..self },
        }
    }
}

/// A page of the table or of the overflow file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    Table(u64),
    Overflow(u32),
}

/// A page's entries, (slug, entry).
type PageEntries = Vec<(Vec<u8>, Vec<u8>)>;

fn entry_bytes(slug: &[u8], entry: &[u8]) -> u64 {
    (3 + slug.len() + entry.len()) as u64
}

fn corrupt() -> StoreError {
    StoreError::Codec("a page of the slug file is cut short".into())
}

/// One entry read from a page: (slug, entry).
type EntryRead<'a> = StoreResult<(&'a [u8], &'a [u8])>;

/// A page's overflow page (0: none) and its entries, in order, as (slug,
/// entry).
fn page_entries(page: &[u8]) -> StoreResult<(u32, impl Iterator<Item = EntryRead<'_>>)> {
    let (head, mut rest) = page.split_at_checked(PAGE_HEAD).ok_or_else(corrupt)?;
    let mut left = u16::from_be_bytes([head[0], head[1]]);
    let next = u32::from_be_bytes([head[2], head[3], head[4], head[5]]);
    let entries = std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        left -= 1;
        let step = (|| {
            let (head, after) = rest.split_at_checked(3).ok_or_else(corrupt)?;
            let slug_len = usize::from(head[0]);
            let entry_len = usize::from(u16::from_be_bytes([head[1], head[2]]));
            let (slug, after) = after.split_at_checked(slug_len).ok_or_else(corrupt)?;
            let (entry, after) = after.split_at_checked(entry_len).ok_or_else(corrupt)?;
            rest = after;
            Ok((slug, entry))
        })();
        if step.is_err() {
            left = 0;
        }
        Some(step)
    });
    Ok((next, entries))
}

/// The pages holding `entries`, each but the last full as far as the next
/// entry allows; their overflow fields are left 0. Every entry fits in a
/// page (a slug of at most 255 bytes and an entry of at most 64 KiB are
/// refused, and entries are far smaller).
fn encode(entries: &[(Vec<u8>, Vec<u8>)]) -> StoreResult<Vec<Box<[u8; PAGE]>>> {
    let mut pages = Vec::new();
    let mut page = Box::new([0u8; PAGE]);
    let mut at = PAGE_HEAD;
    let mut count: u16 = 0;
    for (slug, entry) in entries {
        let too_long = || StoreError::Codec("a slug's entry is too long for the slug file".into());
        let slug_len = u8::try_from(slug.len()).map_err(|_| too_long())?;
        let entry_len = u16::try_from(entry.len()).map_err(|_| too_long())?;
        let size = 3 + slug.len() + entry.len();
        if PAGE_HEAD + size > PAGE {
            return Err(too_long());
        }
        if at + size > PAGE {
            pages.push(std::mem::replace(&mut page, Box::new([0u8; PAGE])));
            at = PAGE_HEAD;
            count = 0;
        }
        page[at] = slug_len;
        page[at + 1..at + 3].copy_from_slice(&entry_len.to_be_bytes());
        page[at + 3..at + 3 + slug.len()].copy_from_slice(slug);
        page[at + 3 + slug.len()..at + size].copy_from_slice(entry);
        at += size;
        count += 1;
        page[..2].copy_from_slice(&count.to_be_bytes());
    }
    pages.push(page);
    Ok(pages)
}

/// The table's counts, kept by the writer and in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Table {
    shape: Shape,
    /// Bytes of the entries.
    bytes: u64,
    entries: u64,
    /// Overflow pages in `OVERFLOW_FILE` (the next one is this plus 1).
    overflow_pages: u32,
    /// Of them, those no page pointed to when the file was last sealed
    /// (the writer keeps the free ones in memory and uses them again).
    abandoned: u32,
}

impl Table {
    const EMPTY: Table = Table {
        shape: Shape::FIRST,
        bytes: 0,
        entries: 0,
        overflow_pages: 0,
        abandoned: 0,
    };
}

struct Header {
    state: u8,
    generation: u64,
    key: [u64; 2],
    table: Table,
}

impl Header {
    fn encode(&self) -> [u8; PAGE] {
        let mut page = [0u8; PAGE];
        page[..8].copy_from_slice(&MAGIC);
        page[8] = self.state;
        let words = [
            self.generation,
            self.table.shape.pack(),
            self.table.bytes,
            self.table.entries,
            u64::from(self.table.overflow_pages),
            u64::from(self.table.abandoned),
            self.key[0],
            self.key[1],
        ];
        for (i, w) in words.iter().enumerate() {
            page[16 + 8 * i..24 + 8 * i].copy_from_slice(&w.to_be_bytes());
        }
        page
    }

    fn decode(page: &[u8; PAGE]) -> Option<Header> {
        if page[..8] != MAGIC {
            return None;
        }
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&page[16 + 8 * i..24 + 8 * i]);
            u64::from_be_bytes(w)
        };
        Some(Header {
            state: page[8],
            generation: word(0),
            key: [word(6), word(7)],
            table: Table {
                shape: Shape::unpack(word(1)),
                bytes: word(2),
                entries: word(3),
                overflow_pages: u32::try_from(word(4)).ok()?,
                abandoned: u32::try_from(word(5)).ok()?,
            },
        })
    }
}

struct Writer {
    table: Table,
    /// Overflow pages no page points to, to use again.
    free: Vec<u32>,
    /// Whether the file is being built (`build`): writes wait for it.
    building: bool,
    /// Whether the header on disk says clean (a write must first say dirty).
    clean_on_disk: bool,
}

/// The slug file, shared by readers (any thread) and the one link writer.
pub(super) struct SlugPages {
    file: File,
    overflow: File,
    /// Odd while a write is under way.
    sequence: AtomicU64,
    /// The table's `Shape`, packed.
    shape: AtomicU64,
    /// The key of `hash`, drawn at random when the file is built and kept
    /// in its header (changed only while the file is not usable).
    key: [AtomicU64; 2],
    /// Whether lookups may use the file (false until `load` built or
    /// checked it, and after a write to it failed).
    usable: AtomicBool,
    writer: Mutex<Writer>,
    /// Signalled when a build ends.
    built: Condvar,
    /// Set when the store closes: a build under way stops, and leaves the
    /// file to the next open.
    stop: AtomicBool,
}

/// What `load` did.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Loaded {
    /// The file was a clean copy of the store.
    Kept,
    /// It was built afresh, with this many slugs.
    Built(u64),
}

impl SlugPages {
    /// Opens (or creates) the files in `dir`; not used until `load`.
    pub(super) fn open(dir: &Path) -> StoreResult<SlugPages> {
        let open = |name: &str| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(dir.join(name))
        };
        Ok(SlugPages {
            file: open(FILE)?,
            overflow: open(OVERFLOW_FILE)?,
            sequence: AtomicU64::new(0),
            shape: AtomicU64::new(Shape::FIRST.pack()),
            key: [AtomicU64::new(0), AtomicU64::new(0)],
            usable: AtomicBool::new(false),
            writer: Mutex::new(Writer {
                table: Table::EMPTY,
                free: Vec::new(),
                building: false,
                clean_on_disk: false,
            }),
            built: Condvar::new(),
            stop: AtomicBool::new(false),
        })
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The hash that places `slug` in the table: SipHash-1-3 keyed by the
    /// file's key, so slugs cannot be chosen to share a page (an API client
    /// picks slugs). SHA-256 of the key and the slug did as well, but the
    /// file for 1,000,000 slugs took 9.4 s to build, against 5.8 to 7.0 s.
    fn hash(&self, slug: &[u8]) -> u64 {
        let [k0, k1] = self.key();
        let mut h = SipHasher13::new_with_keys(k0, k1);
        std::hash::Hasher::write(&mut h, slug);
        std::hash::Hasher::finish(&h)
    }

    fn key(&self) -> [u64; 2] {
        [0, 1].map(|i| self.key[i].load(Ordering::Acquire))
    }

    fn set_key(&self, key: [u64; 2]) {
        for (atomic, k) in self.key.iter().zip(key) {
            atomic.store(k, Ordering::Release);
        }
    }

    /// The writer, once no build is under way.
    fn writer_after_build(&self) -> MutexGuard<'_, Writer> {
        let mut w = self.writer();
        while w.building {
            w = self.built.wait(w).unwrap_or_else(PoisonError::into_inner);
        }
        w
    }

    /// Takes the file as it is when it is a clean copy of generation
    /// `generation` (the store's) and `rebuild` is false (answers true);
    /// otherwise leaves it unused, to be built by `build`, which link
    /// writes wait for (answers false).
    pub(super) fn check(&self, generation: Option<u64>, rebuild: bool) -> StoreResult<bool> {
        let mut w = self.writer_after_build();
        if !rebuild && let Some(header) = self.clean_header(generation)? {
            w.table = header.table;
            w.clean_on_disk = true;
            self.set_key(header.key);
            self.shape
                .store(header.table.shape.pack(), Ordering::Release);
            self.usable.store(true, Ordering::Release);
            return Ok(true);
        }
        self.usable.store(false, Ordering::Release);
        w.building = true;
        Ok(false)
    }

    /// Builds the file afresh from `slugs` (the tree of slug buckets, each
    /// entry slug → entry) after `check` answered false, and answers the
    /// number of slugs (`None`: stopped by `stop` first). Lookups meanwhile
    /// go to sled, and link writes wait (each waits before sled commits
    /// it, so none is missed).
    pub(super) fn build(&self, slugs: &sled::Tree) -> StoreResult<Option<u64>> {
        let mut w = self.writer();
        let built = self.build_locked(&mut w, slugs);
        w.building = false;
        self.built.notify_all();
        built
    }

    fn build_locked(&self, w: &mut Writer, slugs: &sled::Tree) -> StoreResult<Option<u64>> {
        self.file.set_len(0)?;
        self.overflow.set_len(0)?;
        w.table = Table::EMPTY;
        w.free.clear();
        w.clean_on_disk = false;
        let key = crate::random::bytes::<16>();
        self.set_key([0, 8].map(|at| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&key[at..at + 8]);
            u64::from_be_bytes(word)
        }));
        self.write_header(&Header {
            state: DIRTY,
            generation: 0,
            key: self.key(),
            table: Table::EMPTY,
        })?;
        self.file.set_len(offset(At::Table(Shape::FIRST.pages())))?;
        self.shape.store(Shape::FIRST.pack(), Ordering::Release);
        for bucket in slugs.iter().values() {
            if self.stop.load(Ordering::Acquire) {
                return Ok(None);
            }
            let bucket = bucket?;
            for entry in Entries::new(&bucket)? {
                let (slug, entry) = entry?;
                self.set(w, slug, Some(entry))?;
            }
        }
        self.usable.store(true, Ordering::Release);
        Ok(Some(w.table.entries))
    }

    /// Stops a build under way (the store is closing).
    pub(super) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// `check`, then `build` at once when needed.
    #[cfg(test)]
    pub(super) fn load(
        &self,
        generation: Option<u64>,
        slugs: &sled::Tree,
        rebuild: bool,
    ) -> StoreResult<Loaded> {
        match self.check(generation, rebuild)? {
            true => Ok(Loaded::Kept),
            false => Ok(Loaded::Built(self.build(slugs)?.unwrap_or(0))),
        }
    }

    /// The header, when it says clean, of generation `generation`, with
    /// few abandoned overflow pages, and the files hold its pages.
    fn clean_header(&self, generation: Option<u64>) -> StoreResult<Option<Header>> {
        let Some(generation) = generation else {
            return Ok(None);
        };
        let len = self.file.metadata()?.len();
        if len < PAGE as u64 {
            return Ok(None);
        }
        let overflow_len = self.overflow.metadata()?.len();
        let mut page = [0u8; PAGE];
        self.file.read_exact_at(&mut page, 0)?;
        Ok(Header::decode(&page).filter(|h| {
            let t = h.table;
            h.state == CLEAN
                && h.generation == generation
                && t.shape.level < 40
                && len >= offset(At::Table(t.shape.pages()))
                && overflow_len >= offset(At::Overflow(t.overflow_pages))
                && u64::from(t.abandoned) <= 64.max(t.shape.pages() / 8)
        }))
    }

    fn write_header(&self, header: &Header) -> std::io::Result<()> {
        self.file.write_all_at(&header.encode(), 0)
    }

    /// What the file says of `slug`, with its entry read by `read` (from
    /// the page as read, without a copy).
    pub(super) fn get<T>(
        &self,
        slug: &[u8],
        read: impl FnOnce(&[u8]) -> T,
    ) -> StoreResult<Found<T>> {
        if !self.usable.load(Ordering::Acquire) {
            return Ok(Found::Ask);
        }
        let hash = self.hash(slug);
        let mut page = [0u8; PAGE];
        'tries: for _ in 0..READ_TRIES {
            let before = self.sequence.load(Ordering::Acquire);
            if before & 1 == 1 {
                std::thread::yield_now();
                continue;
            }
            let shape = Shape::unpack(self.shape.load(Ordering::Acquire));
            let mut at = At::Table(shape.page_of(hash));
            for _ in 0..MAX_CHAIN {
                self.read_into(at, &mut page)?;
                fence(Ordering::SeqCst);
                if self.sequence.load(Ordering::Acquire) != before {
                    continue 'tries;
                }
                let (next, entries) = page_entries(&page)?;
                for e in entries {
                    let (s, entry) = e?;
                    if s == slug {
                        return Ok(Found::Entry(read(entry)));
                    }
                }
                if next == 0 {
                    return Ok(Found::Absent);
                }
                at = At::Overflow(next);
            }
            // A chain this long means a damaged file: sled answers.
            return Ok(Found::Ask);
        }
        Ok(Found::Ask)
    }

    /// Called before sled commits a write of slugs: the header then says
    /// dirty on disk, so a crash between the two leaves a file the next open
    /// rebuilds.
    pub(super) fn will_write(&self) -> StoreResult<()> {
        let mut w = self.writer_after_build();
        if w.clean_on_disk {
            self.write_header(&Header {
                state: DIRTY,
                generation: 0,
                key: self.key(),
                table: w.table,
            })?;
            self.file.sync_data()?;
            w.clean_on_disk = false;
        }
        Ok(())
    }

    /// Sets each slug's entry (`None`: removes it), once sled committed
    /// them. A failure leaves the file unused (lookups go to sled) and dirty,
    /// so the next open rebuilds it.
    pub(super) fn apply(&self, changes: &[(Vec<u8>, Option<Vec<u8>>)]) {
        if changes.is_empty() || !self.usable.load(Ordering::Acquire) {
            return;
        }
        let mut w = self.writer_after_build();
        self.sequence.fetch_add(1, Ordering::SeqCst);
        let done = changes
            .iter()
            .try_for_each(|(slug, entry)| self.set(&mut w, slug, entry.as_deref()));
        self.sequence.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = done {
            self.usable.store(false, Ordering::SeqCst);
            tracing::error!(
                error = %e,
                "a write to the slug file failed: redirects read slugs from sled until the next start rebuilds it"
            );
        }
    }

    /// Sets `slug`'s entry in its page, then grows the table while it is
    /// fuller than `FILL`.
    fn set(&self, w: &mut Writer, slug: &[u8], entry: Option<&[u8]>) -> StoreResult<()> {
        let page = w.table.shape.page_of(self.hash(slug));
        let (mut entries, chain) = self.read_chain(page)?;
        let t = &mut w.table;
        if let Some(i) = entries.iter().position(|(s, _)| s == slug) {
            let (s, e) = entries.swap_remove(i);
            t.bytes = t.bytes.saturating_sub(entry_bytes(&s, &e));
            t.entries = t.entries.saturating_sub(1);
        }
        if let Some(entry) = entry {
            t.bytes += entry_bytes(slug, entry);
            t.entries += 1;
            entries.push((slug.to_vec(), entry.to_vec()));
        }
        self.write_chain(w, page, &entries, chain)?;
        while w.table.bytes > FILL * w.table.shape.pages() {
            self.split(w)?;
        }
        Ok(())
    }

    /// Divides page `split` between itself and the page the table gains.
    fn split(&self, w: &mut Writer) -> StoreResult<()> {
        let shape = w.table.shape;
        let from = shape.split;
        let grown = shape.grown();
        let (entries, chain) = self.read_chain(from)?;
        let (stay, go): (PageEntries, PageEntries) = entries
            .into_iter()
            .partition(|(slug, _)| grown.page_of(self.hash(slug)) == from);
        self.write_chain(w, from + shape.low(), &go, Vec::new())?;
        self.write_chain(w, from, &stay, chain)?;
        w.table.shape = grown;
        self.shape.store(grown.pack(), Ordering::SeqCst);
        Ok(())
    }

    /// The entries of table page `page` and of its overflow pages, and
    /// those overflow pages.
    fn read_chain(&self, page: u64) -> StoreResult<(PageEntries, Vec<u32>)> {
        let mut raw = [0u8; PAGE];
        let (mut entries, mut chain) = (Vec::new(), Vec::new());
        let mut at = At::Table(page);
        loop {
            self.read_into(at, &mut raw)?;
            let (next, each) = page_entries(&raw)?;
            for e in each {
                let (s, v) = e?;
                entries.push((s.to_vec(), v.to_vec()));
            }
            if next == 0 {
                return Ok((entries, chain));
            }
            if chain.len() == MAX_CHAIN || chain.contains(&next) {
                return Err(corrupt());
            }
            chain.push(next);
            at = At::Overflow(next);
        }
    }

    /// Writes `entries` to table page `page` and as many overflow pages as
    /// they need, taken from `chain` (the page's former ones) first, then
    /// from the free ones; those of `chain` left over are freed.
    fn write_chain(
        &self,
        w: &mut Writer,
        page: u64,
        entries: &[(Vec<u8>, Vec<u8>)],
        chain: Vec<u32>,
    ) -> StoreResult<()> {
        let mut pages = encode(entries)?;
        let mut spare = chain.into_iter();
        let mut ats = vec![At::Table(page)];
        for _ in 1..pages.len() {
            let n = match spare.next().or_else(|| w.free.pop()) {
                Some(n) => n,
                None => {
                    w.table.overflow_pages += 1;
                    w.table.overflow_pages
                }
            };
            ats.push(At::Overflow(n));
        }
        w.free.extend(spare);
        // Each page points at the next; the last ones are written first.
        for i in (0..pages.len()).rev() {
            if let Some(At::Overflow(next)) = ats.get(i + 1) {
                pages[i][2..6].copy_from_slice(&next.to_be_bytes());
            }
            self.write_at(ats[i], &pages[i])?;
        }
        Ok(())
    }

    fn read_into(&self, at: At, raw: &mut [u8; PAGE]) -> std::io::Result<()> {
        match at {
            At::Table(_) => self.file.read_exact_at(raw, offset(at)),
            At::Overflow(_) => self.overflow.read_exact_at(raw, offset(at)),
        }
    }

    fn write_at(&self, at: At, raw: &[u8; PAGE]) -> std::io::Result<()> {
        match at {
            At::Table(_) => self.file.write_all_at(raw, offset(at)),
            At::Overflow(_) => self.overflow.write_all_at(raw, offset(at)),
        }
    }

    /// Marks the file a clean copy of the store: `persist` stores the new
    /// generation in the store and makes everything durable, then the
    /// files are fsynced and the header says clean with that generation.
    /// Nothing to do when it says so already; an unusable file stays dirty.
    pub(super) fn seal(&self, persist: impl FnOnce(u64) -> StoreResult<()>) -> StoreResult<()> {
        let mut w = self.writer();
        if w.building || w.clean_on_disk || !self.usable.load(Ordering::Acquire) {
            return Ok(());
        }
        let generation = u64::from_be_bytes(crate::random::bytes());
        persist(generation)?;
        self.overflow.sync_data()?;
        self.file.sync_data()?;
        // The free pages are not kept on disk: counted as abandoned.
        let table = Table {
            abandoned: w.table.abandoned + w.free.len() as u32,
            ..w.table
        };
        self.write_header(&Header {
            state: CLEAN,
            generation,
            key: self.key(),
            table,
        })?;
        self.file.sync_data()?;
        w.table = table;
        w.free.clear();
        w.clean_on_disk = true;
        Ok(())
    }

    /// Slugs, table pages and overflow pages, once built.
    #[cfg(test)]
    pub(super) fn counts(&self) -> (u64, u64, u32) {
        let w = self.writer_after_build();
        (
            w.table.entries,
            w.table.shape.pages(),
            w.table.overflow_pages,
        )
    }
}

/// Where page `at` starts in its file.
fn offset(at: At) -> u64 {
    match at {
        At::Table(page) => (page + 1) * PAGE as u64,
        At::Overflow(n) => u64::from(n) * PAGE as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Link;
    use crate::ids::WorkspaceId;
    use crate::store::{Store, keys};

    fn link(ws: WorkspaceId, slug: &str, destination: &str) -> Link {
        Link::sample(ws, slug, destination)
    }

    /// A store at `dir` with a link for each of `slugs`, to `destination`.
    fn store_with(dir: &Path, ws: WorkspaceId, slugs: &[String], destination: &str) -> Store {
        let store = Store::open(dir, 4).unwrap();
        for s in slugs {
            store.insert_link(&link(ws, s, destination)).unwrap();
        }
        store
    }

    /// Whether the file itself holds `slug`.
    fn in_file(store: &Store, slug: &str) -> bool {
        matches!(
            store
                .inner
                .slug_pages
                .get(slug.as_bytes(), <[u8]>::to_vec)
                .unwrap(),
            Found::Entry(_)
        )
    }

    fn header_state(dir: &Path) -> u8 {
        let raw = std::fs::read(dir.join(super::super::FORMAT_DIR).join(FILE)).unwrap();
        raw[8]
    }

    fn loaded(store: &Store, rebuild: bool) -> Loaded {
        let t = &store.inner;
        let generation = t
            .meta
            .get(keys::META_SLUG_PAGES_GENERATION)
            .unwrap()
            .map(|g| u64::from_be_bytes(g.as_ref().try_into().unwrap()));
        t.slug_pages
            .load(generation, &t.slug_buckets, rebuild)
            .unwrap()
    }

    /// Every slug as the file and as sled's buckets have it.
    fn assert_file_agrees_with_sled(store: &Store, slugs: &[String]) {
        for slug in slugs {
            let from_sled = store.link_by_slug_in_sled(slug).unwrap();
            assert_eq!(store.link_by_slug(slug).unwrap(), from_sled, "{slug}");
        }
    }

    #[test]
    fn the_file_grows_with_the_slugs_and_answers_as_sled_does_across_a_clean_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let ws = WorkspaceId::generate();
        let slugs: Vec<String> = (0..3000).map(|i| format!("s{i}")).collect();
        {
            let store = store_with(dir.path(), ws, &slugs, "https://example.com/a");
            let (entries, pages, _) = store.inner.slug_pages.counts();
            assert_eq!(entries, 3000);
            // About 120 bytes an entry, 1.5 KiB a page on average.
            assert!((150..350).contains(&pages), "{pages} pages");
            // Each one found in the file, not in sled.
            for s in slugs.iter().take(50) {
                assert!(in_file(&store, s), "{s}");
            }
            assert_eq!(
                store.inner.slug_pages.get(b"nope", <[u8]>::to_vec).unwrap(),
                Found::Absent
            );
            // Renamed, edited and deleted: the file follows every write.
            let old = store.link_by_slug("s1").unwrap().unwrap();
            let mut renamed = old.clone();
            renamed.slug = crate::domain::Slug::parse("renamed").unwrap();
            store.replace_link(&old, &renamed).unwrap();
            let two = store.link_by_slug("s2").unwrap().unwrap();
            let mut edited = two.clone();
            edited.destination =
                crate::domain::Destination::parse("https://example.com/b").unwrap();
            store.replace_link(&two, &edited).unwrap();
            store
                .delete_link(&store.link_by_slug("s3").unwrap().unwrap())
                .unwrap();
            assert_eq!(store.link_by_slug("s1").unwrap(), None);
            assert_eq!(store.link_by_slug("renamed").unwrap(), Some(renamed));
            assert_eq!(store.link_by_slug("s2").unwrap(), Some(edited));
            assert_eq!(store.link_by_slug("s3").unwrap(), None);
            assert_file_agrees_with_sled(&store, &slugs);
            // Written since the open: dirty on disk until sealed.
            assert_eq!(header_state(dir.path()), DIRTY);
        }
        // Dropped: sealed, and taken as it is by the next open.
        assert_eq!(header_state(dir.path()), CLEAN);
        let store = Store::open(dir.path(), 4).unwrap();
        assert_eq!(loaded(&store, false), Loaded::Kept);
        assert_file_agrees_with_sled(&store, &slugs);
        assert_eq!(
            store
                .link_by_slug("renamed")
                .unwrap()
                .unwrap()
                .slug
                .as_str(),
            "renamed"
        );
        // The first write after it marks it dirty again, before sled commits.
        store
            .insert_link(&link(ws, "later", "https://example.com/c"))
            .unwrap();
        assert_eq!(header_state(dir.path()), DIRTY);
        assert!(store.link_by_slug("later").unwrap().is_some());
    }

    #[test]
    fn a_file_not_closed_clean_with_the_store_is_built_again() {
        let dir = tempfile::tempdir().unwrap();
        let ws = WorkspaceId::generate();
        {
            let store = Store::open(dir.path(), 4).unwrap();
            store
                .insert_link(&link(ws, "kept", "https://example.com/a"))
                .unwrap();
        }
        {
            // Written while dirty and never sealed (as after a crash), by
            // a write the file was not told of: the next open must not
            // trust the file.
            let store = Store::open(dir.path(), 4).unwrap();
            store
                .insert_link(&link(ws, "new", "https://example.com/b"))
                .unwrap();
            store.inner.slug_pages.usable.store(false, Ordering::SeqCst);
            store
                .insert_link(&link(ws, "unseen", "https://example.com/c"))
                .unwrap();
            assert_eq!(
                store.link_by_slug("unseen").unwrap().unwrap().slug.as_str(),
                "unseen"
            );
        }
        assert_eq!(header_state(dir.path()), DIRTY);
        let store = Store::open(dir.path(), 4).unwrap();
        assert_eq!(store.inner.slug_pages.counts().0, 3);
        for slug in ["kept", "new", "unseen"] {
            assert!(in_file(&store, slug), "{slug}");
        }
        drop(store);
        // Clean, but from another generation (a store restored from a
        // copy): built again as well.
        let store = Store::open(dir.path(), 4).unwrap();
        store
            .inner
            .meta
            .insert(keys::META_SLUG_PAGES_GENERATION, &7u64.to_be_bytes()[..])
            .unwrap();
        let key = store.inner.slug_pages.key();
        assert_eq!(loaded(&store, false), Loaded::Built(3));
        // Each build draws the key of its hash afresh.
        assert_ne!(store.inner.slug_pages.key(), key);
        // A file cut short or of another kind is built again too.
        std::fs::write(
            dir.path().join(super::super::FORMAT_DIR).join(FILE),
            b"junk",
        )
        .unwrap();
        assert_eq!(loaded(&store, false), Loaded::Built(3));
        assert!(store.link_by_slug("unseen").unwrap().is_some());
    }

    #[test]
    fn entries_a_page_cannot_hold_continue_in_overflow_pages() {
        let dir = tempfile::tempdir().unwrap();
        let ws = WorkspaceId::generate();
        // Links of about 480 bytes (their copy in the entry): a page holds
        // eight of them.
        let long = format!("https://example.com/{}", "x".repeat(380));
        let slugs: Vec<String> = (0..400).map(|i| format!("big-{i}")).collect();
        let store = store_with(dir.path(), ws, &slugs, &long);
        let (entries, _, overflow_pages) = store.inner.slug_pages.counts();
        assert_eq!(entries, 400);
        assert!(overflow_pages > 0, "no page overflowed");
        for s in &slugs {
            assert!(in_file(&store, s), "{s}");
        }
        assert_file_agrees_with_sled(&store, &slugs);
        for s in slugs.iter().step_by(2) {
            store
                .delete_link(&store.link_by_slug(s).unwrap().unwrap())
                .unwrap();
        }
        assert_file_agrees_with_sled(&store, &slugs);
        drop(store);
        let store = Store::open(dir.path(), 4).unwrap();
        assert_eq!(loaded(&store, false), Loaded::Kept);
        assert_eq!(store.inner.slug_pages.counts().0, 200);
        assert_file_agrees_with_sled(&store, &slugs);
    }

    #[test]
    fn while_the_file_is_built_lookups_go_to_sled_and_writes_wait_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let ws = WorkspaceId::generate();
        let slugs: Vec<String> = (0..5000).map(|i| format!("b{i}")).collect();
        {
            let store = store_with(dir.path(), ws, &slugs, "https://example.com/b");
            // Left dirty, as after a crash.
            store.inner.slug_pages.usable.store(false, Ordering::SeqCst);
        }
        // Closed while the build may be under way: closed at once (the
        // build stops and holds sled open no longer), built at the next open.
        drop(Store::open(dir.path(), 4).unwrap());
        let store = Store::open(dir.path(), 4).unwrap();
        // Whether the build is still under way or not, every answer is
        // right, and a write made now reaches the file built.
        for s in slugs.iter().step_by(50) {
            assert_eq!(store.link_by_slug(s).unwrap().unwrap().slug.as_str(), s);
        }
        let gone = store.link_by_slug("b7").unwrap().unwrap();
        store.delete_link(&gone).unwrap();
        store
            .insert_link(&link(ws, "during", "https://example.com/d"))
            .unwrap();
        assert_eq!(store.inner.slug_pages.counts().0, 5000);
        assert_eq!(
            store.inner.slug_pages.get(b"b7", <[u8]>::to_vec).unwrap(),
            Found::Absent
        );
        assert!(in_file(&store, "during"));
        assert_file_agrees_with_sled(&store, &slugs);
    }

    #[test]
    fn readers_never_miss_a_slug_while_writes_grow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let ws = WorkspaceId::generate();
        let store = Store::open(dir.path(), 4).unwrap();
        let stable: Vec<String> = (0..200).map(|i| format!("stable-{i}")).collect();
        for s in &stable {
            store
                .insert_link(&link(ws, s, "https://example.com/s"))
                .unwrap();
        }
        let done = std::sync::Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (store, done, stable) = (store.clone(), done.clone(), stable.clone());
                std::thread::spawn(move || {
                    let mut reads = 0u64;
                    while !done.load(Ordering::Acquire) {
                        for s in &stable {
                            let found = store.link_by_slug(s).unwrap();
                            assert_eq!(found.map(|l| l.slug.as_str().to_owned()), Some(s.clone()));
                            reads += 1;
                        }
                    }
                    reads
                })
            })
            .collect();
        // Enough new slugs to split many pages under the readers.
        for i in 0..3000 {
            let l = link(ws, &format!("new-{i}"), "https://example.com/n");
            store.insert_link(&l).unwrap();
            if i % 3 == 0 {
                store.delete_link(&l).unwrap();
            }
        }
        done.store(true, Ordering::Release);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
        assert_eq!(store.inner.slug_pages.counts().0, 200 + 2000);
    }

    #[test]
    fn linear_hashing_addresses_every_hash_within_the_table() {
        let mut shape = Shape::FIRST;
        for _ in 0..100 {
            for hash in [0u64, 1, 15, 16, 17, 31, u64::MAX, 0x1234_5678_9abc_def0] {
                assert!(shape.page_of(hash) < shape.pages());
            }
            let grown = shape.grown();
            // Growing moves entries of page `split` only, to `split + low`.
            for hash in 0..1024u64 {
                let (a, b) = (shape.page_of(hash), grown.page_of(hash));
                assert!(a == b || (a == shape.split && b == shape.split + shape.low()));
            }
            assert_eq!(grown.pages(), shape.pages() + 1);
            assert_eq!(Shape::unpack(grown.pack()), grown);
            shape = grown;
        }
    }

    #[test]
    fn pages_round_trip_and_a_damaged_page_is_an_error() {
        let entries = vec![
            (b"menu".to_vec(), vec![7u8; 40]),
            (b"x".to_vec(), Vec::new()),
        ];
        let pages = encode(&entries).unwrap();
        assert_eq!(pages.len(), 1);
        let read = |page: &[u8]| -> PageEntries {
            let (next, each) = page_entries(page).unwrap();
            assert_eq!(next, 0);
            each.map(|e| e.map(|(s, v)| (s.to_vec(), v.to_vec())).unwrap())
                .collect()
        };
        assert_eq!(read(&pages[0][..]), entries);
        // Ten entries of 500 bytes: eight in the first page, two after.
        let big: PageEntries = (0..10)
            .map(|i| (format!("s{i}").into_bytes(), vec![0u8; 500]))
            .collect();
        let pages = encode(&big).unwrap();
        assert_eq!(pages.len(), 2);
        let both: PageEntries = pages.iter().flat_map(|p| read(&p[..])).collect();
        assert_eq!(both, big);
        // An entry no page can hold is refused, not cut.
        assert!(encode(&[(b"s".to_vec(), vec![0u8; PAGE])]).is_err());
        // A count past the page's end is an error, not a panic.
        let mut cut = [0u8; PAGE];
        cut[..2].copy_from_slice(&3u16.to_be_bytes());
        cut[PAGE_HEAD] = 255;
        cut[PAGE_HEAD + 1] = 0xff;
        cut[PAGE_HEAD + 2] = 0xff;
        let (_, each) = page_entries(&cut).unwrap();
        assert!(each.collect::<StoreResult<Vec<_>>>().is_err());
    }
}
