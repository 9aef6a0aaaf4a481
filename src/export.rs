//! The export of scan events as NDJSON or CSV, shared by
//! `GET /v1/events/export` and `scanhop export`, so both write the same bytes
//! for the same filters.
//!
//! An `ExportWalk` reads the matching events oldest first in bounded pages
//! (`Store::list_events_oldest_first`) and encodes each page on its own, so
//! memory stays flat however many events there are. It ends at the newest
//! event that existed when it started: events recorded meanwhile are left
//! out, and the walk always ends. Each event is written through `EventView`,
//! the serializer of `GET /v1/events`, so an exported line equals the listed
//! item.

use serde_json::Value;

use crate::domain::{EventView, ScanEvent, Timestamp};
use crate::ids::{EventId, LinkId};
use crate::store::{EventQuery, Store, StoreError};

/// Events read and encoded per page.
pub const PAGE_SIZE: usize = 1000;

/// The CSV columns: every field of the event object, in the order
/// `GET /v1/events` writes them.
pub const CSV_COLUMNS: [&str; 20] = [
    "id",
    "link_id",
    "visitor_id",
    "timestamp",
    "method",
    "device_type",
    "os",
    "os_version",
    "browser",
    "browser_version",
    "country",
    "region",
    "city",
    "isp",
    "asn",
    "language",
    "referer",
    "destination",
    "ip_hash",
    "bot",
];

/// Format of an export: `ndjson` (newline-delimited JSON) or `csv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum ExportFormat {
    /// One JSON object per line.
    #[default]
    Ndjson,
    /// RFC 4180, with a header row.
    Csv,
}

impl ExportFormat {
    pub fn parse(s: &str) -> Option<ExportFormat> {
        match s {
            "ndjson" => Some(ExportFormat::Ndjson),
            "csv" => Some(ExportFormat::Csv),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            ExportFormat::Ndjson => "ndjson",
            ExportFormat::Csv => "csv",
        }
    }

    pub fn content_type(&self) -> &'static str {
        match self {
            ExportFormat::Ndjson => "application/x-ndjson",
            ExportFormat::Csv => "text/csv; charset=utf-8",
        }
    }

    /// `scanhop-events-20260605T143218Z.ndjson`: the UTC time in the basic
    /// ISO 8601 form, which every file system takes.
    pub fn filename(&self, at: Timestamp) -> String {
        // Display is `2026-06-05T14:32:18.123Z`: keep up to the seconds.
        let text = at.to_string();
        let seconds = text.split('.').next().unwrap_or(&text);
        let compact: String = seconds
            .chars()
            .filter(|c| !matches!(c, '-' | ':'))
            .collect();
        format!("scanhop-events-{compact}Z.{}", self.as_str())
    }

    /// What comes before the first event: the CSV header row.
    pub fn header(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if *self == ExportFormat::Csv {
            // Writing to a Vec cannot fail.
            let _ = csv_rows(&mut out, [CSV_COLUMNS.map(str::to_owned)]);
        }
        out
    }

    /// Appends `events` to `out`, one line (NDJSON) or row (CSV) each.
    pub fn encode(&self, events: Vec<ScanEvent>, out: &mut Vec<u8>) -> Result<(), ExportError> {
        match self {
            ExportFormat::Ndjson => {
                for event in events {
                    serde_json::to_writer(&mut *out, &EventView::from(event))
                        .map_err(encode_error)?;
                    out.push(b'\n');
                }
                Ok(())
            }
            ExportFormat::Csv => {
                let rows = events
                    .into_iter()
                    .map(csv_cells)
                    .collect::<Result<Vec<_>, _>>()?;
                csv_rows(out, rows)
            }
        }
    }
}

/// An event's CSV cells: its JSON object, as `GET /v1/events` writes it, read
/// in column order.
fn csv_cells(event: ScanEvent) -> Result<[String; 20], ExportError> {
    let Value::Object(fields) =
        serde_json::to_value(EventView::from(event)).map_err(encode_error)?
    else {
        return Err(ExportError::Encode("an event is not an object".into()));
    };
    Ok(CSV_COLUMNS.map(|c| csv_cell(fields.get(c).unwrap_or(&Value::Null))))
}

/// A JSON value as a CSV cell: `null` is empty, booleans are `true`/`false`,
/// numbers and strings are written as they are.
fn csv_cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// CSV records as RFC 4180 writes them: CRLF after each, and a field quoted
/// when it holds a comma, a double quote (doubled inside), CR or LF.
fn csv_rows(
    out: &mut Vec<u8>,
    rows: impl IntoIterator<Item = [String; 20]>,
) -> Result<(), ExportError> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(out);
    for row in rows {
        writer.write_record(&row).map_err(encode_error)?;
    }
    writer.flush().map_err(encode_error)
}

