//! The only code that knows sled. `Store` owns the `Db` and every `Tree` as a
//! named field, opened in one constructor; the files beside this one hold the
//! operations of one record family each.

mod blobs;
mod bodies;
mod bucket;
mod codec;
mod compact;
mod consumers;
mod events;
mod forms;
pub mod keys;
mod layout;
mod links;
mod registry;
mod retention;
mod scan;
pub mod scan_log;
mod secrets;
mod segment;
mod slug_pages;
mod tallies;
mod tokens;
mod visitor_index;
mod visitors;
mod webhooks;
mod workspaces;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::ids::EventId;

pub use compact::{CompactReport, compact, store_size};
pub use consumers::ConsumerRecord;
pub use events::{EventIndex, EventQuery};
pub use forms::{FormCompletion, FormWrite};
pub use links::{LinkQuery, LinkWrite};
pub use retention::{PurgePlan, PurgeReport, PurgeStep};
pub use scan::Page;
pub use tallies::{TallyDeltas, TallyKey, TallyScope};
pub use visitors::{NewVisitor, StoredAttributes};
pub use webhooks::{PendingMessage, TxError, WebhookTx};

/// The hash of the store's in-memory maps keyed by what the server made
/// (IDs, a batch's own values), which no client chooses: a fast
/// non-cryptographic hash will do (SipHash was a twentieth of the
/// Recorder's time in the segment dictionary).
pub(crate) type FastHash = foldhash::fast::RandomState;

/// Bumped when the on-disk layout changes incompatibly; part of the path.
const FORMAT_DIR: &str = "sled-v1";
/// The sled tree of event segments (pointers to their bodies).
const EVENTS_TREE: &str = "event_segments";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store at {0} is in use by another process (is `scanhop serve` running?)")]
    Locked(PathBuf),
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("stored record is unreadable: {0}")]
    Codec(String),
    /// A listing's cursor is not one the store handed out.
    #[error("the page cursor is malformed")]
    BadCursor,
    #[error(
        "the store at {path} was written by a later version of scanhop (layout {found}; this version reads up to {SCHEMA_VERSION}): run that version, or restore the copy made before the upgrade"
    )]
    Newer { path: PathBuf, found: u8 },
}

/// The layout this version writes, under `keys::META_SCHEMA_VERSION`: 2
/// since slug buckets are keyed by the mixed hash (`links.rs`), 3 since the
/// slug file (`slug_pages.rs`), which a version before it would leave
/// marked clean while its link writes passed it by. A store
/// with a higher number was written by a later version, which may keep
/// records where this one would not look: it is not opened. (Versions
/// before 2 wrote 1 and did not check it.)
pub const SCHEMA_VERSION: u8 = 3;

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        compact::io(e)
    }
}

impl From<sled::transaction::TransactionError<StoreError>> for StoreError {
    fn from(e: sled::transaction::TransactionError<StoreError>) -> Self {
        match e {
            sled::transaction::TransactionError::Abort(inner) => inner,
            sled::transaction::TransactionError::Storage(inner) => StoreError::Sled(inner),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Default)]
struct EventMarks {
    committed: Option<EventId>,
    durable: Option<EventId>,
}

/// The store: cheap to clone, shared by actors and handlers.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Trees>,
}

