//! Access that follows the laptop, on real packets: the real daemon and nft in a PBX namespace,
//! `passknock knock --keep` in a road namespace whose address the test changes under it; one
//! dual-stack SPA knock opening IPv4 and IPv6, and a packet naming another address without the
//! profile's consent opening nothing; the daemon's one answer to `--wait-phone`, and with real
//! Asterisk 22 and SIPp, "your phone is connected" once the softphone registers through the knock.

mod support;

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use knockd::spa::{self, Requested, Spa, SpaKey};
use knockd::KnockSecret;
use support::daemon::{eventually, test_config, Daemon, PASSKNOCK};
use support::env::{Env, EnvConfig, WAIT};
use support::netns::{tcp_reaches, tcp_server, udp_reaches, Netns, Topology, UdpSink};
use support::sipp::Registration;

/// A TCP port of the `sip` service: the probe port.
const PROBE: u16 = 5061;
/// A UDP port of the `sip` service.
const SIP_UDP: u16 = 5060;
const SPA_PORT: u16 = 62201;
const PLAIN_PORT: u16 = 62202;
const PHONE_PORT: u16 = 62203;

struct Setup {
    topo: Topology,
    d: Daemon,
    dir: tempfile::TempDir,
    office: KnockSecret,
    plain: KnockSecret,
    phone: KnockSecret,
    _listeners: Vec<std::net::TcpListener>,
}

fn write_private(path: &Path, text: &str) {
    let _ = std::fs::remove_file(path);
    knockd::secret::write_private(path, text).unwrap();
}

/// Three SPA profiles: `office` (dual-stack, a short TTL so the keep loop renews within the
/// test), `plain` (no consent to carry another address), `phone` (names a phone to wait for).
fn setup() -> Setup {
    let topo = Topology::new(1);
    let dir = tempfile::tempdir().unwrap();
    let (office, plain, phone) = (
        KnockSecret::generate().unwrap(),
        KnockSecret::generate().unwrap(),
        KnockSecret::generate().unwrap(),
    );
    let mut files = Vec::new();
    for (name, s) in [("office", &office), ("plain", &plain), ("phone", &phone)] {
        let f = dir.path().join(format!("{name}.secret"));
        write_private(&f, &s.to_hex());
        files.push(f.display().to_string());
    }
    let knock = format!(
        r#"
[knock.profiles.office]
mode = "spa"
secret-file = "{}"
port = {SPA_PORT}
services = ["sip"]
ttl = "9s"
dual-stack = true

[knock.profiles.plain]
mode = "spa"
secret-file = "{}"
port = {PLAIN_PORT}
services = ["sip"]

[knock.profiles.phone]
mode = "spa"
secret-file = "{}"
port = {PHONE_PORT}
services = ["sip"]
endpoint = "701"
"#,
        files[0], files[1], files[2]
    );
    let d = Daemon::start(&topo.pbx, dir.path(), &test_config(dir.path(), &knock));
    let listeners = vec![
        tcp_server(&topo.pbx, SocketAddr::new(topo.pbx_addr(false), PROBE)),
        tcp_server(&topo.pbx, SocketAddr::new(topo.pbx_addr(true), PROBE)),
    ];
    Setup {
        topo,
        d,
        dir,
        office,
        plain,
        phone,
        _listeners: listeners,
    }
}

impl Setup {
    fn client_config(&self) -> PathBuf {
        let path = self.dir.path().join("client.toml");
        let text = format!(
            r#"
[profiles.office]
mode = "spa"
secret = "{}"
port = {SPA_PORT}
probe = "tcp/{PROBE}"
wait = "3s"
ttl = "9s"
dual-stack = true
other-host = "{}"

[profiles.plain]
mode = "spa"
secret = "{}"
port = {PLAIN_PORT}
probe = "tcp/{PROBE}"
wait = "2s"
dual-stack = true
other-host = "{}"

[profiles.phone]
mode = "spa"
secret = "{}"
port = {PHONE_PORT}
probe = "tcp/{PROBE}"
wait = "3s"
"#,
            self.office.to_hex(),
            self.topo.pbx_v6,
            self.plain.to_hex(),
            self.topo.pbx_v6,
            self.phone.to_hex(),
        );
        write_private(&path, &text);
        path
    }

