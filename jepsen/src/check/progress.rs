//! (7) Progress (G4): while a majority of the nodes is up and connected,
//! the cluster keeps acknowledging writes, and no partition of the SDK
//! workers' group stays without a live owner while some worker wants work,
//! for longer than a bound derived from the configuration
//! ([`write_gap_bound`], [`unowned_bound`]). Reported per fault.
//!
//! Read from the history only:
//! - *When a majority is up and connected*: from the nemesis ops. A killed,
//!   paused, frozen or silent node is down; a partition's cuts leave the
//!   nodes that can all talk to each other (the largest cliques); a
//!   membership change changes who counts. Time during a fault that leaves
//!   no such majority (the ring partition does not: no three of five nodes
//!   all see each other) is excluded, and measuring resumes at its heal:
//!   the election that must follow is inside the bounds (its heal counts
//!   as a fault start, for [`owner_deadline`]).
//!   Measured between the run's `workload-start` and `workload-stop`
//!   markers (else the first and last acknowledged writes).
//! - *Writes*: the acknowledgements (`ok`) of register CAS and tombstone
//!   puts. A gap is the time between two of them, or between the start of
//!   counted time and the first, or the last and its end.
//! - *Ownership*: the ground truth of group `work` (grants and releases, in
//!   revision order, as `ownership` reconstructs them), put on the time
//!   line by the acknowledged writes: revision `r` was committed after the
//!   invocation of every acknowledged write at a revision `<= r`, and before
//!   the acknowledgement of every write at a revision `>= r` (and before a
//!   worker's `assigned` with a token `>= r`). Each grant and release so
//!   gets an interval of time. A partition has no *live* owner when the
//!   ground truth has none, or when its owner's process stopped, or its
//!   SDK reported the lease lost after the grant (the application was told
//!   to stop: nobody works on it until it is granted again).
//!   How long that may last depends on what ended it and on the faults
//!   around it ([`owner_deadline`]).
//!   "At least" figures put each grant as early and each release as late as
//!   the history allows (the verdict uses these: it never fails a run on an
//!   estimate); "at most" figures, the other way round.
//! - *A worker wants work* from its join's invocation until it starts to
//!   leave or stops, as long as one of its endpoints is in the connected
//!   majority (slot 1 knows only one node: while that node is cut off, that
//!   worker cannot be given anything, and counts for nothing).
//!
//! History: nemesis ops (see `nemesis.rs`); `run`/`members` `{"members":
//! {"id": "addr"}}`, `run`/`workload-start`, `run`/`workload-stop`; worker
//! `join` (invoke or ok, `{"endpoints"}`), `leave`, `stopped`,
//! `lease_lost`, `assigned` (`{"token"}`); put/cas pairs with `{"revision"}`;
//! the ground truth.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};

use super::holds::partitions;
use super::truth::GroundTruth;
use super::{Outcome, Verdict};
use crate::history::{pairs, Kind, Op};
use crate::workload::{CALL, HANDOFF_TIMEOUT, WORK, WORKER_TTL, WORK_PARTITIONS};

/// The nodes' election timeout: `baton-node`'s default (`RaftTuning` in
/// node/src/raft/mod.rs), which the harness does not change.
pub const ELECTION_TIMEOUT: Duration = Duration::from_millis(250);
/// The leader's rebalance tick (`TICK` in node/src/cluster/duties.rs).
pub const REBALANCE_TICK: Duration = Duration::from_millis(100);
/// What a 2-core machine running 3–5 debug-build nodes, the harness and its
/// 13 clients adds on top of the terms below: fsyncs, scheduling delays, a
/// commit round or two, a worker's join. (On leader kills against the node
/// before issue 19, replacement took 0.8–1.0 s, and a dead worker's
/// partitions were granted again at most 0.04 s later than the terms say.)
pub const SLACK: Duration = Duration::from_millis(1000);

/// How long a crashed or frozen leader takes to be replaced: openraft 0.9
/// first waits out the old leader's lease (2 × the election timeout), then
/// a randomized election timeout in [1×, 2×): at most 4 × the election
/// timeout (0.75–1 s with the default).
pub fn leader_replacement() -> Duration {
    ELECTION_TIMEOUT * 4
}

/// How long the server's lease of a worker can outlive the moment its SDK
/// said it was lost: the SDK counts from when it sent a keepalive, takes
/// the allowed drift (1 %) off the TTL and its margin (TTL/10) on top
/// (client/src/worker/lease.rs), so the leader's deadline is later by that
/// much (and by the keepalive's trip, inside the slack).
pub fn sdk_lead() -> Duration {
    WORKER_TTL / 10 + WORKER_TTL / 100
}

/// The longest G4 allows with no acknowledged write while a majority is up
/// and connected: with a frozen or silent leader nothing commits until it
/// is replaced. A client's call in flight through a follower that forwards
/// to it waits until the follower hears of the new leader, and the client's
/// next call, to a random member, may go to the frozen node itself and hang
/// until the harness gives up on it (its single attempt is
/// `workload::CALL`; then the client leaves that node): the replacement and
/// one such call, plus the slack. A client never spends two calls on one
/// silent node.
pub fn write_gap_bound() -> Duration {
    leader_replacement() + CALL + SLACK
}

/// What ended a partition's live ownership, for [`owner_deadline`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lost {
    /// Released in the ground truth (or never granted): no lease to wait on.
    Released,
    /// The SDK said the lease was lost, and the worker knew a node of the
    /// connected majority: after its margin the SDK ends the lost session
    /// itself (`Leave`, client/src/worker/mod.rs `end_lost_session`), so it
    /// ends [`sdk_lead`] later whatever the leader.
    Lease,
    /// The same, for a worker that knew no node of the majority (slot 1
    /// behind a cut-off node): its `Leave` cannot arrive, so the server's
    /// lease must run out ([`sdk_lead`] later, or as a new leader extends it).
    Stranded,
    /// The owner's process stopped: its lease may run a whole TTL more.
    Stopped,
}

/// By when G4 wants a partition that lost its live owner at `lost` (for
/// `why`) to have a live owner again, given the faults that began before
/// `now` (the time a leader may have changed), and `from`, when counting
/// began (a worker started to want work, a majority came back):
/// - the owner's session must end first: a TTL after a stopped owner's
///   last keepalive (so at most a TTL after its death); [`sdk_lead`] after
///   the SDK said the lease was lost (it ends the session itself then, or
///   the server's lease runs out then);
/// - a fault that begins before the partition is late may replace the
///   leader ([`leader_replacement`]), and the new leader first extends
///   every session it finds, a dead owner's included (its expiry may not
///   be committed yet), to now + TTL, so that a leader change never expires
///   a healthy worker; a partition released, or whose owner ends its lost
///   session itself, waits only for the new leader;
/// - the leader notices the expiry, and grants, at its next tick;
/// - plus the slack.
///
/// Its longest, a fault just as the owner dies: [`unowned_bound`]. The
/// handoff timeout is not a term: a partition being handed off stays owned
/// by its holder until it releases, and when that holder dies, its lease
/// decides, as above. A handoff that waits out the timeout because a
/// Release was lost is one G4 does not excuse (nor sees: the owner lives).
fn owner_deadline(lost: u64, why: Lost, from: u64, faults: &[u64]) -> u64 {
    let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let after = ns(REBALANCE_TICK) + ns(SLACK);
    let lease_end = lost.saturating_add(match why {
        Lost::Released => 0,
        Lost::Lease | Lost::Stranded => ns(sdk_lead()),
        Lost::Stopped => ns(WORKER_TTL),
    });
    let mut by = lease_end.max(from).saturating_add(after);
    let mut sorted = faults.to_vec();
    sorted.sort_unstable();
    // A fault counts only if it began before the partition was late.
    for f in sorted {
        if f >= by {
            break;
        }
        // Until the leader commits the expiry (at a tick after the lease
        // end), the session is live in the state a new leader takes over,
        // which extends it; a session its worker ends, or none, is not.
        let extended = match why {
            Lost::Released | Lost::Lease => 0,
            Lost::Stranded | Lost::Stopped => ns(WORKER_TTL),
        };
        by = by.max(
            f.saturating_add(ns(leader_replacement()))
                .saturating_add(extended)
                .saturating_add(after),
        );
    }
    by
}

