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
    ]
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
    }
}

const COMMANDS: &[(&str, &str)] = &[
    (
        "Barrier",
        "00000000",
    ),
    (
        "CreateGroup",
        "0100000001000000000000006708000000000000003075000000000000000001001027000000000000d00700000000000000840c2400000000",
    ),
    (
        "UpdateGroup",
        "0200000001000000000000006708000000000000003075000000000000000001001027000000000000d00700000000000000840c24000000000400000000000000",
    ),
    (
        "DeleteGroup",
        "0300000001000000000000006701",
    ),
    (
        "SplitGroup",
        "040000000100000000000000670400000000000000",
    ),
    (
        "SetFrozen",
        "0500000001000000000000006701",
    ),
    (
        "Join",
        "060000000100000000000000670200000000000000773101983a00000000000003000000010000000000000004000000000000007a6f6e65040000000000000065752d310168e5cf8b010000",
    ),
    (
        "Leave",
        "070000000100000000000000670200000000000000773101070000000000000001",
    ),
    (
        "Evict",
        "0800000001000000000000006702000000000000007731",
    ),
    (
        "ExpireSession",
        "090000000100000000000000670200000000000000773107000000000000000268e5cf8b010000",
    ),
    (
        "Release",
        "0a0000000100000000000000670200000000000000773107000000000000000200000000000000000000000200000005000000060000000600000000000000",
    ),
    (
        "Rebalance",
        "0b0000000100000000000000670368e5cf8b010000",
    ),
    (
        "Move",
        "0c000000010000000000000067020000000000000000000000020000000500000006000000020000000000000077310468e5cf8b010000",
    ),
    (
        "PutTombstone",
        "0d0000000100000000000000670300000000000000646f6301000000edfe0000000000000160ea0000000000000568e5cf8b010000",
    ),
    (
        "PurgeTombstones",
        "0e0000000100000000000000670668e5cf8b01000064000000",
    ),
    (
        "AckTombstones",
        "0f0000000100000000000000670200000000000000773107000000000000000800000000000000",
    ),
    (
        "Compact",
        "100000000300000000000000",
    ),
    (
        "PutTombstoneV2 by key",
        "110000000100000000000000670300000000000000646f6300000000000768e5cf8b010000",
    ),
    (
        "PutTombstoneV2 by partition",
        "110000000100000000000000670300000000000000646f63020000000200000001e8030000000000000868e5cf8b010000",
    ),
];

const EVENTS: &[(&str, &str)] = &[
    (
        "GroupCreated",
        "0000000001000000000000006708000000000000003075000000000000000001001027000000000000d00700000000000000840c2400000000",
    ),
    (
        "GroupUpdated",
        "0100000001000000000000006708000000000000003075000000000000000001001027000000000000d00700000000000000840c2400000000",
    ),
    (
        "GroupDeleting",
        "02000000010000000000000067",
    ),
    (
        "GroupDeleted",
        "03000000010000000000000067",
    ),
    (
        "GroupSplit",
        "0400000001000000000000006710000000",
    ),
    (
        "GroupFrozen",
        "0500000001000000000000006700",
    ),
    (
        "WorkerJoined",
        "06000000010000000000000067020000000000000077310700000000000000102700000000000002000000010000000000000004000000000000007a6f6e65040000000000000065752d31000000000500000000000000",
    ),
    (
        "WorkerDraining",
        "0700000001000000000000006702000000000000007731",
    ),
    (
        "WorkerEvicting",
        "0800000001000000000000006702000000000000007731",
    ),
    (
        "WorkerLeft",
        "090000000100000000000000670200000000000000773103000000",
    ),
    (
        "Granted",
        "0a000000010000000000000067020000000000000077310200000000000000000000000200000005000000060000000600000000000000",
    ),
    (
        "Revoking",
        "0b0000000100000000000000670200000000000000773102000000000000000000000002000000050000000600000001020000000000000077320968e5cf8b010000",
    ),
    (
        "Released",
        "0c00000001000000000000006702000000000000007731020000000000000000000000020000000500000006000000",
    ),
    (
        "Reserved",
        "0d000000010000000000000067020000000000000077310200000000000000000000000200000005000000060000000a68e5cf8b010000",
    ),
    (
        "TombstoneAdded",
        "0e0000000100000000000000670300000000000000646f630300000001edfe00000000000009000000000000000068e5cf8b0100000102000000000000007731",
    ),
    (
        "TombstonePurged",
        "0f0000000100000000000000670300000000000000646f63",
    ),
    (
        "TombstonesAcked",
        "10000000010000000000000067020000000000000077310800000000000000",
    ),
];

const STATE: &[(&str, &str)] = &[
    (
        "State",
        "0c000000000000000300000000000000020000000000000001000000000000006708000000000000003075000000000000000001001027000000000000d00700000000000000840c2400000000020000000000000001000300000000000000020000000000000077310700000000000000102700000000000002000000010000000000000004000000000000007a6f6e65040000000000000065752d31000000000500000000000000020000000000000077320700000000000000102700000000000002000000010000000000000004000000000000007a6f6e65040000000000000065752d31010000000500000000000000020000000000000077340700000000000000102700000000000002000000010000000000000004000000000000007a6f6e65040000000000000065752d310200000005000000000000000800000005000000000000000000000001020000000000000077310600000000000000000002000000010200000000000000773106000000000000000101020000000000000077320b68e5cf8b01000000030000000000000000000000000000050000000000000000000000000001020000000000000077330c68e5cf8b0100000700000000000000000000000000000200000000000000070000000000000062792d686173680300000001edfe00000000000009000000000000000068e5cf8b0100000c0000000000000062792d706172746974696f6e030000000009000000000000000068e5cf8b01000003000000000000006f6c6401000000000000003075000000000000000001001027000000000000000000000000000000840c24000000000100000000000000000100000000000000000100000001000000000000000000000000000000000000000000000000000000000000",
    ),
];

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
    check_all(vec![("State", state())], STATE);
}
