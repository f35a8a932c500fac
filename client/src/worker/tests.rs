//! The hold hook against the real lease and holdings, without a cluster:
//! what it is told, when, and in which order.

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use super::clock::Stamp;
use super::*;

/// What the hook saw: each change, and whether its partitions were visible
/// as held (through the public checks) at the moment it was called.
type Seen = Arc<Mutex<Vec<(HoldChange, bool)>>>;

fn worker() -> (Arc<Shared>, Seen) {
    let seen: Seen = Arc::default();
    let me: Arc<OnceLock<Weak<Shared>>> = Arc::default();
    let hook = {
        let (seen, me) = (seen.clone(), me.clone());
        move |change: HoldChange| {
            let visible = me.get().and_then(Weak::upgrade).is_some_and(|s| {
                let partitions = match &change {
                    HoldChange::Began { partitions, .. } | HoldChange::Ended { partitions, .. } => {
                        partitions.clone()
                    }
                };
                let worker = Worker { shared: s };
                let visible = each(&partitions).any(|p| worker.token(p).is_some());
                visible
            });
            seen.lock().expect("seen").push((change, visible));
        }
    };
    let admin = AdminClient::new(&["127.0.0.1:1".to_string()], Duration::from_secs(1))
        .expect("an endpoint");
    let shared = Arc::new(Shared {
        group: "g".into(),
        id: "w1".into(),
        endpoints: vec!["127.0.0.1:1".into()],
        transport: Transport::default(),
        lease: Lease::new(0, Stamp::now()),
        rules: Mutex::new(LeaseRules {
            ttl: Duration::from_secs(10),
            max_drift: 0.01,
            margin: Duration::from_secs(1),
        }),
        holdings: Mutex::new(Holdings::new("w1")),
        observer: Observer::new(Some(Arc::new(hook))),
        handoff_timeout_ms: AtomicU64::new(30_000),
        shutting_down: AtomicBool::new(false),
        lost_in_shutdown: Mutex::new(None),
        finished: watch::channel(false).0,
        acks: watch::channel((0, 0)).0,
        admin: tokio::sync::Mutex::new(admin),
        loads: Mutex::new(Vec::new()),
        capacity: None,
    });
    let _ = me.set(Arc::downgrade(&shared));
    (shared, seen)
}

/// Session 1 with a lease until `deadline`, holding `partitions` with token 5.
fn joined(shared: &Shared, deadline: Stamp, partitions: Partitions) {
    shared.lease.begin(1, deadline);
    shared.change_holdings(|_| HoldEnd::SessionEnded, |h| h.begin(1, 7));
    shared.change_holdings(|_| HoldEnd::Released, |h| h.grant(&partitions, 5));
}

fn taken(seen: &Seen) -> Vec<(HoldChange, bool)> {
    std::mem::take(&mut *seen.lock().expect("seen"))
}

#[test]
fn a_hold_is_reported_before_it_is_visible_and_its_end_once_it_is_not() {
    let (shared, seen) = worker();
    let start = Instant::now();
    joined(
        &shared,
        Stamp::now().after(Duration::from_secs(60)),
        vec![0..=3],
    );
    let granted = Instant::now();
    let changes = taken(&seen);
    let [(
        HoldChange::Began {
            partitions,
            token,
            at,
        },
        visible,
    )] = changes.as_slice()
    else {
        panic!("one Began expected, got {changes:?}");
    };
    assert_eq!((partitions, *token), (&vec![0..=3], 5));
    assert!(!visible, "reported while no check could see it held yet");
    assert!(start <= *at && *at <= granted);
    assert_eq!(
        Worker {
            shared: shared.clone()
        }
        .held(),
        vec![0..=3]
    );

    let worker = Worker {
        shared: shared.clone(),
    };
    let before = Instant::now();
    let (session, by_token) = shared
        .change_holdings(
            |_| HoldEnd::Released,
            |h| h.take(&vec![1..=2]).map(|t| (h.session().1, t)),
        )
        .expect("held");
    assert_eq!((session, by_token), (7, vec![(5, vec![1..=2])]));
    let changes = taken(&seen);
    let [(
        HoldChange::Ended {
            partitions,
            at,
            cause,
        },
        visible,
    )] = changes.as_slice()
    else {
        panic!("one Ended expected, got {changes:?}");
    };
    assert_eq!((partitions, *cause), (&vec![1..=2], HoldEnd::Released));
    assert!(!visible, "reported once no check sees them held");
    assert!(before <= *at && *at <= Instant::now());
    assert_eq!(worker.held(), vec![0..=0, 3..=3]);
}

