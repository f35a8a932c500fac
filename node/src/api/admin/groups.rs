//! Groups: creating, reading, updating, splitting, freezing and deleting.

use std::time::Duration;

use baton_proto::v1 as pb;
use tonic::Status;

use crate::api::{convert, group_not_found};
use crate::cluster::Leader;
use crate::cluster::LOAD_BALANCING;
use crate::domain::command::{
    CreateGroup, DeleteGroup, SetFrozen, SetLoadRules, SplitGroup, UpdateGroup,
};
use crate::domain::{Change, Command, GroupConfig};

pub struct Groups {
    pub(super) leader: Leader,
}

/// How long `SetLoadRules` waits for every member's features to be known.
const FEATURES_PATIENCE: Duration = Duration::from_secs(5);

impl Groups {
    /// The group as this node (the leader, just after a write) has it.
    fn group_response(&self, revision: u64, name: &str) -> Result<pb::GroupResponse, Status> {
        let group = self
            .leader
            .state_machine()
            .read(|s| convert::group_of(s, name));
        let group = group.ok_or_else(|| group_not_found(name))?;
        Ok(pb::GroupResponse {
            revision,
            group: Some(group),
        })
    }

    pub async fn create(&self, r: pb::CreateGroupRequest) -> Result<pb::GroupResponse, Status> {
        let config = convert::config(GroupConfig::default(), r.config.as_ref());
        let committed = self
            .leader
            .propose(Command::CreateGroup(CreateGroup {
                group: r.group.clone(),
                config,
            }))
            .await?;
        self.group_response(committed.revision, &r.group)
    }

    pub async fn get(&self, r: pb::GetGroupRequest) -> Result<pb::GroupResponse, Status> {
        let (revision, group) = self
            .leader
            .read(r.serializable, |s| {
                (s.revision, convert::group_of(s, &r.group))
            })
            .await?;
        let group = group.ok_or_else(|| group_not_found(&r.group))?;
        Ok(pb::GroupResponse {
            revision,
            group: Some(group),
        })
    }

    pub async fn list(&self, r: pb::ListGroupsRequest) -> Result<pb::ListGroupsResponse, Status> {
        let (revision, groups) = self
            .leader
            .read(r.serializable, |s| {
                (
                    s.revision,
                    s.groups
                        .keys()
                        .filter_map(|name| convert::group_of(s, name))
                        .collect(),
                )
            })
            .await?;
        Ok(pb::ListGroupsResponse { revision, groups })
    }

    pub async fn update(&self, r: pb::UpdateGroupRequest) -> Result<pb::GroupResponse, Status> {
        require_revision(r.if_revision)?;
        // The compare-and-set on `if_revision` makes reading the current config
        // here safe: if it changes before the update commits, the update fails.
        let current = self
            .leader
            .state_machine()
            .read(|s| s.groups.get(&r.group).map(|g| g.config.clone()));
        let current = current.ok_or_else(|| group_not_found(&r.group))?;
        let config = convert::config(current, r.config.as_ref());
        let command = Command::UpdateGroup(UpdateGroup {
            group: r.group.clone(),
            config,
            expected_revision: r.if_revision,
        });
        let committed = self.leader.propose(command).await?;
        self.group_response(committed.revision, &r.group)
    }

    pub async fn delete(
        &self,
        r: pb::DeleteGroupRequest,
    ) -> Result<pb::DeleteGroupResponse, Status> {
        let command = Command::DeleteGroup(DeleteGroup {
            group: r.group,
            force: r.force,
        });
        let committed = self.leader.propose(command).await?;
        let deleted = committed
            .events
            .iter()
            .any(|e| matches!(e.change, Change::GroupDeleted));
        Ok(pb::DeleteGroupResponse {
            revision: committed.revision,
            deleted,
        })
    }

    pub async fn split(&self, r: pb::SplitGroupRequest) -> Result<pb::GroupResponse, Status> {
        require_revision(r.if_revision)?;
        let command = Command::SplitGroup(SplitGroup {
            group: r.group.clone(),
            expected_revision: r.if_revision,
        });
        let committed = self.leader.propose(command).await?;
        self.group_response(committed.revision, &r.group)
    }

    pub async fn set_load_rules(
        &self,
        r: pb::SetLoadRulesRequest,
    ) -> Result<pb::GroupResponse, Status> {
        // A member that does not know load rules could not read the entry.
        // Members are asked in the background (again every 2 s): a cluster
        // that just started may not have answered yet.
        let deadline = tokio::time::Instant::now() + FEATURES_PATIENCE;
        while !self.leader.members_have(LOAD_BALANCING) {
            if tokio::time::Instant::now() >= deadline {
                return Err(Status::failed_precondition(
                    "not every member has said it runs a baton-node that reads load rules; upgrade every member (or bring it back if it is down), then try again",
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let rules = (!r.by_count).then(|| convert::load_rules(r.rules.as_ref()));
        let command = Command::SetLoadRules(SetLoadRules {
            group: r.group.clone(),
            rules,
        });
        let committed = self.leader.propose(command).await?;
        self.group_response(committed.revision, &r.group)
    }

    pub async fn set_frozen(&self, r: pb::SetFrozenRequest) -> Result<pb::GroupResponse, Status> {
        let command = Command::SetFrozen(SetFrozen {
            group: r.group.clone(),
            frozen: r.frozen,
        });
        let committed = self.leader.propose(command).await?;
        self.group_response(committed.revision, &r.group)
    }
}

fn require_revision(revision: u64) -> Result<(), Status> {
    if revision == 0 {
        return Err(Status::invalid_argument(
            "if_revision is required: read the group's config_revision (`batonctl group get GROUP`) and pass it",
        ));
    }
    Ok(())
}
