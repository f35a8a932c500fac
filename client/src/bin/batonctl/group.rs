//! `batonctl group`: named pools of partitions and workers, and their
//! settings.

use baton_client::proto::{self as pb, GroupResponse};
use baton_client::{AdminClient, Consistency};
use clap::Subcommand;
use serde::Serialize;

use crate::output::{reply, word, Reply, Table, View};

/// Group settings; unset ones take their defaults (create) or keep their value (update).
#[derive(clap::Args)]
pub struct GroupSettings {
    /// Partition count, 1 to 65536 (create only; `group split` doubles it).
    #[arg(long)]
    partitions: Option<u32>,
    /// How long an owner has to release a revoked partition (default 30000).
    #[arg(long, value_name = "MS")]
    handoff_timeout_ms: Option<u64>,
    /// Handoffs in flight at once, 1 to 65536 (default 65536).
    #[arg(long)]
    max_in_flight: Option<u32>,
    /// Lease TTL for workers that ask for none, 1000 to 300000 (default 10000).
    #[arg(long, value_name = "MS")]
    default_ttl_ms: Option<u64>,
    /// How long an expired worker's partitions stay reserved for it (default 0).
    #[arg(long, value_name = "MS")]
    rejoin_grace_ms: Option<u64>,
    /// How long tombstones are kept (default 7 days).
    #[arg(long, value_name = "MS")]
    tombstone_ttl_ms: Option<u64>,
}

impl GroupSettings {
    fn to_proto(&self) -> pb::GroupConfig {
        pb::GroupConfig {
            partitions: self.partitions,
            handoff_timeout_ms: self.handoff_timeout_ms,
            max_in_flight: self.max_in_flight,
            default_ttl_ms: self.default_ttl_ms,
            rejoin_grace_ms: self.rejoin_grace_ms,
            tombstone_ttl_ms: self.tombstone_ttl_ms,
        }
    }
}

