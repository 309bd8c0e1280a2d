//! `/admin`: an inspector for operators, off unless `ADMIN_SECRET` is set.
//!
//! `GET /admin` is one HTML page with plain JavaScript (embedded, no build step, nothing fetched
//! from elsewhere); it holds no data and asks for the secret. Everything else lives under
//! `/admin/api/` and requires `Authorization: Bearer <ADMIN_SECRET>`, compared in constant time;
//! the secret is never logged. The API:
//!
//! - `GET overview`: replication (slot, epoch, position, lag, the window's size and limits),
//!   sockets, channels
//!   with their subscribers and presence keys.
//! - `GET log`: server-sent events, one per change (table, kind, position) or channel event
//!   (topic, broadcast event): metadata only, never row values or payloads.
//! - `POST broadcast` `{topic, event, payload, private}`: sends a broadcast to a channel.
//! - `POST disconnect` `{subscriber}`: closes the socket that joined that subscriber.
//! - `POST token` `{role, sub}`: mints a short-lived JWT for "listen as": the page then opens an
//!   ordinary realtime socket with it and shows exactly what that role receives, row values
//!   included. That is the one place the inspector shows data, on the operator's request.

mod log;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use self::log::Log;
use crate::broadcast::Broadcast;
use crate::channels::{ChannelEvent, EventKind, TopicKey};
use crate::config::Secret;
use crate::node::Node;
use crate::protocol::phoenix::UserData;

const PAGE: &str = include_str!("admin/page.html");
/// How long a "listen as" token lives.
const TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

#[derive(Clone)]
struct Admin {
    node: Arc<Node>,
    secret: Secret,
    log: Arc<Log>,
}

/// The `/admin` routes, or `None` when `ADMIN_SECRET` is not set (then `/admin` is a 404).
pub(super) fn router(node: &Arc<Node>) -> Option<Router> {
    let secret = node.config.server.admin_secret.clone()?;
    tracing::info!("the /admin inspector is on (ADMIN_SECRET is set)");
    let admin = Admin {
        log: Log::start(node),
        node: node.clone(),
        secret,
    };
    Some(
        Router::new()
            .route("/admin", get(page))
            .route("/admin/", get(page))
            .route("/admin/api/overview", get(overview))
            .route("/admin/api/log", get(live_log))
            .route("/admin/api/broadcast", post(send_broadcast))
            .route("/admin/api/disconnect", post(disconnect))
            .route("/admin/api/token", post(mint_token))
            .with_state(admin),
    )
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // The page loads nothing from elsewhere and must not be framed.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self' ws: wss:; frame-ancestors 'none'",
            ),
        ],
        Html(PAGE),
    )
        .into_response()
}

/// The 401 answer, unless the request carries the admin secret.
fn refusal(admin: &Admin, headers: &HeaderMap) -> Option<Response> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    match presented {
        Some(token) if same(token.as_bytes(), admin.secret.expose().as_bytes()) => None,
        _ => {
            tracing::debug!("admin request refused: missing or wrong secret");
            Some(
                (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer")],
                    Json(json!({"error": "unauthorized"})),
                )
                    .into_response(),
            )
        }
    }
}

/// Compares in time that depends on the lengths only, never on where the bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(std::hint::black_box(x ^ y));
    }
    diff == 0
}

async fn overview(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    if let Some(refused) = refusal(&admin, &headers) {
        return refused;
    }
    let node = &admin.node;
    let config = &node.config.replication;
    let metrics = node.bus.replication_metrics();
    let slot = metrics.slot();
    let last = admin.log.last();
    let mut channels: Vec<serde_json::Value> = node
        .registry
        .snapshot()
        .into_iter()
        .map(|(topic, subscribers)| {
            let presence: Vec<_> = node
                .presence
                .keys(&topic)
                .into_iter()
                .map(|(key, entries)| json!({"key": key, "entries": entries}))
                .collect();
            let subscribers: Vec<_> = subscribers
                .iter()
                .map(|s| {
                    json!({
                        "id": s.id.get(), "broadcast": s.broadcast, "presence": s.presence,
                        "queued": s.outbound.len(),
                    })
                })
                .collect();
            json!({
                "topic": topic.sub_topic(), "private": topic.is_private(),
                "subscribers": subscribers, "presence": presence,
            })
        })
        .collect();
    channels.sort_by(|a, b| a["topic"].as_str().cmp(&b["topic"].as_str()));
    let figures = node.figures();
    let (window_transactions, window_bytes) = node.changes.as_ref().map_or((0, 0), |c| c.window_size.get());
    Json(json!({
        "node": {
            "version": env!("CARGO_PKG_VERSION"),
            "sockets": figures.sockets,
            "changes_subscriptions": figures.changes_subscriptions,
            "slow_consumer_closes": figures.slow_consumer_closes,
        },
        "replication": {
            "enabled": node.changes.is_some(),
            "slot": config.slot_name,
            "publications": config.publications,
            "streaming": metrics.is_streaming(),
            "epoch": node.bus.epoch().map(|e| e.to_string()),
            "position": last.as_ref().map(|(p, _)| p),
            "last_commit_timestamp": last.map(|(_, t)| t),
            "lag_bytes": slot.as_ref().map(|s| s.lag_bytes),
            "lag_seconds": slot.as_ref().map(|s| s.lag_seconds),
            "retained_bytes": slot.as_ref().map(|s| s.retained_bytes),
            "wal_status": slot.as_ref().map(|s| s.wal_status.clone()),
            "window": {
                "transactions": window_transactions,
                "bytes": window_bytes,
                "max_age_seconds": config.window.max_age.as_secs(),
                "max_bytes": config.window.max_bytes,
            },
        },
        "channels": channels,
    }))
    .into_response()
}

