//! Event segments: the events of one committed batch in one sled value, so a
//! batch costs a few writes instead of several per event.
//!
//! Layout: `version (1) | count (u32 BE) | ids (16 × count, ascending) |
//! offsets (u32 BE × (count + 1)) | [v2: dictionary] | event records`. An ID
//! is found by binary search without decoding anything, and one event
//! decodes without the others.
//!
//! Version 2 (written today) stores what events of a batch repeat once: the
//! dictionary holds the batch's distinct workspace and link IDs and its
//! distinct strings (OS, browser, place, ISP, language, referer,
//! destination), and each record refers to them by number (see `compact`).
//! A scan then costs about a third of the bytes of version 1, which stored
//! each event as bincode with every string in full. Version 1 segments are
//! still read; rewriting one (`keep_only`) writes version 2.

use super::codec::{self, Record};

mod compact;
use super::{StoreError, StoreResult};
use crate::domain::ScanEvent;
use crate::ids::{EventId, VisitorId};

/// Bincode records, every string in full.
const V1: u8 = 1;
/// Records referring to the segment's dictionary.
const V2: u8 = 2;
const HEADER: usize = 1 + 4;

impl Record for ScanEvent {
    const VERSION: u8 = 1;
}

/// Encodes `events` (ascending IDs) into one segment value (version 2).
pub fn encode(events: &[ScanEvent]) -> StoreResult<Vec<u8>> {
    let mut dict = compact::Dictionary::default();
    let mut records: Vec<u8> = Vec::with_capacity(events.len() * 72);
    let mut ends: Vec<u32> = Vec::with_capacity(events.len());
    for e in events {
        compact::encode(e, &mut dict, &mut records);
        ends.push(u32::try_from(records.len()).map_err(|_| too_large())?);
    }
    let dict = dict.finish();
    let count = events.len();
    let mut out = Vec::with_capacity(HEADER + count * 20 + 8 + dict.len() + records.len());
    out.push(V2);
    out.extend_from_slice(&(count as u32).to_be_bytes());
    for e in events {
        out.extend_from_slice(e.id.as_bytes());
    }
    out.extend_from_slice(&0u32.to_be_bytes());
    for end in ends {
        out.extend_from_slice(&end.to_be_bytes());
    }
    out.extend_from_slice(
        &u32::try_from(dict.len())
            .map_err(|_| too_large())?
            .to_be_bytes(),
    );
    out.extend_from_slice(&dict);
    out.extend_from_slice(&records);
    Ok(out)
}

fn too_large() -> StoreError {
    StoreError::Codec("event segment too large".into())
}

/// A read-only view of an encoded segment.
pub struct Segment<'a> {
    bytes: &'a [u8],
    count: usize,
    /// Where the records start.
    base: usize,
    /// Version 2: the dictionary the records refer to.
    dict: Option<compact::DictView<'a>>,
}

fn corrupt() -> StoreError {
    StoreError::Codec("event segment is corrupt".into())
}

