//! The proposal batcher: every command this node proposes goes through one
//! queue, and one task turns what is queued into Raft entries, many commands
//! per entry.
//!
//! Why: openraft 0.9 makes each `client_write` an entry of its own, and each
//! entry costs its own encoding, log key, replication record and apply step.
//! Commands that queue up while earlier entries are in flight go into one
//! entry instead (see [`Proposals`]); each keeps its own revision, reply and
//! events, as if it had its own entry.
//!
//! No timer: a command that finds the queue empty and a slot free is
//! proposed at once, alone, so a lone client pays no added latency. Batches
//! form only while [`IN_FLIGHT`] entries are already on their way.
//!
//! A rolling upgrade: a node that does not know batches cannot decode one,
//! so a batch is written only once every member of the cluster has named
//! [`BATCHED_ENTRIES`] in its `Features` answer (`cluster::features`); until
//! then every command is an entry of its own, as before.

use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot};

use super::features::{MemberFeatures, BATCHED_ENTRIES};
use super::ClusterError;
use crate::domain::{CommandResult, Proposal, Proposals};
use crate::raft::BatonRaft;

/// Commands in one entry at most.
const BATCH_COMMANDS: usize = 1024;
/// Encoded bytes of one entry's commands at most; a larger command is an
/// entry of its own. openraft sends at most `max_payload_entries` (300)
/// entries per append message: 300 batches of 128 KiB stay well below the
/// Raft message limit (`raft::network::MAX_RAFT_MESSAGE_BYTES`, 64 MiB). A
/// thousand tombstone puts take about 100 KiB.
const BATCH_BYTES: usize = 128 << 10;
/// Entries proposed and not yet applied at once. More commands wait and go
/// into a later, larger batch; a few in flight keep the leader's log, its
/// followers and its state machine all busy at once.
const IN_FLIGHT: usize = 4;
/// How long an entry may take from proposal to applied before its commands
/// are answered that their outcome is unknown. openraft answers a write
/// only once its entry is applied or truncated; a leader cut off with
/// entries in flight that later catches up by snapshot would hold them (and
/// their slots here) forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

type Reply = oneshot::Sender<Result<CommandResult, ClusterError>>;

struct Queued {
    proposal: Proposal,
    bytes: usize,
    reply: Reply,
}

/// The queue in front of Raft (cheap to clone: clones share the queue).
#[derive(Clone)]
pub(super) struct Batcher {
    queue: mpsc::UnboundedSender<Queued>,
}

impl Batcher {
    /// Starts the batching task; it ends when every clone is dropped.
    pub(super) fn start(raft: BatonRaft, members: MemberFeatures) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, members, rx));
        Self { queue }
    }

    /// Commits `proposal` (in an entry of its own or in a batch) and returns
    /// its result.
    pub(super) async fn write(&self, proposal: Proposal) -> Result<CommandResult, ClusterError> {
        // Measured here, on the caller's task, not on the batching task.
        let bytes = bincode::serialized_size(&proposal).map_or(BATCH_BYTES, |b| b as usize);
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Queued {
                proposal,
                bytes,
                reply,
            })
            .map_err(|_| ClusterError::ShuttingDown)?;
        answer.await.map_err(|_| ClusterError::ShuttingDown)?
    }
}

async fn run(raft: BatonRaft, members: MemberFeatures, mut rx: mpsc::UnboundedReceiver<Queued>) {
    let mut in_flight = FuturesUnordered::new();
    // A command that did not fit in the last batch starts the next one.
    let mut carried: Option<Queued> = None;
    loop {
        let first = if let Some(q) = carried.take() {
            q
        } else {
            tokio::select! {
                // Finished entries free their slots.
                Some(()) = in_flight.next(), if !in_flight.is_empty() => continue,
                queued = rx.recv(), if in_flight.len() < IN_FLIGHT => match queued {
                    Some(q) => q,
                    None => break,
                },
            }
        };
        if in_flight.len() >= IN_FLIGHT {
            // Only a carried command gets here with no free slot.
            carried = Some(first);
            in_flight.next().await;
            continue;
        }
        let mut batch = vec![first];
        let mut bytes = batch[0].bytes;
        while batch.len() < BATCH_COMMANDS && bytes < BATCH_BYTES {
            let Ok(q) = rx.try_recv() else { break };
            if bytes + q.bytes > BATCH_BYTES {
                carried = Some(q);
                break;
            }
            bytes += q.bytes;
            batch.push(q);
        }
        if batch.len() == 1 || !members.all_have(BATCHED_ENTRIES) {
            for q in batch {
                in_flight.push(write(raft.clone(), vec![q]));
            }
        } else {
            in_flight.push(write(raft.clone(), batch));
        }
    }
    while in_flight.next().await.is_some() {}
}

