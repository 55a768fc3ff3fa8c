//! Counters of the SIP attempt reader — dropped SIP requests the table logged — kept in atomics
//! by the reader thread and read by `passknock status` and the Prometheus endpoint. They start
//! from zero with the process.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// The daemon's one set of SIP attempt counters.
pub static SIP_ATTEMPTS: SipAttemptCounters = SipAttemptCounters::new();

pub struct SipAttemptCounters {
    active: AtomicBool,
    seen: AtomicU64,
    recorded: AtomicU64,
    not_account: AtomicU64,
    ignored: AtomicU64,
    malformed: AtomicU64,
    overruns: AtomicU64,
    users: AtomicU64,
    sources: AtomicU64,
}

/// What the counters say at one moment; the status reply carries it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SipAttemptCounts {
    /// Datagrams the table logged and the reader received.
    pub seen: u64,
    /// REGISTERs and INVITEs from an account's endpoint, remembered.
    pub recorded: u64,
    /// Well-formed requests naming a user that is no account's endpoint: not remembered.
    pub not_account: u64,
    /// Well-formed SIP requests that name no registering or calling user (OPTIONS, a REGISTER
    /// removing every binding, ...).
    pub ignored: u64,
    /// Not SIP, oversized, malformed, or not a whole UDP datagram: refused, no log line each.
    pub malformed: u64,
    /// Times the kernel dropped logged packets because the reader's socket buffer was full.
    pub overruns: u64,
    /// Users and addresses the attempt memory holds now.
    pub users: u64,
    pub sources: u64,
}

impl Default for SipAttemptCounters {
    fn default() -> Self {
        SipAttemptCounters::new()
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

impl SipAttemptCounters {
    pub const fn new() -> SipAttemptCounters {
        SipAttemptCounters {
            active: AtomicBool::new(false),
            seen: AtomicU64::new(0),
            recorded: AtomicU64::new(0),
            not_account: AtomicU64::new(0),
            ignored: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            overruns: AtomicU64::new(0),
            users: AtomicU64::new(0),
            sources: AtomicU64::new(0),
        }
    }

    /// The reader runs (set once it holds the NFLOG group).
    pub fn set_active(&self, on: bool) {
        self.active.store(on, Ordering::Relaxed);
    }

    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    pub fn seen(&self) {
        bump(&self.seen);
    }

    pub fn recorded(&self) {
        bump(&self.recorded);
    }

    pub fn not_account(&self) {
        bump(&self.not_account);
    }

    pub fn ignored(&self) {
        bump(&self.ignored);
    }

    pub fn malformed(&self, n: u64) {
        self.malformed.fetch_add(n, Ordering::Relaxed);
    }

    /// The socket's overrun count so far (the reader owns the socket and its tally).
    pub fn set_overruns(&self, n: u64) {
        self.overruns.store(n, Ordering::Relaxed);
    }

    pub fn set_memory(&self, users: u64, sources: u64) {
        self.users.store(users, Ordering::Relaxed);
        self.sources.store(sources, Ordering::Relaxed);
    }

    /// The counts now, or `None` while no reader runs.
    pub fn counts(&self) -> Option<SipAttemptCounts> {
        self.is_active().then(|| self.counts_now())
    }

    /// The counts now, reader or not.
    pub fn counts_now(&self) -> SipAttemptCounts {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SipAttemptCounts {
            seen: g(&self.seen),
            recorded: g(&self.recorded),
            not_account: g(&self.not_account),
            ignored: g(&self.ignored),
            malformed: g(&self.malformed),
            overruns: g(&self.overruns),
            users: g(&self.users),
            sources: g(&self.sources),
        }
    }

    /// Appends the counters in the Prometheus text format.
    pub fn render(&self, o: &mut String) {
        let c = self.counts_now();
        let _ = writeln!(
            o,
            "# HELP passknock_sip_attempts_total Dropped SIP datagrams the table logged, by what the reader made of them.\n# TYPE passknock_sip_attempts_total counter"
        );
        for (what, v) in [
            ("recorded", c.recorded),
            ("not_account", c.not_account),
            ("ignored", c.ignored),
            ("malformed", c.malformed),
        ] {
            let _ = writeln!(o, "passknock_sip_attempts_total{{outcome=\"{what}\"}} {v}");
        }
        for (name, kind, help, v) in [
            (
                "passknock_sip_attempts_overruns_total",
                "counter",
                "Times logged SIP datagrams were lost because the reader's socket buffer was full.",
                c.overruns,
            ),
            (
                "passknock_sip_attempt_users",
                "gauge",
                "Account endpoints with a remembered registration attempt.",
                c.users,
            ),
            (
                "passknock_sip_attempt_sources",
                "gauge",
                "Addresses remembered as trying to register, across users.",
                c.sources,
            ),
        ] {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_while_a_reader_runs_and_render_by_outcome() {
        let c = SipAttemptCounters::new();
        assert_eq!(c.counts(), None);
        c.set_active(true);
        c.seen();
        c.seen();
        c.recorded();
        c.malformed(1);
        c.set_memory(1, 1);
        let k = c.counts().unwrap();
        assert_eq!((k.seen, k.recorded, k.malformed, k.users), (2, 1, 1, 1));
        let mut o = String::new();
        c.render(&mut o);
        assert!(
            o.contains("passknock_sip_attempts_total{outcome=\"recorded\"} 1\n"),
            "{o}"
        );
        assert!(
            o.contains("passknock_sip_attempts_total{outcome=\"malformed\"} 1\n"),
            "{o}"
        );
        assert!(
            o.contains("# TYPE passknock_sip_attempt_sources gauge\npassknock_sip_attempt_sources 1\n"),
            "{o}"
        );
    }
}