/// The most [`owner_deadline`] can allow after a partition lost its owner.
pub fn unowned_bound() -> Duration {
    leader_replacement() + WORKER_TTL + REBALANCE_TICK + SLACK
}

/// The bounds and how they are made, for the report.
pub fn bound_details() -> Value {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    json!({
        "write gap ms": ms(write_gap_bound()),
        "unowned ms at most": ms(unowned_bound()),
        "formula": format!(
            "write gap <= leader replacement (4 x election timeout {} ms = {} ms) + one harness call timeout {} ms + slack {} ms = {} ms. \
             A partition that lost its live owner has one again by: max(end of the owner's lease = when it stopped + TTL {} ms, \
             or when its SDK said the lease was lost + TTL/10 + 1% = {} ms, or when released; \
             for each fault begun before that: its start + leader replacement {} ms, + TTL {} ms if the session must expire (stopped owner, or one that knew no node of the majority): a new leader extends it) \
             + rebalance tick {} ms + slack {} ms; at most {} ms. Handoff timeout ({} ms): not a term (a partition being handed off stays owned)",
            ms(ELECTION_TIMEOUT), ms(leader_replacement()), ms(CALL), ms(SLACK), ms(write_gap_bound()),
            ms(WORKER_TTL), ms(sdk_lead()), ms(leader_replacement()), ms(WORKER_TTL),
            ms(REBALANCE_TICK), ms(SLACK), ms(unowned_bound()), ms(HANDOFF_TIMEOUT),
        ),
    })
}

/// `[from, to)` in ns.
type Iv = (u64, u64);

