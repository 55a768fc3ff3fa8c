//! DISA bench (as root: `cargo bench --bench disa`): 500 FastAGI sessions at once against the real
//! daemon in a network namespace, each played by a scripted AGI peer that answers like Asterisk.
//! All sessions reach the passcode prompt, then all key the passcode at the same instant. Measured
//! per call: from the reply carrying the passcode (the caller's final `#`) to the daemon starting
//! the "access granted" prompt — which it does only once the grant is durable and in nft (checked
//! at the end with nft). Also the daemon's memory.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use support::daemon::{bench_config, proc_kib, Daemon};
use support::disa_daemon::burst_sections;
use support::netns::Netns;

const SESSIONS: usize = 500;

fn addr(i: usize) -> String {
    format!("100.64.{}.{}", i / 250, i % 250 + 1)
}

/// One call, played as Asterisk would: returns ms from the passcode reply to the grant prompt.
fn call(stream: TcpStream, i: usize, passcode: &str, go: &Barrier) -> f64 {
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    write!(
        w,
        "agi_network: yes\nagi_network_script: disa\nagi_request: agi://127.0.0.1:4573/disa\nagi_channel: PJSIP/bench-{i:08}\nagi_uniqueid: {i}.1\nagi_callerid: 555{i:07}\n\n"
    )
    .unwrap();
    let mut line = String::new();
    let mut t0 = None;
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap() == 0 {
            panic!("session {i} closed early");
        }
        let cmd = line.trim_end();
        let reply = if cmd.starts_with("GET VARIABLE \"CHANNEL(pjsip,remote_addr)\"") {
            format!("200 result=1 ({}:5060)", addr(i))
        } else if cmd.starts_with("GET VARIABLE \"CHANNEL(endpoint)\"") {
            "200 result=1 (bench)".into()
        } else if cmd.starts_with("GET DATA") && t0.is_none() {
            // Every caller is at the prompt; all key the passcode at once.
            go.wait();
            t0 = Some(Instant::now());
            format!("200 result={passcode}")
        } else if cmd.starts_with("STREAM FILE \"auth-thankyou\"") {
            let ms = t0.unwrap().elapsed().as_secs_f64() * 1000.0;
            let _ = writeln!(w, "200 result=0 endpos=0");
            return ms;
        } else if cmd == "HANGUP" {
            panic!("session {i} was hung up without a grant");
        } else {
            "200 result=0".into()
        };
        writeln!(w, "{reply}").unwrap();
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let ns = Netns::new("disabench");
    let dir = tempfile::tempdir().unwrap();
    let extra = burst_sections(dir.path());
    let cfg = bench_config(dir.path(), &extra);
    let d = Daemon::start(&ns, dir.path(), &cfg);
    let out = d.ok(&[
        "account",
        "add",
        "bench",
        "--services",
        "sip",
        "--ttl",
        "2h",
        "--address-modes",
        "source",
        // 500 callers, one account: each keeps its own grant rather than replacing the others'.
        "--keep-several",
    ]);
    let passcode = out
        .lines()
        .find_map(|l| l.strip_prefix("passcode: "))
        .unwrap()
        .to_string();
    let rss_idle = proc_kib(d.pid(), "VmRSS:");

    let agi: SocketAddr = "127.0.0.1:4573".parse().unwrap();
    let streams: Vec<TcpStream> = (0..SESSIONS)
        .map(|_| ns.within(move || TcpStream::connect(agi).expect("connect to FastAGI")))
        .collect();
    let go = Arc::new(Barrier::new(SESSIONS + 1));
    let passcode = Arc::new(passcode);
    let threads: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let (go, p) = (go.clone(), passcode.clone());
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || call(s, i, &p, &go))
                .unwrap()
        })
        .collect();
    // Wait until all sessions sit at the prompt, sample memory there, then release them.
    std::thread::sleep(Duration::from_millis(500));
    let rss_sessions = proc_kib(d.pid(), "VmRSS:");
    let start = Instant::now();
    go.wait();
    let mut ms: Vec<f64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let wall = start.elapsed();
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
    let set = d.nft_set("allow_sip_v4");
    let present = (0..SESSIONS)
        .filter(|i| set.contains(&format!("{} ", addr(*i))))
        .count();
    let durable = d.json(&["list"])["grants"].as_array().unwrap().len();
    println!("== {SESSIONS} simultaneous DISA calls over FastAGI ==");
    println!(
        "final # to grant durable and in nft: median {:.1} ms, p99 {:.1} ms, max {:.1} ms; all {SESSIONS} done in {:.0} ms",
        pct(0.5),
        pct(0.99),
        ms[ms.len() - 1],
        wall.as_secs_f64() * 1000.0
    );
    println!("grants in the store: {durable}; elements in nft: {present}");
    println!(
        "daemon memory: idle {rss_idle} KiB; with {SESSIONS} sessions open {rss_sessions} KiB; after {} KiB (peak {} KiB)",
        proc_kib(d.pid(), "VmRSS:"),
        proc_kib(d.pid(), "VmHWM:")
    );
    assert_eq!(durable, SESSIONS);
    assert_eq!(present, SESSIONS);
}
