//! Kernel-speed bench, issue 14's "Done when" (as root: `cargo bench --bench kernel_speed`). The
//! real daemon and real nft in a network namespace the bench makes; every figure twice in one
//! run, with `[firewall] elements = "netlink"` and with `elements = "nft"` (the old path that
//! spawns nft for each change), then a table of target, both, and the ratio nft/netlink.
//!
//! 1. Inside the daemon, a request arriving to its elements acknowledged by the kernel
//!    (`passknock_request_to_kernel_seconds`), over 1,000 grants on the control socket.
//! 2. `passknock grant` round trip, process start to exit, 1,000 runs.
//! 3. AMI security event to ban in nft (a local AMI peer sends it; `nft monitor` sees the ban).
//! 4. 10,000 addresses crossing the AMI ban threshold within a second: until all are banned.
//! 5. Start with 100,000 live grants, table gone, to ready.
//! 6. Read-back and compare of 200,000 elements, and grants made while it runs.
//! 7. 500 simultaneous DISA passcodes over FastAGI: first passcode to last grant.
//!
//! No timing is asserted; what is asserted is that every grant and ban is in nft.
//! `KERNEL_SPEED_PATHS=netlink` runs the netlink path alone; `KERNEL_SPEED_FIGURES=1,7` runs
//! only those figures (5 and 6 run together).

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "kernel_speed/ami.rs"]
mod ami;
#[path = "kernel_speed/big.rs"]
mod big;
#[path = "kernel_speed/common.rs"]
mod common;
#[path = "kernel_speed/disa.rs"]
mod disa;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{addr, grant, histogram_line, ms, present, set_members, table, Cell, Samples};
use support::ami_peer::AmiPeer;
use support::daemon::{bench_config, write_secret, Daemon};
use support::disa_daemon::burst_sections;
use support::metrics::{scrape, Histogram};
use support::netns::Netns;

/// The daemon's metrics endpoint, inside its namespace.
pub const METRICS: &str = "127.0.0.1:9464";
/// The AMI offences that get an address banned (the shipped default).
pub const BAN_THRESHOLD: u32 = 5;
const AMI_SECRET: &str = "kernel-speed-bench";
const GRANTS: u32 = 1000;

/// One path's figures (times in ms).
#[derive(Default)]
pub struct Figures {
    pub r2k: Histogram,
    pub sock_rt: Samples,
    pub cli: Samples,
    pub ami_ban: Samples,
    pub ami_inside: Samples,
    pub flood_ms: Option<f64>,
    pub flood_banned: usize,
    pub flood_cap: Duration,
    pub ready_ms: Option<f64>,
    pub reconcile_us: Option<f64>,
    /// Until the gauge is set: the reconcile's time estimated from the daemon's log.
    pub reconcile_log_ms: Option<f64>,
    pub reconciles: usize,
    pub rt_quiet: Samples,
    pub rt_busy: Samples,
    pub disa_wall: Option<f64>,
    pub disa_calls: Samples,
}

/// The config both daemons of a path share: the element path and the metrics endpoint.
fn common_extra(path: &str) -> String {
    format!("\n[firewall]\nelements = \"{path}\"\n\n[metrics]\nenabled = true\nlisten = \"{METRICS}\"\n")
}

/// Plus AMI (to the bench's peer) and DISA, for figures 1–4 and 7.
fn live_extra(path: &str, dir: &Path, peer: &AmiPeer) -> String {
    format!(
        r#"{}
[ami]
enabled = true
address = "{}"
username = "passknock"
secret-file = "{dir}/ami.secret"
login = "plain"
ban-threshold = {BAN_THRESHOLD}
{}"#,
        common_extra(path),
        peer.addr,
        burst_sections(dir),
        dir = dir.display()
    )
}