/// Sorted, merged, non-empty.
fn normalize(mut v: Vec<Iv>) -> Vec<Iv> {
    v.retain(|(a, b)| a < b);
    v.sort_unstable();
    let mut out: Vec<Iv> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

fn intersect(a: &[Iv], b: &[Iv]) -> Vec<Iv> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        let from = a[i].0.max(b[j].0);
        let to = a[i].1.min(b[j].1);
        if from < to {
            out.push((from, to));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

fn complement(a: &[Iv], within: Iv) -> Vec<Iv> {
    let mut out = Vec::new();
    let mut at = within.0;
    for &(from, to) in a {
        if from > at {
            out.push((at, from.min(within.1)));
        }
        at = at.max(to);
    }
    if at < within.1 {
        out.push((at, within.1));
    }
    normalize(out)
}

fn ms(ns: u64) -> f64 {
    (ns as f64 / 1e6 * 1000.0).round() / 1000.0
}

fn whole_ms(ns: u64) -> u64 {
    ns.saturating_add(500_000) / 1_000_000
}

/// One fault, as the nemesis recorded it.
#[derive(Clone, Debug)]
struct Fault {
    f: String,
    /// e.g. "node 2 (leader)", "isolated-leader, drop: 1 | 2 3".
    target: String,
    start: u64,
    heal: Option<u64>,
    /// False when some part of it left no majority up and connected.
    majority: bool,
}

/// What the nemesis had done at one time.
#[derive(Clone, Default)]
struct Net {
    members: BTreeSet<usize>,
    down: BTreeSet<usize>,
    cut: BTreeSet<(usize, usize)>,
}

impl Net {
    /// The nodes in some connected majority: up, and each able to talk to
    /// every other in both directions, more than half of the members.
    /// `None` when there is no such majority.
    fn majority(&self) -> Option<BTreeSet<usize>> {
        if self.members.is_empty() {
            return Some(BTreeSet::new()); // membership unknown: all counts
        }
        let up: Vec<usize> = self.members.difference(&self.down).copied().collect();
        let need = self.members.len() / 2 + 1;
        if up.len() > 16 {
            return Some(up.into_iter().collect()); // not a harness cluster
        }
        let linked =
            |a: usize, b: usize| !self.cut.contains(&(a, b)) && !self.cut.contains(&(b, a));
        let mut nodes = BTreeSet::new();
        for mask in 1u32..(1 << up.len()) {
            if (mask.count_ones() as usize) < need {
                continue;
            }
            let set: Vec<usize> = (0..up.len())
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| up[i])
                .collect();
            let clique = set
                .iter()
                .all(|a| set.iter().all(|b| a == b || linked(*a, *b)));
            if clique {
                nodes.extend(set);
            }
        }
        (!nodes.is_empty()).then_some(nodes)
    }
}

/// The nemesis timeline: the faults, and from when to when which nodes
/// were in a connected majority (`None`: no majority).
struct Timeline {
    faults: Vec<Fault>,
    segments: Vec<(Iv, Option<BTreeSet<usize>>)>,
}

fn timeline(ops: &[Op], members: BTreeSet<usize>, window: Iv) -> Timeline {
    let mut net = Net {
        members,
        ..Net::default()
    };
    let mut faults: Vec<Fault> = Vec::new();
    let mut open: Option<usize> = None;
    // Change points: (time, majority from then on).
    let mut changes: Vec<(u64, Option<BTreeSet<usize>>)> = vec![(window.0, net.majority())];
    let node_of = |op: &Op, field: &str| op.u64(field).and_then(|n| usize::try_from(n).ok());
    for op in ops.iter().filter(|o| o.process == "nemesis") {
        let t = op.time;
        match op.f.as_str() {
            "heal" | "heal-failed" => {
                if let Some(i) = open.take() {
                    faults[i].heal = Some(t);
                }
                net.down.clear();
                net.cut.clear();
            }
            "fault-failed" => {
                // Only a replacement did something before failing (its node
                // was killed); other families changed nothing.
                if let Some(i) = open.filter(|i| faults[*i].f == "membership") {
                    faults[i].target.push_str(&format!(
                        "; failed: {}",
                        op.value["error"].as_str().unwrap_or("?")
                    ));
                }
                continue;
            }
            "replaced" => {
                if let (Some(old), Some(new)) = (node_of(op, "removed"), node_of(op, "joined")) {
                    net.members.remove(&old);
                    net.down.remove(&old);
                    net.members.insert(new);
                    if let Some(i) = open.filter(|i| faults[*i].f == "membership") {
                        faults[i].target = format!("node {old} replaced by node {new}");
                    }
                }
            }
            f => {
                if let Some(i) = open.take() {
                    faults[i].heal = Some(t); // one at a time: a new one ends it
                }
                net.down.clear();
                net.cut.clear();
                let node = node_of(op, "node");
                let leader = op.value["leader"].as_bool();
                let target = match (f, node) {
                    ("partition", _) => {
                        for c in op.value["cut"].as_array().into_iter().flatten() {
                            if let (Some(a), Some(b)) = (c.get(0), c.get(1)) {
                                if let (Some(a), Some(b)) = (a.as_u64(), b.as_u64()) {
                                    net.cut.insert((
                                        usize::try_from(a).unwrap_or(usize::MAX),
                                        usize::try_from(b).unwrap_or(usize::MAX),
                                    ));
                                }
                            }
                        }
                        format!(
                            "{}, {}",
                            op.value["kind"].as_str().unwrap_or("?"),
                            op.value["mode"].as_str().unwrap_or("?")
                        )
                    }
                    ("delay", _) => format!("{} ms on every link", op.u64("ms").unwrap_or(0)),
                    (_, Some(n)) => {
                        net.down.insert(n);
                        match leader {
                            Some(true) => format!("node {n} (leader)"),
                            Some(false) => format!("node {n} (follower)"),
                            None => format!("node {n}"),
                        }
                    }
                    _ => String::new(),
                };
                let name = if f == "replace" { "membership" } else { f };
                open = Some(faults.len());
                faults.push(Fault {
                    f: name.to_string(),
                    target,
                    start: t,
                    heal: None,
                    majority: true,
                });
            }
        }
        let majority = net.majority();
        if majority.is_none() {
            if let Some(i) = open {
                faults[i].majority = false;
            }
        }
        changes.push((t, majority));
    }
    let mut segments = Vec::new();
    for (i, (t, m)) in changes.iter().enumerate() {
        let to = changes.get(i + 1).map_or(window.1, |c| c.0).min(window.1);
        let from = (*t).max(window.0);
        if from < to {
            segments.push(((from, to), m.clone()));
        }
    }
    Timeline { faults, segments }
}

/// When each revision was committed, as far as the history says.
struct Clock {
    /// (revision, running max of invocation times of writes at or below it)
    low: Vec<(u64, u64)>,
    /// (revision, min of acknowledgement times of writes, or `assigned`
    /// times, at or above it)
    high: Vec<(u64, u64)>,
    end: u64,
}

impl Clock {
    fn new(ops: &[Op], end: u64) -> Self {
        let mut low = Vec::new();
        let mut high = Vec::new();
        for p in pairs(ops, |o| o.f == "put" || o.f == "cas") {
            let Some(done) = p.complete.filter(|c| c.kind == Kind::Ok) else {
                continue;
            };
            if let Some(r) = done.u64("revision") {
                low.push((r, p.invoke.time));
                high.push((r, done.time));
            }
        }
        for op in ops
            .iter()
            .filter(|o| o.process.starts_with("worker-") && o.f == "assigned")
        {
            if let Some(token) = op.u64("token") {
                high.push((token, op.time));
            }
        }
        low.sort_unstable();
        let mut top = 0;
        for e in &mut low {
            top = top.max(e.1);
            e.1 = top;
        }
        high.sort_unstable();
        let mut bottom = u64::MAX;
        for e in high.iter_mut().rev() {
            bottom = bottom.min(e.1);
            e.1 = bottom;
        }
        Self { low, high, end }
    }

    /// The earliest time revision `r` can have been committed.
    fn lower(&self, r: u64) -> u64 {
        let i = self.low.partition_point(|e| e.0 <= r);
        if i == 0 {
            0
        } else {
            self.low[i - 1].1
        }
    }

    /// The latest.
    fn upper(&self, r: u64) -> u64 {
        let i = self.high.partition_point(|e| e.0 < r);
        self.high.get(i).map_or(self.end, |e| e.1.min(self.end))
    }
}

/// One SDK worker, from the history.
struct Worker {
    /// From its join's invocation (or acknowledgement) until it starts to
    /// leave or stops.
    wants: Iv,
    endpoints: Vec<String>,
    /// When it stopped holding everything: lease losses, its stop.
    deaths: Vec<(u64, Lost)>,
}

fn workers(ops: &[Op], end: u64) -> BTreeMap<String, Worker> {
    let mut out: BTreeMap<String, Worker> = BTreeMap::new();
    for op in ops.iter().filter(|o| o.process.starts_with("worker-")) {
        let id = op.process.trim_start_matches("worker-").to_string();
        let w = out.entry(id).or_insert(Worker {
            wants: (u64::MAX, end),
            endpoints: Vec::new(),
            deaths: Vec::new(),
        });
        match (op.f.as_str(), op.kind) {
            ("join", Kind::Invoke | Kind::Ok) => {
                w.wants.0 = w.wants.0.min(op.time);
                if w.endpoints.is_empty() {
                    w.endpoints = op.value["endpoints"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|e| e.as_str().map(str::to_string))
                        .collect();
                }
            }
            ("join", _) => w.wants.1 = w.wants.1.min(op.time), // never joined
            ("leave", _) => w.wants.1 = w.wants.1.min(op.time),
            ("stopped", _) => {
                w.wants.1 = w.wants.1.min(op.time);
                w.deaths.push((op.time, Lost::Stopped));
            }
            ("lease_lost", _) => w.deaths.push((op.time, Lost::Lease)),
            _ => {}
        }
    }
    for w in out.values_mut() {
        w.deaths.sort_by_key(|d| d.0);
    }
    out
}

/// The node at `addr`: from the run's members op and replacements, else
/// from the address (node `i` is at x.x.x.(10 + i) on both backends).
fn node_at(addr: &str, known: &BTreeMap<String, usize>) -> Option<usize> {
    if let Some(id) = known.get(addr) {
        return Some(*id);
    }
    let ip = addr.parse::<SocketAddr>().ok()?.ip();
    match ip {
        std::net::IpAddr::V4(v4) if v4.octets()[3] > 10 => Some(usize::from(v4.octets()[3] - 10)),
        _ => None,
    }
}

/// A span without progress: of writes (`partition` None) or of a live
/// owner of a partition.
#[derive(Clone, Debug)]
struct Span {
    partition: Option<u32>,
    from: u64,
    to: u64,
    /// For a partition: when and how it lost its live owner, and by when G4
    /// wants it to have one again ([`owner_deadline`]).
    lost: Option<(u64, Lost, u64)>,
}

impl Span {
    fn len(&self) -> u64 {
        self.to - self.from
    }
}

/// A span and every partition that had it.
type Grouped = (Span, Vec<u32>);

/// `[0, 1, 2, 5]` as `0-2,5`.
fn ranges_of(parts: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < parts.len() {
        let mut j = i;
        while j + 1 < parts.len() && parts[j + 1] == parts[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            parts[i].to_string()
        } else {
            format!("{}-{}", parts[i], parts[j])
        });
        i = j + 1;
    }
    out.join(",")
}

fn longest<'a>(spans: impl Iterator<Item = &'a Span>) -> Option<&'a Span> {
    spans.max_by_key(|s| {
        (
            s.len(),
            std::cmp::Reverse(s.from),
            std::cmp::Reverse(s.partition),
        )
    })
}

