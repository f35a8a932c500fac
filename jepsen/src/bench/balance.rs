//! `bench balance`: balancing by load, baton alone, against the count-based
//! assignment of the same run as the baseline (Slicer keeps its most loaded
//! task within 30–180% of the mean; baton's target is 1.10).
//!
//! Simulated workers (raw gRPC, one connection each, instant drains) report
//! a Zipf load per held partition on every keepalive. Phases: converge from
//! the count-balanced assignment; the hot set moves (another seed) a few
//! times; a worker joins; a worker leaves. Measured by the driver, not
//! asked of the server: max ÷ mean over time from the assignment and the
//! loads it set; rounds (revisions whose events start handoffs, from a
//! group watch), partitions and share of load each moves; rounds and time
//! to converge; partitions moved twice within the cooldown; and holds that
//! overlap, from each worker's own grant and release times.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use baton_client::proto as pb;
use baton_client::simulated_load;
use pb::admin_client::AdminClient as AdminGrpc;
use pb::watch_event::Event;
use pb::worker_client::WorkerClient;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use crate::cluster::{Backend, Cluster};

const GROUP: &str = "balance";
/// The hot set moves this often, from the start of balancing by load: the
/// phases before a shift last this long.
const SHIFT_EVERY: Duration = Duration::from_secs(30);
/// The cooldown the run sets (the default is 60 s, longer than a shift).
const COOLDOWN: Duration = Duration::from_secs(15);
/// The target: max ÷ mean within this once converged.
const BOUND: f64 = 1.10;

#[derive(Clone, Debug, Serialize)]
pub struct Params {
    pub partitions: u32,
    pub workers: usize,
    pub exponent: f64,
    pub shifts: usize,
    pub patience: Duration,
}

#[derive(Serialize, Debug)]
pub struct Phase {
    pub name: String,
    pub start_max_over_mean: f64,
    pub end_max_over_mean: f64,
    pub converged: bool,
    pub seconds_to_converge: f64,
    pub rounds_to_converge: usize,
    pub rounds: usize,
    pub max_partitions_per_round: usize,
    pub max_load_share_per_round: f64,
    /// (seconds since the phase began, max ÷ mean), about every 0.5 s.
    pub samples: Vec<(f64, f64)>,
}

#[derive(Serialize, Debug)]
pub struct Report {
    pub params: Params,
    pub hot_partitions: usize,
    /// The count-based assignment's max ÷ mean, all workers and without the
    /// workers that would hold a hot partition alone.
    pub baseline_max_over_mean: f64,
    pub phases: Vec<Phase>,
    pub cooldown_violations: usize,
    pub overlapping_holds: usize,
}

/// The loads the workers report, swapped at a shift.
type Loads = Arc<RwLock<Arc<Vec<u64>>>>;
/// (partition, worker, start, end): what each worker held when.
type Holds = Arc<Mutex<Vec<(u32, String, Instant, Option<Instant>)>>>;

fn worker_id(i: usize) -> String {
    format!("w{i:03}")
}

/// The smallest load of a partition too heavy to share a worker:
/// water-filling from the heaviest, a partition is hot while it carries
/// more than the mean of what is left over the workers left.
/// Written again here rather than taken from the planner on purpose: the
/// benchmark measures the planner, so it does not share its arithmetic.
fn hot_floor(loads: &[u64], workers: usize) -> u64 {
    let mut sorted = loads.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    let mut rest: u128 = sorted.iter().map(|&l| u128::from(l)).sum();
    let mut floor = u64::MAX;
    for (k, &l) in sorted.iter().enumerate() {
        let left = workers.saturating_sub(k) as u128;
        if left <= 1 || u128::from(l) * left <= rest {
            break;
        }
        floor = l;
        rest -= u128::from(l);
    }
    floor
}

/// max ÷ mean of the workers' loads, leaving out the workers that hold
/// exactly one partition which is hot: what no placement can improve.
fn max_over_mean(a: &pb::AssignmentResponse, loads: &[u64]) -> f64 {
    let floor = hot_floor(loads, a.workers.len());
    let (mut sum, mut count, mut max) = (0u128, 0u128, 0u128);
    for w in &a.workers {
        let parts: Vec<u32> = w.ranges.iter().flat_map(|r| r.first..=r.last).collect();
        let load: u128 = parts.iter().map(|&p| u128::from(loads[p as usize])).sum();
        if parts.len() == 1 && loads[parts[0] as usize] >= floor {
            continue;
        }
        sum += load;
        count += 1;
        max = max.max(load);
    }
    if sum == 0 {
        return 0.0;
    }
    max as f64 * count as f64 / sum as f64
}

