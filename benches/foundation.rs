//! Foundation bench (run as root: `cargo bench --bench foundation`). Real daemon, real nft, in a
//! network namespace of its own:
//!
//! 1. 1,000 `passknock grant` runs: time for the CLI to return, and from its return until
//!    `nft get element` finds the element (the daemon puts it in before it replies, so this is
//!    one `nft` run: the cost of looking).
//! 2. Start and reconcile with 100,000 live grants in the store and no table (a reboot).
//! 3. The daemon's memory with 100,000 live grants.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use passknock::model::{NewGrant, Source};
use passknock::store::Store;
use support::daemon::{bench_config, proc_kib, Daemon};
use support::netns::Netns;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(name: &str, mut v: Vec<f64>) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{name}: n={} median={:.2} ms p99={:.2} ms max={:.2} ms",
        v.len(),
        percentile(&v, 0.5),
        percentile(&v, 0.99),
        v[v.len() - 1]
    );
}

fn addr(i: u32) -> String {
    // 100.64.0.0/10 has room for 4M hosts; skip .0 and .255.
    let n = i / 254 * 256 + i % 254 + 1;
    format!("100.{}.{}.{}", 64 + (n >> 16), (n >> 8) & 255, n & 255)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let ns = Netns::new("bench");
    let dir = tempfile::tempdir().unwrap();
    // A long reconcile interval: measure grants, not the background reconcile.
    let cfg = bench_config(dir.path(), "");
    let mut d = Daemon::start(&ns, dir.path(), &cfg);

    // 1. grant → element present
    let n = 1000;
    let (mut cli, mut after, mut first_hit) = (Vec::new(), Vec::new(), 0);
    for i in 0..n {
        let a = addr(i);
        let t0 = Instant::now();
        let out = d.cli(&["grant", &a, "--services", "sip", "--ttl", "1h"]);
        let t1 = Instant::now();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mut tries = 0;
        loop {
            tries += 1;
            let ok = d
                .nft(&[
                    "get",
                    "element",
                    "inet",
                    "passknock",
                    "allow_sip_v4",
                    &format!("{{ {a} }}"),
                ])
                .status
                .success();
            if ok {
                break;
            }
            assert!(t1.elapsed() < Duration::from_secs(5), "{a} never appeared");
        }
        let t2 = Instant::now();
        if tries == 1 {
            first_hit += 1;
        }
        cli.push(ms(t1 - t0));
        after.push(ms(t2 - t1));
    }
    println!("== 1,000 grants, one `passknock grant` process each ==");
    summary("passknock grant round trip (process start to exit)", cli);
    summary("from `grant` returning to the element found in nft", after);
    println!("element already present at the first look after return: {first_hit}/{n}");

    // 2. 100,000 live grants, no table: start and reconcile.
    d.term();
    let total = 100_000u32;
    {
        let mut store = Store::open(&dir.path().join("store.db")).unwrap();
        let now = passknock::base::clock::now_ms();
        let new: Vec<NewGrant> = (n..n + total - 1000)
            .map(|i| NewGrant {
                address: addr(i).parse().unwrap(),
                services: vec!["sip".into(), "rtp".into()],
                source: Source::Knock,
                who: format!("bench {i}"),
                note: String::new(),
                expires: now + 3_600_000,
            })
            .collect();
        store.insert_grants(&new, now).unwrap();
        let (g, _) = store.counts().unwrap();
        assert_eq!(g, total as u64);
    }
    assert!(d.nft(&["flush", "ruleset"]).status.success());
    let t0 = Instant::now();
    d.spawn();
    let started = t0.elapsed();
    println!("== {total} live grants (199,000 nft elements), table gone as after a reboot ==");
    println!(
        "start to ready (store opened, table rebuilt and applied, socket answering): {:.0} ms",
        ms(started)
    );
    let elements = d.nft_set("allow_sip_v4").matches("expires").count();
    println!("elements in allow_sip_v4 after start: {elements}");
    assert_eq!(elements, total as usize);
    let t = Instant::now();
    // The status request alone: `passknock status` also lists every grant, which is not this.
    let st = match passknock::control::client::call(&d.socket, &passknock::control::Request::Status) {
        Ok(passknock::control::Reply::Status(st)) => st,
        other => panic!("status: {other:?}"),
    };
    println!(
        "steady-state check (read back 199,000 elements and compare): {:.0} ms, in_sync={}",
        ms(t.elapsed()),
        st.in_sync
    );
    let pid = d.pid();
    println!(
        "daemon memory with {total} live grants: VmRSS {} KiB, VmHWM (peak) {} KiB",
        proc_kib(pid, "VmRSS:"),
        proc_kib(pid, "VmHWM:")
    );
    d.kill9();
    let _ = d.nft(&["delete", "table", "inet", "passknock"]);
}
