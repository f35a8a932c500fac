//! A worker's session: join, leave, evict, expire, restart grace.

use super::*;

#[test]
fn an_evicted_session_gets_nothing_new_and_ends_as_evicted() {
    let mut sim = Sim::new();
    sim.create(4);
    sim.join("a", 1);
    sim.join("b", 1);
    sim.settle();
    let r = sim.cmd(Command::Evict(Evict {
        group: "g".into(),
        worker: "b".into(),
    }));
    assert!(r.outcome.is_ok());
    assert_eq!(sim.group().sessions["b"].state, SessionState::Evicting);
    // A drain does not turn it back into a draining session.
    sim.cmd(Command::Leave(Leave {
        group: "g".into(),
        worker: "b".into(),
        session: None,
        drain: true,
    }));
    assert_eq!(sim.group().sessions["b"].state, SessionState::Evicting);
    let session = sim.sid("b");
    let r = sim.cmd(Command::ExpireSession(ExpireSession {
        group: "g".into(),
        worker: "b".into(),
        session,
    }));
    assert!(
        r.events.iter().any(|e| matches!(
            e.change,
            Change::WorkerLeft {
                reason: LeaveReason::Evicted,
                ..
            }
        )),
        "{r:?}"
    );
}

#[test]
fn leave_release_and_ack_for_a_stale_session_change_nothing() {
    let mut sim = Sim::new();
    sim.create(4);
    sim.join("a", 1);
    sim.rebalance();
    let token = sim.group().assignment.slot(0).token;
    let current = sim.sid("a");
    let stale = current - 1;
    let before = sim.state.clone();
    let refusals = [
        sim.cmd(Command::Leave(Leave {
            group: "g".into(),
            worker: "a".into(),
            session: Some(stale),
            drain: false,
        })),
        sim.cmd(Command::Release(Release {
            group: "g".into(),
            worker: "a".into(),
            session: stale,
            partitions: vec![range(0, 3)],
            token,
        })),
        sim.cmd(Command::AckTombstones(AckTombstones {
            group: "g".into(),
            worker: "a".into(),
            session: stale,
            revision: 1,
        })),
    ];
    for r in refusals {
        let err = r.outcome.expect_err("a stale session is refused");
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
        assert!(
            err.to_string()
                .contains(&format!("in session {current}, not {stale}")),
            "{err}"
        );
    }
    assert_eq!(
        State {
            revision: before.revision,
            ..sim.state.clone()
        },
        before,
        "nothing changed but the revision"
    );
    assert_eq!(sim.group().held_by("a"), vec![range(0, 3)]);
}

#[test]
fn expiry_with_restart_grace_keeps_partitions_for_the_worker() {
    let mut sim = Sim::new();
    let config = GroupConfig {
        partitions: 6,
        rejoin_grace_ms: 5_000,
        ..GroupConfig::default()
    };
    sim.cmd(Command::CreateGroup(CreateGroup {
        group: "g".into(),
        config,
    }));
    sim.join("a", 1);
    sim.join("b", 1);
    sim.settle();
    let a_had = sim.group().held_by("a");
    let session = sim.group().sessions["a"].id;
    sim.cmd(Command::ExpireSession(ExpireSession {
        group: "g".into(),
        worker: "a".into(),
        session,
    }));
    // Nothing moves to b while the reservation holds.
    sim.now += 1_000;
    let r = sim.rebalance();
    assert!(
        r.events.is_empty(),
        "reserved partitions are not handed out: {:?}",
        r.events
    );
    let r = sim.join("a", 1);
    assert_eq!(
        r.outcome,
        Ok(Reply::Joined {
            session: r.revision,
            granted: a_had.clone()
        })
    );
    assert_eq!(
        sim.group().held_by("a"),
        a_had,
        "a gets its partitions back"
    );
    assert_eq!(
        sim.group().assignment.slot(a_had[0].start).token,
        r.revision,
        "with new tokens"
    );

    // Without a rejoin in time, the reservation lapses and b takes them.
    let session = sim.group().sessions["a"].id;
    sim.cmd(Command::ExpireSession(ExpireSession {
        group: "g".into(),
        worker: "a".into(),
        session,
    }));
    sim.now += 5_000;
    sim.settle();
    assert_eq!(sim.counts(), BTreeMap::from([("b".into(), 6)]));
}

#[test]
fn a_second_join_under_a_worker_id_with_a_session_is_refused() {
    let mut sim = Sim::new();
    sim.create(2);
    sim.join("a", 1);
    let dup = sim.join("a", 1).outcome.expect_err("duplicate join");
    assert_eq!(dup.kind(), ErrorKind::AlreadyExists);
}

#[test]
fn an_expiry_naming_another_session_is_refused_and_ends_nothing() {
    let mut sim = Sim::new();
    sim.create(2);
    sim.join("a", 1);
    let session = sim.group().sessions["a"].id;
    let r = sim.cmd(Command::ExpireSession(ExpireSession {
        group: "g".into(),
        worker: "a".into(),
        session: session + 100,
    }));
    assert_eq!(
        r.outcome.expect_err("stale expiry").kind(),
        ErrorKind::FailedPrecondition
    );
    assert!(sim.group().sessions.contains_key("a"));
}