pub fn check(ops: &[Op], truth: Option<&GroundTruth>) -> Outcome {
    let marker = |f: &str| {
        ops.iter()
            .find(|o| o.process == "run" && o.f == f)
            .map(|o| o.time)
    };
    let writes: Vec<(u64, u64)> = pairs(ops, |o| o.f == "put" || o.f == "cas")
        .into_iter()
        .filter_map(|p| {
            let c = p.complete.filter(|c| c.kind == Kind::Ok)?;
            Some((p.invoke.time, c.time))
        })
        .collect();
    let mut acks: Vec<u64> = writes.iter().map(|w| w.1).collect();
    acks.sort_unstable();
    let start = marker("workload-start").or_else(|| writes.iter().map(|w| w.0).min());
    let end = marker("workload-stop").or_else(|| acks.last().copied());
    let (Some(start), Some(end)) = (start, end) else {
        let mut o = Outcome::new(
            "progress",
            Vec::new(),
            json!({"reason": "no acknowledged write and no workload markers: nothing to measure"}),
        );
        o.verdict = Verdict::Unknown;
        return o;
    };
    let window = (start, end.max(start));

    // Members: the run's record, else every node a client called.
    let mut known: BTreeMap<String, usize> = BTreeMap::new();
    let mut members: BTreeSet<usize> = BTreeSet::new();
    if let Some(m) = ops
        .iter()
        .find(|o| o.process == "run" && o.f == "members")
        .and_then(|o| o.value["members"].as_object())
    {
        for (id, addr) in m {
            if let (Ok(id), Some(addr)) = (id.parse::<usize>(), addr.as_str()) {
                members.insert(id);
                known.insert(addr.to_string(), id);
            }
        }
    }
    if members.is_empty() {
        members = ops
            .iter()
            .filter(|o| o.process != "nemesis")
            .filter_map(|o| o.node)
            .collect();
    }
    for op in ops
        .iter()
        .filter(|o| o.process == "nemesis" && o.f == "replaced")
    {
        if let (Some(addr), Some(id)) = (op.value["endpoint"].as_str(), op.u64("joined")) {
            known.insert(addr.to_string(), usize::try_from(id).unwrap_or(usize::MAX));
        }
    }

    let tl = timeline(ops, members, window);
    let counted = normalize(
        tl.segments
            .iter()
            .filter(|(_, m)| m.is_some())
            .map(|(iv, _)| *iv)
            .collect(),
    );
    let excluded: Vec<Value> = tl
        .faults
        .iter()
        .filter(|f| !f.majority)
        .map(|f| {
            json!(format!(
                "{} {} from {:.3} to {} ms: no majority up and connected (G4 promises nothing); measuring resumes at its heal, and the election that follows is within the bound",
                f.f,
                f.target,
                ms(f.start),
                f.heal.map_or("the end".into(), |h| format!("{:.3}", ms(h)))
            ))
        })
        .collect();

    // (a) Write gaps over counted time.
    let mut gaps = Vec::new();
    for &(a, b) in &counted {
        let mut at = a;
        for &t in acks.iter().filter(|t| **t > a && **t < b) {
            gaps.push(Span {
                partition: None,
                from: at,
                to: t,
                lost: None,
            });
            at = t;
        }
        gaps.push(Span {
            partition: None,
            from: at,
            to: b,
            lost: None,
        });
    }

    // (b) Partitions of `work` without a live owner, while a worker wants
    // work and a majority is up and connected.
    let people = workers(ops, window.1);
    let mut demand = Vec::new();
    for w in people.values() {
        for (iv, m) in &tl.segments {
            let Some(nodes) = m else { continue };
            let reachable = w.endpoints.is_empty()
                || nodes.is_empty()
                || w.endpoints
                    .iter()
                    .any(|e| node_at(e, &known).is_none_or(|n| nodes.contains(&n)));
            if reachable {
                demand.push((iv.0.max(w.wants.0), iv.1.min(w.wants.1)));
            }
        }
    }
    let measured = intersect(&counted, &normalize(demand));
    // Whether worker `id` knew a node of the connected majority at `t`.
    let reaches = |id: &str, t: u64| -> bool {
        let Some(w) = people.get(id) else {
            return true;
        };
        let nodes = tl
            .segments
            .iter()
            .find(|(iv, _)| iv.0 <= t && t < iv.1)
            .map_or(Some(BTreeSet::new()), |(_, m)| m.clone());
        match nodes {
            None => false,
            Some(nodes) => {
                w.endpoints.is_empty()
                    || nodes.is_empty()
                    || w.endpoints
                        .iter()
                        .any(|e| node_at(e, &known).is_none_or(|n| nodes.contains(&n)))
            }
        }
    };
    let mut unowned_least = Vec::new();
    let mut unowned_most = Vec::new();
    let mut unowned_note = Value::Null;
    match truth.and_then(|t| t.groups.get(WORK)) {
        None => {
            unowned_note = json!("no ground truth of group work: not measured");
        }
        Some(stream) => {
            let clock = Clock::new(ops, window.1);
            let count = stream
                .events
                .iter()
                .filter(|e| e.detail["k"] == "group")
                .find_map(|e| e.detail["partitions"].as_u64())
                .and_then(|p| u32::try_from(p).ok())
                .unwrap_or(WORK_PARTITIONS);
            // Per partition: (owner, granted at, ended at) in revisions.
            let mut owned: BTreeMap<u32, Vec<(String, u64, Option<u64>)>> = BTreeMap::new();
            let mut until = window.1;
            for e in &stream.events {
                let worker = e.detail["worker"].as_str().unwrap_or_default();
                match e.detail["k"].as_str() {
                    Some("granted") => {
                        for p in partitions(&e.detail["ranges"]) {
                            let list = owned.entry(p).or_default();
                            if let Some(last) = list.last_mut().filter(|l| l.2.is_none()) {
                                last.2 = Some(e.revision);
                            }
                            list.push((worker.to_string(), e.revision, None));
                        }
                    }
                    Some("released") => {
                        for p in partitions(&e.detail["ranges"]) {
                            if let Some(last) = owned
                                .get_mut(&p)
                                .and_then(|l| l.last_mut())
                                .filter(|l| l.2.is_none() && l.0 == worker)
                            {
                                last.2 = Some(e.revision);
                            }
                        }
                    }
                    Some("split") => {
                        until = until.min(clock.lower(e.revision));
                        unowned_note = json!(format!(
                            "group work was split at revision {}: measured until then",
                            e.revision
                        ));
                        break;
                    }
                    _ => {}
                }
            }
            let scope = intersect(&measured, &[(window.0, until)]);
            // When a leader may have changed: each fault's start, and the
            // heal of one that left no majority (an election follows).
            let mut changes: Vec<u64> = tl.faults.iter().map(|f| f.start).collect();
            changes.extend(
                tl.faults
                    .iter()
                    .filter(|f| !f.majority)
                    .filter_map(|f| f.heal),
            );
            for p in 0..count {
                // Possibly (for "at least") and certainly (for "at most")
                // a live owner; how each possible ownership ended.
                let mut possibly = Vec::new();
                let mut certainly = Vec::new();
                let mut ends: BTreeMap<u64, Lost> = BTreeMap::new();
                for (owner, granted, ended) in owned.get(&p).into_iter().flatten() {
                    let deaths = people
                        .get(owner)
                        .map(|w| w.deaths.as_slice())
                        .unwrap_or(&[]);
                    let (g_lo, g_hi) = (clock.lower(*granted), clock.upper(*granted));
                    let (e_lo, e_hi) =
                        ended.map_or((window.1, window.1), |r| (clock.lower(r), clock.upper(r)));
                    let first_death = |after: u64| deaths.iter().copied().find(|d| d.0 >= after);
                    let (end, why) = match first_death(g_hi) {
                        Some((d, Lost::Lease)) if d < e_hi && !reaches(owner, d) => {
                            (d, Lost::Stranded)
                        }
                        Some((d, why)) if d < e_hi => (d, why),
                        _ => (e_hi, Lost::Released),
                    };
                    let kind = ends.entry(end).or_insert(why);
                    if *kind == Lost::Released || why == Lost::Stopped {
                        *kind = why;
                    }
                    possibly.push((g_lo, end));
                    certainly.push((g_hi, e_lo.min(first_death(g_lo).map_or(u64::MAX, |d| d.0))));
                }
                let none_least = complement(&normalize(possibly), window);
                let none_most = complement(&normalize(certainly), window);
                for (lost, until) in none_least {
                    let why = ends.get(&lost).copied().unwrap_or(Lost::Released);
                    for (from, to) in intersect(&[(lost, until)], &scope) {
                        let by = owner_deadline(lost, why, from, &changes);
                        unowned_least.push(Span {
                            partition: Some(p),
                            from,
                            to,
                            lost: Some((lost, why, by)),
                        });
                    }
                }
                for (from, to) in intersect(&none_most, &scope) {
                    unowned_most.push(Span {
                        partition: Some(p),
                        from,
                        to,
                        lost: None,
                    });
                }
            }
        }
    }

    // Per fault: the worst spans that overlap it or the quiet after it
    // (until the next fault starts).
    let mut windows: Vec<(String, String, Iv, Option<u64>, bool)> = Vec::new();
    let first = tl.faults.first().map_or(window.1, |f| f.start);
    windows.push((
        "none".into(),
        "before the first fault".into(),
        (window.0, first),
        None,
        true,
    ));
    for (i, f) in tl.faults.iter().enumerate() {
        let next = tl
            .faults
            .get(i + 1)
            .map_or(window.1.max(f.start), |n| n.start);
        windows.push((
            f.f.clone(),
            f.target.clone(),
            (f.start, next),
            f.heal,
            f.majority,
        ));
    }
    let overlapping = |spans: &[Span], iv: Iv| -> Vec<Span> {
        spans
            .iter()
            .filter(|s| s.from < iv.1 && s.to > iv.0)
            .cloned()
            .collect()
    };
    let blame = |s: &Span| -> String {
        let names: Vec<String> = windows
            .iter()
            .filter(|w| s.from < w.2 .1 && s.to > w.2 .0)
            .map(|w| {
                if w.0 == "none" {
                    w.1.clone()
                } else {
                    format!("{} {} at {:.3} ms", w.0, w.1, ms(w.2 .0))
                }
            })
            .collect();
        format!("overlapping {}", names.join("; "))
    };
    // How much later than G4 wants a partition got its live owner back.
    let late = |s: &Span| s.lost.map_or(0, |(_, _, by)| s.to.saturating_sub(by));
    // Leases lost by workers that knew a node of the majority (G4: workers
    // move past a frozen node within a fraction of the TTL): a figure, not
    // judged (an election slower than the TTL minus the margin costs them
    // the lease legitimately).
    let losses: Vec<u64> = people
        .iter()
        .flat_map(|(id, w)| {
            w.deaths
                .iter()
                .filter(|(t, why)| *why == Lost::Lease && reaches(id, *t))
                .map(|(t, _)| *t)
        })
        .filter(|t| window.0 <= *t && *t < window.1)
        .collect();
    let per_fault: Vec<Value> = windows
        .iter()
        .map(|(f, target, iv, heal, majority)| {
            let gap = longest(overlapping(&gaps, *iv).iter()).cloned();
            let least_all = overlapping(&unowned_least, *iv);
            let least = longest(least_all.iter()).cloned();
            let most_late = least_all.iter().map(late).max().filter(|l| *l > 0);
            let most = longest(overlapping(&unowned_most, *iv).iter()).cloned();
            json!({
                "fault": f,
                "target": target,
                "start ms": ms(iv.0),
                "heal ms": heal.map(ms),
                "majority up and connected": majority,
                "worst write gap ms": gap.as_ref().map(|g| whole_ms(g.len())),
                "worst write gap from ms": gap.as_ref().map(|g| ms(g.from)),
                "worst unowned ms (at least)": least.as_ref().map(|s| whole_ms(s.len())),
                "worst unowned ms (at most)": most.as_ref().map(|s| whole_ms(s.len())),
                "worst unowned partition": least.as_ref().and_then(|s| s.partition).map(|p| format!("{WORK}/{p}")),
                "worst unowned from ms": least.as_ref().map(|s| ms(s.from)),
                "unowned late by ms": most_late.map(whole_ms),
                "lease losses (workers that knew a majority node)":
                    losses.iter().filter(|t| iv.0 <= **t && **t < iv.1).count(),
            })
        })
        .collect();

    let mut problems = Vec::new();
    let w_bound = u64::try_from(write_gap_bound().as_nanos()).unwrap_or(u64::MAX);
    let mut bad_gaps: Vec<&Span> = gaps.iter().filter(|g| g.len() > w_bound).collect();
    bad_gaps.sort_by_key(|g| std::cmp::Reverse(g.len()));
    for g in bad_gaps {
        problems.push(format!(
            "no write acknowledged for {} ms, from {:.3} to {:.3} ms, with a majority up and connected (bound {} ms); {}",
            whole_ms(g.len()),
            ms(g.from),
            ms(g.to),
            whole_ms(w_bound),
            blame(g)
        ));
    }
    // One problem per late span, naming every partition that had it.
    let mut bad_unowned: BTreeMap<(u64, u64, u64), Grouped> = BTreeMap::new();
    for s in unowned_least.iter().filter(|s| late(s) > 0) {
        let (lost, _, by) = s.lost.unwrap_or((s.from, Lost::Released, s.to));
        bad_unowned
            .entry((s.from, s.to, by.max(lost)))
            .or_insert_with(|| (s.clone(), Vec::new()))
            .1
            .push(s.partition.unwrap_or_default());
    }
    let mut bad_unowned: Vec<Grouped> = bad_unowned.into_values().collect();
    bad_unowned.sort_by_key(|(s, _)| (std::cmp::Reverse(late(s)), s.from));
    for (s, parts) in &bad_unowned {
        let Some((lost, why, by)) = s.lost else {
            continue;
        };
        let how = match why {
            Lost::Released => "released",
            Lost::Lease => "its owner's SDK said the lease was lost",
            Lost::Stranded => {
                "its owner's SDK said the lease was lost; it knew no node of the majority"
            }
            Lost::Stopped => "its owner's process stopped",
        };
        let counted = if s.from > lost {
            format!(", counted from {:.3} ms", ms(s.from))
        } else {
            String::new()
        };
        problems.push(format!(
            "{WORK}/{} had no live owner from {:.3} ms ({how}) to {:.3} ms{counted}, while a worker wanted work and a majority was up and connected: G4 wants one by {:.3} ms ({} ms after, see the bound), late by at least {} ms; {}",
            ranges_of(parts),
            ms(lost),
            ms(s.to),
            ms(by),
            whole_ms(by.saturating_sub(lost)),
            whole_ms(late(s)),
            blame(s)
        ));
    }
    let worst_gap = longest(gaps.iter());
    let worst_least = longest(unowned_least.iter());
    let worst_most = longest(unowned_most.iter());
    let total = |v: &[Iv]| v.iter().map(|(a, b)| b - a).sum::<u64>();
    let mut outcome = Outcome::new(
        "progress",
        problems,
        json!({
            "bound": bound_details(),
            "worst write gap ms": worst_gap.map(|g| whole_ms(g.len())),
            "worst write gap": worst_gap.map(|g| format!("from {:.3} to {:.3} ms, {}", ms(g.from), ms(g.to), blame(g))),
            "worst unowned ms (at least)": worst_least.map(|s| whole_ms(s.len())),
            "worst unowned ms (at most)": worst_most.map(|s| whole_ms(s.len())),
            "unowned late by ms (worst)": unowned_least.iter().map(late).max().filter(|l| *l > 0).map(whole_ms),
            "worst unowned": worst_least.map(|s| format!("{WORK}/{} from {:.3} to {:.3} ms, {}", s.partition.unwrap_or_default(), ms(s.from), ms(s.to), blame(s))),
            "unowned note": unowned_note,
            "acknowledged writes": acks.len(),
            "measured ms": whole_ms(window.1 - window.0),
            "counted ms (majority up and connected)": whole_ms(total(&counted)),
            "counted ms with a worker wanting work": whole_ms(total(&measured)),
            "excluded": excluded,
            "faults": per_fault,
        }),
    );
    if outcome.verdict == Verdict::Valid && (acks.is_empty() || truth.is_none()) {
        outcome.verdict = Verdict::Unknown;
    }
    outcome
}

