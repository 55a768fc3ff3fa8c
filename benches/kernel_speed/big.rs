//! Figures 5 and 6, on a store of 100,000 live grants (sip and rtp: 200,000 elements): start to
//! ready with the table gone, as after a reboot; then the whole-table read-back and compare, and
//! what it does to grants made while it runs, beside the same grants with no reconcile running.

use std::net::Ipv4Addr;
use std::os::unix::net::UnixDatagram;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use passknock::model::{NewGrant, Source};
use passknock::store::Store;

use crate::common::{addr, grant, ms, present, set_members, Samples};
use crate::support::daemon::{bench_config, Daemon};
use crate::support::metrics::scrape;
use crate::support::netns::Netns;
use crate::{Figures, METRICS};

const GRANTS: u32 = 100_000;
const BLOCK: u8 = 10;
const QUIET_BLOCK: u8 = 12;
const BUSY_BLOCK: u8 = 13;
/// Grants asked for while reconciles run (and as many with none running), one every PACE; with
/// reconciles running, no more than BUSY_CAP (a reconcile that holds grants for seconds would
/// otherwise keep the bench for hours).
const PROBES: u32 = 1000;
const PACE: Duration = Duration::from_millis(10);
const BUSY_CAP: Duration = Duration::from_secs(30);
/// The shortest reconcile interval the config takes.
const RECONCILE_FAST: &str = "1s";

/// Receives the daemon's `sd_notify` datagrams (`READY=1` once the table is applied), stamped.
fn notify_socket(path: &std::path::Path) -> mpsc::Receiver<(Instant, String)> {
    let sock = UnixDatagram::bind(path).expect("bind the notify socket");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        while let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            if tx.send((Instant::now(), msg)).is_err() {
                return;
            }
        }
    });
    rx
}

/// `PROBES` grants over the control socket, one every `PACE` (or at once when behind), until
/// `cap`: each one's round trip, ms. Scrapes the reconcile gauge every 100 grants into `gauges`.
fn probe(ns: &Netns, d: &Daemon, block: u8, cap: Duration, gauges: &mut Vec<(u64, u64)>) -> Samples {
    let m = METRICS.parse().unwrap();
    let start = Instant::now();
    let mut rt = Vec::new();
    for i in 0..PROBES {
        if start.elapsed() > cap {
            break;
        }
        let due = start + PACE * i;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let t = Instant::now();
        grant(&d.socket, addr(block, i).into());
        rt.push(ms(t.elapsed()));
        if i % 100 == 99 {
            let s = scrape(ns, m);
            let g = |n: &str| s.value(n).unwrap_or(0.0) as u64;
            gauges.push((
                (s.value("passknock_reconcile_last_seconds").unwrap_or(0.0) * 1e6) as u64,
                g("passknock_reconcile_last_elements"),
            ));
        }
    }
    let made = rt.len() as u32;
    let want: Vec<Ipv4Addr> = (0..made).map(|i| addr(block, i)).collect();
    let n = present(&set_members(ns, "allow_sip_v4"), want);
    assert_eq!(n, made as usize, "every probe grant in allow_sip_v4");
    Samples::new(rt)
}

fn reconcile_lines(d: &Daemon) -> usize {
    d.log_text().matches("reconcile:").count()
}

/// The stamps (seconds of the day) of the daemon's `reconcile:` log lines, in order.
fn reconcile_stamps(d: &Daemon) -> Vec<f64> {
    d.log_text()
        .lines()
        .filter(|l| l.contains("reconcile:"))
        .filter_map(|l| {
            // 2026-11-27T00:00:02.634248Z …
            let t = l.get(11..26)?;
            let n = |r: std::ops::Range<usize>| t.get(r)?.parse::<f64>().ok();
            Some(n(0..2)? * 3600.0 + n(3..5)? * 60.0 + n(6..15)?)
        })
        .collect()
}

/// Until the reconcile gauge is set: how long a reconcile took, from the gaps between its log
/// lines less the interval (grants in between are few and fast). Rough, and says so.
fn reconcile_from_log(stamps: &[f64], interval: f64) -> Option<f64> {
    let gaps: Vec<f64> = stamps
        .windows(2)
        .map(|w| (w[1] - w[0]).rem_euclid(86_400.0) - interval)
        .collect();
    (!gaps.is_empty()).then(|| gaps.iter().sum::<f64>() / gaps.len() as f64 * 1000.0)
}

