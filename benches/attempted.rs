//! The `attempted` DISA mode, timed (as root: `cargo bench --bench attempted`): the real daemon in
//! a network namespace, a softphone address whose REGISTER the real table drops (and logs to the
//! daemon over NFLOG), then a DISA call played by a scripted FastAGI peer that answers like
//! Asterisk: passcode, the read-back, "1". Measured per call, from the reply carrying the caller's
//! "1" to (a) the daemon starting the "access granted" prompt, which it does only once the grant
//! is durable and in nft, and (b) `nft get element` finding the address in the allow set, polled
//! from the same instant. Calls run one after another, each from a new address, so each grant
//! replaces the account's previous one, as when a road warrior moves.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use support::daemon::{bench_config, Daemon};
use support::flood::allow_spoofed;
use support::netns::{Netns, Topology};

const CALLS: usize = 200;
const ENDPOINT: &str = "700";

fn phone(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(100, 64, (i / 250) as u8, (i % 250 + 1) as u8)
}

/// One dropped REGISTER as `ENDPOINT` from `from`, sent from the road namespace.
fn register(road: &Netns, from: Ipv4Addr, pbx: Ipv4Addr) {
    // The phone's address on the road host's link to the PBX (`pkr1`, see `Topology`).
    road.ip(&["addr", "add", &format!("{from}/32"), "dev", "pkr1"]);
    road.within(move || {
        let s = UdpSocket::bind(SocketAddr::new(IpAddr::V4(from), 5060)).expect("bind phone address");
        let msg = format!(
            "REGISTER sip:{pbx} SIP/2.0\r\nVia: SIP/2.0/UDP {from}:5060;branch=z9hG4bK{n}\r\nMax-Forwards: 70\r\n\
             From: <sip:{ENDPOINT}@{pbx}>;tag={n}\r\nTo: <sip:{ENDPOINT}@{pbx}>\r\nCall-ID: {n}@{from}\r\n\
             CSeq: 1 REGISTER\r\nContact: <sip:{ENDPOINT}@{from}:5060>\r\nExpires: 300\r\n\
             User-Agent: passknock-bench\r\nContent-Length: 0\r\n\r\n",
            n = u32::from(from)
        );
        s.send_to(msg.as_bytes(), (pbx, 5060)).expect("send REGISTER");
    });
}

/// Whether the table's allow set has `ip` (one `nft get element`, in the daemon's namespace).
fn in_nft(ns: &str, ip: Ipv4Addr) -> bool {
    let elem = format!("{{ {ip} }}");
    Command::new("ip")
        .args(["netns", "exec", ns, "nft", "get", "element", "inet", "passknock"])
        .args(["allow_sip_v4", &elem])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Times from the caller's "1".
struct Timed {
    prompt_ms: f64,
    /// Only for the calls that poll nft.
    nft_ms: Option<f64>,
}

/// One call, played as Asterisk would; `None` when the daemon did not offer the address.
fn call(ns: &Netns, i: usize, passcode: &str, ip: Ipv4Addr, poll: bool) -> Option<Timed> {
    let agi: SocketAddr = "127.0.0.1:4573".parse().unwrap();
    let stream = ns.within(move || TcpStream::connect(agi).expect("connect to FastAGI"));
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    write!(
        w,
        "agi_network: yes\nagi_network_script: disa\nagi_request: agi://127.0.0.1:4573/disa\nagi_channel: PJSIP/trunk-{i:08}\nagi_uniqueid: {i}.1\nagi_callerid: 555{i:07}\n\n"
    )
    .unwrap();
    let mut line = String::new();
    let mut t0: Option<Instant> = None;
    let mut poller = None;
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap() == 0 {
            panic!("call {i} closed early");
        }
        let cmd = line.trim_end();
        let reply = if cmd.starts_with("GET VARIABLE \"CHANNEL(pjsip,remote_addr)\"") {
            // The trunk: trusted, so never what is granted.
            "200 result=1 (127.0.0.1:5060)".to_string()
        } else if cmd.starts_with("GET VARIABLE \"CHANNEL(endpoint)\"") {
            "200 result=1 (trunk)".into()
        } else if cmd.starts_with("GET DATA \"agent-pass\"") {
            format!("200 result={passcode}")
        } else if cmd.starts_with("STREAM FILE \"vm-isunavail\"") {
            // Not offered: this call is a miss.
            let _ = writeln!(w, "200 result=0");
            drain(r, w);
            return None;
        } else if cmd.starts_with("GET DATA \"digits/1\"") {
            let start = Instant::now();
            t0 = Some(start);
            let ns_name = ns.name.clone();
            poller = poll.then(|| {
                std::thread::spawn(move || {
                    while !in_nft(&ns_name, ip) {}
                    start.elapsed().as_secs_f64() * 1000.0
                })
            });
            "200 result=1".into()
        } else if cmd.starts_with("STREAM FILE \"auth-thankyou\"") {
            let prompt_ms = t0.expect("granted before the 1").elapsed().as_secs_f64() * 1000.0;
            let _ = writeln!(w, "200 result=0");
            drain(r, w);
            let nft_ms = poller.take().map(|p| p.join().unwrap());
            return Some(Timed { prompt_ms, nft_ms });
        } else if cmd == "HANGUP" {
            panic!("call {i} was hung up without a grant");
        } else {
            "200 result=0".into()
        };
        writeln!(w, "{reply}").unwrap();
    }
}

