//! Where a leader-only request is served: here, or on the leader, reached
//! over one cached channel. The forwarding itself (a gRPC call) is the API's.

use tonic::transport::Channel;

use super::{ClusterError, Leader, Metrics};

/// Set on a request that one node forwarded to the node it believes leads.
pub const FORWARDED_BY: &str = "baton-forwarded-by";

/// Where a leader-only request is served.
pub enum Route {
    Local,
    /// A channel to the leader to send the request on.
    Forward(Channel),
}

impl Leader {
    /// Decides whether this node serves a leader-only request or forwards it.
    /// A forwarded request (`forwarded`: it carries [`FORWARDED_BY`]) is
    /// never forwarded again, so a stale view of who leads cannot make a
    /// request bounce between nodes.
    pub fn route(&self, forwarded: bool) -> Result<Route, ClusterError> {
        self.check_not_removed()?;
        let metrics = self.metrics();
        if metrics.current_leader == Some(self.id) {
            // A leader that has committed its own removal keeps leading until its
            // next tick; openraft 0.9 must not be asked to propose in that window
            // (it trips a debug assertion). Send the caller elsewhere.
            if !metrics
                .membership_config
                .membership()
                .voter_ids()
                .any(|v| v == self.id)
            {
                return Err(ClusterError::SteppingDown);
            }
            return Ok(Route::Local);
        }
        if forwarded {
            return Err(ClusterError::NotLeader(Self::known_leader(&metrics)));
        }
        self.leader_channel(&metrics).map(Route::Forward)
    }

    /// A channel to the leader `metrics` name.
    pub(super) fn leader_channel(&self, metrics: &Metrics) -> Result<Channel, ClusterError> {
        let Some((leader_id, leader_addr)) = Self::known_leader(metrics) else {
            return Err(ClusterError::NotLeader(None));
        };
        let mut cached = self.channel.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((addr, channel)) = &*cached {
            if *addr == leader_addr {
                return Ok(channel.clone());
            }
        }
        let channel = self
            .dialer
            .endpoint(&leader_addr)
            .map_err(|e| ClusterError::LeaderAddress {
                id: leader_id,
                addr: leader_addr.clone(),
                reason: e.to_string(),
            })?
            .connect_lazy();
        *cached = Some((leader_addr, channel.clone()));
        Ok(channel)
    }

    /// Resolves when the leader this node knows changes from the one it
    /// knows now: a call forwarded to a leader that froze or was cut off is
    /// abandoned as soon as the node hears of its successor.
    pub fn leader_change(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut metrics = self.raft.metrics();
        let leader = metrics.borrow().current_leader;
        async move {
            // An error means Raft stopped: the leader is gone too.
            let _ = metrics.wait_for(|m| m.current_leader != leader).await;
        }
    }
}