pub fn run(ns: &Netns, extra: &str, f: &mut Figures) {
    println!(
        "== 5. start with {GRANTS} live grants ({} elements: sip and rtp), table gone as after a reboot ==",
        2 * GRANTS
    );
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify.sock");
    let ready_rx = notify_socket(&notify);
    {
        let mut store = Store::open(&dir.path().join("store.db")).unwrap();
        let now = passknock::base::clock::now_ms();
        let new: Vec<NewGrant> = (0..GRANTS)
            .map(|i| NewGrant {
                address: addr(BLOCK, i).into(),
                services: vec!["sip".into(), "rtp".into()],
                source: Source::Knock,
                who: format!("bench {i}"),
                note: String::new(),
                expires: now + 3 * 3_600_000,
            })
            .collect();
        store.insert_grants(&new, now).unwrap();
        assert_eq!(store.counts().unwrap().0, GRANTS as u64);
    }
    // On disk before the daemon starts, as after a reboot: the kernel writing the new store's
    // pages back in the background meanwhile (100 MB here) made the grants' own syncs wait.
    // SAFETY: sync(2) takes nothing and cannot fail.
    unsafe { libc::sync() };
    let cfg = bench_config(dir.path(), extra);
    let notify_env = notify.display().to_string();
    let t0 = Instant::now();
    let mut d = Daemon::start_with_env(ns, dir.path(), &cfg, &[("NOTIFY_SOCKET", &notify_env)]);
    let answered = t0.elapsed();
    let ready = loop {
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok((t, msg)) if msg.lines().any(|l| l == "READY=1") => break Some(t - t0),
            Ok(_) => continue,
            Err(_) => break None,
        }
    };
    f.ready_ms = ready.map(ms);
    println!(
        "process start → READY=1 (store opened, table built and applied, sockets bound): {}",
        ready.map_or("never said".into(), |r| format!("{:.0} ms", ms(r)))
    );
    println!(
        "process start → `passknock status` answering (as benches/foundation.rs measures): {:.0} ms",
        ms(answered)
    );
    let sip = set_members(ns, "allow_sip_v4");
    let rtp = set_members(ns, "allow_rtp_v4");
    let want = || (0..GRANTS).map(|i| addr(BLOCK, i));
    let (ns_sip, ns_rtp) = (present(&sip, want()), present(&rtp, want()));
    println!("elements after start: allow_sip_v4 {ns_sip}, allow_rtp_v4 {ns_rtp}");
    assert_eq!((ns_sip, ns_rtp), (GRANTS as usize, GRANTS as usize));
    drop((sip, rtp));

    println!(
        "== 6. read-back and compare of {} elements, and grants made while it runs ==",
        2 * GRANTS
    );
    let mut quiet_gauges = Vec::new();
    f.rt_quiet = probe(ns, &d, QUIET_BLOCK, Duration::MAX, &mut quiet_gauges);
    println!(
        "{PROBES} socket grants, one every {} ms, no reconcile running (interval 10m): {}",
        PACE.as_millis(),
        f.rt_quiet.line()
    );
    // Restart with the shortest interval; wait for a first reconcile before the probes.
    let text = std::fs::read_to_string(&d.config).unwrap();
    let fast = text.replace(
        "reconcile-interval = \"10m\"",
        &format!("reconcile-interval = \"{RECONCILE_FAST}\""),
    );
    assert_ne!(text, fast, "the bench config sets reconcile-interval");
    d.term();
    std::fs::write(&d.config, fast).unwrap();
    d.spawn();
    let m = METRICS.parse().unwrap();
    let first = Instant::now();
    let lines_at_start = reconcile_lines(&d);
    while reconcile_lines(&d) == lines_at_start
        && scrape(ns, m)
            .value("passknock_reconcile_last_elements")
            .unwrap_or(0.0)
            == 0.0
        && first.elapsed() < Duration::from_secs(20)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = reconcile_lines(&d);
    let stamps_before = reconcile_stamps(&d).len();
    let mut gauges = Vec::new();
    let t = Instant::now();
    f.rt_busy = probe(ns, &d, BUSY_BLOCK, BUSY_CAP, &mut gauges);
    let window = t.elapsed();
    f.reconciles = reconcile_lines(&d) - before;
    // The gap before the window's first line counts too: that reconcile ran back to back.
    let stamps = reconcile_stamps(&d);
    f.reconcile_log_ms = reconcile_from_log(&stamps[stamps_before.saturating_sub(1)..], 1.0);
    let s = scrape(ns, m);
    gauges.push((
        (s.value("passknock_reconcile_last_seconds").unwrap_or(0.0) * 1e6) as u64,
        s.value("passknock_reconcile_last_elements").unwrap_or(0.0) as u64,
    ));
    let seen: Vec<&(u64, u64)> = gauges.iter().filter(|g| g.0 > 0).collect();
    f.reconcile_us = seen.last().map(|g| g.0 as f64);
    println!(
        "reconcile-interval {RECONCILE_FAST}: passknock_reconcile_last_seconds {}",
        match seen.last() {
            Some((us, el)) => format!(
                "{:.1} ms for {el} elements (last); max seen {:.1} ms over {} scrapes",
                *us as f64 / 1000.0,
                seen.iter().map(|g| g.0).max().unwrap() as f64 / 1000.0,
                seen.len()
            ),
            None => "no samples (the gauge is still 0)".into(),
        }
    );
    if let Some(est) = f.reconcile_log_ms {
        println!(
            "from the daemon's log: one `reconcile:` line every {:.1} s with a {RECONCILE_FAST} \
             interval, so each read-back + compare (+ fix) took about {:.0} ms",
            est / 1000.0 + 1.0,
            est
        );
    }
    println!(
        "{} socket grants (at most {PROBES}, for at most {} s), one every {} ms, over {:.1} s \
         while reconciles run ({} `reconcile:` log lines meanwhile): {}",
        f.rt_busy.len(),
        BUSY_CAP.as_secs(),
        PACE.as_millis(),
        window.as_secs_f64(),
        f.reconciles,
        f.rt_busy.line()
    );
    if let (Some(max), Some(med)) = (f.rt_busy.max(), f.rt_quiet.q(0.5)) {
        println!(
            "worst grant delay by a reconcile (max with − median without): {:.2} ms",
            max - med
        );
    }
    d.kill9();
    let _ = d.nft(&["delete", "table", "inet", "passknock"]);
}