struct Trees {
    db: sled::Db,
    /// The data directory (`storage.path`).
    path: PathBuf,
    /// The newest event committed, and the newest one a completed `flush`
    /// made durable (what the scan log may forget: `scan_log.rs`).
    event_marks: Mutex<EventMarks>,
    /// sled's log file, opened a second time to fsync it: see `flush`. (sled
    /// locks it with flock, which this descriptor neither takes nor releases.)
    log: std::fs::File,
    /// sled's blob files, fsynced by `flush` (sled never does).
    blobs: blobs::Blobs,
    /// The bodies of event segments, in files of their own (`bodies.rs`).
    bodies: bodies::Bodies,
    /// key = workspace_id (16) → value = Workspace
    workspaces: sled::Tree,
    /// key = SHA-256 of the token (32) → value = Token
    tokens: sled::Tree,
    /// key = workspace_id (16) ++ token_id (16) → value = token digest (32)
    tokens_by_workspace: sled::Tree,
    /// key = workspace_id (16) ++ first link_id (16) → value = a bucket of
    /// that workspace's links, link_id → Link (`links.rs`)
    link_buckets: sled::Tree,
    /// key = 2 bytes of the slug's hash → value = a bucket of slug →
    /// workspace_id (16) ++ link_id (16) (`links.rs`)
    slug_buckets: sled::Tree,
    /// Held by every link write: a write reads the buckets it rewrites.
    link_writes: Mutex<()>,
    /// The slug buckets' read copy, in a file of pages (`slug_pages.rs`).
    slug_pages: Arc<slug_pages::SlugPages>,
    /// The thread building it, while one may be running.
    slug_build: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// key = first event_id of a segment (16) → value = pointer to the
    /// segment's body (`bodies.rs`), or (written before) the segment itself
    events: sled::Tree,
    /// key = link_id (16) ++ the first segment id of a span of up to
    /// `SPAN_SEGMENTS` segments (16) → value = each segment's id and
    /// positions (u16 BE each); written before spans: key = link_id ++
    /// segment id → value = positions (`events.rs`)
    events_by_link: sled::Tree,
    /// The open span of each link recently scanned (`events.rs`).
    open_spans: Mutex<events::OpenSpans>,
    /// The visitor entries of the segments committed lately, not yet in
    /// `events_by_visitor`, and each visitor's open span
    /// (`visitor_index.rs`).
    visitor_index: Mutex<visitor_index::VisitorIndex>,
    /// key = workspace_id (16) ++ segment id (16) → value = positions
    events_by_workspace: sled::Tree,
    /// key = visitor_id (16) ++ the first segment id of a span (16) →
    /// value = each segment's id and positions, as in `events_by_link`;
    /// written before visitor spans: key = visitor_id ++ segment id →
    /// value = positions. No entry for a visitor's home (`events.rs`)
    events_by_visitor: sled::Tree,
    /// key = counter kind (1) ++ link_id (16) → value = u64 big-endian
    counters: sled::Tree,
    /// key = the first event ID (16) of a Recorder batch → value = the
    /// registry entries of the visitors first seen in it (`registry`)
    registry_batches: sled::Tree,
    /// Where each registry entry's batch is, in memory (`registry`).
    registry: std::sync::RwLock<registry::RegistryIndex>,
    /// key = workspace_id (16) ++ first visitor_id (16) → value = a bucket
    /// of that workspace's profiles, visitor_id → VisitorProfile (by the
    /// Visitors worker; `visitors.rs`): a workspace's visitors are one key
    /// range.
    visitor_profiles: sled::Tree,
    /// Held by every write of profiles: a write reads the buckets it
    /// rewrites.
    profile_writes: Mutex<()>,
    /// key = visitor_id (16) → value = attributes (by `identify`)
    visitor_attributes: sled::Tree,
    /// key = scan (event) id (16) → value = FormCompletion
    form_completions: sled::Tree,
    /// key = scope (1) ++ owner id (16) ++ day (u32 BE) → value = Tally
    tallies: sled::Tree,
    /// key = purged kind (1) ++ link or workspace id (16) → value = u64
    /// big-endian: what retention deleted, so totals can still be checked
    purged: sled::Tree,
    /// key = consumer name bytes → value = ConsumerRecord (position and state)
    consumers: sled::Tree,
    /// key = name bytes → value = metadata (schema version, salts, secrets)
    meta: sled::Tree,
    /// key = webhook_id (16) → value = Webhook
    webhooks: sled::Tree,
    /// key = workspace_id (16) ++ webhook_id (16) → value = empty
    webhooks_by_workspace: sled::Tree,
    /// key = webhook_id (16) ++ message_id (16) → value = webhook Message
    hook_messages: sled::Tree,
    /// key = webhook_id (16) ++ delivery_id (16) → value = Delivery (one attempt)
    hook_deliveries: sled::Tree,
    /// key = message_id (16) → value = webhook_id (16): the pending messages
    webhook_outbox: sled::Tree,
}

/// sled's log segment size for a new store: 4 MiB. sled writes a page over
/// a quarter of it (1 MiB here; 128 KiB with its default of 512 KiB) to a
/// blob file of its own, which it never fsyncs (`blobs.rs`). Event segments
/// are no longer in sled's pages (`bodies.rs`), but a busy day's tally can
/// be tens of KB, and 16 of them in a leaf would pass 128 KiB. With the
/// bodies out of sled, 512 KiB measured within the redirect bench's spread
/// of 4 MiB.
const LOG_SEGMENT_SIZE: usize = 4 * 1024 * 1024;

