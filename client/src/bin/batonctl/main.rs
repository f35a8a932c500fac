//! `batonctl`: the baton admin CLI.

use std::process::ExitCode;
use std::time::Duration;

use baton_client::proto::admin_client::AdminClient as AdminGrpc;
use baton_client::proto::tombstones_client::TombstonesClient;
use baton_client::proto::{self as pb, ClusterStatusResponse, Member, MembershipResponse};
use baton_client::{AdminClient, MemberStatus};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};

mod join;

/// batonctl: operate a baton cluster.
///
/// Every command takes --endpoints (any nodes of the cluster; the leader is found
/// through them) and --json for machine-readable output.
///
/// Examples:
///
///   batonctl cluster status
///
///   batonctl --endpoints 127.0.0.1:7401,127.0.0.1:7402 cluster add-node 4 127.0.0.1:7404 --promote
///
///   batonctl cluster remove-node 4
///
///   batonctl group create mail-sync --partitions 360
///
///   batonctl assignment show mail-sync
///
///   batonctl route mail-sync account-42
///
///   batonctl tombstone put mail-sync account-42
///
///   batonctl --tls-ca ca.pem --tls-cert me.pem --tls-key me.key --token-file token backup baton.bak
#[derive(Parser)]
#[command(name = "batonctl", version, verbatim_doc_comment)]
struct Cli {
    /// Nodes to talk to, HOST:PORT, comma-separated.
    #[arg(
        long,
        env = "BATON_ENDPOINTS",
        default_value = "127.0.0.1:7400",
        global = true
    )]
    endpoints: String,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Give up after this many seconds (retrying while no leader answers).
    #[arg(long, default_value_t = 10, global = true, value_name = "SECONDS")]
    timeout: u64,
    /// TLS: the CA certificate (PEM) that signed the nodes' certificates.
    /// Turns TLS on.
    #[arg(long, env = "BATON_TLS_CA", global = true, value_name = "FILE")]
    tls_ca: Option<std::path::PathBuf>,
    /// Mutual TLS: this client's certificate (PEM). A worker's must hold its
    /// worker id as a DNS name.
    #[arg(
        long,
        env = "BATON_TLS_CERT",
        global = true,
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<std::path::PathBuf>,
    /// Mutual TLS: the key of --tls-cert (PEM).
    #[arg(
        long,
        env = "BATON_TLS_KEY",
        global = true,
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<std::path::PathBuf>,
    /// The admin token, for calls that change the cluster, read from this
    /// file (the nodes' --admin-token).
    #[arg(long, env = "BATON_TOKEN_FILE", global = true, value_name = "FILE")]
    token_file: Option<std::path::PathBuf>,
    /// The admin token itself (prefer --token-file: flags show in `ps`).
    #[arg(
        long,
        env = "BATON_TOKEN",
        global = true,
        value_name = "TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The Raft cluster: members, leader, replication.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Groups: named pools of partitions and workers.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Who holds which partitions.
    #[command(subcommand)]
    Assignment(AssignmentCommand),
    /// Workers of a group.
    #[command(subcommand)]
    Worker(WorkerCommand),
    /// Key → partition → owner and fencing token.
    Route {
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
    },
    /// Deletion markers.
    #[command(subcommand)]
    Tombstone(TombstoneCommand),
    /// Write a backup of the whole state (groups, sessions, assignment,
    /// tombstones, event history) to FILE, as of now. Restore it by starting
    /// a new cluster with `baton-node --restore-from FILE`. Needs the admin
    /// token when the cluster has one.
    Backup {
        /// Where to write it; written to FILE.partial first, then renamed.
        file: std::path::PathBuf,
    },
    /// Print a group's events, one per line, until interrupted. Served by any
    /// node; moves to another endpoint and resumes if its node goes away.
    Watch {
        group: String,
        /// Only the events that concern this worker (its session, its
        /// partitions, tombstones on them, group changes).
        #[arg(long)]
        worker: Option<String>,
        /// First revision to print (default: from now).
        #[arg(long, value_name = "REV")]
        from: Option<u64>,
        /// Only these kinds, comma-separated: group, worker, granted, revoking,
        /// released, reserved, tombstone, tombstone-purged, tombstones-acked.
        #[arg(long, value_delimiter = ',', value_parser = parse_kind)]
        kinds: Vec<pb::EventKind>,
        /// Also print progress notifications (the revision the stream is at).
        #[arg(long)]
        progress: bool,
    },
}

fn parse_kind(kind: &str) -> Result<pb::EventKind, String> {
    use pb::EventKind as K;
    Ok(match kind {
        "group" => K::Group,
        "worker" => K::Worker,
        "granted" => K::Granted,
        "revoking" => K::Revoking,
        "released" => K::Released,
        "reserved" => K::Reserved,
        "tombstone" => K::Tombstone,
        "tombstone-purged" => K::TombstonePurged,
        "tombstones-acked" => K::TombstonesAcked,
        other => return Err(format!("{other:?} is not an event kind (group, worker, granted, revoking, released, reserved, tombstone, tombstone-purged, tombstones-acked)")),
    })
}

