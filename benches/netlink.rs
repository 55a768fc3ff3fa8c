//! Netlink micro-bench (run as root: `cargo bench --bench netlink`): the in-process netlink path
//! beside the spawn path (`nft -j -f -`), on a real table in a network namespace of its own:
//!
//! 1. 1,000 single-element changes each way: median and p99, and the ratio.
//! 2. One batch of 10,000 elements each way.
//! 3. Read-back and compare of 200,000 elements: `nft -j list table` + `Observed::parse` +
//!    `readback::compare`, against `Netlink::list_set` over each set + a merge compare.
//! 4. 100,000 elements into a fresh set: `fill`, `apply`, and `nft -j -f` of the table with them.
//! 5. `list_set` of one set of 25,000 to 200,000 elements (the kernel's dump grows with n²).
//!
//! Figures only; nothing here asserts a time.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use passknock::base::clock::{now_ms, UnixMs};
use passknock::config::PortRange;
use passknock::nft::netlink::Netlink;
use passknock::nft::readback::{self, Observed};
use passknock::nft::render::render_changes;
use passknock::nft::{Changes, ElemKey, Elements, Layout, Nft};

const TABLE: &str = "passknock";
const HOUR: i64 = 3_600_000;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Prints median and p99 and returns them.
fn summary(name: &str, mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let (med, p99) = (percentile(&v, 0.5), percentile(&v, 0.99));
    println!(
        "{name}: n={} median={med:.3} ms p99={p99:.3} ms max={:.3} ms",
        v.len(),
        v[v.len() - 1]
    );
    (med, p99)
}

fn v4(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x6440_0000 + i))
}

fn v6(i: u32) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from((0x2001_0db8u128 << 96) | i as u128))
}

fn key(set: &str, addr: IpAddr) -> ElemKey {
    ElemKey {
        set: set.into(),
        addr,
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("netlink bench: skipped (needs root for a network namespace and nftables)");
        return;
    }
    std::thread::spawn(|| {
        // SAFETY: unshare of the network namespace affects only this thread and what it spawns.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
        run();
    })
    .join()
    .unwrap();
}

