//! A reference comparator for the redirect load bench: a minimal SQLite
//! hit-counter URL shortener, modelled on the redirect path of Chhoto URL
//! (github.com/SinTan1729/chhoto-url, `backend/`: actix-web, SQLite through
//! rusqlite with SQLite bundled, hit counts batched in the background). Our
//! own code, doing per redirect and per interval the work Chhoto URL's does:
//!
//! - **Connections** (`backend/src/main.rs`): each HTTP worker opens its own
//!   read-only connection when its `App` is built (`SQLITE_OPEN_READ_ONLY |
//!   SQLITE_OPEN_URI | SQLITE_OPEN_NO_MUTEX`, `database/utils.rs`
//!   `open_db`), no pool; one read-write connection (a `tokio` `Mutex` in
//!   Chhoto URL, shared with its hourly cleaner and the API's writes, none of
//!   which run here, so the hit writer owns it) writes the counts.
//! - **Pragmas** (`database/utils.rs`, on the writer after the schema):
//!   `journal_mode=WAL` with `synchronous=FULL` (WAL mode is what its
//!   `deploy/compose.yaml` enables and its log recommends; ACID is on unless
//!   `CHHOTO_SQLITE_ENSURE_ACID=False`, and ACID in WAL mode is `FULL`),
//!   `temp_store=memory`, `journal_size_limit` 8 MiB, `mmap_size` 16 MiB.
//!   The readers get none of these (they are per connection), as there.
//! - **Schema** (`database/queries.rs`): `urls` (id, short_url, long_url,
//!   hits, expiry_time, notes), a unique index on `short_url`, an index on
//!   `expiry_time`, and an external-content FTS5 table over long_url,
//!   short_url and notes (trigram tokenizer) kept up to date by triggers:
//!   every update of a row's hits also deletes and reinserts the row's
//!   entry in the full-text index, so that is part of each batch's cost.
//! - **Per redirect** (`services/get.rs` `link_handler`,
//!   `database/events.rs` `find_and_add_hit`): the slug from the path (a
//!   `String`), the time now in Unix seconds, the worker's cached prepared
//!   statement `SELECT long_url FROM urls WHERE short_url = :short AND
//!   (expiry_time IS NULL OR expiry_time > :now)` run with named parameters
//!   (expecting exactly one row, as `query_one`), then the slug (a new
//!   `String`) sent into a bounded `tokio` mpsc channel of 1,024 (awaiting
//!   room when full), and the answer: 308 Permanent Redirect to the long
//!   URL (its default; `CHHOTO_REDIRECT_METHOD=TEMPORARY` gives 307, at the
//!   same cost), or 404 for an unknown slug.
//! - **Per interval** (`background.rs` `spawn_hits_worker`,
//!   `database/events.rs` `add_hits`): a task on the server's own runtime
//!   thread (Chhoto URL spawns it on its `#[actix_web::main]` runtime; here
//!   the thread is named `shortener`) waits for a hit, then gathers hits
//!   into a map of slug to count for 500 ms (or until 500 distinct slugs
//!   are pending), then, blocking that thread, writes them in one
//!   transaction: a cached `UPDATE urls SET hits = hits + :count WHERE
//!   short_url = :short` per slug, then commit. Counts not yet written are
//!   lost if the process dies.
//!
//! Left out, as not part of a redirect's own work: the middleware Chhoto URL
//! wraps every request in (access log, compression, path normalization, a
//! cookie session, default headers), its 404 page read from a file, its
//! hourly cleanup task (expired links, WAL checkpoint, `PRAGMA optimize`),
//! the start-up backup, migrations and planner statistics. Leaving the
//! middleware out makes this shortener faster than Chhoto URL, so scanhop's
//! lead over it is, if anything, understated. It is built with the bench's
//! profile (Chhoto URL's release uses fat LTO and one codegen unit).
//!
//! Bench bookkeeping, not part of the model: a shared counter of the
//! redirects answered and one of the batches written, and `hits()` reading
//! the stored count back.
#![allow(dead_code)] // each bench uses its own part of the support modules

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::{App, Either, HttpResponse, HttpServer, Responder, web};
use rusqlite::{Connection, OpenFlags, named_params};
use tokio::sync::mpsc;

/// The status of its redirects: 308, Chhoto URL's default (permanent).
pub const STATUS: u16 = 308;

