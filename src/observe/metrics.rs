//! Prometheus metrics: counters and gauges kept in atomics wherever things happen, rendered in the
//! text exposition format by a tiny HTTP endpoint that is off by default and bound to loopback.
//! `passknock status` counts from the history in the store instead, so its counts survive a
//! restart; these counters start from zero with the process, as Prometheus expects.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::model::Source;

/// Latency buckets, seconds: fine at the bottom, where a netlink change lands, and fine around
/// 1 ms, so a p99 can be told on either side of it.
const BUCKETS: [f64; 17] = [
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    2.5, 5.0,
];

/// A latency histogram in atomics.
pub struct Histogram {
    count: AtomicU64,
    micros: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
}

impl Histogram {
    const fn new() -> Histogram {
        Histogram {
            count: ZERO,
            micros: ZERO,
            buckets: [ZERO; BUCKETS.len()],
        }
    }

    pub fn observe(&self, took: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.micros.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        let s = took.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn render(&self, o: &mut String, name: &str, help: &str) {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(o, "{name}_bucket{{le=\"{b}\"}} {}", g(&self.buckets[i]));
        }
        let n = g(&self.count);
        let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {n}");
        let _ = writeln!(o, "{name}_sum {}", g(&self.micros) as f64 / 1e6);
        let _ = writeln!(o, "{name}_count {n}");
    }
}

pub struct Metrics {
    grants: [AtomicU64; 4],
    bans: AtomicU64,
    failed_passcodes: AtomicU64,
    knocks_accepted: AtomicU64,
    knocks_refused: AtomicU64,
    disa_calls: AtomicU64,
    sip_calls: AtomicU64,
    /// DISA grants made in the `attempted` mode; grants replaced by their holder's new address;
    /// grants extended in place by a re-call or re-knock from the same address.
    attempted_grants: AtomicU64,
    grants_replaced: AtomicU64,
    grants_extended: AtomicU64,
    /// History rows dropped: the writer's queue was full, or the store refused a batch.
    history_dropped: AtomicU64,
    /// Gauges: what is live now.
    live_grants: AtomicU64,
    live_bans: AtomicU64,
    ami_contacts: AtomicU64,
    ami_calls: AtomicU64,
    nft_failures: AtomicU64,
    nft_apply: Histogram,
    /// From a request (control socket, AMI event, DISA, knock) reaching the daemon to its
    /// elements acknowledged by the kernel.
    request_to_kernel: Histogram,
    /// The last read-back and compare of the whole table (off the engine's thread).
    reconcile_micros: AtomicU64,
    reconcile_elements: AtomicU64,
    ami_connected: AtomicBool,
    /// Packets responsive SIP dropped over its rate, from the table's counter at the last
    /// read-back; `u64::MAX` while it is off (not exported then).
    sip_rate_drops: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);

/// The daemon's one set of metrics.
pub static METRICS: Metrics = Metrics::new();

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

fn source_index(s: Source) -> usize {
    match s {
        Source::Disa => 0,
        Source::Knock => 1,
        Source::Admin => 2,
        Source::Ami => 3,
    }
}

impl Metrics {
    pub const fn new() -> Metrics {
        Metrics {
            grants: [ZERO; 4],
            bans: ZERO,
            failed_passcodes: ZERO,
            knocks_accepted: ZERO,
            knocks_refused: ZERO,
            disa_calls: ZERO,
            sip_calls: ZERO,
            attempted_grants: ZERO,
            grants_replaced: ZERO,
            grants_extended: ZERO,
            history_dropped: ZERO,
            live_grants: ZERO,
            live_bans: ZERO,
            ami_contacts: ZERO,
            ami_calls: ZERO,
            nft_failures: ZERO,
            nft_apply: Histogram::new(),
            request_to_kernel: Histogram::new(),
            reconcile_micros: ZERO,
            reconcile_elements: ZERO,
            ami_connected: AtomicBool::new(false),
            sip_rate_drops: AtomicU64::new(u64::MAX),
        }
    }

    pub fn grant(&self, source: Source) {
        bump(&self.grants[source_index(source)]);
    }

    pub fn ban(&self) {
        bump(&self.bans);
    }

    pub fn failed_passcode(&self) {
        bump(&self.failed_passcodes);
    }

    pub fn knock(&self, accepted: bool) {
        bump(if accepted {
            &self.knocks_accepted
        } else {
            &self.knocks_refused
        });
    }

