//! All integration tests, one binary: each module is one capability, told as a
//! client's story through real HTTP.

mod helpers;
mod powercut;

mod analytics;
mod architecture;
mod auth;
mod bot_corpus;
mod cli;
mod docs_page;
mod durability;
mod enrichment;
mod events;
mod export;
mod forms;
mod link_cache;
mod links;
mod logs;
mod malformed;
mod mmdb;
mod openapi;
mod ops;
mod page_tokens;
mod proxies;
mod qr;
mod ratelimit;
mod redirect;
mod retention;
mod visitors;
mod webhooks;
mod workers;
mod workspace;
