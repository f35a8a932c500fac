//! What every member's log reader understands, for rolling upgrades.
//!
//! A node decodes each entry with its own code; an entry in a form it does
//! not know (a batch of commands, a command added later) stops it. So the
//! leader writes a new form only once every member (voter or learner) has
//! named the feature in its answer to the Raft service's `Features` call.
//! Answers are kept per membership: a change forgets them, so a node removed
//! and added again (perhaps running another version) is asked again; a
//! member lacking a feature is asked again every [`FEATURES_RETRY`], since
//! it may have been upgraded in place.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_proto::v1::raft_client::RaftClient;
use baton_proto::v1::FeaturesRequest;

use crate::raft::{BatonRaft, LogId, NodeId, PeerDialer};

/// Entries that carry a batch of commands (`cluster::batcher`).
pub const BATCHED_ENTRIES: &str = "batched-entries";
/// The load-balancing commands (`SetLoadRules`, `RebalanceByLoad`) and the
/// state that holds load rules.
pub const LOAD_BALANCING: &str = "load-balancing";
/// What this node's log reader understands (the `Features` RPC's answer).
pub const FEATURES: &[&str] = &[BATCHED_ENTRIES, LOAD_BALANCING];

/// How often members not known to have every feature are asked again.
const FEATURES_RETRY: Duration = Duration::from_secs(2);

/// The members' answers (cheap to clone: clones share them).
#[derive(Clone)]
pub struct MemberFeatures {
    raft: BatonRaft,
    dialer: PeerDialer,
    id: NodeId,
    known: Arc<Mutex<Known>>,
}

#[derive(Default)]
struct Known {
    /// The membership (its log id) the answers below were given under.
    membership: Option<LogId>,
    /// Each member's answer, with the address it was asked at.
    answers: HashMap<NodeId, (String, BTreeSet<String>)>,
    /// When the members without every feature were last asked.
    asked: Option<Instant>,
}

impl MemberFeatures {
    pub fn new(raft: BatonRaft, dialer: PeerDialer, id: NodeId) -> Self {
        Self {
            raft,
            dialer,
            id,
            known: Arc::new(Mutex::new(Known::default())),
        }
    }

    /// Whether every member has named `feature`. Members not known to have
    /// every feature this node knows are asked (in the background, at most
    /// every [`FEATURES_RETRY`]); until they answer, the answer is no.
    pub fn all_have(&self, feature: &str) -> bool {
        let (missing, lacking): (bool, Vec<(NodeId, String)>) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
            let membership = metrics.membership_config.log_id();
            if known.membership != *membership {
                known.membership = *membership;
                known.answers.clear();
            }
            let mut missing = false;
            let mut lacking = Vec::new();
            for (id, node) in metrics.membership_config.membership().nodes() {
                if *id == self.id {
                    continue;
                }
                let answer = known
                    .answers
                    .get(id)
                    .filter(|(addr, _)| *addr == node.addr)
                    .map(|(_, features)| features);
                missing |= !answer.is_some_and(|f| f.contains(feature));
                if !answer.is_some_and(|f| FEATURES.iter().all(|k| f.contains(*k))) {
                    lacking.push((*id, node.addr.clone()));
                }
            }
            (missing, lacking)
        };
        if !lacking.is_empty() {
            let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
            if known.asked.is_none_or(|at| at.elapsed() >= FEATURES_RETRY) {
                known.asked = Some(Instant::now());
                for (id, addr) in lacking {
                    tokio::spawn(ask(self.dialer.clone(), Arc::clone(&self.known), id, addr));
                }
            }
        }
        !missing
    }
}

/// Asks member `id` at `addr` what it understands, and records the answer.
async fn ask(dialer: PeerDialer, known: Arc<Mutex<Known>>, id: NodeId, addr: String) {
    let Ok(endpoint) = dialer.endpoint(&addr) else {
        return;
    };
    let mut request = tonic::Request::new(FeaturesRequest {});
    request.set_timeout(FEATURES_RETRY);
    dialer.authorize(&mut request);
    match RaftClient::new(endpoint.connect_lazy())
        .features(request)
        .await
    {
        Ok(answer) => {
            let features = answer.into_inner().features.into_iter().collect();
            let mut known = known.lock().unwrap_or_else(|p| p.into_inner());
            known.answers.insert(id, (addr, features));
        }
        // An older node (UNIMPLEMENTED: it knows none of these), or one not
        // reachable now: asked again later.
        Err(status) => {
            tracing::debug!(member = id, %addr, %status, "member's features not known yet")
        }
    }
}
