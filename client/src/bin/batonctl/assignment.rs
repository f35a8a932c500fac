//! `batonctl assignment`: who holds which partitions, what the rebalancer
//! would do, and moves by hand.

use baton_client::proto as pb;
use baton_client::{AdminClient, Consistency};
use clap::Subcommand;
use serde::Serialize;

use crate::output::{non_empty, reply, word, Ranges, Reply, Table, View};

#[derive(Subcommand)]
pub enum AssignmentCommand {
    /// Partitions per worker (as ranges), handoffs in flight, unassigned partitions.
    Show {
        group: String,
        #[arg(long)]
        serializable: bool,
    },
    /// What the rebalancer would do now (changes nothing).
    Plan {
        group: String,
        #[arg(long)]
        serializable: bool,
    },
    /// Hand partitions to a worker by hand (held ones go through handoff).
    Move {
        group: String,
        /// Partitions, e.g. 0-119,240,300-359.
        #[arg(long)]
        partitions: String,
        /// The worker to receive them.
        #[arg(long)]
        to: String,
    },
}

pub async fn run(
    client: &mut AdminClient,
    command: AssignmentCommand,
) -> anyhow::Result<Box<dyn Reply>> {
    Ok(match command {
        AssignmentCommand::Show {
            group,
            serializable,
        } => {
            let a = client
                .get_assignment(&group, Consistency::serializable_if(serializable))
                .await?;
            reply(AssignmentView::new(a))
        }
        AssignmentCommand::Plan {
            group,
            serializable,
        } => {
            let plan = client
                .plan_assignment(&group, Consistency::serializable_if(serializable))
                .await?;
            reply(PlanView::new("the rebalancer would", plan))
        }
        AssignmentCommand::Move {
            group,
            partitions,
            to,
        } => {
            let plan = client
                .move_partitions(&group, parse_ranges(&partitions)?, &to)
                .await?;
            reply(PlanView::new("moved", plan))
        }
    })
}

/// Parses `0-119,240,300-359` into inclusive ranges.
pub fn parse_ranges(text: &str) -> anyhow::Result<Vec<pb::PartitionRange>> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|part| {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let parse = |x: &str| {
                x.trim().parse::<u32>().map_err(|_| {
                    anyhow::anyhow!("{part:?} is not a partition or a range like 0-119")
                })
            };
            Ok(pb::PartitionRange {
                first: parse(a)?,
                last: parse(b)?,
            })
        })
        .collect()
}

/// `assignment show`: the assignment with its balance.
#[derive(Serialize)]
struct AssignmentView {
    group: String,
    revision: u64,
    partitions: u32,
    frozen: bool,
    workers: Vec<WorkerView>,
    moving: Vec<MovingView>,
    unassigned: Ranges,
    balance: Balance,
    /// Fragmentation: how many ranges a worker's partitions make, on average.
    ranges_per_worker: f64,
    /// The reported load, when the group balances by load or has reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    load: Option<LoadView>,
}

/// What the answering node knows of the group's load (the leader's reports).
#[derive(Serialize)]
struct LoadView {
    /// "count" or "load".
    balance: String,
    /// False on a node that is not the leader: reports live on the leader.
    reported: bool,
    total_load: u64,
    /// The busiest worker's utilisation ÷ the mean.
    max_over_mean: f64,
    /// The same once the plan's moves complete (`plan` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    after_plan: Option<f64>,
    hot_partitions: Vec<u32>,
    recommended_workers: Option<u32>,
    workers: Vec<WorkerLoadView>,
}

#[derive(Serialize)]
struct WorkerLoadView {
    id: String,
    load: u64,
    capacity: u64,
}

impl LoadView {
    /// `None` for a group balanced by count without reports: nothing to show.
    fn new(picture: Option<pb::LoadPicture>, with_after: bool) -> Option<Self> {
        let p = picture?;
        if p.balance() != pb::BalanceBy::Load && !p.reported {
            return None;
        }
        let factor = |milli: u64| milli as f64 / 1000.0;
        Some(Self {
            balance: word(p.balance().as_str_name(), "BALANCE_BY_"),
            reported: p.reported,
            total_load: p.total_load,
            max_over_mean: factor(p.max_over_mean_milli),
            after_plan: with_after.then(|| factor(p.after_milli)),
            hot_partitions: p.hot,
            recommended_workers: p.recommended_workers,
            workers: p
                .workers
                .into_iter()
                .map(|w| WorkerLoadView {
                    id: w.id,
                    load: w.load,
                    capacity: w.capacity,
                })
                .collect(),
        })
    }

    fn text(&self) -> String {
        if !self.reported {
            return format!(
                "load: balanced by {}; no reports on this node (they live on the leader: drop --serializable)\n",
                self.balance
            );
        }
        let mut text = format!(
            "load: balanced by {}, total {}, max ÷ mean {:.2}",
            self.balance, self.total_load, self.max_over_mean
        );
        if let Some(after) = self.after_plan {
            text.push_str(&format!(" ({after:.2} after this plan)"));
        }
        text.push('\n');
        let mut table = Table::new(&["WORKER", "LOAD", "CAPACITY", "UTILISATION"]);
        for w in &self.workers {
            table.row(vec![
                w.id.clone(),
                w.load.to_string(),
                w.capacity.to_string(),
                format!("{:.1}%", w.load as f64 * 100.0 / w.capacity.max(1) as f64),
            ]);
        }
        text.push_str(&table.to_string());
        if !self.hot_partitions.is_empty() {
            text.push_str(&format!(
                "hot partitions (each more than a worker's equal share; split the group): {:?}\n",
                self.hot_partitions
            ));
        }
        if let Some(n) = self.recommended_workers {
            text.push_str(&format!(
                "recommended workers at the target utilisation: {n}\n"
            ));
        }
        text
    }
}

