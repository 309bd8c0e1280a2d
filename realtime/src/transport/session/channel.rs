//! A joined channel, as its session sees it.

use std::sync::Arc;

use tokio::time::Instant;

use crate::changes::subscription::Binding;
use crate::channels::TopicKey;
use crate::channels::gate::ReplaySeam;
use crate::channels::registry::{Subscriber, SubscriberId};
use crate::db_broadcast::replay;
use crate::db_broadcast::resume::ResumeGate;

use crate::limits::{Budget, SlidingLog};
use crate::policy::ChannelAccess;

use super::Session;
use super::snapshot::SnapshotTask;

#[derive(Debug)]
pub(super) struct Channel {
    pub key: TopicKey,
    pub join_ref: Option<JoinRef>,
    /// This channel's identity in the registry and in presence.
    pub id: SubscriberId,
    /// `config.broadcast.ack`: acknowledge each broadcast with a reply.
    pub ack: bool,
    /// `config.broadcast.self`: receive one's own broadcasts.
    pub self_broadcast: bool,
    pub presence_enabled: bool,
    /// The token given in the join or a later `access_token` event; `None` means the socket's
    /// API key.
    pub token: Option<Box<str>>,
    /// Expiry of the channel's token, Unix seconds.
    pub exp: i64,
    /// When the expiry check runs (at `exp`).
    pub expires_at: Instant,
    /// Everything on public channels; what the policy grants on private ones.
    pub access: ChannelAccess,
    /// Set once the channel has a presence key or has called presence.
    pub presence: Option<Box<ChannelPresence>>,
    /// The rate budget of the channel token's subject (its broadcasts and presence count there).
    pub subject: Arc<Budget>,
    /// Set when the channel has Postgres Changes bindings.
    pub changes: Option<Box<ChannelChanges>>,
    /// Set when the channel resumes database broadcasts (`config.broadcast.since`).
    pub db_resume: Option<Arc<ResumeGate>>,
    /// Set when the channel was joined with `config.broadcast.replay` (Supabase's replay).
    pub replay: Option<Arc<ReplaySeam>>,
}

// Every idle socket holds its channels, and most channels only broadcast: the state of
// presence and of Postgres Changes is boxed, so a channel without them carries two null
// pointers instead of about 100 bytes.

/// A channel's join reference, echoed in every frame pushed on the channel. Clients number
/// their joins ("1", "2", …): a short reference is kept inline, so it costs no allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum JoinRef {
    Inline { len: u8, bytes: [u8; JoinRef::INLINE] },
    Heap(Box<str>),
}

impl JoinRef {
    const INLINE: usize = 22;

    pub(super) fn new(text: &str) -> Self {
        let mut bytes = [0; Self::INLINE];
        match (bytes.get_mut(..text.len()), u8::try_from(text.len())) {
            (Some(inline), Ok(len)) => {
                inline.copy_from_slice(text.as_bytes());
                JoinRef::Inline { len, bytes }
            }
            _ => JoinRef::Heap(text.into()),
        }
    }
}

impl std::ops::Deref for JoinRef {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            // Always valid UTF-8: the bytes were copied whole from a `&str`.
            JoinRef::Inline { len, bytes } => bytes
                .get(..usize::from(*len))
                .and_then(|b| std::str::from_utf8(b).ok())
                .unwrap_or_default(),
            JoinRef::Heap(text) => text,
        }
    }
}

/// A channel's presence: its key and whether it tracks, and its rate of presence calls.
#[derive(Debug)]
pub(super) struct ChannelPresence {
    /// `config.presence.key`; a UUID is generated on the first track when none was given.
    pub key: Option<String>,
    pub tracked: bool,
    pub calls: SlidingLog,
}

