//! `batonctl watch`: a group's events, one per line, until interrupted.

use std::collections::HashMap;
use std::time::Duration;

use baton_client::proto::{self as pb, watch_event::Event};
use baton_client::{ClientError, Transport, Watch};
use serde::Serialize;

use crate::output::{non_empty, word, Format, Ranges, View};

#[derive(clap::Args)]
pub struct WatchArgs {
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

/// Prints events until interrupted (exit 0) or the watch fails. Served by
/// any node: the watch moves to another endpoint and resumes if its node
/// goes away.
pub async fn run(
    endpoints: &[String],
    transport: Transport,
    timeout: Duration,
    format: Format,
    args: WatchArgs,
) -> anyhow::Result<()> {
    let request = pb::WatchRequest {
        group: args.group,
        from_revision: args.from.unwrap_or(0),
        worker: args.worker.unwrap_or_default(),
        kinds: args.kinds.into_iter().map(|k| k as i32).collect(),
    };
    let mut watch = Watch::new(endpoints, request, timeout)?.with_transport(transport);
    loop {
        let message = tokio::select! {
            m = watch.next() => m,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let message = match message {
            Ok(m) => m,
            Err(ClientError::Status(s)) => {
                if let Some(c) = baton_client::watch::compacted_revision(&s) {
                    anyhow::bail!(
                        "the start is compacted (history kept after revision {c} only): look at the current state (`batonctl assignment show`) and watch again from its revision + 1"
                    );
                }
                return Err(ClientError::Status(s).into());
            }
            Err(e) => return Err(e.into()),
        };
        if message.events.is_empty() {
            if args.progress {
                format.print_line(&EventView {
                    revision: message.revision,
                    event: EventKind::Progress {},
                });
            }
            continue;
        }
        for e in message.events {
            format.print_line(&EventView::from(e));
        }
    }
}

/// One line of the stream: an event (or a progress notification) at its
/// revision. In JSON, `type` names the kind and the kind's fields sit
/// beside it.
#[derive(Serialize)]
struct EventView {
    revision: u64,
    #[serde(flatten)]
    event: EventKind,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum EventKind {
    Group {
        change: String,
        partitions: Option<u32>,
    },
    WorkerJoined {
        worker: String,
        session: u64,
        ttl_ms: u64,
        weight: u32,
        labels: HashMap<String, String>,
    },
    WorkerDraining {
        worker: String,
    },
    WorkerEvicting {
        worker: String,
    },
    WorkerLeft {
        worker: String,
        reason: String,
    },
    Granted {
        worker: String,
        ranges: Ranges,
        token: u64,
    },
    /// `to` is null while undecided.
    Revoking {
        from: String,
        to: Option<String>,
        ranges: Ranges,
        since_ms: u64,
    },
    Released {
        worker: String,
        ranges: Ranges,
    },
    Reserved {
        worker: String,
        ranges: Ranges,
        until_ms: u64,
    },
    /// `owner` is null when the partition had none.
    Tombstone {
        key: String,
        partition: u32,
        expires_at_ms: u64,
        owner: Option<String>,
    },
    TombstonePurged {
        key: String,
    },
    TombstonesAcked {
        worker: String,
        up_to: u64,
    },
    /// An event this batonctl does not know (a newer server?).
    Unknown {},
    /// No event: the revision the stream has reached (`--progress`).
    Progress {},
}

impl From<pb::WatchEvent> for EventView {
    fn from(e: pb::WatchEvent) -> Self {
        let event = match e.event {
            Some(Event::GroupChanged(g)) => EventKind::Group {
                change: g
                    .change()
                    .as_str_name()
                    .trim_start_matches("CHANGE_")
                    .to_lowercase(),
                partitions: g.config.and_then(|c| c.partitions),
            },
            Some(Event::WorkerJoined(w)) => EventKind::WorkerJoined {
                worker: w.worker,
                session: w.session,
                ttl_ms: w.ttl_ms,
                weight: w.weight,
                labels: w.labels,
            },
            Some(Event::WorkerDraining(w)) => EventKind::WorkerDraining { worker: w.worker },
            Some(Event::WorkerEvicting(w)) => EventKind::WorkerEvicting { worker: w.worker },
            Some(Event::WorkerLeft(w)) => EventKind::WorkerLeft {
                reason: word(w.reason().as_str_name(), "LEAVE_REASON_"),
                worker: w.worker,
            },
            Some(Event::Granted(g)) => EventKind::Granted {
                worker: g.worker,
                ranges: Ranges(g.ranges),
                token: g.token,
            },
            Some(Event::Revoking(r)) => EventKind::Revoking {
                to: non_empty(&r.to),
                from: r.from,
                ranges: Ranges(r.ranges),
                since_ms: r.since_ms,
            },
            Some(Event::Released(r)) => EventKind::Released {
                worker: r.worker,
                ranges: Ranges(r.ranges),
            },
            Some(Event::Reserved(r)) => EventKind::Reserved {
                worker: r.worker,
                ranges: Ranges(r.ranges),
                until_ms: r.until_ms,
            },
            Some(Event::TombstoneAdded(t)) => {
                let info = t.tombstone.unwrap_or_default();
                EventKind::Tombstone {
                    key: info.key,
                    partition: info.partition,
                    expires_at_ms: info.expires_at_ms,
                    owner: non_empty(&t.owner),
                }
            }
            Some(Event::TombstonePurged(t)) => EventKind::TombstonePurged { key: t.key },
            Some(Event::TombstonesAcked(a)) => EventKind::TombstonesAcked {
                worker: a.worker,
                up_to: a.revision,
            },
            None => EventKind::Unknown {},
        };
        EventView {
            revision: e.revision,
            event,
        }
    }
}

impl View for EventView {
    fn text(&self) -> String {
        let text = match &self.event {
            EventKind::Group { change, partitions } => match partitions {
                Some(p) => format!("group      {change} ({p} partitions)"),
                None => format!("group      {change}"),
            },
            EventKind::WorkerJoined {
                worker,
                session,
                ttl_ms,
                weight,
                ..
            } => {
                format!("joined     {worker} (session {session}, ttl {ttl_ms} ms, weight {weight})")
            }
            EventKind::WorkerDraining { worker } => format!("draining   {worker}"),
            EventKind::WorkerEvicting { worker } => format!("evicting   {worker}"),
            EventKind::WorkerLeft { worker, reason } => format!("left       {worker} ({reason})"),
            EventKind::Granted {
                worker,
                ranges,
                token,
            } => format!("granted    {worker} {ranges} token {token}"),
            EventKind::Revoking {
                from, to, ranges, ..
            } => format!(
                "revoking   {from} {ranges} -> {}",
                to.as_deref().unwrap_or("(undecided)")
            ),
            EventKind::Released { worker, ranges } => format!("released   {worker} {ranges}"),
            EventKind::Reserved {
                worker,
                ranges,
                until_ms,
            } => format!("reserved   {worker} {ranges} until {until_ms}"),
            EventKind::Tombstone {
                key,
                partition,
                owner,
                ..
            } => format!(
                "tombstone  {key} partition {partition} ({})",
                owner.as_deref().unwrap_or("no owner")
            ),
            EventKind::TombstonePurged { key } => format!("purged     {key}"),
            EventKind::TombstonesAcked { worker, up_to } => {
                format!("acked      {worker} up to {up_to}")
            }
            EventKind::Unknown {} => "unknown event (a newer server?)".to_string(),
            EventKind::Progress {} => "progress".to_string(),
        };
        format!("{:>8}  {text}\n", self.revision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(view: &EventView) -> String {
        serde_json::to_value(view)
            .map(|v| v.to_string())
            .unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn events_print_as_before() {
        let granted = EventView::from(pb::WatchEvent {
            revision: 7,
            event: Some(Event::Granted(pb::Granted {
                worker: "w1".into(),
                ranges: vec![pb::PartitionRange { first: 0, last: 3 }],
                token: 7,
            })),
        });
        assert_eq!(
            json(&granted),
            r#"{"ranges":[[0,3]],"revision":7,"token":7,"type":"granted","worker":"w1"}"#
        );
        assert_eq!(granted.text(), "       7  granted    w1 0-3 token 7\n");
        let progress = EventView {
            revision: 9,
            event: EventKind::Progress {},
        };
        assert_eq!(json(&progress), r#"{"revision":9,"type":"progress"}"#);
        assert_eq!(progress.text(), "       9  progress\n");
        let unknown = EventView::from(pb::WatchEvent {
            revision: 3,
            event: None,
        });
        assert_eq!(json(&unknown), r#"{"revision":3,"type":"unknown"}"#);
    }
}
