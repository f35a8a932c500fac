//! Pre-vote: a node starts an election only when a majority of the voters
//! has also stopped hearing from a leader (Raft thesis §9.6).
//!
//! # Why
//!
//! openraft 0.9 has no pre-vote. A follower that was frozen (SIGSTOP, a
//! stall) or cut off for a while raises its term on every election timeout,
//! alone; when it comes back, the leader's next heartbeat meets that higher
//! term and the leader steps down, although a majority still followed it:
//! about a second of refused writes, and a leader change, for nothing (G4).
//!
//! # How
//!
//! openraft's own election timer is turned off (`enable_elect = false`) and
//! [`run`] takes its place. When this node has heard no leader for the
//! leader lease plus a random election timeout, the same wait as openraft's
//! own timer, it asks every other voter whether it would vote for it
//! ([`PreVoteRequest`]: the term it would campaign in and its last log id).
//! A voter says yes only if it has heard no leader itself for a leader lease
//! (and is not a leader confirmed by a quorum within one) and the candidate's
//! log is at least as up to date as its own. Only with a majority of yeses
//! (its own included) does the node call `trigger().elect()`, which raises
//! its term. A straggler's pre-votes are refused while the leader is alive,
//! so its term stays where it was and the leader's heartbeat brings it back.
//!
//! # Safety
//!
//! Pre-vote only decides *when* a node campaigns; the election itself, the
//! vote a node grants and everything G1's lease argument rests on
//! (`cluster/leadership.rs`) are openraft's, unchanged. A wrong pre-vote answer can
//! cost liveness (an election that should have happened waits for the next
//! try), never safety.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_proto::v1::raft_client::RaftClient;
use baton_proto::v1::RaftPayload;
use openraft::ServerState;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::network::Network;
use super::removal::Removal;
use super::{BatonRaft, LogId, NodeId};

/// How often a node that keeps failing its pre-votes says so at `info`.
const SAY_EVERY: Duration = Duration::from_secs(10);

/// What a would-be candidate asks each voter before it raises its term.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PreVoteRequest {
    pub candidate: NodeId,
    /// The term it would campaign in (its current term + 1).
    pub term: u64,
    pub last_log_id: Option<LogId>,
    /// The log id of the membership the candidate knows.
    pub membership: Option<LogId>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PreVoteResponse {
    pub granted: bool,
    /// Why not, for the candidate's log.
    pub reason: String,
    /// Set when the voter's membership is newer than the candidate's and
    /// does not list it: the log index of that membership.
    pub removed_at: Option<u64>,
}

/// When this node last heard from a live leader: an AppendEntries or
/// snapshot chunk it accepted, or its own leadership.
#[derive(Debug)]
pub struct LeaderContact {
    at: Mutex<Instant>,
}

impl Default for LeaderContact {
    /// A node that just started counts as having heard a leader now, so it
    /// does not campaign before a running leader has had time to reach it.
    fn default() -> Self {
        Self {
            at: Mutex::new(Instant::now()),
        }
    }
}

impl LeaderContact {
    pub fn heard(&self) {
        *self.at.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    pub fn since(&self) -> Duration {
        self.at.lock().unwrap_or_else(|p| p.into_inner()).elapsed()
    }
}

/// The timing pre-vote shares with openraft.
#[derive(Clone, Copy, Debug)]
pub struct ElectionTiming {
    /// openraft's leader lease (`election_timeout_max`): how long after
    /// hearing a leader a voter refuses openraft's own vote requests. A
    /// pre-vote is refused for as long, so one granted here is not refused by
    /// openraft for the same reason a moment later.
    pub lease: Duration,
    pub timeout_min: Duration,
    pub timeout_max: Duration,
}

impl ElectionTiming {
    pub fn new(config: &openraft::Config) -> Self {
        Self {
            lease: Duration::from_millis(config.election_timeout_max),
            timeout_min: Duration::from_millis(config.election_timeout_min),
            timeout_max: Duration::from_millis(config.election_timeout_max),
        }
    }

