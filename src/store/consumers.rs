//! Durable positions of the workers downstream of the Recorder. A consumer's
//! record holds the ID of the last committed event it processed, how many
//! events it has processed in all, and the state it derived from them, in
//! one value: writing it is atomic, so position and state never disagree.
//! Reading "what comes after my position" is `Store::events_after`.

use serde::{Deserialize, Serialize};

use std::ops::Bound;

use super::codec::{self, Record};
use super::events::Body;
use super::segment::Segment;
use super::{Store, StoreResult};
use crate::domain::ScanEvent;
use crate::ids::EventId;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerRecord {
    /// The last event processed; `None` before the first.
    pub position: Option<EventId>,
    /// Events processed since the consumer first ran.
    pub events: u64,
    /// The consumer's own state (its codec is its business).
    pub state: Vec<u8>,
}

impl Record for ConsumerRecord {
    const VERSION: u8 = 1;
}

impl Store {
    pub fn consumer(&self, name: &str) -> StoreResult<Option<ConsumerRecord>> {
        self.inner
            .consumers
            .get(name.as_bytes())?
            .map(|v| codec::decode(&v))
            .transpose()
    }

    pub fn save_consumer(&self, name: &str, record: &ConsumerRecord) -> StoreResult<()> {
        self.inner
            .consumers
            .insert(name.as_bytes(), codec::encode(record)?)?;
        Ok(())
    }
}

impl Store {
    /// Up to `limit` committed events after `position` (all when `None`), in
    /// ID order, across segments.
    pub fn events_after(
        &self,
        position: Option<EventId>,
        limit: usize,
    ) -> StoreResult<Vec<ScanEvent>> {
        let mut out = Vec::with_capacity(limit.min(4096));
        for body in self.segments_from(position)? {
            let body = body?;
            let seg = Segment::parse(&body)?;
            for pos in first_after(&seg, position)..seg.len() {
                if out.len() == limit {
                    return Ok(out);
                }
                out.push(seg.event(pos)?);
            }
        }
        Ok(out)
    }

    /// How many committed events come after `position`, read from segment
    /// headers only.
    pub fn count_events_after(&self, position: Option<EventId>) -> StoreResult<u64> {
        let mut n = 0u64;
        for body in self.segments_from(position)? {
            let body = body?;
            let seg = Segment::parse(&body)?;
            n += (seg.len() - first_after(&seg, position)) as u64;
        }
        Ok(n)
    }

    /// The bodies of the segments in ID order, from the one holding
    /// `position` on. A segment whose body is lost (see `bodies.rs`) is
    /// skipped.
    fn segments_from(
        &self,
        position: Option<EventId>,
    ) -> StoreResult<impl Iterator<Item = StoreResult<Body>> + '_> {
        let events = &self.inner.events;
        let start = match position {
            // The segment holding `p` starts at or before it.
            Some(p) => match events.range(..=&p.as_bytes()[..]).next_back().transpose()? {
                Some((key, _)) => Bound::Included(key),
                None => Bound::Unbounded,
            },
            None => Bound::Unbounded,
        };
        Ok(events
            .range::<sled::IVec, _>((start, Bound::Unbounded))
            .filter_map(move |entry| {
                let read = || -> StoreResult<Option<Body>> {
                    let (key, raw) = entry?;
                    match self.body(raw)? {
                        Some(body) => Ok(Some(body)),
                        None => Ok(self.segment(&key)?.map(|s| s.body)),
                    }
                };
                read().transpose()
            }))
    }
}

/// The first position in `seg` after `position`.
fn first_after(seg: &Segment, position: Option<EventId>) -> usize {
    let Some(p) = position else {
        return 0;
    };
    // IDs ascend within a segment: binary search for the first one after `p`.
    let (mut lo, mut hi) = (0, seg.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if seg.id(mid) <= p {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

impl Store {
    /// Every stored consumer record, by name.
    pub fn consumers(&self) -> StoreResult<Vec<(String, ConsumerRecord)>> {
        self.inner
            .consumers
            .iter()
            .map(|entry| {
                let (name, value) = entry?;
                Ok((
                    String::from_utf8_lossy(&name).into_owned(),
                    codec::decode(&value)?,
                ))
            })
            .collect()
    }
}
