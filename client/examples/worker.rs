//! A worker that "processes" the partitions it owns, the safe way:
//!
//! - one task per owned partition, stopped on revoke (then released) and on
//!   a lost lease;
//! - every write to the downstream store carries the grant's fencing token,
//!   and the store refuses a token lower than one it has seen for that
//!   partition (a zombie's late write cannot land);
//! - failed work is retried only after checking that its key has no
//!   tombstone, and tombstone events drop queued work at once.
//!
//! Start baton (`cargo run -p baton-node`), create a group, then run a few:
//!
//!     batonctl group create demo --partitions 8
//!     cargo run -p baton-client --example worker -- 127.0.0.1:7400 demo w1
//!     batonctl tombstone put demo account-3    # w1 drops account-3's work

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_client::proto::tombstones_client::TombstonesClient;
use baton_client::proto::CheckTombstonesRequest;
use baton_client::{Grant, Worker, WorkerEvent};
use tokio::task::JoinHandle;

/// The downstream store: remembers the highest token per partition.
#[derive(Default)]
struct FencedStore {
    highest: Mutex<HashMap<u32, u64>>,
}

impl FencedStore {
    fn write(&self, partition: u32, token: u64, what: &str) -> Result<(), String> {
        let mut highest = self.highest.lock().map_err(|_| "poisoned")?;
        let seen = highest.entry(partition).or_default();
        if token < *seen {
            return Err(format!(
                "partition {partition}: token {token} < {seen}, refused"
            ));
        }
        *seen = token;
        println!("  wrote {what} to partition {partition} with token {token}");
        Ok(())
    }
}

/// Keys deleted by tombstones: their work is dropped, never retried.
type Deleted = Arc<Mutex<BTreeSet<String>>>;

struct Ctx {
    endpoint: String,
    group: String,
    store: FencedStore,
    deleted: Deleted,
}

async fn process(partition: u32, grant: Grant, ctx: Arc<Ctx>) {
    let mut n = 0u64;
    // Re-check before every side effect: the lease may end between two items.
    while grant.holds(partition) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let key = format!("account-{}", u64::from(partition) * 1000 + n % 5);
        n += 1;
        if ctx.deleted.lock().map(|d| d.contains(&key)).unwrap_or(true) {
            continue;
        }
        // Every seventh item "fails" once; it is retried only if its key
        // has not been deleted meanwhile.
        if n.is_multiple_of(7) && !may_retry(&ctx.endpoint, &ctx.group, &key).await {
            println!("  {key} was deleted: not retrying");
            continue;
        }
        if !grant.holds(partition) {
            return;
        }
        if let Err(e) = ctx.store.write(partition, grant.fencing_token(), &key) {
            eprintln!("  {e}");
            return;
        }
    }
}

/// Retrying failed work: ask the cluster whether the key was deleted first.
async fn may_retry(endpoint: &str, group: &str, key: &str) -> bool {
    let Ok(mut client) = TombstonesClient::connect(format!("http://{endpoint}")).await else {
        return false;
    };
    let request = CheckTombstonesRequest {
        group: group.into(),
        keys: vec![key.into()],
        serializable: false,
    };
    match client.check(request).await {
        Ok(r) => r.into_inner().results.iter().all(|k| !k.deleted),
        Err(_) => false, // unknown: do not retry yet
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (endpoint, group, id) = match args.as_slice() {
        [e, g, i] => (e.clone(), g.clone(), i.clone()),
        _ => return Err("usage: worker ENDPOINT GROUP WORKER_ID".into()),
    };
    let (worker, mut events) = Worker::builder([endpoint.clone()], group.clone())
        .id(id)
        .drain_on_signals(Duration::from_secs(20))
        .join()
        .await?;
    let ctx = Arc::new(Ctx {
        endpoint,
        group,
        store: FencedStore::default(),
        deleted: Deleted::default(),
    });
    let mut running: BTreeMap<u32, JoinHandle<()>> = BTreeMap::new();
    while let Some(event) = events.next().await {
        match event {
            WorkerEvent::Assigned(grant) => {
                println!(
                    "assigned {:?} token {}",
                    grant.partitions(),
                    grant.fencing_token()
                );
                for p in baton_client::partitions::each(grant.partitions()) {
                    let task = process(p, grant.clone(), ctx.clone());
                    running.insert(p, tokio::spawn(task));
                }
            }
            WorkerEvent::Revoked { partitions, .. } => {
                println!("revoked {partitions:?}: stopping, then releasing");
                for p in baton_client::partitions::each(&partitions) {
                    if let Some(task) = running.remove(&p) {
                        task.abort();
                        let _ = task.await;
                    }
                }
                worker.release(&partitions).await?;
            }
            WorkerEvent::Tombstone { key, .. } => {
                println!("tombstone {key}: dropping its work");
                if let Ok(mut d) = ctx.deleted.lock() {
                    d.insert(key);
                }
            }
            WorkerEvent::LeaseLost => {
                println!("lease lost: stopping everything");
                running.values().for_each(JoinHandle::abort);
                running.clear();
            }
            WorkerEvent::Resharded { partitions, .. } => {
                println!("group split into {partitions} partitions");
                running.values().for_each(JoinHandle::abort);
                running.clear();
            }
        }
    }
    println!("left the group");
    Ok(())
}