/// A channel's Postgres Changes.
#[derive(Debug)]
pub(super) struct ChannelChanges {
    /// The live bindings. Empty only while a snapshot stopped by a new token is kept (so that
    /// leaving still stops it); a channel with neither holds no `ChannelChanges`.
    pub live: Vec<Binding>,
    /// The snapshot being read for the bindings that asked for one.
    pub snapshot: Option<SnapshotTask>,
}

impl Channel {
    /// The live Postgres Changes bindings (empty: the channel has none).
    pub(super) fn bindings(&self) -> &[Binding] {
        self.changes.as_ref().map_or(&[], |c| &c.live)
    }

    pub(super) fn snapshot(&self) -> Option<&SnapshotTask> {
        self.changes.as_ref()?.snapshot.as_ref()
    }

    /// Replaces the channel's Postgres Changes.
    pub(super) fn set_changes(&mut self, live: Vec<Binding>, snapshot: Option<SnapshotTask>) {
        self.changes =
            (!live.is_empty() || snapshot.is_some()).then(|| Box::new(ChannelChanges { live, snapshot }));
    }

    pub(super) fn tracked(&self) -> bool {
        self.presence.as_ref().is_some_and(|p| p.tracked)
    }

    /// The channel's presence state, created on first use with the socket's limits.
    pub(super) fn presence_mut(&mut self, limits: &crate::config::server::Limits) -> &mut ChannelPresence {
        self.presence.get_or_insert_with(|| {
            Box::new(ChannelPresence {
                key: None,
                tracked: false,
                calls: SlidingLog::new(
                    limits.max_client_presence_events_per_window,
                    limits.client_presence_window,
                ),
            })
        })
    }

    /// Whether this channel is the one of wire topic `topic` (`realtime:<sub-topic>`).
    pub(super) fn is_on(&self, topic: &str) -> bool {
        topic.strip_prefix(crate::channels::topic::PREFIX) == Some(self.key.sub_topic())
    }
}

impl Session {
    pub(super) fn channel(&self, topic: &str) -> Option<&Channel> {
        self.channels.iter().find(|ch| ch.is_on(topic))
    }

    pub(super) fn channel_mut(&mut self, topic: &str) -> Option<&mut Channel> {
        self.channels.iter_mut().find(|ch| ch.is_on(topic))
    }

    pub(super) fn take_channel(&mut self, topic: &str) -> Option<Channel> {
        let i = self.channels.iter().position(|ch| ch.is_on(topic))?;
        Some(self.channels.swap_remove(i))
    }

    /// Adds a channel. Sockets usually hold one or two channels: the list grows one slot at a
    /// time so an idle socket carries no spare capacity.
    pub(super) fn add_channel(&mut self, ch: Channel) {
        self.channels.reserve_exact(1);
        self.channels.push(ch);
    }

    /// The registry entry of `ch` (who receives what follows from its access and settings).
    pub(super) fn subscriber(&self, ch: &Channel) -> Subscriber {
        Subscriber {
            id: ch.id,
            outbound: self.outbound.clone(),
            vsn: self.vsn,
            broadcast: ch.access.broadcast_read,
            presence: ch.presence_enabled && ch.access.presence_read,
            resume: ch.db_resume.clone(),
            replay: ch.replay.clone(),
        }
    }

    /// The gate of a channel that resumes database broadcasts (`config.broadcast.since`), when
    /// the node has them.
    pub(super) fn db_resume_gate(&self, params: &super::join::JoinParams) -> Option<Arc<ResumeGate>> {
        params.broadcast_since.as_ref()?;
        self.node.db_broadcasts.as_ref()?;
        Some(Arc::default())
    }

    /// Asks for the replay of missed database broadcasts; call once `ch` is registered.
    pub(super) fn request_db_resume(&self, ch: &Channel, params: &super::join::JoinParams) {
        let (Some(gate), Some(since), Some(service)) =
            (&ch.db_resume, &params.broadcast_since, &self.node.db_broadcasts)
        else {
            return;
        };
        service.resume(crate::db_broadcast::ResumeRequest {
            outbound: self.outbound.clone(),
            vsn: self.vsn,
            topic: ch.key.clone(),
            since: since.clone(),
            gate: gate.clone(),
        });
    }