/// Holds of one partition by two workers at once.
fn overlaps(holds: &[(u32, String, Instant, Option<Instant>)]) -> usize {
    let mut by: BTreeMap<u32, Vec<(Instant, Option<Instant>)>> = BTreeMap::new();
    for (p, _, start, end) in holds {
        by.entry(*p).or_default().push((*start, *end));
    }
    let mut n = 0;
    for spans in by.values_mut() {
        spans.sort();
        for pair in spans.windows(2) {
            if pair[0].1.is_none_or(|end| end > pair[1].0) {
                n += 1;
            }
        }
    }
    n
}

/// A simulated worker: joins, reports the load of what it holds on every
/// keepalive (every second), releases a revoked partition at once.
async fn worker(channel: Channel, id: String, loads: Loads, holds: Holds) -> anyhow::Result<()> {
    let ttl = Duration::from_secs(3);
    let joined = WorkerClient::new(channel.clone())
        .join(pb::JoinRequest {
            group: GROUP.into(),
            worker: id.clone(),
            ttl_ms: Some(3_000),
            ..Default::default()
        })
        .await?
        .into_inner();
    let held: Arc<Mutex<HashMap<u32, u64>>> = Arc::default();
    let keepalive = {
        let (channel, id, held, loads) = (channel.clone(), id.clone(), held.clone(), loads.clone());
        let session = joined.session;
        tokio::spawn(async move {
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            let message = || {
                let loads = loads.read().unwrap_or_else(|p| p.into_inner()).clone();
                let held = held.lock().unwrap_or_else(|p| p.into_inner());
                let mut parts: Vec<u32> = held.keys().copied().collect();
                parts.sort_unstable();
                pb::KeepAliveRequest {
                    group: GROUP.into(),
                    worker: id.clone(),
                    session,
                    loads: parts
                        .into_iter()
                        .map(|p| pb::PartitionLoad {
                            partitions: Some(pb::PartitionRange { first: p, last: p }),
                            load: loads[p as usize],
                        })
                        .collect(),
                    capacity: None,
                }
            };
            if tx.send(message()).await.is_err() {
                return;
            }
            let Ok(replies) = WorkerClient::new(channel)
                .keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
            else {
                return;
            };
            let mut replies = replies.into_inner();
            while matches!(replies.message().await, Ok(Some(_))) {
                tokio::time::sleep(ttl / 3).await;
                if tx.send(message()).await.is_err() {
                    return;
                }
            }
        })
    };
    let result = async {
        let record = |p: u32| {
            holds.lock().unwrap_or_else(|p| p.into_inner()).push((
                p,
                id.clone(),
                Instant::now(),
                None,
            ));
        };
        for p in joined.granted.iter().flat_map(|r| r.first..=r.last) {
            record(p);
            held.lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(p, joined.token);
        }
        let mut stream = pb::watch_client::WatchClient::new(channel.clone())
            .watch(pb::WatchRequest {
                group: GROUP.into(),
                from_revision: joined.token + 1,
                worker: id.clone(),
                kinds: Vec::new(),
            })
            .await?
            .into_inner();
        while let Some(message) = stream.message().await? {
            for event in message.events {
                match event.event {
                    Some(Event::Granted(g)) if g.worker == id => {
                        for p in g.ranges.iter().flat_map(|r| r.first..=r.last) {
                            record(p);
                            held.lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(p, g.token);
                        }
                    }
                    Some(Event::Revoking(r)) if r.from == id => {
                        let mut by_token: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
                        {
                            let mut held = held.lock().unwrap_or_else(|p| p.into_inner());
                            for p in r.ranges.iter().flat_map(|r| r.first..=r.last) {
                                if let Some(t) = held.remove(&p) {
                                    by_token.entry(t).or_default().push(p);
                                }
                            }
                        }
                        // Stopped holding before the release goes out.
                        let now = Instant::now();
                        for hold in holds.lock().unwrap_or_else(|p| p.into_inner()).iter_mut() {
                            if hold.1 == id
                                && hold.3.is_none()
                                && by_token.values().any(|ps| ps.contains(&hold.0))
                            {
                                hold.3 = Some(now);
                            }
                        }
                        super::release_by_token(&channel, GROUP, &id, joined.session, by_token)
                            .await?;
                    }
                    Some(Event::WorkerLeft(l)) if l.worker == id => return Ok(()),
                    _ => {}
                }
            }
        }
        anyhow::bail!("worker {id}: the watch stream ended")
    }
    .await;
    keepalive.abort();
    result
}

