//! Recording audit events: one call writes an event's `passknock::observe::audit` line and hands its row
//! to the history writer the daemon installed, never waiting on it.

use std::sync::OnceLock;

use tracing::{info, warn};

use crate::model::{Event, Kind};

/// Where rows go: the store's history writer, once the daemon has started one.
type Sink = Box<dyn Fn(Event) + Send + Sync>;

static SINK: OnceLock<Sink> = OnceLock::new();

/// Makes `sink` where every recorded event's row goes, for the process's life. The first
/// installed sink stays.
pub fn install(sink: impl Fn(Event) + Send + Sync + 'static) {
    let _ = SINK.set(Box::new(sink));
}

fn submit(event: Event) {
    if let Some(sink) = SINK.get() {
        sink(event);
    }
}

/// Writes `event`'s audit line and queues its row for the history table. Never blocks: a full
/// queue drops the row and counts it (`passknock_history_dropped_total`); the line is written
/// whatever happens.
pub fn record(event: Event) {
    let line = event.line();
    if event.kind == Kind::Suspension {
        warn!(target: "passknock::audit", "{line}");
    } else {
        info!(target: "passknock::audit", "{line}");
    }
    submit(event);
}

/// Queues `event`'s row without an audit line: for events whose lines are rate-limited (a flood
/// of refused knocks) or that are not audit lines at all (a SIP call seen over AMI).
pub fn count(event: Event) {
    submit(event);
}
