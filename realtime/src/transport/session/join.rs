//! `phx_join`: checks, in Supabase's order, the topic, the socket's join rate (which every
//! channel join counts against, refused ones too), the channel count, the number of
//! `postgres_changes` bindings, the token and its role, the join rates of the token's subject
//! and of the client's address, the node's join pace (a join may wait its turn there) and
//! (private channels) the policy; then replies, registers the channel and pushes the presence
//! state. Errors are replies `{"reason":"<Code>: <message>"}` sent after the channel error
//! backoff, to damp reconnect storms.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use serde_json::value::RawValue;
use tokio::time::Instant;

use super::channel::{Channel, JoinRef};
use super::postgres_changes::{self, Target};
use super::{Close, Session};
use crate::changes::resume::Since;
use crate::channels::registry::SubscriberId;
use crate::channels::topic::{self, TopicError, TopicKey};
use crate::limits::{Subject, TOO_MANY_BINDINGS_REASON, TOO_MANY_CHANNELS_REASON, TOO_MANY_JOINS_REASON};
use crate::policy::ChannelAccess;
use crate::protocol::phoenix::{Inbound, Status};

/// Supabase's refusal of a public join when the project allows private channels only.
pub(super) const PRIVATE_ONLY_REASON: &str = "PrivateOnly: This project only allows private channels";

pub(super) const UNMATCHED: &str = r#"{"reason":"unmatched topic"}"#;

/// The parts of a join payload the server uses. Parsing is lenient like Supabase's: whatever
/// does not parse takes its default and the join goes on.
#[derive(Debug, Default, PartialEq)]
pub(super) struct JoinParams {
    pub ack: bool,
    pub self_broadcast: bool,
    pub presence_enabled: bool,
    /// `config.presence.key` when given and not empty.
    pub presence_key: Option<String>,
    pub private: bool,
    /// `config.postgres_changes`, as sent.
    pub postgres_changes: Vec<Value>,
    /// `access_token` (or legacy `user_token`), unless it is an `sb_` key.
    pub access_token: Option<String>,
    /// `config.postgres_changes_options.wait`: reply to the join only once the changes
    /// subscription is live; a refused binding fails the join.
    pub changes_wait: bool,
    /// `config.postgres_changes_options.timeout`: how long a waiting join may take (`None`:
    /// [`DEFAULT_WAIT_TIMEOUT`]).
    pub changes_wait_timeout: Option<Duration>,
    /// `config.postgres_changes_options.since`: resume after this position.
    pub changes_since: Option<Since>,
    /// `config.broadcast.since`: resume database broadcasts after this position.
    pub broadcast_since: Option<Since>,
    /// `config.broadcast.replication_ready`: say when the replication stream is up.
    pub replication_ready: bool,
    /// `config.broadcast.replay`, as sent (Supabase's replay of stored broadcasts).
    pub replay: Option<Value>,
}

impl JoinParams {
    pub(super) fn parse(payload: Option<&RawValue>) -> JoinParams {
        let Some(v) = payload.and_then(|p| serde_json::from_str::<Value>(p.get()).ok()) else {
            return JoinParams::default();
        };
        let config = &v["config"];
        let presence_key = match &config["presence"]["key"] {
            Value::Null => None,
            Value::String(s) if s.is_empty() => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        };
        JoinParams {
            ack: flexible_bool(&config["broadcast"]["ack"]),
            self_broadcast: flexible_bool(&config["broadcast"]["self"]),
            presence_enabled: flexible_bool(&config["presence"]["enabled"]),
            presence_key,
            private: flexible_bool(&config["private"]),
            postgres_changes: config["postgres_changes"].as_array().cloned().unwrap_or_default(),
            access_token: channel_token(&v["access_token"]).or_else(|| channel_token(&v["user_token"])),
            changes_wait: flexible_bool(&config["postgres_changes_options"]["wait"]),
            changes_wait_timeout: wait_timeout(&config["postgres_changes_options"]["timeout"]),
            changes_since: Since::parse(&config["postgres_changes_options"]["since"]),
            broadcast_since: Since::parse(&config["broadcast"]["since"]),
            replication_ready: flexible_bool(&config["broadcast"]["replication_ready"]),
            replay: Some(config["broadcast"]["replay"].clone()).filter(|r| !r.is_null()),
        }
    }
}