/// Figure 1: 1,000 grants on the control socket, one after another, nothing else running.
fn socket_grants(ns: &Netns, d: &Daemon, f: &mut Figures) {
    println!("== 1. {GRANTS} grants on the control socket, one at a time, no other load ==");
    let m = METRICS.parse().unwrap();
    let before = scrape(ns, m);
    let mut rt = Vec::new();
    for i in 0..GRANTS {
        let t = Instant::now();
        grant(&d.socket, addr(1, i).into());
        rt.push(ms(t.elapsed()));
    }
    let after = scrape(ns, m);
    let h = |s: &support::metrics::Scrape, n: &str| s.histogram(n);
    f.r2k = h(&after, "passknock_request_to_kernel_seconds")
        .since(&h(&before, "passknock_request_to_kernel_seconds"));
    let apply = h(&after, "passknock_nft_apply_seconds").since(&h(&before, "passknock_nft_apply_seconds"));
    f.sock_rt = Samples::new(rt);
    let n = present(&set_members(ns, "allow_sip_v4"), (0..GRANTS).map(|i| addr(1, i)));
    println!(
        "passknock_request_to_kernel_seconds (request in → kernel ack): {}",
        histogram_line(&f.r2k)
    );
    println!(
        "passknock_nft_apply_seconds (the element batch alone): {}",
        histogram_line(&apply)
    );
    println!(
        "socket round trip seen by the bench (connect, request, reply): {}",
        f.sock_rt.line()
    );
    println!("granted addresses in allow_sip_v4: {n}/{GRANTS}");
    assert_eq!(n, GRANTS as usize);
}

