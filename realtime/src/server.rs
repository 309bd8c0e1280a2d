//! The HTTP and WebSocket server: accepts connections, serves the routes, runs until shutdown,
//! then drains.
//!
//! Each connection is HTTP/1.1 (WebSockets upgrade from it). A client must send its request
//! head within `handshake_timeout` and keep it under [`MAX_REQUEST_HEAD`] (else 431), so slow
//! or bloated handshakes (slowloris) cost a connection for a bounded time only.
//!
//! Shutdown (the `CancellationToken`): `/readyz` turns 503 at once, the listener stops
//! accepting, HTTP connections finish their request and close, every socket closes with 1001
//! (each session watches the token itself: an upgraded connection is no longer HTTP's), and
//! `run` returns when all of them ended or the grace period (`shutdown_grace`) ran out,
//! whichever comes first.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::LocalBus;
use crate::channels::registry;
use crate::config::Config;
use crate::http;
use crate::node::Node;
use crate::policy::{PolicyError, PolicySet};
use crate::telemetry::chain;

/// The longest request head (request line and headers) accepted. A JWT in the query string or
/// the `x-api-key` header is a few KB; a head larger than this is answered 431.
pub const MAX_REQUEST_HEAD: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot start the changes dispatcher thread")]
    DispatcherThread(#[source] std::io::Error),
    #[error("invalid policy files: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Policies(Vec<PolicyError>),
}

/// Why the service stopped with an error: the server could not start, or replication failed
/// fatally (it needs a person: the settings or the database must change).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error(transparent)]
    Replication(#[from] crate::replication::ReplicationError),
    #[error("the replication task panicked")]
    ReplicationPanicked,
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
}

/// The whole service, exactly as `realtime serve` runs it: the replication task on `bus` when a
/// database is configured (a fatal replication error cancels `shutdown`, so the service stops
/// rather than serving stale data), and the server on `listener` (with `/metrics` on `metrics`
/// when given) until `shutdown`. Returns after both have stopped.
pub async fn run_service(
    config: Arc<Config>,
    listener: TcpListener,
    metrics: Option<TcpListener>,
    bus: LocalBus,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    // A node configured for a cluster must not serve alone: NATS must answer once at start.
    let cluster = match &config.cluster {
        Some(settings) => {
            let cluster = crate::cluster::Cluster::connect(settings).await?;
            tracing::info!(
                node = cluster.node_id(),
                cluster = settings.name,
                "connected to NATS"
            );
            Some(cluster)
        }
        None => None,
    };
    let (stage, leadership) = match (&cluster, &config.database) {
        (Some(cluster), Some(_)) => cluster_change_stream(cluster, &config, &bus, &shutdown),
        _ => (Some(bus.clone()), None),
    };
    let replication = match (&config.database, stage) {
        (Some(database), Some(stage)) => Some(crate::replication::spawn(
            database.clone(),
            config.replication.clone(),
            stage,
            leadership,
            shutdown.clone(),
        )),
        (Some(_), None) => None,
        (None, _) => {
            tracing::warn!(
                "no database configured (DATABASE_URL or DB_HOST): serving broadcast and presence only"
            );
            None
        }
    };
    let served = serve(config, listener, metrics, bus, cluster, shutdown.clone()).await;
    // The server stops on `shutdown`; so must replication, also when the server failed to start.
    shutdown.cancel();
    if let Some(task) = replication {
        task.await.map_err(|_| RunError::ReplicationPanicked)??;
    }
    Ok(served?)
}

/// A clustered node's change stream (see `cluster::cdc`): the bus its replication hands on to
/// (`None`: `CLUSTER_CDC=never`, it never streams) and what it needs to contend for leadership.
fn cluster_change_stream(
    cluster: &crate::cluster::Cluster,
    all: &Config,
    bus: &LocalBus,
    shutdown: &CancellationToken,
) -> (
    Option<LocalBus>,
    Option<crate::replication::leadership::Leadership>,
) {
    let config = &cluster.config;
    let contends = config.cdc == crate::config::CdcRole::Auto;
    let stage = contends.then(|| bus.stage(4096));
    let may_lead = crate::cluster::cdc::start(
        cluster.clone(),
        bus.clone(),
        stage.clone(),
        all.replication.window,
        shutdown.clone(),
    );
    let leadership = contends.then(|| crate::replication::leadership::Leadership {
        node_id: config.node_id.clone(),
        may_lead,
    });
    (stage, leadership)
}

/// The access rules of private channels and tables: the policy folder when there is one, else
/// none (private channels are then refused to everyone but `service_role`, and tables follow
/// Postgres's grants and row-level security). The folder in use is logged, so nobody has to
/// guess which rules govern.
fn channel_policy(config: &Config) -> Result<PolicySet, ServerError> {
    match config.server.resolved_policies_dir() {
        Some(dir) => {
            let set = PolicySet::load(&dir).map_err(ServerError::Policies)?;
            let shown = std::path::absolute(&dir).unwrap_or(dir);
            tracing::info!(folder = %shown.display(), files = set.files().len(), "policy folder");
            Ok(set)
        }
        None => {
            tracing::info!(
                "no policy folder (POLICIES_DIR is not set and ./policies does not exist): private channels are refused to all but service_role; tables follow Postgres grants and row-level security"
            );
            Ok(PolicySet::empty())
        }
    }
}

