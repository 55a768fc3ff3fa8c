//! Figure 7: 500 DISA calls over FastAGI, one account each, all keying their passcode at once
//! (each session played as Asterisk would, as benches/disa.rs does); from the first passcode sent
//! to the last "access granted" prompt, which the daemon starts only once the grant is in nft.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use passknock::base::duration::Ttl;
use passknock::control::{client, NewAccount, Reply, Request};

use crate::common::{addr, histogram_line, ms, present, set_members, Samples};
use crate::support::daemon::Daemon;
use crate::support::metrics::scrape;
use crate::support::netns::Netns;
use crate::{Figures, METRICS};

pub const CALLS: u32 = 500;
const BLOCK: u8 = 7;

/// One call: (passcode sent, grant prompt heard).
fn call(stream: TcpStream, i: u32, passcode: &str, go: &Barrier) -> (Instant, Instant) {
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    write!(
        w,
        "agi_network: yes\nagi_network_script: disa\nagi_request: agi://127.0.0.1:4573/disa\n\
         agi_channel: PJSIP/bench-{i:08}\nagi_uniqueid: {i}.1\nagi_callerid: 555{i:07}\n\n"
    )
    .unwrap();
    let mut line = String::new();
    let mut sent = None;
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap() == 0 {
            panic!("DISA session {i} closed early");
        }
        let cmd = line.trim_end();
        let reply = if cmd.starts_with("GET VARIABLE \"CHANNEL(pjsip,remote_addr)\"") {
            format!("200 result=1 ({}:5060)", addr(BLOCK, i))
        } else if cmd.starts_with("GET VARIABLE \"CHANNEL(endpoint)\"") {
            "200 result=1 (bench)".into()
        } else if cmd.starts_with("GET DATA") && sent.is_none() {
            // Every caller is at the prompt; all key their passcode at once.
            go.wait();
            sent = Some(Instant::now());
            format!("200 result={passcode}")
        } else if cmd.starts_with("STREAM FILE \"auth-thankyou\"") {
            let heard = Instant::now();
            let _ = writeln!(w, "200 result=0 endpos=0");
            return (sent.expect("passcode sent first"), heard);
        } else if cmd == "HANGUP" {
            panic!("DISA session {i} was hung up without a grant");
        } else {
            "200 result=0".into()
        };
        writeln!(w, "{reply}").unwrap();
    }
}

fn add_account(socket: &std::path::Path, i: u32) -> String {
    let req = Request::AccountAdd(NewAccount {
        name: format!("bench{i}"),
        services: vec!["sip".into()],
        ttl: Some(Ttl(Duration::from_secs(7200))),
        endpoint: None,
        address_modes: vec!["source".into()],
        callers: Vec::new(),
        keep_several: false,
    });
    match client::call(socket, &req) {
        Ok(Reply::AccountCreated { passcode, .. }) => passcode.expose().to_string(),
        other => panic!("account add bench{i}: {other:?}"),
    }
}

pub fn run(ns: &Netns, d: &Daemon, f: &mut Figures) {
    println!("== 7. {CALLS} simultaneous DISA passcodes over FastAGI, {CALLS} accounts ==");
    let passcodes: Vec<String> = (0..CALLS).map(|i| add_account(&d.socket, i)).collect();
    let agi: SocketAddr = "127.0.0.1:4573".parse().unwrap();
    let streams: Vec<TcpStream> = (0..CALLS)
        .map(|_| ns.within(move || TcpStream::connect(agi).expect("connect to FastAGI")))
        .collect();
    let go = Arc::new(Barrier::new(CALLS as usize + 1));
    let calls: Vec<_> = streams
        .into_iter()
        .zip(passcodes)
        .enumerate()
        .map(|(i, (s, p))| {
            let go = go.clone();
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || call(s, i as u32, &p, &go))
                .unwrap()
        })
        .collect();
    // Let every session reach the prompt, then release them together.
    std::thread::sleep(Duration::from_millis(500));
    let m = METRICS.parse().unwrap();
    let before = scrape(ns, m);
    go.wait();
    let done: Vec<(Instant, Instant)> = calls.into_iter().map(|t| t.join().unwrap()).collect();
    let after = scrape(ns, m);
    let first = done.iter().map(|d| d.0).min().unwrap();
    let last = done.iter().map(|d| d.1).max().unwrap();
    let r2k = after
        .histogram("passknock_request_to_kernel_seconds")
        .since(&before.histogram("passknock_request_to_kernel_seconds"));
    let want: Vec<Ipv4Addr> = (0..CALLS).map(|i| addr(BLOCK, i)).collect();
    let n = present(&set_members(ns, "allow_sip_v4"), want);
    f.disa_wall = Some(ms(last - first));
    f.disa_calls = Samples::new(done.iter().map(|(s, h)| ms(*h - *s)).collect());
    println!(
        "first passcode sent → last grant prompt (grant durable and in nft): {:.1} ms",
        ms(last - first)
    );
    println!("per call, passcode → grant prompt: {}", f.disa_calls.line());
    println!("request_to_kernel for these grants: {}", histogram_line(&r2k));
    println!("DISA addresses in allow_sip_v4: {n}/{CALLS}");
    assert_eq!(n, CALLS as usize, "every DISA caller granted");
}
