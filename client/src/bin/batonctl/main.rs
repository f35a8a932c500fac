//! `batonctl`: the baton admin CLI.
//!
//! One module per command (`cluster`, `group`, `assignment`, `worker` with
//! `join`, `route`, `tombstone`, `watch`, `backup`): its clap type and a
//! `run` that makes its calls through [`AdminClient`]'s typed methods and
//! answers with a view; `output` prints every view, as a table or text, or
//! as JSON with `--json`.

use std::process::ExitCode;
use std::time::Duration;

use baton_client::AdminClient;
use clap::{Parser, Subcommand};

mod assignment;
mod backup;
mod cluster;
mod group;
mod join;
mod load_spec;
mod output;
mod route;
mod tombstone;
mod watch;
mod worker;

use assignment::AssignmentCommand;
use cluster::ClusterCommand;
use group::GroupCommand;
use output::Format;
use tombstone::TombstoneCommand;
use worker::WorkerCommand;

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
    Route(route::RouteArgs),
    /// Deletion markers.
    #[command(subcommand)]
    Tombstone(TombstoneCommand),
    /// Write a backup of the whole state (groups, sessions, assignment,
    /// tombstones, event history) to FILE, as of now. Restore it by starting
    /// a new cluster with `baton-node --restore-from FILE`. Needs the admin
    /// token when the cluster has one.
    Backup(backup::BackupArgs),
    /// Print a group's events, one per line, until interrupted. Served by any
    /// node; moves to another endpoint and resumes if its node goes away.
    Watch(watch::WatchArgs),
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
    let command = match cli.command {
        Command::Worker(command) => match command.into_join(&endpoints, &transport) {
            Ok(args) => return join::join(args).await,
            Err(admin) => Command::Worker(admin),
        },
        other => other,
    };
    let format = Format { json: cli.json };
    let timeout = Duration::from_secs(cli.timeout);
    let mut client = AdminClient::new(&endpoints, timeout)?.with_transport(transport.clone());
    let client = &mut client;
    let reply = match command {
        Command::Cluster(command) => cluster::run(client, command).await?,
        Command::Group(command) => group::run(client, command).await?,
        Command::Assignment(command) => assignment::run(client, command).await?,
        Command::Worker(command) => worker::run(client, command).await?,
        Command::Route(args) => route::run(client, args).await?,
        Command::Tombstone(command) => tombstone::run(client, command).await?,
        Command::Backup(args) => backup::run(client, args).await?,
        // A stream: printed as it comes, by the command itself.
        Command::Watch(args) => {
            return watch::run(&endpoints, transport, timeout, format, args).await
        }
    };
    format.print(reply.as_ref());
    Ok(())
}