/// Serves `listener` until `shutdown` is cancelled, then closes every socket and returns. The
/// HTTP and WebSocket server alone: [`run_service`] (`realtime::run`) adds replication.
pub async fn run(
    config: Arc<Config>,
    listener: TcpListener,
    bus: LocalBus,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    run_with_metrics(config, listener, None, bus, shutdown).await
}

/// [`run`], with `/metrics` served on `metrics` instead of `listener` when it is given
/// (`METRICS_PORT`).
pub async fn run_with_metrics(
    config: Arc<Config>,
    listener: TcpListener,
    metrics: Option<TcpListener>,
    bus: LocalBus,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    serve(config, listener, metrics, bus, None, shutdown).await
}

/// [`run_with_metrics`], as a node of `cluster` when given.
async fn serve(
    config: Arc<Config>,
    listener: TcpListener,
    metrics: Option<TcpListener>,
    bus: LocalBus,
    cluster: Option<crate::cluster::Cluster>,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let policy = channel_policy(&config)?;
    let grace = config.server.shutdown_grace;
    let node = Arc::new(Node::new(config, policy, bus.clone(), cluster, shutdown.clone()));

    // Subscribe before serving so no event published by a client can precede the dispatcher.
    let dispatcher = tokio::spawn(registry::dispatch(
        node.registry.clone(),
        bus.subscribe_channel_events(),
        shutdown.clone(),
    ));

    // Likewise for committed changes: the dispatcher reads the bus from before the first join.
    // It runs on a thread of its own (driving the runtime's I/O and timers through the handle):
    // every change passes through this one sequential stage, and as one task among thousands
    // of busy session tasks it fell behind the bus under load, which drops changes for every
    // subscriber. With its own share of the CPU it keeps up, and a backlog forms in the
    // sockets' queues instead, where writes batch and slow consumers are closed.
    if let Some(changes) = &node.changes {
        let dispatch = crate::changes::dispatch::run(
            changes.clone(),
            bus.subscribe_transactions(),
            bus.clone(),
            shutdown.clone(),
        );
        let runtime = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("changes-dispatch".to_owned())
            .spawn(move || runtime.block_on(dispatch))
            .map_err(ServerError::DispatcherThread)?;
    }

    // Broadcast from the database: its consumer of the bus, and the partitions of its table.
    if let (Some(service), Some(database)) = (&node.db_broadcasts, &node.config.database) {
        let service = service.clone();
        let (bus, stop) = (bus.clone(), shutdown.clone());
        let limits = node.config.replication.window;
        let max_payload = node.max_payload_bytes();
        tokio::spawn(async move { service.run(bus, limits, max_payload, stop).await });
        tokio::spawn(crate::db_broadcast::partitions::run(
            database.clone(),
            node.config.replication.messages_retention_days,
            shutdown.clone(),
        ));
    }

    let connections = TaskTracker::new();
    let accepting = tokio::spawn(accept(
        listener,
        http::router(node.clone()),
        node.config.server.limits.handshake_timeout,
        shutdown.clone(),
        connections.clone(),
    ));
    let accepting_metrics = metrics.map(|listener| {
        tokio::spawn(accept(
            listener,
            http::metrics::router(node.clone()),
            node.config.server.limits.handshake_timeout,
            shutdown.clone(),
            connections.clone(),
        ))
    });
    shutdown.cancelled().await;
    // Every session learns of the shutdown through its queue, and closes its socket with 1001.
    node.sockets.shut_down();
    // The listener is dropped when the accept loop ends: no new connections from here on.
    let _ = accepting.await;
    if let Some(task) = accepting_metrics {
        let _ = task.await;
    }

    connections.close();
    node.tracker.close();
    let drained = tokio::time::timeout(grace, async {
        node.tracker.wait().await;
        connections.wait().await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            sockets = node.tracker.len(),
            "shutdown grace period ran out with sockets still open"
        );
    }
    dispatcher.abort();
    Ok(())
}

/// Accepts connections until `shutdown`, serving each on its own task (tracked by
/// `connections`). Accept errors (out of file descriptors, mostly) are logged and retried after
/// a pause rather than ending the server.
async fn accept(
    listener: TcpListener,
    app: Router,
    handshake_timeout: Duration,
    shutdown: CancellationToken,
    connections: TaskTracker,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(handshake_timeout)
        .max_header_size(MAX_REQUEST_HEAD);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                tracing::warn!(error = %chain(&error), "cannot accept connections; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // Frames are small and latency matters more than packet count.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(error = %chain(&error), "cannot set TCP_NODELAY");
        }
        // Handlers read the peer address (`ConnectInfo`) for the per-address limits.
        let service = app
            .clone()
            .layer(axum::Extension(axum::extract::ConnectInfo(peer)));
        let connection = builder
            .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service))
            .with_upgrades();
        let shutdown = shutdown.clone();
        tokio::spawn(connections.track_future(async move {
            tokio::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                _ = shutdown.cancelled() => {
                    // Finish the request in flight (a handshake hands its socket over first).
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            // Timeouts, oversized heads and clients that vanish end here; nothing to act on.
            if let Err(error) = served {
                tracing::debug!(error = %chain(&error), "HTTP connection ended with an error");
            }
        }));
    }
}

/// Errors of one connection that arrived and went before it was accepted.
fn is_connection_error(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}
