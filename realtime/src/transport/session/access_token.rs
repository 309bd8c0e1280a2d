//! `access_token`: the client refreshes a channel's token (realtime-js does so whenever its
//! session token changes). No reply. A refused token (its signature, its role), or one that no
//! longer grants read access to a private channel, shuts the channel down with a `system`
//! error; a good one moves the expiry timer. The same token sent again changes nothing (no
//! verification, no new Postgres Changes subscription). At most `max_access_tokens_per_second`
//! per socket: past it the channel is shut down.

use serde_json::Value;

use super::Session;
use super::join::channel_token;
use super::postgres_changes::{Requested, Target};
use crate::changes::snapshot::failed_payload;
use crate::limits::{Subject, TOO_MANY_ACCESS_TOKENS};
use crate::protocol::phoenix::Inbound;

impl Session {
    pub(super) async fn access_token(&mut self, msg: &Inbound) {
        let Some(token) = msg
            .payload
            .as_json()
            .and_then(|raw| serde_json::from_str::<Value>(raw.get()).ok())
            .and_then(|v| channel_token(&v["access_token"]))
        else {
            return;
        };
        let limits = &self.node.limits;
        let second = limits.second(tokio::time::Instant::now());
        if !self
            .access_tokens
            .hit(second, limits.limits.max_access_tokens_per_second)
        {
            return self.shutdown_channel(&msg.topic, TOO_MANY_ACCESS_TOKENS);
        }
        let Some(ch) = self.channel(&msg.topic) else {
            return;
        };
        if ch.token.as_deref().unwrap_or(&self.api_key) == token {
            return;
        }
        let strict = !ch.bindings().is_empty();
        // Boxed: the verify future is large (see `join`).
        let claims = match Box::pin(self.node.verifier.verify(&token)).await {
            Ok(claims) => claims,
            Err(error) => {
                self.node.refusals.token_refused(error.code());
                return self.shutdown_channel(&msg.topic, &error.to_string());
            }
        };
        if let Err(refusal) = Box::pin(self.node.roles.check(&claims.role, strict)).await {
            return self.shutdown_channel(&msg.topic, &refusal.to_string());
        }
        let subject = self.node.limits.subject(&Subject::of(&claims, self.ip));
        let Some(ch) = self.channel(&msg.topic) else {
            return;
        };
        let access = if ch.key.is_private() {
            let (sub_topic, presence) = (ch.key.sub_topic().to_owned(), ch.presence_enabled);
            let access = match Box::pin(self.node.private_access(&sub_topic, &claims, presence)).await {
                Ok(access) => access,
                Err(error) => return self.shutdown_channel(&msg.topic, &error.to_string()),
            };
            let Some(ch) = self.channel(&msg.topic) else {
                return;
            };
            if !access.can_join() {
                let message = format!(
                    "You no longer have permission to read from this Channel topic: {}",
                    ch.key.sub_topic()
                );
                return self.shutdown_channel(&msg.topic, &message);
            }
            access
        } else {
            ch.access
        };
        let Some(ch) = self.channel_mut(&msg.topic) else {
            return;
        };
        let changed = ch.access != access;
        ch.subject = subject;
        ch.token = Some(token.into());
        ch.exp = claims.exp;
        ch.access = access;
        ch.expires_at = super::join::expiry_instant(claims.exp);
        if changed && let Some(ch) = self.channel(&msg.topic) {
            self.node.registry.subscribe(&ch.key, self.subscriber(ch));
        }
        // Postgres Changes follow the new claims: checked again, then re-subscribed.
        let Some(ch) = self.channel(&msg.topic) else {
            return;
        };
        if ch.bindings().is_empty() {
            return;
        }
        let requested: Requested = ch
            .bindings()
            .iter()
            .map(|b| (Value::Null, Ok(b.clone())))
            .collect();
        let (sub_topic, join_ref, id) = (ch.key.sub_topic().to_owned(), ch.join_ref.clone(), ch.id);
        // A snapshot still being read was read under the old claims and would subscribe with
        // them: it is stopped, and the channel told its rows are incomplete.
        if let Some(snapshot) = ch.snapshot()
            && snapshot.stop_if_running()
        {
            let refused = failed_payload(&sub_topic, "a new access token arrived while it was read", 1);
            self.push(join_ref.as_deref(), &msg.topic, "system", &refused);
        }
        let target = Target {
            topic: &msg.topic,
            sub_topic: &sub_topic,
            join_ref: join_ref.as_deref(),
            id,
            since: None,
            snapshot: false,
        };
        // The new subscription replaces the old one under the same id, so the dispatcher
        // carries on where it was: no change slips between the two.
        let live = Box::pin(self.subscribe_changes(target, &claims, &requested))
            .await
            .live;
        if live.is_empty() {
            self.unsubscribe_changes(id);
        }
        if let Some(ch) = self.channel_mut(&msg.topic) {
            // The stopped snapshot is kept so that leaving still stops it.
            let snapshot = ch.changes.take().and_then(|c| c.snapshot);
            ch.set_changes(live, snapshot);
        }
    }
}