/// The log segment size of the sled database at `dir`: the one it was made
/// with (sled refuses another), `LOG_SEGMENT_SIZE` for a new one.
fn log_segment_size(dir: &Path) -> usize {
    // The text is followed by a binary checksum.
    std::fs::read(dir.join("conf"))
        .ok()
        .and_then(|conf| {
            String::from_utf8_lossy(&conf)
                .lines()
                .find_map(|l| l.strip_prefix("segment_size: ")?.trim().parse().ok())
        })
        .unwrap_or(LOG_SEGMENT_SIZE)
}

impl Store {
    /// Opens (or creates) the store under `path` with a page cache of `cache_mb`.
    /// A compaction interrupted by a crash is put right first (see
    /// `compact.rs`).
    pub fn open(path: &Path, cache_mb: u64) -> StoreResult<Store> {
        let dir = path.join(FORMAT_DIR);
        compact::recover(path)?;
        let config = sled::Config::new()
            .path(&dir)
            .segment_size(log_segment_size(&dir))
            .cache_capacity(cache_mb.saturating_mul(1024 * 1024))
            .mode(sled::Mode::HighThroughput)
            // No fsync of sled's own: it would make the log durable without
            // the blobs it points at (`blobs.rs`). `flush` does it, from the
            // Flusher every `storage.flush_interval_ms` (strict mode's scans
            // are durable before that, in the scan log: `scan_log.rs`).
            .flush_every_ms(None);
        // A store closed a moment ago in this process may still hold sled's
        // lock while its threads wind down: a few tries before `Locked`.
        let mut tries = 0;
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(sled::Error::Io(ref io)) if io.to_string().contains("lock") => {
                    tries += 1;
                    if tries == 25 {
                        return Err(StoreError::Locked(dir));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(other) => return Err(StoreError::Sled(other)),
            }
        };
        // sled keeps its log in `db` under its directory (sled 0.34's layout).
        let log = std::fs::File::open(dir.join("db")).map_err(sled::Error::Io)?;
        let bodies = bodies::Bodies::open(dir.join(bodies::DIR))?;
        let open = |name: &str| db.open_tree(name);
        let registry_batches = open(registry::BATCHES_TREE)?;
        let trees = Trees {
            workspaces: open("workspaces")?,
            tokens: open("tokens")?,
            tokens_by_workspace: open("tokens_by_workspace")?,
            link_buckets: open(links::LINK_BUCKETS_TREE)?,
            slug_buckets: open(links::SLUG_BUCKETS_TREE)?,
            link_writes: Mutex::new(()),
            slug_pages: Arc::new(slug_pages::SlugPages::open(&dir)?),
            slug_build: Mutex::new(None),
            events: open(EVENTS_TREE)?,
            events_by_link: open(events::LINK_INDEX_TREE)?,
            open_spans: Mutex::new(events::OpenSpans::default()),
            visitor_index: Mutex::new(visitor_index::VisitorIndex::default()),
            events_by_workspace: open("events_by_workspace")?,
            events_by_visitor: open("events_by_visitor")?,
            counters: open("counters")?,
            tallies: open("tallies")?,
            registry: std::sync::RwLock::new(registry::open_index(&db, &registry_batches)?),
            registry_batches,
            visitor_profiles: open(visitors::PROFILE_BUCKETS_TREE)?,
            profile_writes: Mutex::new(()),
            visitor_attributes: open("visitor_attributes")?,
            form_completions: open("form_completions")?,
            purged: open("purged")?,
            consumers: open("consumers")?,
            meta: open("meta")?,
            webhooks: open("webhooks")?,
            webhooks_by_workspace: open("webhooks_by_workspace")?,
            hook_messages: open(webhooks::MESSAGES_TREE)?,
            hook_deliveries: open(webhooks::DELIVERIES_TREE)?,
            webhook_outbox: open("webhook_outbox")?,
            db,
            path: path.to_path_buf(),
            event_marks: Mutex::new(EventMarks::default()),
            log,
            blobs: blobs::Blobs::new(dir.clone()),
            bodies,
        };
        let found = trees.meta.get(keys::META_SCHEMA_VERSION)?;
        if let Some(&found) = found.as_deref().and_then(<[u8]>::first)
            && found > SCHEMA_VERSION
        {
            return Err(StoreError::Newer { path: dir, found });
        }
        trees
            .meta
            .insert(keys::META_SCHEMA_VERSION, &[SCHEMA_VERSION])?;
        // Before the links: a move from the keyed layout fills the new
        // slug buckets whole, after this one.
        let slugs_moved = links::move_slugs_of_former_hash(&trees.db, &trees.slug_buckets)?;
        if slugs_moved > 0 {
            tracing::info!(
                slugs = slugs_moved,
                "slugs moved into buckets of the current hash"
            );
        }
        let links_moved = links::move_links_of_former_layouts(
            &trees.db,
            &trees.link_buckets,
            &trees.slug_buckets,
        )?;
        if links_moved > 0 {
            tracing::info!(
                links = links_moved,
                "links moved into buckets; `scanhop compact` (server stopped) gives back the disk and memory the move used"
            );
        }
        if links_moved > 0 {
            // Links came from a former layout: count them all again.
            trees.meta.remove(keys::META_LINK_COUNTS)?;
        }
        let generation = trees
            .meta
            .get(keys::META_SLUG_PAGES_GENERATION)?
            .and_then(|g| Some(u64::from_be_bytes(g.as_ref().try_into().ok()?)));
        let moved = slugs_moved > 0 || links_moved > 0;
        if !trees.slug_pages.check(generation, moved)? {
            let build = build_slug_file(&trees.slug_pages, &trees.slug_buckets)?;
            *trees.slug_build.lock().unwrap_or_else(|p| p.into_inner()) = Some(build);
        }
        let counted =
            links::count_workspace_links_once(&trees.link_buckets, &trees.counters, &trees.meta)?;
        if counted > 0 {
            tracing::info!(
                workspaces = counted,
                "counted every workspace's links once; link writes keep the counts from now on"
            );
        }
        let moved = visitors::move_profiles_of_former_layouts(&trees.db, &trees.visitor_profiles)?;
        if moved > 0 {
            tracing::info!(
                profiles = moved,
                "visitor profiles moved into buckets of their workspace"
            );
        }
        let moved = webhooks::move_webhook_records_of_former_layout(
            &trees.db,
            &trees.hook_messages,
            &trees.hook_deliveries,
        )?;
        if moved > 0 {
            tracing::info!(
                records = moved,
                "webhook messages and deliveries moved to their hook-keyed trees"
            );
        }
        compact::clean_leftovers(path);
        let store = Store {
            inner: Arc::new(trees),
        };
        let lost = store.remove_lost_segments()?;
        if lost > 0 {
            tracing::warn!(
                segments = lost,
                "removed the newest event segments, whose bodies did not reach the disk before the last stop"
            );
        }
        let indexed = store.rebuild_visitor_index()?;
        if indexed > 0 {
            tracing::info!(
                segments = indexed,
                "indexed the visitors of the newest segments, whose index entries the last stop lost"
            );
        }
        Ok(store)
    }

