//! `batonctl cluster`: the Raft cluster's members, leader and replication.

use baton_client::proto::{ClusterStatusResponse, Member};
use baton_client::{AdminClient, MemberStatus};
use clap::Subcommand;
use serde::Serialize;

use crate::output::{reply, word, Reply, Table, View};

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Show the leader and every member's own state.
    Status,
    /// Add a running node (started with --join or with no cluster) as a learner.
    AddNode {
        /// The new node's --id.
        id: u64,
        /// The new node's gRPC address as the other nodes reach it.
        addr: String,
        /// Also make it a voter once it has caught up.
        #[arg(long)]
        promote: bool,
    },
    /// Make a learner a voter.
    Promote { id: u64 },
    /// Remove a voter or learner from the cluster.
    RemoveNode { id: u64 },
    /// Commit an empty entry through Raft: proves the cluster takes durable writes.
    Barrier,
    /// Drop the watch history up to and including REVISION on every node
    /// (the leader does this by itself per --history-revisions/--history-age-secs).
    Compact { revision: u64 },
}

pub async fn run(
    client: &mut AdminClient,
    command: ClusterCommand,
) -> anyhow::Result<Box<dyn Reply>> {
    Ok(match command {
        ClusterCommand::Status => {
            let (leader, members) = client.member_statuses().await?;
            reply(StatusView::new(&leader, &members))
        }
        ClusterCommand::AddNode { id, addr, promote } => {
            let r = client.add_node(id, &addr, promote).await?;
            let what = if promote {
                "added and promoted to voter"
            } else {
                "added as a learner"
            };
            reply(MembershipView::new(
                format!("node {id} {what}"),
                r.revision,
                &r.members,
            ))
        }
        ClusterCommand::Promote { id } => {
            let r = client.promote_node(id).await?;
            reply(MembershipView::new(
                format!("node {id} promoted to voter"),
                r.revision,
                &r.members,
            ))
        }
        ClusterCommand::RemoveNode { id } => {
            let r = client.remove_node(id).await?;
            reply(MembershipView::new(
                format!("node {id} removed"),
                r.revision,
                &r.members,
            ))
        }
        ClusterCommand::Barrier => {
            let r = client.barrier().await?;
            reply(BarrierView {
                revision: r.revision,
                leader_id: r.leader_id,
            })
        }
        ClusterCommand::Compact { revision } => {
            let r = client.compact(revision).await?;
            reply(CompactView {
                compacted: r.compacted,
                revision: r.revision,
            })
        }
    })
}

/// `cluster status`: whose view it is, the cluster as it sees it, and each
/// member's own answer.
#[derive(Serialize)]
struct StatusView {
    /// Whose view this is: the leader's, unless no leader answered.
    answered_by: u64,
    #[serde(skip)]
    answered_by_addr: String,
    from_leader: bool,
    quorum_acked_ms_ago: Option<u64>,
    removed_at_index: Option<u64>,
    leader_id: u64,
    leader_addr: String,
    term: u64,
    committed_index: u64,
    revision: u64,
    members: Vec<MemberView>,
}

/// A member; its own state is null where it could not be reached.
#[derive(Serialize)]
struct MemberView {
    id: u64,
    addr: String,
    voter: bool,
    matched_index: Option<u64>,
    state: Option<String>,
    term: Option<u64>,
    last_log_index: Option<u64>,
    applied_index: Option<u64>,
    snapshot_index: Option<u64>,
    error: Option<String>,
}

impl StatusView {
    fn new(leader: &ClusterStatusResponse, members: &[MemberStatus]) -> Self {
        Self {
            answered_by: leader.node_id,
            answered_by_addr: leader.node_addr.clone(),
            from_leader: leader.leader_id == leader.node_id && leader.removed_at_index.is_none(),
            quorum_acked_ms_ago: leader.quorum_acked_ms_ago,
            removed_at_index: leader.removed_at_index,
            leader_id: leader.leader_id,
            leader_addr: leader.leader_addr.clone(),
            term: leader.term,
            committed_index: leader.committed_index,
            revision: leader.revision,
            members: members
                .iter()
                .map(|m| {
                    let own = m.status.as_ref();
                    MemberView {
                        id: m.id,
                        addr: m.addr.clone(),
                        voter: m.voter,
                        matched_index: m.matched_index,
                        state: own.map(|s| word(s.state().as_str_name(), "RAFT_ROLE_")),
                        term: own.map(|s| s.term),
                        last_log_index: own.map(|s| s.last_log_index),
                        applied_index: own.map(|s| s.applied_index),
                        snapshot_index: own.map(|s| s.snapshot_index),
                        error: m.error.clone(),
                    }
                })
                .collect(),
        }
    }

    /// The first line: the leader, or why this is not the leader's view.
    fn headline(&self) -> String {
        let (node, addr) = (self.answered_by, &self.answered_by_addr);
        if let Some(index) = self.removed_at_index {
            return format!(
                "node {node} at {addr} was removed from the cluster (the membership at log index {index} no longer lists it); what it last knew:"
            );
        }
        let quorum_lost = self.quorum_acked_ms_ago.filter(|ms| {
            u128::from(*ms) >= baton_client::endpoints::NO_QUORUM.as_millis()
                && self.leader_id == node
        });
        if let Some(ms) = quorum_lost {
            return format!(
                "no quorum: node {node} at {addr} still calls itself the leader, but no quorum has answered it for {ms} ms; as it sees it: term {}, committed {}, revision {}",
                self.term, self.committed_index, self.revision
            );
        }
        if self.leader_id != node {
            let leader = if self.leader_id == 0 {
                "unknown".to_string()
            } else {
                format!("node {} at {}", self.leader_id, self.leader_addr)
            };
            return format!(
                "no leader answered (no quorum?); as node {node} at {addr} sees it: leader {leader}, term {}, committed {}, revision {}",
                self.term, self.committed_index, self.revision
            );
        }
        format!(
            "leader: node {} at {}, term {}, committed {}, revision {}",
            self.leader_id, self.leader_addr, self.term, self.committed_index, self.revision
        )
    }
}

