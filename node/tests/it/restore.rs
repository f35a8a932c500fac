//! The acceptance test of issue 20's restore part, on real processes: the
//! backup is at R, the lost cluster goes on to R' (handing out tokens and
//! revisions in (R, R'] that sinks and watchers saw), and the restored
//! cluster must hand out nothing at or below R + margin, and answer a watch
//! from anywhere in the lost range with COMPACTED on every node. Each test
//! replays the loss and the restore.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use baton_client::AdminClient;
use baton_node::api::watch::COMPACTED_REVISION;

use crate::fixture;
use crate::fixture::procs::{ctl_json, node_args, status_of, three_processes, Proc};
use crate::fixture::watch::{open, request};
use crate::fixture::worker::{
    assignment, join_unkept, leader_addr, put_tombstone, route_all, settle,
};

/// The margin a restore adds to the backup's revision when no
/// `--restore-revision-bump` is given.
const DEFAULT_BUMP: u64 = 1_000_000;

/// Starts `baton-node` processes for a 3-node cluster at `addrs` in `dir`,
/// each with `extra` flags.
fn start_processes(dir: &Path, addrs: &[SocketAddr], extra: &[String]) -> Vec<Proc> {
    (1..=3)
        .map(|id| {
            let mut args = node_args(addrs, id);
            args.extend_from_slice(extra);
            Proc::spawn(&args, dir, dir.join(format!("node-{id}.log")))
        })
        .collect()
}

/// The fencing token, session, revision and barrier revision a cluster
/// hands out now: joins `worker` to `group`, puts a tombstone on `key`, and
/// commits a barrier. Returns every number it was given.
async fn hand_out(admin: &mut AdminClient, group: &str, worker: &str, key: &str) -> Vec<u64> {
    let joined = join_unkept(admin, group, worker).await;
    let tombstone = put_tombstone(admin, group, key).await;
    let barrier = admin.barrier().await.expect("barrier");
    vec![
        joined.token,
        joined.session,
        tombstone.revision,
        barrier.revision,
    ]
}

/// A 3-node process cluster restored with the default margin from a
/// backup, after the cluster it was taken from went on and was lost.
struct Restored {
    endpoints: Vec<String>,
    procs: Vec<Proc>,
    backup_revision: u64,
    /// The last revision the lost cluster reached.
    lost_revision: u64,
    /// The restored revision: the backup's plus the margin.
    bumped: u64,
    /// Every fencing token, session and revision handed out before the loss.
    seen: Vec<u64>,
    _data: tempfile::TempDir,
    _backup: tempfile::TempDir,
}

impl Restored {
    async fn after_a_loss() -> Restored {
        let old = tempfile::tempdir().expect("tempdir");
        let (addrs, procs) = three_processes(old.path());
        let endpoints: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        let mut admin = AdminClient::new(&endpoints, fixture::WAIT).expect("client");
        fixture::worker::create_group(&mut admin, "orders", 16).await;
        let mut seen = hand_out(&mut admin, "orders", "w1", "before-1").await;
        seen.extend(hand_out(&mut admin, "orders", "w2", "before-2").await);
        settle(&mut admin, "orders", "w1 and w2 hold all", |a| {
            a.unassigned.is_empty() && a.workers.len() == 2
        })
        .await;
        let routed = route_all(&mut admin, "orders", 16).await;
        seen.extend(routed.values().map(|(_, token)| *token));

        let file = old.path().join("baton.backup");
        let reply = ctl_json(
            &endpoints[0],
            &["backup", file.to_str().expect("UTF-8 path")],
        );
        let backup_revision = reply["revision"].as_u64().expect("revision");
        let kept = tempfile::tempdir().expect("tempdir");
        let backup = kept.path().join("baton.backup");
        std::fs::copy(&file, &backup).expect("keep the backup");

        // What the old cluster hands out after the backup is lost with it, but
        // sinks and watchers have seen it.
        let mut lost = hand_out(&mut admin, "orders", "w3", "lost-1").await;
        lost.extend(hand_out(&mut admin, "orders", "w4", "lost-2").await);
        settle(&mut admin, "orders", "four workers hold all", |a| {
            a.unassigned.is_empty() && a.workers.len() == 4
        })
        .await;
        assert!(
            lost.iter().all(|n| *n > backup_revision),
            "handed out after the backup at {backup_revision}: {lost:?}"
        );
        let routed = route_all(&mut admin, "orders", 16).await;
        lost.extend(routed.values().map(|(_, token)| *token));
        let lost_revision = admin.barrier().await.expect("barrier").revision;
        seen.extend(lost);
        seen.push(lost_revision);
        drop(admin);
        for p in procs.into_iter().flatten() {
            p.sigterm(Duration::from_secs(10));
        }
        drop(old);

        // A new cluster at the same addresses, every member from the same file,
        // with the default margin. A restore forms its cluster by static
        // bootstrap, so it needs its addresses up front: it takes the ones the
        // old cluster's nodes freed by exiting a moment ago.
        let new = tempfile::tempdir().expect("tempdir");
        let restore = ["--restore-from".to_string(), backup.display().to_string()];
        let restored = start_processes(new.path(), &addrs, &restore);
        leader_addr(&endpoints).await;
        let bumped = backup_revision + DEFAULT_BUMP;
        assert!(bumped > lost_revision, "the margin covers what was lost");

        Restored {
            endpoints,
            procs: restored,
            backup_revision,
            lost_revision,
            bumped,
            seen,
            _data: new,
            _backup: kept,
        }
    }

