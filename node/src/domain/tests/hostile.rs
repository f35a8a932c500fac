//! Hostile command sequences: what a careless or malicious client could get
//! into the log (directly, or through an older node that did not check),
//! fed to `State::apply`. Whatever comes in, the invariants `Sim::cmd`
//! checks hold (events reproduce every change, grants land on free
//! partitions, tokens only grow), the leader's pre-proposal check agrees
//! with apply, and every event carries normalized ranges within the group,
//! so no command's work grows with how often it names a partition.

use proptest::prelude::*;

use super::*;

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => Just("g".to_string()),
        1 => Just("nowhere".to_string()),
        1 => Just(String::new()),
        1 => Just("a".repeat(20_000)),
        1 => Just("G_bad name".to_string()),
    ]
}

fn worker_id() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => (0u8..4).prop_map(|w| format!("w{w}")),
        1 => Just(String::new()),
        1 => Just("x".repeat(5_000)),
        1 => Just("has space".to_string()),
    ]
}

fn ranges() -> impl Strategy<Value = Vec<PartitionRange>> {
    let range = prop_oneof![
        4 => (0u32..80, 0u32..80).prop_map(|(a, b)| PartitionRange::new(a.min(b), a.max(b) + 1)),
        1 => Just(PartitionRange::new(0, 65_536)),
        1 => (any::<u32>(), any::<u32>()).prop_map(|(a, b)| PartitionRange::new(a, b)),
    ];
    prop_oneof![
        4 => proptest::collection::vec(range.clone(), 0..40),
        // The same full range thousands of times over.
        1 => (1usize..5_000).prop_map(|n| vec![PartitionRange::new(0, 64); n]),
    ]
}

fn config() -> impl Strategy<Value = GroupConfig> {
    (
        prop_oneof![Just(0u32), 1u32..65, Just(65_536), Just(u32::MAX)],
        prop_oneof![Just(0u64), Just(1_000), Just(u64::MAX)],
        prop_oneof![Just(0u32), Just(1), Just(u32::MAX)],
        prop_oneof![Just(0u64), Just(10_000), Just(u64::MAX)],
    )
        .prop_map(
            |(partitions, handoff_timeout_ms, max_in_flight, ttl)| GroupConfig {
                partitions,
                handoff_timeout_ms,
                max_in_flight,
                default_ttl_ms: ttl,
                ..GroupConfig::default()
            },
        )
}

/// Sessions and tokens: mostly plausible (taken from the state when the
/// command runs), sometimes arbitrary.
#[derive(Clone, Debug)]
enum Pick {
    Current,
    Any(u64),
}

fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![3 => Just(Pick::Current), 1 => any::<u64>().prop_map(Pick::Any)]
}

#[derive(Clone, Debug)]
enum Hostile {
    Create(String, GroupConfig),
    Update(String, GroupConfig),
    Delete(String, bool),
    Split(String),
    Join(String, String, Option<u64>, u32),
    Leave(String, String, Pick, bool),
    Evict(String, String),
    Expire(String, String, Pick),
    Release(String, String, Pick, Vec<PartitionRange>, Pick),
    Rebalance(String),
    Move(String, Vec<PartitionRange>, String),
    Put(String, String, Option<u32>, Option<u64>),
    Purge(String, u32),
    Ack(String, String, Pick, u64),
    Compact(u64),
    Advance(u32),
}

