//! Knock access on real packets: the real daemon in a PBX namespace logs knock ports to NFLOG,
//! and road hosts knock with the standard `knock` client, with `passknock knock`, and with
//! hand-made packets. Wrong order, too slow, junk in between, replayed rotating sequences and
//! replayed, forged, aged or truncated SPA packets open nothing; a flood of spoofed knocks
//! leaves memory bounded and a real knock still gets in.

mod support;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use knockd::client::{self, Plan, Send};
use knockd::spa::{self, Requested, Spa, SpaKey};
use knockd::{rotating, KnockSecret, Port, PortRange};
use support::daemon::{eventually, test_config, Daemon, PASSKNOCK};
use support::flood::{allow_spoofed, memory_kib, syn_flood, FloodSpec};
use support::netns::{tcp_reaches, tcp_server, Netns, Topology};

const STATIC: [&str; 3] = ["tcp/7001", "udp/7002", "tcp/7003"];
const ROTATING_RANGE: &str = "udp/21000-21999";
const SPA_PORT: u16 = 62201;
/// The probe port: a TCP port of the `sip` service that a knock opens.
const PROBE: u16 = 5061;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

struct Setup {
    topo: Topology,
    d: Daemon,
    dir: tempfile::TempDir,
    rotating: KnockSecret,
    spa: KnockSecret,
    _probe: std::net::TcpListener,
    _probe6: std::net::TcpListener,
}

fn write_private(path: &Path, text: &str) {
    let _ = std::fs::remove_file(path);
    knockd::secret::write_private(path, text).unwrap();
}

/// A daemon with one profile of each mode, a TCP server on the probe port (v4 and v6), and
/// `roads` road hosts.
fn setup(roads: usize, extra: &str) -> Setup {
    let topo = Topology::new(roads);
    let dir = tempfile::tempdir().unwrap();
    let rotating = KnockSecret::generate().unwrap();
    let spa = KnockSecret::generate().unwrap();
    let rot_file = dir.path().join("phone.secret");
    let spa_file = dir.path().join("office.secret");
    write_private(&rot_file, &rotating.to_hex());
    write_private(&spa_file, &spa.to_hex());
    let knock = format!(
        r#"
[knock]
{extra}

[knock.profiles.laptop]
mode = "static"
ports = [{static_ports}]
timeout = "2s"
services = ["sip"]
ttl = "1h"

[knock.profiles.phone]
mode = "rotating"
secret-file = "{rot}"
range = "{ROTATING_RANGE}"
length = 4
step = "30s"
services = ["sip"]

[knock.profiles.office]
mode = "spa"
secret-file = "{spa}"
port = {SPA_PORT}
services = ["sip", "rtp"]
ttl = "30m"
"#,
        static_ports = STATIC
            .iter()
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join(", "),
        rot = rot_file.display(),
        spa = spa_file.display(),
    );
    let d = Daemon::start(&topo.pbx, dir.path(), &test_config(dir.path(), &knock));
    let probe = tcp_server(&topo.pbx, SocketAddr::new(topo.pbx_addr(false), PROBE));
    let probe6 = tcp_server(&topo.pbx, SocketAddr::new(topo.pbx_addr(true), PROBE));
    Setup {
        topo,
        d,
        dir,
        rotating,
        spa,
        _probe: probe,
        _probe6: probe6,
    }
}

impl Setup {
    /// The laptop's client config, holding every profile.
    fn client_config(&self, extra: &str) -> PathBuf {
        let path = self.dir.path().join(format!("client-{}.toml", now_ms()));
        let text = format!(
            r#"
[profiles.laptop]
mode = "static"
ports = [{static_ports}]
probe = "tcp/{PROBE}"
wait = "3s"

[profiles.phone]
mode = "rotating"
secret = "{rot}"
range = "{ROTATING_RANGE}"
length = 4
step = "30s"
probe = "tcp/{PROBE}"
wait = "3s"

[profiles.office]
mode = "spa"
secret = "{spa}"
port = {SPA_PORT}
probe = "tcp/{PROBE}"
wait = "3s"
{extra}
"#,
            static_ports = STATIC
                .iter()
                .map(|p| format!("\"{p}\""))
                .collect::<Vec<_>>()
                .join(", "),
            rot = self.rotating.to_hex(),
            spa = self.spa.to_hex(),
        );
        write_private(&path, &text);
        path
    }

