//! `--keep` reaction bench (run as root: `cargo bench --bench keep`): the real daemon and nft in a
//! PBX namespace, `passknock knock --keep` in a road namespace whose address the bench changes
//! `KEEP_ROUNDS` times (default 10). For each change: the time until a TCP connection from the
//! new address to a granted port passes, and until the daemon lists the new grant. The keep
//! loop looks at the interfaces every 2 s, so most of the figure is that period.

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use knockd::KnockSecret;
use support::daemon::{bench_config, eventually, Daemon, PASSKNOCK};
use support::netns::{tcp_reaches, tcp_server, Topology};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds: usize = std::env::var("KEEP_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let topo = Topology::new(1);
    let dir = tempfile::tempdir().unwrap();
    let secret = KnockSecret::generate().unwrap();
    let file = dir.path().join("office.secret");
    knockd::secret::write_private(&file, &secret.to_hex()).unwrap();
    let knock = format!(
        "[knock.profiles.office]\nmode = \"spa\"\nsecret-file = \"{}\"\nservices = [\"sip\"]\nttl = \"1h\"\n",
        file.display()
    );
    let d = Daemon::start(&topo.pbx, dir.path(), &bench_config(dir.path(), &knock));
    let probe = SocketAddr::new(topo.pbx_addr(false), 5061);
    let _server = tcp_server(&topo.pbx, probe);
    let client = dir.path().join("client.toml");
    knockd::secret::write_private(
        &client,
        &format!(
            "[profiles.office]\nmode = \"spa\"\nsecret = \"{}\"\nprobe = \"tcp/5061\"\nwait = \"3s\"\nttl = \"1h\"\n",
            secret.to_hex()
        ),
    )
    .unwrap();
    let road = &topo.road(1).ns;
    let mut child = road
        .command(PASSKNOCK)
        .args(["knock", &topo.pbx_v4.to_string(), "--profile", "office", "--keep"])
        .arg("--client-config")
        .arg(&client)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let listed = |a: IpAddr| {
        d.json(&["list"])["grants"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["address"] == a.to_string())
    };
    let first: IpAddr = topo.road(1).v4.into();
    assert!(
        eventually(Duration::from_secs(10), || listed(first)),
        "the first knock"
    );
    let mut old = first;
    let (mut open_ms, mut listed_ms) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        let new: IpAddr = format!("203.0.113.{}", 100 + i).parse().unwrap();
        topo.pbx
            .ip(&["route", "add", &format!("{new}/32"), "dev", "pkp1"]);
        let t0 = Instant::now();
        road.ip(&["addr", "add", &format!("{new}/32"), "dev", "pkr1"]);
        road.ip(&["addr", "del", &format!("{old}/32"), "dev", "pkr1"]);
        road.ip(&["route", "replace", &format!("{}/32", topo.pbx_v4), "dev", "pkr1"]);
        let mut seen_listed = None;
        loop {
            if seen_listed.is_none() && listed(new) {
                seen_listed = Some(t0.elapsed());
            }
            if tcp_reaches(road, probe, Duration::from_millis(100)) {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "no access from {new}");
        }
        let open = t0.elapsed();
        let seen = seen_listed.unwrap_or(open);
        open_ms.push(open.as_millis() as u64);
        listed_ms.push(seen.as_millis() as u64);
        println!(
            "round {i}: {old} -> {new}: granted after {} ms, TCP passes after {} ms",
            seen.as_millis(),
            open.as_millis()
        );
        old = new;
        // Let the next change land at a random point of the 2 s interface-watch period.
        std::thread::sleep(Duration::from_millis(700 + 137 * i as u64 % 1300));
    }
    let _ = child.kill();
    let _ = child.wait();
    let stats = |v: &mut Vec<u64>| {
        v.sort();
        let p = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
        (p(0.5), p(0.99), v[v.len() - 1])
    };
    let (m, p99, max) = stats(&mut open_ms);
    let (lm, lp99, _) = stats(&mut listed_ms);
    println!(
        "keep reaction over {rounds} address changes: TCP from the new address passes after median {m} ms, \
         p99 {p99} ms, max {max} ms; the daemon lists the new grant after median {lm} ms, p99 {lp99} ms"
    );
}
