//! Knock flood bench (run as root: `cargo bench --bench knock_flood`): passknockd and knockd
//! (Debian package `knockd`) side by side in one PBX namespace, on the same flood in the same run.
//!
//! A road host floods TCP SYNs from spoofed sources (100.64.0.0/10, a new source per packet) at
//! the knock ports, at rising rates; while it floods, the same host's real address knocks the
//! same three-port sequence with the standard `knock` client. Both daemons watch the same
//! sequence: knockd sniffs the road host's veth with libpcap, passknockd gets NFLOG from its
//! table. For each rate: how many real knocks opened access for each, their CPU and memory.
//!
//! Everything stays inside namespaces the bench makes; each flood is bounded in packets and
//! time. `KNOCK_FLOOD_RATES=1000,10000` picks the rates; `KNOCK_FLOOD_SECS` the flood length.

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::{Child, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::daemon::{bench_config, eventually, Daemon};
use support::flood::{allow_spoofed, cpu_time, memory_kib, syn_flood, FloodSpec};
use support::netns::Topology;

const SEQUENCE: [u16; 3] = [7001, 7002, 7003];
const TRIALS: usize = 4;

struct Row {
    target: Option<u64>,
    sent_rate: f64,
    pk_ok: usize,
    kd_ok: usize,
    pk_cpu: f64,
    kd_cpu: f64,
    pk_rss: u64,
    kd_rss: u64,
    kd_peak: u64,
}

fn start_knockd(topo: &Topology, dir: &std::path::Path) -> Child {
    let conf = dir.join("knockd.conf");
    let opened = dir.join("knockd-opened");
    std::fs::write(
        &conf,
        format!(
            "[options]\n\tInterface = pkp1\n\n[passknock-bench]\n\tsequence = {}\n\tseq_timeout = 10\n\
             \ttcpflags = syn\n\tcommand = /bin/sh -c 'echo %IP% >> {}'\n",
            SEQUENCE.map(|p| format!("{p}:tcp")).join(","),
            opened.display()
        ),
    )
    .unwrap();
    let child = topo
        .pbx
        .command("knockd")
        .args(["-c", conf.to_str().unwrap(), "-i", "pkp1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("knockd (Debian package knockd) is installed");
    std::thread::sleep(Duration::from_millis(700));
    child
}

fn knockd_opened(dir: &std::path::Path, who: &str) -> usize {
    std::fs::read_to_string(dir.join("knockd-opened"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.trim() == who)
        .count()
}

fn has_grant(d: &Daemon, addr: &str) -> bool {
    d.json(&["list"])["grants"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["address"] == addr)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rates: Vec<Option<u64>> = std::env::var("KNOCK_FLOOD_RATES")
        .unwrap_or_else(|_| "0,1000,3000,10000,20000,30000,60000,100000,200000,max".into())
        .split(',')
        .map(|r| r.trim().parse().ok())
        .collect();
    let secs: u64 = std::env::var("KNOCK_FLOOD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let topo = Topology::new(1);
    allow_spoofed(&topo.pbx);
    let dir = tempfile::tempdir().unwrap();
    let knock = format!(
        "[knock.profiles.bench]\nmode = \"static\"\nports = [{}]\ntimeout = \"10s\"\nservices = [\"sip\"]\n",
        SEQUENCE.map(|p| format!("\"tcp/{p}\"")).join(", ")
    );
    let cfg = bench_config(dir.path(), &knock);
    let d = Daemon::start(&topo.pbx, dir.path(), &cfg);
    let pk_pid = d.pid();
    let road = topo.road(1);
    let me = road.v4.to_string();
    let pbx = topo.pbx_v4.to_string();
    let mut rows = Vec::new();
    for rate in rates {
        // A fresh knockd each round (its state from the last flood would still be timing out);
        // passknockd runs throughout: its bounded state is part of what is measured.
        let mut kd = start_knockd(&topo, dir.path());
        let kd_pid = kd.id();
        let (pk_cpu0, kd_cpu0, t0) = (cpu_time(pk_pid), cpu_time(kd_pid), Instant::now());
        let stop = Arc::new(AtomicBool::new(false));
        let spec = FloodSpec {
            dst: topo.pbx_v4,
            ports: SEQUENCE.to_vec(),
            rate: rate.filter(|r| *r > 0),
            max_packets: match rate {
                Some(0) => 0,
                Some(r) => r * secs,
                None => 20_000_000,
            },
            max_time: Duration::from_secs(secs),
        };
        let (flood, pk_ok, kd_ok) = std::thread::scope(|sc| {
            let flooder = sc.spawn(|| syn_flood(&road.ns, spec, stop.clone()));
            std::thread::sleep(Duration::from_millis(1500));
            let (mut pk_ok, mut kd_ok) = (0, 0);
            for _ in 0..TRIALS {
                let kd_before = knockd_opened(dir.path(), &me);
                let out = road
                    .ns
                    .command("knock")
                    .args(["-d", "20", &pbx])
                    .args(SEQUENCE.map(|p| format!("{p}:tcp")))
                    .output()
                    .unwrap();
                assert!(out.status.success(), "knock client failed");
                let t = Instant::now();
                let pk = eventually(Duration::from_millis(1200), || has_grant(&d, &me));
                let left = Duration::from_millis(1200).saturating_sub(t.elapsed());
                let kd = eventually(left.max(Duration::from_millis(100)), || {
                    knockd_opened(dir.path(), &me) > kd_before
                });
                pk_ok += pk as usize;
                kd_ok += kd as usize;
                if pk {
                    d.ok(&["revoke", &me]);
                }
            }
            (flooder.join().unwrap(), pk_ok, kd_ok)
        });
        let wall = t0.elapsed().as_secs_f64();
        let pk_cpu = (cpu_time(pk_pid) - pk_cpu0).as_secs_f64() / wall * 100.0;
        let kd_cpu = (cpu_time(kd_pid) - kd_cpu0).as_secs_f64() / wall * 100.0;
        let (pk_rss, _) = memory_kib(pk_pid);
        let (kd_rss, kd_peak) = memory_kib(kd_pid);
        let _ = kd.kill();
        let _ = kd.wait();
        let row = Row {
            target: rate,
            sent_rate: if flood.sent == 0 { 0.0 } else { flood.rate() },
            pk_ok,
            kd_ok,
            pk_cpu,
            kd_cpu,
            pk_rss,
            kd_rss,
            kd_peak,
        };
        eprintln!(
            "rate {:>8}: sent {:>8.0}/s  passknockd {}/{TRIALS} cpu {:>5.1}% rss {} KiB | knockd {}/{TRIALS} cpu {:>5.1}% rss {} KiB (peak {} KiB)",
            row.target.map(|r| r.to_string()).unwrap_or("max".into()),
            row.sent_rate,
            row.pk_ok,
            row.pk_cpu,
            row.pk_rss,
            row.kd_ok,
            row.kd_cpu,
            row.kd_rss,
            row.kd_peak
        );
        rows.push(row);
        // Let the last flood's backlog drain before the next round.
        std::thread::sleep(Duration::from_millis(500));
    }
    let (pk_end_rss, pk_peak) = memory_kib(pk_pid);
    let mut d = d;
    d.term();
    let log = d.log_text();
    let stats = log
        .rfind("knock listener stopped")
        .map(|i| log[i..].lines().next().unwrap_or("").to_string())
        .unwrap_or_default();
    println!("\n| junk rate asked | junk sent/s | passknockd opened | passknockd CPU | passknockd RSS | knockd opened | knockd CPU | knockd RSS (peak) |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.0} | {}/{TRIALS} | {:.1}% | {} KiB | {}/{TRIALS} | {:.1}% | {} KiB ({} KiB) |",
            r.target.map(|v| v.to_string()).unwrap_or("max".into()),
            r.sent_rate,
            r.pk_ok,
            r.pk_cpu,
            r.pk_rss,
            r.kd_ok,
            r.kd_cpu,
            r.kd_rss,
            r.kd_peak
        );
    }
    let best = |ok: fn(&Row) -> usize| {
        rows.iter()
            .filter(|r| ok(r) == TRIALS)
            .map(|r| r.sent_rate)
            .fold(0.0f64, f64::max)
    };
    let pk = best(|r| r.pk_ok);
    let kd = best(|r| r.kd_ok);
    println!(
        "\nhighest junk rate with every real knock opening: passknockd {pk:.0}/s, knockd {kd:.0}/s, ratio {}",
        if kd > 0.0 {
            format!("{:.1}x", pk / kd)
        } else {
            "n/a (knockd never opened every time)".into()
        }
    );
    println!("passknockd RSS at the end: {pk_end_rss} KiB (peak {pk_peak} KiB); {stats}");
}
