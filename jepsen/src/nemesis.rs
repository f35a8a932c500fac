//! The nemesis: faults scheduled from the seed, one at a time, each held for
//! a few seconds (freeze and silent: 1.5–3× the workers' lease TTL) and then
//! healed (links restored, silent nodes answering again, paused and frozen
//! nodes continued, killed nodes restarted). Every fault and heal is an
//! `info` operation of the process `nemesis` in the history; a fault names
//! its node and whether it was the leader.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::cluster::Cluster;
use crate::history::{Kind, Op, Recorder};
use crate::proxy::CutMode;
use crate::workload::Stop;

/// The fault families `--nemesis` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Family {
    /// kill -9 of any node or of the leader, restarted on the same data.
    Kill,
    /// SIGSTOP of any node or of the leader, then SIGCONT.
    Pause,
    /// Partitions: random halves, isolated leader, bridge, ring, one-way.
    Partition,
    /// Link delay (proxy backend only: this kernel has no netem).
    Delay,
    /// Membership: a node is killed, removed, wiped, and a new node joins.
    Membership,
    /// SIGSTOP for longer than the workers' lease TTL (1.5–3×), of the
    /// leader and of a follower in turn, then SIGCONT.
    Freeze,
    /// A node whose socket accepts connections and never answers (and which
    /// reaches no one), the leader and a follower in turn, for 1.5–3× the
    /// workers' TTL.
    Silent,
    /// Every family above.
    All,
    /// No faults.
    None,
}

pub fn expand(families: &[Family]) -> BTreeSet<Family> {
    let mut out = BTreeSet::new();
    for f in families {
        match f {
            Family::All => out.extend([
                Family::Kill,
                Family::Pause,
                Family::Partition,
                Family::Delay,
                Family::Membership,
                Family::Freeze,
                Family::Silent,
            ]),
            Family::None => {}
            f => {
                out.insert(*f);
            }
        }
    }
    out
}

pub struct Nemesis {
    pub cluster: Arc<Cluster>,
    pub history: Recorder,
    pub families: BTreeSet<Family>,
    pub rng: StdRng,
    /// Partition schemes still to deal (see [`Nemesis::partition`]).
    schemes: Vec<u8>,
    dealt_schemes: bool,
    /// Faults of the freeze and silent families dealt so far: even ones
    /// target the leader, odd ones a follower.
    freezes: u32,
    silences: u32,
}

/// A fault as injected: its name, its description for the history, and
/// how long to hold it when its family decides that (else 2–7 s).
type Injected = (String, Value, Option<Duration>);

impl Nemesis {
    pub fn new(
        cluster: Arc<Cluster>,
        history: Recorder,
        families: BTreeSet<Family>,
        seed: u64,
    ) -> Self {
        Self {
            cluster,
            history,
            families,
            rng: StdRng::seed_from_u64(seed ^ 0x004E_454D_4553_4953),
            schemes: Vec::new(),
            dealt_schemes: false,
            freezes: 0,
            silences: 0,
        }
    }

    fn record(&self, f: &str, value: Value) {
        self.history
            .record(Op::new("nemesis", Kind::Info, f).value(value));
    }

    /// Runs faults until `stop`, then heals everything.
    pub async fn run(mut self, stop: Stop) {
        let mut families: Vec<Family> = self.families.iter().copied().collect();
        if !self.cluster.can_delay() {
            families.retain(|f| *f != Family::Delay);
        }
        // Families are dealt from a shuffled deck, so a short run still
        // sees each of them.
        let mut deck: Vec<Family> = Vec::new();
        while !families.is_empty() {
            let quiet = Duration::from_millis(self.rng.random_range(1500..4000));
            if sleep_or_stop(quiet, &stop).await {
                break;
            }
            if deck.is_empty() {
                deck.clone_from(&families);
                deck.shuffle(&mut self.rng);
            }
            let Some(family) = deck.pop() else { break };
            let mut hold = Duration::from_millis(self.rng.random_range(2000..7000));
            match self.inject(family).await {
                Ok(Some((f, value, held))) => {
                    self.record(&f, value);
                    hold = held.unwrap_or(hold);
                }
                Ok(None) => continue,
                Err(e) => self.record(
                    "fault-failed",
                    json!({"family": format!("{family:?}"), "error": format!("{e:#}")}),
                ),
            }
            let stopped = sleep_or_stop(hold, &stop).await;
            self.heal();
            if stopped {
                return;
            }
        }
        self.heal();
    }

