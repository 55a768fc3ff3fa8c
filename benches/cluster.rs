//! Cluster bench (as root: `cargo bench --bench cluster`): two real passknockd nodes in network
//! namespaces of their own share one real PostgreSQL. Reports, never asserts timings: from a grant
//! at A to its element in B's nft (median, p99, over 1,000 grants one after another); grants per
//! second the cluster takes from many admins at both nodes at once, acknowledged and in both
//! tables; and how long a node takes to bring 100,000 live grants back into its table, after the
//! store comes back and after the node is killed and restarted.
//!
//! Element times come from `nft monitor` in each node's namespace, read as the kernel reports
//! them. `CLUSTER_BENCH_LIVE` sets the live grant count for the resync (default 100000).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use passknock::control::{client, Reply, Request};
use support::cluster::{Cluster, ClusterConfig, ALLOW_SET};
use support::daemon::proc_kib;
use support::netns::Netns;

const ONE_BY_ONE: usize = 1_000;
const BURST: usize = 5_000;
/// Admins granting at once in the burst and the fill, half at each node.
const CLIENTS: usize = 16;

/// The `n`th grant's address: unique for every `n` the bench uses.
fn addr(n: usize) -> String {
    format!("100.{}.{}.{}", 64 + n / 62_500, (n / 250) % 250, n % 250 + 1)
}

/// When each address of the allow set first appeared in one node's table, since the last reset.
struct Watch {
    seen: Arc<Mutex<HashMap<String, Instant>>>,
    _monitor: Child,
}

