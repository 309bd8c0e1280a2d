//! Health endpoints for orchestrators, load balancers and Supabase's self-hosted compose.
//!
//! - `GET /healthz`, `GET /healthcheck`: liveness, `ok` while the process serves HTTP.
//! - `GET /readyz`: readiness, 200 only when every check passes (the database answers, the
//!   change stream is streaming, the node is not shutting down); 503 otherwise. Both carry a
//!   JSON body naming each check's state, so a person reading it sees which one fails.
//! - `GET|HEAD /api/tenants/{tenant}/health`: Supabase's tenant health, behind a bearer token
//!   signed with the API secret (`API_JWT_SECRET`), as the stock self-hosted healthcheck calls
//!   it. Missing or bad token: 403 with an empty body, as Supabase answers.
//! - `GET /api/ping`: Supabase's `{"message":"Success"}`.
//!
//! The checks are read here and judged by the pure [`assess`]; the database probe is cached
//! for a second so frequent probes (several orchestrators, several paths) cost one query.

use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;

use crate::auth::Verifier;
use crate::config::server::AuthConfig;
use crate::node::Node;
use crate::telemetry::chain;

/// How long one database probe may take before the database counts as unreachable. Kept under
/// the usual probe timeouts (compose's 5 s, Kubernetes' 1 s default is raised by most charts).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a probe's answer is reused.
const PROBE_FRESH: Duration = Duration::from_secs(1);

/// What the health endpoints need beyond the node: a probe of the database and the verifier of
/// the tenant health token.
#[derive(Debug)]
pub(crate) struct Health {
    database: Option<DatabaseProbe>,
    /// Verifies with `API_JWT_SECRET` only, as Supabase does for `/api/tenants/*`.
    api_auth: Verifier,
    /// This machine's host name (the container's id under Docker), as the tenant health's
    /// `node`: tells replicas apart.
    host: Option<String>,
}

impl Health {
    pub(crate) fn new(node: &Node) -> Health {
        let auth = &node.config.server.auth;
        Health {
            database: node.config.database.as_ref().map(|database| {
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(PROBE_TIMEOUT)
                    .connect_lazy_with(crate::db::connect_options(database));
                DatabaseProbe {
                    pool,
                    last: tokio::sync::Mutex::new(None),
                }
            }),
            api_auth: Verifier::new(AuthConfig {
                jwt_secret: auth.jwt_secret.clone(),
                ..AuthConfig::default()
            }),
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty()),
        }
    }

    /// Reads every check. The database is not probed once shutdown started: the answer is 503
    /// either way, and a draining node should not open connections.
    async fn checks(&self, node: &Node) -> Checks {
        let shutting_down = node.shutdown.is_cancelled();
        let database = match &self.database {
            None => DatabaseCheck::NotConfigured,
            Some(_) if shutting_down => DatabaseCheck::NotChecked,
            Some(probe) => probe.check().await,
        };
        Checks {
            database,
            replication: replication_check(node),
            shutting_down,
        }
    }
}

/// A one-connection pool kept for probing, and the latest answer.
#[derive(Debug)]
struct DatabaseProbe {
    pool: PgPool,
    last: tokio::sync::Mutex<Option<(Instant, DatabaseCheck)>>,
}