impl<'a> Segment<'a> {
    pub fn parse(bytes: &'a [u8]) -> StoreResult<Segment<'a>> {
        let version = bytes.first().copied();
        if !matches!(version, Some(V1 | V2)) || bytes.len() < HEADER {
            return Err(corrupt());
        }
        let count = u32::from_be_bytes(bytes[1..5].try_into().map_err(|_| corrupt())?) as usize;
        let offsets_end = count
            .checked_mul(20)
            .and_then(|n| n.checked_add(HEADER + 4))
            .ok_or_else(corrupt)?;
        if bytes.len() < offsets_end {
            return Err(corrupt());
        }
        let mut seg = Segment {
            bytes,
            count,
            base: offsets_end,
            dict: None,
        };
        if version == Some(V2) {
            let raw = bytes
                .get(offsets_end..offsets_end + 4)
                .ok_or_else(corrupt)?;
            let len = u32::from_be_bytes(raw.try_into().map_err(|_| corrupt())?) as usize;
            let start = offsets_end + 4;
            let dict = bytes.get(start..start + len).ok_or_else(corrupt)?;
            seg.dict = Some(compact::DictView::parse(dict)?);
            seg.base = start + len;
        }
        if seg.base + seg.offset(count)? > bytes.len() {
            return Err(corrupt());
        }
        Ok(seg)
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn id(&self, pos: usize) -> EventId {
        let start = HEADER + pos * 16;
        // `parse` checked that all `count` IDs are present.
        EventId::from_slice(&self.bytes[start..start + 16])
            .unwrap_or_else(|| EventId::from_bytes([0; 16]))
    }

    fn offset(&self, i: usize) -> StoreResult<usize> {
        let at = HEADER + self.count * 16 + i * 4;
        let raw = self.bytes.get(at..at + 4).ok_or_else(corrupt)?;
        Ok(u32::from_be_bytes(raw.try_into().map_err(|_| corrupt())?) as usize)
    }

    pub fn event(&self, pos: usize) -> StoreResult<ScanEvent> {
        let record = self.record(pos)?;
        match &self.dict {
            None => codec::decode(record),
            Some(dict) => compact::decode(self.id(pos), record, dict),
        }
    }

    /// Every event of the segment, in order.
    pub fn events(&self) -> StoreResult<Vec<ScanEvent>> {
        (0..self.len()).map(|pos| self.event(pos)).collect()
    }

    /// The visitor of the event at `pos`, without decoding all of it.
    pub fn visitor(&self, pos: usize) -> StoreResult<Option<VisitorId>> {
        match &self.dict {
            None => Ok(self.event(pos)?.visitor_id),
            Some(_) => compact::visitor(self.record(pos)?),
        }
    }

    /// The encoded record at `pos`, as stored.
    fn record(&self, pos: usize) -> StoreResult<&'a [u8]> {
        if pos >= self.count {
            return Err(corrupt());
        }
        let (start, end) = (self.offset(pos)?, self.offset(pos + 1)?);
        self.bytes
            .get(self.base + start..self.base + end)
            .ok_or_else(corrupt)
    }

    /// A new segment value (version 2) holding only the events at `keep`
    /// (ascending positions): nothing of the others, not even their strings
    /// in the dictionary, is in it.
    pub fn keep_only(&self, keep: &[usize]) -> StoreResult<Vec<u8>> {
        let events: Vec<ScanEvent> = keep
            .iter()
            .map(|&p| self.event(p))
            .collect::<StoreResult<_>>()?;
        encode(&events)
    }

    /// The position of `id`, if this segment holds it.
    pub fn find(&self, id: &EventId) -> Option<usize> {
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.id(mid).cmp(id) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    pub fn last_id(&self) -> Option<EventId> {
        self.count.checked_sub(1).map(|p| self.id(p))
    }
}

/// Index values: the positions (u16 BE) of one owner's events in a segment.
pub fn encode_positions(positions: &[u16]) -> Vec<u8> {
    positions.iter().flat_map(|p| p.to_be_bytes()).collect()
}

pub fn decode_positions(bytes: &[u8]) -> impl DoubleEndedIterator<Item = usize> + '_ {
    bytes
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]) as usize)
}

/// The byte that ends a span value (`encode_span`).
const SPAN_FORMAT: u8 = 0x01;

/// The segments of one link index entry (a span), ascending: each
/// segment's key and the positions of the link's events in it.
pub type SpanParts = Vec<([u8; 16], Vec<u16>)>;