#[derive(Subcommand)]
pub enum GroupCommand {
    /// Create a group.
    Create {
        group: String,
        #[command(flatten)]
        settings: GroupSettings,
        /// Succeed if the group exists already, leaving its settings as they
        /// are (for setup scripts that run more than once).
        #[arg(long)]
        if_missing: bool,
    },
    /// List groups.
    List {
        #[arg(long)]
        serializable: bool,
    },
    /// Show a group's settings and revision.
    Get {
        group: String,
        #[arg(long)]
        serializable: bool,
    },
    /// Change settings; --if-revision is the config revision you read (`group get`).
    Update {
        group: String,
        #[arg(long)]
        if_revision: u64,
        #[command(flatten)]
        settings: GroupSettings,
    },
    /// Delete a group and everything in it. Refused while workers have
    /// sessions in it (drain them first) unless --force.
    Delete {
        group: String,
        /// Delete even with live sessions: the group stops granting and
        /// renewing their leases at once, and goes when the last one has
        /// left or expired (within one lease TTL). Until then a group of the
        /// same name cannot be created, so no old worker can still hold a
        /// partition of a new group.
        #[arg(long)]
        force: bool,
    },
    /// Double the partition count; each partition's children keep its owner.
    Split {
        group: String,
        #[arg(long)]
        if_revision: u64,
    },
    /// Stop rebalancing the group (moves by hand still work).
    Freeze { group: String },
    /// Resume rebalancing.
    Unfreeze { group: String },
    /// Choose how the group is balanced: by partition count (the default),
    /// or by the load its workers report on their keepalives (SDK
    /// `report_load`; `worker join --load`), as load ÷ capacity. Unset
    /// rules take their defaults.
    Balance {
        group: String,
        #[arg(long, value_enum)]
        by: BalanceBy,
        #[command(flatten)]
        rules: LoadRulesArgs,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum BalanceBy {
    Count,
    Load,
}

/// The load rules (`group balance --by load`).
#[derive(clap::Args)]
pub struct LoadRulesArgs {
    /// Act when the busiest worker exceeds the mean utilisation by this
    /// factor, 1.0 to 10.0 (default 1.10); a round aims half-way into the band.
    #[arg(long)]
    threshold: Option<f64>,
    /// Partitions moved per round to balance, at most (default 4096).
    #[arg(long)]
    max_moves: Option<u32>,
    /// Share of the group's load moved per round, at most, 0.001 to 1.0
    /// (default 0.05).
    #[arg(long)]
    max_load_share: Option<f64>,
    /// A partition that moved is not moved to balance again within this
    /// (default 60000).
    #[arg(long, value_name = "MS")]
    cooldown_ms: Option<u64>,
    /// Handoffs in flight per worker, given or received (default 4).
    #[arg(long)]
    max_moves_per_worker: Option<u32>,
    /// The utilisation the scaling recommendation sizes the group for,
    /// 0.001 to 1.0 (default 0.70).
    #[arg(long)]
    target_utilisation: Option<f64>,
}

/// A factor as thousandths (the protocol's unit); the server checks the range.
fn milli(name: &str, value: Option<f64>) -> anyhow::Result<Option<u32>> {
    match value {
        None => Ok(None),
        Some(v) if v.is_finite() && (0.0..=4_000_000.0).contains(&v) => {
            Ok(Some((v * 1000.0).round() as u32))
        }
        Some(v) => anyhow::bail!("--{name} {v} is not a usable factor"),
    }
}

impl LoadRulesArgs {
    fn to_proto(&self) -> anyhow::Result<pb::LoadRules> {
        Ok(pb::LoadRules {
            threshold_milli: milli("threshold", self.threshold)?,
            max_moves: self.max_moves,
            max_load_milli: milli("max-load-share", self.max_load_share)?,
            cooldown_ms: self.cooldown_ms,
            max_moves_per_worker: self.max_moves_per_worker,
            target_utilisation_milli: milli("target-utilisation", self.target_utilisation)?,
        })
    }
}

pub async fn run(
    client: &mut AdminClient,
    command: GroupCommand,
) -> anyhow::Result<Box<dyn Reply>> {
    let shown = match command {
        GroupCommand::Create {
            group,
            settings,
            if_missing,
        } => match client.create_group(&group, settings.to_proto()).await {
            Err(e) if if_missing && e.code() == Some(tonic::Code::AlreadyExists) => {
                client.get_group(&group, Consistency::Linearizable).await?
            }
            other => other?,
        },
        GroupCommand::Get {
            group,
            serializable,
        } => {
            client
                .get_group(&group, Consistency::serializable_if(serializable))
                .await?
        }
        GroupCommand::Update {
            group,
            if_revision,
            settings,
        } => {
            client
                .update_group(&group, settings.to_proto(), if_revision)
                .await?
        }
        GroupCommand::Split { group, if_revision } => {
            client.split_group(&group, if_revision).await?
        }
        GroupCommand::Freeze { group } => client.set_frozen(&group, true).await?,
        GroupCommand::Unfreeze { group } => client.set_frozen(&group, false).await?,
        GroupCommand::Balance { group, by, rules } => {
            let rules = match by {
                BalanceBy::Count => None,
                BalanceBy::Load => Some(rules.to_proto()?),
            };
            client.set_load_rules(&group, rules).await?
        }
        GroupCommand::Delete { group, force } => {
            let r = client.delete_group(&group, force).await?;
            return Ok(reply(DeleteView {
                group,
                deleted: r.deleted,
                revision: r.revision,
            }));
        }
        GroupCommand::List { serializable } => {
            let r = client
                .list_groups(Consistency::serializable_if(serializable))
                .await?;
            let groups = r
                .groups
                .iter()
                .map(|g| GroupView::new(r.revision, g))
                .collect();
            return Ok(reply(GroupListView {
                revision: r.revision,
                groups,
            }));
        }
    };
    Ok(reply(GroupView::of(&shown)))
}

/// A group's settings and counts, as of `revision`.
#[derive(Serialize)]
struct GroupView {
    name: String,
    revision: u64,
    config_revision: u64,
    partitions: Option<u32>,
    handoff_timeout_ms: Option<u64>,
    max_in_flight: Option<u32>,
    default_ttl_ms: Option<u64>,
    rejoin_grace_ms: Option<u64>,
    tombstone_ttl_ms: Option<u64>,
    key_hash: String,
    frozen: bool,
    workers: u32,
    draining_workers: u32,
    tombstones: u64,
    /// "count" or "load".
    balance: &'static str,
    /// The load rules, when balanced by load.
    #[serde(skip_serializing_if = "Option::is_none")]
    load_rules: Option<LoadRulesView>,
}

#[derive(Serialize)]
struct LoadRulesView {
    threshold: f64,
    max_moves: u32,
    max_load_share: f64,
    cooldown_ms: u64,
    max_moves_per_worker: u32,
    target_utilisation: f64,
}

impl LoadRulesView {
    fn new(r: &pb::LoadRules) -> Self {
        let factor = |m: Option<u32>| f64::from(m.unwrap_or_default()) / 1000.0;
        Self {
            threshold: factor(r.threshold_milli),
            max_moves: r.max_moves.unwrap_or_default(),
            max_load_share: factor(r.max_load_milli),
            cooldown_ms: r.cooldown_ms.unwrap_or_default(),
            max_moves_per_worker: r.max_moves_per_worker.unwrap_or_default(),
            target_utilisation: factor(r.target_utilisation_milli),
        }
    }
}

impl GroupView {
    fn new(revision: u64, g: &pb::Group) -> Self {
        let c = g.config.unwrap_or_default();
        Self {
            name: g.name.clone(),
            revision,
            config_revision: g.config_revision,
            partitions: c.partitions,
            handoff_timeout_ms: c.handoff_timeout_ms,
            max_in_flight: c.max_in_flight,
            default_ttl_ms: c.default_ttl_ms,
            rejoin_grace_ms: c.rejoin_grace_ms,
            tombstone_ttl_ms: c.tombstone_ttl_ms,
            key_hash: word(g.key_hash().as_str_name(), "KEY_HASH_"),
            frozen: g.frozen,
            workers: g.workers,
            draining_workers: g.draining_workers,
            tombstones: g.tombstones,
            balance: if g.load_rules.is_some() {
                "load"
            } else {
                "count"
            },
            load_rules: g.load_rules.as_ref().map(LoadRulesView::new),
        }
    }

    /// The group a create, get, update, split or freeze answered with.
    fn of(shown: &GroupResponse) -> Self {
        Self::new(shown.revision, &shown.group.clone().unwrap_or_default())
    }
}

impl View for GroupView {
    /// One `field value` line per JSON field, in the JSON's (alphabetical)
    /// order, strings unquoted: the text and the JSON list the same fields.
    fn text(&self) -> String {
        let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(self) else {
            return String::new();
        };
        fields
            .iter()
            .map(|(k, v)| {
                let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                format!("{k:<18} {v}\n")
            })
            .collect()
    }
}

#[derive(Serialize)]
struct GroupListView {
    revision: u64,
    groups: Vec<GroupView>,
}

impl View for GroupListView {
    fn text(&self) -> String {
        let mut table = Table::new(&[
            "NAME",
            "PARTITIONS",
            "WORKERS",
            "FROZEN",
            "TOMBSTONES",
            "CONFIG REVISION",
        ]);
        for g in &self.groups {
            table.row(vec![
                g.name.clone(),
                g.partitions.unwrap_or_default().to_string(),
                g.workers.to_string(),
                if g.frozen { "yes" } else { "no" }.into(),
                g.tombstones.to_string(),
                g.config_revision.to_string(),
            ]);
        }
        table.to_string()
    }
}

#[derive(Serialize)]
struct DeleteView {
    group: String,
    deleted: bool,
    revision: u64,
}

impl View for DeleteView {
    fn text(&self) -> String {
        let (group, revision) = (&self.group, self.revision);
        if self.deleted {
            format!("group {group} deleted (revision {revision})\n")
        } else {
            format!(
                "group {group} is being deleted (revision {revision}): its workers' leases are no longer renewed; it goes when the last session has left or expired\n"
            )
        }
    }
}
