//! `GET /healthz` (the process answers), `GET /readyz` (its dependencies
//! answer: 503 naming the failing one otherwise, except for an origin-only
//! process, which stays ready and says `degraded`; 503 `draining` once the
//! process is shutting down) and `GET /metrics` (every role's metrics, when
//! `metrics.enabled`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cascade_platform::metrics::Registry;
use cascade_platform::{db, ObjectStore};
use deadpool_postgres::Pool;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// How long one dependency check may take before it counts as failing.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What the readiness check probes.
#[derive(Clone)]
pub struct Dependencies {
    /// Postgres.
    pub pool: Pool,
    /// The object store.
    pub store: ObjectStore,
    /// Fired when the process starts shutting down.
    pub draining: CancellationToken,
    /// Whether this process's roles can do nothing without Postgres and
    /// the object store (ingest, workers). An origin alone serves what it
    /// has through their outages (resolved assets, cached objects), so a
    /// failing dependency does not make it unready: taking every origin
    /// out of its load balancer at once would stop playback entirely.
    pub dependencies_required: bool,
}

/// The health routes, and `/metrics` over `registry` when given.
pub fn router(deps: Dependencies, registry: Option<Arc<Registry>>) -> Router {
    let mut router = Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(readyz))
        .with_state(deps);
    if let Some(registry) = registry {
        router = router.route("/metrics", get(move || metrics(registry.clone())));
    }
    router
}

async fn metrics(registry: Arc<Registry>) -> Response {
    let text = cascade_platform::metrics::render(&registry);
    (
        [
            (
                header::CONTENT_TYPE,
                cascade_platform::metrics::CONTENT_TYPE,
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        text,
    )
        .into_response()
}

async fn readyz(State(deps): State<Dependencies>) -> Response {
    if deps.draining.is_cancelled() {
        // A load balancer stops sending here while in-flight work finishes.
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "draining",
                "code": "draining",
                "message": "shutting down: finishing in-flight requests and jobs",
            })),
        )
            .into_response();
    }
    let (database, storage) = tokio::join!(
        tokio::time::timeout(CHECK_TIMEOUT, db::ping(&deps.pool)),
        tokio::time::timeout(CHECK_TIMEOUT, deps.store.ping()),
    );
    let database = match database {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(error.to_string()),
        Err(_) => Some("timed out".to_owned()),
    };
    let storage = match storage {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(error.to_string()),
        Err(_) => Some("timed out".to_owned()),
    };
    let failing: Vec<&str> = [("database", &database), ("storage", &storage)]
        .iter()
        .filter(|(_, e)| e.is_some())
        .map(|(name, _)| *name)
        .collect();
    let degraded = !failing.is_empty() && !deps.dependencies_required;
    for (name, error) in [("database", &database), ("storage", &storage)] {
        if let Some(error) = error {
            // Details go to the log; clients get the dependency's name.
            tracing::warn!(dependency = name, error = %error, "readiness check failed");
        }
    }
    let status = |e: &Option<String>| if e.is_some() { "unavailable" } else { "ok" };
    let body = json!({
        "status": if failing.is_empty() {
            "ready"
        } else if degraded {
            // Serving from what it has; the checks say what is missing.
            "degraded"
        } else {
            "unavailable"
        },
        "checks": { "database": status(&database), "storage": status(&storage) },
    });
    if failing.is_empty() || degraded {
        (StatusCode::OK, Json(body)).into_response()
    } else {
        let mut body = body;
        body["code"] = json!("dependency_unavailable");
        body["message"] = json!(format!("not ready: {} unavailable", failing.join(" and ")));
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}
