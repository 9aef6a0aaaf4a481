//! Event segments: the events of one committed batch in one sled value, so a
//! batch costs a few writes instead of several per event.
//!
//! Layout: `version (1) | count (u32 BE) | ids (16 × count, ascending) |
//! offsets (u32 BE × (count + 1)) | event records`. Each record is the codec's
//! version byte and bincode, so one event decodes without the others, and an
//! ID is found by binary search without decoding anything.

use super::codec::{self, Record};
use super::{StoreError, StoreResult};
use crate::domain::ScanEvent;
use crate::ids::EventId;

const VERSION: u8 = 1;
const HEADER: usize = 1 + 4;

impl Record for ScanEvent {
    const VERSION: u8 = 1;
}

/// Encodes `events` (ascending IDs) into one segment value.
pub fn encode(events: &[ScanEvent]) -> StoreResult<Vec<u8>> {
    let records: Vec<Vec<u8>> = events
        .iter()
        .map(codec::encode)
        .collect::<StoreResult<_>>()?;
    let ids: Vec<EventId> = events.iter().map(|e| e.id).collect();
    let records: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
    Ok(assemble(&ids, &records))
}

/// The segment value of `ids` (ascending) and their encoded records.
fn assemble(ids: &[EventId], records: &[&[u8]]) -> Vec<u8> {
    let count = ids.len();
    let body: usize = records.iter().map(|r| r.len()).sum();
    let mut out = Vec::with_capacity(HEADER + count * 20 + 4 + body);
    out.push(VERSION);
    out.extend_from_slice(&(count as u32).to_be_bytes());
    for id in ids {
        out.extend_from_slice(id.as_bytes());
    }
    let mut offset = 0u32;
    out.extend_from_slice(&offset.to_be_bytes());
    for r in records {
        offset += r.len() as u32;
        out.extend_from_slice(&offset.to_be_bytes());
    }
    for r in records {
        out.extend_from_slice(r);
    }
    out
}

/// A read-only view of an encoded segment.
pub struct Segment<'a> {
    bytes: &'a [u8],
    count: usize,
}

fn corrupt() -> StoreError {
    StoreError::Codec("event segment is corrupt".into())
}

impl<'a> Segment<'a> {
    pub fn parse(bytes: &'a [u8]) -> StoreResult<Segment<'a>> {
        if bytes.first() != Some(&VERSION) || bytes.len() < HEADER {
            return Err(corrupt());
        }
        let count = u32::from_be_bytes(bytes[1..5].try_into().map_err(|_| corrupt())?) as usize;
        let records_start = HEADER + count * 20 + 4;
        if bytes.len() < records_start {
            return Err(corrupt());
        }
        let seg = Segment { bytes, count };
        if records_start + seg.offset(count)? > bytes.len() {
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
        codec::decode(self.record(pos)?)
    }

    /// The encoded record at `pos`, as stored.
    fn record(&self, pos: usize) -> StoreResult<&'a [u8]> {
        if pos >= self.count {
            return Err(corrupt());
        }
        let base = HEADER + self.count * 20 + 4;
        let (start, end) = (self.offset(pos)?, self.offset(pos + 1)?);
        self.bytes.get(base + start..base + end).ok_or_else(corrupt)
    }

    /// A new segment value holding only the events at `keep` (ascending
    /// positions), their records copied byte for byte; the others' IDs and
    /// records are not in it.
    pub fn keep_only(&self, keep: &[usize]) -> StoreResult<Vec<u8>> {
        let ids: Vec<EventId> = keep.iter().map(|&p| self.id(p)).collect();
        let records: Vec<&[u8]> = keep
            .iter()
            .map(|&p| self.record(p))
            .collect::<StoreResult<_>>()?;
        Ok(assemble(&ids, &records))
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
            city: city.map(str::to_owned),
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
        let positions = encode_positions(&[0, 7, 300]);
        assert_eq!(
            decode_positions(&positions).collect::<Vec<_>>(),
            [0, 7, 300]
        );
    }
}
