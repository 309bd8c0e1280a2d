//! The WebSocket endpoint (`/socket/websocket`, `/realtime/v1/websocket`): the handshake checks
//! and the hand-over of the upgraded socket to a [`Session`] task.
//!
//! Handshake failures are plain HTTP responses with a JSON body `{"error": "<message>"}`, sent
//! after the connect error backoff (Supabase's `CONNECT_ERROR_BACKOFF_MS`) to slow down clients
//! that reconnect in a loop.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::phoenix::Vsn;
use super::session::Session;
use crate::limits::{NodeLimits, TOO_MANY_CONNECTIONS, TOO_MANY_JOINS};
use crate::node::Node;

/// Read buffer of each socket. Clients send little (joins, heartbeats, broadcasts), so a small
/// buffer keeps idle connections cheap; larger frames grow it as needed.
const READ_BUFFER: usize = 512;

/// The API key: header `x-api-key` wins over the `apikey` query parameter.
fn api_key(headers: &HeaderMap, params: &HashMap<String, String>) -> Option<String> {
    let header = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    header
        .or(params.get("apikey").map(String::as_str))
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
}

async fn refuse(node: &Node, status: StatusCode, message: &str) -> Response {
    tokio::time::sleep(node.config.server.limits.connect_error_backoff).await;
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

pub async fn handler(
    State(node): State<Arc<Node>>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !node.is_ready() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "error": "Realtime is shutting down" })),
        )
            .into_response();
    }
    let Some(key) = api_key(&headers, &params) else {
        return refuse(&node, StatusCode::UNAUTHORIZED, "API key is missing").await;
    };
    let Some(vsn) = Vsn::parse(params.get("vsn").map(String::as_str)) else {
        return refuse(&node, StatusCode::BAD_REQUEST, "Unsupported serializer version").await;
    };
    if let Err(error) = node.verifier.verify(&key).await {
        let status = StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
        return refuse(&node, status, &error.handshake_message()).await;
    }
    let Some(slot) = NodeLimits::acquire_connection(&node) else {
        return refuse(&node, StatusCode::TOO_MANY_REQUESTS, TOO_MANY_CONNECTIONS).await;
    };
    if node.limits.joins_exceeded(std::time::Instant::now()) {
        return refuse(&node, StatusCode::TOO_MANY_REQUESTS, TOO_MANY_JOINS).await;
    }
    let limits = &node.config.server.limits;
    // Counted from the handshake on, so shutdown also waits for sockets still upgrading.
    let tracked = node.tracker.token();
    upgrade
        .read_buffer_size(READ_BUFFER)
        .max_message_size(limits.max_frame_size)
        .max_frame_size(limits.max_frame_size)
        .on_upgrade(move |socket| async move {
            let _tracked = tracked;
            Session::new(node, vsn, key, slot).run(socket).await;
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn header_key_wins_over_query() {
        let mut headers = HeaderMap::new();
        let mut params = HashMap::new();
        assert_eq!(api_key(&headers, &params), None);
        params.insert("apikey".to_owned(), "query".to_owned());
        assert_eq!(api_key(&headers, &params).as_deref(), Some("query"));
        headers.insert("x-api-key", "header".parse().unwrap());
        assert_eq!(api_key(&headers, &params).as_deref(), Some("header"));
        params.insert("apikey".to_owned(), "  ".to_owned());
        headers.clear();
        assert_eq!(api_key(&headers, &params), None);
    }
}