impl DatabaseProbe {
    /// `SELECT 1`, or the answer of a probe less than [`PROBE_FRESH`] old. Concurrent callers
    /// wait for one probe rather than each sending their own.
    async fn check(&self) -> DatabaseCheck {
        let mut last = self.last.lock().await;
        if let Some((at, check)) = *last
            && at.elapsed() < PROBE_FRESH
        {
            return check;
        }
        let probe = sqlx::query("SELECT 1").execute(&self.pool);
        let check = match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
            Ok(Ok(_)) => DatabaseCheck::Reachable,
            Ok(Err(error)) => {
                // The reason goes to the log, not to the unauthenticated response body.
                tracing::debug!(error = %chain(&error), "readiness: the database probe failed");
                DatabaseCheck::Unreachable
            }
            Err(_) => DatabaseCheck::TimedOut,
        };
        *last = Some((Instant::now(), check));
        check
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DatabaseCheck {
    Reachable,
    Unreachable,
    TimedOut,
    /// Shutting down: not probed.
    NotChecked,
    /// No database configured: broadcast and presence only.
    NotConfigured,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ReplicationCheck {
    /// This node reads the slot and hands changes on.
    Streaming,
    /// Another node holds the change stream and this one follows it, ready to take over: it
    /// holds the leader's window and serves changes (and resumes) it receives from the leader.
    WaitingForLeadership,
    /// A node of a cluster that does not hold the leader's window yet (its first fetch has not
    /// finished, or no node leads): a client resuming here could be refused. Not ready.
    WarmingUp,
    /// Connecting, or waiting to retry after an error (the log says which).
    NotStreaming,
    NotConfigured,
}

/// The change stream's state as readiness sees it: on a node of a cluster, a warm follower
/// reports [`ReplicationCheck::WaitingForLeadership`].
fn replication_check(node: &Node) -> ReplicationCheck {
    let metrics = node.bus.replication_metrics();
    let cluster = &metrics.cluster;
    use crate::metrics::ClusterMetrics;
    if node.config.database.is_none() {
        ReplicationCheck::NotConfigured
    } else if ClusterMetrics::get(&cluster.enabled) {
        match (metrics.is_streaming(), ClusterMetrics::get(&cluster.warm)) {
            (true, _) => ReplicationCheck::Streaming,
            (false, true) => ReplicationCheck::WaitingForLeadership,
            (false, false) => ReplicationCheck::WarmingUp,
        }
    } else if metrics.is_streaming() {
        ReplicationCheck::Streaming
    } else {
        ReplicationCheck::NotStreaming
    }
}

/// Everything readiness looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Checks {
    pub database: DatabaseCheck,
    pub replication: ReplicationCheck,
    pub shutting_down: bool,
}

/// The verdict and the JSON body of `/readyz`.
#[derive(Debug, PartialEq, Serialize)]
pub(crate) struct Readiness {
    /// `ready` or `unavailable`.
    pub status: &'static str,
    /// The checks that fail, in the order of `checks`.
    pub failing: Vec<&'static str>,
    pub checks: ReadinessChecks,
}

#[derive(Debug, PartialEq, Serialize)]
pub(crate) struct ReadinessChecks {
    pub database: DatabaseCheck,
    pub replication: ReplicationCheck,
    /// `running` or `shutting_down`.
    pub shutdown: &'static str,
}

impl Readiness {
    pub(crate) fn is_ready(&self) -> bool {
        self.failing.is_empty()
    }
}

/// Judges the checks: ready when the database answers (or none is configured), the change
/// stream is streaming (or waiting for leadership, or not configured), and shutdown has not
/// started.
pub(crate) fn assess(checks: Checks) -> Readiness {
    let mut failing = Vec::new();
    if !matches!(
        checks.database,
        DatabaseCheck::Reachable | DatabaseCheck::NotConfigured
    ) {
        failing.push("database");
    }
    if matches!(
        checks.replication,
        ReplicationCheck::NotStreaming | ReplicationCheck::WarmingUp
    ) {
        failing.push("replication");
    }
    if checks.shutting_down {
        failing.push("shutdown");
    }
    Readiness {
        status: if failing.is_empty() {
            "ready"
        } else {
            "unavailable"
        },
        failing,
        checks: ReadinessChecks {
            database: checks.database,
            replication: checks.replication,
            shutdown: if checks.shutting_down {
                "shutting_down"
            } else {
                "running"
            },
        },
    }
}

/// Liveness: the process serves HTTP.
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: 200 when [`assess`] finds nothing failing, else 503; the body names each check.
pub(crate) async fn readyz(
    State(node): State<Arc<Node>>,
    Extension(health): Extension<Arc<Health>>,
) -> Response {
    let readiness = assess(health.checks(&node).await);
    let status = if readiness.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(readiness)).into_response()
}