async fn live_log(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    if let Some(refused) = refusal(&admin, &headers) {
        return refused;
    }
    let (kept, live) = admin.log.follow();
    let kept = futures::stream::iter(kept);
    let live = futures::stream::unfold(live, |mut live| async move {
        loop {
            match live.recv().await {
                Ok(line) => return Some((line, live)),
                // A page that falls behind skips lines rather than slow the log.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let events = futures::StreamExt::map(futures::StreamExt::chain(kept, live), |line| {
        Ok::<_, Infallible>(Event::default().data(&*line))
    });
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}

#[derive(Deserialize)]
struct BroadcastRequest {
    topic: String,
    event: String,
    payload: Box<RawValue>,
    #[serde(default)]
    private: bool,
}

async fn send_broadcast(State(admin): State<Admin>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Some(refused) = refusal(&admin, &headers) {
        return refused;
    }
    let request: BroadcastRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(&format!("expected {{topic, event, payload, private}}: {e}")),
    };
    if request.topic.is_empty() || request.event.is_empty() {
        return bad_request("topic and event must not be empty");
    }
    if request.payload.get().len() > admin.node.max_payload_bytes() {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            Json(json!({"error": "payload exceeds the configured limit"})),
        )
            .into_response();
    }
    let topic = TopicKey::new(&request.topic, request.private);
    let broadcast = Broadcast::from_data(request.event, UserData::Json(request.payload));
    admin
        .node
        .bus
        .publish_channel_event(ChannelEvent::new(topic, None, EventKind::Broadcast(broadcast)));
    tracing::info!("admin sent a broadcast");
    (StatusCode::ACCEPTED, Json(json!({"sent": true}))).into_response()
}

#[derive(Deserialize)]
struct DisconnectRequest {
    subscriber: u64,
}

async fn disconnect(State(admin): State<Admin>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Some(refused) = refusal(&admin, &headers) {
        return refused;
    }
    let request: DisconnectRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(&format!("expected {{subscriber}}: {e}")),
    };
    if admin.node.registry.disconnect(request.subscriber) {
        tracing::info!(subscriber = request.subscriber, "admin disconnected a client");
        Json(json!({"disconnected": true})).into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no such subscriber"})),
        )
            .into_response()
    }
}

#[derive(Deserialize)]
struct TokenRequest {
    role: String,
    #[serde(default)]
    sub: Option<String>,
}

async fn mint_token(State(admin): State<Admin>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Some(refused) = refusal(&admin, &headers) {
        return refused;
    }
    let request: TokenRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(&format!("expected {{role, sub}}: {e}")),
    };
    if request.role.is_empty() {
        return bad_request("role must not be empty");
    }
    let Some(secret) = admin.node.config.server.auth.jwt_secret.as_ref() else {
        return (
            StatusCode::CONFLICT,
            Json(json!({"error": "no API_JWT_SECRET is configured (tokens come from JWKS): paste a token instead"})),
        )
            .into_response();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut claims = json!({"role": request.role, "iat": now, "exp": now + TOKEN_TTL.as_secs()});
    if let Some(sub) = request.sub.filter(|s| !s.is_empty()) {
        claims["sub"] = json!(sub);
    }
    let key = jsonwebtoken::EncodingKey::from_secret(secret.expose().as_bytes());
    match jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key) {
        Ok(token) => {
            tracing::info!("admin minted a token to listen as a role");
            Json(json!({"token": token, "expires_in": TOKEN_TTL.as_secs()})).into_response()
        }
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": "could not sign a token"})),
        )
            .into_response(),
    }
}

fn bad_request(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": message}))).into_response()
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn same_compares_whole_secrets() {
        assert!(same(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!same(b"0123456789abcdef", b"0123456789abcdeX"));
        assert!(!same(b"0123456789abcdef", b"0123456789abcde"));
        assert!(!same(b"", b"x"));
    }
}
