//! The actors of docs/DESIGN.md, one file each, with the messages they handle.

pub mod recorder;
pub mod resolver;

pub use recorder::{Drain, RecordError, RecordOutcome, Recorder, RecorderHandle, ScansCommitted};
pub use resolver::{CreateLink, DeleteLink, LinkCache, LinkWriteError, Resolver, UpdateLink};