/// Figure 2: 1,000 `passknock grant` processes.
fn cli_grants(ns: &Netns, d: &Daemon, f: &mut Figures) {
    println!("== 2. {GRANTS} `passknock grant` runs, process start to exit ==");
    let mut rt = Vec::new();
    for i in 0..GRANTS {
        let a = addr(2, i).to_string();
        let t = Instant::now();
        let out = d.cli(&["grant", &a, "--services", "sip", "--ttl", "1h"]);
        rt.push(ms(t.elapsed()));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    f.cli = Samples::new(rt);
    let want: Vec<Ipv4Addr> = (0..GRANTS).map(|i| addr(2, i)).collect();
    let n = present(&set_members(ns, "allow_sip_v4"), want);
    println!("passknock grant round trip: {}", f.cli.line());
    println!("granted addresses in allow_sip_v4: {n}/{GRANTS}");
    assert_eq!(n, GRANTS as usize);
}

/// Whether figure `n` runs: all of them, or those `KERNEL_SPEED_FIGURES` lists (`1,7`; 5 and 6
/// run together).
fn figure(n: u32) -> bool {
    match std::env::var("KERNEL_SPEED_FIGURES") {
        Ok(list) => list.split(',').any(|f| f.trim().parse() == Ok(n)),
        Err(_) => true,
    }
}

/// Every figure for one element path, in a namespace of its own.
fn run(path: &str) -> Figures {
    println!("\n######## [firewall] elements = \"{path}\" ########");
    let t = Instant::now();
    let ns = Netns::new(&format!("ks{path}"));
    // Figure 4's wait: the old path is known to be slow; the new one should be done in a second,
    // so a minute already says it failed.
    let mut f = Figures {
        flood_cap: Duration::from_secs(if path == "nft" { 120 } else { 60 }),
        ..Figures::default()
    };
    {
        let dir = tempfile::tempdir().unwrap();
        let peer = AmiPeer::start(&ns, "passknock", AMI_SECRET);
        write_secret(&dir.path().join("ami.secret"), AMI_SECRET);
        let cfg = bench_config(dir.path(), &live_extra(path, dir.path(), &peer));
        let mut d = Daemon::start(&ns, dir.path(), &cfg);
        assert!(
            peer.wait_synced(Duration::from_secs(10)),
            "the daemon did not log in to the AMI peer:\n{}",
            d.log_text()
        );
        if figure(1) {
            socket_grants(&ns, &d, &mut f);
        }
        if figure(2) {
            cli_grants(&ns, &d, &mut f);
        }
        if figure(7) {
            disa::run(&ns, &d, &mut f);
        }
        if figure(3) {
            ami::event_to_ban(&ns, &d, &peer, &mut f);
        }
        if figure(4) {
            ami::flood(&ns, &mut d, &peer, f.flood_cap, &mut f);
        }
    }
    if figure(5) || figure(6) {
        // As after a reboot: no table at all.
        let flushed = ns.exec("nft", &["flush", "ruleset"]);
        assert!(flushed.status.success());
        big::run(&ns, &common_extra(path), &mut f);
    }
    println!("({path}: {:.0} s)", t.elapsed().as_secs_f64());
    f
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let t = Instant::now();
    let new = run("netlink");
    // `KERNEL_SPEED_PATHS=netlink` leaves the old path out, for a quick look at the new one's
    // figures (the table's ratios are then empty).
    let old = if std::env::var("KERNEL_SPEED_PATHS").is_ok_and(|v| v == "netlink") {
        Figures::default()
    } else {
        run("nft")
    };
    let flood = |f: &Figures| match f.flood_ms {
        Some(v) => Cell::ms(Some(v)),
        // Left out by KERNEL_SPEED_FIGURES: nothing was measured, nothing failed.
        None if !figure(4) => Cell::ms(None),
        None => Cell::text(
            None,
            format!("> {} s ({}/10000)", f.flood_cap.as_secs(), f.flood_banned),
        ),
    };
    let delay = |f: &Figures| match (f.rt_busy.max(), f.rt_quiet.q(0.5)) {
        (Some(max), Some(med)) => Cell::ms(Some(max - med)),
        _ => Cell::ms(None),
    };
    let reconcile = |f: &Figures| match (f.reconcile_us, f.reconcile_log_ms) {
        (Some(us), _) => Cell::ms(Some(us / 1000.0)),
        (None, Some(est)) => Cell::text(Some(est), format!("~{est:.0} ms (log, no gauge)")),
        (None, None) => Cell::ms(None),
    };
    type Row = (&'static str, &'static str, fn(&Figures) -> Cell);
    let rows: [Row; 18] = [
        ("1. request→kernel p50 (histogram)", "", |f| {
            Cell::bucket(&f.r2k, 0.5)
        }),
        ("1. request→kernel p99 (histogram)", "≤ 1 ms", |f| {
            Cell::bucket(&f.r2k, 0.99)
        }),
        ("1. socket grant round trip p99 (bench side)", "", |f| {
            Cell::ms(f.sock_rt.q(0.99))
        }),
        ("2. passknock grant median", "≤ 5 ms", |f| {
            Cell::ms(f.cli.q(0.5))
        }),
        ("2. passknock grant p99", "", |f| Cell::ms(f.cli.q(0.99))),
        ("3. AMI event→ban in nft median", "≤ 5 ms", |f| {
            Cell::ms(f.ami_ban.q(0.5))
        }),
        ("3. AMI event→ban in nft p99", "", |f| {
            Cell::ms(f.ami_ban.q(0.99))
        }),
        ("3. inside daemon, event→ban median", "", |f| {
            Cell::ms(f.ami_inside.q(0.5))
        }),
        ("4. 10,000 AMI bans: last crossing→all in nft", "≤ 1000 ms", flood),
        ("5. 100,000 grants: start→ready", "≤ 1000 ms", |f| {
            Cell::ms(f.ready_ms)
        }),
        ("6. read-back+compare, 200,000 elements", "≤ 500 ms", reconcile),
        ("6. grant round trip, no reconcile: max", "", |f| {
            Cell::ms(f.rt_quiet.max())
        }),
        ("6. grant round trip, no reconcile: p99", "", |f| {
            Cell::ms(f.rt_quiet.q(0.99))
        }),
        ("6. grant round trip, reconciles running: max", "", |f| {
            Cell::ms(f.rt_busy.max())
        }),
        ("6. grant round trip, reconciles running: p99", "", |f| {
            Cell::ms(f.rt_busy.q(0.99))
        }),
        ("6. grants made while reconciles ran (n)", "", |f| {
            Cell::text(None, f.rt_busy.len().to_string())
        }),
        ("6. worst delay (max busy − median quiet)", "≤ 5 ms", delay),
        ("7. 500 DISA: first passcode→last grant", "≤ 50 ms", |f| {
            Cell::ms(f.disa_wall)
        }),
    ];
    let rows: Vec<(String, &str, Cell, Cell)> = rows
        .iter()
        .map(|(name, target, cell)| (name.to_string(), *target, cell(&new), cell(&old)))
        .collect();
    println!("\n######## kernel speed: targets from issue 14 ########");
    table(&rows);
    println!(
        "(figures 3–4 use a local AMI peer in the bench, not Asterisk; histogram figures are the \
         bound of the bucket the quantile falls in; whole run {:.0} s)",
        t.elapsed().as_secs_f64()
    );
}
