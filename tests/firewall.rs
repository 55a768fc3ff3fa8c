//! Packets prove the table: two network namespaces joined by veth, the real daemon and real nft.
//! Before a grant packets to a protected port are dropped, during it they pass, and within a
//! second of its end they are dropped again — even on a UDP flow that never stopped sending.

mod support;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::daemon::{eventually, test_config, Daemon};
use support::netns::{tcp_reaches, tcp_server, udp_reaches, Topology, UdpSink};

const WAIT: Duration = Duration::from_millis(400);

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn setup(topo: &Topology, dir: &std::path::Path) -> Daemon {
    // road 2 is trusted; road 1 is a road warrior.
    let extra = r#"
[firewall]
trusted = ["127.0.0.0/8", "::1/128", "203.0.113.20/32"]
"#;
    Daemon::start(&topo.pbx, dir, &test_config(dir, extra))
}

fn grant_end(d: &Daemon, addr: &str) -> i64 {
    let list = d.json(&["list"]);
    list["grants"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["address"] == addr)
        .map(|g| g["expires"].as_i64().unwrap())
        .max()
        .expect("grant listed")
}

#[test]
fn expiry_is_real_for_udp_flows_and_tcp() {
    let topo = Topology::new(1);
    let dir = tempfile::tempdir().unwrap();
    let d = setup(&topo, dir.path());
    let road = topo.road(1);
    let sip = SocketAddr::new(topo.pbx_addr(false), 5060);
    let sip_tls = SocketAddr::new(topo.pbx_addr(false), 5061);
    let _tcp = tcp_server(&topo.pbx, sip_tls);

    // A receiver in the pbx namespace stamps every datagram's arrival.
    let sink = topo.pbx.within(move || UdpSocket::bind(sip).unwrap());
    sink.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let arrivals: Arc<Mutex<Vec<i64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let rx = {
        let (arrivals, stop) = (arrivals.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                if sink.recv_from(&mut buf).is_ok() {
                    arrivals.lock().unwrap().push(now_ms());
                }
            }
        })
    };
    // One long-lived flow: same source port, a datagram every 20 ms, the whole test long.
    let sender = road.ns.within({
        let from = SocketAddr::new(IpAddr::V4(road.v4), 40000);
        move || UdpSocket::bind(from).unwrap()
    });
    let tx = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = sender.send_to(b"rtp-ish", sip);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    std::thread::sleep(Duration::from_millis(600));
    assert!(
        arrivals.lock().unwrap().is_empty(),
        "nothing passes before a grant"
    );
    assert!(
        !tcp_reaches(&road.ns, sip_tls, WAIT),
        "TCP is dropped before a grant"
    );

    let before = now_ms();
    d.ok(&["grant", &road.v4.to_string(), "--services", "sip", "--ttl", "3s"]);
    let granted = now_ms();
    let end = grant_end(&d, &road.v4.to_string());
    assert!(
        eventually(Duration::from_millis(300), || arrivals
            .lock()
            .unwrap()
            .iter()
            .any(|t| *t >= granted)),
        "the flow passes as soon as the grant returns"
    );
    assert!(
        tcp_reaches(&road.ns, sip_tls, WAIT),
        "TCP passes during the grant"
    );
    assert!(
        arrivals.lock().unwrap().iter().all(|t| *t >= before),
        "nothing passed before the grant"
    );

    // Let the grant end, and keep the flow going well past it.
    let wait = (end - now_ms() + 2000).max(0) as u64;
    std::thread::sleep(Duration::from_millis(wait));
    assert!(
        !tcp_reaches(&road.ns, sip_tls, WAIT),
        "TCP is dropped after the grant ends"
    );
    stop.store(true, Ordering::Relaxed);
    tx.join().unwrap();
    rx.join().unwrap();
    let last = *arrivals.lock().unwrap().iter().max().unwrap();
    assert!(
        last <= end + 1000,
        "the last datagram arrived {} ms after the grant ended",
        last - end
    );
    assert!(
        last >= end - 500,
        "the flow kept passing until the end (last {} ms before)",
        end - last
    );
    assert_eq!(
        d.json(&["list"])["grants"].as_array().unwrap().len(),
        0,
        "the store forgot it"
    );
}