/// How long the hit writer gathers hits before writing them, and how many
/// distinct slugs make it write sooner.
const HIT_INTERVAL: Duration = Duration::from_millis(500);
const HIT_MAX_PENDING: usize = 500;
/// Room in the channel from the HTTP workers to the hit writer.
const HIT_QUEUE: usize = 1024;

const SCHEMA: &str = "
CREATE TABLE urls (
    id INTEGER PRIMARY KEY,
    short_url TEXT NOT NULL,
    long_url TEXT NOT NULL,
    hits INTEGER NOT NULL,
    expiry_time INTEGER,
    notes TEXT
);
CREATE UNIQUE INDEX idx_short_url ON urls (short_url);
CREATE INDEX idx_expiry_time ON urls (expiry_time);
CREATE VIRTUAL TABLE urls_fts USING fts5(
    long_url, short_url, notes,
    content = 'urls', content_rowid = 'id',
    tokenize = 'trigram remove_diacritics 2'
);
CREATE TRIGGER urls_fts_after_insert AFTER INSERT ON urls BEGIN
    INSERT INTO urls_fts (rowid, long_url, short_url, notes)
        VALUES (new.id, new.long_url, new.short_url, new.notes);
END;
CREATE TRIGGER urls_fts_after_update AFTER UPDATE ON urls BEGIN
    INSERT INTO urls_fts (urls_fts, rowid, long_url, short_url, notes)
        VALUES ('delete', old.id, old.long_url, old.short_url, old.notes);
    INSERT INTO urls_fts (rowid, long_url, short_url, notes)
        VALUES (new.id, new.long_url, new.short_url, new.notes);
END;
";

const LOOKUP: &str = "SELECT long_url FROM urls
    WHERE short_url = :short AND (expiry_time IS NULL OR expiry_time > :now)";

const ADD_HITS: &str = "UPDATE urls SET hits = hits + :count WHERE short_url = :short";