    /// A FastAGI session running the DISA script began: a call reached the passcode prompt.
    pub fn disa_call(&self) {
        bump(&self.disa_calls);
    }

    /// AMI reported a SIP call the daemon had not seen.
    pub fn sip_call(&self) {
        bump(&self.sip_calls);
    }

    /// A DISA grant to the address the account's phone was trying to register from.
    pub fn attempted_grant(&self) {
        bump(&self.attempted_grants);
    }

    pub fn grant_replaced(&self) {
        bump(&self.grants_replaced);
    }

    pub fn grant_extended(&self) {
        bump(&self.grants_extended);
    }

    pub fn history_dropped(&self, n: u64) {
        self.history_dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Grant and ban rows in the store now (set by the engine after each change).
    pub fn set_live(&self, grants: u64, bans: u64) {
        self.live_grants.store(grants, Ordering::Relaxed);
        self.live_bans.store(bans, Ordering::Relaxed);
    }

    /// Endpoints registered, as AMI reports them.
    pub fn set_contacts(&self, n: u64) {
        self.ami_contacts.store(n, Ordering::Relaxed);
    }

    /// Live SIP calls, as AMI reports them.
    pub fn set_calls(&self, n: u64) {
        self.ami_calls.store(n, Ordering::Relaxed);
    }

    /// One nft batch: how long it took and whether nft took it.
    pub fn nft_apply(&self, took: Duration, ok: bool) {
        if !ok {
            self.nft_failures.fetch_add(1, Ordering::Relaxed);
        }
        self.nft_apply.observe(took);
    }

    /// One request's elements acknowledged by the kernel, `took` after it reached the daemon.
    pub fn request_to_kernel(&self, took: Duration) {
        self.request_to_kernel.observe(took);
    }

    /// One read-back and compare of the whole table.
    pub fn reconciled(&self, took: Duration, elements: usize) {
        self.reconcile_micros
            .store(took.as_micros() as u64, Ordering::Relaxed);
        self.reconcile_elements.store(elements as u64, Ordering::Relaxed);
    }

    /// The table's count of what responsive SIP dropped over its rate; `None`: it is off.
    pub fn sip_rate_drops(&self, n: Option<u64>) {
        self.sip_rate_drops
            .store(n.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub fn ami_connected(&self, up: bool) {
        self.ami_connected.store(up, Ordering::Relaxed);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut o = String::new();
        o.push_str("# HELP passknock_grants_total Grants made, by where they came from.\n");
        o.push_str("# TYPE passknock_grants_total counter\n");
        for (i, s) in ["disa", "knock", "admin", "ami"].iter().enumerate() {
            let _ = writeln!(
                o,
                "passknock_grants_total{{source=\"{s}\"}} {}",
                g(&self.grants[i])
            );
        }
        for (name, help, v) in [
            ("passknock_bans_total", "Bans set.", g(&self.bans)),
            (
                "passknock_failed_passcodes_total",
                "Wrong or locked-out DISA passcodes.",
                g(&self.failed_passcodes),
            ),
            (
                "passknock_knocks_accepted_total",
                "Knocks that earned a grant.",
                g(&self.knocks_accepted),
            ),
            (
                "passknock_knocks_refused_total",
                "Knocks refused (replayed, forged, aged, wrong).",
                g(&self.knocks_refused),
            ),
            (
                "passknock_disa_calls_total",
                "Calls that reached the DISA passcode prompt over FastAGI.",
                g(&self.disa_calls),
            ),
            (
                "passknock_sip_calls_total",
                "SIP calls seen starting over AMI.",
                g(&self.sip_calls),
            ),
            (
                "passknock_attempted_grants_total",
                "DISA grants to the address the account's phone was seen trying to register from.",
                g(&self.attempted_grants),
            ),
            (
                "passknock_grants_replaced_total",
                "Grants ended by their holder's grant from a new address.",
                g(&self.grants_replaced),
            ),
            (
                "passknock_grants_extended_total",
                "Grants extended in place by a re-call or re-knock from the same address.",
                g(&self.grants_extended),
            ),
            (
                "passknock_history_dropped_total",
                "Audit events not kept in the history: its queue was full or the store refused them.",
                g(&self.history_dropped),
            ),
            (
                "passknock_nft_apply_failures_total",
                "nft batches nft refused.",
                g(&self.nft_failures),
            ),
        ] {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        }
        self.nft_apply.render(
            &mut o,
            "passknock_nft_apply_seconds",
            "Time to apply one batch of element changes.",
        );
        self.request_to_kernel.render(
            &mut o,
            "passknock_request_to_kernel_seconds",
            "From a request reaching the daemon to its elements acknowledged by the kernel.",
        );
        for (name, help, v) in [
            (
                "passknock_live_grants",
                "Grants in the store now (live, or ended and not yet pruned).",
                g(&self.live_grants),
            ),
            (
                "passknock_live_bans",
                "Bans in the store now.",
                g(&self.live_bans),
            ),
            (
                "passknock_ami_contacts",
                "Endpoints registered, as Asterisk reports them over AMI.",
                g(&self.ami_contacts),
            ),
            (
                "passknock_ami_calls",
                "Live SIP calls, as Asterisk reports them over AMI.",
                g(&self.ami_calls),
            ),
            (
                "passknock_reconcile_last_elements",
                "Elements the last read-back found in the table.",
                g(&self.reconcile_elements),
            ),
        ] {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        let _ = writeln!(
            o,
            "# HELP passknock_reconcile_last_seconds How long the last read-back and compare of the whole table took.\n# TYPE passknock_reconcile_last_seconds gauge\npassknock_reconcile_last_seconds {}",
            g(&self.reconcile_micros) as f64 / 1e6
        );
        let _ = writeln!(
            o,
            "# HELP passknock_ami_connected 1 while logged in to Asterisk's manager interface.\n# TYPE passknock_ami_connected gauge\npassknock_ami_connected {}",
            u8::from(self.ami_connected.load(Ordering::Relaxed))
        );
        let drops = g(&self.sip_rate_drops);
        if drops != u64::MAX {
            // The kernel's counter starts again at 0 when the table is rebuilt, as a counter may.
            let _ = writeln!(
                o,
                "# HELP passknock_sip_rate_drops_total Packets responsive SIP dropped in the kernel over a source's rate, as of the last read-back.\n# TYPE passknock_sip_rate_drops_total counter\npassknock_sip_rate_drops_total {drops}"
            );
        }
        crate::observe::attempts::SIP_ATTEMPTS.render(&mut o);
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buckets around 1 ms tell a p99 just under it from one just over it.
    #[test]
    fn buckets_are_fine_around_a_millisecond() {
        let m = Metrics::new();
        m.nft_apply(Duration::from_micros(700), true);
        m.nft_apply(Duration::from_micros(1200), true);
        let t = m.render();
        for (le, n) in [
            ("0.0005", 0),
            ("0.00075", 1),
            ("0.001", 1),
            ("0.0015", 2),
            ("0.002", 2),
        ] {
            let line = format!("passknock_nft_apply_seconds_bucket{{le=\"{le}\"}} {n}\n");
            assert!(t.contains(&line), "{line} in {t}");
        }
    }

    #[test]
    fn renders_counters_and_histogram() {
        let m = Metrics::new();
        m.grant(Source::Knock);
        m.grant(Source::Knock);
        m.nft_apply(Duration::from_millis(7), true);
        m.nft_apply(Duration::from_millis(300), false);
        let t = m.render();
        assert!(t.contains("passknock_grants_total{source=\"knock\"} 2"), "{t}");
        assert!(
            t.contains("passknock_nft_apply_seconds_bucket{le=\"0.01\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("passknock_nft_apply_seconds_bucket{le=\"1\"} 2"),
            "{t}"
        );
        assert!(t.contains("passknock_nft_apply_seconds_count 2"), "{t}");
        assert!(t.contains("passknock_nft_apply_failures_total 1"), "{t}");
        assert!(t.contains("passknock_ami_connected 0"), "{t}");
        assert!(t.contains("passknock_disa_calls_total 0"), "{t}");
        assert!(t.contains("passknock_sip_calls_total 0"), "{t}");
    }

    #[test]
    fn gauges_say_what_is_live_now() {
        let m = Metrics::new();
        m.set_live(3, 1);
        m.set_contacts(2);
        m.set_calls(1);
        m.set_live(2, 1);
        m.history_dropped(5);
        let t = m.render();
        assert!(
            t.contains("# TYPE passknock_live_grants gauge\npassknock_live_grants 2\n"),
            "{t}"
        );
        assert!(t.contains("passknock_live_bans 1\n"), "{t}");
        assert!(t.contains("passknock_ami_contacts 2\n"), "{t}");
        assert!(t.contains("passknock_ami_calls 1\n"), "{t}");
        assert!(t.contains("passknock_history_dropped_total 5\n"), "{t}");
    }
}
