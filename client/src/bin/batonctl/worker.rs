//! `batonctl worker`: a group's workers, draining and evicting them, and
//! `worker join`, a real SDK worker (`join.rs`).

use crate::load_spec::LoadSpec;
use std::collections::HashMap;
use std::time::Duration;

use baton_client::{AdminClient, Consistency, Transport};
use clap::Subcommand;
use serde::Serialize;

use crate::join;
use crate::output::{reply, word, Reply, Table, View};

#[derive(Subcommand)]
pub enum WorkerCommand {
    /// Workers with their session, state, weight and partition count.
    List {
        group: String,
        #[arg(long)]
        serializable: bool,
    },
    /// Graceful leave on the worker's behalf: hand off its partitions, then close its session.
    Drain { group: String, worker: String },
    /// Stop renewing the worker's lease: its session ends, and its partitions
    /// move, once the lease has run out.
    Evict { group: String, worker: String },
    /// Run a real worker (the SDK) that prints each event as a JSON line:
    /// joined, assigned, revoked, released, tombstone, lease_lost, resharded,
    /// exit; each with `unix_ms`, partitions as [[first, last], ...], and the
    /// token or revision. It releases revoked partitions after --drain-ms,
    /// acknowledges tombstones as it prints them, and on SIGTERM or Ctrl-C
    /// hands everything off, then exits 0.
    ///
    ///   batonctl worker join mail-sync --id w1 --drain-ms 500
    #[command(verbatim_doc_comment)]
    Join {
        group: String,
        /// Worker id [default: this host's name].
        #[arg(long)]
        id: Option<String>,
        /// Pretend to drain a revoked partition for this long, then release it.
        #[arg(long, default_value_t = 0, value_name = "MS")]
        drain_ms: u64,
        /// Share of the partitions relative to the other workers [default: 1].
        #[arg(long)]
        weight: Option<u32>,
        /// Lease TTL [default: the group's]. A dead worker's partitions move after about this long.
        #[arg(long, value_name = "MS")]
        ttl_ms: Option<u64>,
        /// After SIGTERM/SIGINT, leave without waiting for drains after this long.
        #[arg(long, default_value_t = 25_000, value_name = "MS")]
        grace_ms: u64,
        /// A label, KEY=VALUE; repeat for more.
        #[arg(long = "label", value_parser = join::label, value_name = "KEY=VALUE")]
        labels: Vec<(String, String)>,
        /// Simulate load and report it every second for the partitions held
        /// (for a group balanced by load: `group balance GROUP --by load`):
        /// N (every partition), zipf:S[:SEED] (the group's partitions ranked
        /// by SEED, rank r carrying 1000000 / r^S; the same on every worker),
        /// or file:PATH (lines `PARTITION LOAD` or `FIRST-LAST LOAD`, read again
        /// before every report: edit it to shift the load).
        #[arg(long, value_name = "SPEC", value_parser = LoadSpec::parse)]
        load: Option<LoadSpec>,
        /// What this worker can carry, in the unit of --load.
        #[arg(long)]
        capacity: Option<u64>,
    },
}

impl WorkerCommand {
    /// `worker join`'s settings (given the cluster to join), or the command
    /// back if it is an admin call: a worker needs no admin client and
    /// prints a stream of its own.
    pub fn into_join(
        self,
        endpoints: &[String],
        transport: &Transport,
    ) -> Result<join::JoinArgs, Self> {
        match self {
            WorkerCommand::Join {
                group,
                id,
                drain_ms,
                weight,
                ttl_ms,
                grace_ms,
                labels,
                load,
                capacity,
            } => Ok(join::JoinArgs {
                endpoints: endpoints.to_vec(),
                transport: transport.clone(),
                group,
                id,
                drain: Duration::from_millis(drain_ms),
                weight,
                ttl: ttl_ms.map(Duration::from_millis),
                grace: Duration::from_millis(grace_ms),
                labels,
                load,
                capacity,
            }),
            admin => Err(admin),
        }
    }
}

pub async fn run(
    client: &mut AdminClient,
    command: WorkerCommand,
) -> anyhow::Result<Box<dyn Reply>> {
    let r = match command {
        WorkerCommand::List {
            group,
            serializable,
        } => {
            let r = client
                .list_workers(&group, Consistency::serializable_if(serializable))
                .await?;
            let workers = r
                .workers
                .into_iter()
                .map(|w| WorkerView {
                    state: word(w.state().as_str_name(), "WORKER_STATE_"),
                    id: w.id,
                    session: w.session,
                    weight: w.weight,
                    ttl_ms: w.ttl_ms,
                    labels: w.labels,
                    partitions: w.partitions,
                })
                .collect();
            return Ok(reply(WorkerListView {
                revision: r.revision,
                workers,
            }));
        }
        WorkerCommand::Drain { group, worker } => client.drain_worker(&group, &worker).await?,
        WorkerCommand::Evict { group, worker } => client.evict_worker(&group, &worker).await?,
        WorkerCommand::Join { .. } => {
            anyhow::bail!("worker join runs a worker, not an admin call (WorkerCommand::into_join)")
        }
    };
    Ok(reply(OutcomeView {
        revision: r.revision,
        outcome: r.outcome,
    }))
}

#[derive(Serialize)]
struct WorkerListView {
    revision: u64,
    workers: Vec<WorkerView>,
}

#[derive(Serialize)]
struct WorkerView {
    id: String,
    session: u64,
    state: String,
    weight: u32,
    ttl_ms: u64,
    labels: HashMap<String, String>,
    partitions: u32,
}

impl View for WorkerListView {
    fn text(&self) -> String {
        let mut table = Table::new(&[
            "WORKER",
            "STATE",
            "WEIGHT",
            "PARTITIONS",
            "TTL (ms)",
            "SESSION",
        ]);
        for w in &self.workers {
            table.row(vec![
                w.id.clone(),
                w.state.clone(),
                w.weight.to_string(),
                w.partitions.to_string(),
                w.ttl_ms.to_string(),
                w.session.to_string(),
            ]);
        }
        table.to_string()
    }
}

/// What a drain or an eviction did.
#[derive(Serialize)]
struct OutcomeView {
    revision: u64,
    outcome: String,
}

impl View for OutcomeView {
    fn text(&self) -> String {
        format!("{}\n", self.outcome)
    }
}
