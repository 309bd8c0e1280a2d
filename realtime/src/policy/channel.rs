//! Channel rules: who may read and write broadcast and presence on a private channel.
//!
//! A rule grants its actions on the topics its pattern matches when its condition is true for
//! the caller's claims and the topic's parameters. Rules only grant; what no rule grants is
//! denied.

use serde_json::{Map, Value as Json};

use super::expr::{Context, Expr, Value};
use super::topic::TopicPattern;
use crate::auth::Claims;

/// What a caller may do on one private channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelAccess {
    pub broadcast_read: bool,
    pub broadcast_write: bool,
    pub presence_read: bool,
    pub presence_write: bool,
}

impl ChannelAccess {
    pub const ALL: ChannelAccess = ChannelAccess {
        broadcast_read: true,
        broadcast_write: true,
        presence_read: true,
        presence_write: true,
    };

    /// Joining a private channel needs read access to broadcast or presence (as in Supabase).
    pub fn can_join(&self) -> bool {
        self.broadcast_read || self.presence_read
    }

    pub(super) fn union(self, other: ChannelAccess) -> ChannelAccess {
        ChannelAccess {
            broadcast_read: self.broadcast_read || other.broadcast_read,
            broadcast_write: self.broadcast_write || other.broadcast_write,
            presence_read: self.presence_read || other.presence_read,
            presence_write: self.presence_write || other.presence_write,
        }
    }

    /// Whether `self` already has everything `other` has.
    fn covers(self, other: ChannelAccess) -> bool {
        self.union(other) == self
    }

    /// Reads an action name of a policy file.
    pub fn from_action(name: &str) -> Option<ChannelAccess> {
        let none = ChannelAccess::default();
        Some(match name {
            "broadcast.read" => ChannelAccess {
                broadcast_read: true,
                ..none
            },
            "broadcast.write" => ChannelAccess {
                broadcast_write: true,
                ..none
            },
            "presence.read" => ChannelAccess {
                presence_read: true,
                ..none
            },
            "presence.write" => ChannelAccess {
                presence_write: true,
                ..none
            },
            "broadcast" => ChannelAccess {
                broadcast_read: true,
                broadcast_write: true,
                ..none
            },
            "presence" => ChannelAccess {
                presence_read: true,
                presence_write: true,
                ..none
            },
            _ => return None,
        })
    }
}

/// The action names a policy file may use.
pub(super) const ACTIONS: &[&str] = &[
    "broadcast.read",
    "broadcast.write",
    "presence.read",
    "presence.write",
    "broadcast",
    "presence",
];

/// One `[[channel]]` rule, validated.
#[derive(Clone, Debug)]
pub struct ChannelRule {
    pub description: Option<String>,
    pub pattern: TopicPattern,
    pub grants: ChannelAccess,
    pub when: Expr,
}

/// What a channel rule's condition reads: the claims, the topic and its parameters.
struct ChannelContext<'a> {
    claims: &'a Map<String, Json>,
    topic: &'a str,
    params: &'a [(&'a str, &'a str)],
}

impl Context for ChannelContext<'_> {
    fn claims(&self) -> Option<&Map<String, Json>> {
        Some(self.claims)
    }

    fn var(&self, name: &str) -> Value {
        self.params
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(Value::Null, |(_, v)| Value::Text((*v).to_owned()))
    }

    fn topic(&self) -> Option<&str> {
        Some(self.topic)
    }
}

/// The access `rules` give `claims` on `sub_topic`: the union of every matching rule whose
/// condition is true.
pub(super) fn access(rules: &[ChannelRule], sub_topic: &str, claims: &Claims) -> ChannelAccess {
    let mut granted = ChannelAccess::default();
    for rule in rules {
        if granted.covers(rule.grants) {
            continue;
        }
        let Some(params) = rule.pattern.matches(sub_topic) else {
            continue;
        };
        let ctx = ChannelContext {
            claims: &claims.all,
            topic: sub_topic,
            params: &params,
        };
        if rule.when.is_true(&ctx) {
            granted = granted.union(rule.grants);
            if granted == ChannelAccess::ALL {
                break;
            }
        }
    }
    granted
}
