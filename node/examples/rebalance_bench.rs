//! Rebalancer benchmark: plan time for 65,536 partitions × 1,000 workers on a
//! join and on a leave, and the snapshot size of that state.
//!
//!     cargo run --release -p baton-node --example rebalance_bench
//!
//! Options: `--partitions N --workers N --runs N`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use baton_node::domain::command::{CreateGroup, Join, Leave, Rebalance};
use baton_node::domain::{rebalancer, Command, GroupConfig, State};

fn arg(name: &str, default: u32) -> u32 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Bench {
    state: State,
    rev: u64,
    now: u64,
}

impl Bench {
    fn apply(&mut self, command: Command) {
        self.rev += 1;
        let result = self.state.apply(self.rev, &command.clone().at(self.now));
        if let Err(e) = result.outcome {
            eprintln!("{command:?} refused: {e}");
            std::process::exit(1);
        }
    }

    fn join(&mut self, worker: String) {
        self.apply(Command::Join(Join {
            group: "g".into(),
            worker,
            ttl_ms: None,
            weight: 1,
            labels: BTreeMap::new(),
        }));
    }

    /// Plans `runs` times; returns (min, median, max) and the plan's handoffs.
    fn time_plan(&self, runs: u32) -> (Duration, Duration, Duration, u32) {
        let group = &self.state.groups["g"];
        let mut times = Vec::new();
        let mut handoffs = 0;
        for _ in 0..runs {
            let start = Instant::now();
            let plan = rebalancer::plan(group, self.now);
            times.push(start.elapsed());
            handoffs = plan.handoffs() + plan_grants(&plan);
        }
        times.sort();
        (
            times[0],
            times[times.len() / 2],
            times[times.len() - 1],
            handoffs,
        )
    }
}

fn plan_grants(plan: &rebalancer::Plan) -> u32 {
    plan.moves
        .iter()
        .map(|m| match m {
            rebalancer::Move::Grant { partitions, .. } => partitions.iter().map(|r| r.len()).sum(),
            rebalancer::Move::Revoke { .. } => 0,
        })
        .sum()
}

fn main() {
    let partitions = arg("--partitions", 65_536);
    let workers = arg("--workers", 1_000);
    let runs = arg("--runs", 50).max(1);
    let mut b = Bench {
        state: State::default(),
        rev: 0,
        now: 1_700_000_000_000,
    };
    let config = GroupConfig {
        partitions,
        ..GroupConfig::default()
    };
    b.apply(Command::CreateGroup(CreateGroup {
        group: "g".into(),
        config,
    }));
    for w in 0..workers {
        b.join(format!("worker-{w:04}"));
    }
    let start = Instant::now();
    b.apply(Command::Rebalance(Rebalance { group: "g".into() }));
    println!(
        "initial assignment of {partitions} partitions to {workers} workers (plan + apply): {:.2} ms",
        start.elapsed().as_secs_f64() * 1e3
    );

    let snapshot = bincode::serialize(&b.state).unwrap_or_default();
    let runs_stored = b.state.groups["g"].assignment.run_count();
    println!(
        "snapshot: {} bytes for {partitions} partitions, {workers} sessions, {runs_stored} ranges = {:.2} bytes/partition",
        snapshot.len(),
        snapshot.len() as f64 / f64::from(partitions)
    );

    let mut joined = Bench {
        state: b.state.clone(),
        rev: b.rev,
        now: b.now,
    };
    joined.join("worker-new".into());
    let (min, med, max, moved) = joined.time_plan(runs);
    println!(
        "plan on a join:  min {:.3} ms  median {:.3} ms  max {:.3} ms  ({moved} partitions move, {runs} runs)",
        min.as_secs_f64() * 1e3,
        med.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );

    let mut left = Bench {
        state: b.state.clone(),
        rev: b.rev,
        now: b.now,
    };
    left.apply(Command::Leave(Leave {
        group: "g".into(),
        worker: "worker-0500".into(),
        session: None,
        drain: true,
    }));
    let (min, med, max, moved) = left.time_plan(runs);
    println!(
        "plan on a leave: min {:.3} ms  median {:.3} ms  max {:.3} ms  ({moved} partitions move, {runs} runs)",
        min.as_secs_f64() * 1e3,
        med.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
}
