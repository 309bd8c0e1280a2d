//! HTTP routes: the WebSocket endpoints, health and readiness, metrics, and the REST broadcast
//! API.
//!
//! realtime-js derives the REST address from the WebSocket one (drop `/websocket`, add
//! `/api/broadcast`), so the API is mounted under each WebSocket prefix as well as at `/api`.

mod admin;
mod broadcast;
pub mod metrics;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use tower_http::cors::CorsLayer;
use tower_http::timeout::TimeoutLayer;

use crate::node::Node;
use crate::transport::websocket;

pub fn router(node: Arc<Node>) -> Router {
    let api = Router::new()
        .route("/broadcast", post(broadcast::batch))
        .route("/broadcast/{topic}/events/{event}", post(broadcast::single))
        // A body that trickles in must not hold its connection for longer than a handshake may
        // (the server bounds the request head the same way).
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            node.config.server.limits.handshake_timeout,
        ))
        // The configured payload limit decides (with its documented 422), not the HTTP stack's
        // 2 MB default: room for one payload at the limit plus the envelope around it.
        .layer(DefaultBodyLimit::max(
            node.max_payload_bytes().saturating_add(1 << 20),
        ))
        // Browsers call the API cross-origin; Supabase answers CORS with `*`.
        .layer(CorsLayer::permissive());
    let mut routes = Router::new()
        .route("/socket/websocket", get(websocket::handler))
        .route("/realtime/v1/websocket", get(websocket::handler))
        .route("/healthz", get(healthz))
        .route("/healthcheck", get(healthz))
        .route("/readyz", get(readyz));
    // With `METRICS_PORT` the figures are served there only (see `metrics::router`).
    if node.config.server.metrics_port.is_none() {
        routes = routes.route("/metrics", get(metrics::metrics));
    }
    let node_for_admin = node.clone();
    let routes = routes
        .nest("/api", api.clone())
        .nest("/socket/api", api.clone())
        .nest("/realtime/v1/api", api)
        .with_state(node);
    // `/admin` exists only with `ADMIN_SECRET` set; otherwise it is a plain 404.
    match admin::router(&node_for_admin) {
        Some(admin) => routes.merge(admin),
        None => routes,
    }
}

/// Liveness: the process serves HTTP.
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: 503 from the moment shutdown starts, so load balancers stop sending clients.
async fn readyz(State(node): State<Arc<Node>>) -> (StatusCode, &'static str) {
    if node.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::bus::LocalBus;
    use crate::config::Config;
    use crate::policy::PolicySet;

    #[tokio::test]
    async fn readyz_turns_503_when_shutdown_starts() {
        let shutdown = CancellationToken::new();
        let node = Arc::new(Node::new(
            Arc::new(Config::default()),
            PolicySet::empty(),
            LocalBus::new(8),
            shutdown.clone(),
        ));
        assert_eq!(readyz(State(node.clone())).await.0, StatusCode::OK);
        shutdown.cancel();
        assert_eq!(readyz(State(node)).await.0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(healthz().await, "ok");
    }
}
