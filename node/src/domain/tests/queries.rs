//! Questions the API and the state machine ask of the domain: where a key
//! routes, where a tombstone goes after a split, what a committed move
//! carried out, when a released handoff began, and what a proposal stores.

use super::*;

fn group_of(partitions: u32) -> Group {
    let mut sim = Sim::new();
    sim.create(partitions);
    sim.group().clone()
}

#[test]
fn a_key_routes_to_the_partition_its_hash_falls_in() {
    let g = group_of(8);
    let h = KeyHash::Xxh3.hash(b"account-1");
    assert_eq!(
        g.locate("g", "account-1", &Locator::Key),
        Ok((hash::partition_of(h, 8), Some(h)))
    );
}

#[test]
fn a_hash_key_routes_to_the_partition_it_falls_in() {
    let g = group_of(8);
    let h = u64::MAX / 3;
    assert_eq!(
        g.locate("g", "ignored", &Locator::Hash(h)),
        Ok((hash::partition_of(h, 8), Some(h)))
    );
}

#[test]
fn an_explicit_partition_routes_to_itself_without_a_hash() {
    let g = group_of(8);
    assert_eq!(g.locate("g", "", &Locator::Partition(7)), Ok((7, None)));
}

#[test]
fn a_partition_outside_the_group_is_refused_naming_the_range() {
    let g = group_of(8);
    for p in [8, u32::MAX] {
        let err = g
            .locate("g", "", &Locator::Partition(p))
            .expect_err("out of range");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert_eq!(
            err.to_string(),
            format!("partition {p} is out of range: group \"g\" has partitions 0..8")
        );
    }
}

#[test]
fn a_put_lands_on_the_partition_a_route_answers() {
    let mut sim = Sim::new();
    sim.create(16);
    let r = sim.cmd(Command::PutTombstoneV2(PutTombstone {
        group: "g".into(),
        key: "doc".into(),
        locator: Locator::Key,
        ttl_ms: None,
    }));
    let Ok(Reply::Tombstone { partition, .. }) = r.outcome else {
        panic!("{r:?}")
    };
    let routed = sim.group().locate("g", "doc", &Locator::Key);
    assert_eq!(routed.map(|(p, _)| p), Ok(partition));
}

#[test]
fn after_a_split_a_tombstone_by_hash_follows_its_hash() {
    let h = KeyHash::Xxh3.hash(b"account-1");
    let t = Tombstone {
        partition: hash::partition_of(h, 4),
        hash: Some(h),
        revision: 1,
        expires_at_ms: 1,
    };
    assert_eq!(t.partition_after_split(8), hash::partition_of(h, 8));
}

#[test]
fn after_a_split_a_tombstone_by_partition_goes_to_its_first_child() {
    let t = Tombstone {
        partition: 3,
        hash: None,
        revision: 1,
        expires_at_ms: 1,
    };
    assert_eq!(t.partition_after_split(8), 6);
}

#[test]
fn a_split_moves_stored_tombstones_where_a_barrier_expects_them() {
    let mut sim = Sim::new();
    sim.create(4);
    for (key, locator) in [
        ("by-key", Locator::Key),
        ("by-partition", Locator::Partition(3)),
    ] {
        sim.cmd(Command::PutTombstoneV2(PutTombstone {
            group: "g".into(),
            key: key.into(),
            locator,
            ttl_ms: None,
        }));
    }
    let before = sim.group().tombstones.clone();
    let expected_revision = sim.group().config_revision;
    sim.cmd(Command::SplitGroup(SplitGroup {
        group: "g".into(),
        expected_revision,
    }));
    for (key, t) in before.iter() {
        assert_eq!(
            sim.group().tombstones[key].partition,
            t.partition_after_split(8),
            "{key}"
        );
    }
}

#[test]
fn the_moves_carried_out_are_the_grants_and_handoffs_among_the_events() {
    let r = PartitionRange::new;
    let events = vec![
        Event::new(
            "g",
            Change::Granted {
                worker: "b".into(),
                partitions: vec![r(0, 2)],
                token: 5,
            },
        ),
        Event::new("g", Change::WorkerDraining { worker: "c".into() }),
        Event::new(
            "g",
            Change::Revoking {
                from: "a".into(),
                partitions: vec![r(2, 3)],
                to: Some("b".into()),
                since_ms: 9,
            },
        ),
    ];
    assert_eq!(
        Plan::carried_out(&events),
        Plan {
            moves: vec![
                Move::Grant {
                    to: "b".into(),
                    partitions: vec![r(0, 2)],
                },
                Move::Revoke {
                    from: "a".into(),
                    to: Some("b".into()),
                    partitions: vec![r(2, 3)],
                },
            ],
        }
    );
}

#[test]
fn a_committed_move_answers_with_the_moves_it_carried_out() {
    let mut sim = Sim::new();
    sim.create(4);
    sim.join("a", 1);
    sim.settle();
    sim.join("b", 1);
    let r = sim.cmd(Command::Move(MovePartitions {
        group: "g".into(),
        partitions: vec![range(0, 0)],
        to: "b".into(),
    }));
    let expected = Plan {
        moves: vec![Move::Revoke {
            from: "a".into(),
            to: Some("b".into()),
            partitions: vec![range(0, 0)],
        }],
    };
    assert_eq!(Plan::carried_out(&r.events), expected);
}

#[test]
fn a_release_of_revoked_partitions_tells_when_their_handoff_began() {
    let mut sim = Sim::new();
    sim.create(4);
    sim.join("a", 1);
    sim.rebalance();
    sim.join("b", 1);
    sim.now += 500;
    let started = sim.now;
    sim.rebalance();
    let (worker, token, partitions) = sim.pending_releases().remove(0);
    let release = |partitions| {
        Command::Release(Release {
            group: "g".into(),
            worker: worker.clone(),
            session: sim.sid(&worker),
            partitions,
            token,
        })
    };
    assert_eq!(
        sim.state.handoff_started(&release(partitions)),
        Some(started)
    );
    assert_eq!(
        sim.state.handoff_started(&release(vec![range(0, 0)])),
        None,
        "partition 0 is not being handed off"
    );
}

#[test]
fn only_a_release_completes_a_handoff() {
    let mut sim = Sim::new();
    sim.create(4);
    sim.join("a", 1);
    assert_eq!(
        sim.state
            .handoff_started(&Command::Rebalance(Rebalance { group: "g".into() })),
        None
    );
}

#[test]
fn a_command_that_does_not_decide_by_time_is_stored_without_it() {
    let stamped = Command::Barrier.at(1_700_000_000_000);
    let bytes = bincode::serialize(&stamped).expect("encode");
    assert_eq!(
        bytes,
        bincode::serialize(&Command::Barrier.at(0)).expect("encode")
    );
    let decoded: Proposal = bincode::deserialize(&bytes).expect("decode");
    assert_eq!(decoded, Command::Barrier.at(0));
}

#[test]
fn a_command_that_decides_by_time_keeps_the_proposal_time() {
    let stamped = Command::Rebalance(Rebalance { group: "g".into() }).at(1_700_000_000_000);
    let bytes = bincode::serialize(&stamped).expect("encode");
    let decoded: Proposal = bincode::deserialize(&bytes).expect("decode");
    assert_eq!(decoded, stamped);
}