#[test]
fn trusted_pass_banned_never_unprotected_untouched() {
    let topo = Topology::new(2);
    let dir = tempfile::tempdir().unwrap();
    let d = setup(&topo, dir.path());
    let (road, trusted) = (topo.road(1), topo.road(2));
    let sip = SocketAddr::new(topo.pbx_addr(false), 5060);
    let iax = SocketAddr::new(topo.pbx_addr(false), 4569);
    let sink = UdpSink::bind(&topo.pbx, sip);
    let iax_sink = UdpSink::bind(&topo.pbx, iax);
    // Ports the config does not protect: the table leaves them to the host.
    let ssh = SocketAddr::new(topo.pbx_addr(false), 22);
    let _ssh = tcp_server(&topo.pbx, ssh);
    let other = SocketAddr::new(topo.pbx_addr(false), 7000);
    let other_sink = UdpSink::bind(&topo.pbx, other);
    let r1 = IpAddr::V4(road.v4);
    let r2 = IpAddr::V4(trusted.v4);

    assert!(
        udp_reaches(&trusted.ns, r2, sip, &sink, WAIT),
        "trusted passes with no grant"
    );
    assert!(
        !udp_reaches(&road.ns, r1, sip, &sink, WAIT),
        "untrusted is dropped"
    );
    assert!(tcp_reaches(&road.ns, ssh, WAIT), "unprotected TCP port untouched");
    assert!(
        udp_reaches(&road.ns, r1, other, &other_sink, WAIT),
        "unprotected UDP port untouched"
    );

    let e = d.refused(&["ban", &r2.to_string()]);
    assert!(e.contains("trusted"), "{e}");

    // A ban beats a grant, and still leaves unprotected ports alone.
    d.ok(&["ban", &r1.to_string(), "--ttl", "1h", "--reason", "test"]);
    let out = d.ok(&["grant", &r1.to_string(), "--services", "sip"]);
    assert!(out.contains("banned"), "the grant warns of the ban: {out}");
    assert!(
        !udp_reaches(&road.ns, r1, sip, &sink, WAIT),
        "banned never passes"
    );
    assert!(
        tcp_reaches(&road.ns, ssh, WAIT),
        "a ban guards only the protected ports"
    );
    d.ok(&["unban", &r1.to_string()]);
    assert!(
        udp_reaches(&road.ns, r1, sip, &sink, WAIT),
        "unbanned, the grant opens"
    );
    // A grant opens only the services it names.
    assert!(
        !udp_reaches(&road.ns, r1, iax, &iax_sink, WAIT),
        "iax was not granted"
    );
    d.ok(&["revoke", &r1.to_string()]);
    assert!(
        !udp_reaches(&road.ns, r1, sip, &sink, WAIT),
        "revoked closes at once"
    );
}

#[test]
fn ipv6_grants_open_and_close() {
    let topo = Topology::new(1);
    let dir = tempfile::tempdir().unwrap();
    let d = setup(&topo, dir.path());
    let road = topo.road(1);
    let sip = SocketAddr::new(topo.pbx_addr(true), 5060);
    let sink = UdpSink::bind(&topo.pbx, sip);
    let r = IpAddr::V6(road.v6);
    assert!(
        !udp_reaches(&road.ns, r, sip, &sink, WAIT),
        "dropped before a grant"
    );
    d.ok(&["grant", &r.to_string(), "--services", "sip", "--ttl", "2s"]);
    assert!(
        udp_reaches(&road.ns, r, sip, &sink, WAIT),
        "passes during the grant"
    );
    assert!(d.nft_set("allow_sip_v6").contains(&r.to_string()));
    std::thread::sleep(Duration::from_millis(3000));
    assert!(
        !udp_reaches(&road.ns, r, sip, &sink, WAIT),
        "dropped after it ends"
    );
    d.ok(&["ban", &r.to_string(), "--ttl", "1h"]);
    assert!(d.nft_set("ban_v6").contains(&r.to_string()));
}

/// With the grant and ban sets split in shards (`firewall.shards = 4`), packets prove each
/// address is looked up in its own shard: grants open over IPv4 and IPv6, a ban beats a grant,
/// and a shard's set emptied behind the daemon's back is filled again by the read-back.
#[test]
fn a_table_split_in_shards_opens_grants_and_keeps_bans_in_each_shard() {
    let topo = Topology::new(2);
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        &topo.pbx,
        dir.path(),
        &test_config(dir.path(), "\n[firewall]\nshards = 4\n"),
    );
    let sip4 = SocketAddr::new(topo.pbx_addr(false), 5060);
    let sip6 = SocketAddr::new(topo.pbx_addr(true), 5060);
    let sink4 = UdpSink::bind(&topo.pbx, sip4);
    let sink6 = UdpSink::bind(&topo.pbx, sip6);
    let (one, two) = (topo.road(1), topo.road(2));
    // 203.0.113.10 is in shard 2, 203.0.113.20 and both IPv6 addresses (…::10, …::20) in 0.
    let (a4, a6, b4) = (IpAddr::V4(one.v4), IpAddr::V6(one.v6), IpAddr::V4(two.v4));
    for (ns, a, sip, sink) in [
        (&one.ns, a4, sip4, &sink4),
        (&one.ns, a6, sip6, &sink6),
        (&two.ns, b4, sip4, &sink4),
    ] {
        assert!(!udp_reaches(ns, a, sip, sink, WAIT), "{a} dropped before a grant");
    }
    for a in [a4, a6, b4] {
        d.ok(&["grant", &a.to_string(), "--services", "sip"]);
    }
    d.ok(&["ban", &b4.to_string(), "--ttl", "1h"]);
    assert!(udp_reaches(&one.ns, a4, sip4, &sink4, WAIT), "granted in shard 2");
    assert!(udp_reaches(&one.ns, a6, sip6, &sink6, WAIT), "granted over IPv6");
    assert!(!udp_reaches(&two.ns, b4, sip4, &sink4, WAIT), "banned in shard 0");
    assert!(d.nft_set("allow_sip_v4_2").contains("203.0.113.10"));
    assert!(d.nft_set("ban_v4_0").contains("203.0.113.20"));
    let flush = d.nft(&["flush", "set", "inet", "passknock", "allow_sip_v4_2"]);
    assert!(flush.status.success());
    assert!(!udp_reaches(&one.ns, a4, sip4, &sink4, WAIT), "its shard emptied");
    assert!(
        eventually(Duration::from_secs(10), || d
            .nft_set("allow_sip_v4_2")
            .contains("203.0.113.10")),
        "the read-back puts it back"
    );
    assert!(
        udp_reaches(&one.ns, a4, sip4, &sink4, WAIT),
        "and it passes again"
    );
    d.ok(&["unban", &b4.to_string()]);
    assert!(
        udp_reaches(&two.ns, b4, sip4, &sink4, WAIT),
        "unbanned, its grant opens"
    );
}
