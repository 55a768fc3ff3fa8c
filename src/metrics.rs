//! Prometheus metrics: counters kept in atomics wherever things happen, rendered in the text
//! exposition format by a tiny HTTP endpoint that is off by default and bound to loopback; each
//! counter also keeps its last hour, in fixed memory, for `passknock status`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::clock::{now_ms, UnixMs};
use crate::control::{GrantsBySource, LastHour};
use crate::store::Source;

/// nft apply latency buckets, seconds.
const BUCKETS: [f64; 8] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// One-minute buckets in the rolling window: the current minute and the 59 before it.
const WINDOW_MINUTES: u64 = 60;

/// One kind of event over the last hour, in fixed memory: a ring of one-minute buckets, so a
/// flood of refused knocks costs a compare-and-swap each and no allocation. A bucket is one
/// atomic holding the minute it counts (high 32 bits) and its count (low 32 bits): taking over a
/// stale bucket and counting in it is one step, so no event is lost to a race between the two.
pub struct Hourly {
    buckets: [AtomicU64; WINDOW_MINUTES as usize],
}

/// Unix minutes, kept to 32 bits (that wraps in the year 10136).
fn minute_of(now: UnixMs) -> u64 {
    (now.max(0) / 60_000) as u64 & u64::from(u32::MAX)
}

impl Hourly {
    pub const fn new() -> Hourly {
        Hourly {
            buckets: [const { AtomicU64::new(0) }; WINDOW_MINUTES as usize],
        }
    }

    /// One event at `now`.
    pub fn record(&self, now: UnixMs) {
        let minute = minute_of(now);
        let bucket = &self.buckets[(minute % WINDOW_MINUTES) as usize];
        let mut cur = bucket.load(Ordering::Relaxed);
        loop {
            let next = if cur >> 32 == minute {
                if cur as u32 == u32::MAX {
                    return; // 71,000 events a second for a minute: saturate rather than wrap.
                }
                cur + 1
            } else {
                // The bucket holds a minute an hour or more ago: it is this minute's now.
                (minute << 32) | 1
            };
            match bucket.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(seen) => cur = seen,
            }
        }
    }

    /// Events in the hour up to `now`: buckets stamped this minute or in the 59 before it.
    pub fn count(&self, now: UnixMs) -> u64 {
        let minute = minute_of(now);
        self.buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .filter(|v| {
                let stamp = v >> 32;
                stamp <= minute && minute - stamp < WINDOW_MINUTES
            })
            .map(|v| v & u64::from(u32::MAX))
            .sum()
    }
}

impl Default for Hourly {
    fn default() -> Self {
        Hourly::new()
    }
}

/// A counter since start (for Prometheus) and its last hour (for `passknock status`), bumped
/// together so the two never disagree about what was counted.
pub struct Tally {
    total: AtomicU64,
    hour: Hourly,
}

impl Tally {
    pub const fn new() -> Tally {
        Tally {
            total: AtomicU64::new(0),
            hour: Hourly::new(),
        }
    }

    fn add(&self, now: UnixMs) {
        self.total.fetch_add(1, Ordering::Relaxed);
        self.hour.record(now);
    }

    fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    fn last_hour(&self, now: UnixMs) -> u64 {
        self.hour.count(now)
    }
}

impl Default for Tally {
    fn default() -> Self {
        Tally::new()
    }
}

