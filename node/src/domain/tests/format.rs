//! The stored formats, pinned byte for byte.
//!
//! Commands are bincode-encoded into the Raft log on disk and sent between
//! nodes (a rolling upgrade mixes versions), events into the history tree,
//! and the state into snapshots. Bytes already written must decode as they
//! always did, and a node must write what an older node reads: these bytes
//! were captured from the code before the domain was reshaped, and must never
//! change. A new command or event adds a line; no existing line changes.

use std::collections::BTreeMap;

use super::*;
use crate::domain::load::{GroupLoad, LoadRules, LoadRun, LoadSnapshot};

mod pinned;
use pinned::{COMMANDS, EVENTS, STATE};

/// What one value encodes to, as lowercase hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Checks every `(name, value)` against its pinned hex both ways (encodes
/// to it, decodes from it), and reports every mismatch at once with the
/// bytes the code produces.
fn check_all<T>(values: Vec<(&str, T)>, pinned: &[(&str, &str)])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let mut wrong = Vec::new();
    for (i, (name, value)) in values.iter().enumerate() {
        let got = hex(&bincode::serialize(value).expect("encode"));
        match pinned.get(i) {
            Some((pinned_name, want)) if pinned_name == name && got == *want => {
                let decoded: T = bincode::deserialize(&unhex(want)).expect("decode");
                assert_eq!(&decoded, value, "{name} decodes as written");
            }
            _ => wrong.push(format!("    (\"{name}\", \"{got}\"),")),
        }
    }
    assert!(wrong.is_empty(), "encodings changed:\n{}", wrong.join("\n"));
    assert_eq!(values.len(), pinned.len(), "one pinned encoding per value");
}

fn ranges() -> Vec<PartitionRange> {
    vec![PartitionRange::new(0, 2), PartitionRange::new(5, 6)]
}

fn config() -> GroupConfig {
    GroupConfig {
        partitions: 8,
        rejoin_grace_ms: 2_000,
        ..GroupConfig::default()
    }
}

fn session(state: SessionState) -> Session {
    Session {
        id: 7,
        ttl_ms: 10_000,
        weight: 2,
        labels: BTreeMap::from([("zone".to_string(), "eu-1".to_string())]),
        state,
        acked: 5,
    }
}

fn tombstone(hash: Option<u64>) -> Tombstone {
    Tombstone {
        partition: 3,
        hash,
        revision: 9,
        expires_at_ms: 1_700_000_000_000,
    }
}

