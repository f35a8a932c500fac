//! The nemesis: faults scheduled from the seed, one at a time, each held for
//! a few seconds and then healed (links restored, paused nodes continued,
//! killed nodes restarted). Every fault and heal is an `info` operation of
//! the process `nemesis` in the history.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
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
}

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
            match self.inject(family).await {
                Ok(Some((f, value))) => self.record(&f, value),
                Ok(None) => continue,
                Err(e) => self.record(
                    "fault-failed",
                    json!({"family": format!("{family:?}"), "error": format!("{e:#}")}),
                ),
            }
            let hold = Duration::from_millis(self.rng.random_range(2000..7000));
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

    async fn target(&mut self, leader: bool) -> Option<usize> {
        if leader {
            if let Some(l) = self.cluster.leader().await {
                return Some(l);
            }
        }
        let members = self.cluster.members();
        members
            .get(self.rng.random_range(0..members.len().max(1)))
            .copied()
    }

    /// Injects one fault of `family`; returns its name and description.
    async fn inject(&mut self, family: Family) -> anyhow::Result<Option<(String, Value)>> {
        let members = self.cluster.members();
        Ok(Some(match family {
            Family::Kill => {
                let leader = self.rng.random_bool(0.5);
                let Some(node) = self.target(leader).await else {
                    return Ok(None);
                };
                self.cluster.kill(node)?;
                ("kill".into(), json!({"node": node, "leader": leader}))
            }
            Family::Pause => {
                let leader = self.rng.random_bool(0.5);
                let Some(node) = self.target(leader).await else {
                    return Ok(None);
                };
                self.cluster.pause(node)?;
                ("pause".into(), json!({"node": node, "leader": leader}))
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
                let Some(old) = self.target(false).await else {
                    return Ok(None);
                };
                self.record("replace", json!({"node": old, "phase": "start"}));
                let new = self.cluster.replace(old).await?;
                (
                    "replaced".into(),
                    json!({"removed": old, "joined": new, "wiped": true}),
                )
            }
            Family::All | Family::None => return Ok(None),
        }))
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
