//! The actors of docs/DESIGN.md, one file each, with the messages they
//! handle. Every background worker has the one shape of `worker.rs`: timers
//! are `periodic.rs` tasks, readers of committed events are `consumer.rs`
//! consumers.

pub mod consumer;
pub mod counters;
pub mod delivery;
pub mod flusher;
pub mod geo_reloader;
pub mod limit_pruner;
pub mod pacing;
pub mod periodic;
pub mod purger;
pub mod recorder;
pub mod registry;
pub mod resolver;
pub mod salts;
pub mod threads;
pub mod visitors;
pub mod webhooks;
pub mod worker;

pub use consumer::{Consumer, ConsumerStarter, ConsumerWorker, StartedConsumer};
pub use recorder::{RecordError, RecordOutcome, Recorder, RecorderHandle, ScansCommitted};
pub use resolver::{CreateLink, DeleteLink, LinkCache, LinkWriteError, Resolver, UpdateLink};
pub use worker::{Drain, DrainReport, Stage, WorkerHandle, Workers};
