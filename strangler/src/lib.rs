//! The strangler router: the one place where traffic moves from the legacy
//! monolith to new services, one route and one cohort at a time.
//!
//! Pattern: strangler fig — docs/patterns/strangler-fig.md.
//!
//! The source is in layers, each depending only on the ones below it
//! (`strangler/tests/layers.rs` checks it):
//!
//! ```text
//! admin      the admin API and dashboard on the admin port
//!   │
//! control    the single writer of the route table: store, rollbacks, mismatches
//!   │
//! data       the data plane: server, proxy, table, backends, upstream pool,
//!   │        guard, shadow, and the edge's rules (forwarding, body)
//!   │
//! settings · observe   configuration; metrics and per-route statistics
//!   │
//! model      pure: lifecycle, cohorts, paths, plans, policies, diffs, records
//! ```
//!
//! Where to start reading:
//!
//! - [`model::lifecycle`]: the states a route goes through and the legal
//!   moves; [`model::plan`] for the plan files under `infra/routes/`.
//! - [`data::table`]: the route table the proxy reads (an immutable
//!   snapshot) and how one request is decided; [`model::cohort`] for sticky
//!   canary buckets.
//! - [`data::proxy`] and [`data::server`]: the data plane on the public
//!   port; [`data::backends`] and [`data::upstream`] for the connections to
//!   the backends; at the edge, [`model::path`] (canonical paths),
//!   [`data::forwarding`] (the headers a backend sees) and [`data::body`]
//!   (request bodies and whose fault a failure is).
//! - [`control`]: the single writer that changes the table, with
//!   [`control::store`] persisting states and the audit log in PostgreSQL.
//! - [`admin`]: the admin API and dashboard on the admin port.
//! - The safety net: [`data::shadow`] (copies of safe requests compared with
//!   [`model::diff`]), [`data::guard`] and [`control::rollback`] (automatic
//!   rollback), and the breaker and fallback in [`data::proxy`].

pub mod admin;
pub mod control;
pub mod data;
pub mod model;
pub mod observe;
pub mod settings;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;

use chassis::db::PostgresCheck;
use chassis::http::Service;
use tokio::sync::{mpsc, watch};

use admin::AdminState;
use admin::auth::{Attempts, Sessions, Tokens};
use control::Control;
use control::store::Store;
use data::forwarding::TrustedProxies;
use data::keyed::KeyedWrites;
use data::proxy::{self, Proxy};
use data::server::{self, Listeners};
use data::shadow::Shadower;
use model::records::{Mismatch, Trip};
use observe::metrics::ProxyMetrics;
use settings::{ProxySettings, Settings};

/// The strangler, bound to its two ports and ready to serve.
#[derive(Debug)]
pub struct Application {
    public: Listeners,
    admin: chassis::Application,
    /// One per proxy worker: each has its own connection pool.
    proxies: Vec<Arc<Proxy>>,
    proxy_settings: ProxySettings,
    control: Arc<Control>,
    metrics: ProxyMetrics,
    /// Trips of the routes' guards, for the rollback task.
    trips: mpsc::UnboundedReceiver<Trip>,
    /// For the pending trips the periodic check finds (other instances').
    resumed_trips: data::guard::Trips,
    /// Shadow mismatches, for the task that stores them.
    mismatches: mpsc::Receiver<Mismatch>,
}

