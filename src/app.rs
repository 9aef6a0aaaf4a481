//! Builds the workers and the HTTP server in one place, runs it, and shuts it
//! down in order: `/readyz` turns 503, stop accepting, finish requests in
//! flight, drain the workers stage by stage (docs/DESIGN.md, "One worker
//! shape"), flush sled. Tests build the same `Application` on port 0.

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use utoipa_actix_web::AppExt;

use crate::accounts;
use crate::actors::counters::{CounterView, Counters};
use crate::actors::delivery::DeliveryWorker;
use crate::actors::flusher::Flusher;
use crate::actors::geo_reloader::GeoReloader;
use crate::actors::limit_pruner::LimitPruner;
use crate::actors::periodic::Periodic;
use crate::actors::purger::{Bound, Purger};
use crate::actors::registry::VisitorRegistry;
use crate::actors::salts::SaltRotation;
use crate::actors::threads;
use crate::actors::visitors::{VisitorView, Visitors};
use crate::actors::webhooks::{WebhookHub, Webhooks};
use crate::actors::{ConsumerStarter, Recorder, Resolver, Stage, Workers};
use crate::clock::Clock;
use crate::config::Settings;
use crate::enrich::Enricher;
use crate::enrich::geo::{GeoDatabases, GeoError};
use crate::enrich::privacy::SaltBook;
use crate::http::pagination::PageTokenKey;
use crate::http::{self, AppState, request_id};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot create the first workspace: {0}")]
    Bootstrap(#[from] accounts::AccountError),
    #[error(transparent)]
    Geo(#[from] GeoError),
}

pub struct Application {
    server: Server,
    port: u16,
    state: web::Data<AppState>,
    first_token: Option<String>,
}

impl Application {
    /// Opens the store, starts the workers and binds the server (not yet running).
    pub fn build(settings: Settings) -> Result<Application, StartupError> {
        Self::build_with(settings, Vec::new())
    }

    /// Like `build`, with extra consumers of committed scan events (see
    /// `actors::consumer`) woken by the Recorder alongside the built-in ones.
    pub fn build_with(
        settings: Settings,
        consumers: Vec<ConsumerStarter>,
    ) -> Result<Application, StartupError> {
        let (listener, port) = bind(&settings)?;
        let geo = Arc::new(GeoDatabases::open(
            &settings.geoip.city_db,
            &settings.geoip.asn_db,
        )?);
        let store = Store::open(&settings.storage.path, settings.storage.cache_capacity_mb)?;
        let first_token = if store.has_workspaces()? {
            None
        } else {
            let (_, token) = accounts::create_workspace(&store, &settings, "default", None)?;
            Some(token.expose().to_owned())
        };
        let settings = Arc::new(settings);
        let metrics = Arc::new(Metrics::default());
        let mut workers = Workers::default();
        let (resolver, links, handle) =
            Resolver::start(store.clone(), &settings.resolver, metrics.clone());
        workers.add(handle);
        let counters = CounterView::new(store.clone());
        let webhooks = WebhookHub::load(store.clone(), settings.clone(), metrics.clone())?;
        let mut downstream = Vec::with_capacity(consumers.len() + 3);
        let visitors = VisitorView::new(store.clone());
        let builtin = [
            Counters::starter(counters.clone(), settings.counters.clone()),
            Visitors::starter(visitors.clone(), settings.visitors.clone()),
            Webhooks::starter(webhooks.clone()),
        ];
        for start in builtin.into_iter().chain(consumers) {
            let started = start(&store)?;
            downstream.push(started.wake);
            workers.add(started.handle);
        }
        let registry = Arc::new(VisitorRegistry::new(
            store.clone(),
            settings.privacy.fingerprint_scope,
            settings.privacy.visitor_cache_entries,
        ));
        workers.add(DeliveryWorker::start(webhooks.clone()));
        let enricher = Arc::new(Enricher::new(geo.clone()));
        // On its own thread while the rest starts; joined before serving.
        let agents = enricher.agents();
        let warming = std::thread::Builder::new()
            .name("agent-warm-up".into())
            .spawn(move || agents.warm_up());
        let (recorder, handle) = Recorder::start(
            store.clone(),
            &settings.recorder,
            settings.storage.durability,
            downstream,
            registry.clone(),
            enricher.agents(),
            metrics.clone(),
        )?;
        workers.add(handle);
        let salts = Arc::new(SaltBook::default());
        let limits = Arc::new(http::ratelimit::RateLimits::new(&settings));
        start_maintenance(
            &mut workers,
            &settings,
            &store,
            &geo,
            &salts,
            &limits,
            &metrics,
        );
        let page_tokens = PageTokenKey::new(&store.secret(PageTokenKey::SECRET_NAME)?);
        let store_for_key: [u8; 32] = store.secret(http::form::TOKEN_KEY_NAME)?;
        let openapi = http::openapi::document();
        let state = web::Data::new(AppState {
            clock: Clock::default(),
            resolver,
            settings,
            store,
            links,
            recorder,
            counters,
            registry,
            visitors,
            webhooks,
            enricher,
            salts,
            metrics,
            workers: Arc::new(workers),
            draining: Arc::new(AtomicBool::new(false)),
            limits,
            page_tokens,
            form_key: store_for_key,
            openapi_json: serde_json::to_string(&openapi).unwrap_or_default(),
            docs_html: http::docs_page::render(&serde_json::to_value(&openapi).unwrap_or_default()),
            allow: http::allow::AllowTable::from_document(&openapi),
        });
        let server = Self::http_server(state.clone(), listener)?;
        match warming.map(std::thread::JoinHandle::join) {
            Ok(Ok(())) => {}
            // The parsers' fixed rules failed to compile: as on a first scan.
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => state.enricher.agents().warm_up(),
        }
        Ok(Application {
            server,
            port,
            state,
            first_token,
        })
    }

    fn http_server(
        state: web::Data<AppState>,
        listener: TcpListener,
    ) -> Result<Server, StartupError> {
        let settings = state.settings.clone();
        let limit = settings.server.body_limit_bytes;
        let mut server = HttpServer::new(move || {
            let (app, _) = http::documented(App::new().into_utoipa_app()).split_for_parts();
            app.app_data(state.clone())
                .wrap(from_fn(request_id::middleware))
                .configure(|cfg| http::configure(cfg, limit))
        })
        .disable_signals()
        .shutdown_timeout(settings.server.shutdown_timeout_secs);
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        let addr = settings.server.bind.to_string();
        Ok(server
            .listen(listener)
            .map_err(|source| StartupError::Bind { addr, source })?
            .run())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The secret token of the `default` workspace made on first start.
    pub fn first_token(&self) -> Option<&str> {
        self.first_token.as_deref()
    }

    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// The redirect's clock, which tests may move.
    pub fn clock(&self) -> Clock {
        self.state.clock.clone()
    }

    pub fn settings(&self) -> &Settings {
        &self.state.settings
    }

    /// A Purger like the server's own: the same store, settings, metrics and
    /// consumers. Tests run passes with it at a time of their choosing.
    pub fn purger(&self) -> Purger {
        new_purger(
            &self.state.store,
            &self.state.settings,
            &self.state.workers,
            &self.state.metrics,
        )
    }

    /// Serves until `shutdown` resolves, then shuts down in order.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let handle = self.server.handle();
        let server = actix_rt::spawn(self.server);
        shutdown.await;
        let state = self.state;
        state.draining.store(true, Ordering::Release);
        let grace = state.settings.server.drain_grace_ms;
        if grace > 0 {
            tracing::info!(
                grace_ms = grace,
                "shutting down: /readyz answers 503, still serving"
            );
            tokio::time::sleep(Duration::from_millis(grace)).await;
        }
        tracing::info!("shutting down: no new connections, finishing requests in flight");
        handle.stop(true).await;
        let served = server.await;
        let per_stage = Duration::from_secs(state.settings.server.drain_timeout_secs);
        let report = state.workers.drain(per_stage).await;
        let left: u64 = report.iter().map(|(_, n)| *n).fold(0, u64::saturating_add);
        if let Err(e) = state.store.flush() {
            tracing::error!(error = %e, "final flush failed");
        }
        // The slug file is a clean copy now: the next start takes it as it is.
        if let Err(e) = state.store.seal() {
            tracing::warn!(error = %e, "could not mark the slug file clean: the next start rebuilds it");
        }
        state.workers.stop_threads();
        tracing::info!(left, "stopped");
        match served {
            Ok(result) => result,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

fn bind(settings: &Settings) -> Result<(TcpListener, u16), StartupError> {
    let err = |source| StartupError::Bind {
        addr: settings.server.bind.to_string(),
        source,
    };
    let listener = TcpListener::bind(settings.server.bind).map_err(err)?;
    let port = listener.local_addr().map_err(err)?.port();
    Ok((listener, port))
}

/// The timers: each a `Periodic` worker with its interval from config. The
/// flusher and the Purger get a thread of their own (an fsync, or a pass
/// rewriting segments, may take a while); the others share one. The Purger
/// never deletes past the positions of the consumers started before it.
fn start_maintenance(
    workers: &mut Workers,
    settings: &Settings,
    store: &Store,
    geo: &Arc<GeoDatabases>,
    salts: &Arc<SaltBook>,
    limits: &Arc<http::ratelimit::RateLimits>,
    metrics: &Arc<Metrics>,
) {
    let ms = Duration::from_millis;
    let arbiter = threads::background_arbiter("periodic").handle();
    workers.add(Periodic::start(
        SaltRotation::new(store.clone(), salts.clone()),
        ms(settings.privacy.salt_rotation_interval_ms),
        &arbiter,
    ));
    workers.add(Periodic::start(
        LimitPruner::new(limits.clone()),
        ms(settings.server.rate_limit_prune_interval_ms),
        &arbiter,
    ));
    if geo.is_configured() {
        workers.add(Periodic::start(
            GeoReloader::new(geo.clone()),
            ms(settings.geoip.reload_interval_ms),
            &arbiter,
        ));
    }
    workers.add(Periodic::start(
        new_purger(store, settings, workers, metrics),
        ms(settings.retention.purge_interval_ms),
        &threads::background_arbiter("purger").handle(),
    ));
    // Both modes: strict flushes each batch of scans, the Flusher everything
    // else (API writes, the workers' output), which sled does not fsync.
    workers.add(Periodic::start(
        Flusher::new(store.clone(), metrics.clone()),
        ms(settings.storage.flush_interval_ms),
        &threads::named_arbiter("flusher").handle(),
    ));
}

/// The Purger, bound by the positions of the consumers started so far.
fn new_purger(
    store: &Store,
    settings: &Settings,
    workers: &Workers,
    metrics: &Arc<Metrics>,
) -> Purger {
    let consumers = workers
        .names(Stage::Consumers)
        .into_iter()
        .map(str::to_owned)
        .collect();
    Purger::new(
        store.clone(),
        settings.clone(),
        Bound::Consumers(consumers),
        metrics.clone(),
    )
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn termination_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            std::future::pending::<()>().await
        }
    }
}