    /// Marks the slug file a clean copy of the store (`slug_pages.rs`), so
    /// the next open takes it as it is; the store is flushed first. The
    /// server calls it once stopped; the last handle of a store dropped
    /// calls it too.
    pub fn seal(&self) -> StoreResult<()> {
        self.inner.seal()
    }

    /// Writes everything to disk and fsyncs it; returns the number of bytes
    /// flushed.
    ///
    /// sled's own `flush` is not enough: on Linux it ends with
    /// `sync_file_range`, which neither commits the file's metadata (the log
    /// grows at its end) nor flushes the drive's write cache, so a power cut
    /// can lose what it flushed (sled issue #1452); sled's own background
    /// fsync is off (see `open`). fdatasync on another descriptor of the
    /// same file makes the flushed log durable. The bodies of event segments
    /// are fsynced first, so the log never points at bodies the disk lacks
    /// (`bodies.rs`); sled's blob files are fsynced before the log (those it
    /// points at) and after it (those written meanwhile): see `blobs.rs`.
    pub fn flush(&self) -> StoreResult<usize> {
        self.inner.flush()
    }

    /// The data directory the store was opened in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The newest event a completed `flush` made durable (`None`: none
    /// since the store was opened).
    pub fn durable_event(&self) -> Option<EventId> {
        self.marks().durable
    }

