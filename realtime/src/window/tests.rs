use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::change::{ChangeKind, Column, ReplicaIdentity, Row, RowChange, Table};

const SECOND: i64 = 1_000_000;

fn table() -> Arc<Table> {
    Arc::new(Table {
        oid: 1,
        schema: "public".into(),
        name: "t".into(),
        replica_identity: ReplicaIdentity::Default,
        columns: vec![Column {
            name: "id".into(),
            type_name: "int4".into(),
            type_oid: 23,
            key: true,
        }]
        .into(),
        json: Default::default(),
    })
}

/// A transaction of `changes` inserts committed at `lsn` and `at` (µs), each row `padding`
/// bytes of JSON.
fn tx(epoch: u64, lsn: u64, changes: u32, at: i64, padding: usize) -> Arc<Transaction> {
    let table = table();
    let epoch = Epoch(epoch);
    Arc::new(Transaction {
        epoch,
        xid: lsn as u32,
        commit_lsn: Lsn(lsn),
        end_lsn: Lsn(lsn + 8),
        commit_timestamp: at,
        backlog: false,
        overflow: None,
        access_changed: false,
        follows_gap: false,
        changes: (0..changes)
            .map(|index| {
                Arc::new(RowChange {
                    position: Position {
                        epoch,
                        commit_lsn: Lsn(lsn),
                        index,
                    },
                    commit_timestamp: at,
                    table: table.clone(),
                    kind: ChangeKind::Insert,
                    new: Some(Row {
                        json: "x".repeat(padding).into(),
                        cells: Box::new([]),
                    }),
                    old: None,
                })
            })
            .collect(),
    })
}

fn pos(epoch: u64, lsn: u64, index: u32) -> Position {
    Position {
        epoch: Epoch(epoch),
        commit_lsn: Lsn(lsn),
        index,
    }
}

fn limits(seconds: u64, bytes: usize) -> WindowLimits {
    WindowLimits {
        max_age: Duration::from_secs(seconds),
        max_bytes: bytes,
    }
}

/// The (commit LSN, index) of every change a replay gives.
fn replayed(resume: Resume) -> Vec<(u64, u32)> {
    match resume {
        Resume::Replay(slices) => slices
            .iter()
            .flat_map(|s| {
                s.transaction.changes[s.changes.clone()]
                    .iter()
                    .map(|c| (c.position.commit_lsn.0, c.position.index))
            })
            .collect(),
        other => panic!("expected a replay, got {other:?}"),
    }
}

#[test]
fn replays_exactly_the_changes_after_a_position_in_commit_order() {
    let mut w = Window::new(limits(300, usize::MAX));
    for (lsn, n) in [(100, 3), (200, 1), (300, 2)] {
        assert_eq!(w.append(tx(7, lsn, n, 0, 1), 0), Appended::Continued);
    }
    assert_eq!(w.len(), 3);
    assert_eq!(w.head(), Some(pos(7, 300, 1)));
    assert_eq!(
        replayed(w.after(&pos(7, 100, 0), usize::MAX)),
        [(100, 1), (100, 2), (200, 0), (300, 0), (300, 1)],
        "the rest of the position's own transaction, then every later one"
    );
    assert_eq!(
        replayed(w.after(&pos(7, 100, 2), usize::MAX)),
        [(200, 0), (300, 0), (300, 1)]
    );
    assert!(
        replayed(w.after(&pos(7, 300, 1), usize::MAX)).is_empty(),
        "at the head: caught up"
    );
    // A position between transactions (from a transaction with nothing for the client).
    assert_eq!(
        replayed(w.after(&pos(7, 150, 4), usize::MAX)),
        [(200, 0), (300, 0), (300, 1)]
    );
}

#[test]
fn a_replay_is_cut_into_pieces_of_at_most_the_budget() {
    let mut w = Window::new(limits(300, usize::MAX));
    w.append(tx(7, 100, 5, 0, 1), 0);
    w.append(tx(7, 200, 5, 0, 1), 0);
    let mut at = pos(7, 100, 0);
    let mut all = Vec::new();
    loop {
        let Resume::Replay(slices) = w.after(&at, 3) else {
            panic!("replay")
        };
        let got: usize = slices.iter().map(|s| s.changes.len()).sum();
        assert!(got <= 3);
        let Some(last) = slices.last().and_then(Slice::last_position) else {
            break;
        };
        all.extend(slices.iter().flat_map(|s| {
            s.transaction.changes[s.changes.clone()]
                .iter()
                .map(|c| c.position.index)
        }));
        at = last;
    }
    assert_eq!(all, [1, 2, 3, 4, 0, 1, 2, 3, 4]);
}