    fn stop(self) {
        for p in self.procs {
            p.sigterm(Duration::from_secs(10));
        }
    }
}

/// What a restored cluster hands out after it was re-listed: joins and
/// tombstones of two workers, then every partition's owner and token.
/// Returns the numbers handed out and the tokens above the restored
/// revision.
async fn hand_out_after(admin: &mut AdminClient, bumped: u64) -> (Vec<u64>, Vec<u64>) {
    let mut after = hand_out(admin, "orders", "w5", "after-1").await;
    after.extend(hand_out(admin, "orders", "w3", "after-2").await);
    settle(admin, "orders", "w1, w2, w3 and w5 hold all", |a| {
        a.unassigned.is_empty() && a.workers.len() == 4
    })
    .await;
    let routed = route_all(admin, "orders", 16).await;
    let tokens: Vec<u64> = routed.values().map(|(_, token)| *token).collect();
    after.extend(tokens.iter().copied().filter(|t| *t > bumped));
    (after, tokens)
}

/// Every node holds the same jumped state: a watch from anywhere in the
/// lost range, or from the backup's own revision, is told it is compacted
/// at the jump, and re-lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_the_lost_range_is_told_it_is_compacted_at_the_jump_on_every_node() {
    let restored = Restored::after_a_loss().await;
    let (endpoints, backup_revision, lost_revision, bumped) = (
        &restored.endpoints,
        restored.backup_revision,
        restored.lost_revision,
        restored.bumped,
    );
    for addr in endpoints {
        let applied = status_of(addr.parse().expect("address"))
            .await
            .map(|s| s.revision);
        assert!(
            applied.is_some_and(|a| a >= bumped),
            "{addr} applied {applied:?}, below the restored revision {bumped}"
        );
        for from in [backup_revision, backup_revision + 1, lost_revision, bumped] {
            let refused = open(addr, request("orders", from))
                .await
                .err()
                .unwrap_or_else(|| {
                    panic!("{addr}: a watch from {from} is served after the restore")
                });
            assert_eq!(
                refused.code(),
                tonic::Code::OutOfRange,
                "{addr} from {from}: {refused:?}"
            );
            let compacted = refused
                .metadata()
                .get(COMPACTED_REVISION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            assert_eq!(compacted, Some(bumped), "{addr} from {from}: {refused:?}");
        }
    }

    restored.stop();
}

/// Everything handed out after the restore is above everything seen
/// before; partitions held since the backup were granted anew at the
/// restore: their tokens are the restored revision, above the whole lost
/// range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_cluster_hands_out_only_numbers_above_everything_seen_before() {
    let restored = Restored::after_a_loss().await;
    let (backup_revision, lost_revision, bumped) = (
        restored.backup_revision,
        restored.lost_revision,
        restored.bumped,
    );
    let mut admin = AdminClient::new(&restored.endpoints, fixture::WAIT).expect("client");
    let listed = assignment(&mut admin, "orders").await;
    assert!(listed.revision >= bumped, "listed at {}", listed.revision);
    let ceiling = restored
        .seen
        .iter()
        .copied()
        .max()
        .unwrap_or_default()
        .max(bumped);
    let (after, tokens) = hand_out_after(&mut admin, bumped).await;
    let held_since: Vec<u64> = tokens.into_iter().filter(|t| *t <= bumped).collect();
    assert!(
        held_since.iter().all(|t| *t == bumped),
        "tokens of partitions held since the backup are the restored revision {bumped}: {held_since:?}"
    );
    for n in &after {
        assert!(
            *n > ceiling,
            "{n} handed out after the restore, not above {ceiling} (backup {backup_revision}, lost up to {lost_revision}, margin {DEFAULT_BUMP}): {after:?}"
        );
    }
    drop(admin);
    restored.stop();
}

/// A watcher that re-listed goes on from the jump and sees what follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_after_the_jump_delivers_what_follows() {
    let restored = Restored::after_a_loss().await;
    let (endpoints, bumped) = (&restored.endpoints, restored.bumped);
    let mut admin = AdminClient::new(endpoints, fixture::WAIT).expect("client");
    let listed = assignment(&mut admin, "orders").await;
    assert!(listed.revision >= bumped, "listed at {}", listed.revision);
    let mut watched = open(&endpoints[1], request("orders", listed.revision + 1))
        .await
        .expect("a watch from after the jump");
    let (after, _) = hand_out_after(&mut admin, bumped).await;
    let last = *after.iter().max().expect("numbers");
    watched.read_until(last).await;
    assert!(
        watched.events.iter().any(|e| e.revision > bumped),
        "the watch after the jump delivers the new events"
    );

    drop(admin);
    restored.stop();
}