    /// Checks the replay a join asks for (`config.broadcast.replay`): `None` when it asks for
    /// none; the error is the join's refusal reason.
    pub(super) fn replay_request(
        &self,
        sub_topic: &str,
        params: &super::join::JoinParams,
        access: &crate::policy::ChannelAccess,
    ) -> Result<Option<replay::ReplayParams>, String> {
        let Some(requested) = &params.replay else {
            return Ok(None);
        };
        if !params.private {
            return Err(replay::ReplayError::PublicChannel.to_string());
        }
        if !access.broadcast_read {
            return Err(format!(
                "Unauthorized: You do not have permissions to read from this Channel topic: {sub_topic}"
            ));
        }
        replay::ReplayParams::parse(requested)
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// Reads the stored broadcasts to replay; the error is the join's refusal reason.
    pub(super) async fn fetch_replay(
        &self,
        sub_topic: &str,
        params: replay::ReplayParams,
    ) -> Result<Vec<replay::Replayed>, String> {
        let Some(pool) = self.node.db_broadcasts.as_ref().and_then(|d| d.pool.as_ref()) else {
            return Err(replay::ReplayError::Database.to_string());
        };
        replay::fetch(pool, sub_topic, params)
            .await
            .map_err(|e| e.to_string())
    }

    /// Sends replayed broadcasts (after the join reply, before the presence state) and opens
    /// the channel's seam: live frames held while the replay was read follow, minus copies.
    pub(super) fn open_replay(&self, ch: &Channel, replayed: &[replay::Replayed], topic: &str) {
        let Some(seam) = &ch.replay else { return };
        let join_ref = ch.join_ref.as_deref();
        let frames = replayed
            .iter()
            .map(|r| {
                (
                    Box::from(r.id.as_str()),
                    replay::frame(r, self.vsn, topic, join_ref),
                )
            })
            .collect();
        seam.open(frames, |frame| {
            let _ = self.outbound.push(frame);
        });
    }

    /// Answers `config.broadcast.replication_ready` (after the join reply).
    pub(super) fn announce_replication_ready(&self, ch: &Channel, topic: &str) {
        let asker = crate::db_broadcast::ready::Asker {
            outbound: self.outbound.clone(),
            vsn: self.vsn,
            topic: topic.to_owned(),
            sub_topic: ch.key.sub_topic().to_owned(),
            join_ref: ch.join_ref.as_deref().map(str::to_owned),
        };
        crate::db_broadcast::ready::announce(&self.node.bus, asker, crate::db_broadcast::ready::TIMEOUT);
    }

    /// Removes `ch` from the registry and its presence from the topic.
    pub(super) fn forget(&self, ch: &Channel) {
        self.node.registry.unsubscribe(&ch.key, ch.id);
        if let Some(snapshot) = ch.snapshot() {
            snapshot.stop();
        }
        if !ch.bindings().is_empty() {
            self.unsubscribe_changes(ch.id);
        }
        if ch.tracked() {
            self.node.presence.untrack(&ch.key, ch.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::JoinRef;

    #[test]
    fn a_join_ref_reads_back_as_given_inline_or_not() {
        let long = "a join reference longer than twenty-two bytes";
        for text in ["", "1", "12345", "ünïcödé", "0123456789012345678901", long] {
            let join_ref = JoinRef::new(text);
            assert_eq!(&*join_ref, text);
            let inline = matches!(join_ref, JoinRef::Inline { .. });
            assert_eq!(inline, text.len() <= 22, "{text:?}");
        }
        assert_eq!(JoinRef::new("7"), JoinRef::new("7"));
        assert_ne!(JoinRef::new("7"), JoinRef::new("17"));
        assert_eq!(std::mem::size_of::<Option<JoinRef>>(), 24);
    }
}
