//! Confirmed leadership for lease renewals: a keepalive is acknowledged only
//! after a quorum has confirmed this node's leadership in a round that began
//! after the keepalive arrived.
//!
//! # Why renewals need it (G1)
//!
//! openraft 0.9 never steps a leader down when it loses its quorum. A leader
//! cut off from its peers, or one that was paused and resumed, still believes
//! it leads; if it went on renewing leases, a worker whose stream stays on it
//! would keep believing it holds its partitions while the majority's new
//! leader lets that worker's session expire and grants them to someone else.
//!
//! # The argument
//!
//! Let a worker send a keepalive at `s` (its clock), the old leader L1 receive
//! it at `a > s`, and L1 acknowledge it only after a round that began at
//! `r > a` was answered by a quorum Q1 accepting L1's vote v1 (its term T).
//! A later leader L2 has a greater vote v2 and needs the grants of a quorum
//! Q2; Q1 and Q2 share a node N. A node that has granted v2 refuses v1, so N
//! answered L1's round before it granted v2: N granted v2 after `r`, and L2
//! takes office after that. (Votes, not terms: in openraft's default mode
//! two leaders may share a term, with the node id breaking the tie; a node
//! never leads twice in one term, so the tracker's term still names one
//! office.) Taking office (see `duties.rs` and
//! `Leases::take_office`) gives every session a full TTL from then, so L2
//! expires the worker no earlier than `r + TTL > s + TTL`. The SDK stops at
//! `s + TTL × (1 − drift) − margin`: before any grant L2 can make, as long as
//! the two clocks' rates differ by less than the drift allowance. L1 itself
//! cannot grant anything without a quorum. The same holds for a keepalive
//! that waited in a paused leader's socket: its round begins after it was
//! read, so after the pause, and fails if a new term started meanwhile.
//!
//! # Cost
//!
//! One round covers every keepalive that arrived before it began, and rounds
//! run one at a time, at most one per [`MIN_ROUND_GAP`]: a heartbeat to each
//! voter per round, never a log entry.

use std::sync::Mutex;
use std::time::Duration;

use openraft::ServerState;
use tokio::sync::{watch, Notify};

use crate::raft::BatonRaft;

/// Rounds start at most this often; a keepalive waits at most about this
/// long plus one round trip for its acknowledgement. The SDK counts its
/// lease from the keepalive's send time, so the wait costs it nothing.
pub const MIN_ROUND_GAP: Duration = Duration::from_millis(20);

/// A round whose quorum has not answered by then counts as failed.
const ROUND_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, Default)]
struct Finished {
    /// Rounds are numbered from 1 in the order they begin.
    round: u64,
    /// The term a quorum confirmed this node leads in; `None`: it did not.
    term: Option<u64>,
}

pub struct Confirmations {
    /// The number of the last round that began.
    begun: Mutex<u64>,
    wake: Notify,
    finished: watch::Sender<Finished>,
}

impl Confirmations {
    /// Starts the rounds' task; it ends when `stop` turns true.
    pub fn start(raft: BatonRaft, stop: watch::Receiver<bool>) -> std::sync::Arc<Self> {
        let this = std::sync::Arc::new(Self {
            begun: Mutex::new(0),
            wake: Notify::new(),
            finished: watch::channel(Finished::default()).0,
        });
        tokio::spawn(this.clone().run(raft, stop));
        this
    }

    /// Waits for a round that began after this call and returns the term it
    /// confirmed this node leads in, or `None` if it did not (no quorum
    /// answered, a higher term was seen, or this node is not the leader).
    pub async fn confirm(&self) -> Option<u64> {
        let mut finished = self.finished.subscribe();
        let before = *self.begun.lock().unwrap_or_else(|p| p.into_inner());
        self.wake.notify_one();
        // Rounds finish in the order they begin, so the newest finished round
        // numbered above `before` began after this call.
        let seen = finished.wait_for(|f| f.round > before).await.ok()?;
        seen.term
    }

    async fn run(self: std::sync::Arc<Self>, raft: BatonRaft, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                () = self.wake.notified() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let round = {
                let mut begun = self.begun.lock().unwrap_or_else(|p| p.into_inner());
                *begun += 1;
                *begun
            };
            let term = tokio::select! {
                term = one_round(&raft) => term,
                _ = stop.wait_for(|s| *s) => None,
            };
            self.finished.send_replace(Finished { round, term });
            if *stop.borrow() {
                return;
            }
            tokio::time::sleep(MIN_ROUND_GAP).await;
        }
    }
}

/// One read-index round: openraft sends a heartbeat carrying this node's
/// vote to every voter and answers once a quorum accepted it. The term is
/// read before and after, so a round that straddles a change of term (this
/// node lost office and won it again) confirms nothing.
async fn one_round(raft: &BatonRaft) -> Option<u64> {
    let leading_term = || {
        let m = raft.metrics().borrow().clone();
        (m.state == ServerState::Leader && m.current_leader == Some(m.id)).then_some(m.current_term)
    };
    let before = leading_term()?;
    let confirmed = tokio::time::timeout(ROUND_TIMEOUT, raft.get_read_log_id()).await;
    if !matches!(confirmed, Ok(Ok(_))) {
        return None;
    }
    (leading_term()? == before).then_some(before)
}