/// Supabase's `GET /api/ping`.
pub(crate) async fn ping() -> Json<serde_json::Value> {
    Json(json!({ "message": "Success" }))
}

/// Supabase's tenant health. Single-tenant: every tenant name answers for this service. Like
/// Supabase, an unhealthy service still answers 200 with `healthy: false` (use `/readyz` to get
/// a failing status code).
pub(crate) async fn tenant(
    State(node): State<Arc<Node>>,
    Extension(health): Extension<Arc<Health>>,
    headers: HeaderMap,
) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let authorized = match token {
        Some(token) => health.api_auth.verify(token).await.is_ok(),
        None => false,
    };
    if !authorized {
        return StatusCode::FORBIDDEN.into_response();
    }
    let checks = health.checks(&node).await;
    let db_connected = checks.database == DatabaseCheck::Reachable;
    Json(json!({
        "data": {
            "healthy": db_connected && !checks.shutting_down,
            "db_connected": db_connected,
            "replication_connected": checks.replication == ReplicationCheck::Streaming,
            "connected_cluster": node.tracker.len(),
            "region": null,
            "node": health.host,
        }
    }))
    .into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn checks(database: DatabaseCheck, replication: ReplicationCheck, shutting_down: bool) -> Checks {
        Checks {
            database,
            replication,
            shutting_down,
        }
    }

    #[test]
    fn ready_only_when_every_check_passes() {
        use DatabaseCheck as D;
        use ReplicationCheck as R;
        let ready = assess(checks(D::Reachable, R::Streaming, false));
        assert!(ready.is_ready());
        assert_eq!(ready.status, "ready");
        assert!(assess(checks(D::NotConfigured, R::NotConfigured, false)).is_ready());
        assert!(assess(checks(D::Reachable, R::WaitingForLeadership, false)).is_ready());
        assert_eq!(
            assess(checks(D::Reachable, R::WarmingUp, false)).failing,
            ["replication"]
        );

        assert_eq!(
            assess(checks(D::Unreachable, R::Streaming, false)).failing,
            ["database"]
        );
        assert_eq!(
            assess(checks(D::TimedOut, R::Streaming, false)).failing,
            ["database"]
        );
        assert_eq!(
            assess(checks(D::Reachable, R::NotStreaming, false)).failing,
            ["replication"]
        );
        let draining = assess(checks(D::NotChecked, R::Streaming, true));
        assert_eq!(draining.failing, ["database", "shutdown"]);
        assert_eq!(draining.status, "unavailable");
    }

    #[test]
    fn the_body_names_each_check() {
        let body = serde_json::to_value(assess(checks(
            DatabaseCheck::Unreachable,
            ReplicationCheck::NotStreaming,
            false,
        )))
        .unwrap();
        assert_eq!(
            body,
            json!({
                "status": "unavailable",
                "failing": ["database", "replication"],
                "checks": {"database": "unreachable", "replication": "not_streaming", "shutdown": "running"}
            })
        );
    }

    #[tokio::test]
    async fn readyz_turns_503_when_shutdown_starts() {
        use http_body_util::BodyExt;
        use tokio_util::sync::CancellationToken;

        use crate::bus::LocalBus;
        use crate::config::Config;
        use crate::policy::PolicySet;

        let shutdown = CancellationToken::new();
        let node = Arc::new(Node::new(
            Arc::new(Config::default()),
            PolicySet::empty(),
            LocalBus::new(8),
            None,
            shutdown.clone(),
        ));
        let health = Arc::new(Health::new(&node));
        let response = readyz(State(node.clone()), Extension(health.clone())).await;
        assert_eq!(response.status(), StatusCode::OK);
        shutdown.cancel();
        let response = readyz(State(node), Extension(health)).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["failing"], json!(["shutdown"]));
        assert_eq!(body["checks"]["shutdown"], "shutting_down");
        assert_eq!(healthz().await, "ok");
    }
}
