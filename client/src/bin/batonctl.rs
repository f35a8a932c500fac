//! `batonctl`: the baton admin CLI.

use std::process::ExitCode;
use std::time::Duration;

use baton_client::proto::{ClusterStatusResponse, Member, MembershipResponse};
use baton_client::{AdminClient, MemberStatus};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};

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
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The Raft cluster: members, leader, replication.
    #[command(subcommand)]
    Cluster(ClusterCommand),
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
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("batonctl: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let endpoints = vec![cli.endpoints.clone()];
    let mut client = AdminClient::new(&endpoints, Duration::from_secs(cli.timeout))?;
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
    println!(
        "leader: node {} at {}, term {}, committed {}, revision {}",
        leader.leader_id, leader.leader_addr, leader.term, leader.committed_index, leader.revision
    );
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