#[test]
fn old_transactions_leave_by_commit_time() {
    let mut w = Window::new(limits(10, usize::MAX));
    w.append(tx(7, 100, 1, 0, 1), 0);
    w.append(tx(7, 200, 1, 5 * SECOND, 1), 5 * SECOND);
    w.evict(10 * SECOND);
    assert_eq!(w.len(), 2, "exactly 10 s old still counts");
    w.evict(10 * SECOND + 1);
    assert_eq!(w.len(), 1);
    // Whoever saw the evicted transaction's last change still resumes: nothing after it left.
    assert_eq!(replayed(w.after(&pos(7, 100, 0), 10)), [(200, 0)]);
    assert!(matches!(
        w.after(&pos(7, 50, 0), 10),
        Resume::Refetch(ResumeError::OutsideWindow)
    ));
    w.evict(16 * SECOND);
    assert!(w.is_empty());
    assert!(
        replayed(w.after(&pos(7, 200, 0), 10)).is_empty(),
        "up to date with an empty window: nothing missed"
    );
    assert!(matches!(
        w.after(&pos(7, 100, 0), 10),
        Resume::Refetch(ResumeError::OutsideWindow)
    ));
}

#[test]
fn the_byte_budget_evicts_the_oldest_first() {
    let one = transaction_bytes(&tx(7, 1, 1, 0, 1000));
    assert!(one > 1000, "row JSON counts: {one}");
    let mut w = Window::new(limits(300, 2 * one));
    w.append(tx(7, 100, 1, 0, 1000), 0);
    w.append(tx(7, 200, 1, 0, 1000), 0);
    assert_eq!((w.len(), w.bytes()), (2, 2 * one));
    w.append(tx(7, 300, 1, 0, 1000), 0);
    assert_eq!((w.len(), w.bytes()), (2, 2 * one));
    assert!(matches!(
        w.after(&pos(7, 50, 0), 10),
        Resume::Refetch(ResumeError::OutsideWindow)
    ));
    assert_eq!(replayed(w.after(&pos(7, 100, 0), 10)), [(200, 0), (300, 0)]);
}

#[test]
fn positions_of_another_epoch_are_refused() {
    let mut w = Window::new(limits(300, usize::MAX));
    w.append(tx(7, 100, 1, 0, 1), 0);
    assert!(matches!(
        w.after(&pos(8, 100, 0), 10),
        Resume::Refetch(ResumeError::OtherEpoch)
    ));
    // A new epoch empties the window: the old one's positions are refused from then on.
    assert_eq!(w.append(tx(8, 50, 1, 0, 1), 0), Appended::NewEpoch);
    assert_eq!(w.epoch(), Some(Epoch(8)));
    assert_eq!(w.len(), 1);
    assert!(matches!(
        w.after(&pos(7, 100, 0), 10),
        Resume::Refetch(ResumeError::OtherEpoch)
    ));
    assert_eq!(replayed(w.after(&pos(8, 50, 0), 10)), []);
}

#[test]
fn before_anything_arrives_and_ahead_of_the_head_the_window_cannot_tell_yet() {
    let mut w = Window::new(limits(300, usize::MAX));
    assert!(matches!(w.after(&pos(7, 100, 0), 10), Resume::NotYet));
    // After a restart the stream re-reads the window from the slot: a client's position may
    // be ahead of what has arrived so far.
    w.append(tx(7, 100, 2, 0, 1), 0);
    assert!(matches!(w.after(&pos(7, 200, 0), 10), Resume::NotYet));
    w.append(tx(7, 200, 3, 0, 1), 0);
    assert_eq!(replayed(w.after(&pos(7, 200, 0), 10)), [(200, 1), (200, 2)]);
    // Before the first transaction seen, completeness is unknown.
    assert!(matches!(
        w.after(&pos(7, 99, 0), 10),
        Resume::Refetch(ResumeError::OutsideWindow)
    ));
}

#[test]
fn a_cut_refuses_every_position_before_the_gap() {
    let mut w = Window::new(limits(300, usize::MAX));
    w.append(tx(7, 100, 1, 0, 1), 0);
    w.cut();
    assert!(w.is_empty());
    assert!(matches!(
        w.after(&pos(7, 100, 0), 10),
        Resume::Refetch(ResumeError::OutsideWindow)
    ));
    w.append(tx(7, 300, 1, 0, 1), 0);
    assert!(matches!(
        w.after(&pos(7, 100, 0), 10),
        Resume::Refetch(ResumeError::OutsideWindow)
    ));
    assert!(replayed(w.after(&pos(7, 300, 0), 10)).is_empty());
}

#[test]
fn resent_transactions_are_not_appended_twice() {
    let mut w = Window::new(limits(300, usize::MAX));
    w.append(tx(7, 100, 1, 0, 1), 0);
    w.append(tx(7, 200, 1, 0, 1), 0);
    assert_eq!(w.append(tx(7, 200, 1, 0, 1), 0), Appended::Repeated);
    assert_eq!(w.append(tx(7, 100, 1, 0, 1), 0), Appended::Repeated);
    assert_eq!(w.len(), 2);
}

#[test]
fn zero_limits_keep_nothing() {
    let mut w = Window::new(limits(0, 0));
    w.append(tx(7, 100, 1, 0, 1), SECOND);
    assert!(w.is_empty());
    assert!(replayed(w.after(&pos(7, 100, 0), 10)).is_empty());
    assert!(matches!(
        w.after(&pos(7, 99, 0), 10),
        Resume::Refetch(ResumeError::OutsideWindow)
    ));
}

