//! REST broadcast: `POST /api/broadcast` (a batch) and `POST /api/broadcast/:topic/events/:event`
//! (one message, JSON or binary body). Both answer 202 once the messages are on the bus.
//!
//! Authorization is `Authorization: Bearer <jwt>`, else an `apikey: <jwt>` header; a missing or
//! refused token is `401 {"message":"Unauthorized"}`, a role outside `ALLOWED_ROLES` (or one
//! that bypasses row-level security) `403 {"message":"<why>"}`. Messages to private channels are
//! dropped silently unless the policy grants broadcast write on that topic, as Supabase does.
//!
//! Limits: a batch holds at most `max_rest_broadcast_batch` messages (else
//! `429 {"message":"Too many messages to broadcast, please reduce the batch size"}`); every
//! message counts against the same broadcast rates as socket broadcasts (the token's subject,
//! the client's address, the node). Over a rate nothing is sent and the answer is
//! `429 {"message":"Too many requests"}` with `x-rate-limit` (the limit per second that was
//! reached), `x-rate-rolling` (messages already counted against it this second) and
//! `x-rate-limit-remaining`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use tracing::Instrument;

use crate::auth::Claims;
use crate::broadcast::{Broadcast, PERSIST_UNSUPPORTED};
use crate::channels::{ChannelEvent, EventKind, TopicKey};
use crate::limits::{
    Peer, REST_BATCH_TOO_LARGE, REST_TOO_MANY_REQUESTS, RateRefusal, Subject, client_ip, peer_ip,
};
use crate::node::Node;
use crate::protocol::phoenix::{MAX_JSON_DEPTH, UserData, within_depth};

const TOO_LARGE: &str = "Payload size exceeds tenant limit";

/// The answer to a payload nested deeper than [`MAX_JSON_DEPTH`].
fn too_deep() -> String {
    format!("nests deeper than {MAX_JSON_DEPTH} levels")
}

async fn authorize(node: &Node, headers: &HeaderMap) -> Result<Claims, Response> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    let token = bearer.or_else(|| headers.get("apikey").and_then(|v| v.to_str().ok()));
    let unauthorized = || {
        (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"message": "Unauthorized"})),
        )
            .into_response()
    };
    let token = token
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(unauthorized)?;
    let claims = node.verifier.verify(token).await.map_err(|error| {
        node.refusals.token_refused(error.code());
        unauthorized()
    })?;
    if let Err(refusal) = node.roles.check(&claims.role, false).await {
        let body = axum::Json(json!({ "message": refusal.to_string() }));
        return Err((StatusCode::FORBIDDEN, body).into_response());
    }
    Ok(claims)
}

/// Counts `n` messages against the broadcast rates of the token's subject, the client's
/// address and the node; the 429 answer when they do not fit, `None` when they do.
fn count(node: &Node, peer: Peer, headers: &HeaderMap, claims: &Claims, n: usize) -> Option<Response> {
    let ip = client_ip(peer_ip(peer), headers, &node.config.server.auth.trusted_proxies);
    let limits = &node.limits;
    let subject = limits.subject(&Subject::of(claims, ip));
    let address = limits.address(ip);
    let n = u32::try_from(n).unwrap_or(u32::MAX);
    match limits.broadcasts(&subject, &address, n, tokio::time::Instant::now()) {
        Ok(_) => None,
        Err(RateRefusal { limit, count }) => {
            let mut response = (
                StatusCode::TOO_MANY_REQUESTS,
                axum::Json(json!({ "message": REST_TOO_MANY_REQUESTS })),
            )
                .into_response();
            let headers = response.headers_mut();
            headers.insert("x-rate-limit", limit.into());
            headers.insert("x-rate-rolling", count.into());
            headers.insert("x-rate-limit-remaining", limit.saturating_sub(count).into());
            Some(response)
        }
    }
}

fn unprocessable(errors: serde_json::Value) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        axum::Json(json!({ "errors": errors })),
    )
        .into_response()
}

/// Whether `claims` may broadcast to `topic` (always on public channels). A check that cannot
/// answer (database authorization) denies.
async fn may_write(node: &Node, topic: &TopicKey, claims: &Claims) -> bool {
    if !topic.is_private() {
        return true;
    }
    node.private_access(topic.sub_topic(), claims, false)
        .await
        .is_ok_and(|access| access.broadcast_write)
}

#[derive(Deserialize)]
struct Batch {
    messages: Vec<RestMessage>,
}

#[derive(Deserialize)]
struct RestMessage {
    topic: String,
    event: String,
    payload: Box<RawValue>,
    #[serde(default)]
    private: Option<serde_json::Value>,
    #[serde(default)]
    id: Option<String>,
}