pub struct Metrics {
    grants: [Tally; 4],
    bans: Tally,
    failed_passcodes: Tally,
    knocks_accepted: Tally,
    knocks_refused: Tally,
    disa_calls: Tally,
    sip_calls: Tally,
    nft_applies: AtomicU64,
    nft_failures: AtomicU64,
    nft_micros: AtomicU64,
    nft_buckets: [AtomicU64; BUCKETS.len()],
    ami_connected: AtomicBool,
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
            grants: [const { Tally::new() }; 4],
            bans: Tally::new(),
            failed_passcodes: Tally::new(),
            knocks_accepted: Tally::new(),
            knocks_refused: Tally::new(),
            disa_calls: Tally::new(),
            sip_calls: Tally::new(),
            nft_applies: ZERO,
            nft_failures: ZERO,
            nft_micros: ZERO,
            nft_buckets: [ZERO; BUCKETS.len()],
            ami_connected: AtomicBool::new(false),
        }
    }

    pub fn grant(&self, source: Source) {
        self.grants[source_index(source)].add(now_ms());
    }

    pub fn ban(&self) {
        self.bans.add(now_ms());
    }

    pub fn failed_passcode(&self) {
        self.failed_passcodes.add(now_ms());
    }

    pub fn knock(&self, accepted: bool) {
        if accepted {
            &self.knocks_accepted
        } else {
            &self.knocks_refused
        }
        .add(now_ms());
    }

    /// A FastAGI session running the DISA script began: a call reached the passcode prompt.
    pub fn disa_call(&self) {
        self.disa_calls.add(now_ms());
    }

    /// AMI reported a SIP call the daemon had not seen.
    pub fn sip_call(&self) {
        self.sip_calls.add(now_ms());
    }

    /// What happened in the hour up to `now`. Kept in memory only: a restart starts from zero.
    pub fn last_hour(&self, now: UnixMs) -> LastHour {
        let g = |s| self.grants[source_index(s)].last_hour(now);
        LastHour {
            grants: GrantsBySource {
                disa: g(Source::Disa),
                knock: g(Source::Knock),
                admin: g(Source::Admin),
                ami: g(Source::Ami),
            },
            bans: self.bans.last_hour(now),
            failed_passcodes: self.failed_passcodes.last_hour(now),
            knocks_accepted: self.knocks_accepted.last_hour(now),
            knocks_refused: self.knocks_refused.last_hour(now),
            disa_calls: self.disa_calls.last_hour(now),
            sip_calls: self.sip_calls.last_hour(now),
        }
    }

    /// One nft batch: how long it took and whether nft took it.
    pub fn nft_apply(&self, took: Duration, ok: bool) {
        self.nft_applies.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.nft_failures.fetch_add(1, Ordering::Relaxed);
        }
        self.nft_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        let s = took.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                self.nft_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
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
                self.grants[i].total()
            );
        }
        for (name, help, v) in [
            ("passknock_bans_total", "Bans set.", self.bans.total()),
            (
                "passknock_failed_passcodes_total",
                "Wrong or locked-out DISA passcodes.",
                self.failed_passcodes.total(),
            ),
            (
                "passknock_knocks_accepted_total",
                "Knocks that earned a grant.",
                self.knocks_accepted.total(),
            ),
            (
                "passknock_knocks_refused_total",
                "Knocks refused (replayed, forged, aged, wrong).",
                self.knocks_refused.total(),
            ),
            (
                "passknock_disa_calls_total",
                "Calls that reached the DISA passcode prompt over FastAGI.",
                self.disa_calls.total(),
            ),
            (
                "passknock_sip_calls_total",
                "SIP calls seen starting over AMI.",
                self.sip_calls.total(),
            ),
            (
                "passknock_nft_apply_failures_total",
                "nft batches nft refused.",
                g(&self.nft_failures),
            ),
        ] {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        }
        o.push_str("# HELP passknock_nft_apply_seconds Time to apply one nft batch.\n");
        o.push_str("# TYPE passknock_nft_apply_seconds histogram\n");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                o,
                "passknock_nft_apply_seconds_bucket{{le=\"{b}\"}} {}",
                g(&self.nft_buckets[i])
            );
        }
        let n = g(&self.nft_applies);
        let _ = writeln!(o, "passknock_nft_apply_seconds_bucket{{le=\"+Inf\"}} {n}");
        let _ = writeln!(
            o,
            "passknock_nft_apply_seconds_sum {}",
            g(&self.nft_micros) as f64 / 1e6
        );
        let _ = writeln!(o, "passknock_nft_apply_seconds_count {n}");
        let _ = writeln!(
            o,
            "# HELP passknock_ami_connected 1 while logged in to Asterisk's manager interface.\n# TYPE passknock_ami_connected gauge\npassknock_ami_connected {}",
            u8::from(self.ami_connected.load(Ordering::Relaxed))
        );
        o
    }
}