fn hostile() -> impl Strategy<Value = Hostile> {
    prop_oneof![
        1 => (name(), config()).prop_map(|(g, c)| Hostile::Create(g, c)),
        1 => (name(), config()).prop_map(|(g, c)| Hostile::Update(g, c)),
        1 => (name(), any::<bool>()).prop_map(|(g, f)| Hostile::Delete(g, f)),
        1 => name().prop_map(Hostile::Split),
        4 => (name(), worker_id(), prop::option::of(any::<u64>()), any::<u32>())
            .prop_map(|(g, w, ttl, weight)| Hostile::Join(g, w, ttl, weight % 5)),
        1 => (name(), worker_id(), pick(), any::<bool>()).prop_map(|(g, w, s, d)| Hostile::Leave(g, w, s, d)),
        1 => (name(), worker_id()).prop_map(|(g, w)| Hostile::Evict(g, w)),
        1 => (name(), worker_id(), pick()).prop_map(|(g, w, s)| Hostile::Expire(g, w, s)),
        4 => (name(), worker_id(), pick(), ranges(), pick())
            .prop_map(|(g, w, s, r, t)| Hostile::Release(g, w, s, r, t)),
        3 => name().prop_map(Hostile::Rebalance),
        3 => (name(), ranges(), worker_id()).prop_map(|(g, r, w)| Hostile::Move(g, r, w)),
        2 => (name(), prop_oneof![Just(String::new()), "[a-c]{1,3}", Just("k".repeat(2_000))],
              prop::option::of(any::<u32>()), prop::option::of(any::<u64>()))
            .prop_map(|(g, k, p, ttl)| Hostile::Put(g, k, p, ttl)),
        1 => (name(), prop_oneof![Just(0u32), 1u32..20, Just(u32::MAX)]).prop_map(|(g, l)| Hostile::Purge(g, l)),
        1 => (name(), worker_id(), pick(), any::<u64>()).prop_map(|(g, w, s, r)| Hostile::Ack(g, w, s, r)),
        1 => any::<u64>().prop_map(Hostile::Compact),
        1 => (0u32..20_000).prop_map(Hostile::Advance),
    ]
}

impl Sim {
    fn session_of(&self, group: &str, worker: &str, pick: &Pick) -> u64 {
        match pick {
            Pick::Any(n) => *n,
            Pick::Current => self
                .state
                .groups
                .get(group)
                .and_then(|g| g.sessions.get(worker))
                .map_or(0, |s| s.id),
        }
    }

    /// The token `worker` holds its first partition in `ranges` with.
    fn token_of(&self, group: &str, worker: &str, ranges: &[PartitionRange], pick: &Pick) -> u64 {
        match pick {
            Pick::Any(n) => *n,
            Pick::Current => self
                .state
                .groups
                .get(group)
                .and_then(|g| {
                    let first = ranges.first()?.start;
                    let slot = (first < g.config.partitions).then(|| g.assignment.slot(first))?;
                    (slot.owner.as_deref() == Some(worker)).then_some(slot.token)
                })
                .unwrap_or(0),
        }
    }

    fn command(&self, h: &Hostile) -> Option<Command> {
        Some(match h.clone() {
            Hostile::Create(group, config) => Command::CreateGroup(CreateGroup { group, config }),
            Hostile::Update(group, config) => {
                let expected_revision = self
                    .state
                    .groups
                    .get(&group)
                    .map_or(0, |g| g.config_revision);
                Command::UpdateGroup(UpdateGroup {
                    group,
                    config,
                    expected_revision,
                })
            }
            Hostile::Delete(group, force) => Command::DeleteGroup(DeleteGroup { group, force }),
            Hostile::Split(group) => {
                let expected_revision = self
                    .state
                    .groups
                    .get(&group)
                    .map_or(0, |g| g.config_revision);
                Command::SplitGroup(SplitGroup {
                    group,
                    expected_revision,
                })
            }
            Hostile::Join(group, worker, ttl_ms, weight) => Command::Join(Join {
                group,
                worker,
                ttl_ms,
                weight,
                labels: BTreeMap::new(),
            }),
            Hostile::Leave(group, worker, s, drain) => Command::Leave(Leave {
                session: Some(self.session_of(&group, &worker, &s)),
                group,
                worker,
                drain,
            }),
            Hostile::Evict(group, worker) => Command::Evict(Evict { group, worker }),
            Hostile::Expire(group, worker, s) => Command::ExpireSession(ExpireSession {
                session: self.session_of(&group, &worker, &s),
                group,
                worker,
            }),
            Hostile::Release(group, worker, s, partitions, t) => Command::Release(Release {
                session: self.session_of(&group, &worker, &s),
                token: self.token_of(&group, &worker, &partitions, &t),
                group,
                worker,
                partitions,
            }),
            Hostile::Rebalance(group) => Command::Rebalance(Rebalance { group }),
            Hostile::Move(group, partitions, to) => Command::Move(MovePartitions {
                group,
                partitions,
                to,
            }),
            Hostile::Put(group, key, partition, ttl_ms) => Command::PutTombstoneV2(PutTombstone {
                group,
                key,
                locator: partition.map_or(Locator::Key, Locator::Partition),
                ttl_ms,
            }),
            Hostile::Purge(group, limit) => {
                Command::PurgeTombstones(PurgeTombstones { group, limit })
            }
            Hostile::Ack(group, worker, s, revision) => Command::AckTombstones(AckTombstones {
                session: self.session_of(&group, &worker, &s),
                group,
                worker,
                revision,
            }),
            Hostile::Compact(revision) => Command::Compact(Compact { revision }),
            Hostile::Advance(_) => return None,
        })
    }
}