/// A link index value holding several segments (a span): for each, in
/// ascending order, `segment key (16) | count (u16 BE) | positions (u16 BE
/// each)`, then `SPAN_FORMAT`, and a padding byte if the length would be
/// even otherwise. A span value always has an odd length; a value of the
/// former layout, positions only, an even one (`decode_span`). (Each
/// segment takes an even number of bytes, so the padding byte is never
/// needed in practice: it keeps the parity rule true whatever comes.)
pub fn encode_span(parts: &[([u8; 16], Vec<u16>)]) -> Vec<u8> {
    let len: usize = parts.iter().map(|(_, p)| 18 + 2 * p.len()).sum();
    let mut out = Vec::with_capacity(len + 2);
    for (segment, positions) in parts {
        out.extend_from_slice(segment);
        // A segment holds at most `u16::MAX` events (`Settings` bounds the
        // batch size), so the count fits.
        out.extend_from_slice(&(positions.len() as u16).to_be_bytes());
        for p in positions {
            out.extend_from_slice(&p.to_be_bytes());
        }
    }
    out.push(SPAN_FORMAT);
    if out.len().is_multiple_of(2) {
        out.push(0);
    }
    out
}

fn corrupt_span() -> StoreError {
    StoreError::Codec("link index entry is corrupt".into())
}