/// A registry entry made before its join is answered (a channel with a replay, see
/// `channels::gate::ReplaySeam`): dropped, it unregisters the channel, so a join that fails, or
/// whose task ends while the replay is read, leaves nothing behind.
struct EarlyEntry {
    node: std::sync::Arc<crate::node::Node>,
    key: TopicKey,
    id: SubscriberId,
    /// The channel is kept (from here on the session's channel list owns the entry).
    kept: bool,
}

impl Drop for EarlyEntry {
    fn drop(&mut self) {
        if !self.kept {
            self.node.registry.unsubscribe(&self.key, self.id);
        }
    }
}

/// Supabase's default for `postgres_changes_options.timeout`.
pub(super) const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_millis(15_000);
/// Supabase's `postgres_changes_wait_max_timeout`: longer timeouts are cut to it.
pub(super) const MAX_WAIT_TIMEOUT: Duration = Duration::from_millis(20_000);

/// `postgres_changes_options.timeout`: milliseconds, a positive integer (else the default),
/// at most [`MAX_WAIT_TIMEOUT`].
fn wait_timeout(v: &Value) -> Option<Duration> {
    let ms = v.as_i64().filter(|ms| *ms > 0)?;
    Some(Duration::from_millis(ms as u64).min(MAX_WAIT_TIMEOUT))
}

/// Whether some `postgres_changes` binding of the join asks for a snapshot.
fn asks_snapshot(params: &JoinParams) -> bool {
    params.postgres_changes.iter().any(|b| {
        !matches!(
            b.get("snapshot"),
            None | Some(Value::Null) | Some(Value::Bool(false))
        )
    })
}

/// Supabase's `FlexibleBoolean`: a boolean or the strings "true"/"false" in any case.
fn flexible_bool(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::String(s) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// A token usable for a channel: new-style `sb_` API keys are not JWTs and are ignored (the
/// socket's key is used instead).
pub(super) fn channel_token(v: &Value) -> Option<String> {
    v.as_str()
        .filter(|t| !t.trim().is_empty() && !t.starts_with("sb_"))
        .map(str::to_owned)
}

/// The monotonic instant of Unix time `exp` (seconds).
pub(super) fn expiry_instant(exp: i64) -> Instant {
    let at = UNIX_EPOCH + Duration::from_secs(exp.max(0) as u64);
    Instant::now() + at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO)
}

/// The code a join reason starts with (`"Unauthorized: …"` → `"Unauthorized"`), or `"other"`.
fn reason_code(reason: &str) -> &str {
    match reason.split_once(':') {
        Some((code, _)) if !code.is_empty() && code.chars().all(|c| c.is_ascii_alphanumeric()) => code,
        _ => "other",
    }
}

