//! `batonctl tombstone`: deletion markers: put (optionally as a barrier),
//! check, list.

use baton_client::proto as pb;
use baton_client::{AdminClient, Consistency};
use clap::Subcommand;
use serde::Serialize;

use crate::assignment::parse_ranges;
use crate::output::{non_empty, reply, Reply, Table, View};

#[derive(Subcommand)]
pub enum TombstoneCommand {
    /// Mark a key deleted (idempotent).
    Put {
        group: String,
        key: String,
        /// Keep it this long instead of the group's tombstone TTL.
        #[arg(long, value_name = "MS")]
        ttl_ms: Option<u64>,
        /// Put it on this partition instead of the key's.
        #[arg(long)]
        partition: Option<u32>,
        /// Barrier: return only once the partition's owner has acknowledged
        /// the tombstone or lost its grant.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits (default 30000).
        #[arg(long, value_name = "MS", requires = "wait")]
        wait_timeout_ms: Option<u64>,
    },
    /// Which of these keys are deleted.
    Check {
        group: String,
        #[arg(required = true)]
        keys: Vec<String>,
        #[arg(long)]
        serializable: bool,
    },
    /// Tombstones on a range of partitions, in key order, one page.
    List {
        group: String,
        /// e.g. 0-15 (default: all).
        #[arg(long)]
        partitions: Option<String>,
        /// At most this many (the server's page limit is 10,000).
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        /// Start after this key: the next page of an earlier listing.
        #[arg(long, value_name = "KEY")]
        after: Option<String>,
        #[arg(long)]
        serializable: bool,
    },
}

pub async fn run(
    client: &mut AdminClient,
    command: TombstoneCommand,
) -> anyhow::Result<Box<dyn Reply>> {
    Ok(match command {
        TombstoneCommand::Put {
            group,
            key,
            ttl_ms,
            partition,
            wait,
            wait_timeout_ms,
        } => {
            let mut request = pb::PutTombstoneRequest {
                group,
                key: key.clone(),
                locator: partition.map(pb::put_tombstone_request::Locator::Partition),
                ttl_ms,
                wait_timeout_ms,
                wait: 0,
            };
            if wait {
                request.set_wait(pb::Wait::Acknowledged);
            }
            let r = client.put_tombstone(request).await?;
            reply(PutView {
                barrier: (r.barrier() != pb::Barrier::None).then(|| r.barrier().as_str_name()),
                barrier_meaning: barrier_meaning(r.barrier()),
                key,
                revision: r.revision,
                partition: r.partition,
                owner: non_empty(&r.owner),
            })
        }
        TombstoneCommand::Check {
            group,
            keys,
            serializable,
        } => {
            let r = client
                .check_tombstones(&group, keys, Consistency::serializable_if(serializable))
                .await?;
            let results = r
                .results
                .into_iter()
                .map(|c| CheckedView {
                    key: c.key,
                    deleted: c.deleted,
                    tombstone: c.tombstone.map(TombstoneView::from),
                })
                .collect();
            reply(CheckView {
                revision: r.revision,
                results,
            })
        }
        TombstoneCommand::List {
            group,
            partitions,
            limit,
            after,
            serializable,
        } => {
            let partitions = match partitions {
                Some(text) => {
                    let mut ranges = parse_ranges(&text)?;
                    if ranges.len() != 1 {
                        anyhow::bail!("--partitions takes one range, like 0-15");
                    }
                    ranges.pop()
                }
                None => None,
            };
            let r = client
                .list_tombstones(pb::ListTombstonesRequest {
                    group,
                    partitions,
                    limit,
                    serializable,
                    after_key: after.unwrap_or_default(),
                })
                .await?;
            reply(ListView {
                revision: r.revision,
                truncated: r.truncated,
                next_key: r.next_key,
                tombstones: r.tombstones.into_iter().map(TombstoneView::from).collect(),
            })
        }
    })
}

/// What a barrier put's answer means, in words; `None` when it was not one.
fn barrier_meaning(barrier: pb::Barrier) -> Option<&'static str> {
    match barrier {
        pb::Barrier::None => None,
        pb::Barrier::Acknowledged => Some("acknowledged by the owner"),
        pb::Barrier::NoOwner => Some("no owner to wait for"),
        pb::Barrier::OwnerReleased => Some("the owner released the partition"),
        pb::Barrier::OwnerExpired => Some("the owner's lease ran out"),
        pb::Barrier::OwnerLeft => Some("the owner left"),
        pb::Barrier::GroupDeleted => Some("the group was deleted"),
    }
}

/// A tombstone put; `barrier` is how a `--wait` ended (its proto name).
#[derive(Serialize)]
struct PutView {
    key: String,
    revision: u64,
    partition: u32,
    barrier: Option<&'static str>,
    #[serde(skip)]
    barrier_meaning: Option<&'static str>,
    owner: Option<String>,
}

impl View for PutView {
    fn text(&self) -> String {
        let owner = self
            .owner
            .as_ref()
            .map(|o| format!(" ({o})"))
            .unwrap_or_default();
        let barrier = self
            .barrier_meaning
            .map(|b| format!("; {b}{owner}"))
            .unwrap_or_default();
        format!(
            "{}: deleted at revision {} (partition {}){barrier}\n",
            self.key, self.revision, self.partition
        )
    }
}

#[derive(Serialize)]
struct TombstoneView {
    key: String,
    partition: u32,
    revision: u64,
    expires_at_ms: u64,
}

impl From<pb::TombstoneInfo> for TombstoneView {
    fn from(t: pb::TombstoneInfo) -> Self {
        Self {
            key: t.key,
            partition: t.partition,
            revision: t.revision,
            expires_at_ms: t.expires_at_ms,
        }
    }
}

#[derive(Serialize)]
struct CheckView {
    revision: u64,
    results: Vec<CheckedView>,
}

#[derive(Serialize)]
struct CheckedView {
    key: String,
    deleted: bool,
    tombstone: Option<TombstoneView>,
}

impl View for CheckView {
    fn text(&self) -> String {
        let mut table = Table::new(&["KEY", "DELETED", "PARTITION", "REVISION"]);
        for c in &self.results {
            let t = c.tombstone.as_ref();
            table.row(vec![
                c.key.clone(),
                if c.deleted { "yes" } else { "no" }.into(),
                t.map_or("-".into(), |t| t.partition.to_string()),
                t.map_or("-".into(), |t| t.revision.to_string()),
            ]);
        }
        table.to_string()
    }
}

/// One page; `next_key` is where the next starts ("" after the last).
#[derive(Serialize)]
struct ListView {
    revision: u64,
    truncated: bool,
    next_key: String,
    tombstones: Vec<TombstoneView>,
}

impl View for ListView {
    fn text(&self) -> String {
        let mut table = Table::new(&["KEY", "PARTITION", "REVISION", "EXPIRES AT (ms)"]);
        for t in &self.tombstones {
            table.row(vec![
                t.key.clone(),
                t.partition.to_string(),
                t.revision.to_string(),
                t.expires_at_ms.to_string(),
            ]);
        }
        let mut text = table.to_string();
        if !self.next_key.is_empty() {
            text.push_str(&format!(
                "(more follow: list again with --after {:?})\n",
                self.next_key
            ));
        }
        text
    }
}