/// The segments of the link index value `value` stored under a key whose
/// segment part is `key`: a span (odd length, `encode_span`), or a value
/// of the former layout (even length: the positions in segment `key`
/// alone). Every segment of a span is at or after `key` (the Purger may
/// drop a span's first segment and keep its key), in ascending order, with
/// at least one position.
pub fn decode_span(key: &[u8; 16], value: &[u8]) -> StoreResult<SpanParts> {
    if value.len().is_multiple_of(2) {
        if value.is_empty() {
            return Err(corrupt_span());
        }
        let positions = decode_positions(value).map(|p| p as u16).collect();
        return Ok(vec![(*key, positions)]);
    }
    let body = match value {
        [body @ .., SPAN_FORMAT] => body,
        [body @ .., SPAN_FORMAT, 0] => body,
        _ => return Err(corrupt_span()),
    };
    let mut parts: SpanParts = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        if rest.len() < 18 {
            return Err(corrupt_span());
        }
        let segment: [u8; 16] = rest[..16].try_into().map_err(|_| corrupt_span())?;
        let count = u16::from_be_bytes([rest[16], rest[17]]) as usize;
        let end = 18 + 2 * count;
        if count == 0 || rest.len() < end {
            return Err(corrupt_span());
        }
        let after = parts.last().map_or(segment >= *key, |(s, _)| segment > *s);
        if !after {
            return Err(corrupt_span());
        }
        let positions = decode_positions(&rest[18..end]).map(|p| p as u16).collect();
        parts.push((segment, positions));
        rest = &rest[end..];
    }
    if parts.is_empty() {
        return Err(corrupt_span());
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DeviceType, ScanMethod};
    use crate::ids::{LinkId, WorkspaceId};

    fn event(city: Option<&str>) -> ScanEvent {
        ScanEvent {
            id: EventId::generate(),
            workspace_id: WorkspaceId::generate(),
            link_id: LinkId::generate(),
            visitor_id: None,
            method: ScanMethod::Get,
            device_type: DeviceType::Mobile,
            os: Some("iOS".into()),
            os_version: None,
            browser: None,
            browser_version: None,
            country: None,
            region: None,
            city: city.map(Into::into),
            isp: None,
            asn: Some(7),
            language: None,
            referer: None,
            destination: "https://e.com/".into(),
            ip_hash: [9; 32],
            bot: false,
        }
    }

    #[test]
    fn events_round_trip_one_at_a_time() {
        let events: Vec<ScanEvent> = (0..50)
            .map(|i| event((i % 3 == 0).then_some("Wien")))
            .collect();
        let bytes = encode(&events).unwrap();
        let seg = Segment::parse(&bytes).unwrap();
        assert_eq!(seg.len(), 50);
        for (i, e) in events.iter().enumerate() {
            assert_eq!(seg.find(&e.id), Some(i));
            assert_eq!(&seg.event(i).unwrap(), e);
            assert_eq!(seg.visitor(i).unwrap(), e.visitor_id);
        }
        assert_eq!(seg.last_id(), Some(events[49].id));
        assert_eq!(seg.find(&EventId::generate()), None);
        assert!(seg.event(50).is_err());
        // Keeping some events gives the segment those events alone would make.
        let keep = [3, 4, 20, 49];
        let kept: Vec<ScanEvent> = keep.iter().map(|&p| events[p].clone()).collect();
        assert_eq!(seg.keep_only(&keep).unwrap(), encode(&kept).unwrap());
        assert_eq!(
            Segment::parse(&seg.keep_only(&[]).unwrap()).unwrap().len(),
            0
        );
    }

    /// A version 1 segment, as earlier releases wrote them.
    fn encode_v1(events: &[ScanEvent]) -> Vec<u8> {
        let records: Vec<Vec<u8>> = events.iter().map(|e| codec::encode(e).unwrap()).collect();
        let mut out = vec![V1];
        out.extend_from_slice(&(events.len() as u32).to_be_bytes());
        for e in events {
            out.extend_from_slice(e.id.as_bytes());
        }
        let mut offset = 0u32;
        out.extend_from_slice(&offset.to_be_bytes());
        for r in &records {
            offset += r.len() as u32;
            out.extend_from_slice(&offset.to_be_bytes());
        }
        for r in &records {
            out.extend_from_slice(r);
        }
        out
    }

    /// A batch as the redirect makes them: a few links, phones of a few
    /// kinds, every field filled, one visitor each.
    fn realistic(n: usize) -> Vec<ScanEvent> {
        let ws = WorkspaceId::generate();
        let links: Vec<LinkId> = (0..3).map(|_| LinkId::generate()).collect();
        (0..n)
            .map(|i| {
                let mut e = event(Some(["Wien", "Graz", "Linz"][i % 3]));
                e.workspace_id = ws;
                e.link_id = links[i % 3];
                e.visitor_id = Some(crate::ids::VisitorId::generate());
                e.device_type = [DeviceType::Mobile, DeviceType::Desktop][i % 2];
                e.os_version = Some(format!("17.{}", i % 4).into());
                e.browser = Some("Mobile Safari".into());
                e.browser_version = Some("17.4".into());
                e.country = Some("AT".into());
                e.region = Some("Vienna".into());
                e.isp = Some("A1 Telekom Austria AG".into());
                e.language = Some("de-AT".into());
                e.referer = (i % 5 == 0).then(|| "https://www.instagram.com/".into());
                e.method = [ScanMethod::Get, ScanMethod::Post][usize::from(i % 7 == 0)];
                e.bot = i % 11 == 0;
                e.asn = (i % 2 == 0).then_some(8447);
                e.ip_hash = [i as u8; 32];
                e
            })
            .collect()
    }

    #[test]
    fn version_2_keeps_every_field_in_about_a_third_of_the_bytes() {
        let events = realistic(200);
        let v2 = encode(&events).unwrap();
        let v1 = encode_v1(&events);
        let seg = Segment::parse(&v2).unwrap();
        for (i, e) in events.iter().enumerate() {
            assert_eq!(&seg.event(i).unwrap(), e);
            assert_eq!(seg.visitor(i).unwrap(), e.visitor_id);
        }
        assert!(
            v2.len() * 2 < v1.len(),
            "version 2 {} bytes, version 1 {} bytes",
            v2.len(),
            v1.len()
        );
    }

    #[test]
    fn version_1_segments_are_still_read_and_rewritten_as_version_2() {
        let events = realistic(40);
        let v1 = encode_v1(&events);
        let seg = Segment::parse(&v1).unwrap();
        assert_eq!(seg.visitor(7).unwrap(), events[7].visitor_id);
        for (i, e) in events.iter().enumerate() {
            assert_eq!(seg.find(&e.id), Some(i));
            assert_eq!(&seg.event(i).unwrap(), e);
        }
        let kept = seg.keep_only(&[1, 30]).unwrap();
        assert_eq!(kept[0], V2);
        assert_eq!(
            kept,
            encode(&[events[1].clone(), events[30].clone()]).unwrap()
        );
    }

    #[test]
    fn a_rewritten_segment_holds_no_string_of_the_events_left_out() {
        let mut events = realistic(3);
        events[1].city = Some("Ultima Thule".into());
        let kept = Segment::parse(&encode(&events).unwrap())
            .unwrap()
            .keep_only(&[0, 2])
            .unwrap();
        assert!(!kept.windows(12).any(|w| w == b"Ultima Thule"));
    }

    #[test]
    fn spans_encode_with_odd_lengths_and_values_of_the_former_layout_still_decode() {
        let key = [7u8; 16];
        let mut later = key;
        later[15] = 9;
        let mut last = key;
        last[0] = 8;
        let parts: SpanParts = vec![
            (key, vec![0, 3, 300]),
            (later, vec![1]),
            (last, vec![65535]),
        ];
        for n in 1..=parts.len() {
            let value = encode_span(&parts[..n]);
            assert_eq!(value.len() % 2, 1, "{n} segments");
            assert_eq!(decode_span(&key, &value).unwrap(), parts[..n]);
        }
        // A span whose first segment was dropped keeps its key.
        let value = encode_span(&parts[1..]);
        assert_eq!(decode_span(&key, &value).unwrap(), parts[1..]);
        // The former layout: positions in the key's segment alone.
        let old = encode_positions(&[2, 5]);
        assert_eq!(decode_span(&key, &old).unwrap(), vec![(key, vec![2, 5])]);
    }

    #[test]
    fn corrupt_link_index_values_are_errors() {
        let key = [7u8; 16];
        let mut before = key;
        before[0] = 6;
        let good = encode_span(&[(key, vec![1, 2]), ([9; 16], vec![4])]);
        let mut bad: Vec<Vec<u8>> = vec![
            vec![],
            vec![SPAN_FORMAT],
            vec![2],
            vec![0, 0, 0],
            encode_span(&[(before, vec![1])]),
            encode_span(&[([9; 16], vec![1]), (key, vec![1])]),
            encode_span(&[(key, vec![1]), (key, vec![2])]),
            encode_span(&[(key, vec![])]),
        ];
        // Truncated anywhere, or its format byte changed.
        for cut in 1..good.len() {
            if cut == 22 || cut == good.len() - 1 {
                // Cut after a whole segment: a shorter span, not corrupt.
                continue;
            }
            let mut v = good[..cut].to_vec();
            if v.len().is_multiple_of(2) {
                v.push(SPAN_FORMAT);
            }
            bad.push(v);
        }
        let mut other = good.clone();
        *other.last_mut().unwrap() = 2;
        bad.push(other);
        let mut count = good.clone();
        count[17] = 200;
        bad.push(count);
        for v in &bad {
            assert!(decode_span(&key, v).is_err(), "{v:?}");
        }
        assert!(decode_span(&key, &good).is_ok());
    }

    #[test]
    fn corrupt_segments_are_errors() {
        let bytes = encode(&[event(None)]).unwrap();
        for cut in [0, 1, 5, 20, bytes.len() - 1] {
            assert!(
                Segment::parse(&bytes[..cut]).is_err()
                    || Segment::parse(&bytes[..cut]).unwrap().event(0).is_err(),
                "cut {cut}"
            );
        }
        // Every truncation or flipped byte of a version 2 segment is an
        // error or some event, never a panic.
        let bytes = encode(&realistic(5)).unwrap();
        for cut in 0..bytes.len() {
            if let Ok(seg) = Segment::parse(&bytes[..cut]) {
                for i in 0..seg.len() {
                    let _ = seg.event(i);
                }
            }
        }
        for at in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0xa5;
            if let Ok(seg) = Segment::parse(&flipped) {
                for i in 0..seg.len() {
                    let _ = seg.event(i);
                }
            }
        }
        let positions = encode_positions(&[0, 7, 300]);
        assert_eq!(
            decode_positions(&positions).collect::<Vec<_>>(),
            [0, 7, 300]
        );
    }
}