fn encode_error(e: impl std::fmt::Display) -> ExportError {
    ExportError::Encode(e.to_string())
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("could not encode an event: {0}")]
    Encode(String),
}

/// One encoded page of an export.
#[derive(Debug)]
pub struct Chunk {
    pub bytes: Vec<u8>,
    /// Events written.
    pub events: usize,
    /// Candidates examined (for progress against `ExportWalk::candidates`).
    pub examined: u64,
}

/// An export in progress: where it is, and where it ends.
pub struct ExportWalk {
    store: Store,
    query: EventQuery,
    /// With a visitor's index walked, `link_id` is checked per event (as in
    /// `GET /v1/events`).
    link_filter: Option<LinkId>,
    format: ExportFormat,
    /// The newest event when the walk began; none later is exported.
    until: Option<EventId>,
    after: Option<Vec<u8>>,
    page_size: usize,
    done: bool,
}

impl ExportWalk {
    /// Starts an export of what `query` matches now.
    pub fn start(
        store: Store,
        query: EventQuery,
        link_filter: Option<LinkId>,
        format: ExportFormat,
    ) -> Result<ExportWalk, ExportError> {
        let until = store.last_event_id()?;
        Ok(ExportWalk {
            store,
            query,
            link_filter,
            format,
            done: until.is_none(),
            until,
            after: None,
            page_size: PAGE_SIZE,
        })
    }

    /// Pages of `n` events instead of `PAGE_SIZE`.
    pub fn with_page_size(mut self, n: usize) -> ExportWalk {
        self.page_size = n.max(1);
        self
    }

    pub fn format(&self) -> ExportFormat {
        self.format
    }

    /// How many events the walk will examine, at most a few more: counted
    /// from the index alone, before the filters other than time.
    pub fn candidates(&self) -> Result<u64, ExportError> {
        if self.until.is_none() {
            return Ok(0);
        }
        Ok(self
            .store
            .count_event_candidates(&self.query, self.until.as_ref())?)
    }

