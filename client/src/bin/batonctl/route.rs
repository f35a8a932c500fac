//! `batonctl route`: key → partition → owner and fencing token.

use baton_client::proto::route_request::Locator;
use baton_client::{AdminClient, Consistency};
use serde::Serialize;

use crate::output::{non_empty, reply, Reply, View};

#[derive(clap::Args)]
pub struct RouteArgs {
    group: String,
    /// The key, hashed with the group's key hash (XXH3-64, seed 0).
    key: Option<String>,
    /// Route an explicit 64-bit hash key instead of a key.
    #[arg(long, conflicts_with_all = ["key", "partition"])]
    hash: Option<u64>,
    /// Look up a partition directly.
    #[arg(long, conflicts_with = "key")]
    partition: Option<u32>,
    /// Read this node's state without asking the leader.
    #[arg(long)]
    serializable: bool,
}

pub async fn run(client: &mut AdminClient, args: RouteArgs) -> anyhow::Result<Box<dyn Reply>> {
    let locator = match (args.key, args.hash, args.partition) {
        (Some(key), None, None) => Locator::Key(key),
        (None, Some(h), None) => Locator::Hash(h),
        (None, None, Some(p)) => Locator::Partition(p),
        _ => anyhow::bail!("give a KEY, --hash H or --partition P"),
    };
    let consistency = Consistency::serializable_if(args.serializable);
    let r = client.route(&args.group, locator, consistency).await?;
    let owner = non_empty(&r.owner);
    Ok(reply(RouteView {
        revision: r.revision,
        partition: r.partition,
        token: owner.is_some().then_some(r.token),
        owner,
        moving: r.moving,
        moving_to: non_empty(&r.moving_to),
    }))
}

/// Where a key goes; `owner` and `token` are null while the partition is
/// unassigned, `moving_to` while a move's target is undecided.
#[derive(Serialize)]
struct RouteView {
    revision: u64,
    partition: u32,
    owner: Option<String>,
    token: Option<u64>,
    moving: bool,
    moving_to: Option<String>,
}

impl View for RouteView {
    fn text(&self) -> String {
        let (partition, revision) = (self.partition, self.revision);
        let (Some(owner), Some(token)) = (&self.owner, self.token) else {
            return format!("partition {partition}: unassigned (revision {revision})\n");
        };
        let moving = if self.moving {
            let to = self.moving_to.as_deref().unwrap_or("(undecided)");
            format!(", moving to {to}")
        } else {
            String::new()
        };
        format!("partition {partition}: {owner} with token {token}{moving} (revision {revision})\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unassigned partition: owner, token and moving_to are null, not
    /// absent.
    #[test]
    fn unassigned_routes_print_nulls() {
        let view = RouteView {
            revision: 4,
            partition: 7,
            owner: None,
            token: None,
            moving: false,
            moving_to: None,
        };
        assert_eq!(
            serde_json::to_value(&view)
                .map(|v| v.to_string())
                .ok()
                .as_deref(),
            Some(
                r#"{"moving":false,"moving_to":null,"owner":null,"partition":7,"revision":4,"token":null}"#
            )
        );
        assert_eq!(view.text(), "partition 7: unassigned (revision 4)\n");
    }
}