#[tokio::test]
async fn a_lost_lease_ends_every_hold_at_its_deadline_even_when_noticed_late() {
    let (shared, seen) = worker();
    let deadline = Stamp::now().after(Duration::from_millis(30));
    joined(&shared, deadline, vec![0..=1, 4..=4]);
    taken(&seen);
    // The timer only wakes the task; by then the deadline has passed.
    shared.lease.lost(1).await;
    assert!(Instant::now() >= deadline.instant);
    assert!(
        Worker {
            shared: shared.clone()
        }
        .token(0)
        .is_none(),
        "invalid from the deadline on"
    );
    shared.lose_lease(1, HoldEnd::LeaseLost);
    shared.lose_lease(1, HoldEnd::LeaseLost);
    assert_eq!(
        taken(&seen),
        vec![(
            HoldChange::Ended {
                partitions: vec![0..=1, 4..=4],
                at: deadline.instant,
                cause: HoldEnd::LeaseLost
            },
            false
        )],
        "once, at the deadline itself"
    );
    // What the lost session does afterwards is never reported as held.
    shared.change_holdings(|_| HoldEnd::Released, |h| h.grant(&vec![9..=9], 11));
    assert!(taken(&seen).is_empty());
}

#[test]
fn a_forced_end_is_reported_at_the_instant_the_grants_were_invalidated() {
    let (shared, seen) = worker();
    joined(
        &shared,
        Stamp::now().after(Duration::from_secs(60)),
        vec![0..=3],
    );
    taken(&seen);
    let before = Instant::now();
    shared.lose_lease(1, HoldEnd::ForcedShutdown);
    let after = Instant::now();
    assert!(!shared.lease.valid(1));
    let changes = taken(&seen);
    let [(
        HoldChange::Ended {
            partitions,
            at,
            cause,
        },
        false,
    )] = changes.as_slice()
    else {
        panic!("one Ended, not visible, expected; got {changes:?}");
    };
    assert_eq!(
        (partitions, *cause),
        (&vec![0..=3], HoldEnd::ForcedShutdown)
    );
    assert!(before <= *at && *at <= after);
    assert_eq!(
        shared.lease.ended(1).map(|e| e.instant),
        Some(*at),
        "the instant the lease records as its end"
    );
}

#[test]
fn a_regrant_under_a_new_token_leaves_no_gap() {
    let (shared, seen) = worker();
    joined(
        &shared,
        Stamp::now().after(Duration::from_secs(60)),
        vec![0..=1],
    );
    taken(&seen);
    shared.change_holdings(|_| HoldEnd::Released, |h| h.grant(&vec![1..=2], 9));
    let changes: Vec<HoldChange> = taken(&seen).into_iter().map(|(c, _)| c).collect();
    let [HoldChange::Ended {
        partitions: ended,
        at: end,
        ..
    }, HoldChange::Began {
        partitions: began,
        token: 9,
        at: start,
    }] = changes.as_slice()
    else {
        panic!("Ended then Began expected, got {changes:?}");
    };
    assert_eq!((ended, began), (&vec![1..=1], &vec![1..=2]));
    assert_eq!(end, start, "the old hold ends where the new one begins");
}

#[test]
fn nothing_is_reported_held_under_a_lease_that_has_run_out() {
    let (shared, seen) = worker();
    joined(&shared, Stamp::now(), vec![0..=3]);
    assert!(taken(&seen).is_empty());
    assert!(Worker { shared }.held().is_empty());
}

#[test]
fn a_load_report_merges_consecutive_partitions_of_one_load() {
    let runs = super::load_runs([(4, 7), (2, 7), (3, 7), (9, 1), (2, 99)]);
    let as_tuples: Vec<(u32, u32, u64)> = runs
        .iter()
        .map(|r| {
            let p = r.partitions.unwrap_or_default();
            (p.first, p.last, r.load)
        })
        .collect();
    assert_eq!(as_tuples, vec![(2, 4, 7), (9, 9, 1)]);
}