    /// Live grants of `who`, as (id, address, expires).
    fn rows(&self, who: &str) -> Vec<(i64, IpAddr, i64)> {
        self.d.json(&["list"])["grants"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["who"] == who)
            .map(|g| {
                (
                    g["id"].as_i64().unwrap(),
                    g["address"].as_str().unwrap().parse().unwrap(),
                    g["expires"].as_i64().unwrap(),
                )
            })
            .collect()
    }

    fn probe(&self, v6: bool) -> SocketAddr {
        SocketAddr::new(self.topo.pbx_addr(v6), PROBE)
    }

    fn knock(&self, args: &[&str]) -> std::process::Output {
        self.topo
            .road(1)
            .ns
            .command(PASSKNOCK)
            .arg("knock")
            .arg(self.topo.pbx_v4.to_string())
            .args(args)
            .arg("--client-config")
            .arg(self.client_config())
            .output()
            .unwrap()
    }
}

/// `--keep` running in a namespace, its output going to a file.
struct Keeper {
    child: Child,
    out: PathBuf,
}

impl Keeper {
    fn start(ns: &Netns, host: IpAddr, config: &Path, out: PathBuf) -> Keeper {
        let file = std::fs::File::create(&out).unwrap();
        let child = ns
            .command(PASSKNOCK)
            .args(["knock", &host.to_string(), "--profile", "office", "--keep"])
            .arg("--client-config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Keeper { child, out }
    }

    fn text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.out) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// SIGTERM, then the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on the child this test started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let ok = eventually(Duration::from_secs(10), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        assert!(ok, "--keep did not stop on SIGTERM:\n{}", self.text());
        self.child.wait().unwrap()
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn keep_renews_in_place_and_follows_an_address_change_without_anyone_typing() {
    let s = setup();
    let road = &s.topo.road(1).ns;
    let (old, new): (IpAddr, IpAddr) = (IpAddr::V4(s.topo.road(1).v4), "203.0.113.77".parse().unwrap());
    let v6 = IpAddr::V6(s.topo.road(1).v6);
    let sink = UdpSink::bind(&s.topo.pbx, SocketAddr::new(s.topo.pbx_addr(false), SIP_UDP));
    let sip_udp = SocketAddr::new(s.topo.pbx_addr(false), SIP_UDP);
    assert!(
        !tcp_reaches(road, s.probe(false), Duration::from_millis(300)),
        "closed before"
    );

    let k = Keeper::start(
        road,
        s.topo.pbx_addr(false),
        &s.client_config(),
        s.dir.path().join("keep.out"),
    );
    // The first knock: this address and, dual stack, the road's IPv6 too.
    assert!(
        eventually(Duration::from_secs(10), || {
            let mut a: Vec<IpAddr> = s.rows("knock:office").iter().map(|r| r.1).collect();
            a.sort();
            a == [old, v6]
        }),
        "{:?}\n{}\n{}",
        s.rows("knock:office"),
        k.text(),
        s.d.log_text()
    );
    assert!(tcp_reaches(road, s.probe(false), Duration::from_secs(1)));
    assert!(
        tcp_reaches(road, s.probe(true), Duration::from_secs(1)),
        "IPv6 too"
    );
    assert!(
        eventually(Duration::from_secs(5), || k
            .text()
            .contains(&format!("access open from {old}"))),
        "{}",
        k.text()
    );

    // A renewal (2/3 of the 9 s TTL) extends the same rows in place.
    let before = s.rows("knock:office");
    assert!(
        eventually(Duration::from_secs(15), || {
            let now = s.rows("knock:office");
            now.len() == 2 && now.iter().all(|r| before.iter().any(|b| b.0 == r.0 && r.2 > b.2))
        }),
        "renewed in place: {before:?} then {:?}\n{}",
        s.rows("knock:office"),
        k.text()
    );

    // The laptop moves: its address changes under the running client.
    // As a DHCP client would: the new address, the old one gone, the route to the PBX kept.
    road.ip(&["addr", "add", &format!("{new}/32"), "dev", "pkr1"]);
    road.ip(&["addr", "del", &format!("{old}/32"), "dev", "pkr1"]);
    road.ip(&[
        "route",
        "replace",
        &format!("{}/32", s.topo.pbx_v4),
        "dev",
        "pkr1",
    ]);
    s.topo
        .pbx
        .ip(&["route", "add", &format!("{new}/32"), "dev", "pkp1"]);
    assert!(
        eventually(Duration::from_secs(15), || {
            let mut a: Vec<IpAddr> = s.rows("knock:office").iter().map(|r| r.1).collect();
            a.sort();
            a == [new, v6]
        }),
        "the new address replaced the old: {:?}\n{}\n{}",
        s.rows("knock:office"),
        k.text(),
        s.d.log_text()
    );
    assert!(
        tcp_reaches(road, s.probe(false), Duration::from_secs(1)),
        "TCP from the new address"
    );
    assert!(
        udp_reaches(road, new, sip_udp, &sink, Duration::from_secs(1)),
        "UDP from the new address"
    );
    let text = k.text();
    assert!(
        text.contains(&format!("address changed: {old} -> {new}, knocking again")),
        "{text}"
    );
    assert!(
        eventually(Duration::from_secs(5), || k
            .text()
            .contains(&format!("access open from {new}"))),
        "{}",
        k.text()
    );
    let table =
        String::from_utf8_lossy(&s.d.nft(&["list", "table", "inet", "passknock"]).stdout).into_owned();
    assert!(
        !table.contains(&old.to_string()),
        "the old address's elements are gone:\n{table}"
    );
    assert!(
        s.d.ok(&["log", "--since", "1h"])
            .lines()
            .any(|l| l.contains("grant-replaced") && l.contains(&format!("replaced by {new}"))),
        "{}",
        s.d.ok(&["log", "--since", "1h"])
    );

    let status = k.stop();
    assert!(status.success(), "{status:?}");
    let text = std::fs::read_to_string(s.dir.path().join("keep.out")).unwrap();
    assert!(text.contains("stopped; access stays open"), "{text}");
}

#[test]
fn one_dual_stack_knock_opens_both_families_and_without_consent_nothing() {
    let s = setup();
    let road = &s.topo.road(1).ns;
    let v4 = IpAddr::V4(s.topo.road(1).v4);
    let v6 = IpAddr::V6(s.topo.road(1).v6);

    // Without the profile's consent: a packet carrying the IPv6 address opens nothing at all.
    let out = s.knock(&["--profile", "plain"]);
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(s.rows("knock:plain").is_empty(), "{:?}", s.rows("knock:plain"));
    assert!(!tcp_reaches(road, s.probe(true), Duration::from_millis(300)));
    assert!(
        eventually(Duration::from_secs(3), || s
            .d
            .ok(&["log", "--since", "1h"])
            .lines()
            .any(|l| l.contains("knock-refused") && l.contains("not dual-stack"))),
        "{}",
        s.d.ok(&["log", "--since", "1h"])
    );

    // With consent, one knock over IPv4 opens both.
    let out = s.knock(&["--profile", "office"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        eventually(Duration::from_secs(3), || {
            let mut a: Vec<IpAddr> = s.rows("knock:office").iter().map(|r| r.1).collect();
            a.sort();
            a == [v4, v6]
        }),
        "{:?}\n{}",
        s.rows("knock:office"),
        s.d.log_text()
    );
    assert!(tcp_reaches(road, s.probe(false), Duration::from_secs(1)));
    assert!(tcp_reaches(road, s.probe(true), Duration::from_secs(1)));

    // With consent, a carried address that is private is not opened; the source still is.
    s.d.ok(&["revoke", &v4.to_string()]);
    s.d.ok(&["revoke", &v6.to_string()]);
    let key = SpaKey::derive(&s.office);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let bytes = spa::seal(
        &key,
        &Spa::new(&key, now, Requested::Also("fd00::5".parse().unwrap())).unwrap(),
    )
    .to_vec();
    let to = SocketAddr::new(s.topo.pbx_addr(false), SPA_PORT);
    road.within(move || {
        let sock = std::net::UdpSocket::bind(SocketAddr::new(v4, 0)).unwrap();
        sock.send_to(&bytes, to).unwrap();
    });
    assert!(
        eventually(Duration::from_secs(3), || s
            .rows("knock:office")
            .iter()
            .map(|r| r.1)
            .collect::<Vec<_>>()
            == [v4]),
        "{:?}\n{}",
        s.rows("knock:office"),
        s.d.log_text()
    );
    assert!(
        eventually(Duration::from_secs(3), || s
            .d
            .ok(&["log", "--since", "1h"])
            .contains("not opening fd00::5 besides")),
        "{}",
        s.d.ok(&["log", "--since", "1h"])
    );
}

#[test]
fn wait_phone_gets_one_answer_open_at_once_or_not_yet_after_the_wait() {
    let s = setup();
    // No phone named on the daemon's side: the answer says access is open, from where.
    let out = s.knock(&["--profile", "office", "--wait-phone"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("access open from {}", s.topo.road(1).v4)),
        "{text}\n{}",
        s.d.log_text()
    );
    // A phone named (701), and no AMI to see it: "not yet" after the daemon's wait.
    let out = s.knock(&["--profile", "phone", "--wait-phone"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("not yet: the PBX has not seen your phone register")
            && text.contains("access is open anyway"),
        "{text}\n{}",
        s.d.log_text()
    );
}

#[test]
fn wait_phone_says_connected_once_asterisk_sees_the_softphone_register_through_the_knock() {
    let mut env = Env::with(EnvConfig {
        roads: 1,
        ..EnvConfig::default()
    });
    let dir = env.daemon_dir();
    let secret = KnockSecret::generate().unwrap();
    let file = dir.join("phone.secret");
    write_private(&file, &secret.to_hex());
    env.start_ami_daemon(
        &format!(
            "[knock.profiles.phone]\nmode = \"spa\"\nsecret-file = \"{}\"\nport = {PHONE_PORT}\n\
             services = [\"sip\"]\nendpoint = \"701\"\n",
            file.display()
        ),
        "",
    );
    let d = env.daemon.as_ref().unwrap();
    assert!(
        eventually(WAIT, || d.json(&["contacts"])["ami"]["connected"] == true),
        "the daemon never logged in to AMI:\n{}",
        d.log_text()
    );
    // The softphone's SIP is dropped before the knock.
    assert!(
        !env.sip_reaches(1, false, Duration::from_millis(500)),
        "SIP open before any knock"
    );
    let client = dir.join("client.toml");
    write_private(
        &client,
        &format!(
            "[profiles.phone]\nmode = \"spa\"\nsecret = \"{}\"\nport = {PHONE_PORT}\n",
            secret.to_hex()
        ),
    );
    let out = dir.join("knock.out");
    let file_out = std::fs::File::create(&out).unwrap();
    let mut knock = env
        .road(1)
        .ns
        .command(PASSKNOCK)
        .args([
            "knock",
            &env.topo.pbx_v4.to_string(),
            "--profile",
            "phone",
            "--wait-phone",
        ])
        .arg("--client-config")
        .arg(&client)
        .stdin(Stdio::null())
        .stdout(file_out.try_clone().unwrap())
        .stderr(file_out)
        .spawn()
        .unwrap();
    let road: IpAddr = env.road(1).v4.into();
    let granted = || {
        d.json(&["list"])["grants"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["address"] == road.to_string())
    };
    assert!(eventually(WAIT, granted), "{}", d.log_text());
    // The phone registers now that its address is open: the answer follows.
    assert_eq!(env.register(1, "701"), Registration::Registered);
    let done = eventually(Duration::from_secs(20), || {
        matches!(knock.try_wait(), Ok(Some(_)))
    });
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = knock.kill();
    assert!(done, "the client is still waiting:\n{text}");
    assert!(
        text.contains(&format!(
            "your phone is connected: the PBX sees it registered from {road}"
        )),
        "{text}\n{}",
        d.log_text()
    );
}