/// The per-fault table of a progress outcome's details, for the run's
/// output.
pub fn table(details: &Value) -> String {
    let mut out = String::new();
    if let Some(f) = details["bound"]["formula"].as_str() {
        out.push_str(&format!("    bound: {f}\n"));
    }
    out.push_str(
        "    (per fault: the worst spans overlapping it or the quiet after it; \"unowned\": without a live owner, at least/at most; \"losses\": leases lost by workers that knew a node of the majority)\n",
    );
    out.push_str(&format!(
        "    {:<11} {:<34} {:>9} {:>9} {:>10} {:>20} {:>9} {:>7}  {}\n",
        "fault",
        "target",
        "start s",
        "heal s",
        "write gap",
        "unowned (least/most)",
        "late by",
        "losses",
        "partition"
    ));
    let num = |v: &Value| v.as_u64().map_or("-".to_string(), |n| format!("{n} ms"));
    let secs = |v: &Value| {
        v.as_f64()
            .map_or("-".to_string(), |n| format!("{:.1}", n / 1000.0))
    };
    for f in details["faults"].as_array().into_iter().flatten() {
        let mut target = f["target"].as_str().unwrap_or_default().to_string();
        if f["majority up and connected"] == false {
            target.push_str(" [no majority: excluded]");
        }
        let unowned = match (
            f["worst unowned ms (at least)"].as_u64(),
            f["worst unowned ms (at most)"].as_u64(),
        ) {
            (None, None) => "-".to_string(),
            (a, b) => format!(
                "{}/{} ms",
                a.map_or("-".into(), |a| a.to_string()),
                b.map_or("-".into(), |b| b.to_string())
            ),
        };
        out.push_str(&format!(
            "    {:<11} {:<34} {:>9} {:>9} {:>10} {:>20} {:>9} {:>7}  {}\n",
            f["fault"].as_str().unwrap_or_default(),
            target,
            secs(&f["start ms"]),
            secs(&f["heal ms"]),
            num(&f["worst write gap ms"]),
            unowned,
            num(&f["unowned late by ms"]),
            f["lease losses (workers that knew a majority node)"]
                .as_u64()
                .unwrap_or(0),
            f["worst unowned partition"].as_str().unwrap_or("")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::truth::{Stream, TruthEvent};

    const MS: u64 = 1_000_000;

    /// A history under construction: ops at ms times, sorted at the end.
    #[derive(Default)]
    struct H {
        ops: Vec<Op>,
        truth: Vec<(u64, Value)>,
    }

    /// Node `i`'s address, as on the proxy backend.
    fn addr(i: usize) -> String {
        format!("127.0.0.{}:7400", 10 + i)
    }

    impl H {
        /// Members 1..=n, markers at 0 and `end_ms`, and a write
        /// acknowledged every ms except where `quiet` says, 0.1 ms after
        /// its invocation (revision 10 × its ms, so grants can sit between
        /// writes).
        fn new(n: usize, end_ms: u64, quiet: impl Fn(u64) -> bool) -> Self {
            let mut h = H::default();
            let members: serde_json::Map<String, Value> =
                (1..=n).map(|i| (i.to_string(), json!(addr(i)))).collect();
            h.at(
                0,
                Op::new("run", Kind::Info, "members").value(json!({ "members": members })),
            );
            h.at(0, Op::new("run", Kind::Info, "workload-start"));
            h.at(end_ms, Op::new("run", Kind::Info, "workload-stop"));
            for t in (1..end_ms).filter(|t| !quiet(*t)) {
                let key = format!("k{t}");
                let mut invoke = Op::new("tombstones-0", Kind::Invoke, "put").key(&key);
                invoke.time = t * MS - MS / 10;
                h.ops.push(invoke);
                let done = Op::new("tombstones-0", Kind::Ok, "put")
                    .key(&key)
                    .value(json!({"revision": 10 * t}));
                h.at(t, done);
            }
            h
        }

        fn at(&mut self, t_ms: u64, op: Op) {
            self.ops.push(op.at(t_ms * MS));
        }

        fn fault(&mut self, f: &str, value: Value, from_ms: u64, heal_ms: u64) {
            self.at(from_ms, Op::new("nemesis", Kind::Info, f).value(value));
            self.at(heal_ms, Op::new("nemesis", Kind::Info, "heal"));
        }

        fn join(&mut self, id: &str, t_ms: u64, endpoints: &[usize]) {
            let e: Vec<String> = endpoints.iter().map(|i| addr(*i)).collect();
            self.at(
                t_ms,
                Op::new(&format!("worker-{id}"), Kind::Invoke, "join")
                    .key(WORK)
                    .value(json!({ "endpoints": e })),
            );
        }

        fn worker(&mut self, id: &str, f: &str, t_ms: u64) {
            self.at(
                t_ms,
                Op::new(&format!("worker-{id}"), Kind::Info, f).key(WORK),
            );
        }

        /// Grants (or releases) all 32 partitions at `t_ms` (between
        /// that ms's write and the next).
        fn grant(&mut self, worker: &str, t_ms: u64) {
            self.truth.push((
                10 * t_ms + 5,
                json!({"k": "granted", "worker": worker, "ranges": [[0, 31]], "token": 10 * t_ms + 5}),
            ));
        }

        fn release(&mut self, worker: &str, t_ms: u64) {
            self.truth.push((
                10 * t_ms + 5,
                json!({"k": "released", "worker": worker, "ranges": [[0, 31]]}),
            ));
        }

        fn check(mut self) -> Outcome {
            self.ops.sort_by_key(|o| o.time);
            let mut events = vec![TruthEvent {
                revision: 1,
                hash: 1,
                detail: json!({"k": "group", "partitions": 32}),
            }];
            self.truth.sort_by_key(|e| e.0);
            events.extend(self.truth.into_iter().map(|(revision, detail)| TruthEvent {
                revision,
                hash: revision,
                detail,
            }));
            let truth = GroundTruth {
                groups: BTreeMap::from([(
                    WORK.to_string(),
                    Stream {
                        from: 0,
                        to: u64::MAX,
                        events,
                    },
                )]),
            };
            check(&self.ops, Some(&truth))
        }
    }

    fn problems(o: &Outcome) -> Vec<String> {
        o.details["problems"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str().map(str::to_string))
            .collect()
    }

    #[test]
    fn the_bound_is_the_sum_of_its_terms() {
        // A leader replacement, one harness call, the slack.
        assert_eq!(write_gap_bound(), Duration::from_millis(1000 + 1500 + 1000));
        assert_eq!(
            unowned_bound(),
            Duration::from_millis(1000 + 2000 + 100 + 1000)
        );
        assert_eq!(sdk_lead(), Duration::from_millis(200 + 20));
        let s = |ms: u64| ms * MS;
        // A stopped owner: its lease, a tick, the slack.
        assert_eq!(
            owner_deadline(s(10_000), Lost::Stopped, s(10_000), &[]),
            s(13_100)
        );
        // The SDK's loss: the session ends 220 ms later.
        assert_eq!(
            owner_deadline(s(10_000), Lost::Lease, s(10_000), &[]),
            s(11_320)
        );
        // A fault: the SDK's Leave waits for the new leader, which does not
        // extend a session its worker ends.
        assert_eq!(
            owner_deadline(s(10_000), Lost::Lease, s(10_000), &[s(9_800)]),
            s(9_800 + 1_000 + 1_100)
        );
        // A worker cut off with its node cannot end it: the new leader
        // extends its lease.
        assert_eq!(
            owner_deadline(s(10_000), Lost::Stranded, s(10_000), &[s(9_000)]),
            s(9_000 + 1_000 + 2_000 + 1_100)
        );
        // Released: only the new leader is waited for.
        assert_eq!(
            owner_deadline(s(10_000), Lost::Released, s(10_000), &[s(10_500)]),
            s(10_500 + 1_000 + 1_100)
        );
        // A fault just after the lease ran out, before the expiry could be
        // committed: the new leader still extends it.
        assert_eq!(
            owner_deadline(s(10_000), Lost::Stopped, s(10_000), &[s(12_050)]),
            s(12_050 + 1_000 + 2_000 + 1_100)
        );
        // A fault after the partition was already late excuses nothing.
        assert_eq!(
            owner_deadline(s(10_000), Lost::Released, s(10_000), &[s(11_200)]),
            s(11_100)
        );
        let f = bound_details()["formula"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        for part in [
            "4 x election timeout 250 ms",
            "harness call timeout 1500 ms",
            "TTL 2000 ms",
            "TTL/10 + 1% = 220 ms",
            "rebalance tick 100 ms",
            "slack 1000 ms",
            "at most 4100 ms",
            "Handoff timeout (5000 ms): not a term",
        ] {
            assert!(f.contains(part), "{part:?} not in {f:?}");
        }
    }

    #[test]
    fn a_clean_run_with_a_leader_kill_is_valid_and_reported_per_fault() {
        // Writes stop for 800 ms at the kill; the worker keeps its lease.
        let mut h = H::new(3, 10_000, |t| (3000..3800).contains(&t));
        h.join("w0-0", 100, &[1, 2, 3]);
        h.grant("w0-0", 150);
        h.fault("kill", json!({"node": 1, "leader": true}), 3000, 5000);
        h.worker("w0-0", "leave", 9900);
        h.release("w0-0", 9950);
        let o = h.check();
        assert_eq!(o.verdict, Verdict::Valid, "{}", o.details);
        let faults = o.details["faults"].as_array().cloned().unwrap_or_default();
        assert_eq!(faults.len(), 2);
        assert_eq!(faults[1]["fault"], "kill");
        assert_eq!(faults[1]["target"], "node 1 (leader)");
        assert_eq!(faults[1]["worst write gap ms"], 801);
        assert_eq!(faults[1]["heal ms"], 5000.0);
        // Before the grant, the worker waited 50 ms for its partitions.
        assert_eq!(faults[0]["worst unowned ms (at least)"], 50);
        assert_eq!(o.details["worst write gap ms"], 801);
    }

    #[test]
    fn a_write_gap_past_the_bound_while_a_majority_is_up_is_invalid() {
        let mut h = H::new(3, 10_000, |t| (3000..6600).contains(&t));
        h.fault(
            "freeze",
            json!({"node": 2, "leader": true, "target": "leader"}),
            3000,
            7000,
        );
        let o = h.check();
        assert_eq!(o.verdict, Verdict::Invalid);
        let p = problems(&o);
        assert!(
            p[0].starts_with("no write acknowledged for 3601 ms, from 2999.000 to 6600.000 ms"),
            "{p:?}"
        );
        assert!(
            p[0].contains("freeze node 2 (leader) at 3000.000 ms"),
            "{p:?}"
        );
        assert_eq!(o.details["faults"][1]["worst write gap ms"], 3601);
    }

    #[test]
    fn a_partition_without_a_live_owner_past_the_bound_is_invalid() {
        // The leader freezes; the worker's SDK loses its lease at 3.5 s,
        // the session ends at `release_ms`, and the partitions come back
        // at `regrant_ms`.
        let run = |release_ms: u64, regrant_ms: u64| {
            let mut h = H::new(3, 12_000, |_| false);
            h.join("w0-0", 100, &[1, 2, 3]);
            h.grant("w0-0", 150);
            h.fault("freeze", json!({"node": 1, "leader": true}), 3000, 8000);
            h.worker("w0-0", "lease_lost", 3500);
            h.release("w0-0", release_ms);
            h.grant("w0-0", regrant_ms);
            h.check()
        };
        // The SDK ends its lost session 220 ms after the loss, once a new
        // leader is there (by 4 s): then a tick and the slack, 5.1 s.
        let o = run(4700, 4750);
        assert_eq!(o.verdict, Verdict::Valid, "{}", o.details);
        assert_eq!(o.details["worst unowned ms (at least)"], 1250);
        // Released when the new leader's extension ran out, granted when
        // the frozen node came back: far too late.
        let o = run(6000, 9000);
        assert_eq!(o.verdict, Verdict::Invalid);
        let p = problems(&o);
        assert!(
            p[0].starts_with("work/0-31 had no live owner from 3500.000 ms (its owner's SDK said the lease was lost) to 8999.900 ms"),
            "{p:?}"
        );
        assert!(
            p[0].contains("G4 wants one by 5100.000 ms (1600 ms after, see the bound), late by at least 3900 ms"),
            "{p:?}"
        );
        assert!(p[0].contains("freeze node 1 (leader)"), "{p:?}");
        // One problem for the 32 partitions; the table names the fault.
        assert_eq!(p.len(), 1);
        let table = table(&o.details);
        assert!(table.contains("freeze"), "{table}");
        assert!(
            table.contains("5500/5501 ms   3900 ms       1  work/0"),
            "{table}"
        );
    }

    #[test]
    fn a_dead_owner_counts_from_its_death_and_only_while_a_worker_wants_work() {
        let run = |other: bool, regrant: Option<u64>| {
            let mut h = H::new(3, 12_000, |_| false);
            h.join("w0-0", 100, &[1, 2, 3]);
            h.grant("w0-0", 150);
            if other {
                h.join("w1-0", 200, &[3, 1, 2]);
            }
            h.worker("w0-0", "stopped", 3000); // killed: no leave
            h.release("w0-0", 5000); // its lease ran out
            if let Some(t) = regrant {
                h.grant("w1-0", t);
            }
            h.check()
        };
        // Granted to the other worker within TTL + tick of the death.
        let o = run(true, Some(5100));
        assert_eq!(o.verdict, Verdict::Valid, "{}", o.details);
        assert_eq!(o.details["worst unowned ms (at least)"], 2100);
        // Never granted again although a worker wants work: the open
        // interval counts up to the end.
        let o = run(true, None);
        assert_eq!(o.verdict, Verdict::Invalid);
        let p = problems(&o);
        assert!(
            p[0].contains("from 3000.000 ms (its owner's process stopped) to 12000.000 ms"),
            "{p:?}"
        );
        assert!(p[0].contains("late by at least 5900 ms"), "{p:?}");
        // Nobody wants work: nothing to grant, nothing counted.
        let o = run(false, None);
        assert_eq!(o.verdict, Verdict::Valid, "{}", o.details);
    }

    #[test]
    fn a_fault_while_the_owner_is_dead_extends_what_is_allowed() {
        // w0 is killed at 3 s; its lease would end at 5 s, but the leader is
        // killed at 4.5 s and the new leader extends every lease: released at
        // 7.5 s, granted to w1 at 8 s: 5 s after the death, and 8.6 s is
        // allowed (4.5 + 1 + 2 + 0.1 + 1).
        let run = |leader_killed: bool| {
            let mut h = H::new(3, 12_000, |_| false);
            h.join("w0-0", 100, &[1, 2, 3]);
            h.grant("w0-0", 150);
            h.join("w1-0", 200, &[1, 2, 3]);
            h.worker("w0-0", "stopped", 3000);
            if leader_killed {
                h.fault("kill", json!({"node": 1, "leader": true}), 4500, 6000);
            }
            h.release("w0-0", 7500);
            h.grant("w1-0", 8000);
            h.check()
        };
        let o = run(true);
        assert_eq!(o.verdict, Verdict::Valid, "{}", o.details);
        assert_eq!(o.details["worst unowned ms (at least)"], 5000);
        // Without a fault nothing excuses the 5 s: 6.1 s allowed.
        let o = run(false);
        assert_eq!(o.verdict, Verdict::Invalid);
        let p = problems(&o);
        assert!(
            p[0].contains("from 3000.000 ms (its owner's process stopped) to 7999.900 ms"),
            "{p:?}"
        );
        assert!(p[0].contains("late by at least 1900 ms"), "{p:?}");
    }

    #[test]
    fn a_worker_that_knows_only_a_cut_off_node_wants_nothing_meanwhile() {
        let run = |endpoints: &[usize]| {
            let mut h = H::new(3, 12_000, |_| false);
            h.join("w1-0", 100, endpoints);
            h.grant("w1-0", 150);
            let cut: Vec<[usize; 2]> = vec![[1, 2], [2, 1], [1, 3], [3, 1]];
            h.fault(
                "partition",
                json!({"kind": "isolated-leader", "mode": "drop", "cut": cut}),
                3000,
                9000,
            );
            h.worker("w1-0", "lease_lost", 3500);
            h.release("w1-0", 5500);
            h.grant("w1-0", 9500);
            h.check()
        };
        // Sticky on node 1: counted only before and after the partition.
        let o = run(&[1]);
        assert_eq!(o.verdict, Verdict::Valid, "{}", o.details);
        assert_eq!(o.details["worst unowned ms (at least)"], 500);
        // Knowing every node, it ends its lost session itself: 5.1 s.
        let o = run(&[1, 2, 3]);
        assert_eq!(o.verdict, Verdict::Invalid);
        let p = problems(&o);
        assert!(p[0].contains("late by at least 4400 ms"), "{p:?}");
        assert!(p[0].contains("partition isolated-leader, drop"), "{p:?}");
    }

    #[test]
    fn a_fault_without_a_connected_majority_is_excluded_until_its_heal() {
        // Five nodes on a ring: no three all see each other.
        let ring: Vec<[usize; 2]> = (1..=5usize)
            .flat_map(|i| (1..=5usize).map(move |j| [i, j]))
            .filter(|[i, j]| {
                let d = (i + 5 - j) % 5;
                i != j && d != 1 && d != 4
            })
            .collect();
        let run = |kind: &str, cut: &[[usize; 2]]| {
            let mut h = H::new(5, 12_000, |t| (3000..7500).contains(&t));
            h.fault(
                "partition",
                json!({"kind": kind, "mode": "drop", "cut": cut}),
                3000,
                7000,
            );
            h.check()
        };
        let o = run("ring", &ring);
        assert_eq!(o.verdict, Verdict::Valid, "{}", o.details);
        // Measured again from the heal: 7.0 to 7.5 s.
        assert_eq!(o.details["faults"][1]["worst write gap ms"], 500);
        assert_eq!(o.details["faults"][1]["majority up and connected"], false);
        assert!(o.details["excluded"][0]
            .as_str()
            .is_some_and(|e| e.starts_with("partition ring, drop from 3000.000 to 7000.000 ms")));
        // Halves keep a majority of three: the same silence is a violation.
        let halves: Vec<[usize; 2]> = [1usize, 2]
            .iter()
            .flat_map(|a| [3usize, 4, 5].map(|b| [[*a, b], [b, *a]]))
            .flatten()
            .collect();
        let o = run("halves", &halves);
        assert_eq!(o.verdict, Verdict::Invalid);
    }

    #[test]
    fn majorities_of_each_partition_scheme() {
        let net = |n: usize, down: &[usize], cut: &[(usize, usize)]| Net {
            members: (1..=n).collect(),
            down: down.iter().copied().collect(),
            cut: cut.iter().copied().collect(),
        };
        let set = |v: &[usize]| Some(v.iter().copied().collect::<BTreeSet<usize>>());
        assert_eq!(net(3, &[], &[]).majority(), set(&[1, 2, 3]));
        assert_eq!(net(3, &[2], &[]).majority(), set(&[1, 3]));
        assert_eq!(net(3, &[1, 2], &[]).majority(), None);
        // Bridge on three nodes: 1 sees 2 and 3, which do not see each other.
        assert_eq!(net(3, &[], &[(2, 3), (3, 2)]).majority(), set(&[1, 2, 3]));
        // One way: what 1 sends is lost; 2 and 3 still form a majority.
        assert_eq!(net(3, &[], &[(1, 2), (1, 3)]).majority(), set(&[2, 3]));
    }

    #[test]
    fn revisions_are_placed_between_the_writes_around_them() {
        let h = H::new(3, 1000, |_| false);
        let clock = Clock::new(&h.ops, 1000 * MS);
        // Revision 1505: after the write at revision 1500 was invoked
        // (149.5 ms), before the one at 1510 was acknowledged (151 ms).
        assert_eq!(clock.lower(1505), 150 * MS - MS / 10);
        assert_eq!(clock.upper(1505), 151 * MS);
        // Beyond every write: the end of the run.
        assert_eq!(clock.upper(1_000_000), 1000 * MS);
        assert_eq!(clock.lower(1), 0);
    }
}