/// Group settings; unset ones take their defaults (create) or keep their value (update).
#[derive(clap::Args)]
struct GroupSettings {
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
enum GroupCommand {
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
}

#[derive(Subcommand)]
enum WorkerCommand {
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
    },
}

#[derive(Subcommand)]
enum AssignmentCommand {
    /// Partitions per worker (as ranges), handoffs in flight, unassigned partitions.
    Show {
        group: String,
        #[arg(long)]
        serializable: bool,
    },
    /// What the rebalancer would do now (changes nothing).
    Plan {
        group: String,
        #[arg(long)]
        serializable: bool,
    },
    /// Hand partitions to a worker by hand (held ones go through handoff).
    Move {
        group: String,
        /// Partitions, e.g. 0-119,240,300-359.
        #[arg(long)]
        partitions: String,
        /// The worker to receive them.
        #[arg(long)]
        to: String,
    },
}

#[derive(Subcommand)]
enum TombstoneCommand {
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

#[derive(Subcommand)]
enum ClusterCommand {
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

/// Calls `Client::method(request)` on the leader, retrying while no leader
/// answers; a server's refusal is returned as an error.
macro_rules! rpc {
    ($client:expr, $grpc:ident :: $method:ident, $request:expr) => {{
        let request = $request;
        $client
            .call(|ch| {
                let request = request.clone();
                async move { $grpc::new(ch).$method(request).await }
            })
            .await?
    }};
    // A read that is serializable when `$any` is true: any node answers it
    // from its own state, a minority node too.
    ($client:expr, $grpc:ident :: $method:ident, $request:expr, any = $any:expr) => {{
        let request = $request;
        let call = |ch| {
            let request = request.clone();
            async move { $grpc::new(ch).$method(request).await }
        };
        if $any {
            $client.call_any(call).await?
        } else {
            $client.call(call).await?
        }
    }};
}

/// What a bare connection error most likely means, given the TLS settings
/// used: tonic reports a TLS mismatch only as a protocol or transport error.
fn transport_hint(error: &str, tls: bool, identity: bool) -> Option<&'static str> {
    if !tls && error.contains("h2 protocol error") {
        return Some(
            "the nodes may require TLS: pass --tls-ca FILE (the CA that signed their certificates)",
        );
    }
    if tls && error.contains("transport error") {
        return Some(if identity {
            "check that --tls-ca signed the nodes' certificates, that they are valid for the endpoint's host, and that the nodes' CA signed --tls-cert"
        } else {
            "the nodes may require a client certificate (mutual TLS): pass --tls-cert FILE --tls-key FILE; or --tls-ca did not sign their certificates"
        });
    }
    None
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let (tls, identity) = (cli.tls_ca.is_some(), cli.tls_cert.is_some());
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("batonctl: {e}");
            // A TLS mismatch means no node ever answered; a connection
            // lost after answers (a node killed under a watch) is not one.
            let hint = (!baton_client::any_node_answered())
                .then(|| transport_hint(&e.to_string(), tls, identity))
                .flatten();
            if let Some(hint) = hint {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let endpoints = vec![cli.endpoints.clone()];
    let mut transport = baton_client::Transport::from_files(
        cli.tls_ca.as_deref(),
        cli.tls_cert.as_deref(),
        cli.tls_key.as_deref(),
        cli.token_file.as_deref(),
    )?;
    if let Some(token) = &cli.token {
        transport = transport.token(token)?;
    }
    if let Command::Worker(WorkerCommand::Join {
        group,
        id,
        drain_ms,
        weight,
        ttl_ms,
        grace_ms,
        labels,
    }) = cli.command
    {
        return join::join(join::JoinArgs {
            endpoints,
            transport,
            group,
            id,
            drain: Duration::from_millis(drain_ms),
            weight,
            ttl: ttl_ms.map(Duration::from_millis),
            grace: Duration::from_millis(grace_ms),
            labels,
        })
        .await;
    }
    let mut client = AdminClient::new(&endpoints, Duration::from_secs(cli.timeout))?
        .with_transport(transport.clone());
    match cli.command {
        Command::Cluster(ClusterCommand::Status) => {
            let (leader, members) = client.member_statuses().await?;
            if cli.json {
                print_json(&status_json(&leader, &members));
            } else {
                print_status(&leader, &members);
            }
        }
        Command::Cluster(ClusterCommand::AddNode { id, addr, promote }) => {
            let reply = client.add_node(id, &addr, promote).await?;
            let what = if promote {
                "added and promoted to voter"
            } else {
                "added as a learner"
            };
            print_membership(cli.json, &format!("node {id} {what}"), &reply);
        }
        Command::Cluster(ClusterCommand::Promote { id }) => {
            let reply = client.promote_node(id).await?;
            print_membership(cli.json, &format!("node {id} promoted to voter"), &reply);
        }
        Command::Cluster(ClusterCommand::RemoveNode { id }) => {
            let reply = client.remove_node(id).await?;
            print_membership(cli.json, &format!("node {id} removed"), &reply);
        }
        Command::Group(command) => group(&mut client, cli.json, command).await?,
        Command::Assignment(command) => assignment(&mut client, cli.json, command).await?,
        Command::Worker(command) => worker(&mut client, cli.json, command).await?,
        Command::Route {
            group,
            key,
            hash,
            partition,
            serializable,
        } => {
            let locator = match (key, hash, partition) {
                (Some(key), None, None) => pb::route_request::Locator::Key(key),
                (None, Some(h), None) => pb::route_request::Locator::Hash(h),
                (None, None, Some(p)) => pb::route_request::Locator::Partition(p),
                _ => anyhow::bail!("give a KEY, --hash H or --partition P"),
            };
            let request = pb::RouteRequest {
                group,
                locator: Some(locator),
                serializable,
            };
            let r = rpc!(client, AdminGrpc::route, request, any = serializable);
            if cli.json {
                print_json(&json!({
                    "revision": r.revision, "partition": r.partition,
                    "owner": (!r.owner.is_empty()).then_some(&r.owner),
                    "token": (!r.owner.is_empty()).then_some(r.token),
                    "moving": r.moving,
                    "moving_to": (!r.moving_to.is_empty()).then_some(&r.moving_to),
                }));
            } else if r.owner.is_empty() {
                println!(
                    "partition {}: unassigned (revision {})",
                    r.partition, r.revision
                );
            } else {
                let moving = if r.moving {
                    format!(
                        ", moving to {}",
                        if r.moving_to.is_empty() {
                            "(undecided)"
                        } else {
                            &r.moving_to
                        }
                    )
                } else {
                    String::new()
                };
                println!(
                    "partition {}: {} with token {}{moving} (revision {})",
                    r.partition, r.owner, r.token, r.revision
                );
            }
        }
        Command::Tombstone(command) => tombstone(&mut client, cli.json, command).await?,
        Command::Watch {
            group,
            worker,
            from,
            kinds,
            progress,
        } => {
            let request = pb::WatchRequest {
                group,
                from_revision: from.unwrap_or(0),
                worker: worker.unwrap_or_default(),
                kinds: kinds.into_iter().map(|k| k as i32).collect(),
            };
            watch(
                &endpoints,
                transport,
                request,
                cli.timeout,
                cli.json,
                progress,
            )
            .await?;
        }
        Command::Backup { file } => backup(&mut client, cli.json, &file).await?,
        Command::Cluster(ClusterCommand::Compact { revision }) => {
            let r = rpc!(client, AdminGrpc::compact, pb::CompactRequest { revision });
            if cli.json {
                print_json(&json!({ "compacted": r.compacted, "revision": r.revision }));
            } else {
                println!(
                    "history kept after revision {} (committed at revision {})",
                    r.compacted, r.revision
                );
            }
        }
        Command::Cluster(ClusterCommand::Barrier) => {
            let reply = client.barrier().await?;
            if cli.json {
                print_json(&json!({ "revision": reply.revision, "leader_id": reply.leader_id }));
            } else {
                println!(
                    "committed at revision {} by leader {}",
                    reply.revision, reply.leader_id
                );
            }
        }
    }
    Ok(())
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    );
}

fn member_json(m: &Member) -> Value {
    json!({ "id": m.id, "addr": m.addr, "voter": m.voter, "matched_index": m.matched_index })
}

fn status_json(leader: &ClusterStatusResponse, members: &[MemberStatus]) -> Value {
    json!({
        // Whose view this is: the leader's, unless no leader answered.
        "answered_by": leader.node_id,
        "from_leader": leader.leader_id == leader.node_id && leader.removed_at_index.is_none(),
        "quorum_acked_ms_ago": leader.quorum_acked_ms_ago,
        "removed_at_index": leader.removed_at_index,
        "leader_id": leader.leader_id,
        "leader_addr": leader.leader_addr,
        "term": leader.term,
        "committed_index": leader.committed_index,
        "revision": leader.revision,
        "members": members.iter().map(|m| json!({
            "id": m.id,
            "addr": m.addr,
            "voter": m.voter,
            "matched_index": m.matched_index,
            "state": m.status.as_ref().map(|s| s.state.clone()),
            "term": m.status.as_ref().map(|s| s.term),
            "last_log_index": m.status.as_ref().map(|s| s.last_log_index),
            "applied_index": m.status.as_ref().map(|s| s.applied_index),
            "snapshot_index": m.status.as_ref().map(|s| s.snapshot_index),
            "error": m.error,
        })).collect::<Vec<_>>(),
    })
}

fn print_status(leader: &ClusterStatusResponse, members: &[MemberStatus]) {
    if let Some(index) = leader.removed_at_index {
        println!(
            "node {} at {} was removed from the cluster (the membership at log index {index} no longer lists it); what it last knew:",
            leader.node_id, leader.node_addr
        );
    } else if let Some(ms) = leader.quorum_acked_ms_ago.filter(|ms| {
        u128::from(*ms) >= baton_client::endpoints::NO_QUORUM.as_millis()
            && leader.leader_id == leader.node_id
    }) {
        println!(
            "no quorum: node {} at {} still calls itself the leader, but no quorum has answered it for {ms} ms; as it sees it: term {}, committed {}, revision {}",
            leader.node_id, leader.node_addr, leader.term, leader.committed_index, leader.revision
        );
    } else if leader.leader_id != leader.node_id {
        println!(
            "no leader answered (no quorum?); as node {} at {} sees it: leader {}, term {}, committed {}, revision {}",
            leader.node_id,
            leader.node_addr,
            if leader.leader_id == 0 { "unknown".to_string() } else { format!("node {} at {}", leader.leader_id, leader.leader_addr) },
            leader.term,
            leader.committed_index,
            leader.revision
        );
    } else {
        println!(
            "leader: node {} at {}, term {}, committed {}, revision {}",
            leader.leader_id,
            leader.leader_addr,
            leader.term,
            leader.committed_index,
            leader.revision
        );
    }
    let mut rows = vec![vec![
        "ID".to_string(),
        "ADDRESS".into(),
        "ROLE".into(),
        "STATE".into(),
        "TERM".into(),
        "LAST LOG".into(),
        "APPLIED".into(),
        "MATCHED".into(),
    ]];
    for m in members {
        let role = if m.voter { "voter" } else { "learner" };
        let matched = m.matched_index.map_or("-".to_string(), |i| i.to_string());
        rows.push(match &m.status {
            Some(s) => vec![
                m.id.to_string(),
                m.addr.clone(),
                role.into(),
                s.state.clone(),
                s.term.to_string(),
                s.last_log_index.to_string(),
                s.applied_index.to_string(),
                matched,
            ],
            None => vec![
                m.id.to_string(),
                m.addr.clone(),
                role.into(),
                "unreachable".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                matched,
            ],
        });
    }
    print_table(&rows);
    for m in members.iter().filter(|m| m.error.is_some()) {
        println!("node {}: {}", m.id, m.error.as_deref().unwrap_or_default());
    }
}

fn print_membership(json_out: bool, what: &str, reply: &MembershipResponse) {
    if json_out {
        print_json(&json!({
            "revision": reply.revision,
            "members": reply.members.iter().map(member_json).collect::<Vec<_>>(),
        }));
        return;
    }
    println!("{what} (revision {})", reply.revision);
    let mut rows = vec![vec!["ID".to_string(), "ADDRESS".into(), "ROLE".into()]];
    for m in &reply.members {
        rows.push(vec![
            m.id.to_string(),
            m.addr.clone(),
            if m.voter { "voter" } else { "learner" }.into(),
        ]);
    }
    print_table(&rows);
}

fn print_table(rows: &[Vec<String>]) {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, String::len))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