impl Application {
    /// Connects to the database, loads the route table and binds both ports.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let pool = settings.database.pool()?;
        let mut service = Service::new();
        let metrics = ProxyMetrics::register(service.registry_mut());
        let control = Arc::new(
            Control::start(
                Store::new(pool.clone()),
                &settings.plan,
                settings.backends.clone(),
                settings.proxy.backend_policy(),
                metrics.clone(),
                std::time::Duration::from_millis(settings.recheck_ms.max(1)),
            )
            .await?,
        );
        let public_addr = SocketAddr::new(settings.http.host, settings.http.port);
        let public = Listeners::bind(public_addr, settings.proxy.worker_count())
            .with_context(|| format!("binding the public port {public_addr}"))?;
        let (shadower, mismatches) = Shadower::new(
            settings.proxy.shadow_max_in_flight,
            settings.proxy.shadow_body_limit_bytes,
            metrics.clone(),
        );
        let shadower = Arc::new(shadower);
        let trusted = TrustedProxies::parse(&settings.proxy.trusted_proxies)
            .map_err(|e| anyhow::anyhow!("STRANGLER_PROXY__TRUSTED_PROXIES: {e}"))?;
        let (trip_sender, trips) = mpsc::unbounded_channel();
        for trip in control.resume_trips().await? {
            // The receiver is in `trips`, a few lines up: it cannot be closed.
            let _ = trip_sender.send(trip);
        }
        let held_bytes = Arc::new(tokio::sync::Semaphore::new(
            settings
                .proxy
                .replay_memory_limit_bytes
                .min(tokio::sync::Semaphore::MAX_PERMITS),
        ));
        let shared = proxy::Shared {
            table: control.table(),
            held_bytes,
            trusted: trusted.clone(),
            tester_token: settings.tester_token.clone(),
            metrics: metrics.clone(),
            shadow: shadower,
            trips: trip_sender.clone(),
            keyed: {
                let (remembered, evicted) = metrics.keyed_writes();
                Arc::new(KeyedWrites::new(
                    std::time::Duration::from_secs(settings.proxy.keyed_write_memory_secs),
                    settings.proxy.keyed_write_memory_entries,
                    remembered,
                    evicted,
                ))
            },
        };
        let proxies: Vec<Arc<Proxy>> = (0..public.len())
            .map(|_| Arc::new(Proxy::new(&settings.proxy, shared.clone())))
            .collect();
        service
            .registry_mut()
            .sub_registry_with_prefix("strangler")
            .register_collector(Box::new(data::gauges::BackendGauges {
                table: control.table(),
                upstreams: proxies.iter().map(|p| p.upstream().clone()).collect(),
            }));
        let tokens = Tokens::new(&settings.admin.tokens);
        if tokens.is_empty() {
            tracing::warn!(
                "no admin tokens configured (STRANGLER_ADMIN__TOKENS__<NAME>): the admin API and dashboard refuse everyone"
            );
        }
        let state = AdminState {
            control: Arc::clone(&control),
            tokens: Arc::new(tokens),
            sessions: Arc::new(Sessions::new(settings.admin.secure_cookie)),
            attempts: Arc::new(Attempts::new(settings.admin.login_attempts_per_minute)),
            trusted: Arc::new(trusted.clone()),
            public_origin: settings
                .admin
                .public_origin
                .as_deref()
                .map(str::trim)
                .filter(|origin| !origin.is_empty())
                .map(|origin| {
                    admin::auth::normal_origin(origin).ok_or_else(|| {
                        anyhow::anyhow!(
                            "STRANGLER_ADMIN__PUBLIC_ORIGIN {origin:?} is not an origin like https://admin.example"
                        )
                    })
                })
                .transpose()?,
        };
        let service = service
            .routes(admin::router(state))
            .readiness_check(PostgresCheck::new(pool));
        let admin = chassis::Application::build(&settings.admin.http, service).await?;
        Ok(Self {
            public,
            admin,
            proxies,
            proxy_settings: settings.proxy,
            control,
            metrics,
            trips,
            resumed_trips: trip_sender,
            mismatches,
        })
    }

    /// The public (proxy) port.
    pub fn port(&self) -> u16 {
        self.public.address().port()
    }

    pub fn admin_port(&self) -> u16 {
        self.admin.port()
    }

    pub fn control(&self) -> Arc<Control> {
        Arc::clone(&self.control)
    }

    /// Serves both ports until `shutdown` completes, then drains both.
    pub async fn run_until_stopped<F>(self, shutdown: F) -> anyhow::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop.send(true);
        });
        tracing::info!(address = %self.public.address(), workers = self.public.len(), "proxy listening");
        // Stores trips until the proxies (its senders) are gone, after the
        // drain; its rollbacks stop being retried when the strangler stops.
        let rollbacks = tokio::spawn(control::rollback::run(
            Arc::clone(&self.control),
            self.trips,
            self.metrics,
            stopped.clone(),
        ));
        tokio::spawn(Control::follow(
            Arc::clone(&self.control),
            self.resumed_trips,
            stopped.clone(),
        ));
        // Ends when the proxies (its senders) are gone.
        tokio::spawn(control::mismatches::record(
            self.control.store().clone(),
            self.mismatches,
            self.proxy_settings.mismatches_kept,
        ));
        let workers =
            server::spawn_workers(self.public, self.proxies, &self.proxy_settings, &stopped)?;
        let mut admin_stopped = stopped;
        let admin = self.admin.run_until_stopped(async move {
            let _ = admin_stopped.wait_for(|stop| *stop).await;
        });
        let public = async {
            for worker in workers {
                // An error means the worker thread ended early (it logged why).
                let _ = worker.await;
            }
        };
        let (admin, ()) = tokio::join!(admin, public);
        // The workers have drained: wait until the trips they raised
        // meanwhile are stored. A rollback not yet written is left to the
        // next start.
        let _ = rollbacks.await;
        admin?;
        Ok(())
    }
}