/// Ranges an event may carry: sorted, disjoint, none empty, inside the group.
fn assert_normalized(ranges: &[PartitionRange], partitions: u32, event: &Event) {
    for pair in ranges.windows(2) {
        assert!(pair[0].end < pair[1].start, "unmerged ranges in {event:?}");
    }
    for r in ranges {
        assert!(
            !r.is_empty() && r.end <= partitions,
            "range {r:?} of {event:?} outside 0..{partitions}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn hostile_histories_keep_the_invariants_and_bounded_events(
        partitions in 1u32..64,
        joins in 1u8..4,
        ops in proptest::collection::vec(hostile(), 1..50),
    ) {
        let mut sim = Sim::new();
        sim.create(partitions);
        for w in 0..joins {
            sim.join(&format!("w{w}"), 1);
        }
        sim.rebalance();
        for op in &ops {
            if let Hostile::Advance(ms) = op {
                sim.now += u64::from(*ms);
                continue;
            }
            let Some(command) = sim.command(op) else { continue };
            let checked = sim.state.check(&command.clone().at(sim.now));
            let runs_before: usize = sim.state.groups.values().map(|g| g.assignment.run_count()).sum();
            let result = sim.cmd(command.clone());
            // The leader's check agrees with apply: a refusal is the same
            // refusal, a no-op is the same reply with nothing written.
            match (&checked, &result.outcome) {
                (Err(e), Err(a)) => prop_assert_eq!(e, a),
                // Apply keeps writing an update that changes nothing, as
                // entries already in a log did (see `State::check`).
                (Ok(Some(_)), Ok(_)) if matches!(command, Command::UpdateGroup(_)) => {
                    let updated = matches!(result.events.as_slice(), [Event { change: Change::GroupUpdated { .. }, .. }]);
                    prop_assert!(updated, "{:?}", result.events);
                }
                (Ok(Some(reply)), Ok(applied)) => {
                    prop_assert_eq!(reply, applied);
                    prop_assert!(result.events.is_empty(), "{:?} said no-op but wrote {:?}", command, result.events);
                }
                (Ok(None), Ok(_)) => prop_assert!(
                    !result.events.is_empty() || matches!(command, Command::Barrier | Command::Compact(_)),
                    "{:?} was proposed for nothing", command
                ),
                (checked, applied) => prop_assert!(false, "{:?}: checked {:?}, applied {:?}", command, checked, applied),
            }
            // Events name each partition once, inside the group: what apply
            // does per event is bounded by the group, not by the request.
            let mut carried = 0usize;
            for event in &result.events {
                let partitions = sim.state.groups.get(&event.group).map_or(u32::MAX, |g| g.config.partitions);
                let ranges = match &event.change {
                    Change::Granted { partitions, .. }
                    | Change::Revoking { partitions, .. }
                    | Change::Released { partitions, .. }
                    | Change::Reserved { partitions, .. } => partitions.as_slice(),
                    _ => &[],
                };
                assert_normalized(ranges, partitions, event);
                carried += ranges.len();
            }
            prop_assert!(
                carried <= 2 * runs_before + 4 * 64,
                "{:?} caused events with {} ranges over {} runs", command, carried, runs_before
            );
        }
    }
}
