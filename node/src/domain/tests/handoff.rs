//! Partitions moving: the rebalancer's plan, releases, operator moves.

use super::*;

#[test]
fn seed_scenario_join_moves_a_third_and_drain_moves_it_back() {
    let mut sim = Sim::new();
    sim.create(360);
    sim.join("w0", 1);
    sim.settle();
    sim.join("w1", 1);
    sim.settle();
    assert_eq!(sim.group().held_by("w0"), vec![range(0, 179)]);
    assert_eq!(sim.group().held_by("w1"), vec![range(180, 359)]);

    sim.join("w2", 1);
    let moved = sim.settle();
    assert_eq!(moved, 120, "exactly 120 partitions move to the new worker");
    assert_eq!(
        sim.counts(),
        BTreeMap::from([("w0".into(), 120), ("w1".into(), 120), ("w2".into(), 120)])
    );
    assert_eq!(sim.group().held_by("w0"), vec![range(0, 119)]);
    assert_eq!(sim.group().held_by("w1"), vec![range(180, 299)]);

    let r = sim.cmd(Command::Leave(Leave {
        group: "g".into(),
        worker: "w2".into(),
        session: Some(sim.sid("w2")),
        drain: true,
    }));
    assert!(r.outcome.is_ok());
    let moved = sim.settle();
    assert_eq!(moved, 120, "exactly w2's 120 move back");
    assert_eq!(
        sim.counts(),
        BTreeMap::from([("w0".into(), 180), ("w1".into(), 180)])
    );
    assert_eq!(
        sim.group().held_by("w0"),
        vec![range(0, 179)],
        "ranges stay contiguous"
    );
    assert_eq!(sim.group().held_by("w1"), vec![range(180, 359)]);
    assert!(
        !sim.group().sessions.contains_key("w2"),
        "the drained worker's session closed"
    );
}

#[test]
fn a_handoff_in_flight_when_its_group_is_deleted_grants_nothing() {
    let mut sim = Sim::new();
    sim.create(4);
    sim.join("a", 1);
    sim.rebalance();
    sim.join("b", 1);
    sim.rebalance();
    let (worker, token, partitions) = sim.pending_releases().remove(0);
    assert_eq!(worker, "a");
    let deleting = sim.cmd(Command::DeleteGroup(DeleteGroup {
        group: "g".into(),
        force: true,
    }));
    assert!(
        deleting
            .events
            .iter()
            .any(|e| matches!(e.change, Change::Revoking { to: None, .. })),
        "the handoff to b is called off: {deleting:?}"
    );
    let released = sim.cmd(Command::Release(Release {
        group: "g".into(),
        session: sim.sid("a"),
        worker,
        partitions,
        token,
    }));
    assert!(released.outcome.is_ok(), "{released:?}");
    assert!(
        !released
            .events
            .iter()
            .any(|e| matches!(e.change, Change::Granted { .. })),
        "{released:?}"
    );
    assert_eq!(sim.group().held_by("b"), vec![]);
    let split = sim.cmd(Command::SplitGroup(SplitGroup {
        group: "g".into(),
        expected_revision: sim.group().config_revision,
    }));
    assert!(split.outcome.is_err(), "{split:?}");
}

#[test]
fn handoff_grants_only_after_release_and_rejects_stale_tokens() {
    let mut sim = Sim::new();
    sim.create(4);
    sim.join("a", 1);
    sim.rebalance();
    let token_a = sim.group().assignment.slot(0).token;
    sim.join("b", 1);
    sim.rebalance();
    // a is asked to give up its tail; nothing is granted to b yet.
    let revoking = sim.group().assignment.find(|s| s.revoking.is_some());
    assert_eq!(revoking, vec![range(2, 3)]);
    assert_eq!(sim.group().held_by("b"), vec![]);
    assert_eq!(sim.group().assignment.slot(2).owner.as_deref(), Some("a"));
    assert_eq!(
        sim.group().partition_counts(),
        PartitionCounts {
            held: BTreeMap::from([("a", 4), ("b", 0)]),
            handing_off: 2,
            unassigned: 0,
        }
    );

    // A release with a stale token is refused and changes nothing.
    let before = sim.state.clone();
    let r = sim.cmd(Command::Release(Release {
        group: "g".into(),
        worker: "a".into(),
        session: sim.sid("a"),
        partitions: vec![range(2, 3)],
        token: token_a - 1,
    }));
    let err = r.outcome.expect_err("stale token refused");
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(err.to_string().contains("fencing token"), "{err}");
    assert_eq!(
        State {
            revision: before.revision,
            ..sim.state.clone()
        },
        before
    );

    // The right release hands them to b at once, with a new, larger token.
    let r = sim.cmd(Command::Release(Release {
        group: "g".into(),
        worker: "a".into(),
        session: sim.sid("a"),
        partitions: vec![range(2, 3)],
        token: token_a,
    }));
    assert!(r.outcome.is_ok());
    assert_eq!(sim.group().held_by("b"), vec![range(2, 3)]);
    assert_eq!(sim.group().assignment.slot(2).token, r.revision);
    assert!(r.revision > token_a);
}

#[test]
fn max_in_flight_limits_handoffs_not_grants() {
    let mut sim = Sim::new();
    let config = GroupConfig {
        partitions: 20,
        max_in_flight: 3,
        ..GroupConfig::default()
    };
    sim.cmd(Command::CreateGroup(CreateGroup {
        group: "g".into(),
        config,
    }));
    sim.join("a", 1);
    let r = sim.rebalance();
    assert_eq!(
        sim.counts()["a"],
        20,
        "free partitions are granted at once: {:?}",
        r.events
    );
    sim.join("b", 1);
    sim.rebalance();
    assert_eq!(
        sim.group()
            .assignment
            .find(|s| s.revoking.is_some())
            .iter()
            .map(|r| r.len())
            .sum::<u32>(),
        3
    );
    sim.settle();
    sim.assert_balanced();
}

#[test]
fn frozen_groups_get_no_plan_and_moves_by_hand_hand_off() {
    let mut sim = Sim::new();
    sim.create(4);
    sim.join("a", 1);
    sim.settle();
    sim.cmd(Command::SetFrozen(SetFrozen {
        group: "g".into(),
        frozen: true,
    }));
    sim.join("b", 1);
    assert!(sim.rebalance().events.is_empty(), "frozen: no plan");
    let r = sim.cmd(Command::Move(MovePartitions {
        group: "g".into(),
        partitions: vec![range(0, 0)],
        to: "b".into(),
    }));
    assert!(r.outcome.is_ok());
    assert_eq!(
        sim.pending_releases(),
        vec![(
            "a".to_string(),
            sim.group().assignment.slot(0).token,
            vec![range(0, 0)]
        )]
    );
    let (w, token, partitions) = sim.pending_releases().remove(0);
    sim.cmd(Command::Release(Release {
        group: "g".into(),
        session: sim.sid(&w),
        worker: w,
        partitions,
        token,
    }));
    assert_eq!(sim.group().held_by("b"), vec![range(0, 0)]);
}

#[test]
fn the_plan_is_deterministic() {
    let mut sim = Sim::new();
    sim.create(1000);
    for w in 0..7 {
        sim.join(&format!("w{w}"), 1 + w % 3);
    }
    sim.settle();
    sim.join("late", 2);
    let g = sim.group().clone();
    let first = rebalancer::plan(&g, sim.now);
    assert!(!first.is_empty());
    for _ in 0..5 {
        assert_eq!(rebalancer::plan(&g.clone(), sim.now), first);
    }
}