fn commands() -> Vec<(&'static str, Proposal)> {
    let g = || "g".to_string();
    let w = || "w1".to_string();
    let labels = BTreeMap::from([("zone".to_string(), "eu-1".to_string())]);
    vec![
        ("Barrier", Command::Barrier.at(0)),
        (
            "CreateGroup",
            Command::CreateGroup(CreateGroup {
                group: g(),
                config: config(),
            })
            .at(0),
        ),
        (
            "UpdateGroup",
            Command::UpdateGroup(UpdateGroup {
                group: g(),
                config: config(),
                expected_revision: 4,
            })
            .at(0),
        ),
        (
            "DeleteGroup",
            Command::DeleteGroup(DeleteGroup {
                group: g(),
                force: true,
            })
            .at(0),
        ),
        (
            "SplitGroup",
            Command::SplitGroup(SplitGroup {
                group: g(),
                expected_revision: 4,
            })
            .at(0),
        ),
        (
            "SetFrozen",
            Command::SetFrozen(SetFrozen {
                group: g(),
                frozen: true,
            })
            .at(0),
        ),
        (
            "Join",
            Command::Join(Join {
                group: g(),
                worker: w(),
                ttl_ms: Some(15_000),
                weight: 3,
                labels,
            })
            .at(1_700_000_000_001),
        ),
        (
            "Leave",
            Command::Leave(Leave {
                group: g(),
                worker: w(),
                session: Some(7),
                drain: true,
            })
            .at(0),
        ),
        (
            "Evict",
            Command::Evict(Evict {
                group: g(),
                worker: w(),
            })
            .at(0),
        ),
        (
            "ExpireSession",
            Command::ExpireSession(ExpireSession {
                group: g(),
                worker: w(),
                session: 7,
            })
            .at(1_700_000_000_002),
        ),
        (
            "Release",
            Command::Release(Release {
                group: g(),
                worker: w(),
                session: 7,
                partitions: ranges(),
                token: 6,
            })
            .at(0),
        ),
        (
            "Rebalance",
            Command::Rebalance(Rebalance { group: g() }).at(1_700_000_000_003),
        ),
        (
            "Move",
            Command::Move(MovePartitions {
                group: g(),
                partitions: ranges(),
                to: w(),
            })
            .at(1_700_000_000_004),
        ),
        (
            "PutTombstone",
            Command::PutTombstone(PutTombstone {
                group: g(),
                key: "doc".to_string(),
                locator: Locator::Hash(0xfeed),
                ttl_ms: Some(60_000),
            })
            .at(1_700_000_000_005),
        ),
        (
            "PurgeTombstones",
            Command::PurgeTombstones(PurgeTombstones {
                group: g(),
                limit: 100,
            })
            .at(1_700_000_000_006),
        ),
        (
            "AckTombstones",
            Command::AckTombstones(AckTombstones {
                group: g(),
                worker: w(),
                session: 7,
                revision: 8,
            })
            .at(0),
        ),
        ("Compact", Command::Compact(Compact { revision: 3 }).at(0)),
        (
            "PutTombstoneV2 by key",
            Command::PutTombstoneV2(PutTombstone {
                group: g(),
                key: "doc".to_string(),
                locator: Locator::Key,
                ttl_ms: None,
            })
            .at(1_700_000_000_007),
        ),
        (
            "PutTombstoneV2 by partition",
            Command::PutTombstoneV2(PutTombstone {
                group: g(),
                key: "doc".to_string(),
                locator: Locator::Partition(2),
                ttl_ms: Some(1_000),
            })
            .at(1_700_000_000_008),
        ),
        (
            "SetLoadRules",
            Command::SetLoadRules(SetLoadRules {
                group: g(),
                rules: Some(rules()),
            })
            .at(0),
        ),
        (
            "SetLoadRules cleared",
            Command::SetLoadRules(SetLoadRules {
                group: g(),
                rules: None,
            })
            .at(0),
        ),
        (
            "RebalanceByLoad",
            Command::RebalanceByLoad(RebalanceByLoad {
                group: g(),
                snapshot: load_snapshot(),
                place_only: true,
            })
            .at(1_700_000_000_009),
        ),
    ]
}

fn rules() -> LoadRules {
    LoadRules {
        threshold_milli: 1_200,
        max_moves: 8,
        max_load_milli: 40,
        cooldown_ms: 30_000,
        max_moves_per_worker: 2,
        target_utilisation_milli: 750,
    }
}

fn load_snapshot() -> LoadSnapshot {
    LoadSnapshot {
        capacities: BTreeMap::from([("w1".to_string(), 100), ("w2".to_string(), 250)]),
        loads: vec![
            LoadRun {
                partitions: PartitionRange::new(0, 3),
                load: 7,
            },
            LoadRun {
                partitions: PartitionRange::new(5, 6),
                load: 900,
            },
        ],
    }
}

