//! Tombstones: puts, expiry, purges, and the stored index.

use super::*;

/// A put under the first rule (`PutTombstone`) of `key`, with a TTL of a minute.
fn put_first_rule(sim: &mut Sim, key: &str) -> CommandResult {
    sim.cmd(Command::PutTombstone(PutTombstone {
        group: "g".into(),
        key: key.into(),
        locator: Locator::Key,
        ttl_ms: Some(60_000),
    }))
}

fn purge_ten(sim: &mut Sim) -> CommandResult {
    sim.cmd(Command::PurgeTombstones(PurgeTombstones {
        group: "g".into(),
        limit: 10,
    }))
}

#[test]
fn a_second_put_of_a_live_tombstone_answers_the_first_and_writes_nothing() {
    let mut sim = Sim::new();
    sim.create(4);
    let first = put_first_rule(&mut sim, "account-1");
    let again = put_first_rule(&mut sim, "account-1");
    assert_eq!(first.outcome, again.outcome, "idempotent");
    assert!(again.events.is_empty());
    let Ok(Reply::Tombstone { partition, .. }) = first.outcome else {
        panic!("{first:?}")
    };
    let h = KeyHash::Xxh3.hash(b"account-1");
    assert_eq!(partition, hash::partition_of(h, 4));
}

#[test]
fn a_tombstone_by_key_follows_its_hash_through_a_split() {
    let mut sim = Sim::new();
    sim.create(4);
    put_first_rule(&mut sim, "account-1");
    let h = KeyHash::Xxh3.hash(b"account-1");
    let rev = sim.group().config_revision;
    sim.cmd(Command::SplitGroup(SplitGroup {
        group: "g".into(),
        expected_revision: rev,
    }));
    assert_eq!(
        sim.group().tombstones["account-1"].partition,
        hash::partition_of(h, 8)
    );
}

#[test]
fn a_purge_removes_a_tombstone_once_its_ttl_has_passed_and_not_before() {
    let mut sim = Sim::new();
    sim.create(4);
    put_first_rule(&mut sim, "account-1");
    sim.now += 59_999;
    let r = purge_ten(&mut sim);
    assert_eq!(r.outcome, Ok(Reply::Purged { count: 0 }));
    sim.now += 1;
    let r = purge_ten(&mut sim);
    assert_eq!(r.outcome, Ok(Reply::Purged { count: 1 }));
    assert!(sim.group().tombstones.is_empty());
}