    /// Notes `last` as committed (flushes after it make it durable).
    fn committed_event(&self, last: Option<EventId>) {
        let mut marks = self.marks();
        marks.committed = marks.committed.max(last);
    }

    fn open_spans(&self) -> std::sync::MutexGuard<'_, events::OpenSpans> {
        self.inner
            .open_spans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn marks(&self) -> std::sync::MutexGuard<'_, EventMarks> {
        self.inner.marks()
    }
}

impl Trees {
    fn marks(&self) -> std::sync::MutexGuard<'_, EventMarks> {
        self.event_marks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Store::flush`.
    fn flush(&self) -> StoreResult<usize> {
        // The visitor entries waiting in memory go in what is made durable.
        visitor_index::settle(self, &mut self.visitor_index())?;
        let committed = self.marks().committed;
        self.bodies.sync()?;
        let flushed = self.db.flush()?;
        self.blobs.sync()?;
        self.log.sync_data().map_err(sled::Error::Io)?;
        self.blobs.sync()?;
        let mut marks = self.marks();
        marks.durable = marks.durable.max(committed);
        Ok(flushed)
    }

    /// `Store::seal`: no link write runs meanwhile.
    fn seal(&self) -> StoreResult<()> {
        let _no_link_write = self.link_writes.lock().unwrap_or_else(|p| p.into_inner());
        self.slug_pages.seal(|generation| {
            self.meta.insert(
                keys::META_SLUG_PAGES_GENERATION,
                &generation.to_be_bytes()[..],
            )?;
            self.flush().map(drop)
        })
    }
}

impl Drop for Trees {
    /// Stops a build of the slug file under way (its thread holds the sled
    /// database open: a store closed is closed when this returns), then
    /// seals the file.
    fn drop(&mut self) {
        self.slug_pages.stop();
        let build = self
            .slug_build
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(build) = build
            && build.join().is_err()
        {
            tracing::warn!("the slug file's build panicked: the next start builds it again");
        }
        if let Err(e) = self.seal() {
            tracing::warn!(error = %e, "could not mark the slug file clean: the next start rebuilds it");
        }
    }
}

/// Builds the slug file from the slug buckets on a thread of its own, so
/// the server starts at once: lookups go to sled until it is built, and
/// link writes wait for it (`slug_pages.rs`).
fn build_slug_file(
    pages: &Arc<slug_pages::SlugPages>,
    slugs: &sled::Tree,
) -> StoreResult<std::thread::JoinHandle<()>> {
    let (pages, slugs) = (Arc::clone(pages), slugs.clone());
    Ok(std::thread::Builder::new()
        .name("slug-file".into())
        .spawn(move || {
            let started = std::time::Instant::now();
            match pages.build(&slugs) {
                Ok(None | Some(0)) => {}
                Ok(Some(slugs)) => tracing::info!(
                    slugs,
                    ms = started.elapsed().as_millis() as u64,
                    "built the slug file from the store (it was not closed clean with it)"
                ),
                Err(e) => tracing::error!(
                    error = %e,
                    "could not build the slug file: redirects read slugs from sled until the next start"
                ),
            }
        })?)
}

/// Hands the garbage this thread's sled writes left behind to be freed: the
/// background workers call it after each step.
///
/// sled 0.34 frees a replaced piece of its log through crossbeam-epoch's
/// deferred destruction, queued in the garbage bag of the thread that
/// replaced it, and every transaction and flush replaces one. Each piece
/// holds its whole log segment's buffer (`LOG_SEGMENT_SIZE`). A bag is
/// handed on to be freed only once it holds 64 items, so a worker that
/// writes a few times a second kept segment buffers of many seconds alive:
/// under the analytics bench's write load 336 to 388 MB at the peak against
/// 229 to 243 MB with this call, and 34 to 50 MB of buffers still held
/// seconds after the load against one buffer's 4 MB. Flushing the bag
/// queues it at once and frees what no thread can still be reading.
pub fn release_log_buffers() {
    crossbeam_epoch::pin().flush();
}