fn events() -> Vec<(&'static str, Event)> {
    let g = || "g".to_string();
    let w = || "w1".to_string();
    vec![
        (
            "GroupCreated",
            Event::new(g(), Change::GroupCreated { config: config() }),
        ),
        (
            "GroupUpdated",
            Event::new(g(), Change::GroupUpdated { config: config() }),
        ),
        ("GroupDeleting", Event::new(g(), Change::GroupDeleting)),
        ("GroupDeleted", Event::new(g(), Change::GroupDeleted)),
        (
            "GroupSplit",
            Event::new(g(), Change::GroupSplit { partitions: 16 }),
        ),
        (
            "GroupFrozen",
            Event::new(g(), Change::GroupFrozen { frozen: false }),
        ),
        (
            "WorkerJoined",
            Event::new(
                g(),
                Change::WorkerJoined {
                    worker: w(),
                    session: session(SessionState::Active),
                },
            ),
        ),
        (
            "WorkerDraining",
            Event::new(g(), Change::WorkerDraining { worker: w() }),
        ),
        (
            "WorkerEvicting",
            Event::new(g(), Change::WorkerEvicting { worker: w() }),
        ),
        (
            "WorkerLeft",
            Event::new(
                g(),
                Change::WorkerLeft {
                    worker: w(),
                    reason: LeaveReason::Evicted,
                },
            ),
        ),
        (
            "Granted",
            Event::new(
                g(),
                Change::Granted {
                    worker: w(),
                    partitions: ranges(),
                    token: 6,
                },
            ),
        ),
        (
            "Revoking",
            Event::new(
                g(),
                Change::Revoking {
                    from: w(),
                    partitions: ranges(),
                    to: Some("w2".to_string()),
                    since_ms: 1_700_000_000_009,
                },
            ),
        ),
        (
            "Released",
            Event::new(
                g(),
                Change::Released {
                    worker: w(),
                    partitions: ranges(),
                },
            ),
        ),
        (
            "Reserved",
            Event::new(
                g(),
                Change::Reserved {
                    worker: w(),
                    partitions: ranges(),
                    until_ms: 1_700_000_000_010,
                },
            ),
        ),
        (
            "TombstoneAdded",
            Event::new(
                g(),
                Change::TombstoneAdded {
                    key: "doc".to_string(),
                    tombstone: tombstone(Some(0xfeed)),
                    owner: Some(w()),
                },
            ),
        ),
        (
            "TombstonePurged",
            Event::new(
                g(),
                Change::TombstonePurged {
                    key: "doc".to_string(),
                },
            ),
        ),
        (
            "TombstonesAcked",
            Event::new(
                g(),
                Change::TombstonesAcked {
                    worker: w(),
                    revision: 8,
                },
            ),
        ),
        (
            "LoadRulesSet",
            Event::new(
                g(),
                Change::LoadRulesSet {
                    rules: Some(rules()),
                },
            ),
        ),
        (
            "LoadRulesSet cleared",
            Event::new(g(), Change::LoadRulesSet { rules: None }),
        ),
    ]
}

/// A state with something of everything a snapshot holds: sessions in
/// every state, owned, moving and reserved partitions, tombstones by hash
/// and by partition, a frozen group and one being deleted.
fn state() -> State {
    let mut assignment = Assignment::new(8);
    assignment.update(PartitionRange::new(0, 2), |_| Slot {
        owner: Some("w1".to_string()),
        token: 6,
        revoking: None,
        reserved: None,
    });
    assignment.update(PartitionRange::new(2, 3), |_| Slot {
        owner: Some("w1".to_string()),
        token: 6,
        revoking: Some(Revoking {
            to: Some("w2".to_string()),
            since_ms: 1_700_000_000_011,
        }),
        reserved: None,
    });
    assignment.update(PartitionRange::new(5, 7), |_| Slot {
        reserved: Some(Reservation {
            worker: "w3".to_string(),
            until_ms: 1_700_000_000_012,
        }),
        ..Slot::default()
    });
    let main = Group {
        config: config(),
        config_revision: 2,
        frozen: true,
        deleting: false,
        sessions: BTreeMap::from([
            ("w1".to_string(), session(SessionState::Active)),
            ("w2".to_string(), session(SessionState::Draining)),
            ("w4".to_string(), session(SessionState::Evicting)),
        ]),
        assignment,
        tombstones: Tombstones::from(BTreeMap::from([
            ("by-hash".to_string(), tombstone(Some(0xfeed))),
            ("by-partition".to_string(), tombstone(None)),
        ])),
    };
    let going = Group {
        config: GroupConfig::default(),
        config_revision: 1,
        frozen: false,
        deleting: true,
        sessions: BTreeMap::new(),
        assignment: Assignment::new(1),
        tombstones: Tombstones::default(),
    };
    State {
        revision: 12,
        compacted: 3,
        groups: BTreeMap::from([("g".to_string(), main), ("old".to_string(), going)]),
        load: BTreeMap::new(),
    }
}