    fn random_timeout(&self) -> Duration {
        rand::rng().random_range(self.timeout_min..self.timeout_max)
    }
}

/// This node's answer to a pre-vote request.
pub fn answer(
    raft: &BatonRaft,
    contact: &LeaderContact,
    timing: ElectionTiming,
    request: &PreVoteRequest,
) -> PreVoteResponse {
    let metrics = raft.metrics().borrow().clone();
    // Only a committed (applied) membership can say a node was removed: an
    // appended one may still be truncated.
    let membership = &metrics.membership_config;
    let removed_at = (membership
        .membership()
        .get_node(&request.candidate)
        .is_none()
        && membership.log_id() > &request.membership
        && membership.log_id() <= &metrics.last_applied)
        .then(|| membership.log_id().map_or(0, |l| l.index));
    if let Some(index) = removed_at {
        return PreVoteResponse {
            granted: false,
            reason: format!(
                "node {} is not a member since log index {index}",
                request.candidate
            ),
            removed_at,
        };
    }
    let refuse = |reason: String| PreVoteResponse {
        granted: false,
        reason,
        removed_at: None,
    };
    if metrics.state == ServerState::Leader {
        // A leader refuses unless its quorum has been silent for a lease; one
        // just elected has no quorum acknowledgement yet and refuses too.
        let confirmed = metrics.millis_since_quorum_ack.map(Duration::from_millis);
        if confirmed.is_none_or(|ago| ago < timing.lease) {
            return refuse(format!(
                "node {} leads (quorum confirmed {:?} ago)",
                metrics.id, confirmed
            ));
        }
    } else {
        let since = contact.since();
        if since < timing.lease {
            return refuse(format!(
                "node {} heard leader {:?} {} ms ago",
                metrics.id,
                metrics.current_leader,
                since.as_millis()
            ));
        }
    }
    let last_log_id = raft.data_metrics().borrow().last_log;
    if request.last_log_id < last_log_id {
        return refuse(format!(
            "node {} has a newer log ({last_log_id:?}) than the candidate's ({:?})",
            metrics.id, request.last_log_id
        ));
    }
    PreVoteResponse {
        granted: true,
        reason: String::new(),
        removed_at: None,
    }
}

/// Runs this node's election timer until `stop` turns true (see the module
/// docs).
pub async fn run(
    raft: BatonRaft,
    network: Network,
    contact: Arc<LeaderContact>,
    removal: Arc<Removal>,
    timing: ElectionTiming,
    mut stop: watch::Receiver<bool>,
) {
    let mut metrics = raft.metrics();
    let mut vote = metrics.borrow().vote;
    // A lone voter campaigns at once; others wait the lease plus a random
    // timeout of quiet, drawn again after every try.
    let mut next_try = Instant::now();
    let mut quiet_needed = timing.lease + timing.random_timeout();
    let mut last_said: Option<Instant> = None;
    let poll = (timing.timeout_min / 5).max(Duration::from_millis(10));
    loop {
        tokio::select! {
            () = tokio::time::sleep(poll) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let m = metrics.borrow_and_update().clone();
        let voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
        // Its own membership says so only once applied (so committed), and
        // only after one listed this node: a node joining replays older
        // memberships that do not list it yet.
        let membership_index = m.membership_config.log_id().map_or(0, |l| l.index);
        let applied = m.membership_config.log_id().is_some()
            && m.membership_config.log_id() <= &m.last_applied;
        if applied {
            if m.membership_config.membership().get_node(&m.id).is_some() {
                removal.listed_at(membership_index);
            } else if removal.was_listed() {
                removal.removed_at(membership_index);
            }
        }
        if m.state == ServerState::Leader {
            // Once it steps down, it waits a full timeout before campaigning.
            contact.heard();
            continue;
        }
        // A removed node cannot win, and asking costs the voters: it waits
        // to be added back (the leader's replication then reaches it).
        if !voters.contains(&m.id) || removal.get().is_some() {
            continue;
        }
        if m.vote != vote {
            // This node voted for a candidate (or raised its own term):
            // give that election its time before starting another.
            vote = m.vote;
            next_try = next_try.max(Instant::now() + timing.random_timeout());
        }
        let quiet = contact.since();
        if Instant::now() < next_try || (voters.len() > 1 && quiet < quiet_needed) {
            continue;
        }
        let request = PreVoteRequest {
            candidate: m.id,
            term: m.current_term + 1,
            last_log_id: raft.data_metrics().borrow().last_log,
            membership: *m.membership_config.log_id(),
        };
        let peers: Vec<(NodeId, String)> = m
            .membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| voters.contains(id) && **id != m.id)
            .map(|(id, node)| (*id, node.addr.clone()))
            .collect();
        let (yeses, refusals) = ask(&network, &peers, &request, &removal, timing.timeout_min).await;
        let granted = 1 + yeses;
        if granted * 2 <= voters.len() && last_said.is_none_or(|t| t.elapsed() >= SAY_EVERY) {
            // A cluster without a leader says why, now and then.
            tracing::info!(
                term = request.term,
                granted,
                voters = voters.len(),
                "no election: the pre-vote found no majority: {}",
                refusals.join("; ")
            );
            last_said = Some(Instant::now());
        }
        next_try = Instant::now() + timing.random_timeout();
        quiet_needed = timing.lease + timing.random_timeout();
        // The round waits on every peer, a frozen one for its timeout: if a
        // leader was elected (this node voted, or heard from it) meanwhile,
        // the answers are stale and an election would depose it.
        let now = raft.metrics().borrow().clone();
        if now.vote != m.vote || now.state != m.state || contact.since() < quiet {
            continue;
        }
        if granted * 2 > voters.len() {
            tracing::info!(
                term = request.term,
                granted,
                voters = voters.len(),
                quiet_ms = quiet.as_millis() as u64,
                "pre-vote won: starting an election"
            );
            if let Err(e) = raft.trigger().elect().await {
                tracing::warn!("cannot start an election: {e}");
            }
        }
    }
}

/// Asks every peer at once; counts the yeses that come within `timeout`.
async fn ask(
    network: &Network,
    peers: &[(NodeId, String)],
    request: &PreVoteRequest,
    removal: &Removal,
    timeout: Duration,
) -> (usize, Vec<String>) {
    let Ok(data) = bincode::serialize(request) else {
        return (0, Vec::new());
    };
    let calls = peers.iter().map(|(id, addr)| {
        let data = data.clone();
        async move {
            let Ok(channel) = network.channel(*id, addr) else {
                return Err(format!("node {id}: unusable address {addr}"));
            };
            let mut call = tonic::Request::new(RaftPayload { data });
            call.set_timeout(timeout);
            network.dialer().authorize(&mut call);
            let Ok(reply) =
                tokio::time::timeout(timeout, RaftClient::new(channel).pre_vote(call)).await
            else {
                return Err(format!("node {id}: no answer within {timeout:?}"));
            };
            match reply {
                Ok(reply) => {
                    let answer: PreVoteResponse = bincode::deserialize(&reply.get_ref().data)
                        .map_err(|e| format!("node {id}: undecodable answer: {e}"))?;
                    if let Some(index) = answer.removed_at {
                        removal.removed_at(index);
                    }
                    if answer.granted {
                        Ok(())
                    } else {
                        Err(answer.reason)
                    }
                }
                // A node of an older version has no pre-vote: it answers as
                // openraft would, with its own vote checks, so count it in.
                Err(s) if s.code() == tonic::Code::Unimplemented => Ok(()),
                Err(s) => Err(format!("node {id}: {}", s.message())),
            }
        }
    });
    let answers = futures::future::join_all(calls).await;
    let granted = answers.iter().filter(|a| a.is_ok()).count();
    (
        granted,
        answers.into_iter().filter_map(Result::err).collect(),
    )
}
