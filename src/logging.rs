//! The process's log subscriber: `log.level` as a tracing filter, text or
//! JSON lines, written by a background thread so a request never waits on
//! the terminal or a pipe.

use std::io::Write;

use crate::config::{LogFormat, LogSettings};

/// Installs the subscriber for the whole process, writing to `sink`; the
/// guard flushes what is queued when it is dropped (at exit). Fails when a
/// subscriber is installed already.
pub fn init(
    settings: &LogSettings,
    sink: impl Write + Send + 'static,
) -> Result<tracing_appender::non_blocking::WorkerGuard, Box<dyn std::error::Error + Send + Sync>> {
    let filter =
        tracing_subscriber::EnvFilter::try_new(&settings.level).unwrap_or_else(|_| "info".into());
    let (writer, guard) = tracing_appender::non_blocking(sink);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match settings.format {
        LogFormat::Json => builder.json().try_init()?,
        LogFormat::Text => builder.with_ansi(false).try_init()?,
    }
    Ok(guard)
}