/// Parses `0-119,240,300-359` into inclusive ranges.
fn parse_ranges(text: &str) -> anyhow::Result<Vec<pb::PartitionRange>> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|part| {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let parse = |x: &str| {
                x.trim().parse::<u32>().map_err(|_| {
                    anyhow::anyhow!("{part:?} is not a partition or a range like 0-119")
                })
            };
            Ok(pb::PartitionRange {
                start: parse(a)?,
                end: parse(b)?,
            })
        })
        .collect()
}

fn format_ranges(ranges: &[pb::PartitionRange]) -> String {
    if ranges.is_empty() {
        return "-".into();
    }
    ranges
        .iter()
        .map(|r| {
            if r.start == r.end {
                r.start.to_string()
            } else {
                format!("{}-{}", r.start, r.end)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn ranges_json(ranges: &[pb::PartitionRange]) -> Value {
    json!(ranges.iter().map(|r| [r.start, r.end]).collect::<Vec<_>>())
}

fn group_json(revision: u64, g: &pb::Group) -> Value {
    let c = g.config.unwrap_or_default();
    json!({
        "name": g.name, "revision": revision, "config_revision": g.config_revision,
        "partitions": c.partitions, "handoff_timeout_ms": c.handoff_timeout_ms,
        "max_in_flight": c.max_in_flight, "default_ttl_ms": c.default_ttl_ms,
        "rejoin_grace_ms": c.rejoin_grace_ms, "tombstone_ttl_ms": c.tombstone_ttl_ms,
        "key_hash": g.key_hash, "frozen": g.frozen, "workers": g.workers,
        "draining_workers": g.draining_workers, "tombstones": g.tombstones,
    })
}

fn print_group(json_out: bool, revision: u64, g: &pb::Group) {
    let value = group_json(revision, g);
    if json_out {
        print_json(&value);
        return;
    }
    if let Some(map) = value.as_object() {
        for (k, v) in map {
            println!(
                "{k:<18} {}",
                v.as_str().map_or_else(|| v.to_string(), str::to_string)
            );
        }
    }
}

async fn group(
    client: &mut AdminClient,
    json_out: bool,
    command: GroupCommand,
) -> anyhow::Result<()> {
    let shown = match command {
        GroupCommand::Create {
            group,
            settings,
            if_missing,
        } => {
            let request = pb::CreateGroupRequest {
                group: group.clone(),
                config: Some(settings.to_proto()),
            };
            let created = client
                .call(|ch| {
                    let request = request.clone();
                    async move { AdminGrpc::new(ch).create_group(request).await }
                })
                .await;
            match created {
                Err(e) if if_missing && e.code() == Some(tonic::Code::AlreadyExists) => rpc!(
                    client,
                    AdminGrpc::get_group,
                    pb::GetGroupRequest {
                        group,
                        serializable: false
                    }
                ),
                other => other?,
            }
        }
        GroupCommand::Get {
            group,
            serializable,
        } => rpc!(
            client,
            AdminGrpc::get_group,
            pb::GetGroupRequest {
                group,
                serializable
            },
            any = serializable
        ),
        GroupCommand::Update {
            group,
            if_revision,
            settings,
        } => rpc!(
            client,
            AdminGrpc::update_group,
            pb::UpdateGroupRequest {
                group,
                config: Some(settings.to_proto()),
                if_revision
            }
        ),
        GroupCommand::Split { group, if_revision } => {
            rpc!(
                client,
                AdminGrpc::split_group,
                pb::SplitGroupRequest { group, if_revision }
            )
        }
        GroupCommand::Freeze { group } => rpc!(
            client,
            AdminGrpc::set_frozen,
            pb::SetFrozenRequest {
                group,
                frozen: true
            }
        ),
        GroupCommand::Unfreeze { group } => rpc!(
            client,
            AdminGrpc::set_frozen,
            pb::SetFrozenRequest {
                group,
                frozen: false
            }
        ),
        GroupCommand::Delete { group, force } => {
            let r = rpc!(
                client,
                AdminGrpc::delete_group,
                pb::DeleteGroupRequest {
                    group: group.clone(),
                    force,
                }
            );
            if json_out {
                print_json(
                    &json!({ "group": group, "deleted": r.deleted, "revision": r.revision }),
                );
            } else if r.deleted {
                println!("group {group} deleted (revision {})", r.revision);
            } else {
                println!(
                    "group {group} is being deleted (revision {}): its workers' leases are no longer renewed; it goes when the last session has left or expired",
                    r.revision
                );
            }
            return Ok(());
        }
        GroupCommand::List { serializable } => {
            let r = rpc!(
                client,
                AdminGrpc::list_groups,
                pb::ListGroupsRequest { serializable },
                any = serializable
            );
            if json_out {
                print_json(&json!({
                    "revision": r.revision,
                    "groups": r.groups.iter().map(|g| group_json(r.revision, g)).collect::<Vec<_>>(),
                }));
                return Ok(());
            }
            let mut rows = vec![vec![
                "NAME".to_string(),
                "PARTITIONS".into(),
                "WORKERS".into(),
                "FROZEN".into(),
                "TOMBSTONES".into(),
                "CONFIG REVISION".into(),
            ]];
            for g in &r.groups {
                rows.push(vec![
                    g.name.clone(),
                    g.config
                        .as_ref()
                        .and_then(|c| c.partitions)
                        .unwrap_or_default()
                        .to_string(),
                    g.workers.to_string(),
                    if g.frozen { "yes" } else { "no" }.into(),
                    g.tombstones.to_string(),
                    g.config_revision.to_string(),
                ]);
            }
            print_table(&rows);
            return Ok(());
        }
    };
    let group = shown.group.unwrap_or_default();
    print_group(json_out, shown.revision, &group);
    Ok(())
}

fn print_plan(json_out: bool, what: &str, plan: &pb::PlanResponse) {
    let handoff_json = |h: &pb::Handoff| {
        json!({
            "ranges": ranges_json(&h.ranges),
            "from": (!h.from.is_empty()).then_some(&h.from),
            "to": (!h.to.is_empty()).then_some(&h.to),
        })
    };
    if json_out {
        print_json(&json!({
            "revision": plan.revision,
            "grants": plan.grants.iter().map(handoff_json).collect::<Vec<_>>(),
            "handoffs": plan.handoffs.iter().map(handoff_json).collect::<Vec<_>>(),
        }));
        return;
    }
    if plan.grants.is_empty() && plan.handoffs.is_empty() {
        println!("{what}: nothing to move (revision {})", plan.revision);
        return;
    }
    println!("{what} (revision {}):", plan.revision);
    for g in &plan.grants {
        println!("  grant    {} -> {}", format_ranges(&g.ranges), g.to);
    }
    for h in &plan.handoffs {
        let to = if h.to.is_empty() { "(released)" } else { &h.to };
        println!(
            "  handoff  {} {} -> {}",
            format_ranges(&h.ranges),
            h.from,
            to
        );
    }
}

async fn assignment(
    client: &mut AdminClient,
    json_out: bool,
    command: AssignmentCommand,
) -> anyhow::Result<()> {
    match command {
        AssignmentCommand::Show {
            group,
            serializable,
        } => {
            let request = pb::GetAssignmentRequest {
                group,
                serializable,
            };
            let a = rpc!(
                client,
                AdminGrpc::get_assignment,
                request,
                any = serializable
            );
            let counts: Vec<u32> = a.workers.iter().map(|w| w.count).collect();
            let (min, max) = (
                counts.iter().min().copied().unwrap_or(0),
                counts.iter().max().copied().unwrap_or(0),
            );
            let range_total: usize = a.workers.iter().map(|w| w.ranges.len()).sum();
            let fragmentation = if a.workers.is_empty() {
                0.0
            } else {
                range_total as f64 / a.workers.len() as f64
            };
            if json_out {
                print_json(&json!({
                    "group": a.group,
                    "revision": a.revision,
                    "partitions": a.partitions,
                    "frozen": a.frozen,
                    "workers": a.workers.iter().map(|w| json!({
                        "id": w.id, "count": w.count, "ranges": ranges_json(&w.ranges),
                        "weight": w.weight, "state": w.state, "session": w.session,
                    })).collect::<Vec<_>>(),
                    "moving": a.moving.iter().map(|m| json!({
                        "ranges": ranges_json(&m.ranges), "from": m.from,
                        "to": (!m.to.is_empty()).then_some(&m.to),
                    })).collect::<Vec<_>>(),
                    "unassigned": ranges_json(&a.unassigned),
                    "balance": { "min": min, "max": max },
                    "ranges_per_worker": fragmentation,
                }));
                return Ok(());
            }
            println!(
                "group {}: {} partitions, revision {}{}",
                a.group,
                a.partitions,
                a.revision,
                if a.frozen { ", frozen" } else { "" }
            );
            let mut rows = vec![vec![
                "WORKER".to_string(),
                "STATE".into(),
                "WEIGHT".into(),
                "COUNT".into(),
                "RANGES".into(),
            ]];
            for w in &a.workers {
                rows.push(vec![
                    w.id.clone(),
                    w.state.clone(),
                    w.weight.to_string(),
                    w.count.to_string(),
                    format_ranges(&w.ranges),
                ]);
            }
            print_table(&rows);
            println!(
                "balance: min {min}, max {max} per worker; {fragmentation:.1} ranges per worker"
            );
            for m in &a.moving {
                let to = if m.to.is_empty() {
                    "(undecided)"
                } else {
                    &m.to
                };
                println!("moving: {} {} -> {to}", format_ranges(&m.ranges), m.from);
            }
            println!("unassigned: {}", format_ranges(&a.unassigned));
        }
        AssignmentCommand::Plan {
            group,
            serializable,
        } => {
            let request = pb::GetAssignmentRequest {
                group,
                serializable,
            };
            let plan = rpc!(
                client,
                AdminGrpc::plan_assignment,
                request,
                any = serializable
            );
            print_plan(json_out, "the rebalancer would", &plan);
        }
        AssignmentCommand::Move {
            group,
            partitions,
            to,
        } => {
            let request = pb::MovePartitionsRequest {
                group,
                partitions: parse_ranges(&partitions)?,
                to,
            };
            let plan = rpc!(client, AdminGrpc::move_partitions, request);
            print_plan(json_out, "moved", &plan);
        }
    }
    Ok(())
}

async fn tombstone(
    client: &mut AdminClient,
    json_out: bool,
    command: TombstoneCommand,
) -> anyhow::Result<()> {
    let info_json = |t: &pb::TombstoneInfo| {
        json!({
            "key": t.key, "partition": t.partition, "revision": t.revision, "expires_at_ms": t.expires_at_ms,
        })
    };
    match command {
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
            let r = rpc!(client, TombstonesClient::put, request);
            let barrier = match r.barrier() {
                pb::Barrier::None => None,
                pb::Barrier::Acknowledged => Some("acknowledged by the owner"),
                pb::Barrier::NoOwner => Some("no owner to wait for"),
                pb::Barrier::OwnerReleased => Some("the owner released the partition"),
                pb::Barrier::OwnerExpired => Some("the owner's lease ran out"),
                pb::Barrier::OwnerLeft => Some("the owner left"),
                pb::Barrier::GroupDeleted => Some("the group was deleted"),
            };
            if json_out {
                print_json(&json!({
                    "key": key, "revision": r.revision, "partition": r.partition,
                    "barrier": barrier.map(|_| r.barrier().as_str_name()),
                    "owner": (!r.owner.is_empty()).then_some(&r.owner),
                }));
            } else {
                let owner = if r.owner.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", r.owner)
                };
                let barrier = barrier.map(|b| format!("; {b}{owner}")).unwrap_or_default();
                println!(
                    "{key}: deleted at revision {} (partition {}){barrier}",
                    r.revision, r.partition
                );
            }
        }
        TombstoneCommand::Check {
            group,
            keys,
            serializable,
        } => {
            let request = pb::CheckTombstonesRequest {
                group,
                keys,
                serializable,
            };
            let r = rpc!(client, TombstonesClient::check, request, any = serializable);
            if json_out {
                print_json(&json!({
                    "revision": r.revision,
                    "results": r.results.iter().map(|c| json!({
                        "key": c.key, "deleted": c.deleted,
                        "tombstone": c.tombstone.as_ref().map(info_json),
                    })).collect::<Vec<_>>(),
                }));
                return Ok(());
            }
            let mut rows = vec![vec![
                "KEY".to_string(),
                "DELETED".into(),
                "PARTITION".into(),
                "REVISION".into(),
            ]];
            for c in &r.results {
                let t = c.tombstone.as_ref();
                rows.push(vec![
                    c.key.clone(),
                    if c.deleted { "yes" } else { "no" }.into(),
                    t.map_or("-".into(), |t| t.partition.to_string()),
                    t.map_or("-".into(), |t| t.revision.to_string()),
                ]);
            }
            print_table(&rows);
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
            let request = pb::ListTombstonesRequest {
                group,
                partitions,
                limit,
                serializable,
                after_key: after.unwrap_or_default(),
            };
            let r = rpc!(client, TombstonesClient::list, request, any = serializable);
            if json_out {
                print_json(&json!({
                    "revision": r.revision,
                    "truncated": r.truncated,
                    "next_key": r.next_key,
                    "tombstones": r.tombstones.iter().map(info_json).collect::<Vec<_>>(),
                }));
                return Ok(());
            }
            let mut rows = vec![vec![
                "KEY".to_string(),
                "PARTITION".into(),
                "REVISION".into(),
                "EXPIRES AT (ms)".into(),
            ]];
            for t in &r.tombstones {
                rows.push(vec![
                    t.key.clone(),
                    t.partition.to_string(),
                    t.revision.to_string(),
                    t.expires_at_ms.to_string(),
                ]);
            }
            print_table(&rows);
            if !r.next_key.is_empty() {
                println!("(more follow: list again with --after {:?})", r.next_key);
            }
        }
    }
    Ok(())
}

async fn worker(
    client: &mut AdminClient,
    json_out: bool,
    command: WorkerCommand,
) -> anyhow::Result<()> {
    let (group, worker, evict) = match command {
        WorkerCommand::List {
            group,
            serializable,
        } => {
            let request = pb::ListWorkersRequest {
                group,
                serializable,
            };
            let r = rpc!(client, AdminGrpc::list_workers, request, any = serializable);
            if json_out {
                print_json(&json!({
                    "revision": r.revision,
                    "workers": r.workers.iter().map(|w| json!({
                        "id": w.id, "session": w.session, "state": w.state, "weight": w.weight,
                        "ttl_ms": w.ttl_ms, "labels": w.labels, "partitions": w.partitions,
                    })).collect::<Vec<_>>(),
                }));
                return Ok(());
            }
            let mut rows = vec![vec![
                "WORKER".to_string(),
                "STATE".into(),
                "WEIGHT".into(),
                "PARTITIONS".into(),
                "TTL (ms)".into(),
                "SESSION".into(),
            ]];
            for w in &r.workers {
                rows.push(vec![
                    w.id.clone(),
                    w.state.clone(),
                    w.weight.to_string(),
                    w.partitions.to_string(),
                    w.ttl_ms.to_string(),
                    w.session.to_string(),
                ]);
            }
            print_table(&rows);
            return Ok(());
        }
        WorkerCommand::Join { .. } => {
            unreachable!("worker join is dispatched before the admin client is used")
        }
        WorkerCommand::Drain { group, worker } => (group, worker, false),
        WorkerCommand::Evict { group, worker } => (group, worker, true),
    };
    let request = pb::WorkerRef { group, worker };
    let r = client
        .call(|ch| {
            let request = request.clone();
            async move {
                if evict {
                    AdminGrpc::new(ch).evict_worker(request).await
                } else {
                    AdminGrpc::new(ch).drain_worker(request).await
                }
            }
        })
        .await?;
    if json_out {
        print_json(&json!({ "revision": r.revision, "outcome": r.outcome }));
    } else {
        println!("{}", r.outcome);
    }
    Ok(())
}

/// Streams a backup into `file` (through `file.partial`, synced, then
/// renamed, so `file` is either whole or absent).
async fn backup(
    client: &mut AdminClient,
    json_out: bool,
    file: &std::path::Path,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::io::Write as _;
    let mut partial = file.as_os_str().to_owned();
    partial.push(".partial");
    let partial = std::path::PathBuf::from(partial);
    let (revision, bytes) = client
        .call(|ch| async move {
            let mut stream = AdminGrpc::new(ch)
                .backup(pb::BackupRequest {})
                .await?
                .into_inner();
            let (mut revision, mut total, mut bytes) = (0, 0, Vec::new());
            while let Some(chunk) = stream.message().await? {
                revision = chunk.revision;
                total = chunk.total_bytes;
                bytes.extend_from_slice(&chunk.data);
            }
            if bytes.len() as u64 != total {
                return Err(tonic::Status::unavailable(format!(
                    "the backup stream ended after {} of {total} bytes",
                    bytes.len()
                )));
            }
            Ok(tonic::Response::new((revision, bytes)))
        })
        .await?;
    let mut out = std::fs::File::create(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    out.write_all(&bytes)
        .and_then(|()| out.sync_all())
        .with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, file)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), file.display()))?;
    if json_out {
        print_json(
            &json!({ "file": file.display().to_string(), "revision": revision, "bytes": bytes.len() }),
        );
    } else {
        println!(
            "backup at revision {revision}: {} bytes written to {}",
            bytes.len(),
            file.display()
        );
    }
    Ok(())
}

