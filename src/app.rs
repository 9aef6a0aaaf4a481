//! Builds the actors and the HTTP server in one place, runs it, and shuts it
//! down in order: stop accepting, finish requests in flight, drain the
//! Recorder, flush sled. Tests build the same `Application` on port 0.

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
use crate::actors::{Drain, Recorder, Resolver};
use crate::config::{Durability, Settings};
use crate::enrich::Enricher;
use crate::enrich::geo::{GeoDatabases, GeoError};
use crate::http::{self, AppState, request_id};
use crate::metrics::Metrics;
use crate::store::{Flusher, Store, StoreError};

/// How long the Recorder gets to commit what is queued at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

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
    flusher: Option<Flusher>,
    first_token: Option<String>,
    geo: Arc<GeoDatabases>,
}

impl Application {
    /// Opens the store, starts the actors and binds the server (not yet running).
    pub fn build(settings: Settings) -> Result<Application, StartupError> {
        let listener =
            TcpListener::bind(settings.server.bind).map_err(|source| StartupError::Bind {
                addr: settings.server.bind.to_string(),
                source,
            })?;
        let port = listener
            .local_addr()
            .map_err(|source| StartupError::Bind {
                addr: settings.server.bind.to_string(),
                source,
            })?
            .port();
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
        let metrics = Arc::new(Metrics::default());
        let (resolver, links) = Resolver::new(
            store.clone(),
            settings.resolver.mailbox_capacity,
            metrics.clone(),
        )?;
        let recorder = Recorder::start(
            store.last_event_id()?,
            store.clone(),
            &settings.recorder,
            settings.storage.durability,
            Vec::new(),
            metrics.clone(),
        );
        let flusher = (settings.storage.durability == Durability::Batched).then(|| {
            let m = metrics.clone();
            Flusher::start(
                store.clone(),
                Duration::from_millis(settings.storage.flush_interval_ms),
                move |d| m.flush_seconds.observe(d),
            )
        });
        let enricher = Arc::new(Enricher::new(store.clone(), geo.clone())?);
        let limits = http::ratelimit::RateLimits::new(&settings);
        let openapi = http::openapi::document();
        let state = web::Data::new(AppState {
            resolver: actix::Actor::start(resolver),
            settings: Arc::new(settings),
            store,
            links,
            recorder,
            enricher,
            metrics,
            draining: Arc::new(AtomicBool::new(false)),
            limits,
            openapi_json: serde_json::to_string(&openapi).unwrap_or_default(),
            docs_html: http::docs_page::render(&serde_json::to_value(&openapi).unwrap_or_default()),
        });
        let server = Self::http_server(state.clone(), listener)?;
        Ok(Application {
            server,
            port,
            state,
            flusher,
            first_token,
            geo,
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

    pub fn settings(&self) -> &Settings {
        &self.state.settings
    }

    /// Serves until `shutdown` resolves, then shuts down in order.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let handle = self.server.handle();
        let draining = self.state.draining.clone();
        let server = actix_rt::spawn(self.server);
        let pruner = {
            let state = self.state.clone();
            actix_rt::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tick.tick().await;
                    state.limits.prune();
                }
            })
        };
        let reloader = actix_rt::spawn(watch_geoip(
            self.geo.clone(),
            self.state.settings.geoip.reload_interval_ms,
        ));
        shutdown.await;
        tracing::info!("shutting down: no new connections, finishing requests in flight");
        draining.store(true, Ordering::Release);
        reloader.abort();
        pruner.abort();
        handle.stop(true).await;
        let served = server.await;
        let left = self
            .state
            .recorder
            .addr()
            .send(Drain {
                timeout: DRAIN_TIMEOUT,
            })
            .await
            .unwrap_or(usize::MAX);
        if let Some(f) = self.flusher {
            f.stop();
        }
        if let Err(e) = self.state.store.flush() {
            tracing::error!(error = %e, "final flush failed");
        }
        tracing::info!(uncommitted = left, "stopped");
        match served {
            Ok(result) => result,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

/// Reloads the GeoIP databases on SIGHUP (all of them) and, every
/// `interval_ms`, those whose file changed. Reads run off the arbiter.
async fn watch_geoip(geo: Arc<GeoDatabases>, interval_ms: u64) {
    use tokio::signal::unix::{SignalKind, signal};
    if !geo.is_configured() {
        return;
    }
    let mut hangup = signal(SignalKind::hangup()).ok();
    let mut tick =
        (interval_ms > 0).then(|| tokio::time::interval(Duration::from_millis(interval_ms)));
    loop {
        let force = tokio::select! {
            Some(_) = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => true,
            _ = async {
                match tick.as_mut() {
                    Some(t) => t.tick().await,
                    None => std::future::pending().await,
                }
            } => false,
        };
        let geo = geo.clone();
        let _ = actix_web::rt::task::spawn_blocking(move || geo.reload(force)).await;
    }
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
