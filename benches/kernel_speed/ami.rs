//! Figures 3 and 4: security events from the local AMI peer to bans in `ban_v4`. One event that
//! crosses the threshold, timed by `nft monitor` (the kernel's own notice of the new element); and
//! 10,000 addresses crossing it within one second, counted by polling the set.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::{addr, ami_status, histogram_line, ms, present, set_members, Samples};
use crate::support::ami_peer::{security_event, AmiPeer};
use crate::support::daemon::Daemon;
use crate::support::metrics::scrape;
use crate::support::netns::Netns;
use crate::{Figures, BAN_THRESHOLD, METRICS};

/// Rounds of figure 3 (and unmeasured ones first, to warm up and prove the monitor sees bans).
const ROUNDS: u32 = 200;
const WARMUP: u32 = 5;
/// Figure 4: addresses, and a poll's period.
const FLOOD: u32 = 10_000;
const POLL_EVERY: Duration = Duration::from_millis(50);

/// `nft monitor elements` in the namespace: each line the kernel's notice of an element added or
/// deleted, stamped as it arrives. Killed on drop.
struct Monitor {
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
}

impl Monitor {
    fn start(ns: &Netns) -> Monitor {
        let mut child = ns
            .command("nft")
            .args(["monitor", "elements"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("nft monitor");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send((Instant::now(), line)).is_err() {
                    return;
                }
            }
        });
        Monitor { child, lines }
    }

    /// When the kernel first reported `ip` added to `ban_v4`, waiting at most until `deadline`.
    fn added(&self, ip: Ipv4Addr, deadline: Instant) -> Option<Instant> {
        let want = format!("add element inet passknock ban_v4 {{ {ip} ");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((t, line)) if line.starts_with(&want) => return Some(t),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        // `ip netns exec` execs nft: this child is the monitor itself.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` wrong-password events for `ip`, alternating the two kinds Asterisk sends.
fn events(ip: Ipv4Addr, n: u32, serial: &mut u64) -> String {
    (0..n)
        .map(|k| {
            *serial += 1;
            let kind = if k % 2 == 0 {
                "InvalidPassword"
            } else {
                "ChallengeResponseFailed"
            };
            security_event(kind, IpAddr::V4(ip), *serial)
        })
        .collect()
}

/// Figure 3: the event that crosses the threshold, to the element in `ban_v4`.
pub fn event_to_ban(ns: &Netns, d: &Daemon, peer: &AmiPeer, f: &mut Figures) {
    println!(
        "== 3. AMI security event to ban in nft (local AMI peer in the bench, not Asterisk: it \
         sends each event at a known instant) =="
    );
    let m = METRICS.parse().unwrap();
    let monitor = Monitor::start(ns);
    // Let the monitor subscribe before the first ban it must see.
    std::thread::sleep(Duration::from_millis(300));
    let mut serial = 0;
    let (mut seen, mut inside) = (Vec::new(), Vec::new());
    let mut before = None;
    for i in 0..WARMUP + ROUNDS {
        if i == WARMUP {
            before = Some(scrape(ns, m));
        }
        let ip = addr(3, i);
        // The offences below the threshold first, untimed; then the one that crosses it.
        peer.send(events(ip, BAN_THRESHOLD - 1, &mut serial).as_bytes())
            .expect("AMI peer write");
        std::thread::sleep(Duration::from_millis(20));
        let crossing = events(ip, 1, &mut serial);
        let t0 = peer.send(crossing.as_bytes()).expect("AMI peer write");
        let t1 = monitor
            .added(ip, t0 + Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{ip} not banned within 10 s:\n{}", d.log_text()));
        if i >= WARMUP {
            seen.push(ms(t1 - t0));
            let us = ami_status(&d.socket).last_ban_us.unwrap_or(0);
            inside.push(us as f64 / 1000.0);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(monitor);
    let after = scrape(ns, m);
    let r2k = after
        .histogram("passknock_request_to_kernel_seconds")
        .since(&before.unwrap().histogram("passknock_request_to_kernel_seconds"));
    let banned = set_members(ns, "ban_v4");
    let n = present(&banned, (0..WARMUP + ROUNDS).map(|i| addr(3, i)));
    assert_eq!(n, (WARMUP + ROUNDS) as usize, "every crossing address banned");
    f.ami_ban = Samples::new(seen);
    f.ami_inside = Samples::new(inside);
    println!(
        "threshold {BAN_THRESHOLD}: {} offences sent first, then the crossing one, {ROUNDS} addresses",
        BAN_THRESHOLD - 1
    );
    println!(
        "crossing event written by the peer → kernel's notice of the element (nft monitor): {}",
        f.ami_ban.line()
    );
    println!(
        "inside the daemon, event received → ban applied (contacts: last_ban_us): {}",
        f.ami_inside.line()
    );
    println!("request_to_kernel for these bans: {}", histogram_line(&r2k));
    println!("addresses in ban_v4: {n}/{}", WARMUP + ROUNDS);
}

/// Figure 4: 10,000 addresses cross the threshold within one second; when are all banned?
/// Waits at most `cap` after the last crossing. Ends the daemon (a path that has not finished by
/// then still has bans queued).
pub fn flood(ns: &Netns, d: &mut Daemon, peer: &AmiPeer, cap: Duration, f: &mut Figures) {
    println!("== 4. {FLOOD} addresses crossing the AMI ban threshold within one second ==");
    let mut serial = 1_000_000;
    let want: Vec<Ipv4Addr> = (0..FLOOD).map(|i| addr(4, i)).collect();
    let wanted: HashSet<String> = want.iter().map(|a| a.to_string()).collect();
    // First the offences below the threshold, spread over a second, and wait until the daemon
    // has read them all: only the crossings are timed.
    let events_before = ami_status(&d.socket).events;
    let priming: Vec<String> = want
        .iter()
        .map(|ip| events(*ip, BAN_THRESHOLD - 1, &mut serial))
        .collect();
    let crossing: Vec<String> = want.iter().map(|ip| events(*ip, 1, &mut serial)).collect();
    peer.send_paced(Instant::now(), &priming, Duration::from_secs(1))
        .expect("AMI peer write");
    let primed = (FLOOD * (BAN_THRESHOLD - 1)) as u64;
    let t = Instant::now();
    while ami_status(&d.socket).events < events_before + primed {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the daemon did not read the priming events"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "{} offences below the threshold sent over 1 s and read by the daemon; now the {FLOOD} \
         crossing events, spread evenly over 1 s",
        primed
    );
    let start = Instant::now() + Duration::from_millis(50);
    let last_crossing = start + Duration::from_secs(1) * (FLOOD - 1) / FLOOD;
    let writer = {
        let peer = peer.clone();
        std::thread::spawn(move || {
            // Fails once the daemon is gone (killed below when the cap is reached).
            let sent = peer.send_paced(start, &crossing, Duration::from_secs(1));
            (Instant::now(), sent.is_ok())
        })
    };
    // One `nft -j list set` every 50 ms, counting the flood's addresses.
    let (mut all_at, mut count, mut polls) = (None, 0, 0);
    let give_up = last_crossing + cap;
    while Instant::now() < give_up {
        let tick = Instant::now();
        let have = set_members(ns, "ban_v4");
        count = have.iter().filter(|a| wanted.contains(*a)).count();
        polls += 1;
        if count == FLOOD as usize {
            all_at = Some(Instant::now());
            break;
        }
        std::thread::sleep(POLL_EVERY.saturating_sub(tick.elapsed()));
    }
    let waited = Instant::now().saturating_duration_since(last_crossing);
    // Stop the daemon: a path that did not finish still holds queued bans and reads no more.
    d.kill9();
    let (last_write, all_sent) = writer.join().unwrap();
    if all_sent {
        println!(
            "the peer's last write returned {:.0} ms after the last crossing was due (a lag here \
             would mean the daemon had stopped reading)",
            ms(last_write.saturating_duration_since(last_crossing))
        );
    } else {
        println!("the daemon was stopped before it had read every crossing event");
    }
    assert!(count <= FLOOD as usize);
    match all_at {
        Some(t) => {
            let took = ms(t.saturating_duration_since(last_crossing));
            println!(
                "all {FLOOD} in ban_v4 {took:.0} ms after the last crossing was due ({polls} polls, \
                 each one `nft -j list set`, every {} ms: resolution ~{} ms)",
                POLL_EVERY.as_millis(),
                POLL_EVERY.as_millis()
            );
            f.flood_ms = Some(took);
        }
        None => println!(
            "gave up {:.0} s after the last crossing: {count}/{FLOOD} banned by then",
            waited.as_secs_f64()
        ),
    }
    f.flood_banned = count;
}