impl View for StatusView {
    fn text(&self) -> String {
        let mut table = Table::new(&[
            "ID", "ADDRESS", "ROLE", "STATE", "TERM", "LAST LOG", "APPLIED", "MATCHED",
        ]);
        for m in &self.members {
            let or_dash = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
            table.row(vec![
                m.id.to_string(),
                m.addr.clone(),
                role(m.voter).into(),
                m.state.clone().unwrap_or_else(|| "unreachable".into()),
                or_dash(m.term),
                or_dash(m.last_log_index),
                or_dash(m.applied_index),
                or_dash(m.matched_index),
            ]);
        }
        let mut text = format!("{}\n{table}", self.headline());
        for m in &self.members {
            if let Some(error) = &m.error {
                text.push_str(&format!("node {}: {error}\n", m.id));
            }
        }
        text
    }
}

fn role(voter: bool) -> &'static str {
    if voter {
        "voter"
    } else {
        "learner"
    }
}

/// The membership after a change.
#[derive(Serialize)]
struct MembershipView {
    /// What changed, for the text form.
    #[serde(skip)]
    what: String,
    revision: u64,
    members: Vec<MembershipMember>,
}

#[derive(Serialize)]
struct MembershipMember {
    id: u64,
    addr: String,
    voter: bool,
    matched_index: Option<u64>,
}

impl MembershipView {
    fn new(what: String, revision: u64, members: &[Member]) -> Self {
        let members = members
            .iter()
            .map(|m| MembershipMember {
                id: m.id,
                addr: m.addr.clone(),
                voter: m.voter,
                matched_index: m.matched_index,
            })
            .collect();
        Self {
            what,
            revision,
            members,
        }
    }
}

impl View for MembershipView {
    fn text(&self) -> String {
        let mut table = Table::new(&["ID", "ADDRESS", "ROLE"]);
        for m in &self.members {
            table.row(vec![m.id.to_string(), m.addr.clone(), role(m.voter).into()]);
        }
        format!("{} (revision {})\n{table}", self.what, self.revision)
    }
}

#[derive(Serialize)]
struct BarrierView {
    revision: u64,
    leader_id: u64,
}

impl View for BarrierView {
    fn text(&self) -> String {
        format!(
            "committed at revision {} by leader {}\n",
            self.revision, self.leader_id
        )
    }
}

#[derive(Serialize)]
struct CompactView {
    compacted: u64,
    revision: u64,
}

impl View for CompactView {
    fn text(&self) -> String {
        format!(
            "history kept after revision {} (committed at revision {})\n",
            self.compacted, self.revision
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON `cluster status --json` has always printed (scripts and the
    /// process tests read it): every field, nulls where a member is
    /// unreachable, keys in alphabetical order.
    #[test]
    fn status_json_keeps_its_shape() {
        let leader = ClusterStatusResponse {
            node_id: 1,
            node_addr: "a:1".into(),
            state: baton_client::proto::RaftRole::Leader.into(),
            term: 2,
            leader_id: 1,
            leader_addr: "a:1".into(),
            committed_index: 9,
            applied_index: 9,
            last_log_index: 9,
            revision: 5,
            ..Default::default()
        };
        let members = [
            MemberStatus {
                id: 1,
                addr: "a:1".into(),
                voter: true,
                status: Some(leader.clone()),
                error: None,
                matched_index: Some(9),
            },
            MemberStatus {
                id: 2,
                addr: "b:2".into(),
                voter: false,
                status: None,
                error: Some("UNAVAILABLE: down".into()),
                matched_index: None,
            },
        ];
        let view = StatusView::new(&leader, &members);
        let json = serde_json::to_value(&view).map(|v| v.to_string());
        assert_eq!(
            json.ok().as_deref(),
            Some(concat!(
                r#"{"answered_by":1,"committed_index":9,"from_leader":true,"leader_addr":"a:1","leader_id":1,"#,
                r#""members":[{"addr":"a:1","applied_index":9,"error":null,"id":1,"last_log_index":9,"matched_index":9,"snapshot_index":0,"state":"leader","term":2,"voter":true},"#,
                r#"{"addr":"b:2","applied_index":null,"error":"UNAVAILABLE: down","id":2,"last_log_index":null,"matched_index":null,"snapshot_index":null,"state":null,"term":null,"voter":false}],"#,
                r#""quorum_acked_ms_ago":null,"removed_at_index":null,"revision":5,"term":2}"#
            ))
        );
        assert_eq!(
            view.text(),
            concat!(
                "leader: node 1 at a:1, term 2, committed 9, revision 5\n",
                "ID  ADDRESS  ROLE     STATE        TERM  LAST LOG  APPLIED  MATCHED\n",
                "1   a:1      voter    leader       2     9         9        9\n",
                "2   b:2      learner  unreachable  -     -         -        -\n",
                "node 2: UNAVAILABLE: down\n",
            )
        );
    }
}