/// Answers the rest of the call until the daemon hangs up.
fn drain(mut r: BufReader<TcpStream>, mut w: TcpStream) {
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 || line.trim_end() == "HANGUP" {
            let _ = writeln!(w, "200 result=1");
            return;
        }
        let _ = writeln!(w, "200 result=0");
    }
}

fn stats(mut ms: Vec<f64>) -> (f64, f64, f64) {
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
    (pct(0.5), pct(0.99), ms[ms.len() - 1])
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let topo = Topology::new(1);
    let (pbx, road) = (&topo.pbx, &topo.road(1).ns);
    // The phones' addresses have no route back from the PBX: let them in as they are.
    allow_spoofed(pbx);
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        r#"
[disa]
enabled = true
key-file = "{}/disa.key"
global-failures-per-hour = 1000
"#,
        dir.path().display()
    );
    let cfg = bench_config(dir.path(), &extra);
    let d = Daemon::start(pbx, dir.path(), &cfg);
    let out = d.ok(&[
        "account",
        "add",
        "bench",
        "--services",
        "sip",
        "--endpoint",
        ENDPOINT,
        "--address-modes",
        "attempted",
    ]);
    let passcode = out
        .lines()
        .find_map(|l| l.strip_prefix("passcode: "))
        .unwrap()
        .to_string();
    // The SIP reader learns account endpoints every few seconds.
    std::thread::sleep(Duration::from_secs(6));
    // Every other call polls nft as well: the polling nft processes take CPU from the daemon's
    // own nft run, so the calls without it give the undisturbed figure.
    let (mut prompt, mut polled_prompt, mut nft, mut misses) = (Vec::new(), Vec::new(), Vec::new(), 0);
    let start = Instant::now();
    for i in 0..CALLS {
        let ip = phone(i);
        register(road, ip, topo.pbx_v4);
        // NFLOG delivery is well under this; a late one shows up as a miss below.
        std::thread::sleep(Duration::from_millis(50));
        match call(pbx, i, &passcode, ip, i % 2 == 1) {
            Some(Timed {
                prompt_ms,
                nft_ms: Some(n),
            }) => {
                polled_prompt.push(prompt_ms);
                nft.push(n);
            }
            Some(t) => prompt.push(t.prompt_ms),
            None => misses += 1,
        }
    }
    let wall = start.elapsed();
    let last = phone(CALLS - 1);
    let set = d.nft_set("allow_sip_v4");
    let grants = d.json(&["list"])["grants"].as_array().unwrap().len();
    let (pm, p99, pmax) = stats(prompt.clone());
    let (nm, n99, nmax) = stats(nft.clone());
    let (qm, q99, qmax) = stats(polled_prompt.clone());
    println!("== {CALLS} DISA calls in the attempted mode, one after another, each from a new address ==");
    println!(
        "{} calls, caller's 1 to \"access granted\" (grant durable and in nft): median {pm:.1} ms, p99 {p99:.1} ms, max {pmax:.1} ms",
        prompt.len()
    );
    println!(
        "{} calls polled by `nft get element` from the 1: element seen median {nm:.1} ms, p99 {n99:.1} ms, max {nmax:.1} ms; \"access granted\" median {qm:.1} ms, p99 {q99:.1} ms, max {qmax:.1} ms",
        nft.len()
    );
    println!(
        "{} granted, {misses} not offered; {} s in all; at the end {grants} grant(s) (each replaced the last), last address in nft: {}",
        prompt.len() + nft.len(),
        wall.as_secs(),
        set.contains(&format!("{last}"))
    );
    assert_eq!(misses, 0, "every call found its phone's attempt");
    assert_eq!(grants, 1, "each new address replaced the account's grant");
}
