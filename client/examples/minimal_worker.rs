//! The complete worker shown in README.md (a test keeps the two identical).

use baton_client::{partitions::each, Worker, WorkerError, WorkerEvent};
use std::{collections::BTreeMap, time::Duration};

#[rustfmt::skip]
#[tokio::main]
async fn main() -> Result<(), WorkerError> {
    // Joins under this host's name; on SIGTERM hands everything off (25 s at most).
    let (worker, mut events) = Worker::builder(["127.0.0.1:7400"], "mail-sync")
        .drain_on_signals(Duration::from_secs(25)).join().await?;
    let mut jobs = BTreeMap::new();
    while let Some(event) = events.next().await {
        match event {
            WorkerEvent::Assigned(grant) => for p in each(grant.partitions()) {
                let grant = grant.clone();
                // Check before every side effect; pass the token downstream.
                jobs.insert(p, tokio::spawn(async move {
                    while grant.holds(p) { sync_mailboxes(p, grant.fencing_token()).await }
                }));
            },
            WorkerEvent::Revoked { partitions, .. } => {
                each(&partitions).filter_map(|p| jobs.remove(&p)).for_each(|j| j.abort());
                worker.release(&partitions).await?; // after stopping them
            }
            WorkerEvent::Tombstone { key, .. } => forget(&key), // acknowledged on next()
            WorkerEvent::LeaseLost | WorkerEvent::Resharded { .. } => {
                std::mem::take(&mut jobs).values().for_each(|j| j.abort());
            }
        }
    }
    Ok(()) // Left the group: every partition was handed off.
}

async fn sync_mailboxes(partition: u32, token: u64) {
    println!("partition {partition}: syncing with fencing token {token}");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
fn forget(key: &str) {
    println!("{key} was deleted: dropping its work");
}
