//! Commands on a group as a whole: create, update, delete, split.

use super::*;

#[test]
fn a_group_with_sessions_is_deleted_only_with_force_and_goes_with_its_last_session() {
    let mut sim = Sim::new();
    sim.create(4);
    sim.join("a", 1);
    sim.join("b", 1);
    sim.rebalance();
    let refused = sim.cmd(Command::DeleteGroup(DeleteGroup {
        group: "g".into(),
        force: false,
    }));
    let err = refused.outcome.expect_err("live sessions");
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(
        err.to_string().contains(r#"2 live session(s) ("a", "b")"#),
        "{err}"
    );

    let forced = sim.cmd(Command::DeleteGroup(DeleteGroup {
        group: "g".into(),
        force: true,
    }));
    assert!(forced.outcome.is_ok());
    assert!(sim.group().deleting);
    // Nothing new is granted or joined, and the name cannot be taken again.
    assert!(rebalancer::plan(sim.group(), sim.now).is_empty());
    let join = sim.cmd(Command::Join(Join {
        group: "g".into(),
        worker: "c".into(),
        ttl_ms: None,
        weight: 1,
        labels: BTreeMap::new(),
    }));
    assert!(join.outcome.is_err(), "{join:?}");
    let again = sim.cmd(Command::CreateGroup(CreateGroup {
        group: "g".into(),
        config: GroupConfig::default(),
    }));
    let err = again.outcome.expect_err("being deleted");
    assert!(err.to_string().contains("is being deleted"), "{err}");

    let session = sim.sid("a");
    sim.cmd(Command::ExpireSession(ExpireSession {
        group: "g".into(),
        worker: "a".into(),
        session,
    }));
    assert!(sim.state.groups.contains_key("g"), "b still holds a lease");
    let r = sim.cmd(Command::Leave(Leave {
        group: "g".into(),
        worker: "b".into(),
        session: Some(sim.sid("b")),
        drain: false,
    }));
    assert!(
        r.events
            .iter()
            .any(|e| matches!(e.change, Change::GroupDeleted)),
        "{r:?}"
    );
    assert!(!sim.state.groups.contains_key("g"));
}

#[test]
fn split_doubles_partitions_children_keep_owner_with_new_tokens() {
    let mut sim = Sim::new();
    sim.create(4);
    sim.join("a", 1);
    sim.join("b", 1);
    sim.settle();
    let before = sim.owners();
    let rev = sim.group().config_revision;
    let r = sim.cmd(Command::SplitGroup(SplitGroup {
        group: "g".into(),
        expected_revision: rev,
    }));
    assert_eq!(
        r.outcome,
        Ok(Reply::Group {
            config_revision: r.revision
        })
    );
    let after = sim.owners();
    assert_eq!(after.len(), 8);
    for (p, owner) in after.iter().enumerate() {
        assert_eq!(owner, &before[p / 2], "child {p} keeps its parent's owner");
        assert_eq!(sim.group().assignment.slot(p as u32).token, r.revision);
    }
    let r = sim.cmd(Command::SplitGroup(SplitGroup {
        group: "g".into(),
        expected_revision: rev,
    }));
    assert_eq!(
        r.outcome.expect_err("stale revision").kind(),
        ErrorKind::Aborted
    );
    let r = sim.rebalance();
    assert!(
        r.events.is_empty(),
        "a balanced group stays balanced after a split: {:?}",
        r.events
    );
}

/// The leader answers an update that sets what is set without writing it
/// (`State::check`), but an entry already in a log applies as it did when
/// it was written: an older node applied it with an event and a new config
/// revision, and every replica must reach the same state.
#[test]
fn an_update_that_changes_nothing_is_answered_unwritten_but_applies_as_written() {
    let mut sim = Sim::new();
    sim.create(8);
    let rev = sim.group().config_revision;
    let update = Command::UpdateGroup(UpdateGroup {
        group: "g".into(),
        config: sim.group().config.clone(),
        expected_revision: rev,
    });
    assert_eq!(
        sim.state.check(&update.clone().at(sim.now)),
        Ok(Some(Reply::Group {
            config_revision: rev
        }))
    );
    let r = sim.cmd(update);
    assert!(
        matches!(
            r.events[..],
            [Event {
                change: Change::GroupUpdated { .. },
                ..
            }]
        ),
        "{r:?}"
    );
    assert_eq!(sim.group().config_revision, sim.rev);
}

#[test]
fn group_config_changes_are_compare_and_set_and_validated() {
    let mut sim = Sim::new();
    sim.create(8);
    let rev = sim.group().config_revision;
    let config = GroupConfig {
        partitions: 8,
        max_in_flight: 2,
        ..GroupConfig::default()
    };
    let r = sim.cmd(Command::UpdateGroup(UpdateGroup {
        group: "g".into(),
        config: config.clone(),
        expected_revision: rev,
    }));
    assert!(r.outcome.is_ok());
    let r = sim.cmd(Command::UpdateGroup(UpdateGroup {
        group: "g".into(),
        config: config.clone(),
        expected_revision: rev,
    }));
    assert_eq!(r.outcome.expect_err("lost CAS").kind(), ErrorKind::Aborted);
    let rev = sim.group().config_revision;
    let bad = GroupConfig {
        partitions: 16,
        ..config.clone()
    };
    let err = sim.cmd(Command::UpdateGroup(UpdateGroup {
        group: "g".into(),
        config: bad,
        expected_revision: rev,
    }));
    assert!(
        err.outcome
            .expect_err("P change")
            .to_string()
            .contains("split"),
        "P changes only by split"
    );
    let bad = GroupConfig {
        default_ttl_ms: 500,
        ..config
    };
    let err = sim.cmd(Command::UpdateGroup(UpdateGroup {
        group: "g".into(),
        config: bad,
        expected_revision: rev,
    }));
    let err = err.outcome.expect_err("short TTL").to_string();
    assert!(
        err.contains("default lease TTL") && err.contains("1 s to 300 s"),
        "{err}"
    );
    let err = sim.cmd(Command::CreateGroup(CreateGroup {
        group: "Bad_Name".into(),
        config: GroupConfig::default(),
    }));
    assert_eq!(
        err.outcome.expect_err("bad name").kind(),
        ErrorKind::InvalidArgument
    );
    let err = sim.cmd(Command::CreateGroup(CreateGroup {
        group: "g".into(),
        config: GroupConfig::default(),
    }));
    assert_eq!(
        err.outcome.expect_err("exists").kind(),
        ErrorKind::AlreadyExists
    );
}