/// Serves `GET /metrics` on `listener` until shutdown. Anything else gets a 404; a slow or
/// hostile client is cut off after a second.
pub async fn serve(listener: TcpListener, shutdown: CancellationToken) {
    loop {
        let (mut stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    warn!("metrics accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let mut got = 0;
            let read = tokio::time::timeout(Duration::from_secs(1), async {
                while got < buf.len() {
                    let n = stream.read(&mut buf[got..]).await?;
                    if n == 0 {
                        break;
                    }
                    got += n;
                    if buf[..got].windows(4).any(|w| w == b"\r\n\r\n")
                        || buf[..got].windows(2).any(|w| w == b"\n\n")
                    {
                        break;
                    }
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                return;
            }
            let head = String::from_utf8_lossy(&buf[..got]);
            let (status, body) = if head.starts_with("GET /metrics ") || head.starts_with("GET /metrics?") {
                ("200 OK", METRICS.render())
            } else {
                ("404 Not Found", "only /metrics here\n".to_string())
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(resp.as_bytes())).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    const MIN: UnixMs = 60_000;
    /// A minute boundary, well past the epoch.
    const T0: UnixMs = 1_795_248_000_000;

    #[test]
    fn an_hour_counts_then_drops_out_minute_by_minute() {
        let h = Hourly::new();
        h.record(T0);
        h.record(T0 + 59_999);
        h.record(T0 + 10 * MIN);
        assert_eq!(h.count(T0 + 10 * MIN), 3);
        // The first minute is still in the window 59 minutes on, and out of it at 60.
        assert_eq!(h.count(T0 + 59 * MIN + 59_999), 3);
        assert_eq!(h.count(T0 + 60 * MIN), 1);
        assert_eq!(h.count(T0 + 69 * MIN + 59_999), 1);
        assert_eq!(h.count(T0 + 70 * MIN), 0);
        // Long idle: nothing left, and a read from before the events counts none of them.
        assert_eq!(h.count(T0 + 1000 * MIN), 0);
        assert_eq!(h.count(T0 - MIN), 0);
    }

    #[test]
    fn a_bucket_an_hour_old_is_taken_over_not_added_to() {
        let h = Hourly::new();
        for _ in 0..5 {
            h.record(T0 + 3 * MIN);
        }
        // 60 minutes later the same slot of the ring: it starts again from one.
        h.record(T0 + 63 * MIN);
        assert_eq!(h.count(T0 + 63 * MIN), 1);
        // Round the ring twice more, one event a minute: only the last hour's 60 count.
        for m in 64..184 {
            h.record(T0 + m * MIN);
        }
        assert_eq!(h.count(T0 + 183 * MIN), 60);
        assert_eq!(h.count(T0 + 200 * MIN), 43, "minutes 141 to 183");
    }

    #[test]
    fn threads_taking_over_a_stale_bucket_lose_no_event() {
        let h = std::sync::Arc::new(Hourly::new());
        // The slot holds an hour-old minute; four threads then race to take it over.
        for _ in 0..1000 {
            h.record(T0 + MIN);
        }
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        h.record(T0 + 61 * MIN);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(h.count(T0 + 61 * MIN), 40_000);
    }

    #[test]
    fn last_hour_reports_each_kind() {
        let m = Metrics::new();
        m.grant(Source::Admin);
        m.grant(Source::Admin);
        m.grant(Source::Knock);
        m.ban();
        m.knock(true);
        m.knock(false);
        m.knock(false);
        m.failed_passcode();
        m.disa_call();
        m.sip_call();
        let now = now_ms();
        let h = m.last_hour(now);
        assert_eq!(h.grants.admin, 2);
        assert_eq!(h.grants.knock, 1);
        assert_eq!(h.grants.total(), 3);
        assert_eq!(
            (
                h.bans,
                h.knocks_accepted,
                h.knocks_refused,
                h.failed_passcodes,
                h.disa_calls,
                h.sip_calls
            ),
            (1, 1, 2, 1, 1, 1)
        );
        assert_eq!(m.last_hour(now + 61 * MIN), LastHour::default());
        assert!(m.render().contains("passknock_knocks_refused_total 2"));
    }
}