/// A running shortener: 2 HTTP workers on `addr`, its database in a
/// temporary directory.
pub struct Shortener {
    pub addr: SocketAddr,
    db: PathBuf,
    slug: String,
    answered: Arc<AtomicU64>,
    batches: Arc<AtomicU64>,
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

/// What each HTTP worker holds.
struct Worker {
    reader: Connection,
    hits: mpsc::Sender<String>,
    answered: Arc<AtomicU64>,
}

impl Shortener {
    /// Creates the database with the link `slug` to `destination` and
    /// serves it on 127.0.0.1 (a free port) with 2 workers.
    pub fn start(slug: &str, destination: &str) -> Shortener {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("urls.sqlite");
        let answered = Arc::new(AtomicU64::new(0));
        let batches = Arc::new(AtomicU64::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = {
            let (db, slug, destination) = (db.clone(), slug.to_owned(), destination.to_owned());
            let (answered, batches) = (answered.clone(), batches.clone());
            std::thread::Builder::new()
                .name("shortener".to_owned())
                .spawn(move || {
                    actix_web::rt::System::new().block_on(serve(
                        db,
                        slug,
                        destination,
                        answered,
                        batches,
                        tx,
                    ))
                })
                .expect("spawn the shortener")
        };
        let (addr, handle) = rx.recv().expect("shortener started");
        Shortener {
            addr,
            db,
            slug: slug.to_owned(),
            answered,
            batches,
            handle,
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// Redirects answered so far.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// Batches of counts written so far (one transaction each).
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// The link's hit count as stored in SQLite now.
    pub fn hits(&self) -> u64 {
        let db = Connection::open_with_flags(&self.db, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the shortener's database");
        db.query_row(
            "SELECT hits FROM urls WHERE short_url = ?1",
            [&self.slug],
            |row| row.get::<_, i64>(0),
        )
        .expect("the link's hits") as u64
    }
}

impl Drop for Shortener {
    fn drop(&mut self) {
        let stop = self.handle.stop(true);
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() {
            rt.block_on(stop);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The server's thread: opens the writer (schema, pragmas, the link), starts
/// the hit writer on this thread's runtime and the HTTP server, and runs
/// until stopped.
async fn serve(
    db: PathBuf,
    slug: String,
    destination: String,
    answered: Arc<AtomicU64>,
    batches: Arc<AtomicU64>,
    started: std::sync::mpsc::Sender<(SocketAddr, actix_web::dev::ServerHandle)>,
) {
    let writer = open_writer(&db);
    writer
        .execute(
            "INSERT INTO urls (short_url, long_url, hits, expiry_time, notes)
                VALUES (?1, ?2, 0, NULL, NULL)",
            [&slug, &destination],
        )
        .expect("insert the link");
    let (hits_tx, hits_rx) = mpsc::channel::<String>(HIT_QUEUE);
    let hit_writer = actix_web::rt::spawn(write_hits(writer, hits_rx, batches));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(Worker {
                reader: open_reader(&db),
                hits: hits_tx.clone(),
                answered: answered.clone(),
            }))
            .route("/{shortlink}", web::get().to(redirect))
    })
    .workers(2)
    .disable_signals()
    .bind("127.0.0.1:0")
    .expect("bind");
    let addr = server.addrs()[0];
    let server = server.run();
    started.send((addr, server.handle())).expect("send");
    let _ = server.await;
    // The workers' senders are gone with them: the writer writes what it
    // still holds and ends (bounded, should a sender outlive the server).
    let _ = tokio::time::timeout(Duration::from_secs(2), hit_writer).await;
}

/// The read-write connection: schema, then the pragmas, as Chhoto URL's
/// database initialization sets them.
fn open_writer(path: &Path) -> Connection {
    let db = Connection::open(path).expect("open the database");
    db.execute_batch(SCHEMA).expect("schema");
    for (pragma, value) in [
        ("journal_mode", "WAL"),
        ("synchronous", "FULL"),
        ("temp_store", "memory"),
        ("journal_size_limit", "8388608"),
        ("mmap_size", "16777216"),
    ] {
        db.pragma_update(None, pragma, value)
            .unwrap_or_else(|e| panic!("pragma {pragma}: {e}"));
    }
    db
}

/// An HTTP worker's own connection, read-only.
fn open_reader(path: &Path) -> Connection {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    Connection::open_with_flags(path, flags).expect("open the database read-only")
}

/// `GET /{shortlink}`: look the link up, queue a hit, redirect.
async fn redirect(shortlink: web::Path<String>, worker: web::Data<Worker>) -> impl Responder {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let found = worker.reader.prepare_cached(LOOKUP).and_then(|mut lookup| {
        lookup.query_one(
            named_params! {":short": shortlink.as_str(), ":now": now},
            |row| row.get::<_, String>(0),
        )
    });
    match found {
        Ok(long_url) => {
            if worker.hits.send(shortlink.to_string()).await.is_err() {
                eprintln!("shortener: the hit writer is gone");
            }
            worker.answered.fetch_add(1, Ordering::Relaxed);
            Either::Left(web::Redirect::to(long_url).permanent())
        }
        Err(_) => Either::Right(HttpResponse::NotFound().finish()),
    }
}

/// The hit writer: gathers hits for `HIT_INTERVAL` from the first one (or
/// until `HIT_MAX_PENDING` slugs are pending), writes them in one
/// transaction, and waits for the next hit.
async fn write_hits(mut db: Connection, mut hits: mpsc::Receiver<String>, batches: Arc<AtomicU64>) {
    let mut pending: HashMap<String, i64> = HashMap::new();
    while let Some(first) = hits.recv().await {
        *pending.entry(first).or_default() += 1;
        let deadline = tokio::time::Instant::now() + HIT_INTERVAL;
        while pending.len() < HIT_MAX_PENDING {
            match tokio::time::timeout_at(deadline, hits.recv()).await {
                Ok(Some(slug)) => *pending.entry(slug).or_default() += 1,
                // The interval is over, or the workers are gone.
                Ok(None) | Err(_) => break,
            }
        }
        match add_hits(&mut db, &pending) {
            Ok(()) => {
                batches.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => eprintln!(
                "shortener: {} hits lost, the batch failed: {e}",
                pending.values().sum::<i64>()
            ),
        }
        pending.clear();
    }
}

/// One transaction adding each slug's pending count to its row.
fn add_hits(db: &mut Connection, pending: &HashMap<String, i64>) -> rusqlite::Result<()> {
    let tx = db.transaction()?;
    {
        let mut add = tx.prepare_cached(ADD_HITS)?;
        for (slug, count) in pending {
            add.execute(named_params! {":short": slug, ":count": count})?;
        }
    }
    tx.commit()
}
