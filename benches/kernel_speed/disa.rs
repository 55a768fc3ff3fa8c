//! Figure 7: 500 DISA calls over FastAGI, one account each, all keying their passcode at once
//! (each session played as Asterisk would, as benches/disa.rs does); from the first passcode sent
//! to the last "access granted" prompt, which the daemon starts only once the grant is in nft.
//!
//! One thread plays every call, waiting on all 500 sockets at once with epoll: 500 threads (one
//! per call, as this bench had) cost the two cores about as much as the daemon's own work, and
//! the figure measured the bench's scheduling as much as the daemon.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
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
/// Longest the bench waits for the daemon at any step before it gives up.
const PATIENCE: Duration = Duration::from_secs(30);

/// Where one call is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Answering the daemon's commands until it asks for the passcode.
    Setup,
    /// At the passcode prompt, the answer held back until every call is there.
    AtPrompt,
    /// Passcode sent; waiting for the grant prompt.
    Keyed,
    /// Grant prompt heard.
    Heard,
}

/// One call: its socket, what it has read and not yet handled, and its times.
struct Call {
    i: u32,
    stream: TcpStream,
    passcode: String,
    read: Vec<u8>,
    stage: Stage,
    sent: Option<Instant>,
    heard: Option<Instant>,
}

impl Call {
    fn new(i: u32, stream: TcpStream, passcode: String) -> Call {
        let mut c = Call {
            i,
            stream,
            passcode,
            read: Vec::new(),
            stage: Stage::Setup,
            sent: None,
            heard: None,
        };
        c.send(&format!(
            "agi_network: yes\nagi_network_script: disa\nagi_request: agi://127.0.0.1:4573/disa\n\
             agi_channel: PJSIP/bench-{i:08}\nagi_uniqueid: {i}.1\nagi_callerid: 555{i:07}\n\n"
        ));
        c.stream.set_nonblocking(true).unwrap();
        c
    }

    /// Writes all of `s`; the socket's buffer always has room for a line or two.
    fn send(&mut self, s: &str) {
        let mut rest = s.as_bytes();
        while !rest.is_empty() {
            match self.stream.write(rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("DISA session {}: write: {e}", self.i),
            }
        }
    }

    /// Reads what the socket has and answers each whole command line.
    fn readable(&mut self) {
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) if self.stage == Stage::Heard => return,
                Ok(0) => panic!("DISA session {} closed early", self.i),
                Ok(n) => self.read.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) if self.stage == Stage::Heard => return,
                Err(e) => panic!("DISA session {}: read: {e}", self.i),
            }
        }
        while let Some(end) = self.read.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.read.drain(..=end).collect();
            let cmd = String::from_utf8_lossy(&line).trim_end().to_string();
            self.command(&cmd);
        }
    }

    /// One command from the daemon, answered as Asterisk would.
    fn command(&mut self, cmd: &str) {
        if self.stage == Stage::Heard {
            return;
        }
        let reply = if cmd.starts_with("GET VARIABLE \"CHANNEL(pjsip,remote_addr)\"") {
            format!("200 result=1 ({}:5060)", addr(BLOCK, self.i))
        } else if cmd.starts_with("GET VARIABLE \"CHANNEL(endpoint)\"") {
            "200 result=1 (bench)".into()
        } else if cmd.starts_with("GET DATA") && self.stage == Stage::Setup {
            // Held until every caller is at the prompt; then all key their passcode at once.
            self.stage = Stage::AtPrompt;
            return;
        } else if cmd.starts_with("STREAM FILE \"auth-thankyou\"") {
            self.heard = Some(Instant::now());
            self.stage = Stage::Heard;
            "200 result=0 endpos=0".into()
        } else if cmd == "HANGUP" {
            panic!("DISA session {} was hung up without a grant", self.i);
        } else {
            "200 result=0".into()
        };
        self.send(&format!("{reply}\n"));
    }

    fn key_passcode(&mut self) {
        let reply = format!("200 result={}\n", self.passcode);
        self.sent = Some(Instant::now());
        self.stage = Stage::Keyed;
        self.send(&reply);
    }
}

/// Serves every call's socket until each is at `until` or past it, woken by epoll for the
/// sockets that have something to read (poll over all 500 at every wake cost the bench's one
/// core more than the daemon's work).
fn drive(calls: &mut [Call], until: Stage) {
    // SAFETY: epoll_create1 with no flags; the fd is closed below.
    let ep = unsafe { libc::epoll_create1(0) };
    assert!(ep >= 0, "epoll_create1: {}", std::io::Error::last_os_error());
    for (k, c) in calls.iter().enumerate() {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: k as u64,
        };
        // SAFETY: a valid epoll fd, a socket fd this call owns, and an event to copy.
        let rc = unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, c.stream.as_raw_fd(), &mut ev) };
        assert_eq!(rc, 0, "epoll_ctl: {}", std::io::Error::last_os_error());
    }
    let mut left = calls
        .iter()
        .filter(|c| stage_rank(c.stage) < stage_rank(until))
        .count();
    let deadline = Instant::now() + PATIENCE;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 64];
    while left > 0 {
        assert!(
            Instant::now() < deadline,
            "the daemon stopped answering DISA calls"
        );
        // SAFETY: `events` has room for the count given.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, 1000) };
        assert!(n >= 0, "epoll_wait: {}", std::io::Error::last_os_error());
        for ev in &events[..n as usize] {
            let c = &mut calls[ev.u64 as usize];
            let was = stage_rank(c.stage) < stage_rank(until);
            c.readable();
            if was && stage_rank(c.stage) >= stage_rank(until) {
                left -= 1;
                // Done with here: its socket's later lines, or its end, wake no one.
                // SAFETY: removing a socket fd this epoll fd watches.
                unsafe {
                    libc::epoll_ctl(
                        ep,
                        libc::EPOLL_CTL_DEL,
                        c.stream.as_raw_fd(),
                        std::ptr::null_mut(),
                    )
                };
            }
        }
    }
    // SAFETY: closing the epoll fd made above.
    unsafe { libc::close(ep) };
}

fn stage_rank(s: Stage) -> u8 {
    match s {
        Stage::Setup => 0,
        Stage::AtPrompt => 1,
        Stage::Keyed => 2,
        Stage::Heard => 3,
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
    let mut calls: Vec<Call> = streams
        .into_iter()
        .zip(passcodes)
        .enumerate()
        .map(|(i, (s, p))| Call::new(i as u32, s, p))
        .collect();
    // Every session to the prompt, then all passcodes keyed together.
    drive(&mut calls, Stage::AtPrompt);
    let m = METRICS.parse().unwrap();
    let before = scrape(ns, m);
    for c in &mut calls {
        c.key_passcode();
    }
    drive(&mut calls, Stage::Heard);
    let after = scrape(ns, m);
    let done: Vec<(Instant, Instant)> = calls
        .iter()
        .map(|c| (c.sent.expect("keyed"), c.heard.expect("heard")))
        .collect();
    let first = done.iter().map(|d| d.0).min().unwrap();
    let last = done.iter().map(|d| d.1).max().unwrap();
    let r2k = after
        .histogram("passknock_request_to_kernel_seconds")
        .since(&before.histogram("passknock_request_to_kernel_seconds"));
    let applies = after
        .histogram("passknock_nft_apply_seconds")
        .since(&before.histogram("passknock_nft_apply_seconds"));
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
    println!("element batches applied meanwhile: {}", histogram_line(&applies));
    println!("DISA addresses in allow_sip_v4: {n}/{CALLS}");
    assert_eq!(n, CALLS as usize, "every DISA caller granted");
}
