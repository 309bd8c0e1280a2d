//! One change → frames in the outbound queues of the sockets that may see it.
//!
//! Given the visibility decided for each claim group of a [`TablePlan`], each group's bindings
//! are matched once (event, filter), the `data` payload is encoded once per distinct view
//! (visible columns, old image), and the frame once per (topic, serializer, binding ids,
//! payload); the same `Bytes` then go to every socket of the group. Pushing never waits: a
//! socket whose queue is full is closed by its own session as a slow consumer. Pure apart from
//! the pushes.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use super::groups::{Group, TablePlan};
use crate::change::{ChangeKind, RowChange};
use crate::changes::payload::{PayloadLimits, View, encode_data, push_payload};
use crate::policy::{ColumnSet, OldImage, Visibility};
use crate::protocol::phoenix;

/// Pushes `change` to the plan's groups. `visibility(k)` is claim group `k`'s decision for
/// this change. Returns how many frames were queued.
pub fn fan_out<'v>(
    change: &RowChange,
    plan: &mut TablePlan,
    visibility: impl Fn(usize) -> &'v Visibility,
    limits: PayloadLimits,
) -> usize {
    if change.kind == ChangeKind::Truncate {
        return 0;
    }
    let primary_key = plan.facts.primary_key.clone();
    let mut payloads = Payloads::default();
    let mut frames: HashMap<(usize, Vec<u32>, usize), Bytes> = HashMap::new();
    let mut pushed = 0;
    for (k, claim_group) in plan.claim_groups.iter_mut().enumerate() {
        let Visibility::Visible {
            columns: visible,
            old,
        } = visibility(k)
        else {
            continue;
        };
        for group in &mut claim_group.groups {
            let Some(interest) = group.interest(change, visible, old, primary_key.as_ref()) else {
                continue;
            };
            let old = narrow_old(old, &interest.columns);
            let view = View {
                columns: &interest.columns,
                old: &old,
                has_primary_key: primary_key.is_some(),
                limits,
            };
            let Some((payload, data)) = payloads.get(change, &view) else {
                continue;
            };
            let frame = frames
                .entry((group.frame_class, interest.ids, payload))
                .or_insert_with_key(|(_, ids, _)| encode_push(group, change, ids, &data));
            for outbound in &group.outbounds {
                // A full queue closes that socket (its session sees the overflow); others go on.
                let _ = outbound.push(frame.clone());
            }
            pushed += group.outbounds.len();
        }
    }
    pushed
}

/// The `data` payloads of one change, one per distinct view.
#[derive(Default)]
struct Payloads {
    encoded: Vec<(ColumnSet, OldImage, Option<Arc<str>>)>,
}

impl Payloads {
    /// The payload's index (for frame sharing) and text; `None` when the change is not sent.
    fn get(&mut self, change: &RowChange, view: &View<'_>) -> Option<(usize, Arc<str>)> {
        let index = match self
            .encoded
            .iter()
            .position(|(columns, old, _)| columns == view.columns && old == view.old)
        {
            Some(i) => i,
            None => {
                let data = encode_data(change, view);
                self.encoded.push((view.columns.clone(), view.old.clone(), data));
                self.encoded.len() - 1
            }
        };
        let data = self.encoded[index].2.clone()?;
        Some((index, data))
    }
}

/// The old-image decision limited to the columns a push carries.
fn narrow_old(old: &OldImage, columns: &ColumnSet) -> OldImage {
    match old {
        OldImage::KeyOnly(keys) => OldImage::KeyOnly(keys.intersection(columns)),
        other => other.clone(),
    }
}

fn encode_push(group: &Group, change: &RowChange, ids: &[u32], data: &str) -> Bytes {
    let text = if group.legacy {
        phoenix::encode_text(group.vsn, None, None, &group.topic, change.kind.as_str(), data)
    } else {
        phoenix::encode_text(
            group.vsn,
            None,
            None,
            &group.topic,
            "postgres_changes",
            &push_payload(ids, &change.position, data),
        )
    };
    crate::protocol::ws_frame::text(&text)
}
