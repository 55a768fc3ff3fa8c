//! The cost of a phone's re-login under `[sip-auth-grant]` (`cargo bench --bench sip_auth`; no
//! root): every REGISTER refresh and every call logs in again, and while the endpoint's grant is
//! fresh the engine only reads — the address's ban and the address's grants, two indexed
//! lookups in the real SQLite store. Timed here with 100,000 live grants and 10,000 bans, next
//! to one scan of every live grant (what the lookup must never become).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use passknock::base::clock::now_ms;
use passknock::model::{NewGrant, Source};
use passknock::store::Store;

fn addr(i: u32) -> IpAddr {
    // 100.64.0.0/10 has room for 4M hosts; skip .0 and .255.
    let n = i / 254 * 256 + i % 254 + 1;
    format!("100.{}.{}.{}", 64 + (n >> 16), (n >> 8) & 255, n & 255)
        .parse()
        .unwrap()
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn summary(name: &str, mut v: Vec<f64>) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "{name}: n={} median={:.1} µs p99={:.1} µs max={:.1} µs",
        v.len(),
        at(0.5),
        at(0.99),
        v[v.len() - 1]
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("store.db")).unwrap();
    let now = now_ms();
    let total = 100_000u32;
    let grants: Vec<NewGrant> = (0..total)
        .map(|i| NewGrant {
            address: addr(i),
            services: vec!["rtp".into()],
            source: Source::Ami,
            who: format!("sip-auth:{}", 700 + i % 200),
            note: String::new(),
            expires: now + 8 * 3_600_000,
        })
        .collect();
    store.insert_grants(&grants, now).unwrap();
    for i in 0..10_000 {
        store.ban(addr(total + i), "bench", now + 3_600_000, now).unwrap();
    }

    // A re-login: is the address banned, and has its endpoint a fresh grant there?
    let n = 10_000u32;
    let mut took = Vec::new();
    let mut fresh = 0;
    for k in 0..n {
        let i = (k * 7919) % total;
        let (ip, who) = (addr(i), format!("sip-auth:{}", 700 + i % 200));
        let t = Instant::now();
        let banned = store.ban_of(ip).unwrap().is_some_and(|b| b.expires > now);
        let found = store
            .grants_for(ip, now)
            .unwrap()
            .into_iter()
            .any(|g| g.who == who && g.source == Source::Ami && g.expires - now > 4 * 3_600_000);
        took.push(us(t.elapsed()));
        if !banned && found {
            fresh += 1;
        }
    }
    assert_eq!(fresh, n, "every re-login finds its fresh grant");
    println!("== a re-login while the grant is fresh, {total} live grants and 10,000 bans ==");
    summary("ban_of + grants_for (the engine's whole check, no write)", took);
    let t = Instant::now();
    let all = store.live_grants(now).unwrap();
    println!(
        "for scale, one scan of every live grant ({}): {:.1} ms",
        all.len(),
        t.elapsed().as_secs_f64() * 1000.0
    );
}