fn flexible_bool(v: Option<&serde_json::Value>) -> bool {
    match v {
        Some(serde_json::Value::Bool(b)) => *b,
        Some(serde_json::Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// `POST /api/broadcast`, traced as a `rest_broadcast` span.
pub(crate) async fn batch(state: State<Arc<Node>>, peer: Peer, headers: HeaderMap, body: Bytes) -> Response {
    traced("/api/broadcast", batch_untraced(state, peer, headers, body)).await
}

/// One `rest_broadcast` span around a handler, with the answer's status.
async fn traced(route: &'static str, handler: impl Future<Output = Response>) -> Response {
    let span = tracing::info_span!(
        target: crate::telemetry::TARGET,
        "rest_broadcast",
        "http.route" = route,
        messages = tracing::field::Empty,
        "http.response.status_code" = tracing::field::Empty,
    );
    let response = handler.instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}

async fn batch_untraced(
    State(node): State<Arc<Node>>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let claims = match authorize(&node, &headers).await {
        Ok(claims) => claims,
        Err(response) => return response,
    };
    if !within_depth(&body, MAX_JSON_DEPTH) {
        return unprocessable(json!({ "messages": [too_deep()] }));
    }
    let batch: Batch = match serde_json::from_slice(&body) {
        Ok(batch) => batch,
        Err(error) => return unprocessable(json!({ "messages": [error.to_string()] })),
    };
    let limit = node.max_payload_bytes();
    if batch.messages.iter().any(|m| m.payload.get().len() > limit) {
        return unprocessable(json!({ "messages": [TOO_LARGE] }));
    }
    if batch.messages.len() > node.config.server.limits.max_rest_broadcast_batch {
        let body = axum::Json(json!({ "message": REST_BATCH_TOO_LARGE }));
        return (StatusCode::TOO_MANY_REQUESTS, body).into_response();
    }
    tracing::Span::current().record("messages", batch.messages.len());
    if let Some(response) = count(&node, peer, &headers, &claims, batch.messages.len()) {
        return response;
    }
    // The policy is asked once per topic of the batch.
    let mut allowed: HashMap<TopicKey, bool> = HashMap::new();
    for message in batch.messages {
        let topic = TopicKey::new(&message.topic, flexible_bool(message.private.as_ref()));
        let ok = match allowed.get(&topic) {
            Some(ok) => *ok,
            None => {
                let ok = may_write(&node, &topic, &claims).await;
                allowed.insert(topic.clone(), ok);
                ok
            }
        };
        if !ok {
            continue;
        }
        let mut broadcast = Broadcast::from_data(message.event, UserData::Json(message.payload));
        if let Some(id) = message.id {
            broadcast.meta = RawValue::from_string(json!({ "id": id }).to_string()).ok();
        }
        node.bus
            .publish_channel_event(ChannelEvent::new(topic, None, EventKind::Broadcast(broadcast)));
    }
    StatusCode::ACCEPTED.into_response()
}

/// `POST /api/broadcast/:topic/events/:event`, traced as a `rest_broadcast` span.
pub(crate) async fn single(
    state: State<Arc<Node>>,
    peer: Peer,
    path: Path<(String, String)>,
    query: Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let route = "/api/broadcast/{topic}/events/{event}";
    traced(route, single_untraced(state, peer, path, query, headers, body)).await
}

async fn single_untraced(
    State(node): State<Arc<Node>>,
    peer: Peer,
    Path((topic, event)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    tracing::Span::current().record("messages", 1);
    let claims = match authorize(&node, &headers).await {
        Ok(claims) => claims,
        Err(response) => return response,
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    // A missing Content-Type is accepted (as Supabase does) and read as JSON.
    let mime = if mime.is_empty() {
        "application/json".to_owned()
    } else {
        mime
    };
    let data = match mime.as_str() {
        "application/json" if !within_depth(&body, MAX_JSON_DEPTH) => {
            return unprocessable(json!({ "payload": [too_deep()] }));
        }
        "application/json" => match std::str::from_utf8(&body)
            .ok()
            .and_then(|t| RawValue::from_string(t.to_owned()).ok())
        {
            Some(raw) => UserData::Json(raw),
            None => return unprocessable(json!({ "payload": ["is not valid JSON"] })),
        },
        "application/octet-stream" => UserData::Binary(body),
        _ => {
            let message = "Unsupported Media Type. Use application/json or application/octet-stream";
            return (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                axum::Json(json!({ "error": message })),
            )
                .into_response();
        }
    };
    if data.len() > node.max_payload_bytes() {
        return unprocessable(json!({ "payload": [TOO_LARGE] }));
    }
    // `persist` (realtime-js httpSend): this server does not store client broadcasts. Refused,
    // never silently ignored; httpSend rejects with the `error` text.
    if params.keys().any(|k| k == "persist" || k.starts_with("persist[")) {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({"error": PERSIST_UNSUPPORTED})),
        )
            .into_response();
    }
    let private = params
        .get("private")
        .is_some_and(|p| p.eq_ignore_ascii_case("true"));
    let topic = TopicKey::new(&topic, private);
    if let Some(response) = count(&node, peer, &headers, &claims, 1) {
        return response;
    }
    if !may_write(&node, &topic, &claims).await {
        // Supabase: a private topic without broadcast write is refused (httpSend rejects with
        // "Unauthorized").
        return (
            StatusCode::FORBIDDEN,
            axum::Json(json!({"message": "Unauthorized"})),
        )
            .into_response();
    }
    let broadcast = Broadcast::from_data(event, data);
    node.bus
        .publish_channel_event(ChannelEvent::new(topic, None, EventKind::Broadcast(broadcast)));
    StatusCode::ACCEPTED.into_response()
}