    /// Reads and encodes the next page; `None` once the export is complete.
    /// A page may hold no event (a sparse filter examined a full budget of
    /// candidates) and the walk still go on.
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>, ExportError> {
        if self.done {
            return Ok(None);
        }
        let (page, examined) = self.store.list_events_oldest_first(
            &self.query,
            self.after.as_deref(),
            self.until.as_ref(),
            self.page_size,
        )?;
        self.done = page.next_cursor.is_none();
        self.after = page.next_cursor;
        let events: Vec<ScanEvent> = page
            .items
            .into_iter()
            .filter(|e| self.link_filter.is_none_or(|l| e.link_id == l))
            .collect();
        let count = events.len();
        let mut bytes = Vec::with_capacity(count * 512);
        self.format.encode(events, &mut bytes)?;
        Ok(Some(Chunk {
            bytes,
            events: count,
            examined,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::DeviceType;
    use crate::ids::WorkspaceId;
    use crate::store::EventIndex;

    fn event(ms: i64, ws: WorkspaceId, link: LinkId) -> ScanEvent {
        let mut id = EventId::lower_bound_bytes(ms);
        id[15] = 1;
        ScanEvent {
            os: Some("iOS".into()),
            asn: Some(64500),
            ..ScanEvent::sample(EventId::from_bytes(id), ws, link)
        }
    }

    fn records(bytes: &[u8]) -> Vec<csv::StringRecord> {
        csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(bytes)
            .records()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn csv_columns_are_the_fields_of_the_event_object_in_order() {
        let e = event(1, WorkspaceId::generate(), LinkId::generate());
        let json = serde_json::to_value(EventView::from(e)).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, CSV_COLUMNS);
        let header = ExportFormat::Csv.header();
        assert_eq!(
            header,
            format!("{}\r\n", CSV_COLUMNS.join(",")).into_bytes()
        );
        assert!(ExportFormat::Ndjson.header().is_empty());
    }

    #[test]
    fn csv_quotes_commas_quotes_and_line_breaks_and_reads_back() {
        let (ws, link) = (WorkspaceId::generate(), LinkId::generate());
        let tricky = [
            "https://news.example/a,b?q=\"x\"",
            "line one\nline two",
            "crlf\r\nsecond",
            "trailing space ",
            "",
        ];
        let events: Vec<ScanEvent> = tricky
            .iter()
            .enumerate()
            .map(|(i, r)| ScanEvent {
                referer: Some((*r).to_owned()),
                bot: i == 1,
                device_type: if i == 1 {
                    DeviceType::Bot
                } else {
                    DeviceType::Mobile
                },
                ..event(i as i64 + 1, ws, link)
            })
            .collect();
        let mut out = ExportFormat::Csv.header();
        ExportFormat::Csv.encode(events.clone(), &mut out).unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(
            text.contains("\"https://news.example/a,b?q=\"\"x\"\"\""),
            "{text}"
        );
        assert!(text.contains("\"line one\nline two\""), "{text}");
        assert!(text.contains("\"crlf\r\nsecond\""), "{text}");
        let rows = records(&out);
        assert_eq!(
            rows.len(),
            1 + events.len(),
            "a line break is not a new row"
        );
        assert_eq!(rows[0].iter().collect::<Vec<_>>(), CSV_COLUMNS);
        for (row, e) in rows[1..].iter().zip(&events) {
            let json = serde_json::to_value(EventView::from(e.clone())).unwrap();
            for (cell, column) in row.iter().zip(CSV_COLUMNS) {
                let expected = match &json[column] {
                    Value::Null => String::new(),
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                assert_eq!(cell, expected, "{column}");
            }
            assert_eq!(&row[16], e.referer.as_deref().unwrap());
            assert_eq!(&row[2], "", "null visitor_id is an empty cell");
            assert_eq!(&row[14], "64500");
            assert_eq!(&row[19], if e.bot { "true" } else { "false" });
        }
    }

    #[test]
    fn ndjson_lines_are_the_listed_objects() {
        let e = ScanEvent {
            referer: Some("a\nb\r\n\"c\"".into()),
            ..event(5, WorkspaceId::generate(), LinkId::generate())
        };
        let mut out = Vec::new();
        ExportFormat::Ndjson
            .encode(vec![e.clone()], &mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches('\n').count(), 1, "one line: {text:?}");
        assert_eq!(
            text,
            format!("{}\n", serde_json::to_string(&EventView::from(e)).unwrap())
        );
    }

    #[test]
    fn filenames_and_media_types() {
        let at: Timestamp = "2026-06-05T14:32:18.123Z".parse().unwrap();
        assert_eq!(
            ExportFormat::Ndjson.filename(at),
            "scanhop-events-20260605T143218Z.ndjson"
        );
        assert_eq!(
            ExportFormat::Csv.filename(at),
            "scanhop-events-20260605T143218Z.csv"
        );
        assert_eq!(ExportFormat::parse("csv"), Some(ExportFormat::Csv));
        assert_eq!(ExportFormat::parse("CSV"), None);
        assert_eq!(ExportFormat::default(), ExportFormat::Ndjson);
    }

    /// 20,000 events in 40 segments stream as pages of at most `PAGE_SIZE`,
    /// oldest first, each encoded on its own; the later scans are left out.
    #[test]
    fn a_large_export_streams_page_by_page() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 16).unwrap();
        let (ws, link) = (WorkspaceId::generate(), LinkId::generate());
        let mut ms = 0;
        for _ in 0..40 {
            let batch: Vec<ScanEvent> = (0..500)
                .map(|_| {
                    ms += 1;
                    event(ms, ws, link)
                })
                .collect();
            store.commit_scans(&batch).unwrap();
        }
        let query = EventQuery {
            workspace_id: ws,
            index: EventIndex::Workspace,
            from_ms: None,
            to_ms: None,
            tag: None,
            country: None,
            device_type: None,
            include_bots: false,
        };
        let mut walk = ExportWalk::start(store.clone(), query, None, ExportFormat::Ndjson).unwrap();
        assert_eq!(walk.candidates().unwrap(), 20_000);
        // Scans after the start are not part of this export.
        store.commit_scans(&[event(ms + 1, ws, link)]).unwrap();
        let mut chunks = 0;
        let mut last_ms = 0;
        let mut total = 0;
        while let Some(chunk) = walk.next_chunk().unwrap() {
            chunks += 1;
            assert!(chunk.events <= PAGE_SIZE);
            let text = String::from_utf8(chunk.bytes).unwrap();
            assert_eq!(text.lines().count(), chunk.events);
            for line in text.lines() {
                let v: Value = serde_json::from_str(line).unwrap();
                let t: Timestamp = v["timestamp"].as_str().unwrap().parse().unwrap();
                assert!(t.as_millis() > last_ms, "oldest first");
                last_ms = t.as_millis();
            }
            total += chunk.events;
        }
        assert_eq!(total, 20_000);
        assert!(chunks >= 20, "{chunks} pages");
        assert_eq!(last_ms, 20_000);
    }

    #[test]
    fn an_empty_store_exports_no_page() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8).unwrap();
        let query = EventQuery {
            workspace_id: WorkspaceId::generate(),
            index: EventIndex::Workspace,
            from_ms: None,
            to_ms: None,
            tag: None,
            country: None,
            device_type: None,
            include_bots: false,
        };
        let mut walk = ExportWalk::start(store, query, None, ExportFormat::Csv).unwrap();
        assert_eq!(walk.candidates().unwrap(), 0);
        assert!(walk.next_chunk().unwrap().is_none());
    }
}
