//! SIP junk flood bench (run as root: `cargo bench --bench sip_flood`): the daemon's CPU and
//! memory while a road host floods the PBX's dropped SIP port with junk, with the SIP attempt
//! capture off, on with its default limits, and on with its limits raised out of the way (the
//! reader's worst case), one after the other in the same run, on the same packets.
//!
//! The junk is UDP to 5060 from spoofed sources (100.64.0.0/10, `SIP_FLOOD_SOURCES` of them in
//! turn, 16384 by default: within the table's per-source meter), a mix of REGISTERs for users
//! that are no account, OPTIONS, REGISTERs cut mid-line, and binary garbage, sent with a raw
//! socket at `SIP_FLOOD_RATE` packets/s (100000) for `SIP_FLOOD_SECS` (8). CPU is utime+stime
//! from /proc/PID/stat over the flood; RSS at its end.

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use knockd::packet::build;
use support::daemon::{bench_config, Daemon};
use support::flood::{allow_spoofed, cpu_time, memory_kib, RawSender, BATCH};
use support::netns::{Netns, Topology};

struct Row {
    name: &'static str,
    sent_rate: f64,
    cpu: f64,
    rss: u64,
    counts: serde_json::Value,
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The junk, one packet per source in turn: a pool sent round and round.
fn packets(dst: Ipv4Addr, sources: u32) -> Vec<Vec<u8>> {
    (0..sources.max(1))
        .map(|i| {
            let src = Ipv4Addr::from(0x6440_0000u32 | (i % (1 << 22)));
            let payload: Vec<u8> = match i % 4 {
                0 => format!(
                    "REGISTER sip:{dst} SIP/2.0\r\nVia: SIP/2.0/UDP {src}:5060;branch=z9hG4bK{i}\r\n\
                     From: <sip:u{i}@{dst}>;tag={i}\r\nTo: <sip:u{i}@{dst}>\r\nCall-ID: {i}@{src}\r\n\
                     CSeq: 1 REGISTER\r\nContact: <sip:u{i}@{src}:5060>\r\nUser-Agent: friendly-scanner\r\n\
                     Content-Length: 0\r\n\r\n"
                )
                .into_bytes(),
                1 => format!(
                    "OPTIONS sip:100@{dst} SIP/2.0\r\nVia: SIP/2.0/UDP {src}:5060\r\nFrom: <sip:100@{dst}>;tag=1\r\n\
                     To: <sip:100@{dst}>\r\nCall-ID: {i}\r\nCSeq: 1 OPTIONS\r\n\r\n"
                )
                .into_bytes(),
                2 => format!("REGISTER sip:{dst} SIP/2.0\r\nFrom: <sip:u{i}@{dst}>;tag=1\r\nTo: <sip:u{i}")
                    .into_bytes(),
                _ => (0..200u32).map(|k| (k.wrapping_mul(2654435761).wrapping_add(i) >> 13) as u8).collect(),
            };
            build::udp(IpAddr::V4(src), IpAddr::V4(dst), 5060, 5060, &payload)
        })
        .collect()
}

/// Sends the pool round and round from `ns` at `rate` packets/s for `secs`; answers the rate
/// achieved.
fn flood(ns: &Netns, dst: Ipv4Addr, pool: &[Vec<u8>], rate: u64, secs: u64) -> f64 {
    let pool: Vec<Vec<u8>> = pool.to_vec();
    ns.within(move || {
        let mut sender = RawSender::open(dst);
        let start = Instant::now();
        let limit = Duration::from_secs(secs);
        let mut sent = 0u64;
        while start.elapsed() < limit {
            let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
            if sent >= due {
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
            let n = (due - sent).min(BATCH as u64);
            let batch = (sent..sent + n).map(|k| pool[(k % pool.len() as u64) as usize].as_slice());
            sent += sender.send(batch);
        }
        sent as f64 / start.elapsed().as_secs_f64()
    })
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rate: u64 = env_or("SIP_FLOOD_RATE", 100_000);
    let secs: u64 = env_or("SIP_FLOOD_SECS", 8);
    let sources: u32 = env_or("SIP_FLOOD_SOURCES", 16_384);
    let topo = Topology::new(1);
    allow_spoofed(&topo.pbx);
    let pool = packets(topo.pbx_v4, sources);
    let variants: [(&'static str, &str); 3] = [
        ("capture off", "enabled = false"),
        ("capture on, default limits", "enabled = true"),
        (
            "capture on, limits out of the way",
            "enabled = true\nper-source-rate = 1000\nper-source-burst = 10000\nrate = 100000\nburst = 100000",
        ),
    ];
    let mut rows = Vec::new();
    for (name, keys) in variants {
        let dir = tempfile::tempdir().unwrap();
        let cfg = bench_config(dir.path(), &format!("[sip-attempts]\n{keys}\n"));
        let mut d = Daemon::start(&topo.pbx, dir.path(), &cfg);
        let pid = d.pid();
        // Settled: the start's own work is not what is measured.
        std::thread::sleep(Duration::from_millis(1500));
        let (cpu0, t0) = (cpu_time(pid), Instant::now());
        let sent_rate = flood(&topo.road(1).ns, topo.pbx_v4, &pool, rate, secs);
        // What the flood left queued is part of its cost.
        std::thread::sleep(Duration::from_millis(500));
        let wall = t0.elapsed().as_secs_f64();
        let cpu = (cpu_time(pid) - cpu0).as_secs_f64() / wall * 100.0;
        let (rss, _) = memory_kib(pid);
        let counts = d.json(&["status"])["sip_attempts"].clone();
        eprintln!("{name}: sent {sent_rate:.0}/s, cpu {cpu:.1}%, rss {rss} KiB, reader {counts}");
        rows.push(Row {
            name,
            sent_rate,
            cpu,
            rss,
            counts,
        });
        d.term();
    }
    println!("\n| variant | junk sent/s | passknockd CPU | passknockd RSS | datagrams the reader got | malformed | not an account | ignored |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let c = |k: &str| r.counts[k].as_u64().map(|v| v.to_string()).unwrap_or("-".into());
        println!(
            "| {} | {:.0} | {:.1}% | {} KiB | {} | {} | {} | {} |",
            r.name,
            r.sent_rate,
            r.cpu,
            r.rss,
            c("seen"),
            c("malformed"),
            c("not_account"),
            c("ignored")
        );
    }
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            format!("{:.2}x", a / b)
        } else {
            "n/a".into()
        }
    };
    println!(
        "\nCPU on/off: default limits {} ({:.1}% vs {:.1}%), limits out of the way {}; RSS on/off: {}",
        ratio(rows[1].cpu, rows[0].cpu),
        rows[1].cpu,
        rows[0].cpu,
        ratio(rows[2].cpu, rows[0].cpu),
        ratio(rows[1].rss as f64, rows[0].rss as f64)
    );
}