impl Watch {
    fn start(ns: &Netns) -> Watch {
        let mut child = ns
            .command("nft")
            .args(["monitor", "new", "elements"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nft monitor");
        let out = child.stdout.take().unwrap();
        let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let s = seen.clone();
        let prefix = format!("add element inet passknock {ALLOW_SET} {{ ");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let at = Instant::now();
                if let Some(rest) = line.strip_prefix(&prefix) {
                    if let Some(a) = rest.split_whitespace().next() {
                        s.lock().unwrap().entry(a.to_string()).or_insert(at);
                    }
                }
            }
        });
        // The monitor subscribes as it starts: give it a moment before anything is measured.
        std::thread::sleep(Duration::from_millis(300));
        Watch {
            seen,
            _monitor: child,
        }
    }

    fn reset(&self) {
        self.seen.lock().unwrap().clear();
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn at(&self, a: &str) -> Option<Instant> {
        self.seen.lock().unwrap().get(a).copied()
    }

    /// Waits until `n` addresses were seen (at most `within`); returns when the last came.
    fn until(&self, n: usize, within: Duration) -> Option<Instant> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            {
                let seen = self.seen.lock().unwrap();
                if seen.len() >= n {
                    return seen.values().max().copied();
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// One grant through the control socket, as `passknock grant` sends it.
fn grant(socket: &Path, n: usize) {
    let req = Request::Grant {
        address: addr(n),
        services: Vec::new(),
        ttl: None,
        note: String::new(),
    };
    match client::call(socket, &req) {
        Ok(Reply::Granted { .. }) => {}
        other => panic!("grant {} refused: {other:?}", addr(n)),
    }
}

/// Grants `range` from `CLIENTS` threads spread over `sockets`; returns the time all took.
fn burst(sockets: &[PathBuf], range: std::ops::Range<usize>) -> Duration {
    let next = AtomicUsize::new(range.start);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..CLIENTS {
            let (socket, next, end) = (&sockets[t % sockets.len()], &next, range.end);
            s.spawn(move || loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= end {
                    break;
                }
                grant(socket, n);
            });
        }
    });
    start.elapsed()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let live: usize = std::env::var("CLUSTER_BENCH_LIVE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
        .max(ONE_BY_ONE + BURST);
    let mut c = Cluster::start(ClusterConfig {
        nodes: 2,
        roads: 0,
        reconcile: "10m".into(),
        ..ClusterConfig::default()
    });
    let sockets: Vec<PathBuf> = c.nodes.iter().map(|n| n.d().socket.clone()).collect();
    let watch_a = Watch::start(&c.node(0).ns);
    let watch_b = Watch::start(&c.node(1).ns);

    // 1. One grant after another at A: request to B's element.
    let mut sent = Vec::with_capacity(ONE_BY_ONE);
    let mut acks = Vec::with_capacity(ONE_BY_ONE);
    for n in 0..ONE_BY_ONE {
        let t0 = Instant::now();
        grant(&sockets[0], n);
        acks.push(ms(t0.elapsed()));
        sent.push(t0);
    }
    watch_b
        .until(ONE_BY_ONE, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("B's table has {} of {ONE_BY_ONE}:\n{}", watch_b.count(), c.logs()));
    let mut lat: Vec<f64> = (0..ONE_BY_ONE)
        .map(|n| ms(watch_b.at(&addr(n)).unwrap().saturating_duration_since(sent[n])))
        .collect();
    lat.sort_by(|x, y| x.partial_cmp(y).unwrap());
    acks.sort_by(|x, y| x.partial_cmp(y).unwrap());
    println!("== {ONE_BY_ONE} grants at A, one after another ==");
    println!(
        "grant at A to element in B's nft: median {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat[lat.len() - 1]
    );
    println!(
        "grant at A acknowledged (durable in the store, in A's nft): median {:.1} ms, p99 {:.1} ms",
        pct(&acks, 0.5),
        pct(&acks, 0.99)
    );

    // 2. Many admins at both nodes at once.
    let start = Instant::now();
    let took = burst(&sockets, ONE_BY_ONE..ONE_BY_ONE + BURST);
    let all = ONE_BY_ONE + BURST;
    let in_a = watch_a.until(all, Duration::from_secs(120));
    let in_b = watch_b.until(all, Duration::from_secs(120));
    println!("== {BURST} grants from {CLIENTS} admins at once, half at A, half at B ==");
    println!(
        "acknowledged: {:.0} grants/s ({:.0} ms for all)",
        BURST as f64 / took.as_secs_f64(),
        ms(took)
    );
    match (in_a, in_b) {
        (Some(a), Some(b)) => {
            let everywhere = a.max(b).saturating_duration_since(start);
            println!(
                "in both nodes' nft: {:.0} grants/s ({:.0} ms for all)",
                BURST as f64 / everywhere.as_secs_f64(),
                ms(everywhere)
            );
        }
        _ => println!(
            "in both nodes' nft: NOT all within 120 s (A has {}, B has {})",
            watch_a.count(),
            watch_b.count()
        ),
    }

    // 3. Fill the store to `live` grants, then take B's table away and time the way back.
    let fill = burst(&sockets, all..live);
    println!(
        "== {live} live grants: the fill of {} more took {:.1} s ({:.0} grants/s) ==",
        live - all,
        fill.as_secs_f64(),
        (live - all) as f64 / fill.as_secs_f64()
    );
    assert!(
        watch_b.until(live, Duration::from_secs(300)).is_some(),
        "B's table has {} of {live}:\n{}",
        watch_b.count(),
        c.logs()
    );
    let b_pid = c.node(1).d().pid();
    println!(
        "B's memory with {live} grants: {} KiB (peak {} KiB)",
        proc_kib(b_pid, "VmRSS:"),
        proc_kib(b_pid, "VmHWM:")
    );

    // After a reconnect: B's set emptied behind its back, the store stopped and started again.
    c.node(1)
        .d()
        .nft(&["flush", "set", "inet", "passknock", ALLOW_SET]);
    watch_b.reset();
    c.pg.stop();
    c.pg.start_again();
    let back = Instant::now();
    match watch_b.until(live, Duration::from_secs(600)) {
        Some(t) => println!(
            "resync after the store came back: {live} grants in B's nft in {:.2} s",
            t.saturating_duration_since(back).as_secs_f64()
        ),
        None => println!(
            "resync after the store came back: only {} of {live} in B's nft after 600 s",
            watch_b.count()
        ),
    }

    // After a crash: B killed, its table gone, B started again.
    let b = c.node_mut(1);
    b.d_mut().kill9();
    b.d().nft(&["delete", "table", "inet", "passknock"]);
    watch_b.reset();
    let t0 = Instant::now();
    b.d_mut().spawn();
    let answering = t0.elapsed();
    match watch_b.until(live, Duration::from_secs(600)) {
        Some(t) => println!(
            "resync after a restart: {live} grants in B's nft in {:.2} s (control socket answered after {:.2} s)",
            t.saturating_duration_since(t0).as_secs_f64(),
            answering.as_secs_f64()
        ),
        None => println!(
            "resync after a restart: only {} of {live} in B's nft after 600 s",
            watch_b.count()
        ),
    }
}