    fn heal(&self) {
        match self.cluster.heal_all() {
            Ok(()) => self.record("heal", Value::Null),
            Err(e) => self.record("heal-failed", json!({"error": e.to_string()})),
        }
    }

    /// The leader (`leader`, when there is one) or a random member; with
    /// whether the node picked is the leader, as far as the cluster says.
    async fn target(&mut self, leader: bool) -> Option<(usize, bool)> {
        let current = self.cluster.leader().await;
        if let Some(l) = current.filter(|_| leader) {
            return Some((l, true));
        }
        let members = self.cluster.members();
        let node = *members.get(self.rng.random_range(0..members.len().max(1)))?;
        Some((node, Some(node) == current))
    }

    /// The leader (`leader`) or a random follower; with whether the node
    /// picked is the leader, as far as the cluster says.
    async fn leader_or_follower(&mut self, leader: bool) -> Option<(usize, bool)> {
        let current = self.cluster.leader().await;
        let members = self.cluster.members();
        let node = match current {
            Some(l) if leader => l,
            _ => {
                let others: Vec<usize> = members
                    .iter()
                    .copied()
                    .filter(|m| Some(*m) != current)
                    .collect();
                *others.choose(&mut self.rng)?
            }
        };
        Some((node, Some(node) == current))
    }

    /// A hold of 1.5–3× the workers' lease TTL.
    fn past_the_ttl(&mut self) -> Duration {
        let ttl = u64::try_from(crate::workload::WORKER_TTL.as_millis()).unwrap_or(2000);
        Duration::from_millis(self.rng.random_range(ttl * 3 / 2..=ttl * 3))
    }

    /// Injects one fault of `family`; returns its name, description and
    /// hold, if the family sets its own.
    async fn inject(&mut self, family: Family) -> anyhow::Result<Option<Injected>> {
        let members = self.cluster.members();
        let mut hold = None;
        let (name, value) = match family {
            Family::Kill => {
                let want_leader = self.rng.random_bool(0.5);
                let Some((node, leader)) = self.target(want_leader).await else {
                    return Ok(None);
                };
                self.cluster.kill(node)?;
                (
                    "kill".into(),
                    json!({"node": node, "leader": leader,
                           "target": if want_leader { "leader" } else { "any" }}),
                )
            }
            Family::Pause => {
                let want_leader = self.rng.random_bool(0.5);
                let Some((node, leader)) = self.target(want_leader).await else {
                    return Ok(None);
                };
                self.cluster.pause(node)?;
                (
                    "pause".into(),
                    json!({"node": node, "leader": leader,
                           "target": if want_leader { "leader" } else { "any" }}),
                )
            }
            Family::Partition => {
                let mode = if self.rng.random_bool(0.5) {
                    CutMode::Drop
                } else {
                    CutMode::Reset
                };
                let (name, cuts) = self.partition(&members).await;
                for (from, to) in &cuts {
                    self.cluster.cut(*from, *to, mode)?;
                }
                (
                    "partition".into(),
                    json!({"kind": name, "mode": format!("{mode:?}").to_lowercase(), "cut": cuts}),
                )
            }
            Family::Delay => {
                let by = Duration::from_millis(self.rng.random_range(20..150));
                for a in &members {
                    for b in &members {
                        if a != b {
                            self.cluster.delay(*a, *b, by)?;
                        }
                    }
                }
                ("delay".into(), json!({"ms": by.as_millis()}))
            }
            Family::Membership => {
                let Some((old, leader)) = self.target(false).await else {
                    return Ok(None);
                };
                self.record(
                    "replace",
                    json!({"node": old, "leader": leader, "phase": "start"}),
                );
                let new = self.cluster.replace(old).await?;
                (
                    "replaced".into(),
                    json!({"removed": old, "joined": new, "wiped": true,
                           "endpoint": self.cluster.endpoint(new)}),
                )
            }
            Family::Freeze => {
                let want_leader = self.freezes.is_multiple_of(2);
                self.freezes += 1;
                let Some((node, leader)) = self.leader_or_follower(want_leader).await else {
                    return Ok(None);
                };
                let held = self.past_the_ttl();
                hold = Some(held);
                self.cluster.pause(node)?;
                (
                    "freeze".into(),
                    json!({"node": node, "leader": leader,
                           "target": if want_leader { "leader" } else { "follower" },
                           "hold_ms": held.as_millis()}),
                )
            }
            Family::Silent => {
                let want_leader = self.silences.is_multiple_of(2);
                self.silences += 1;
                let Some((node, leader)) = self.leader_or_follower(want_leader).await else {
                    return Ok(None);
                };
                let held = self.past_the_ttl();
                hold = Some(held);
                self.cluster.silence(node)?;
                (
                    "silent".into(),
                    json!({"node": node, "leader": leader,
                           "target": if want_leader { "leader" } else { "follower" },
                           "hold_ms": held.as_millis(),
                           "how": self.cluster.silence_method()}),
                )
            }
            Family::All | Family::None => return Ok(None),
        };
        Ok(Some((name, value, hold)))
    }

