//! What the worker SDK sends to end a session or give partitions back, and
//! what the application has been told by the moment each call arrives
//! (against a fake node: `fake/mod.rs`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::fake::Fake;
use baton_client::partitions::each;
use baton_client::{Grant, HoldChange, HoldEnd, Shutdown, Worker, WorkerEvent};
use tonic::Status;

const MARGIN: Duration = Duration::from_millis(300);

type Changes = Arc<Mutex<Vec<HoldChange>>>;

/// Joins the fake as `w1`, recording every hold change.
async fn join(fake: &Fake) -> (Worker, baton_client::Events, Changes) {
    let changes: Changes = Arc::default();
    let log = changes.clone();
    let (worker, events) = Worker::builder([fake.addr.clone()], "g")
        .id("w1")
        .ttl(Duration::from_secs(1))
        .lease_margin(MARGIN)
        .on_hold_change(move |c| log.lock().expect("changes").push(c))
        .join()
        .await
        .expect("joined the fake");
    (worker, events, changes)
}

async fn assigned(events: &mut baton_client::Events) -> Grant {
    match tokio::time::timeout(Duration::from_secs(20), events.next()).await {
        Ok(Some(WorkerEvent::Assigned(grant))) => grant,
        other => panic!("Assigned expected, got {other:?}"),
    }
}

/// The one `Ended` recorded so far with this cause.
fn ended(changes: &Changes, want: HoldEnd) -> (Vec<std::ops::RangeInclusive<u32>>, Instant) {
    let changes = changes.lock().expect("changes");
    let found: Vec<_> = changes
        .iter()
        .filter_map(|c| match c {
            HoldChange::Ended {
                partitions,
                at,
                cause,
            } if *cause == want => Some((partitions.clone(), *at)),
            _ => None,
        })
        .collect();
    match found.as_slice() {
        [one] => one.clone(),
        _ => panic!("one Ended({want:?}) expected in {changes:?}"),
    }
}

#[tokio::test]
async fn a_forced_shutdown_stops_the_application_before_it_leaves() {
    let mut fake = Fake::start(10_000, vec![0..=3]).await;
    let (worker, mut events, changes) = join(&fake).await;
    let grant = assigned(&mut events).await;
    assert!(each(grant.partitions()).all(|p| grant.holds(p)));

    let stopping = worker.clone();
    let shutdown = tokio::spawn(async move { stopping.shutdown(Duration::from_millis(200)).await });
    let drain = fake.next_leave().await;
    assert!(drain.request.drain, "a drain first");
    assert_eq!(drain.request.session, 7, "naming the session");
    // The application never releases, so the grace runs out.
    drain.answer(Ok(()));

    let leave = fake.next_leave().await;
    // Looked at while the Leave is in flight, before the server acts on it:
    assert!(!leave.request.drain);
    assert_eq!(leave.request.session, 7);
    assert!(
        (0..=3).all(|p| !grant.holds(p)),
        "no grant holds once the Leave is out"
    );
    assert!(worker.held().is_empty() && worker.token(0).is_none());
    let next = tokio::time::timeout(Duration::ZERO, events.next()).await;
    assert!(
        matches!(next, Ok(Some(WorkerEvent::LeaseLost))),
        "the application has been told: LeaseLost is ready, got {next:?}"
    );
    let (partitions, invalidated) = ended(&changes, HoldEnd::ForcedShutdown);
    assert_eq!(partitions, vec![0..=3]);
    assert!(
        leave.arrived >= invalidated + MARGIN,
        "the margin passed between invalidating and leaving"
    );
    leave.answer(Ok(()));

    let outcome = shutdown.await.expect("shutdown task").expect("shutdown");
    assert_eq!(
        outcome,
        Shutdown::Forced {
            unreleased: vec![0..=3]
        }
    );
    assert!(events.next().await.is_none(), "then the stream ends");
}

