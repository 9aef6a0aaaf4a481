//! Version 2 event records: what a batch's events repeat is stored once per
//! segment, in a dictionary, and each record refers to it by number.
//!
//! Dictionary: `ids (u32 BE count, 16 bytes each) | strings (u32 BE count,
//! u32 BE end offsets, UTF-8 bytes)`. The workspace and link IDs go in the ID
//! table; OS, browser, place, ISP, language, referer and destination in the
//! string table.
//!
//! Record: `flags (1) | workspace (varint) | link (varint) | visitor (16, if
//! flagged) | 11 string references (varint: 0 is none, n is entry n - 1) |
//! asn (varint, if flagged) | ip_hash (32)`. Flags: bit 0 bot, bit 1 POST,
//! bit 2 has a visitor, bit 3 has an ASN, bits 4 to 6 the device type.

use std::collections::HashMap;

use compact_str::CompactString;

use crate::domain::{DeviceType, ScanEvent, ScanMethod};
use crate::ids::{EventId, Id, IdKind, VisitorId};
use crate::store::{FastHash, StoreError, StoreResult};

const BOT: u8 = 1;
const POST: u8 = 1 << 1;
const VISITOR: u8 = 1 << 2;
const ASN: u8 = 1 << 3;
const DEVICE_SHIFT: u8 = 4;

fn corrupt() -> StoreError {
    StoreError::Codec("event record is corrupt".into())
}

/// The dictionary of a segment being written, borrowing its strings from
/// the events it encodes (a batch of new visitors brings thousands of new
/// cities, networks and languages: no allocation each).
#[derive(Default)]
pub struct Dictionary<'a> {
    ids: Vec<[u8; 16]>,
    id_index: HashMap<[u8; 16], u32, FastHash>,
    strings: Vec<u8>,
    ends: Vec<u32>,
    string_index: HashMap<&'a str, u32, FastHash>,
}

impl<'a> Dictionary<'a> {
    fn id(&mut self, id: [u8; 16]) -> u32 {
        let next = self.ids.len() as u32;
        *self.id_index.entry(id).or_insert_with(|| {
            self.ids.push(id);
            next
        })
    }

    fn string(&mut self, s: &'a str) -> u32 {
        let next = self.ends.len() as u32;
        *self.string_index.entry(s).or_insert_with(|| {
            self.strings.extend_from_slice(s.as_bytes());
            self.ends.push(self.strings.len() as u32);
            next
        })
    }

    /// The dictionary's bytes.
    pub fn finish(self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(8 + self.ids.len() * 16 + self.ends.len() * 4 + self.strings.len());
        out.extend_from_slice(&(self.ids.len() as u32).to_be_bytes());
        for id in &self.ids {
            out.extend_from_slice(id);
        }
        out.extend_from_slice(&(self.ends.len() as u32).to_be_bytes());
        for end in &self.ends {
            out.extend_from_slice(&end.to_be_bytes());
        }
        out.extend_from_slice(&self.strings);
        out
    }
}

/// A stored dictionary, read in place.
pub struct DictView<'a> {
    ids: &'a [u8],
    ends: &'a [u8],
    strings: &'a [u8],
}

fn be_u32(bytes: &[u8], at: usize) -> StoreResult<usize> {
    let raw = bytes.get(at..at + 4).ok_or_else(corrupt)?;
    Ok(u32::from_be_bytes(raw.try_into().map_err(|_| corrupt())?) as usize)
}

impl<'a> DictView<'a> {
    pub fn parse(bytes: &'a [u8]) -> StoreResult<DictView<'a>> {
        let n_ids = be_u32(bytes, 0)?;
        let ids_end = n_ids
            .checked_mul(16)
            .and_then(|n| n.checked_add(4))
            .ok_or_else(corrupt)?;
        let ids = bytes.get(4..ids_end).ok_or_else(corrupt)?;
        let n_strings = be_u32(bytes, ids_end)?;
        let ends_start = ids_end + 4;
        let ends_end = n_strings
            .checked_mul(4)
            .and_then(|n| n.checked_add(ends_start))
            .ok_or_else(corrupt)?;
        let ends = bytes.get(ends_start..ends_end).ok_or_else(corrupt)?;
        let strings = &bytes.get(ends_end..).ok_or_else(corrupt)?;
        let view = DictView { ids, ends, strings };
        if n_strings > 0 && be_u32(ends, (n_strings - 1) * 4)? > strings.len() {
            return Err(corrupt());
        }
        Ok(view)
    }

    fn id<K: IdKind>(&self, i: usize) -> StoreResult<Id<K>> {
        let raw = self.ids.get(i * 16..i * 16 + 16).ok_or_else(corrupt)?;
        Id::from_slice(raw).ok_or_else(corrupt)
    }

    fn string(&self, i: usize) -> StoreResult<&'a str> {
        let end = be_u32(self.ends, i * 4)?;
        let start = if i == 0 {
            0
        } else {
            be_u32(self.ends, (i - 1) * 4)?
        };
        let raw = self.strings.get(start..end).ok_or_else(corrupt)?;
        std::str::from_utf8(raw).map_err(|_| corrupt())
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> StoreResult<u8> {
        let b = *self.bytes.get(self.at).ok_or_else(corrupt)?;
        self.at += 1;
        Ok(b)
    }

    fn varint(&mut self) -> StoreResult<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(corrupt())
    }

