//! HTTP routes: the WebSocket endpoints, health and readiness (`health`), metrics, the REST
//! broadcast API, and in `realtime dev` the demo page (`demo`).
//!
//! realtime-js derives the REST address from the WebSocket one (drop `/websocket`, add
//! `/api/broadcast`), so the API is mounted under each WebSocket prefix as well as at `/api`.

mod admin;
pub(crate) mod broadcast;
pub mod demo;
pub(crate) mod health;
pub(crate) mod metrics;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Router};
use tower_http::cors::CorsLayer;
use tower_http::timeout::TimeoutLayer;

use crate::node::Node;
use crate::transport::websocket;

pub(crate) fn router(node: Arc<Node>) -> Router {
    let health = Arc::new(health::Health::new(&node));
    let api = Router::new()
        // GET routes answer HEAD too (without the body), as the Supabase healthcheck sends.
        .route("/tenants/{tenant}/health", get(health::tenant))
        .route("/ping", get(health::ping))
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
        .route("/healthz", get(health::healthz))
        .route("/healthcheck", get(health::healthz))
        .route("/readyz", get(health::readyz));
    // With `METRICS_PORT` the figures are served there only (see `metrics::router`).
    if node.config.server.metrics_port.is_none() {
        routes = routes.route("/metrics", get(metrics::metrics));
    }
    let node_for_extras = node.clone();
    let routes = routes
        .nest("/api", api.clone())
        .nest("/socket/api", api.clone())
        .nest("/realtime/v1/api", api)
        .layer(Extension(health))
        .with_state(node);
    // `/admin` exists only with `ADMIN_SECRET` set, `/demo/` only in `realtime dev`; otherwise
    // they are plain 404s.
    let routes = match admin::router(&node_for_extras) {
        Some(admin) => routes.merge(admin),
        None => routes,
    };
    match demo::router(&node_for_extras) {
        Some(demo) => routes.merge(demo),
        None => routes,
    }
}