#[derive(Serialize)]
struct WorkerView {
    id: String,
    count: u32,
    ranges: Ranges,
    weight: u32,
    state: String,
    session: u64,
}

/// A handoff in flight; `to` is null while undecided.
#[derive(Serialize)]
struct MovingView {
    ranges: Ranges,
    from: String,
    to: Option<String>,
}

/// The fewest and most partitions any worker holds.
#[derive(Serialize)]
struct Balance {
    min: u32,
    max: u32,
}

impl AssignmentView {
    fn new(a: pb::AssignmentResponse) -> Self {
        let counts = a.workers.iter().map(|w| w.count);
        let balance = Balance {
            min: counts.clone().min().unwrap_or(0),
            max: counts.max().unwrap_or(0),
        };
        let range_total: usize = a.workers.iter().map(|w| w.ranges.len()).sum();
        let ranges_per_worker = if a.workers.is_empty() {
            0.0
        } else {
            range_total as f64 / a.workers.len() as f64
        };
        let load = LoadView::new(a.load, false);
        Self {
            load,
            group: a.group,
            revision: a.revision,
            partitions: a.partitions,
            frozen: a.frozen,
            workers: a
                .workers
                .into_iter()
                .map(|w| WorkerView {
                    state: word(w.state().as_str_name(), "WORKER_STATE_"),
                    id: w.id,
                    count: w.count,
                    ranges: Ranges(w.ranges),
                    weight: w.weight,
                    session: w.session,
                })
                .collect(),
            moving: a
                .moving
                .into_iter()
                .map(|m| MovingView {
                    to: non_empty(&m.to),
                    ranges: Ranges(m.ranges),
                    from: m.from,
                })
                .collect(),
            unassigned: Ranges(a.unassigned),
            balance,
            ranges_per_worker,
        }
    }
}

impl View for AssignmentView {
    fn text(&self) -> String {
        let mut text = format!(
            "group {}: {} partitions, revision {}{}\n",
            self.group,
            self.partitions,
            self.revision,
            if self.frozen { ", frozen" } else { "" }
        );
        let mut table = Table::new(&["WORKER", "STATE", "WEIGHT", "COUNT", "RANGES"]);
        for w in &self.workers {
            table.row(vec![
                w.id.clone(),
                w.state.clone(),
                w.weight.to_string(),
                w.count.to_string(),
                w.ranges.to_string(),
            ]);
        }
        text.push_str(&table.to_string());
        text.push_str(&format!(
            "balance: min {}, max {} per worker; {:.1} ranges per worker\n",
            self.balance.min, self.balance.max, self.ranges_per_worker
        ));
        for m in &self.moving {
            let to = m.to.as_deref().unwrap_or("(undecided)");
            text.push_str(&format!("moving: {} {} -> {to}\n", m.ranges, m.from));
        }
        text.push_str(&format!("unassigned: {}\n", self.unassigned));
        if let Some(load) = &self.load {
            text.push_str(&load.text());
        }
        text
    }
}

/// A plan: what the rebalancer would do, or what a move did.
#[derive(Serialize)]
struct PlanView {
    /// What the plan is, for the text form.
    #[serde(skip)]
    what: &'static str,
    revision: u64,
    grants: Vec<HandoffView>,
    handoffs: Vec<HandoffView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    load: Option<LoadView>,
}

/// Partitions moving `from` a worker `to` another; null where there is
/// none (a grant of unassigned partitions, a release).
#[derive(Serialize)]
struct HandoffView {
    ranges: Ranges,
    from: Option<String>,
    to: Option<String>,
}

impl PlanView {
    fn new(what: &'static str, plan: pb::PlanResponse) -> Self {
        let handoff = |h: pb::Handoff| HandoffView {
            from: non_empty(&h.from),
            to: non_empty(&h.to),
            ranges: Ranges(h.ranges),
        };
        Self {
            what,
            load: LoadView::new(plan.load, true),
            revision: plan.revision,
            grants: plan.grants.into_iter().map(handoff).collect(),
            handoffs: plan.handoffs.into_iter().map(handoff).collect(),
        }
    }
}

impl View for PlanView {
    fn text(&self) -> String {
        let load = self.load.as_ref().map(LoadView::text).unwrap_or_default();
        if self.grants.is_empty() && self.handoffs.is_empty() {
            return format!(
                "{}: nothing to move (revision {})\n{load}",
                self.what, self.revision
            );
        }
        let mut text = format!("{} (revision {}):\n", self.what, self.revision);
        for g in &self.grants {
            let to = g.to.as_deref().unwrap_or_default();
            text.push_str(&format!("  grant    {} -> {to}\n", g.ranges));
        }
        for h in &self.handoffs {
            let from = h.from.as_deref().unwrap_or_default();
            let to = h.to.as_deref().unwrap_or("(released)");
            text.push_str(&format!("  handoff  {} {from} -> {to}\n", h.ranges));
        }
        text.push_str(&load);
        text
    }
}
