//! The background fsync of `batched` durability: a plain thread that flushes
//! sled every `flush_interval_ms` and stops when its handle is dropped or
//! stopped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Store;

pub struct Flusher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    /// Starts flushing `store` every `interval`; `observe` gets each flush's duration.
    pub fn start(
        store: Store,
        interval: Duration,
        observe: impl Fn(Duration) + Send + 'static,
    ) -> Flusher {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("scanhop-flusher".into())
            .spawn(move || {
                while !stop_flag.load(Ordering::Acquire) {
                    std::thread::sleep(interval);
                    let started = Instant::now();
                    match store.flush() {
                        Ok(_) => observe(started.elapsed()),
                        Err(e) => tracing::error!(error = %e, "background flush failed"),
                    }
                }
            })
            .ok();
        if thread.is_none() {
            tracing::error!(
                "could not start the flusher thread; durability falls back to sled's own flushing"
            );
        }
        Flusher { stop, thread }
    }

    /// Stops the thread after its current sleep and flush.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