pub(super) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Session {
    pub(super) async fn join(&mut self, mut msg: Inbound) {
        // Phoenix uses the join's ref when the client sends no join_ref.
        if msg.join_ref.is_none() {
            msg.join_ref = msg.msg_ref.clone();
        }
        // Topics outside `realtime:` are not channels (Phoenix answers them at once).
        let topic = topic::sub_topic(&msg.topic);
        if topic == Err(TopicError::Unmatched) {
            return self.reply(&msg, Status::Error, UNMATCHED);
        }
        // Every channel join counts, refused ones included: each refusal waits out the error
        // backoff in this session, so uncounted ones would pile up without bound.
        let limits = &self.node.limits;
        let second = limits.second(Instant::now());
        if !self
            .joins
            .hit(second, limits.limits.max_joins_per_second_per_socket)
        {
            return self.join_error(&msg, TOO_MANY_JOINS_REASON, Some(Close::JoinRate));
        }
        let sub_topic = match topic {
            Ok(sub) => sub.to_owned(),
            Err(e) => return self.join_error(&msg, &e.to_string(), None),
        };
        // A second join of a joined topic replaces the first channel.
        if self.channel(&msg.topic).is_some() {
            self.close_channel(&msg.topic);
        }
        let params = JoinParams::parse(msg.payload.as_json());
        if !params.private && self.node.config.server.private_only {
            return self.join_error(&msg, PRIVATE_ONLY_REASON, None);
        }

        let limits = &self.node.config.server.limits;
        if self.channels.len() >= limits.max_channels_per_client {
            return self.join_error(&msg, TOO_MANY_CHANNELS_REASON, None);
        }
        if params.postgres_changes.len() > limits.max_changes_bindings_per_join {
            return self.join_error(&msg, TOO_MANY_BINDINGS_REASON, None);
        }
        let token = params.access_token.as_deref().unwrap_or(&self.api_key);
        // Boxed: the verify future is large and would otherwise sit in every idle socket's task.
        let claims = match Box::pin(self.node.verifier.verify(token)).await {
            Ok(claims) => claims,
            Err(error) => {
                self.node.refusals.token_refused(error.code());
                return self.join_error(&msg, &error.join_reason(), None);
            }
        };
        // Strict when the role is about to be used in Postgres (the join has changes bindings).
        let strict = !params.postgres_changes.is_empty();
        if let Err(refusal) = Box::pin(self.node.roles.check(&claims.role, strict)).await {
            tracing::info!(reason = %refusal, "refused a join: its token's role is not allowed");
            return self.join_error(&msg, &refusal.join_reason(), None);
        }
        let subject = match params.access_token {
            None => self.slot.subject().clone(),
            Some(_) => self.node.limits.subject(&Subject::of(&claims, self.ip)),
        };
        let node_limits = &self.node.limits;
        let now = Instant::now();
        if !node_limits.join_budgets(&subject, self.slot.address(), now) {
            return self.join_error(&msg, TOO_MANY_JOINS_REASON, Some(Close::JoinRate));
        }
        // The node's pace: in a reconnect storm joins wait their turn rather than fail.
        match node_limits.join(now) {
            None => return self.join_error(&msg, TOO_MANY_JOINS_REASON, Some(Close::JoinRate)),
            Some(wait) if !wait.is_zero() => tokio::time::sleep(wait).await,
            Some(_) => {}
        }
        let limits = &self.node.config.server.limits;
        let access = if params.private {
            let presence = params.presence_enabled || params.presence_key.is_some();
            // std's clock: the metric records the real time authorization took.
            let started = std::time::Instant::now();
            let access = Box::pin(self.node.private_access(&sub_topic, &claims, presence)).await;
            crate::metrics::events().authorized(started.elapsed());
            match access {
                Ok(access) => access,
                Err(error) => return self.join_error(&msg, &error.to_string(), None),
            }
        } else {
            ChannelAccess::ALL
        };
        if !access.can_join() {
            let reason = format!(
                "Unauthorized: You do not have permissions to read from this Channel topic: {sub_topic}"
            );
            return self.join_error(&msg, &reason, None);
        }

        let replay = match self.replay_request(&sub_topic, &params, &access) {
            Ok(replay) => replay,
            Err(reason) => return self.join_error(&msg, &reason, None),
        };

        let mut ch = Channel {
            key: TopicKey::new(&sub_topic, params.private),
            join_ref: msg.join_ref.as_deref().map(JoinRef::new),
            id: SubscriberId::next(),
            ack: params.ack,
            self_broadcast: params.self_broadcast,
            presence_enabled: params.presence_enabled || params.presence_key.is_some(),
            token: params.access_token.as_deref().map(Box::from),
            exp: claims.exp,
            expires_at: expiry_instant(claims.exp),
            access,
            presence: None,
            changes: None,
            subject,
            db_resume: self.db_resume_gate(&params),
            replay: replay.map(|_| Default::default()),
        };
        if let Some(key) = &params.presence_key {
            ch.presence_mut(limits).key = Some(key.clone());
        }
        // Order matters: the reply goes first, then the channel is registered (from here on it
        // receives diffs and broadcasts), then the presence state is read. A diff racing the
        // join may arrive twice, never zero times. A channel with a replay is registered before
        // the stored messages are read, behind its seam (see `channels::gate::ReplaySeam`).
        let requested = postgres_changes::parse(&params.postgres_changes);
        let response =
            serde_json::json!({ "postgres_changes": postgres_changes::reply(&requested) }).to_string();
        // Changes subscribe after the reply, unless the client asked to wait until they are live
        // (then a refused binding or the timeout fails the join, as on Supabase). A resuming
        // subscription misses nothing whenever it starts, and its replay must follow the reply
        // (realtime-js routes pushes by the binding ids the reply carries): it never waits, and
        // neither does a join asking for a snapshot, whose rows must follow the reply too.
        let wait = params.changes_wait
            && params.changes_since.is_none()
            && !requested.is_empty()
            && !asks_snapshot(&params);
        let since = params.changes_since.as_ref();
        let waited = if wait {
            let timeout = params.changes_wait_timeout.unwrap_or(DEFAULT_WAIT_TIMEOUT);
            match Box::pin(self.await_changes(&claims, &requested, timeout)).await {
                Ok(live) => Some(live),
                Err(reason) => return self.join_error(&msg, &reason, None),
            }
        } else {
            None
        };
        let mut replayed = Vec::new();
        if let Some(replay) = replay {
            self.node.registry.subscribe(&ch.key, self.subscriber(&ch));
            let mut entry = EarlyEntry {
                node: self.node.clone(),
                key: ch.key.clone(),
                id: ch.id,
                kept: false,
            };
            match Box::pin(self.fetch_replay(&sub_topic, replay)).await {
                Ok(rows) => {
                    replayed = rows;
                    entry.kept = true;
                }
                // Dropping the entry unregisters the channel.
                Err(reason) => return self.join_error(&msg, &reason, None),
            }
        }
        self.reply(&msg, Status::Ok, &response);
        self.open_replay(&ch, &replayed, &msg.topic);
        ch.key = self.node.registry.subscribe(&ch.key, self.subscriber(&ch));
        self.request_db_resume(&ch, &params);
        if params.replication_ready {
            self.announce_replication_ready(&ch, &msg.topic);
        }
        if ch.presence_enabled && ch.access.presence_read {
            // In a cluster, the first join of a topic on this node waits (bounded) for the
            // other nodes' entries, so the state holds the whole cluster's members.
            if let Some(relay) = &self.node.relay {
                relay.synced(&ch.key).await;
            }
            self.push_presence_state(&ch, &msg.topic);
        }
        if !requested.is_empty() {
            let target = Target {
                topic: &msg.topic,
                sub_topic: &sub_topic,
                join_ref: msg.join_ref.as_deref(),
                id: ch.id,
                since,
                snapshot: true,
            };
            let subscribed = match waited {
                Some(live) => self.start_changes(target, &claims, live),
                None => Box::pin(self.subscribe_changes(target, &claims, &requested)).await,
            };
            ch.set_changes(subscribed.live, subscribed.snapshot);
        }
        self.add_channel(ch);
        crate::metrics::events().joins.add("accepted");
        tracing::Span::current().record("outcome", "accepted");
    }

    fn join_error(&mut self, msg: &Inbound, reason: &str, then: Option<Close>) {
        self.node.refusals.join_refused(reason);
        crate::metrics::events().joins.add("refused");
        // The `join` span: the reason's code only (the message after it may name the topic).
        let span = tracing::Span::current();
        span.record("outcome", "refused");
        span.record("reason", reason_code(reason));
        let response = serde_json::json!({ "reason": reason }).to_string();
        let frame = self.reply_frame(msg, Status::Error, &response);
        self.send_delayed(frame, then);
    }

    pub(super) fn push_presence_state(&self, ch: &Channel, topic: &str) {
        let state = self.node.presence.state(&ch.key);
        self.push(ch.join_ref.as_deref(), topic, "presence_state", &state);
    }

    /// The expiry time of the channel on `topic` has come: close it, unless the wall clock
    /// says otherwise (it was moved), in which case the check moves to the new time.
    pub(super) fn token_expired(&mut self, topic: &str) {
        let now = unix_now();
        let Some(ch) = self.channel_mut(topic) else {
            return;
        };
        if ch.exp > now {
            ch.expires_at = expiry_instant(ch.exp);
            return;
        }
        let message = format!("Token has expired {} seconds ago", now - ch.exp);
        self.shutdown_channel(topic, &message);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(json: &str) -> JoinParams {
        JoinParams::parse(Some(&RawValue::from_string(json.to_owned()).unwrap()))
    }

    #[test]
    fn reads_realtime_js_join_payloads() {
        let p = parse(
            r#"{"config":{"broadcast":{"ack":true,"self":"TRUE"},"presence":{"key":"u1","enabled":false},
                "postgres_changes":[{"event":"*","schema":"public"}],"private":"true"},
               "access_token":"eyJ.x.y","version":"realtime-js/2.112.2"}"#,
        );
        assert!(p.ack && p.self_broadcast && p.private);
        assert!(!p.presence_enabled);
        assert_eq!(p.presence_key.as_deref(), Some("u1"));
        assert_eq!(p.postgres_changes.len(), 1);
        assert_eq!(p.access_token.as_deref(), Some("eyJ.x.y"));
    }

    #[test]
    fn reason_codes_never_carry_the_message() {
        assert_eq!(
            reason_code("Unauthorized: You do not have permissions to read from this Channel topic: room"),
            "Unauthorized"
        );
        assert_eq!(reason_code(TOO_MANY_JOINS_REASON), "ClientJoinRateLimitReached");
        assert_eq!(reason_code("unmatched topic"), "other");
        assert_eq!(reason_code("a b: c"), "other");
    }

    #[test]
    fn reads_the_resume_position() {
        let p = parse(
            r#"{"config":{"postgres_changes_options":{"since":"0000000000000009-0000000000000100-00000002"}}}"#,
        );
        assert!(matches!(p.changes_since, Some(Since::Position(_))));
        let p = parse(r#"{"config":{"postgres_changes_options":{"since":"yesterday"}}}"#);
        assert!(matches!(p.changes_since, Some(Since::Invalid(_))));
        let p = parse(r#"{"config":{"postgres_changes_options":{"since":null,"wait":true}}}"#);
        assert_eq!((p.changes_since, p.changes_wait), (None, true));
        assert_eq!(p.changes_wait_timeout, None);
    }

    #[test]
    fn the_wait_timeout_is_positive_and_clamped() {
        let timeout = |t: &str| {
            parse(&format!(
                r#"{{"config":{{"postgres_changes_options":{{"wait":true,"timeout":{t}}}}}}}"#
            ))
            .changes_wait_timeout
        };
        assert_eq!(timeout("1500"), Some(Duration::from_millis(1500)));
        assert_eq!(timeout("600000"), Some(MAX_WAIT_TIMEOUT));
        for invalid in ["0", "-5", "1.5", "\"3000\"", "null"] {
            assert_eq!(timeout(invalid), None, "{invalid}");
        }
    }

    #[test]
    fn lenient_defaults_and_token_fallbacks() {
        assert_eq!(parse("{}"), JoinParams::default());
        assert_eq!(parse("[1]"), JoinParams::default());
        let p = parse(r#"{"config":{"presence":{"key":""},"broadcast":{"self":1}},"user_token":"legacy"}"#);
        assert_eq!(p.presence_key, None);
        assert!(!p.self_broadcast);
        assert_eq!(p.access_token.as_deref(), Some("legacy"));
        assert_eq!(parse(r#"{"access_token":"sb_publishable_x"}"#).access_token, None);
        assert_eq!(
            parse(r#"{"config":{"presence":{"key":7}}}"#)
                .presence_key
                .as_deref(),
            Some("7")
        );
    }
}
