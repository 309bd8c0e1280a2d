//! Resuming a Postgres Changes subscription from a position: the `since` a client sends, and
//! the `system` messages that tell it how resuming went.
//!
//! A client joins with `config.postgres_changes_options.since` set to the `position` of the
//! last change it processed. It then gets every change after it that it may see, in commit
//! order, then the live stream, with one `system` message at the seam; or, when that is not
//! possible, one `system` message with `"refetch": true` and the live stream (see
//! `docs/protocol.md`). Pure.

use serde_json::Value;

use crate::change::Position;

/// What a join asked for with `postgres_changes_options.since`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Since {
    /// A position to resume after.
    Position(Position),
    /// A `since` that is not a position: the message says what is wrong with it.
    Invalid(String),
}

impl Since {
    /// Reads `postgres_changes_options.since`; `None` when absent or null.
    pub fn parse(value: &Value) -> Option<Since> {
        match value {
            Value::Null => None,
            Value::String(text) => Some(match text.parse::<Position>() {
                Ok(position) => Since::Position(position),
                Err(e) => Since::Invalid(e.to_string()),
            }),
            _ => Some(Since::Invalid(
                "it must be a string, the `position` of a postgres_changes message".to_owned(),
            )),
        }
    }
}

/// Why a subscription must refetch instead of resuming or continuing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refetch {
    /// `since` is older than the resume window.
    OutsideWindow,
    /// `since` is from an earlier history of the stream.
    OtherEpoch,
    /// `since` is not a position.
    InvalidPosition,
    /// Changes were lost on their way to the subscription (the dispatcher fell behind the
    /// stream, or the stream started a new history while the subscription followed it).
    Gap,
    /// Grants, policies or roles changed between `since` and now: the changes in between cannot
    /// be authorized as they were when committed.
    AccessChanged,
    /// Postgres's row-level security decides what the subscriber sees of a table the replay
    /// reached: Postgres can check rows only as they are now, not as they were when committed.
    RowSecurity,
}

impl Refetch {
    /// The machine-readable `reason` of the `system` message.
    pub fn code(self) -> &'static str {
        match self {
            Refetch::OutsideWindow => "outside_window",
            Refetch::OtherEpoch => "other_epoch",
            Refetch::InvalidPosition => "invalid_position",
            Refetch::Gap => "gap",
            Refetch::AccessChanged => "access_changed",
            Refetch::RowSecurity => "row_security",
        }
    }

    fn explanation(self) -> &'static str {
        match self {
            Refetch::OutsideWindow => {
                "Cannot resume: the changes after the given position are no longer kept (it is older than the resume window)"
            }
            Refetch::OtherEpoch => {
                "Cannot resume: the position is from an earlier history of the change stream (the replication slot was recreated or the database replaced)"
            }
            Refetch::InvalidPosition => "Cannot resume: invalid postgres_changes_options.since",
            Refetch::Gap => "Changes were lost on their way to this channel",
            Refetch::AccessChanged => {
                "Cannot resume: grants, policies or roles changed since the given position, so the changes in between cannot be authorized as they were when committed"
            }
            Refetch::RowSecurity => {
                "Cannot resume: row-level security decides what this channel may see of a changed table, and Postgres can check rows only as they are now, not as they were when committed"
            }
        }
    }
}

const THEN: &str = "Refetch the data; changes from here on are delivered live.";

/// The `system` payload telling a channel to refetch. `detail` adds what was wrong (for an
/// invalid `since`).
pub fn refetch_payload(sub_topic: &str, reason: Refetch, detail: Option<&str>) -> String {
    let message = match detail {
        Some(detail) => format!("{}: {detail}. {THEN}", reason.explanation()),
        None => format!("{}. {THEN}", reason.explanation()),
    };
    serde_json::Value::Object(refetch_object(sub_topic, reason.code(), message)).to_string()
}

/// The fields every refetch signal shares (resume refusals, gaps, oversized transactions):
/// callers may add their own before sending.
pub fn refetch_object(
    sub_topic: &str,
    reason: &str,
    message: String,
) -> serde_json::Map<String, serde_json::Value> {
    let mut map = serde_json::Map::new();
    map.insert("channel".into(), sub_topic.into());
    map.insert("extension".into(), "postgres_changes".into());
    map.insert("message".into(), message.into());
    map.insert("reason".into(), reason.into());
    map.insert("refetch".into(), true.into());
    map.insert("status".into(), "error".into());
    map
}

/// The `system` payload at the seam of a successful resume: everything after `since` was sent,
/// live changes follow.
pub fn resumed_payload(sub_topic: &str, since: &Position) -> String {
    serde_json::json!({
        "channel": sub_topic,
        "extension": "postgres_changes",
        "message": format!("Resumed after {since}: every change since then was sent; live from here"),
        "resumed": true,
        "status": "ok",
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::change::Epoch;
    use crate::lsn::Lsn;

    #[test]
    fn since_is_a_position_string_or_a_specific_error() {
        let p = Position {
            epoch: Epoch(9),
            commit_lsn: Lsn(0x100),
            index: 2,
        };
        assert_eq!(Since::parse(&json!(null)), None);
        assert_eq!(Since::parse(&json!(p.to_string())), Some(Since::Position(p)));
        let Some(Since::Invalid(message)) = Since::parse(&json!("nope")) else {
            panic!("refused")
        };
        assert!(message.contains("42 characters"), "{message}");
        let Some(Since::Invalid(message)) = Since::parse(&json!(17)) else {
            panic!("refused")
        };
        assert!(message.contains("must be a string"), "{message}");
    }

    #[test]
    fn refetch_messages_name_their_reason_and_what_to_do() {
        let v: Value =
            serde_json::from_str(&refetch_payload("room", Refetch::OutsideWindow, None)).unwrap_or_default();
        assert_eq!(v["channel"], "room");
        assert_eq!(v["extension"], "postgres_changes");
        assert_eq!(v["status"], "error");
        assert_eq!(v["refetch"], true);
        assert_eq!(v["reason"], "outside_window");
        assert!(
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("Refetch the data")),
            "{v}"
        );
        let v: Value = serde_json::from_str(&refetch_payload(
            "room",
            Refetch::InvalidPosition,
            Some("character 3 is wrong"),
        ))
        .unwrap_or_default();
        assert_eq!(v["reason"], "invalid_position");
        assert!(
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("since: character 3 is wrong. Refetch")),
            "{v}"
        );
        let p = Position {
            epoch: Epoch(9),
            commit_lsn: Lsn(0x100),
            index: 2,
        };
        let v: Value = serde_json::from_str(&resumed_payload("room", &p)).unwrap_or_default();
        assert_eq!(
            (v["status"].as_str(), v["resumed"].as_bool()),
            (Some("ok"), Some(true))
        );
    }
}