    /// Picks a partition scheme; returns its name and the directed links
    /// to cut.
    async fn partition(&mut self, members: &[usize]) -> (&'static str, Vec<(usize, usize)>) {
        let mut order = members.to_vec();
        order.shuffle(&mut self.rng);
        let both = |a: &[usize], b: &[usize]| -> Vec<(usize, usize)> {
            let mut cuts = Vec::new();
            for x in a {
                for y in b {
                    cuts.push((*x, *y));
                    cuts.push((*y, *x));
                }
            }
            cuts
        };
        let leader = self.cluster.leader().await;
        // Schemes are dealt like families, so a run with a few partitions
        // sees each; the first deck starts with the isolated leader, the
        // case G1 exists for (a leader cut off from its peers while its
        // workers still reach it).
        if self.schemes.is_empty() {
            self.schemes = (0..5).filter(|s| *s != 3 || order.len() >= 5).collect();
            self.schemes.shuffle(&mut self.rng);
            if !self.dealt_schemes {
                self.schemes.retain(|s| *s != 1);
                self.schemes.push(1);
                self.dealt_schemes = true;
            }
        }
        match self.schemes.pop().unwrap_or(0) {
            0 => {
                let (a, b) = order.split_at(order.len() / 2);
                ("halves", both(a, b))
            }
            1 if leader.is_some() => {
                let l = leader.unwrap_or_default();
                let rest: Vec<usize> = members.iter().copied().filter(|m| *m != l).collect();
                ("isolated-leader", both(&[l], &rest))
            }
            2 if order.len() >= 3 => {
                // order[0] is the bridge: it sees both sides, they do not
                // see each other.
                let side = (order.len() - 1) / 2;
                let (a, b) = order[1..].split_at(side);
                ("bridge", both(a, b))
            }
            3 if order.len() >= 5 => {
                // Each node sees only its two neighbours on a ring.
                let n = order.len();
                let mut cuts = Vec::new();
                for i in 0..n {
                    for j in 0..n {
                        let d = (i + n - j) % n;
                        if i != j && d != 1 && d != n - 1 {
                            cuts.push((order[i], order[j]));
                        }
                    }
                }
                ("ring", cuts)
            }
            _ => {
                // One way: what the leader (or a node) sends is lost; what
                // it receives still arrives.
                let from = leader.unwrap_or(order[0]);
                let cuts = members
                    .iter()
                    .filter(|m| **m != from)
                    .map(|m| (from, *m))
                    .collect();
                ("one-way", cuts)
            }
        }
    }
}

/// Sleeps; true if `stop` came first.
pub async fn sleep_or_stop(d: Duration, stop: &Stop) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => false,
        () = stop.wait() => true,
    }
}