/// The same state once group `g` balances by load: the extended form.
fn state_with_load() -> State {
    let mut state = state();
    state.load.insert(
        "g".to_string(),
        GroupLoad {
            rules: rules(),
            moved_at: BTreeMap::from([(2, 1_700_000_000_011)]),
        },
    );
    state
}

#[test]
fn every_command_encodes_as_entries_already_in_logs() {
    check_all(commands(), COMMANDS);
}

#[test]
fn every_event_encodes_as_the_stored_history() {
    check_all(events(), EVENTS);
}

#[test]
fn the_state_encodes_as_stored_snapshots() {
    check_all(
        vec![
            ("State", state()),
            ("State balancing by load", state_with_load()),
        ],
        STATE,
    );
}

/// A state is read from inside snapshots and checkpoints, followed by
/// other values: each form reads exactly its own bytes, and the form
/// without load rules is the bytes every earlier baton wrote.
#[test]
fn each_stored_state_form_reads_exactly_its_own_bytes() {
    for state in [state(), state_with_load()] {
        let bytes = bincode::serialize(&(state.clone(), 77u64)).expect("encode");
        let (decoded, after): (State, u64) = bincode::deserialize(&bytes).expect("decode");
        assert_eq!((decoded, after), (state, 77));
    }
}

/// An entry of the log as every baton before batches wrote it (one
/// proposal) decodes as `Proposals::One`, and `One` encodes to those same
/// bytes: logs already on disk, and entries from a leader that writes no
/// batches, read unchanged.
#[test]
fn an_entry_of_one_proposal_decodes_as_logs_already_hold_it() {
    for ((name, proposal), (_, pinned)) in commands().into_iter().zip(COMMANDS) {
        let one = Proposals::One(proposal);
        assert_eq!(
            hex(&bincode::serialize(&one).expect("encode")),
            *pinned,
            "{name}"
        );
        let decoded: Proposals = bincode::deserialize(&unhex(pinned)).expect("decode");
        assert_eq!(decoded, one, "{name}");
    }
}

/// A batch is one appended variant holding the proposals, each in its
/// stored form: pinned, so that what a leader writes today every later
/// node reads.
#[test]
fn an_entry_of_a_batch_encodes_as_pinned_and_never_nests() {
    let batch = Proposals::Many(vec![
        Command::Barrier.at(0),
        Command::PutTombstoneV2(PutTombstone {
            group: "g".into(),
            key: "k".into(),
            locator: Locator::Partition(3),
            ttl_ms: Some(60_000),
        })
        .at(1_700_000_000_000),
    ]);
    let bytes = bincode::serialize(&batch).expect("encode");
    assert_eq!(
        hex(&bytes),
        "120000000200000000000000000000001100000001000000000000006701000000000000006b02000000030000000160ea0000000000000068e5cf8b010000"
    );
    assert_eq!(
        bincode::deserialize::<Proposals>(&bytes).expect("decode"),
        batch
    );

    // A batch inside a batch is refused, not flattened or misread, and a
    // batch is never read as a lone proposal.
    // Variant 18 (`Batch`), one element: variant 18 with no elements.
    let nested = unhex(
        &[
            "12000000",
            "0100000000000000",
            "12000000",
            "0000000000000000",
        ]
        .concat(),
    );
    assert!(bincode::deserialize::<Proposals>(&nested).is_err());
    let empty_batch = unhex("120000000000000000000000");
    assert!(bincode::deserialize::<Proposal>(&empty_batch).is_err());
    assert!(bincode::deserialize::<Proposals>(&empty_batch).is_err());
}