    /// `passknock knock ARGS` run inside road host `i`.
    fn knock_from(&self, i: usize, client_config: &Path, args: &[&str]) -> Output {
        self.topo
            .road(i)
            .ns
            .command(PASSKNOCK)
            .arg("knock")
            .args(args)
            .arg("--client-config")
            .arg(client_config)
            .output()
            .unwrap()
    }

    /// Live grants for `addr`, as (services, source, who).
    fn grants_for(&self, addr: IpAddr) -> Vec<(Vec<String>, String, String)> {
        self.d.json(&["list"])["grants"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["address"] == addr.to_string())
            .map(|g| {
                (
                    g["services"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|s| s.as_str().unwrap().to_string())
                        .collect(),
                    g["source"].as_str().unwrap().to_string(),
                    g["who"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    fn has_grant(&self, addr: IpAddr) -> bool {
        !self.grants_for(addr).is_empty()
    }

    fn v4(&self, i: usize) -> IpAddr {
        IpAddr::V4(self.topo.road(i).v4)
    }

    fn pbx(&self) -> IpAddr {
        self.topo.pbx_addr(false)
    }
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sends `ports` from road host `i` as a knock sequence, with `pause` between knocks.
fn send_sequence(ns: &Netns, to: IpAddr, ports: &[Port], pause: Duration) {
    let sends = ports
        .iter()
        .map(|p| match p.proto {
            knockd::Proto::Tcp => Send::Syn(SocketAddr::new(to, p.port)),
            knockd::Proto::Udp => Send::Datagram(SocketAddr::new(to, p.port), Vec::new()),
        })
        .collect();
    let plan = Plan { sends, delay: pause };
    ns.within(move || client::send(&plan).unwrap());
}

fn send_datagram(ns: &Netns, from: IpAddr, to: SocketAddr, bytes: Vec<u8>) {
    ns.within(move || {
        let s = UdpSocket::bind(SocketAddr::new(from, 0)).unwrap();
        s.send_to(&bytes, to).unwrap();
    });
}

fn ports(list: &[&str]) -> Vec<Port> {
    list.iter().map(|p| p.parse().unwrap()).collect()
}

/// Long enough for a knock that would open to have opened: NFLOG batching, the engine, nft.
const SETTLE: Duration = Duration::from_millis(800);

#[test]
fn static_knock_opens_with_the_standard_knock_client_and_ours_over_ipv6() {
    let s = setup(2, "");
    let r1 = s.v4(1);
    let probe = SocketAddr::new(s.pbx(), PROBE);
    assert!(
        !tcp_reaches(&s.topo.road(1).ns, probe, Duration::from_millis(300)),
        "closed before"
    );
    // Debian's `knock`: the same sequence written its way.
    let out = s
        .topo
        .road(1)
        .ns
        .command("knock")
        .args([
            "-d",
            "20",
            &s.pbx().to_string(),
            "7001:tcp",
            "7002:udp",
            "7003:tcp",
        ])
        .output()
        .expect("the `knock` client (Debian package knockd) is installed; tests/run-all.sh installs it");
    ok(&out);
    assert!(
        eventually(Duration::from_secs(3), || s.has_grant(r1)),
        "the standard knock client opened access:\n{}",
        s.d.log_text()
    );
    let g = s.grants_for(r1);
    assert_eq!(
        g[0],
        (vec!["sip".to_string()], "knock".into(), "knock:laptop".into())
    );
    assert!(
        tcp_reaches(&s.topo.road(1).ns, probe, Duration::from_secs(1)),
        "open after"
    );
    // The table shows the knock ports logged and dropped.
    let table = String::from_utf8_lossy(&s.d.nft(&["list", "chain", "inet", "passknock", "input"]).stdout)
        .into_owned();
    assert!(
        table.contains("log group 7447") && table.contains("7001"),
        "{table}"
    );

    // Our client, over IPv6, from another road host.
    let cfg = s.client_config("");
    let out = s.knock_from(2, &cfg, &[&s.topo.pbx_v6.to_string(), "--profile", "laptop"]);
    let text = ok(&out);
    assert!(text.contains("access open"), "{text}");
    assert!(s.has_grant(IpAddr::V6(s.topo.road(2).v6)));
}

#[test]
fn static_wrong_order_too_slow_and_interleaved_junk_open_nothing() {
    let s = setup(1, "");
    let ns = &s.topo.road(1).ns;
    let pbx = s.pbx();
    let fast = Duration::from_millis(20);
    // Wrong order.
    send_sequence(ns, pbx, &ports(&["tcp/7001", "tcp/7003", "udp/7002"]), fast);
    // Too slow: the profile allows 2s from first knock to last.
    send_sequence(ns, pbx, &ports(&["tcp/7001", "udp/7002"]), fast);
    std::thread::sleep(Duration::from_millis(2300));
    send_sequence(ns, pbx, &ports(&["tcp/7003"]), fast);
    // Junk from the same source between the knocks: another profile's knock ports.
    send_sequence(
        ns,
        pbx,
        &ports(&["tcp/7001", "udp/21500", "udp/7002", "tcp/7003"]),
        fast,
    );
    send_sequence(
        ns,
        pbx,
        &ports(&["tcp/7001", "udp/7002", "udp/62201", "tcp/7003"]),
        fast,
    );
    // Half a sequence, then a scan-like sweep over the knock ports in the wrong order.
    send_sequence(
        ns,
        pbx,
        &ports(&["tcp/7001", "udp/7002", "udp/7002", "tcp/7001", "tcp/7003"]),
        fast,
    );
    std::thread::sleep(SETTLE);
    assert!(!s.has_grant(s.v4(1)), "nothing opened:\n{}", s.d.log_text());
    // The same host, knocking right, gets in: the refusals above were the knocks' fault.
    send_sequence(ns, pbx, &ports(&STATIC), fast);
    assert!(eventually(Duration::from_secs(3), || s.has_grant(s.v4(1))));
}

#[test]
fn rotating_sequence_opens_once_and_a_replay_opens_nothing() {
    let s = setup(2, "");
    let step = Duration::from_secs(30);
    // Stay clear of a step boundary so the replay below is of the very same step.
    while rotating::step_at(now_ms() + 6_000, step) != rotating::step_at(now_ms(), step) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let n = rotating::step_at(now_ms(), step);
    let cfg = s.client_config("");
    let text = ok(&s.knock_from(1, &cfg, &[&s.pbx().to_string(), "--profile", "phone"]));
    assert!(text.contains("access open"), "{text}");
    assert_eq!(s.grants_for(s.v4(1))[0].2, "knock:phone");
    let range: PortRange = ROTATING_RANGE.parse().unwrap();
    let seq = rotating::sequence(&s.rotating, range, 4, n);
    // A sniffer replays the sequence from elsewhere, and from the same host after a revoke.
    send_sequence(&s.topo.road(2).ns, s.pbx(), &seq, Duration::from_millis(20));
    s.d.ok(&["revoke", &s.v4(1).to_string()]);
    send_sequence(&s.topo.road(1).ns, s.pbx(), &seq, Duration::from_millis(20));
    std::thread::sleep(SETTLE);
    assert!(!s.has_grant(s.v4(2)), "replay from another host");
    assert!(!s.has_grant(s.v4(1)), "replay from the same host");
    assert!(
        s.d.log_text().contains("a replay"),
        "the replay is in the audit log"
    );
    // Last step's sequence also works, once.
    let prev = rotating::sequence(&s.rotating, range, 4, n - 1);
    send_sequence(&s.topo.road(2).ns, s.pbx(), &prev, Duration::from_millis(20));
    assert!(
        eventually(Duration::from_secs(3), || s.has_grant(s.v4(2))),
        "previous step"
    );
}

#[test]
fn spa_opens_once_and_replayed_forged_aged_truncated_open_nothing_even_after_restart() {
    let mut s = setup(2, "");
    let (r1, r2) = (s.v4(1), s.v4(2));
    let to = SocketAddr::new(s.pbx(), SPA_PORT);
    let cfg = s.client_config(
        r#"
[profiles.wrong]
mode = "spa"
secret = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
probe = "tcp/5061"
wait = "1s"
"#,
    );
    // --dry-run shows the datagram and sends nothing.
    let text = ok(&s.knock_from(
        1,
        &cfg,
        &[&s.pbx().to_string(), "--profile", "office", "--dry-run"],
    ));
    assert!(
        text.contains("would knock") && text.contains("80 bytes"),
        "{text}"
    );
    std::thread::sleep(SETTLE);
    assert!(!s.has_grant(r1), "a dry run sends nothing");
    // A wrong secret: the client says access did not open, and exits non-zero.
    let out = s.knock_from(1, &cfg, &[&s.pbx().to_string(), "--profile", "wrong"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("access did not open"), "{err}");
    // The real thing.
    let text = ok(&s.knock_from(1, &cfg, &[&s.pbx().to_string(), "--profile", "office"]));
    assert!(text.contains("access open"), "{text}");
    assert_eq!(s.grants_for(r1)[0].0, vec!["sip".to_string(), "rtp".into()]);
    s.d.ok(&["revoke", &r1.to_string()]);

    // A captured packet: it works once, from road 2.
    let key = SpaKey::derive(&s.spa);
    let now_s = (now_ms() / 1000) as u64;
    let captured = spa::seal(&key, &Spa::new(&key, now_s, Requested::Source).unwrap()).to_vec();
    send_datagram(&s.topo.road(2).ns, r2, to, captured.clone());
    assert!(
        eventually(Duration::from_secs(3), || s.has_grant(r2)),
        "{}",
        s.d.log_text()
    );
    s.d.ok(&["revoke", &r2.to_string()]);
    // Replayed from either host; forged; aged; truncated; for another address.
    let mut forged = captured.clone();
    forged[60] ^= 0x40;
    let aged = spa::seal(&key, &Spa::new(&key, now_s - 600, Requested::Source).unwrap()).to_vec();
    let fresh = spa::seal(&key, &Spa::new(&key, now_s, Requested::Source).unwrap()).to_vec();
    let other = spa::seal(
        &key,
        &Spa::new(&key, now_s, Requested::Address("198.51.100.77".parse().unwrap())).unwrap(),
    );
    for (from, bytes) in [
        (1, captured.clone()),
        (2, captured.clone()),
        (1, forged),
        (1, aged),
        (1, fresh[..79].to_vec()),
        (1, fresh[..48].to_vec()),
        (1, other.to_vec()),
    ] {
        send_datagram(&s.topo.road(from).ns, s.v4(from), to, bytes);
    }
    std::thread::sleep(SETTLE);
    assert!(
        !s.has_grant(r1) && !s.has_grant(r2),
        "nothing opened:\n{}",
        s.d.log_text()
    );
    assert!(!s.has_grant("198.51.100.77".parse().unwrap()));

    // A restart (kill -9) forgets nothing: the captured packet is still a replay.
    s.d.kill9();
    s.d.spawn();
    send_datagram(&s.topo.road(2).ns, r2, to, captured);
    std::thread::sleep(SETTLE);
    assert!(!s.has_grant(r2), "replay after restart");
    let log = s.d.log_text();
    let after = &log[log.rfind("knock listener on NFLOG").unwrap()..];
    assert!(
        after.contains("2 replay entr"),
        "both nonces were reloaded: {after}"
    );
    assert!(after.contains("a replay"), "refused as a replay: {after}");
    // And the untouched fresh packet still opens: nothing above spent its nonce.
    send_datagram(&s.topo.road(1).ns, r1, to, fresh);
    assert!(eventually(Duration::from_secs(3), || s.has_grant(r1)));
}

#[test]
fn spoofed_flood_keeps_memory_bounded_and_a_real_knock_gets_in() {
    // The default bound (16384 sources); the flood makes hundreds of thousands.
    let mut s = setup(2, "");
    allow_spoofed(&s.topo.pbx);
    let pid = s.d.pid();
    let (rss_before, _) = memory_kib(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let spec = FloodSpec {
        dst: s.topo.pbx_v4,
        // Mostly first knocks: each one makes state, the worst case for a tracker.
        ports: vec![7001, 7001, 7003],
        // Ten times the rate at which knockd stops opening (benches/knock_flood.rs).
        rate: Some(100_000),
        max_packets: 500_000,
        max_time: Duration::from_secs(6),
    };
    let road2 = &s.topo.road(2).ns;
    let flood = std::thread::scope(|sc| {
        let flooder = sc.spawn(|| syn_flood(road2, spec, stop.clone()));
        std::thread::sleep(Duration::from_millis(1500));
        let cfg = s.client_config("");
        let text = ok(&s.knock_from(1, &cfg, &[&s.pbx().to_string(), "--profile", "laptop"]));
        assert!(text.contains("access open"), "{text}");
        flooder.join().unwrap()
    });
    let (rss_after, peak) = memory_kib(pid);
    eprintln!(
        "flood: {} spoofed SYNs in {:.1}s ({:.0}/s); daemon RSS {rss_before} KiB -> {rss_after} KiB, peak {peak} KiB",
        flood.sent,
        flood.elapsed.as_secs_f64(),
        flood.rate()
    );
    assert!(
        flood.sent > 50_000,
        "the flood was a flood: {} packets",
        flood.sent
    );
    assert!(
        rss_after < rss_before + 32 * 1024,
        "memory bounded: {rss_before} KiB -> {rss_after} KiB"
    );
    s.d.term();
    let log = s.d.log_text();
    let stats = &log[log.rfind("knock listener stopped").unwrap()..];
    eprintln!("{}", stats.lines().next().unwrap());
    assert!(
        !stats.contains(" 0 evicted"),
        "the in-progress bound was reached and held: {stats}"
    );
}

#[test]
fn knock_profile_add_prints_snippets_that_work_for_each_mode() {
    let topo = Topology::new(1);
    let dir = tempfile::tempdir().unwrap();
    let base = test_config(dir.path(), "");
    let base_path = dir.path().join("base.toml");
    std::fs::write(&base_path, &base).unwrap();
    let mut server = String::new();
    let mut client = String::new();
    for (name, mode) in [("laptop", "static"), ("phone", "rotating"), ("office", "spa")] {
        let secret = dir.path().join(format!("{name}.secret"));
        let out = std::process::Command::new(PASSKNOCK)
            .args([
                "--config",
                base_path.to_str().unwrap(),
                "knock-profile",
                "add",
                name,
                "--mode",
                mode,
            ])
            .args([
                "--services",
                "sip",
                "--ttl",
                "45m",
                "--secret-file",
                secret.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let text = ok(&out);
        let (srv, cli) = text.split_once("# Client:").expect("two snippets");
        server.push_str(&srv[srv.find("[knock.profiles.").unwrap()..]);
        client.push_str(&cli[cli.find("[profiles.").unwrap()..]);
        if mode != "static" {
            assert!(secret.exists(), "the secret file was written");
        }
    }
    let d = Daemon::start(&topo.pbx, dir.path(), &format!("{base}\n{server}"));
    let _probe = tcp_server(&topo.pbx, SocketAddr::new(topo.pbx_addr(false), 5060));
    let client_path = dir.path().join("client.toml");
    write_private(&client_path, &client);
    let road = topo.road(1);
    for name in ["laptop", "phone", "office"] {
        let out = road
            .ns
            .command(PASSKNOCK)
            .args([
                "knock",
                &topo.pbx_v4.to_string(),
                "--profile",
                name,
                "--client-config",
            ])
            .arg(&client_path)
            .output()
            .unwrap();
        let text = ok(&out);
        assert!(text.contains("access open: tcp/5060"), "{name}: {text}");
        let list = d.json(&["list"]);
        let g = &list["grants"][0];
        assert_eq!(g["who"], format!("knock:{name}"), "{list}");
        d.ok(&["revoke", &road.v4.to_string()]);
    }
    // The client refuses a config that holds secrets and that others can read.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&client_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = road
        .ns
        .command(PASSKNOCK)
        .args([
            "knock",
            &topo.pbx_v4.to_string(),
            "--profile",
            "office",
            "--client-config",
        ])
        .arg(&client_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
}

#[test]
fn reload_swaps_knock_profiles_in_place_keeps_replays_refused_and_refuses_a_bad_secret() {
    use std::os::unix::fs::PermissionsExt;
    let s = setup(2, "");
    let (r1, r2) = (s.v4(1), s.v4(2));
    let road = |i: usize| &s.topo.road(i).ns;
    // An SPA packet used before the reload...
    let key = SpaKey::derive(&s.spa);
    let used = spa::seal(
        &key,
        &Spa::new(&key, (now_ms() / 1000) as u64, Requested::Source).unwrap(),
    )
    .to_vec();
    let to = SocketAddr::new(s.pbx(), SPA_PORT);
    send_datagram(road(2), r2, to, used.clone());
    assert!(eventually(Duration::from_secs(3), || s.has_grant(r2)));
    s.d.ok(&["revoke", &r2.to_string()]);

    // A new static sequence, by reload: the reply names no pending restart, and the table logs
    // the new port at once.
    let text = std::fs::read_to_string(&s.d.config).unwrap();
    std::fs::write(&s.d.config, text.replace("\"tcp/7003\"", "\"tcp/7004\"")).unwrap();
    let out = s.d.ok(&["reload"]);
    assert!(!out.contains("restart"), "knock profiles apply now: {out}");
    let chain = String::from_utf8_lossy(&s.d.nft(&["list", "chain", "inet", "passknock", "input"]).stdout)
        .into_owned();
    assert!(chain.contains("7004") && !chain.contains("7003"), "{chain}");
    // The old sequence opens nothing; the new one opens.
    send_sequence(road(1), s.pbx(), &ports(&STATIC), Duration::from_millis(20));
    std::thread::sleep(SETTLE);
    assert!(!s.has_grant(r1), "the old sequence still opened after the reload");
    let new_seq = ["tcp/7001", "udp/7002", "tcp/7004"];
    send_sequence(road(1), s.pbx(), &ports(&new_seq), Duration::from_millis(20));
    assert!(
        eventually(Duration::from_secs(3), || s.has_grant(r1)),
        "{}",
        s.d.log_text()
    );
    s.d.ok(&["revoke", &r1.to_string()]);
    // ...is still refused by the new listener.
    send_datagram(road(2), r2, to, used);
    std::thread::sleep(SETTLE);
    assert!(
        !s.has_grant(r2),
        "an SPA packet used before the reload opened again"
    );

    // A secret file others can read: the reload is refused with the reason, nothing changes.
    let rot_file = s.dir.path().join("phone.secret");
    std::fs::set_permissions(&rot_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = std::fs::read_to_string(&s.d.config).unwrap();
    std::fs::write(&s.d.config, text.replace("\"tcp/7004\"", "\"tcp/7005\"")).unwrap();
    let err = s.d.refused(&["reload"]);
    assert!(err.contains("phone.secret"), "{err}");
    send_sequence(road(1), s.pbx(), &ports(&new_seq), Duration::from_millis(20));
    assert!(
        eventually(Duration::from_secs(3), || s.has_grant(r1)),
        "the running profiles were lost with a refused reload"
    );
}

#[test]
fn status_counts_knocks_accepted_and_refused_in_the_last_hour() {
    let s = setup(1, "");
    let ns = &s.topo.road(1).ns;
    let r1 = s.v4(1);
    // A well-signed SPA packet ten minutes old: refused. (A forged one is not even a knock: it
    // is dropped as noise, uncounted.)
    let key = SpaKey::derive(&s.spa);
    let now_s = (now_ms() / 1000) as u64;
    let aged = spa::seal(&key, &Spa::new(&key, now_s - 600, Requested::Source).unwrap()).to_vec();
    send_datagram(ns, r1, SocketAddr::new(s.pbx(), SPA_PORT), aged);
    // The static sequence, right: accepted.
    send_sequence(ns, s.pbx(), &ports(&STATIC), Duration::from_millis(20));
    assert!(
        eventually(Duration::from_secs(3), || s.has_grant(r1)),
        "{}",
        s.d.log_text()
    );
    let counted = || {
        let h = &s.d.json(&["status"])["last_hour"];
        (h["knocks_accepted"].clone(), h["knocks_refused"].clone())
    };
    // The accepted count follows the engine's reply, a moment after the grant is listed.
    assert!(
        eventually(Duration::from_secs(2), || counted() == (1.into(), 1.into())),
        "last hour: {:?}\n{}",
        counted(),
        s.d.log_text()
    );
    let v = s.d.json(&["status"]);
    assert_eq!(v["last_hour"]["grants"]["knock"], 1, "{v}");
    assert_eq!(v["last_hour"]["grants"]["admin"], 0, "{v}");
    let screen = s.d.ok(&["status"]);
    let line = |label: &str| {
        screen
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no {label} row:\n{screen}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(line("grants "), "grants 1 1 1 knocks accepted 1 1", "{screen}");
    assert_eq!(line("bans"), "bans 0 0 0 knocks refused 1 1", "{screen}");
    assert_eq!(line("grants in"), "grants in the last hour by source: knock 1");
    assert!(
        line(&r1.to_string()).contains("sip knock knock:laptop"),
        "{screen}"
    );
}

/// A second static profile, on ports of its own, that keeps a grant per address.
const KIOSK: &str = r#"
[knock.profiles.kiosk]
mode = "static"
ports = ["tcp/7011", "udp/7012", "tcp/7013"]
timeout = "2s"
services = ["sip"]
replace = false
"#;

#[test]
fn a_knock_from_a_new_address_replaces_the_old_grant_and_one_from_the_same_address_extends_it() {
    let s = setup(2, KIOSK);
    let (r1, r2) = (s.v4(1), s.v4(2));
    let (ns1, ns2) = (&s.topo.road(1).ns, &s.topo.road(2).ns);
    let probe = SocketAddr::new(s.pbx(), PROBE);
    let fast = Duration::from_millis(20);
    let laptop_rows = || -> Vec<serde_json::Value> {
        s.d.json(&["list"])["grants"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["who"] == "knock:laptop")
            .cloned()
            .collect()
    };

    // The laptop at the hotel (A), then at the airport (B).
    send_sequence(ns1, s.pbx(), &ports(&STATIC), fast);
    assert!(
        eventually(Duration::from_secs(3), || s.has_grant(r1)),
        "{}",
        s.d.log_text()
    );
    assert!(tcp_reaches(ns1, probe, Duration::from_secs(1)), "A is open");
    send_sequence(ns2, s.pbx(), &ports(&STATIC), fast);
    assert!(
        eventually(Duration::from_secs(3), || s.has_grant(r2) && !s.has_grant(r1)),
        "B replaced A: {:?}\n{}",
        laptop_rows(),
        s.d.log_text()
    );
    assert!(tcp_reaches(ns2, probe, Duration::from_secs(1)), "B is open");
    assert!(
        !tcp_reaches(ns1, probe, Duration::from_millis(500)),
        "packets from A are dropped"
    );
    let table =
        String::from_utf8_lossy(&s.d.nft(&["list", "table", "inet", "passknock"]).stdout).into_owned();
    assert!(
        !table.contains(&r1.to_string()),
        "A's elements are gone:\n{table}"
    );
    assert!(table.contains(&r2.to_string()), "{table}");
    let before = laptop_rows();
    assert_eq!(before.len(), 1, "{before:?}");

    // The laptop knocks again from B: the same row, ending later.
    std::thread::sleep(Duration::from_millis(50));
    send_sequence(ns2, s.pbx(), &ports(&STATIC), fast);
    assert!(
        eventually(Duration::from_secs(3), || {
            laptop_rows()
                .first()
                .is_some_and(|g| g["expires"].as_i64() > before[0]["expires"].as_i64())
        }),
        "the re-knock extended the grant: {:?}\n{}",
        laptop_rows(),
        s.d.log_text()
    );
    let after = laptop_rows();
    assert_eq!(after.len(), 1, "one row: {after:?}");
    assert_eq!(after[0]["id"], before[0]["id"]);
    assert_eq!(
        s.grants_for(r2).len(),
        1,
        "`passknock list` shows one grant for B"
    );

    // The audit history says which address replaced which, and that B's grant was extended.
    let logged = |kind: &str, needle: &str| {
        s.d.ok(&["log", "--since", "1h"])
            .lines()
            .any(|l| l.contains(kind) && l.contains(needle))
    };
    assert!(
        eventually(Duration::from_secs(3), || logged(
            "grant-replaced",
            &format!("replaced by {r2}")
        ) && logged(
            "grant-extended",
            &r2.to_string()
        )),
        "{}",
        s.d.ok(&["log", "--since", "1h"])
    );

    // A profile with `replace = false` keeps both addresses.
    let kiosk = ports(&["tcp/7011", "udp/7012", "tcp/7013"]);
    send_sequence(ns1, s.pbx(), &kiosk, fast);
    send_sequence(ns2, s.pbx(), &kiosk, fast);
    let kiosks = || [r1, r2].map(|a| s.grants_for(a).iter().filter(|g| g.2 == "knock:kiosk").count());
    assert!(
        eventually(Duration::from_secs(3), || kiosks() == [1, 1]),
        "{:?}\n{}",
        kiosks(),
        s.d.log_text()
    );
    assert!(tcp_reaches(ns1, probe, Duration::from_secs(1)), "A is open again");
    assert!(tcp_reaches(ns2, probe, Duration::from_secs(1)));
    assert_eq!(
        laptop_rows().len(),
        1,
        "the kiosk's grants left the laptop's alone"
    );
}