    fn fixed<const N: usize>(&mut self) -> StoreResult<[u8; N]> {
        let raw = self.bytes.get(self.at..self.at + N).ok_or_else(corrupt)?;
        self.at += N;
        raw.try_into().map_err(|_| corrupt())
    }
}

/// The string fields of an event, in record order.
fn strings(e: &ScanEvent) -> [Option<&str>; 11] {
    [
        e.os.as_deref(),
        e.os_version.as_deref(),
        e.browser.as_deref(),
        e.browser_version.as_deref(),
        e.country.as_deref(),
        e.region.as_deref(),
        e.city.as_deref(),
        e.isp.as_deref(),
        e.language.as_deref(),
        e.referer.as_deref(),
        Some(e.destination.as_str()),
    ]
}

/// Appends the record of `e` to `out`, adding what it repeats to `dict`.
pub fn encode<'a>(e: &'a ScanEvent, dict: &mut Dictionary<'a>, out: &mut Vec<u8>) {
    let device = DeviceType::ALL
        .iter()
        .position(|d| *d == e.device_type)
        .unwrap_or(0) as u8;
    let mut flags = device << DEVICE_SHIFT;
    if e.bot {
        flags |= BOT;
    }
    if e.method == ScanMethod::Post {
        flags |= POST;
    }
    if e.visitor_id.is_some() {
        flags |= VISITOR;
    }
    if e.asn.is_some() {
        flags |= ASN;
    }
    out.push(flags);
    put_varint(out, u64::from(dict.id(*e.workspace_id.as_bytes())));
    put_varint(out, u64::from(dict.id(*e.link_id.as_bytes())));
    if let Some(v) = &e.visitor_id {
        out.extend_from_slice(v.as_bytes());
    }
    for s in strings(e) {
        put_varint(out, s.map_or(0, |s| u64::from(dict.string(s)) + 1));
    }
    if let Some(asn) = e.asn {
        put_varint(out, u64::from(asn));
    }
    out.extend_from_slice(&e.ip_hash);
}

/// The visitor of the event whose record is `record`, read without
/// decoding the rest of it.
pub fn visitor(record: &[u8]) -> StoreResult<Option<VisitorId>> {
    let mut r = Reader {
        bytes: record,
        at: 0,
    };
    if r.byte()? & VISITOR == 0 {
        return Ok(None);
    }
    r.varint()?;
    r.varint()?;
    Ok(Some(Id::from_bytes(r.fixed::<16>()?)))
}

/// The event `id` whose record is `record`.
pub fn decode<'a>(id: EventId, record: &[u8], dict: &DictView<'a>) -> StoreResult<ScanEvent> {
    let mut r = Reader {
        bytes: record,
        at: 0,
    };
    let flags = r.byte()?;
    let device = *DeviceType::ALL
        .get(usize::from(flags >> DEVICE_SHIFT))
        .ok_or_else(corrupt)?;
    let workspace_id = dict.id(r.varint()? as usize)?;
    let link_id = dict.id(r.varint()? as usize)?;
    let visitor_id = if flags & VISITOR != 0 {
        Some(Id::from_bytes(r.fixed::<16>()?))
    } else {
        None
    };
    let mut text: [Option<&'a str>; 11] = Default::default();
    for slot in &mut text {
        *slot = match r.varint()? {
            0 => None,
            n => Some(dict.string(n as usize - 1)?),
        };
    }
    let asn = if flags & ASN != 0 {
        Some(u32::try_from(r.varint()?).map_err(|_| corrupt())?)
    } else {
        None
    };
    let ip_hash = r.fixed::<32>()?;
    if r.at != record.len() {
        return Err(corrupt());
    }
    let [
        os,
        os_version,
        browser,
        browser_version,
        country,
        region,
        city,
        isp,
        language,
        referer,
        destination,
    ] = text;
    Ok(ScanEvent {
        id,
        workspace_id,
        link_id,
        visitor_id,
        method: if flags & POST != 0 {
            ScanMethod::Post
        } else {
            ScanMethod::Get
        },
        device_type: device,
        os: os.map(CompactString::from),
        os_version: os_version.map(CompactString::from),
        browser: browser.map(CompactString::from),
        browser_version: browser_version.map(CompactString::from),
        country: country.map(CompactString::from),
        region: region.map(CompactString::from),
        city: city.map(CompactString::from),
        isp: isp.map(CompactString::from),
        asn,
        language: language.map(CompactString::from),
        referer: referer.map(str::to_owned),
        destination: destination.ok_or_else(corrupt)?.to_owned(),
        ip_hash,
        bot: flags & BOT != 0,
    })
}