/// Handoffs started, by revision, from a group watch: (when seen, from,
/// partitions).
type Rounds = Arc<Mutex<Vec<(Instant, u64, String, Vec<u32>)>>>;

async fn watch_rounds(channel: Channel, rounds: Rounds) -> anyhow::Result<()> {
    let mut stream = pb::watch_client::WatchClient::new(channel)
        .watch(pb::WatchRequest {
            group: GROUP.into(),
            from_revision: 0,
            worker: String::new(),
            kinds: Vec::new(),
        })
        .await?
        .into_inner();
    while let Some(message) = stream.message().await? {
        for event in message.events {
            if let Some(Event::Revoking(r)) = event.event {
                let ps = r.ranges.iter().flat_map(|r| r.first..=r.last).collect();
                rounds.lock().unwrap_or_else(|p| p.into_inner()).push((
                    Instant::now(),
                    event.revision,
                    r.from,
                    ps,
                ));
            }
        }
    }
    Ok(())
}

async fn assignment(admin: &mut AdminGrpc<Channel>) -> anyhow::Result<pb::AssignmentResponse> {
    Ok(admin
        .get_assignment(pb::GetAssignmentRequest {
            group: GROUP.into(),
            serializable: false,
        })
        .await?
        .into_inner())
}

pub async fn run(
    node_binary: &std::path::Path,
    dir: &std::path::Path,
    params: Params,
) -> anyhow::Result<Report> {
    let cluster = Cluster::start(3, Backend::Direct, node_binary, &dir.join("baton")).await?;
    let leader = cluster.await_leader(Duration::from_secs(30)).await?;
    let Some(addr) = cluster.endpoint(leader) else {
        anyhow::bail!("the leader, node {leader}, is not running");
    };
    let connect = || async {
        anyhow::Ok(
            Endpoint::from_shared(format!("http://{addr}"))?
                .connect()
                .await?,
        )
    };
    let mut client = baton_client::AdminClient::new(&cluster.endpoints(), Duration::from_secs(30))?;
    client
        .create_group(
            GROUP,
            pb::GroupConfig {
                partitions: Some(params.partitions),
                ..Default::default()
            },
        )
        .await?;
    let mut admin = AdminGrpc::new(connect().await?);
    let rounds: Rounds = Arc::default();
    let watcher = tokio::spawn(watch_rounds(connect().await?, rounds.clone()));
    let mut seed = 1;
    let loads: Loads = Arc::new(RwLock::new(Arc::new(simulated_load::zipf(
        params.partitions,
        params.exponent,
        seed,
    ))));
    let holds: Holds = Arc::default();
    let mut tasks = Vec::new();
    let mut channels = Vec::new();
    let spawn = |i: usize, channel: Channel| {
        tokio::spawn(worker(channel, worker_id(i), loads.clone(), holds.clone()))
    };
    for i in 0..params.workers {
        let channel = connect().await?;
        channels.push(channel.clone());
        tasks.push(spawn(i, channel));
    }
    // The count-based assignment, settled: the baseline.
    let started = Instant::now();
    let counted = loop {
        let a = assignment(&mut admin).await?;
        let even = a.workers.len() == params.workers
            && a.moving.is_empty()
            && a.unassigned.is_empty()
            && a.workers.iter().map(|w| w.count).max()
                <= a.workers.iter().map(|w| w.count).min().map(|m| m + 1);
        if even {
            break a;
        }
        anyhow::ensure!(
            started.elapsed() < params.patience,
            "the count-based assignment did not settle"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let current = loads.read().unwrap_or_else(|p| p.into_inner()).clone();
    let baseline = max_over_mean(&counted, &current);
    let floor = hot_floor(&current, params.workers);
    let hot = current.iter().filter(|&&l| l >= floor).count();
    println!("  count-based assignment: max ÷ mean {baseline:.2} ({hot} hot partitions)");
    let rules = pb::LoadRules {
        cooldown_ms: Some(COOLDOWN.as_millis() as u64),
        ..Default::default()
    };
    client.set_load_rules(GROUP, Some(rules)).await?;
    // Moves before the rules (the count rules' joins) start no cooldown.
    let balanced_from = rounds.lock().unwrap_or_else(|p| p.into_inner()).len();

    let mut phases = Vec::new();
    let mut names: Vec<String> = vec!["converge from count-balanced".into()];
    names.extend((1..=params.shifts).map(|k| format!("load shift {k} (the hot set moves)")));
    names.push("a worker joins".into());
    names.push("a worker leaves".into());
    let mut workers = params.workers;
    for name in names {
        let phase_name = name.clone();
        let phase_start = Instant::now();
        if name.starts_with("load shift") {
            seed += 1;
            *loads.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(simulated_load::zipf(
                params.partitions,
                params.exponent,
                seed,
            ));
        } else if name.ends_with("joins") {
            let channel = connect().await?;
            channels.push(channel.clone());
            tasks.push(spawn(workers, channel));
            workers += 1;
        } else if name.ends_with("leaves") {
            AdminGrpc::new(channels[0].clone())
                .drain_worker(pb::WorkerRef {
                    group: GROUP.into(),
                    worker: worker_id(0),
                })
                .await?;
        }
        let rounds_before = rounds.lock().unwrap_or_else(|p| p.into_inner()).len();
        let current = loads.read().unwrap_or_else(|p| p.into_inner()).clone();
        let mut samples = Vec::new();
        let mut converged_at: Option<(f64, usize)> = None;
        let start_ratio = max_over_mean(&assignment(&mut admin).await?, &current);
        // A phase lasts until it has converged and stayed 5 s, or patience.
        while phase_start.elapsed() < params.patience {
            let a = assignment(&mut admin).await?;
            let ratio = max_over_mean(&a, &current);
            let at = phase_start.elapsed().as_secs_f64();
            samples.push((at, ratio));
            let settled = a.moving.is_empty() && a.unassigned.is_empty() && ratio <= BOUND;
            match (settled, converged_at) {
                (true, None) => {
                    let n = rounds.lock().unwrap_or_else(|p| p.into_inner()).len();
                    converged_at = Some((at, n));
                }
                (false, _) => converged_at = None,
                _ => {}
            }
            let shift_next = phase_name.starts_with("load shift")
                || phase_name.starts_with("converge") && params.shifts > 0;
            let long_enough = !shift_next || phase_start.elapsed() >= SHIFT_EVERY;
            if long_enough && converged_at.is_some_and(|(t, _)| at - t >= 5.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let log = rounds.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let by_revision = |from: usize, to: usize| {
            let mut r: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
            for (_, rev, _, ps) in &log[from..to] {
                r.entry(*rev).or_default().extend(ps);
            }
            r
        };
        let converged_index = converged_at.map_or(log.len(), |(_, n)| n);
        let all = by_revision(rounds_before, log.len());
        let total: u128 = current.iter().map(|&l| u128::from(l)).sum();
        let share = |ps: &Vec<u32>| {
            ps.iter()
                .map(|&p| u128::from(current[p as usize]))
                .sum::<u128>() as f64
                / total.max(1) as f64
        };
        let phase = Phase {
            name,
            start_max_over_mean: start_ratio,
            end_max_over_mean: samples.last().map_or(0.0, |s| s.1),
            converged: converged_at.is_some(),
            seconds_to_converge: converged_at.map_or(f64::NAN, |(t, _)| t),
            rounds_to_converge: by_revision(rounds_before, converged_index.max(rounds_before))
                .len(),
            rounds: all.len(),
            max_partitions_per_round: all.values().map(Vec::len).max().unwrap_or(0),
            max_load_share_per_round: all.values().map(share).fold(0.0, f64::max),
            samples,
        };
        println!(
            "  {:<40} max ÷ mean {:.2} → {:.2}, {} in {:.1} s and {} rounds; {} rounds, at most {} partitions and {:.1}% of load per round",
            phase.name,
            phase.start_max_over_mean,
            phase.end_max_over_mean,
            if phase.converged { "converged" } else { "NOT converged" },
            phase.seconds_to_converge,
            phase.rounds_to_converge,
            phase.rounds,
            phase.max_partitions_per_round,
            phase.max_load_share_per_round * 100.0,
        );
        phases.push(phase);
    }
    // Balancing moves of one partition within the cooldown (60 s): the
    // leaver's partitions are placed, which ignores it by design.
    let log = rounds.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut last: HashMap<u32, Instant> = HashMap::new();
    let mut violations = 0;
    for (at, _, from, ps) in &log[balanced_from..] {
        for p in ps {
            if *from != worker_id(0)
                && last
                    .get(p)
                    .is_some_and(|t| at.duration_since(*t) < COOLDOWN)
            {
                violations += 1;
            }
            last.insert(*p, *at);
        }
    }
    let overlapping = overlaps(&holds.lock().unwrap_or_else(|p| p.into_inner()));
    for t in tasks {
        t.abort();
    }
    watcher.abort();
    cluster.stop();
    let report = Report {
        params,
        hot_partitions: hot,
        baseline_max_over_mean: baseline,
        phases,
        cooldown_violations: violations,
        overlapping_holds: overlapping,
    };
    // Figures the run must fail on, not only report: two holders of one
    // partition break G1, and a move within the cooldown breaks the rules.
    anyhow::ensure!(
        report.overlapping_holds == 0 && report.cooldown_violations == 0,
        "{}\nthe run broke a rule: {} overlapping holds, {} moves within the cooldown",
        table(&report),
        report.overlapping_holds,
        report.cooldown_violations
    );
    Ok(report)
}

pub fn table(r: &Report) -> String {
    let p = &r.params;
    let mut out = format!(
        "{} partitions, {} workers of equal capacity, Zipf({}) loads ({} hot partitions: each heavier than the mean of what the workers left carry, so best alone on a worker, and left out of the mean). Load rules: the defaults (threshold 1.10, at most 4,096 partitions and 5% of the load per round, 4 handoffs per worker) with a 15 s cooldown, as the hot set moves every 30 s.\n\nCount-based assignment (the baseline): max ÷ mean {:.2}. Slicer reports its most loaded task at 30–180% of the mean.\n\n| phase | max ÷ mean before → after | converged in (s) | rounds to converge | rounds | most partitions per round | most load per round |\n|---|---|---|---|---|---|---|\n",
        p.partitions, p.workers, p.exponent, r.hot_partitions, r.baseline_max_over_mean
    );
    for ph in &r.phases {
        out.push_str(&format!(
            "| {} | {:.2} → {:.2} | {} | {} | {} | {} | {:.1}% |\n",
            ph.name,
            ph.start_max_over_mean,
            ph.end_max_over_mean,
            if ph.converged {
                format!("{:.1}", ph.seconds_to_converge)
            } else {
                "not within the patience".into()
            },
            ph.rounds_to_converge,
            ph.rounds,
            ph.max_partitions_per_round,
            ph.max_load_share_per_round * 100.0
        ));
    }
    out.push_str(&format!(
        "\nPartitions moved to balance twice within the cooldown: {}. Overlapping holds (from each worker's own grant and release times): {}.\n",
        r.cooldown_violations, r.overlapping_holds
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_holds_are_counted_and_back_to_back_ones_are_not() {
        let t = Instant::now();
        let s = |ms: u64| t + Duration::from_millis(ms);
        let holds = vec![
            (1, "a".to_string(), s(0), Some(s(10))),
            (1, "b".to_string(), s(10), None),
            (2, "a".to_string(), s(0), Some(s(10))),
            (2, "b".to_string(), s(5), Some(s(20))),
        ];
        assert_eq!(overlaps(&holds), 1);
    }

    #[test]
    fn a_worker_alone_with_a_hot_partition_is_left_out_of_the_mean() {
        let worker = |id: &str, first: u32, last: u32| pb::WorkerAssignment {
            id: id.into(),
            ranges: vec![pb::PartitionRange { first, last }],
            ..Default::default()
        };
        let a = pb::AssignmentResponse {
            workers: vec![worker("a", 0, 0), worker("b", 1, 2), worker("c", 3, 4)],
            ..Default::default()
        };
        let loads = [100, 10, 10, 12, 10];
        assert!((max_over_mean(&a, &loads) - 22.0 * 2.0 / 42.0).abs() < 1e-9);
    }
}
