//! The client's unit tests: profiles and their keys, planned packets, resolving, probing.

use super::*;
use crate::secret::KnockSecret;
use std::path::Path;

fn write_config(dir: &Path, text: &str, mode: u32) -> PathBuf {
    let p = dir.join("client.toml");
    std::fs::write(&p, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let _ = mode;
    p
}

#[test]
fn profiles_of_each_mode_plan_their_packets() {
    let dir = tempfile::tempdir().unwrap();
    let secret = KnockSecret::generate().unwrap().to_hex();
    let text = format!(
        r#"
[profiles.office]
mode = "static"
ports = ["tcp/7000", "udp/8000", "tcp/9000"]
probe = "tcp/5061"

[profiles.phone]
mode = "rotating"
secret = "{secret}"
range = "udp/40000-40999"

[profiles.spa]
mode = "spa"
secret = "{secret}"
delay = "0ms"
"#
    );
    let path = write_config(dir.path(), &text, 0o600);
    let c = ClientConfig::load(&path).unwrap();
    let target: IpAddr = "198.51.100.1".parse().unwrap();
    let p = plan(c.profile("office").unwrap(), target, 0, Requested::Source).unwrap();
    assert_eq!(p.sends.len(), 3);
    assert_eq!(p.sends[0], Send::Syn("198.51.100.1:7000".parse().unwrap()));
    assert!(p.to_string().contains("udp      -> 198.51.100.1:8000"));
    let p = plan(
        c.profile("phone").unwrap(),
        target,
        1_800_000_000_000,
        Requested::Source,
    )
    .unwrap();
    assert_eq!(p.sends.len(), 4);
    let p = plan(
        c.profile("spa").unwrap(),
        target,
        1_800_000_000_000,
        Requested::Source,
    )
    .unwrap();
    let Send::Datagram(to, d) = &p.sends[0] else {
        panic!()
    };
    assert_eq!((to.port(), d.len()), (62201, spa::LEN));
    let e = c.profile("nope").unwrap_err().to_string();
    assert!(e.contains("office, phone, spa"), "{e}");
}

#[cfg(unix)]
#[test]
fn secrets_refused_unless_private_and_keys_named() {
    let dir = tempfile::tempdir().unwrap();
    let secret = KnockSecret::generate().unwrap().to_hex();
    let text = format!("[profiles.spa]\nmode = \"spa\"\nsecret = \"{secret}\"\n");
    let path = write_config(dir.path(), &text, 0o644);
    let e = ClientConfig::load(&path).unwrap_err().to_string();
    assert!(e.contains("chmod 600"), "{e}");
    // A config without secrets may be readable by others.
    let path = write_config(
        dir.path(),
        "[profiles.o]\nmode = \"static\"\nports = [\"tcp/1\", \"tcp/2\"]\n",
        0o644,
    );
    assert!(ClientConfig::load(&path).is_ok());
    let path = write_config(dir.path(), "[profiles.o]\nmode = \"spa\"\n", 0o600);
    let e = ClientConfig::load(&path).unwrap_err().to_string();
    assert!(e.contains("profiles.o.secret"), "{e}");
    let path = write_config(dir.path(), "[profiles.o]\nmode = \"static\"\nprots = []\n", 0o600);
    let e = ClientConfig::load(&path).unwrap_err().to_string();
    assert!(e.contains("prots"), "{e}");
}

#[test]
fn keep_and_dual_stack_keys_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let secret = KnockSecret::generate().unwrap().to_hex();
    let load = |extra: &str, mode: &str| {
        let body = if mode == "spa" {
            format!("mode = \"spa\"\nsecret = \"{secret}\"\n")
        } else {
            "mode = \"static\"\nports = [\"tcp/1\", \"tcp/2\"]\n".to_string()
        };
        let path = write_config(dir.path(), &format!("[profiles.p]\n{body}{extra}"), 0o600);
        ClientConfig::load(&path).map(|c| c.profiles["p"].clone())
    };
    let p = load("", "spa").unwrap();
    assert_eq!(
        (p.ttl, p.renew, p.dual_stack),
        (crate::profile::CLIENT_TTL, None, false)
    );
    let p = load(
        "ttl = \"8h\"\nrenew = \"5h\"\ndual-stack = true\nother-host = \"2001:db8::1\"\n",
        "spa",
    )
    .unwrap();
    assert_eq!(p.renew, Some(Duration::from_secs(5 * 3600)));
    assert!(p.dual_stack);
    let e = load("ttl = \"1h\"\nrenew = \"2h\"\n", "spa")
        .unwrap_err()
        .to_string();
    assert!(e.contains("profiles.p.renew"), "{e}");
    let e = load("dual-stack = true\n", "static").unwrap_err().to_string();
    assert!(e.contains("profiles.p.dual-stack") && e.contains("spa"), "{e}");
}

#[test]
fn resolves_literals_and_picks_a_family() {
    assert_eq!(
        resolve("[2001:db8::1]", None).unwrap(),
        "2001:db8::1".parse::<IpAddr>().unwrap()
    );
    assert!(resolve("198.51.100.1", Some(6)).is_err());
    assert!(resolve("localhost", Some(4)).unwrap().is_loopback());
}

#[test]
fn probe_says_open_reached_or_closed() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    assert!(matches!(
        probe(l.local_addr().unwrap(), Duration::from_secs(2)),
        Probe::Open(_)
    ));
    let port = l.local_addr().unwrap().port();
    drop(l);
    assert!(matches!(
        probe(SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(2)),
        Probe::Reached(_)
    ));
    // A dropped SYN (closed) is tested on real packets in tests/knock.rs.
}
