//! Supabase's broadcast replay: a private channel joined with `config.broadcast.replay =
//! {"since": <epoch ms>, "limit": <n>}` first gets the newest `limit` (1..=25, default 25)
//! database broadcasts of its topic stored since `since`, oldest first, each with
//! `meta.replayed: true`, right after the join reply. Rows are read from `realtime.messages` as
//! the service's role (no RLS: the join's read check already passed).
//!
//! Beyond this, `config.broadcast.since` resumes from a position without a row cap (see `resume`).

use bytes::Bytes;
use serde_json::Value;
use serde_json::value::RawValue;
use sqlx::PgPool;

use crate::broadcast::{Body, Broadcast};
use crate::protocol::phoenix::{self, UserData, Vsn};
use crate::protocol::ws_frame;
use crate::telemetry::chain;

/// The most rows one replay sends (Supabase's cap).
pub const MAX_LIMIT: i64 = 25;

/// Why a replay fails the join; `Display` is Supabase's reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("UnableToReplayMessages: Replay is not allowed for public channels")]
    PublicChannel,
    #[error("UnableToReplayMessages: Replay params are not valid")]
    InvalidParams,
    #[error("UnableToReplayMessages: Realtime was unable to replay messages")]
    Database,
}

/// What the join asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayParams {
    /// Milliseconds since the Unix epoch.
    pub since: i64,
    pub limit: i64,
}

impl ReplayParams {
    /// Reads `config.broadcast.replay`: `since` must be an integer; `limit` defaults to 25 and
    /// is clamped to 1..=25.
    pub fn parse(value: &Value) -> Result<ReplayParams, ReplayError> {
        let since = value["since"].as_i64().ok_or(ReplayError::InvalidParams)?;
        let limit = match &value["limit"] {
            Value::Null => MAX_LIMIT,
            v => v.as_i64().ok_or(ReplayError::InvalidParams)?.clamp(1, MAX_LIMIT),
        };
        Ok(ReplayParams { since, limit })
    }
}

/// One stored message to replay.
#[derive(Debug)]
pub struct Replayed {
    /// The row's id (its live copy carries it as `meta.id`).
    pub id: String,
    pub broadcast: Broadcast,
}

/// A stored row: id, event, JSON payload text, binary payload.
type Row = (String, Option<String>, Option<String>, Option<Vec<u8>>);

/// The rows to replay, oldest first.
pub async fn fetch(
    pool: &PgPool,
    sub_topic: &str,
    params: ReplayParams,
) -> Result<Vec<Replayed>, ReplayError> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id::text, event, payload::text, binary_payload FROM realtime.messages \
         WHERE topic = $1 AND private IS TRUE AND extension = 'broadcast' \
           AND inserted_at >= (to_timestamp($2::float8 / 1000) AT TIME ZONE 'utc') \
           AND inserted_at < (now() AT TIME ZONE 'utc') + interval '1 minute' \
         ORDER BY inserted_at DESC LIMIT $3",
    )
    .bind(sub_topic)
    .bind(params.since as f64)
    .bind(params.limit)
    .fetch_all(pool)
    .await
    .map_err(|error| {
        tracing::warn!(error = %chain(&error), topic = sub_topic, "cannot replay broadcasts");
        ReplayError::Database
    })?;
    Ok(rows
        .into_iter()
        .rev()
        .filter_map(|(id, event, payload, binary)| {
            let data = match (binary, payload) {
                (Some(bytes), _) => UserData::Binary(Bytes::from(bytes)),
                (None, Some(json)) => UserData::Json(RawValue::from_string(json).ok()?),
                (None, None) => return None,
            };
            let meta = serde_json::json!({ "id": id, "replayed": true }).to_string();
            Some(Replayed {
                id,
                broadcast: Broadcast {
                    event: event?,
                    body: Body::Data(data),
                    meta: RawValue::from_string(meta).ok(),
                },
            })
        })
        .collect())
}

/// The frame of a replayed message: a push with the channel's join ref (JSON rows as text
/// frames, binary rows as kind 4 to vsn 2.0.0); `None` for binary rows to vsn 1.0.0.
pub fn frame(replayed: &Replayed, vsn: Vsn, wire_topic: &str, join_ref: Option<&str>) -> Option<Bytes> {
    let b = &replayed.broadcast;
    match (&b.body, vsn) {
        (Body::Data(data @ UserData::Binary(_)), Vsn::V2) => {
            let meta = b.meta.as_deref().map_or("", RawValue::get);
            phoenix::encode_user_broadcast(wire_topic, &b.event, meta, data).map(|f| ws_frame::binary(&f))
        }
        (Body::Data(UserData::Binary(_)), Vsn::V1) => None,
        _ => {
            let payload = b.text_payload()?;
            Some(ws_frame::text(&phoenix::encode_text(
                vsn,
                join_ref,
                None,
                wire_topic,
                "broadcast",
                &payload,
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn params_follow_supabase() {
        assert_eq!(
            ReplayParams::parse(&json!({"since": 5})),
            Ok(ReplayParams { since: 5, limit: 25 })
        );
        assert_eq!(
            ReplayParams::parse(&json!({"since": 5, "limit": 100})),
            Ok(ReplayParams { since: 5, limit: 25 })
        );
        assert_eq!(
            ReplayParams::parse(&json!({"since": 5, "limit": 0})),
            Ok(ReplayParams { since: 5, limit: 1 })
        );
        for bad in [
            json!({}),
            json!({"since": "yesterday"}),
            json!({"since": 1.5}),
            json!({"since": 1, "limit": "x"}),
        ] {
            assert_eq!(
                ReplayParams::parse(&bad),
                Err(ReplayError::InvalidParams),
                "{bad}"
            );
        }
    }
}
