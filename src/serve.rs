//! `cascade serve`: runs the chosen roles in one process.
//!
//! Every role shares the process's config, Postgres pool and object store.
//! One HTTP listener serves the routes of the enabled roles plus health. One
//! cancellation token, fired by SIGTERM or SIGINT, stops everything: the
//! listener stops accepting and drains, workers stop claiming and finish or
//! release their jobs.

use std::collections::BTreeSet;
use std::str::FromStr;

use anyhow::Context;
use axum::Router;
use cascade_platform::metrics::Registry;
use cascade_platform::playback_token::Keyring;
use cascade_platform::queue::JobNotifier;
use cascade_platform::queue_metrics::QueueGauges;
use cascade_platform::storage::tiers::Tiers;
use cascade_platform::{db, Config, ObjectStore, Queue};
use cascade_schemas::job_kind;
use cascade_workers::metrics::WorkerMetrics;
use cascade_workers::noop::NoopHandler;
use cascade_workers::transcode::{self, TranscodeHandler};
use cascade_workers::webhooks::WebhookHandler;
use cascade_workers::{HandlerRegistry, Runner};
use clap::Args;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{health, http_server};

/// A part of Cascade that `serve` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// The creators' API and uploads.
    Ingest,
    /// Job runners (transcode, webhooks, purges, broadcast endings).
    Workers,
    /// The playback origin.
    Origin,
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "ingest" => Ok(Self::Ingest),
            "workers" | "worker" => Ok(Self::Workers),
            "origin" => Ok(Self::Origin),
            other => Err(format!(
                "unknown role {other:?} (roles: ingest, workers, origin)"
            )),
        }
    }
}

/// Arguments of `cascade serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Roles to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "ingest,workers,origin")]
    roles: Vec<Role>,
    /// The `--config` file this process loaded (its probe children load it too).
    #[arg(skip)]
    pub config_file: Option<std::path::PathBuf>,
}

impl ServeArgs {
    /// Whether this process encodes video itself: live ladders run in the
    /// ingest replica holding the publisher's connection, and a worker
    /// transcodes in-process unless `transcode.isolate` puts each job in a
    /// child.
    pub fn encodes_video(&self, config: &Config) -> bool {
        self.roles.contains(&Role::Ingest)
            || (self.roles.contains(&Role::Workers) && !config.transcode.isolate)
    }
}

/// Uploads are probed in children of this very binary (`cascade
/// probe-source`), with the same config.
pub(crate) fn probe_children(
    config_file: Option<&std::path::Path>,
    config: &Config,
) -> anyhow::Result<cascade_workers::probe::ChildProber> {
    let program = std::env::current_exe().context("finding this executable")?;
    let limit = config.ingest.probe_memory_limit.0;
    Ok(cascade_workers::probe::ChildProber::new(
        program,
        config_file_args(config_file),
        config.ingest.probe_timeout,
        (limit > 0).then_some(limit),
    ))
}

/// `--config FILE` when this process loaded one, for its children.
fn config_file_args(config_file: Option<&std::path::Path>) -> Vec<std::ffi::OsString> {
    config_file
        .iter()
        .flat_map(|file| {
            [
                std::ffi::OsString::from("--config"),
                file.as_os_str().to_owned(),
            ]
        })
        .collect()
}

/// Fires the token on SIGTERM or SIGINT.
fn shutdown_on_signals(token: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
            _ = int.recv() => tracing::info!(signal = "SIGINT", "shutting down"),
        }
        token.cancel();
    });
    Ok(())
}

/// `public_url` with `port` in place of a port 0 (`http://127.0.0.1:0`
/// means "wherever the listener was bound"); `None` when it names a port.
fn with_bound_port(public_url: &str, port: u16) -> Option<String> {
    let mut url = reqwest::Url::parse(public_url).ok()?;
    if url.port() != Some(0) {
        return None;
    }
    url.set_port(Some(port)).ok()?;
    Some(url.as_str().trim_end_matches('/').to_owned())
}