/// A drain the server refuses or never answers still ends the shutdown
/// with the application stopped (before, `shutdown` returned the error and
/// left every grant valid: a chaos run's worker held on for minutes).
#[tokio::test]
async fn a_shutdown_whose_drain_cannot_be_asked_for_is_forced() {
    let mut fake = Fake::start(10_000, vec![0..=3]).await;
    let (worker, mut events, _changes) = join(&fake).await;
    let grant = assigned(&mut events).await;
    let stopping = worker.clone();
    let shutdown = tokio::spawn(async move { stopping.shutdown(Duration::from_millis(200)).await });
    let drain = fake.next_leave().await;
    assert!(drain.request.drain);
    drain.answer(Err(Status::deadline_exceeded("the node could not commit")));

    let leave = tokio::time::timeout(Duration::from_secs(10), fake.next_leave())
        .await
        .expect("the shutdown goes on to a forced leave");
    assert!(!leave.request.drain, "then it is forced");
    assert!((0..=3).all(|p| !grant.holds(p)), "nothing holds by then");
    leave.answer(Ok(()));
    let outcome = shutdown.await.expect("shutdown task").expect("shutdown");
    assert_eq!(
        outcome,
        Shutdown::Forced {
            unreleased: vec![0..=3]
        }
    );
}

#[tokio::test]
async fn after_a_lost_lease_the_session_is_ended_only_once_the_margin_has_passed() {
    let mut fake = Fake::start(1_000, vec![0..=1]).await;
    // Silent keepalives: the local lease runs out about 0.7 s after joining.
    fake.answer_keepalives(false);
    let (worker, mut events, changes) = join(&fake).await;
    let grant = assigned(&mut events).await;

    let leave = fake.next_leave().await;
    assert!(!leave.request.drain);
    assert_eq!(leave.request.session, 7, "the session whose lease was lost");
    assert!(!grant.holds(0) && !grant.holds(1));
    let (partitions, deadline) = ended(&changes, HoldEnd::LeaseLost);
    assert_eq!(partitions, vec![0..=1]);
    assert!(
        leave.arrived >= deadline + MARGIN,
        "Leave arrived {:?} after the local deadline; the margin is {MARGIN:?}",
        leave.arrived - deadline
    );
    // The server no longer has that session (it expired meanwhile): the
    // SDK takes the refusal as "already gone" and joins again.
    fake.answer_keepalives(true);
    leave.answer(Err(Status::failed_precondition(
        "worker \"w1\" is in session 9, not 7",
    )));

    let next = events.next().await;
    assert!(matches!(next, Some(WorkerEvent::LeaseLost)), "got {next:?}");
    let again = assigned(&mut events).await;
    assert!(again.fencing_token() > grant.fencing_token());
    assert!(
        again.holds(0) && !grant.holds(0),
        "only the new session's grant"
    );
    assert_eq!(worker.session(), 8);

    // A graceful shutdown names the new session.
    let stopping = worker.clone();
    let shutdown = tokio::spawn(async move { stopping.shutdown(Duration::from_secs(5)).await });
    let drain = fake.next_leave().await;
    assert!(drain.request.drain);
    assert_eq!(drain.request.session, 8);
    drain.answer(Ok(()));
    fake.publish(baton_client::proto::watch_event::Event::WorkerLeft(
        baton_client::proto::WorkerLeft {
            worker: "w1".into(),
            reason: baton_client::proto::LeaveReason::Drained.into(),
        },
    ));
    let outcome = shutdown.await.expect("shutdown task").expect("shutdown");
    assert_eq!(outcome, Shutdown::Drained);
}

#[tokio::test]
async fn a_release_names_its_session_and_ends_the_hold_before_it_is_sent() {
    let mut fake = Fake::start(10_000, vec![0..=3]).await;
    let (worker, mut events, changes) = join(&fake).await;
    let grant = assigned(&mut events).await;
    {
        let changes = changes.lock().expect("changes");
        let [HoldChange::Began {
            partitions, token, ..
        }] = changes.as_slice()
        else {
            panic!("one Began expected, got {changes:?}");
        };
        assert_eq!((partitions, *token), (&vec![0..=3], grant.fencing_token()));
    }

    let releasing = worker.clone();
    let release = tokio::spawn(async move { releasing.release(&vec![1..=2]).await });
    let call = fake.next_release().await;
    assert_eq!(call.request.session, 7);
    assert_eq!(call.request.token, grant.fencing_token());
    assert!(
        !grant.holds(1) && !grant.holds(2),
        "not held once the call is out"
    );
    assert!(grant.holds(0) && grant.holds(3), "the rest still is");
    let (partitions, at) = ended(&changes, HoldEnd::Released);
    assert_eq!(partitions, vec![1..=2]);
    assert!(at <= call.arrived);
    call.answer(Ok(()));
    let revision = release.await.expect("release task").expect("released");
    assert!(revision > grant.fencing_token());
}