#[test]
fn a_put_of_a_key_over_1024_bytes_is_refused_as_invalid() {
    let mut sim = Sim::new();
    sim.create(4);
    let long = "k".repeat(1025);
    let err = put_first_rule(&mut sim, &long)
        .outcome
        .expect_err("key too long");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

fn put_tombstone(sim: &mut Sim, key: &str, ttl_ms: u64) -> CommandResult {
    sim.cmd(Command::PutTombstoneV2(PutTombstone {
        group: "g".into(),
        key: key.into(),
        locator: Locator::Key,
        ttl_ms: Some(ttl_ms),
    }))
}

fn purge(sim: &mut Sim, limit: u32) -> CommandResult {
    sim.cmd(Command::PurgeTombstones(PurgeTombstones {
        group: "g".into(),
        limit,
    }))
}

#[test]
fn a_tombstone_expires_at_its_expiry_time_and_not_before() {
    let t = Tombstone {
        partition: 0,
        hash: None,
        revision: 7,
        expires_at_ms: 5_000,
    };
    assert!(!t.expired(4_999));
    assert!(t.expired(5_000));
    assert!(t.expired(u64::MAX));
}

#[test]
fn a_put_after_the_ttl_is_a_new_tombstone_delivered_to_the_owner() {
    let mut sim = Sim::new();
    sim.create(1);
    sim.join("w", 1);
    sim.settle();
    let first = put_tombstone(&mut sim, "doc", 1_000);
    let Ok(Reply::Tombstone { revision: r1, .. }) = first.outcome else {
        panic!("{first:?}")
    };
    sim.now += 999;
    let again = put_tombstone(&mut sim, "doc", 1_000);
    assert_eq!(again.outcome, first.outcome, "idempotent while it lives");
    assert!(again.events.is_empty());

    sim.now += 1;
    // An entry an older leader wrote keeps the rule it was written under:
    // the first put stands, expired or not.
    let legacy = sim.cmd(Command::PutTombstone(PutTombstone {
        group: "g".into(),
        key: "doc".into(),
        locator: Locator::Key,
        ttl_ms: Some(1_000),
    }));
    assert_eq!(legacy.outcome, first.outcome);
    assert!(legacy.events.is_empty());
    let second = put_tombstone(&mut sim, "doc", 1_000);
    let rev = sim.rev;
    assert_eq!(
        second.outcome,
        Ok(Reply::Tombstone {
            revision: rev,
            partition: 0
        })
    );
    assert!(rev > r1);
    assert!(
        matches!(
            &second.events[..],
            [Event { change: Change::TombstoneAdded { key, tombstone, owner: Some(o) }, .. }]
                if key == "doc" && o == "w" && tombstone.revision == rev
                    && tombstone.expires_at_ms == sim.now + 1_000
        ),
        "{second:?}"
    );
    let t = &sim.group().tombstones["doc"];
    assert_eq!((t.revision, t.expired(sim.now)), (rev, false));
    // Replaced, not added: one tombstone, which one purge removes later.
    assert_eq!(sim.group().tombstones.len(), 1);
    assert_eq!(purge(&mut sim, 10).outcome, Ok(Reply::Purged { count: 0 }));
    sim.now += 1_000;
    assert_eq!(purge(&mut sim, 10).outcome, Ok(Reply::Purged { count: 1 }));
    assert!(sim.group().tombstones.is_empty());
}

#[test]
fn a_purge_removes_at_most_its_limit_earliest_expiry_first() {
    let mut sim = Sim::new();
    sim.create(4);
    // Expiring at +3 s, +1 s, +2 s, +1 s, and one in an hour.
    for (key, ttl) in [
        ("c", 3_000),
        ("a", 1_000),
        ("b", 2_000),
        ("d", 1_000),
        ("z", 3_600_000),
    ] {
        put_tombstone(&mut sim, key, ttl);
    }
    let purged = |r: &CommandResult| -> Vec<String> {
        r.events
            .iter()
            .map(|e| match &e.change {
                Change::TombstonePurged { key } => key.clone(),
                other => panic!("{other:?}"),
            })
            .collect()
    };
    let none = purge(&mut sim, 10);
    assert_eq!(none.outcome, Ok(Reply::Purged { count: 0 }));
    assert!(!sim.group().tombstones.any_expired(sim.now));

    sim.now += 3_000;
    assert!(sim.group().tombstones.any_expired(sim.now));
    let r = purge(&mut sim, 2);
    assert_eq!(r.outcome, Ok(Reply::Purged { count: 2 }));
    assert_eq!(purged(&r), ["a", "d"], "earliest expiry first, then by key");
    let r = purge(&mut sim, 2);
    assert_eq!(purged(&r), ["b", "c"]);
    assert!(!sim.group().tombstones.any_expired(sim.now));
    assert_eq!(
        sim.group().tombstones.keys().collect::<Vec<_>>(),
        ["z"],
        "the live one stays"
    );

    for limit in [0, MAX_PURGE + 1] {
        let err = purge(&mut sim, limit).outcome.expect_err("limit refused");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    }
}

#[test]
fn the_expiry_index_is_rebuilt_from_a_snapshot_in_the_old_format() {
    let mut sim = Sim::new();
    sim.create(4);
    put_tombstone(&mut sim, "soon", 1_000);
    put_tombstone(&mut sim, "later", 60_000);
    let tombstones = &sim.group().tombstones;
    let as_map: &BTreeMap<String, Tombstone> = tombstones;
    let bytes = bincode::serialize(tombstones).expect("encode");
    assert_eq!(
        bytes,
        bincode::serialize(as_map).expect("encode"),
        "stored as the map alone"
    );
    let decoded: Tombstones = bincode::deserialize(&bytes).expect("decode");
    assert_eq!(&decoded, tombstones);
    let at = sim.now + 1_000;
    assert_eq!(decoded.expired(at).collect::<Vec<_>>(), ["soon"]);
}
