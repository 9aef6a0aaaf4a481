//! scanhop: self-hosted dynamic QR codes and short links with
//! privacy-preserving scan analytics. See docs/DESIGN.md for the architecture.

pub mod accounts;
pub mod actors;
pub mod app;
pub mod clock;
pub mod config;
pub mod domain;
pub mod enrich;
pub mod export;
pub mod http;
pub mod ids;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod qr;
pub mod random;
pub mod store;
