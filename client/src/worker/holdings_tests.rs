//! Tests of `holdings.rs`: every case without a cluster.

use super::*;
use crate::partitions::to_proto;

fn event(revision: u64, e: E) -> pb::WatchEvent {
    pb::WatchEvent {
        revision,
        event: Some(e),
    }
}

fn granted(worker: &str, ranges: Partitions, token: u64) -> pb::WatchEvent {
    event(
        token,
        E::Granted(pb::Granted {
            worker: worker.into(),
            ranges: to_proto(&ranges),
            token,
        }),
    )
}

fn revoking(revision: u64, from: &str, ranges: Partitions) -> pb::WatchEvent {
    event(
        revision,
        E::Revoking(pb::Revoking {
            from: from.into(),
            to: "w2".into(),
            ranges: to_proto(&ranges),
            since_ms: 0,
        }),
    )
}

#[test]
fn grants_and_revocations_of_this_worker_only() {
    let mut h = Holdings::new("w1");
    assert_eq!(
        h.apply(&granted("w1", vec![0..=9], 5)),
        vec![Change::Assigned {
            partitions: vec![0..=9],
            token: 5
        }]
    );
    assert!(h.apply(&granted("w2", vec![10..=19], 6)).is_empty());
    assert_eq!(h.token(3), Some(5));
    assert_eq!(h.token(10), None);
    assert_eq!(
        h.apply(&revoking(7, "w1", vec![5..=12])),
        vec![Change::Revoked {
            partitions: vec![5..=9],
            revision: 7
        }],
        "only what it holds"
    );
    assert!(
        h.apply(&revoking(8, "w1", vec![5..=9])).is_empty(),
        "a restated handoff is not a second revocation"
    );
    assert_eq!(h.revoking(), vec![5..=9]);
}

#[test]
fn take_groups_by_token_and_refuses_what_is_not_held() {
    let mut h = Holdings::new("w1");
    h.apply(&granted("w1", vec![0..=4], 5));
    h.apply(&granted("w1", vec![5..=9], 8));
    assert_eq!(h.take(&vec![3..=12]), Err(NotHeld { partition: 10 }));
    assert_eq!(h.held(), vec![0..=9], "a refused take changes nothing");
    assert_eq!(
        h.take(&vec![3..=6]),
        Ok(vec![(5, vec![3..=4]), (8, vec![5..=6])])
    );
    assert_eq!(h.held(), vec![0..=2, 7..=9]);
    assert_eq!(h.take(&vec![4..=4]), Err(NotHeld { partition: 4 }));
}

#[test]
fn tombstones_on_its_partitions_and_the_end_of_the_session() {
    let mut h = Holdings::new("w1");
    h.apply(&granted("w1", vec![0..=9], 5));
    let tomb = |owner: &str| {
        event(
            9,
            E::TombstoneAdded(pb::TombstoneAdded {
                tombstone: Some(pb::TombstoneInfo {
                    key: "acct-1".into(),
                    partition: 4,
                    revision: 9,
                    expires_at_ms: 0,
                }),
                owner: owner.into(),
            }),
        )
    };
    assert!(h.apply(&tomb("w2")).is_empty());
    assert_eq!(
        h.apply(&tomb("w1")),
        vec![Change::Tombstone {
            key: "acct-1".into(),
            partition: 4,
            revision: 9
        }]
    );
    let left = |reason: pb::LeaveReason| {
        event(
            10,
            E::WorkerLeft(pb::WorkerLeft {
                worker: "w1".into(),
                reason: reason.into(),
            }),
        )
    };
    assert_eq!(
        h.apply(&left(pb::LeaveReason::Expired)),
        vec![Change::Ended {
            reason: Ending::Expired,
            revision: 10
        }]
    );
    assert!(h.held().is_empty());
    assert_eq!(
        h.apply(&left(pb::LeaveReason::Drained)),
        vec![Change::Ended {
            reason: Ending::Left,
            revision: 10
        }]
    );
}

#[test]
fn a_split_hands_the_children_with_new_tokens() {
    let mut h = Holdings::new("w1");
    h.apply(&granted("w1", vec![2..=3], 5));
    h.apply(&revoking(6, "w1", vec![3..=3]));
    let split = event(
        12,
        E::GroupChanged(pb::GroupChanged {
            change: pb::group_changed::Change::Split as i32,
            config: Some(pb::GroupConfig {
                partitions: Some(16),
                ..Default::default()
            }),
        }),
    );
    assert_eq!(
        h.apply(&split),
        vec![
            Change::Resharded {
                partitions: 16,
                revision: 12
            },
            Change::Assigned {
                partitions: vec![4..=7],
                token: 12
            }
        ]
    );
    assert_eq!(h.revoking(), vec![6..=7]);
}

fn listing(
    session: u64,
    grants: Vec<(Partitions, u64)>,
    moving: Partitions,
) -> pb::AssignmentResponse {
    pb::AssignmentResponse {
        revision: 50,
        workers: vec![pb::WorkerAssignment {
            id: "w1".into(),
            session,
            grants: grants
                .into_iter()
                .map(|(r, token)| pb::Grant {
                    ranges: to_proto(&r),
                    token,
                })
                .collect(),
            ..Default::default()
        }],
        moving: vec![pb::Handoff {
            ranges: to_proto(&moving),
            from: "w1".into(),
            to: "w2".into(),
        }],
        ..Default::default()
    }
}

#[test]
fn reconcile_emits_only_the_differences() {
    let mut h = Holdings::new("w1");
    h.apply(&granted("w1", vec![0..=9], 5));
    h.apply(&revoking(6, "w1", vec![0..=1]));
    let changes = h.reconcile(
        &listing(3, vec![(vec![0..=9], 5), (vec![20..=21], 40)], vec![0..=3]),
        3,
    );
    assert_eq!(
        changes,
        vec![
            Change::Assigned {
                partitions: vec![20..=21],
                token: 40
            },
            Change::Revoked {
                partitions: vec![2..=3],
                revision: 50
            }
        ]
    );
    assert!(
        h.reconcile(
            &listing(3, vec![(vec![0..=9], 5), (vec![20..=21], 40)], vec![0..=3]),
            3
        )
        .is_empty(),
        "nothing new the second time"
    );
}

#[test]
fn reconcile_ends_a_session_that_is_gone_or_lost_partitions() {
    let mut h = Holdings::new("w1");
    h.apply(&granted("w1", vec![0..=9], 5));
    let ended = vec![Change::Ended {
        reason: Ending::Expired,
        revision: 50,
    }];
    assert_eq!(
        h.reconcile(&listing(4, vec![(vec![0..=9], 5)], vec![]), 3),
        ended,
        "another session"
    );
    h.apply(&granted("w1", vec![0..=9], 5));
    assert_eq!(
        h.reconcile(&listing(3, vec![(vec![0..=4], 5)], vec![]), 3),
        ended,
        "taken without a release"
    );
    assert!(h.held().is_empty());
}
