//! Standing entries through the real daemon, real nft and packets between namespaces: by address,
//! network and DNS name (resolved through a hosts file the daemon's namespace sees as /etc/hosts),
//! a name that moves is followed, one that stops resolving keeps its addresses across a restart,
//! a tampered set is repaired, `allow remove` closes, and bad input is refused.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use support::daemon::{eventually, test_config, Daemon};
use support::netns::{udp_reaches, Netns, Topology, UdpSink};

const WAIT: Duration = Duration::from_millis(400);
/// Far more than a few resolve periods (1 s here): how long a test waits for a change.
const FOLLOW: Duration = Duration::from_secs(20);

/// `/etc/netns/NAME/hosts`: `ip netns exec NAME` binds it over /etc/hosts for the daemon. It is
/// rewritten in place (same inode), so the bind sees each new text. Removed on drop.
struct Hosts {
    dir: PathBuf,
}

impl Hosts {
    fn new(ns: &Netns) -> Hosts {
        let dir = PathBuf::from("/etc/netns").join(&ns.name);
        std::fs::create_dir_all(&dir).unwrap();
        let h = Hosts { dir };
        h.write("");
        h
    }

    fn write(&self, lines: &str) {
        std::fs::write(self.dir.join("hosts"), format!("127.0.0.1 localhost\n{lines}\n")).unwrap();
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn config(dir: &std::path::Path) -> String {
    test_config(
        dir,
        r#"
[standing]
resolve-every = "1s"
grace = "1h"
"#,
    )
}

fn name_state(d: &Daemon, name: &str) -> serde_json::Value {
    let l = d.json(&["allow", "list"]);
    l["names"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_standing_name_follows_its_address_survives_failures_and_closes_on_remove() {
    let topo = Topology::new(3);
    let hosts = Hosts::new(&topo.pbx);
    hosts.write("203.0.113.10 phone.example.test");
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(&topo.pbx, dir.path(), &config(dir.path()));
    let sip = SocketAddr::new(topo.pbx_addr(false), 5060);
    let iax = SocketAddr::new(topo.pbx_addr(false), 4569);
    let sink = UdpSink::bind(&topo.pbx, sip);
    let iax_sink = UdpSink::bind(&topo.pbx, iax);
    let (r1, r2, r3) = (topo.road(1), topo.road(2), topo.road(3));
    let (a1, a2, a3) = (IpAddr::V4(r1.v4), IpAddr::V4(r2.v4), IpAddr::V4(r3.v4));
    let reaches = |road: &support::netns::Road, a: IpAddr| udp_reaches(&road.ns, a, sip, &sink, WAIT);

    assert!(!reaches(r1, a1), "closed before any entry");
    // Bad input first: each refused with its reason, nothing added.
    for (args, says) in [
        (
            vec!["allow", "wide", "198.0.0.0/8", "--services", "sip"],
            "wider than /16",
        ),
        (vec!["allow", "lo", "127.0.0.1", "--services", "sip"], "loopback"),
        (
            vec!["allow", "x", "203.0.113.30", "--services", "ftp"],
            "unknown service",
        ),
        (
            vec!["allow", "x", "not_a_name", "--services", "sip"],
            "not an address",
        ),
        (vec!["allow", "list", "203.0.113.30"], ""),
    ] {
        let e = d.refused(&args);
        assert!(e.contains(says), "{args:?}: {e}");
    }
    d.ok(&[
        "allow",
        "home",
        "phone.example.test",
        "--services",
        "sip",
        "--note",
        "Ann's DSL",
    ]);
    d.ok(&["allow", "office", "203.0.113.30/32", "--services", "sip,iax"]);
    let e = d.refused(&["allow", "office", "203.0.113.31", "--services", "sip"]);
    assert!(e.contains("exists"), "{e}");

    assert!(
        eventually(FOLLOW, || reaches(r1, a1)),
        "the name's address passes"
    );
    assert!(reaches(r3, a3), "the office network passes");
    assert!(
        !udp_reaches(&r1.ns, a1, iax, &iax_sink, WAIT),
        "home holds sip only"
    );
    assert!(
        udp_reaches(&r3.ns, a3, iax, &iax_sink, WAIT),
        "office holds iax too"
    );
    assert!(!reaches(r2, a2), "nobody else");
    let list = d.ok(&["allow", "list"]);
    assert!(
        list.contains("home") && list.contains("Ann's DSL") && list.contains("203.0.113.10"),
        "{list}"
    );
    let status = d.ok(&["status"]);
    assert!(status.contains("standing  2 entries"), "{status}");
    assert!(status.contains("phone.example.test"), "{status}");

    // The name moves: the table follows within a few periods.
    hosts.write("203.0.113.20 phone.example.test");
    assert!(eventually(FOLLOW, || reaches(r2, a2)), "the new address passes");
    assert!(!reaches(r1, a1), "the old address is closed");
    let history = d.ok(&["log", "--since", "1h"]);
    assert!(history.contains("name-changed"), "{history}");

    // It stops resolving: its last address stays, across a restart too.
    hosts.write("");
    assert!(
        eventually(FOLLOW, || name_state(&d, "phone.example.test")["error"]
            .is_string()),
        "the failure is seen"
    );
    assert!(
        reaches(r2, a2),
        "a name that does not resolve keeps its addresses"
    );
    d.term();
    d.spawn();
    assert!(eventually(FOLLOW, || reaches(r2, a2)), "and after a restart");
    assert_eq!(
        name_state(&d, "phone.example.test")["addresses"][0],
        "203.0.113.20"
    );

    // A tampered standing set is put back by the read-back.
    let out = d.nft(&["flush", "set", "inet", "passknock", "stand_sip_v4"]);
    assert!(out.status.success());
    assert!(eventually(FOLLOW, || reaches(r3, a3)), "repaired");

    // A name answering with a private address has it refused.
    hosts.write("10.1.2.3 lan.example.test");
    d.ok(&["allow", "lan", "lan.example.test", "--services", "sip"]);
    assert!(
        eventually(FOLLOW, || name_state(&d, "lan.example.test")["error"]
            .as_str()
            .is_some_and(|e| e.contains("10.1.2.3"))),
        "the private answer is refused"
    );
    assert!(!d.nft_set("stand_sip_v4").contains("10.1.2.3"));

    // Removing closes at once.
    d.ok(&["allow", "remove", "home"]);
    assert!(!reaches(r2, a2), "removed, closed");
    assert!(reaches(r3, a3), "the other entry stays");
    d.ok(&["allow", "remove", "office"]);
    assert!(!reaches(r3, a3), "removed, closed");
    let e = d.refused(&["allow", "remove", "office"]);
    assert!(e.contains("no standing entry"), "{e}");
}

#[test]
fn a_providers_list_is_trusted_names_and_all_and_a_bad_line_is_refused_by_file_and_line() {
    let topo = Topology::new(3);
    let hosts = Hosts::new(&topo.pbx);
    hosts.write("203.0.113.20 trunk.example.test");
    let dir = tempfile::tempdir().unwrap();
    let lists = dir.path().join("providers.d");
    std::fs::create_dir(&lists).unwrap();
    std::fs::write(
        lists.join("trunk.list"),
        "# our trunk: its signalling network and its name\n203.0.113.10/32\ntrunk.example.test # moves\n",
    )
    .unwrap();
    // Not a list: the pattern takes `*.list` only.
    std::fs::write(lists.join("README"), "not read\n").unwrap();
    let text = config(dir.path()).replace(
        "[standing]",
        &format!(
            "[firewall]\ntrusted = [\"127.0.0.0/8\", \"::1/128\"]\ntrusted-files = [\"{}/*.list\"]\n\n[standing]",
            lists.display()
        ),
    );
    let d = Daemon::start(&topo.pbx, dir.path(), &text);
    assert!(d.log_text().contains("trusted list trunk"), "{}", d.log_text());
    let sip = SocketAddr::new(topo.pbx_addr(false), 5060);
    let iax = SocketAddr::new(topo.pbx_addr(false), 4569);
    let sink = UdpSink::bind(&topo.pbx, sip);
    let iax_sink = UdpSink::bind(&topo.pbx, iax);
    let (r1, r2, r3) = (topo.road(1), topo.road(2), topo.road(3));
    let (a1, a2, a3) = (IpAddr::V4(r1.v4), IpAddr::V4(r2.v4), IpAddr::V4(r3.v4));
    assert!(udp_reaches(&r1.ns, a1, sip, &sink, WAIT), "the list's network");
    assert!(
        udp_reaches(&r1.ns, a1, iax, &iax_sink, WAIT),
        "trusted: every service"
    );
    assert!(
        eventually(FOLLOW, || udp_reaches(&r2.ns, a2, iax, &iax_sink, WAIT)),
        "the list's name, resolved"
    );
    assert!(!udp_reaches(&r3.ns, a3, sip, &sink, WAIT), "nobody else");
    drop(d);

    // A garbage line: the daemon refuses to start, naming the file and the line.
    std::fs::write(lists.join("bad.list"), "198.51.100.0/24\nsip trunk please\n").unwrap();
    let out = support::daemon::start_refused(&topo.pbx, &dir.path().join("passknock.toml"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.list:2"), "{err}");
}