/// Prints events until interrupted (exit 0) or the watch fails.
async fn watch(
    endpoints: &[String],
    transport: baton_client::Transport,
    request: pb::WatchRequest,
    timeout: u64,
    json_out: bool,
    progress: bool,
) -> anyhow::Result<()> {
    let mut watch = baton_client::Watch::new(endpoints, request, Duration::from_secs(timeout))?
        .with_transport(transport);
    loop {
        let message = tokio::select! {
            m = watch.next() => m,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let message = match message {
            Ok(m) => m,
            Err(baton_client::ClientError::Status(s)) => {
                if let Some(c) = baton_client::watch::compacted_revision(&s) {
                    anyhow::bail!(
                        "the start is compacted (history kept after revision {c} only): look at the current state (`batonctl assignment show`) and watch again from its revision + 1"
                    );
                }
                return Err(baton_client::ClientError::Status(s).into());
            }
            Err(e) => return Err(e.into()),
        };
        if message.events.is_empty() {
            if progress {
                if json_out {
                    println!(
                        "{}",
                        json!({ "revision": message.revision, "type": "progress" })
                    );
                } else {
                    println!("{:>8}  progress", message.revision);
                }
            }
            continue;
        }
        for e in &message.events {
            if json_out {
                println!("{}", event_json(e));
            } else {
                println!("{}", event_line(e));
            }
        }
    }
}

fn event_json(e: &pb::WatchEvent) -> Value {
    use pb::watch_event::Event as E;
    let mut v = match &e.event {
        Some(E::GroupChanged(g)) => json!({
            "type": "group", "change": g.change().as_str_name().trim_start_matches("CHANGE_").to_lowercase(),
            "partitions": g.config.and_then(|c| c.partitions),
        }),
        Some(E::WorkerJoined(w)) => json!({
            "type": "worker_joined", "worker": w.worker, "session": w.session,
            "ttl_ms": w.ttl_ms, "weight": w.weight, "labels": w.labels,
        }),
        Some(E::WorkerDraining(w)) => json!({ "type": "worker_draining", "worker": w.worker }),
        Some(E::WorkerEvicting(w)) => json!({ "type": "worker_evicting", "worker": w.worker }),
        Some(E::WorkerLeft(w)) => {
            json!({ "type": "worker_left", "worker": w.worker, "reason": w.reason })
        }
        Some(E::Granted(g)) => json!({
            "type": "granted", "worker": g.worker, "ranges": ranges_json(&g.ranges), "token": g.token,
        }),
        Some(E::Revoking(r)) => json!({
            "type": "revoking", "from": r.from, "to": (!r.to.is_empty()).then_some(&r.to),
            "ranges": ranges_json(&r.ranges), "since_ms": r.since_ms,
        }),
        Some(E::Released(r)) => json!({
            "type": "released", "worker": r.worker, "ranges": ranges_json(&r.ranges),
        }),
        Some(E::Reserved(r)) => json!({
            "type": "reserved", "worker": r.worker, "ranges": ranges_json(&r.ranges), "until_ms": r.until_ms,
        }),
        Some(E::TombstoneAdded(t)) => {
            let info = t.tombstone.clone().unwrap_or_default();
            json!({
                "type": "tombstone", "key": info.key, "partition": info.partition,
                "expires_at_ms": info.expires_at_ms, "owner": (!t.owner.is_empty()).then_some(&t.owner),
            })
        }
        Some(E::TombstonePurged(t)) => json!({ "type": "tombstone_purged", "key": t.key }),
        Some(E::TombstonesAcked(a)) => json!({
            "type": "tombstones_acked", "worker": a.worker, "up_to": a.revision,
        }),
        None => json!({ "type": "unknown" }),
    };
    v["revision"] = json!(e.revision);
    v
}

fn event_line(e: &pb::WatchEvent) -> String {
    use pb::watch_event::Event as E;
    let text = match &e.event {
        Some(E::GroupChanged(g)) => {
            let change = g
                .change()
                .as_str_name()
                .trim_start_matches("CHANGE_")
                .to_lowercase();
            match g.config.and_then(|c| c.partitions) {
                Some(p) => format!("group      {change} ({p} partitions)"),
                None => format!("group      {change}"),
            }
        }
        Some(E::WorkerJoined(w)) => format!(
            "joined     {} (session {}, ttl {} ms, weight {})",
            w.worker, w.session, w.ttl_ms, w.weight
        ),
        Some(E::WorkerDraining(w)) => format!("draining   {}", w.worker),
        Some(E::WorkerEvicting(w)) => format!("evicting   {}", w.worker),
        Some(E::WorkerLeft(w)) => format!("left       {} ({})", w.worker, w.reason),
        Some(E::Granted(g)) => format!(
            "granted    {} {} token {}",
            g.worker,
            format_ranges(&g.ranges),
            g.token
        ),
        Some(E::Revoking(r)) => format!(
            "revoking   {} {} -> {}",
            r.from,
            format_ranges(&r.ranges),
            if r.to.is_empty() {
                "(undecided)"
            } else {
                &r.to
            }
        ),
        Some(E::Released(r)) => format!("released   {} {}", r.worker, format_ranges(&r.ranges)),
        Some(E::Reserved(r)) => format!(
            "reserved   {} {} until {}",
            r.worker,
            format_ranges(&r.ranges),
            r.until_ms
        ),
        Some(E::TombstoneAdded(t)) => {
            let info = t.tombstone.clone().unwrap_or_default();
            let owner = if t.owner.is_empty() {
                "no owner"
            } else {
                &t.owner
            };
            format!(
                "tombstone  {} partition {} ({owner})",
                info.key, info.partition
            )
        }
        Some(E::TombstonePurged(t)) => format!("purged     {}", t.key),
        Some(E::TombstonesAcked(a)) => format!("acked      {} up to {}", a.worker, a.revision),
        None => "unknown event (a newer server?)".to_string(),
    };
    format!("{:>8}  {text}", e.revision)
}