#[test]
fn retention_confirms_the_commit_of_the_newest_evicted_transaction() {
    let handed = |lsn: u64, at: i64, bytes: usize| Handed {
        commit_lsn: Lsn(lsn),
        end_lsn: Lsn(lsn + 8),
        commit_timestamp: at,
        bytes,
    };
    let mut r = Retention::new(limits(10, 100), Lsn(50));
    assert_eq!(r.start(), Lsn(50), "before anything left: where streaming began");
    r.push(handed(100, 0, 10), 0);
    r.push(handed(200, 5 * SECOND, 10), 5 * SECOND);
    assert_eq!(r.start(), Lsn(50));
    r.evict(11 * SECOND);
    assert_eq!(
        r.start(),
        Lsn(100),
        "re-read from the evicted transaction's commit"
    );
    r.release_through(Lsn(900));
    assert_eq!(r.start(), Lsn(100), "not while the window holds a transaction");
    // Bytes: a big transaction pushes the older ones out.
    r.push(handed(300, 6 * SECOND, 95), 6 * SECOND);
    assert_eq!(r.start(), Lsn(200));
    r.evict(17 * SECOND);
    assert!(r.is_empty());
    assert_eq!(r.start(), Lsn(300));
    r.release_through(Lsn(900));
    assert_eq!(r.start(), Lsn(900), "an idle, empty window keeps no WAL");
    r.release_through(Lsn(800));
    assert_eq!(r.start(), Lsn(900), "never backwards");
}

#[test]
fn both_sides_agree_on_what_the_window_holds() {
    // The replication side confirms the commit of the newest transaction the dispatcher has
    // evicted too: re-reading from there rebuilds at least the dispatcher's window.
    let l = limits(10, 3 * transaction_bytes(&tx(7, 1, 2, 0, 50)));
    let mut w = Window::new(l);
    let mut r = Retention::new(l, Lsn(0));
    for i in 0..20u64 {
        let t = tx(7, 100 * (i + 1), 2, i as i64 * SECOND, 50);
        r.push(Handed::of(&t), i as i64 * SECOND);
        w.append(t, i as i64 * SECOND);
        let Some(floor_after) = (match w.floor {
            Floor::After(p) => Some(p),
            _ => None,
        }) else {
            continue;
        };
        assert_eq!(r.start(), floor_after.commit_lsn, "after {i}");
    }
}

#[test]
fn an_overflowed_transaction_is_replayed_as_its_marker_once() {
    use crate::change::{ChangeKinds, Overflow};
    let mut w = Window::new(limits(300, usize::MAX));
    w.append(tx(7, 100, 1, 0, 1), 0);
    let big = Arc::new(Transaction {
        overflow: Some(Arc::new(Overflow {
            tables: vec![(table(), ChangeKinds::default())],
            changes: 1_000_000,
        })),
        changes: Vec::new(),
        ..(*tx(7, 200, 0, 0, 1)).clone()
    });
    w.append(big, 0);
    w.append(tx(7, 300, 1, 0, 1), 0);
    assert_eq!(w.head(), Some(pos(7, 300, 0)));
    let Resume::Replay(slices) = w.after(&pos(7, 100, 0), 10) else {
        panic!("replay")
    };
    let shape: Vec<(u64, bool, Option<Position>)> = slices
        .iter()
        .map(|s| {
            (
                s.transaction.commit_lsn.0,
                s.transaction.overflow.is_some(),
                s.last_position(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            (200, true, Some(pos(7, 200, 999_999))),
            (300, false, Some(pos(7, 300, 0)))
        ]
    );
    // From the marker's own position (what its signal names), only what follows.
    assert_eq!(replayed(w.after(&pos(7, 200, 999_999), 10)), [(300, 0)]);
}

#[test]
fn an_access_change_without_rows_is_replayed_as_its_marker_to_positions_before_it() {
    let mut w = Window::new(limits(300, usize::MAX));
    w.append(tx(7, 100, 1, 0, 1), 0);
    let marker = Arc::new(Transaction {
        access_changed: true,
        follows_gap: false,
        ..(*tx(7, 200, 0, 0, 1)).clone()
    });
    w.append(marker, 0);
    w.append(tx(7, 300, 1, 0, 1), 0);
    let Resume::Replay(slices) = w.after(&pos(7, 100, 0), 10) else {
        panic!("replayable")
    };
    let shape: Vec<(u64, bool, usize)> = slices
        .iter()
        .map(|s| {
            (
                s.transaction.commit_lsn.0,
                s.transaction.access_changed,
                s.changes.len(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [(200, true, 0), (300, false, 1)],
        "the replay meets the marker first"
    );
    // A position past the marker does not cross it.
    let Resume::Replay(slices) = w.after(&pos(7, 300, 0), 10) else {
        panic!("replayable")
    };
    assert!(slices.is_empty());
}