/// A name for this worker process, shown to operators on its leases.
fn worker_owner() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown-host".to_owned());
    format!("{host}:{}", std::process::id())
}

/// Runs until a signal arrives and everything has stopped.
pub async fn serve(args: ServeArgs, mut config: Config) -> anyhow::Result<()> {
    let roles: BTreeSet<Role> = args.roles.into_iter().collect();
    // Bound first, so that a public URL with port 0 can name the port this
    // listener got (tests and ad-hoc runs bind port 0 and read it back).
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("binding http.listen {}", config.http.listen))?;
    let local = listener.local_addr()?;
    if let Some(resolved) = with_bound_port(&config.ingest.public_url, local.port()) {
        config.ingest.public_url = resolved;
    }
    // `shutdown` stops the roles at the signal; the HTTP listener stops
    // `http.drain_delay` later (`listener_stop`), /readyz answering 503
    // meanwhile so load balancers stop sending first.
    let shutdown = CancellationToken::new();
    shutdown_on_signals(shutdown.clone())?;
    let listener_stop = CancellationToken::new();
    {
        let (signalled, stop, delay) = (
            shutdown.clone(),
            listener_stop.clone(),
            config.http.drain_delay,
        );
        tokio::spawn(async move {
            signalled.cancelled().await;
            if !delay.is_zero() {
                tracing::info!(drain_delay = ?delay, "draining: /readyz answers 503 before the listener closes");
                tokio::time::sleep(delay).await;
            }
            stop.cancel();
        });
    }
    let mut registry = Registry::default();
    cascade_platform::metrics::register_build_info(&mut registry, env!("CARGO_PKG_VERSION"));
    cascade_platform::metrics::register_process(&mut registry);

    let pool = db::pool(&config.database)?;
    if config.database.migrate_on_start {
        let applied = db::migrate(&pool).await.context("migrating the database")?;
        if !applied.is_empty() {
            tracing::info!(versions = ?applied, "database migrated");
        }
    }
    let store = ObjectStore::from_config(&config.storage)
        .await
        .context("opening the object store")?;
    tracing::info!(store = %store.describe(), "object store ready");
    let tiers = Tiers::with_hot(&config.storage, store.clone())
        .await
        .context("opening the storage tiers")?;
    for tier in &tiers.all()[1..] {
        tracing::info!(tier = %tier.name, store = %tier.store.describe(), "storage tier ready");
    }
    let queue = Queue::new(pool.clone(), config.queue.clone());

    let mut tasks = JoinSet::new();
    let worker_metrics = WorkerMetrics::default();
    // The processes that use the queue sample it; origins do not add load
    // on Postgres for figures they have no part in.
    let uses_queue = roles.contains(&Role::Ingest) || roles.contains(&Role::Workers);
    if config.metrics.enabled && uses_queue {
        let gauges = QueueGauges::register(&mut registry);
        let (queue, every, token) = (
            queue.clone(),
            config.metrics.queue_sample_interval,
            shutdown.clone(),
        );
        tasks.spawn(async move {
            gauges.run(queue, every, token).await;
            Ok(())
        });
    }
    if roles.contains(&Role::Workers) {
        let notifier = JobNotifier::start(db::pg_config(&config.database)?, shutdown.clone());
        let (encoder, unavailable) = tokio::task::spawn_blocking({
            let choice = config.transcode.encoder;
            move || transcode::resolve_encoder(choice)
        })
        .await
        .context("probing encoders")?;
        for reason in &unavailable {
            tracing::info!(reason = %reason, "hardware encoder not available");
        }
        tracing::info!(encoder = %encoder, "video encoder selected");
        let cdn = cascade_workers::cdn_purge::CdnPurger::new(&config.cdn)
            .context("building the CDN purge client")?;
        // One gate for transcoded versions and live recordings.
        let publish_gate: std::sync::Arc<dyn cascade_workers::transcode::gate::PublishGate> =
            std::sync::Arc::new(crate::qa_gate::QaGate::new(
                store.clone(),
                &config.transcode,
            ));
        let mut transcode = TranscodeHandler::new(
            pool.clone(),
            store.clone(),
            config.transcode.clone(),
            encoder,
        )
        .with_metrics(worker_metrics.clone())
        .with_chunks(queue.clone())
        .with_gate(publish_gate.clone());
        if config.transcode.isolate {
            let limit = config.transcode.child_memory_limit.0;
            transcode = transcode.with_child(transcode::ChildTranscoder::new(
                std::env::current_exe().context("finding this executable")?,
                config_file_args(args.config_file.as_deref()),
                (limit > 0).then_some(limit),
            ));
        }
        let handlers = HandlerRegistry::new()
            .register(job_kind::NOOP, NoopHandler)
            .register(job_kind::TRANSCODE, transcode)
            .register(
                job_kind::WEBHOOK,
                WebhookHandler::new(pool.clone(), config.webhooks.clone())
                    .map_err(anyhow::Error::msg)?
                    .with_metrics(worker_metrics.clone()),
            )
            .register(
                job_kind::PURGE_ASSET,
                cascade_workers::purge::PurgeHandler::new(pool.clone(), tiers.clone(), cdn.clone()),
            )
            .register(
                job_kind::PURGE_CDN,
                cascade_workers::cdn_purge::PurgeCdnHandler::new(tiers.clone(), cdn.clone()),
            )
            .register(
                job_kind::FINISH_BROADCAST,
                cascade_workers::live::finish::FinishHandler::new(pool.clone(), store.clone())
                    .with_gate(publish_gate, config.transcode.qa_gate),
            );
        let handlers = cascade_workers::tiering::register(
            handlers,
            &queue,
            &tiers,
            Some(config.storage.policy.clone()),
        );
        let handlers = cascade_workers::archive::register(
            handlers,
            &pool,
            &tiers,
            &cdn,
            config.storage.archive_source_tier(),
            queue.config().max_attempts,
        );
        if tiers.all().len() > 1 {
            let (queue, every, token) = (
                queue.clone(),
                config.storage.policy.interval,
                shutdown.clone(),
            );
            tasks.spawn(async move {
                cascade_workers::tiering::schedule_policy(queue, every, token).await;
                Ok(())
            });
        }
        let runner = Runner::new(queue.clone(), handlers, notifier, worker_owner())
            .with_metrics(worker_metrics.clone());
        worker_metrics.register(&mut registry);
        let token = shutdown.clone();
        tasks.spawn(async move {
            runner.run(token).await;
            Ok(())
        });
    }

    let mut app = Router::new();
    if roles.contains(&Role::Ingest) {
        let live_metrics = cascade_workers::live::LiveMetrics::default();
        let state = std::sync::Arc::new(
            cascade_ingest::AppState::new(
                pool.clone(),
                store.clone(),
                queue.clone(),
                config.ingest.clone(),
                config.transcode.clone(),
            )
            .with_playback(config.playback.clone())
            .with_webhooks(config.webhooks.clone())
            .with_live(config.live.clone())
            .with_prober(probe_children(args.config_file.as_deref(), &config)?),
        );
        if config.live.rtmp_listen.is_some() {
            let encoder = tokio::task::spawn_blocking({
                let choice = config.transcode.encoder;
                move || transcode::resolve_encoder(choice).0
            })
            .await
            .context("probing encoders")?;
            // The relay: origins fetch the parts of low-latency streams here.
            let edges = std::sync::Arc::new(cascade_workers::live::edge::Edges::new());
            let relay_listener = tokio::net::TcpListener::bind(config.live.relay_listen)
                .await
                .with_context(|| {
                    format!("binding live.relay_listen {}", config.live.relay_listen)
                })?;
            let relay_bound = relay_listener.local_addr()?;
            let relay_url = config
                .live
                .relay_url
                .clone()
                .unwrap_or_else(|| format!("http://{relay_bound}"));
            tracing::info!(address = %relay_bound, "live relay: listening");
            {
                let router = cascade_ingest::relay::router(edges.clone());
                let token = shutdown.clone();
                tasks.spawn(async move {
                    axum::serve(relay_listener, router)
                        .with_graceful_shutdown(async move { token.cancelled().await })
                        .await
                        .context("live relay")
                });
            }
            let live = std::sync::Arc::new(cascade_workers::live::LiveContext {
                pool: pool.clone(),
                store: store.clone(),
                transcode: config.live.transcode(&config.transcode),
                config: config.live.clone(),
                encoder,
                edges,
                relay_url: Some(relay_url),
                metrics: live_metrics.clone(),
            });
            let node = config.live.node_name.clone().unwrap_or_else(worker_owner);
            let rtmp = cascade_ingest::rtmp::start(state.clone(), live, node, shutdown.clone())
                .await
                .with_context(|| {
                    format!("binding live.rtmp_listen {:?}", config.live.rtmp_listen)
                })?;
            if let Some(rtmp) = rtmp {
                tasks.spawn(async move {
                    let _ = rtmp.await;
                    Ok(())
                });
            }
        }
        cascade_platform::environments::validate_name(&config.ingest.default_environment)
            .context("ingest.default_environment")?;
        let cleanup = cascade_ingest::spawn_cleanup(state.clone(), shutdown.clone());
        tasks.spawn(async move {
            let _ = cleanup.await;
            Ok(())
        });
        if let Some(dir) = config.ingest.watch_dir.clone() {
            let watcher = cascade_ingest::watch::spawn(state.clone(), dir, shutdown.clone());
            tasks.spawn(async move {
                let _ = watcher.await;
                Ok(())
            });
        }
        state.metrics.register(&mut registry);
        live_metrics.register(&mut registry);
        app = app.merge(cascade_ingest::router(state));
    }
    let mut front = None;
    if roles.contains(&Role::Origin) {
        cascade_origin::zero_copy::reserve_descriptors();
        let origin = cascade_origin::OriginState::with_tiers(
            config.origin.clone(),
            Keyring::from_config(&config.playback),
            pool.clone(),
            tiers.clone(),
        );
        origin.follow_changes(db::pg_config(&config.database)?, shutdown.clone());
        let promotion = (tiers.all().len() > 1).then_some(cascade_origin::Promotion {
            promote_views: config.storage.policy.promote_views,
            window: config.storage.policy.views_window,
        });
        origin.count_views(shutdown.clone(), promotion);
        front = Some(origin.front());
        origin.record_request_metrics(config.metrics.enabled);
        origin.register_metrics(&mut registry);
        app = app.merge(cascade_origin::router(origin));
    }
    let registry = config
        .metrics
        .enabled
        .then(|| std::sync::Arc::new(registry));
    app = app.merge(health::router(
        health::Dependencies {
            pool: pool.clone(),
            store: store.clone(),
            draining: shutdown.clone(),
            dependencies_required: uses_queue,
        },
        registry,
    ));
    tracing::info!(roles = ?roles, address = %local, "listening");
    println!("cascade: serving {roles:?} on http://{local} (health: http://{local}/healthz, readiness: http://{local}/readyz)");
    let token = listener_stop.clone();
    let http = config.http.clone();
    tasks.spawn(async move {
        // The peer address reaches handlers (the ingest API limits requests
        // without a valid key per client address); slow headers are cut off.
        http_server::serve(listener, app, &http, front, token)
            .await
            .context("http server")
    });

    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let result = joined.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(error) = result {
            tracing::error!(
                error = format!("{error:#}"),
                "a role stopped with an error; shutting down"
            );
            shutdown.cancel();
            first_error.get_or_insert(error);
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_url_on_port_0_takes_the_bound_port() {
        assert_eq!(
            with_bound_port("http://127.0.0.1:0", 41234).as_deref(),
            Some("http://127.0.0.1:41234")
        );
        assert_eq!(
            with_bound_port("https://media.example:0/base", 8443).as_deref(),
            Some("https://media.example:8443/base")
        );
        assert_eq!(with_bound_port("http://127.0.0.1:8080", 41234), None);
        assert_eq!(with_bound_port("https://media.example", 41234), None);
        assert_eq!(with_bound_port("not a url", 41234), None);
    }
}