/// Proposes one entry for `batch` and hands each command its own result; a
/// leadership or storage error goes to every command in the batch.
async fn write(raft: BatonRaft, batch: Vec<Queued>) {
    let (proposals, replies): (Vec<Proposal>, Vec<Reply>) =
        batch.into_iter().map(|q| (q.proposal, q.reply)).unzip();
    let entry = match <[Proposal; 1]>::try_from(proposals) {
        Ok([one]) => Proposals::One(one),
        Err(many) => Proposals::Many(many),
    };
    let written = tokio::time::timeout(WRITE_TIMEOUT, raft.client_write(entry)).await;
    let Ok(written) = written else {
        for reply in replies {
            let _ = reply.send(Err(ClusterError::OutcomeUnknown(WRITE_TIMEOUT)));
        }
        return;
    };
    match written {
        Ok(response) => {
            let mut results = response.data.into_iter();
            for reply in replies {
                // The state machine returns one result per proposal.
                let result = results.next().ok_or(ClusterError::Unanswered);
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(ClusterError::Write(e.clone())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use openraft::BasicNode;

    use super::*;
    use crate::domain::command::{CreateGroup, PutTombstone};
    use crate::domain::{Command, GroupConfig, Locator};
    use crate::raft::network::Network;
    use crate::raft::{PeerDialer, RaftTuning};
    use crate::security::Security;

    /// A one-node Raft on a fresh store, leading.
    async fn leading_raft(dir: &std::path::Path) -> BatonRaft {
        let (log, sm) = crate::store::open(dir).expect("store");
        let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
        let dialer = PeerDialer::new(listen, &Security::default()).expect("dialer");
        let config = RaftTuning::default().to_config().expect("config");
        let raft = BatonRaft::new(1, config, Network::new(dialer), log, sm)
            .await
            .expect("raft");
        raft.initialize(BTreeMap::from([(1, BasicNode::new("127.0.0.1:1"))]))
            .await
            .expect("initialize");
        raft.wait(Some(Duration::from_secs(10)))
            .current_leader(1, "leads")
            .await
            .expect("leads");
        raft
    }

    fn queued(
        command: Command,
    ) -> (
        Queued,
        oneshot::Receiver<Result<CommandResult, ClusterError>>,
    ) {
        let (reply, answer) = oneshot::channel();
        let queued = Queued {
            proposal: command.at(1_000),
            bytes: 0,
            reply,
        };
        (queued, answer)
    }

    fn put(group: &str, key: &str) -> Command {
        Command::PutTombstoneV2(PutTombstone {
            group: group.into(),
            key: key.into(),
            locator: Locator::Key,
            ttl_ms: None,
        })
    }

    #[tokio::test]
    async fn a_batch_gives_each_command_the_next_revision_and_its_own_result() {
        let dir = tempfile::tempdir().expect("tempdir");
        let raft = leading_raft(dir.path()).await;
        let create = Command::CreateGroup(CreateGroup {
            group: "g".into(),
            config: GroupConfig {
                partitions: 4,
                ..GroupConfig::default()
            },
        });
        let (q, created) = queued(create);
        write(raft.clone(), vec![q]).await;
        let created = created.await.expect("answered").expect("created").revision;

        let (batch, answers): (Vec<Queued>, Vec<_>) =
            [put("g", "a"), put("missing", "b"), put("g", "c")]
                .into_iter()
                .map(queued)
                .unzip();
        write(raft.clone(), batch).await;
        let mut results = Vec::new();
        for answer in answers {
            results.push(answer.await.expect("answered").expect("committed"));
        }
        let revisions: Vec<u64> = results.iter().map(|r| r.revision).collect();
        assert_eq!(revisions, vec![created + 1, created + 2, created + 3]);
        assert!(results[0].outcome.is_ok());
        assert!(results[1].outcome.is_err(), "{:?}", results[1]);
        assert!(results[2].outcome.is_ok());
        raft.shutdown().await.expect("shutdown");
    }

    #[tokio::test]
    async fn a_failed_batch_fails_every_caller() {
        let dir = tempfile::tempdir().expect("tempdir");
        let raft = leading_raft(dir.path()).await;
        raft.shutdown().await.expect("shutdown");
        let (batch, answers): (Vec<Queued>, Vec<_>) =
            (0..3).map(|i| queued(put("g", &format!("k{i}")))).unzip();
        write(raft, batch).await;
        for answer in answers {
            let answer = answer.await.expect("answered");
            assert!(
                matches!(answer, Err(ClusterError::Write(_))),
                "every caller learns the write failed: {answer:?}"
            );
        }
    }
}