fn run() {
    let p = |s: &str| s.parse::<PortRange>().unwrap();
    let layout = Layout::new(
        TABLE,
        vec![
            ("rtp".into(), vec![p("udp/10000-20000")]),
            ("sip".into(), vec![p("udp/5060")]),
        ],
        &[],
    );
    let nft = Nft::new(Path::new("nft"));
    let rebuild = || {
        let json = layout.render_table_json(&Elements::new(), now_ms()).unwrap();
        nft.apply_json(&json).unwrap();
    };
    rebuild();
    let mut nl = Netlink::open().unwrap();

    // 1. Single-element changes.
    let n = 1000;
    let (mut spawn, mut netlink) = (Vec::new(), Vec::new());
    for i in 0..n {
        let now = now_ms();
        let c = Changes {
            set: vec![(key("allow_sip_v4", v4(i)), now + HOUR)],
            remove: vec![],
        };
        let t = Instant::now();
        nft.apply(&render_changes(&layout, &c, now)).unwrap();
        spawn.push(ms(t.elapsed()));
        let c = Changes {
            set: vec![(key("allow_sip_v4", v4(100_000 + i)), now + HOUR)],
            remove: vec![],
        };
        let t = Instant::now();
        nl.apply(TABLE, &c, now).unwrap();
        netlink.push(ms(t.elapsed()));
    }
    println!("1. {n} single-element changes (add, delete, add-with-timeout in one batch)");
    let (sm, sp) = summary("   spawn nft  ", spawn);
    let (nm, np) = summary("   netlink    ", netlink);
    println!(
        "   ratio spawn/netlink: median {:.0}x, p99 {:.0}x",
        sm / nm,
        sp / np
    );

    // 2. One batch of 10,000 elements, five times each way.
    let batch = 10_000;
    let (mut spawn, mut netlink) = (Vec::new(), Vec::new());
    for round in 0..5u32 {
        let now = now_ms();
        let make = |base: u32| Changes {
            set: (0..batch)
                .map(|i| (key("allow_rtp_v4", v4(base + round * batch + i)), now + HOUR))
                .collect(),
            remove: vec![],
        };
        let c = make(200_000);
        let t = Instant::now();
        nft.apply(&render_changes(&layout, &c, now)).unwrap();
        spawn.push(ms(t.elapsed()));
        let c = make(400_000);
        let t = Instant::now();
        nl.apply(TABLE, &c, now).unwrap();
        netlink.push(ms(t.elapsed()));
    }
    println!("2. one batch of {batch} elements, 5 runs each way");
    let (sm, _) = summary("   spawn nft  ", spawn);
    let (nm, _) = summary("   netlink    ", netlink);
    println!("   ratio spawn/netlink: median {:.0}x", sm / nm);

    // 3. Read-back and compare of 200,000 elements.
    rebuild();
    let now = now_ms();
    let mut desired = Elements::new();
    for i in 0..100_000 {
        desired.insert(key("allow_sip_v4", v4(i)), now + HOUR);
    }
    for i in 0..50_000 {
        desired.insert(key("allow_sip_v6", v6(i)), now + HOUR);
        desired.insert(key("ban_v4", v4(i)), now + 2 * HOUR);
    }
    let t = Instant::now();
    nl.fill(TABLE, &desired, now).unwrap();
    println!(
        "3. read-back and compare of {} elements (100,000 in allow_sip_v4, 50,000 each in allow_sip_v6 \
         and ban_v4; filled by one netlink batch of plain adds in {:.0} ms)",
        desired.len(),
        ms(t.elapsed())
    );
    // Let the sets' hash tables finish growing before timing listings.
    let sets: Vec<String> = layout.dynamic_sets().into_iter().map(|(s, _)| s).collect();
    for s in &sets {
        nl.list_set(TABLE, s).unwrap();
    }
    let (mut spawn, mut netlink, mut netlink_list) = (Vec::new(), Vec::new(), Vec::new());
    let mut per_set = Vec::new();
    let (mut spawn_differ, mut netlink_differ) = (0, 0);
    for _ in 0..5 {
        let now = now_ms();
        let t = Instant::now();
        let json = nft.list_table(TABLE).unwrap().unwrap();
        let obs = Observed::parse(&json).unwrap();
        let state = readback::compare(&layout, &desired, Some(&obs), now);
        spawn.push(ms(t.elapsed()));
        spawn_differ = match state {
            readback::TableState::InSync => 0,
            readback::TableState::Fix(c) => c.len(),
            readback::TableState::Rebuild(why) => panic!("{why}"),
        };

        let t = Instant::now();
        let mut differ = 0;
        let mut listed = 0;
        let mut list_time = Duration::ZERO;
        for s in &sets {
            let l = Instant::now();
            let got = nl.list_set(TABLE, s).unwrap().unwrap();
            list_time += l.elapsed();
            per_set.push((s.clone(), got.len(), ms(l.elapsed())));
            listed += got.len();
            // The kernel counts each element's time left as it lists it: judge a set against
            // the clock read just after its listing, not one read before all of them.
            differ += merge_compare(&desired, s, &got, now_ms());
        }
        netlink.push(ms(t.elapsed()));
        netlink_list.push(ms(list_time));
        assert_eq!(listed, desired.len());
        netlink_differ = differ;
    }
    let (sm, _) = summary("   spawn: nft -j list table + Observed::parse + compare", spawn);
    summary("   netlink: list_set over each set", netlink_list);
    let (nm, _) = summary("   netlink: list_set over each set + merge compare", netlink);
    println!("   ratio spawn/netlink (with compare): median {:.1}x", sm / nm);
    let last: Vec<String> = per_set[per_set.len() - sets.len()..]
        .iter()
        .filter(|(_, n, _)| *n > 0)
        .map(|(s, n, t)| format!("{s} ({n}) {t:.0} ms"))
        .collect();
    println!("   list_set per set, last run: {}", last.join(", "));
    println!(
        "   elements judged out of line (timeout drifted > 2 s while listing), last run: spawn \
         {spawn_differ}, netlink {netlink_differ}"
    );

    // 4. Filling sets just created: plain adds versus apply's add/delete/add.
    let n = 100_000u32;
    let now = now_ms();
    let elements: Elements = (0..n).map(|i| (key("ban_v6", v6(i)), now + HOUR)).collect();
    rebuild();
    let t = Instant::now();
    nl.fill(TABLE, &elements, now).unwrap();
    let fill = ms(t.elapsed());
    rebuild();
    let changes = Changes {
        set: elements.iter().map(|(k, e)| (k.clone(), *e)).collect(),
        remove: vec![],
    };
    let t = Instant::now();
    nl.apply(TABLE, &changes, now).unwrap();
    let apply = ms(t.elapsed());
    rebuild();
    let json = layout.render_table_json(&elements, now).unwrap();
    let t = Instant::now();
    nft.apply_json(&json).unwrap();
    let spawn = ms(t.elapsed());
    println!(
        "4. {n} IPv6 elements into a fresh set: netlink fill {fill:.0} ms, netlink apply {apply:.0} ms, \
         nft -j -f (table with elements) {spawn:.0} ms"
    );

    // 5. How one set's listing grows with its size: the kernel walks the set's hash table afresh
    //    for each 32 KiB piece of the dump, skipping what it sent, so the cost grows with n².
    let mut line = Vec::new();
    for n in [25_000u32, 50_000, 100_000, 200_000] {
        rebuild();
        let now = now_ms();
        let elements: Elements = (0..n).map(|i| (key("ban_v4", v4(i)), now + HOUR)).collect();
        nl.fill(TABLE, &elements, now).unwrap();
        nl.list_set(TABLE, "ban_v4").unwrap();
        let t = Instant::now();
        let got = nl.list_set(TABLE, "ban_v4").unwrap().unwrap();
        assert_eq!(got.len(), n as usize);
        line.push(format!("{n}: {:.0} ms", ms(t.elapsed())));
    }
    println!("5. list_set of one set by size: {}", line.join(", "));
}

/// How many elements of `set` differ between the store's wish and the kernel's listing (sorted by
/// address, as `list_set` returns it): one pass over both, judged as `readback::compare` judges
/// them (missing, a timeout off by more than 2 s, or unknown).
fn merge_compare(desired: &Elements, set: &str, got: &[(IpAddr, Option<u64>)], now: UnixMs) -> usize {
    let lo = key(set, IpAddr::from([0u8; 4]));
    let hi = key(set, IpAddr::from([0xffu8; 16]));
    let mut want = desired.range(lo..=hi).peekable();
    let mut have = got.iter().peekable();
    let mut differ = 0;
    loop {
        match (want.peek(), have.peek()) {
            (None, None) => return differ,
            (Some((k, end)), Some((ip, left))) if k.addr == *ip => {
                // In whole seconds, as the spawn path's compare has them.
                let remaining = (**end - now + 999) / 1000;
                if left.is_none_or(|l| (l as i64 / 1000 - remaining).abs() > 2) {
                    differ += 1;
                }
                want.next();
                have.next();
            }
            (Some((k, _)), Some((ip, _))) if k.addr < *ip => {
                differ += 1;
                want.next();
            }
            (Some(_), None) => {
                differ += 1;
                want.next();
            }
            _ => {
                differ += 1;
                have.next();
            }
        }
    }
}
