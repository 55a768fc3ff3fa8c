//! Config parsing and checking: every refusal names its key.

use super::*;

#[test]
fn disa_limits_are_checked() {
    let e = Config::parse(&format!("{MINIMAL}[disa]\npasscode-digits = 6\n"), "t")
        .unwrap_err()
        .to_string();
    assert!(e.contains("disa.passcode-digits"), "{e}");
    let e = Config::parse(&format!("{MINIMAL}[disa]\ntries-per-call = 0\n"), "t")
        .unwrap_err()
        .to_string();
    assert!(e.contains("disa.tries-per-call"), "{e}");
    let e = Config::parse(&format!("{MINIMAL}[disa.prompts]\npasscode = []\n"), "t")
        .unwrap_err()
        .to_string();
    assert!(e.contains("disa.prompts.passcode"), "{e}");
    let e = Config::parse(&format!("{MINIMAL}[disa]\nconnected-wait = \"5m\"\n"), "t")
        .unwrap_err()
        .to_string();
    assert!(e.contains("disa.connected-wait"), "{e}");
    let c = Config::parse(&format!("{MINIMAL}[disa]\nconnected-wait = \"0s\"\n"), "t").unwrap();
    assert!(c.disa.connected_wait.0.is_zero(), "0s turns the wait off");
    assert_eq!(
        Config::parse(MINIMAL, "t")
            .unwrap()
            .disa
            .connected_wait
            .0
            .as_secs(),
        8
    );
    let e = Config::parse(&format!("{MINIMAL}[disa.prompts]\ngreeting = [\"x\"]\n"), "t")
        .unwrap_err()
        .to_string();
    assert!(e.contains("greeting"), "{e}");
}

const MINIMAL: &str = "[services.sip]\nports = [\"udp/5060\"]\n";

#[test]
fn agi_starting_limits_leave_room_for_every_session() {
    let c = Config::parse(MINIMAL, "t").unwrap();
    assert_eq!(c.agi.start_timeout.0, defaults::AGI_START_TIMEOUT);
    assert!(c.agi.max_starting_per_peer >= c.agi.max_sessions);
    let e = |agi: &str| {
        Config::parse(&format!("{MINIMAL}[agi]\n{agi}"), "t")
            .unwrap_err()
            .to_string()
    };
    let m = e("max-sessions = 200\n");
    assert!(
        m.contains("agi.max-starting-per-peer") && m.contains("200"),
        "{m}"
    );
    let m = e("max-starting-per-peer = 300\n");
    assert!(m.contains("agi.max-starting"), "{m}");
    let m = e("start-timeout = \"0s\"\n");
    assert!(m.contains("agi.start-timeout"), "{m}");
    let ok = "max-sessions = 600\nmax-starting-per-peer = 600\nmax-starting = 1000\n";
    assert!(Config::parse(&format!("{MINIMAL}[agi]\n{ok}"), "t").is_ok());
}

#[test]
fn embedded_example_is_valid_and_safe() {
    let c = Config::embedded();
    for svc in ["sip", "rtp", "iax"] {
        assert!(c.services.contains_key(svc), "example protects {svc}");
    }
    // Nobody locks themselves out by trying the example: SSH is not protected.
    let protects_22 = c
        .services
        .values()
        .flat_map(|s| &s.ports)
        .any(|p| p.proto == Proto::Tcp && p.first <= 22 && 22 <= p.last);
    assert!(!protects_22, "the example must not protect SSH");
    for net in [
        "127.0.0.1",
        "::1",
        "10.1.2.3",
        "172.16.5.5",
        "192.168.1.1",
        "fd00::1",
    ] {
        let ip = net.parse().unwrap();
        assert!(c.firewall.trusted.iter().any(|n| n.contains(ip)), "trusts {net}");
    }
}

#[test]
fn unknown_key_names_key_and_line() {
    let e = Config::parse(&format!("{MINIMAL}[grants]\nttl-defualt = \"2h\"\n"), "t.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("ttl-defualt"), "{e}");
    assert!(e.contains("line 4"), "{e}");
}

#[test]
fn bad_values_name_key_and_line() {
    let e = Config::parse("[services.rtp]\nports = [\"udp/10000-70000\"]\n", "t.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("udp/10000-70000") && e.contains("line 2"), "{e}");
    let e = Config::parse(&format!("{MINIMAL}[grants]\nttl-max = \"forever\"\n"), "t.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("forever") && e.contains("line 4"), "{e}");
    let e = Config::parse(
        &format!("{MINIMAL}[firewall]\ntrusted = [\"10.0.0.0/40\"]\n"),
        "t",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("10.0.0.0/40"), "{e}");
}

#[test]
fn cross_checks_name_the_key() {
    let e = Config::parse(
        &format!("{MINIMAL}[grants]\nttl-default = \"2d\"\nttl-max = \"1d\"\n"),
        "t",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("grants.ttl-default"), "{e}");
    let e = Config::parse(&format!("{MINIMAL}[grants]\ndefault-services = [\"rtp\"]\n"), "t")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("grants.default-services[0]") && e.contains("rtp"),
        "{e}"
    );
    let e = Config::parse("[services.Bad-Name]\nports = [\"udp/1\"]\n", "t")
        .unwrap_err()
        .to_string();
    assert!(e.contains("services.Bad-Name"), "{e}");
    assert!(Config::parse("", "t").is_err());
}

#[test]
fn knock_profiles_are_checked_and_name_the_key() {
    let with = |extra: &str| Config::parse(&format!("{MINIMAL}{extra}"), "t");
    let ok = with(
            "[knock.profiles.laptop]\nmode = \"static\"\nports = [\"tcp/7000\", \"udp/8000\", \"tcp/9000\"]\nservices = [\"sip\"]\nttl = \"1h\"\n",
        )
        .unwrap();
    assert_eq!(ok.knock.ports().len(), 3);
    assert_eq!(ok.knock_grant("laptop").unwrap().0, vec!["sip"]);
    let err = |extra: &str| with(extra).unwrap_err().to_string();
    let e = err("[knock.profiles.laptop]\nmode = \"static\"\nports = [\"udp/5060\", \"tcp/7000\"]\n");
    assert!(
        e.contains("knock.profiles.laptop.ports") && e.contains("sip"),
        "{e}"
    );
    let e = err("[knock.profiles.phone]\nmode = \"rotating\"\nrange = \"udp/40000-40999\"\n");
    assert!(e.contains("knock.profiles.phone.secret-file"), "{e}");
    let e =
        err("[knock.profiles.phone]\nmode = \"rotating\"\nsecret-file = \"/x\"\nrange = \"udp/5000-5999\"\n");
    assert!(
        e.contains("knock.profiles.phone.range") && e.contains("udp/5060"),
        "{e}"
    );
    let e = err("[knock.profiles.a]\nmode = \"spa\"\nsecret-file = \"/x\"\nports = [\"tcp/1\", \"tcp/2\"]\n");
    assert!(e.contains("knock.profiles.a.ports"), "{e}");
    let e = err(
        "[knock.profiles.a]\nmode = \"static\"\nports = [\"tcp/7000\", \"tcp/7001\"]\nservices = [\"rtp\"]\n",
    );
    assert!(e.contains("knock.profiles.a.services[0]"), "{e}");
    let e =
        err("[knock.profiles.a]\nmode = \"static\"\nports = [\"tcp/7000\", \"tcp/7001\"]\nttl = \"2d\"\n");
    assert!(e.contains("knock.profiles.a.ttl"), "{e}");
    let e = err("[knock.profiles.a]\nmode = \"static\"\nports = [\"tcp/7000\", \"udp/62201\"]\n[knock.profiles.b]\nmode = \"spa\"\nsecret-file = \"/x\"\n");
    assert!(
        e.contains("knock.profiles.b.port") && e.contains("profile a"),
        "{e}"
    );
    let e = err("[knock.profiles.a]\nmode = \"sneaky\"\n");
    assert!(e.contains("sneaky"), "{e}");
    let e = err("[knock]\nmax-in-progress = 1\n");
    assert!(e.contains("knock.max-in-progress"), "{e}");
}

#[cfg(unix)]
#[test]
fn knock_secret_files_must_be_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("spa.secret");
    std::fs::write(
        &f,
        format!("{}\n", knockd::KnockSecret::generate().unwrap().to_hex()),
    )
    .unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let c = Config::parse(
        &format!(
            "{MINIMAL}[knock.profiles.spa]\nmode = \"spa\"\nsecret-file = \"{}\"\n",
            f.display()
        ),
        "t",
    )
    .unwrap();
    let e = c.knock_profiles().unwrap_err().to_string();
    assert!(
        e.contains("knock.profiles.spa.secret-file") && e.contains("chmod 600"),
        "{e}"
    );
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(c.knock_profiles().unwrap()[0].kind.mode(), knockd::Mode::Spa);
}

#[test]
fn overlapping_services_are_refused_naming_both_and_the_lines() {
    let e = Config::parse(
        "[services.sip]\nports = [\"udp/5060\", \"tcp/5060\"]\n\n[services.dup]\nports = [\"udp/5060\"]\n",
        "t.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("services.dup.ports")
            && e.contains("service sip (udp/5060, line 2)")
            && e.contains("service dup (udp/5060, line 5)"),
        "{e}"
    );
    // A range inside another service's range: the shared ports are named.
    let e = Config::parse(
            "[services.rtp]\nports = [\"udp/10000-20000\"]\n[services.media]\nports = [\"tcp/15000\", \"udp/15000-15010\"]\n",
            "t.toml",
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("config t.toml: services.media.ports: udp/15000-15010 is in service media")
            && e.contains("service rtp (udp/10000-20000, line 2)"),
        "{e}"
    );
    // Partial overlap: only the shared ports. Other protocols and neighbours are fine.
    let e = Config::parse(
        "[services.a]\nports = [\"udp/100-200\"]\n[services.b]\nports = [\"udp/150-300\"]\n",
        "t",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("udp/150-200 is in service b"), "{e}");
    Config::parse(
        "[services.a]\nports = [\"udp/100-200\"]\n[services.b]\nports = [\"tcp/100-200\", \"udp/201\"]\n",
        "t",
    )
    .unwrap();
}

#[test]
fn port_ranges() {
    assert_eq!(
        "udp/10000-20000".parse::<PortRange>().unwrap(),
        PortRange {
            proto: Proto::Udp,
            first: 10000,
            last: 20000
        }
    );
    for bad in ["5060", "sctp/1", "udp/0", "tcp/20-10", "udp/x"] {
        assert!(bad.parse::<PortRange>().is_err(), "{bad}");
    }
}

#[test]
fn ami_section_checks_name_the_key() {
    let c = Config::parse(MINIMAL, "t").unwrap();
    assert!(!c.ami.enabled);
    assert_eq!(c.ami.login, AmiLogin::Md5);
    let ok = Config::parse(
        &format!(
            "{MINIMAL}[ami]\nenabled = true\nsecret-file = \"/x\"\nlogin = \"plain\"\n\
                 reconnect-first = \"100ms\"\nban-threshold = 3\nban-window = \"30s\"\nhold-max = \"0s\"\n"
        ),
        "t",
    )
    .unwrap();
    assert_eq!(ok.ami.reconnect_first.0.as_millis(), 100);
    for (extra, key) in [
        ("enabled = true", "ami.secret-file"),
        ("ban-threshold = 0", "ami.ban-threshold"),
        ("ban-window = \"0s\"", "ami.ban-window"),
        ("ban-growth = 0", "ami.ban-growth"),
        ("ban-ttl = \"8d\"", "ami.ban-ttl"),
        ("ban-ttl-max = \"60d\"", "ami.ban-ttl-max"),
        ("reconnect-first = \"0ms\"", "ami.reconnect-first"),
        (
            "reconnect-first = \"5s\"\nreconnect-max = \"1s\"",
            "ami.reconnect-max",
        ),
        ("keepalive = \"10ms\"", "ami.keepalive"),
        ("address = \"localhost\"", "ami.address"),
    ] {
        let e = Config::parse(&format!("{MINIMAL}[ami]\n{extra}\n"), "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains(key), "{extra}: {e}");
    }
    let e = Config::parse(&format!("{MINIMAL}[ami]\nlogin = \"sha\"\n"), "t")
        .unwrap_err()
        .to_string();
    assert!(e.contains("sha") && e.contains("line 4"), "{e}");
}

#[test]
fn ami_secret_file_must_be_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ami.secret");
    std::fs::write(&path, "pw-123\n").unwrap();
    let mut ami = AmiConfig {
        secret_file: Some(path.clone()),
        ..AmiConfig::default()
    };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = ami.read_secret("t").unwrap_err().to_string();
    assert!(e.contains("ami.secret-file") && e.contains("0644"), "{e}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(ami.read_secret("t").unwrap().expose(), "pw-123");
    ami.secret_file = Some(dir.path().join("missing"));
    assert!(ami
        .read_secret("t")
        .unwrap_err()
        .to_string()
        .contains("ami.secret-file"));
}

#[test]
fn sip_attempts_follow_disa_and_keep_their_own_group() {
    let off = Config::parse(MINIMAL, "t").unwrap();
    assert!(off.sip_capture().is_none(), "DISA off: no capture by default");
    let on = Config::parse(&format!("{MINIMAL}[disa]\nenabled = true\n"), "t").unwrap();
    let c = on.sip_capture().expect("DISA on: capture on by default");
    assert_eq!(c.group, defaults::SIP_NFLOG_GROUP);
    assert_ne!(c.group, on.knock.nflog_group);
    let forced_off = format!("{MINIMAL}[disa]\nenabled = true\n[sip-attempts]\nenabled = false\n");
    assert!(Config::parse(&forced_off, "t").unwrap().sip_capture().is_none());
    let e = |extra: &str| {
        Config::parse(&format!("{MINIMAL}[sip-attempts]\nenabled = true\n{extra}"), "t")
            .unwrap_err()
            .to_string()
    };
    let m = e(&format!("nflog-group = {}\n", defaults::KNOCK_NFLOG_GROUP));
    assert!(
        m.contains("sip-attempts.nflog-group") && m.contains("knock.nflog-group"),
        "{m}"
    );
    let m = e("service = \"nope\"\n");
    assert!(m.contains("sip-attempts.service"), "{m}");
    let m = e("rate = 0\n");
    assert!(m.contains("sip-attempts.rate"), "{m}");
    let m = e("window = \"1s\"\n");
    assert!(m.contains("sip-attempts.window"), "{m}");
    let tcp_only = "[services.sip]\nports = [\"tcp/5060\"]\n[sip-attempts]\nenabled = true\n";
    let m = Config::parse(tcp_only, "t").unwrap_err().to_string();
    assert!(m.contains("no UDP port"), "{m}");
}

#[test]
fn the_sip_doors_are_off_by_default_and_checked() {
    let off = Config::parse(MINIMAL, "t").unwrap();
    assert!(off.sip_secret_domain().is_none() && off.sip_responsive().is_none());
    let on = Config::parse(
        &format!(
            "{MINIMAL}[services.rtp]\nports = [\"udp/10000-20000\"]\n\
             [sip-secret-domain]\nnames = [\"K7Q2X.pbx.Example.com\"]\n\
             [sip-responsive]\nenabled = true\n"
        ),
        "t",
    )
    .unwrap();
    let d = on.sip_secret_domain().unwrap();
    assert_eq!(
        d.names,
        ["k7q2x.pbx.example.com"],
        "lowercased, as the table matches it"
    );
    assert_eq!(d.ports, ["udp/5060".parse::<PortRange>().unwrap()]);
    let r = on.sip_responsive().unwrap();
    assert_eq!((r.rate, r.burst), (30, 10));
    // The names are the secret: `{:?}` of the config counts them.
    assert!(!format!("{on:?}").contains("k7q2x"));

    let e = |extra: &str| {
        Config::parse(&format!("{MINIMAL}{extra}"), "t")
            .unwrap_err()
            .to_string()
    };
    let secret = |names: &str| e(&format!("[sip-secret-domain]\nnames = [{names}]\n"));
    for (names, why) in [
        ("\"pbx example.com\"", "not a DNS name"),
        ("\"-pbx.example.com\"", "starts or ends with `-`"),
        ("\"pbx..example.com\"", "not a DNS name"),
        ("\"pbx.example.com.\"", "root dot"),
        ("\"198.51.100.1\"", "an address"),
        ("\"\"", "is empty"),
        ("\"a.b\", \"A.B\"", "listed twice"),
    ] {
        let m = secret(names);
        assert!(
            m.contains("sip-secret-domain.names[") && m.contains(why),
            "{names}: {m}"
        );
    }
    let long = format!("\"{}.example.com\"", "a".repeat(60));
    let m = secret(&long);
    assert!(
        m.contains("at most 64") && !m.contains("aaaa"),
        "never echoes the name: {m}"
    );
    let m = e("[sip-secret-domain]\nnames = [\"x.example.com\"]\nservice = \"nope\"\n");
    assert!(
        m.contains("sip-secret-domain.service") && m.contains("not a service"),
        "{m}"
    );
    let m = e("[services.web]\nports = [\"tcp/443\"]\n[sip-secret-domain]\nnames = [\"x.example.com\"]\nservice = \"web\"\n");
    assert!(
        m.contains("sip-secret-domain.service") && m.contains("no UDP port"),
        "{m}"
    );
    let m = e("[sip-responsive]\nenabled = true\nservice = \"nope\"\n");
    assert!(m.contains("sip-responsive.service"), "{m}");
    for k in ["rate = 0", "burst = 0", "rate = 6001"] {
        let m = e(&format!("[sip-responsive]\n{k}\n"));
        assert!(m.contains("sip-responsive."), "{k}: {m}");
    }
    // Off, a missing service is no error: only what is on insists on its service.
    let quiet =
        format!("{MINIMAL}[sip-responsive]\nservice = \"nope\"\n[sip-secret-domain]\nservice = \"nope\"\n");
    assert!(Config::parse(&quiet, "t").is_ok());
}

#[test]
fn a_shared_store_is_a_url_without_a_password() {
    use crate::config::StoreAt;
    let at = |store: &str, extra: &str| {
        Config::parse(&format!("[daemon]\nstore = \"{store}\"\n{extra}{MINIMAL}"), "t")
    };
    let c = at("postgresql://passknock@db.example/pk", "node = \"pbx-a\"\n").unwrap();
    assert_eq!(
        c.daemon.store_at(),
        StoreAt::Postgres("postgresql://passknock@db.example/pk")
    );
    assert_eq!(c.daemon.node_name(), "pbx-a");
    let c = at("/var/lib/passknock/x.db", "").unwrap();
    assert!(matches!(c.daemon.store_at(), StoreAt::File(_)));
    for (store, extra, words) in [
        ("postgres://pk:hunter2@db/pk", "", "holds a password"),
        (
            "postgresql:///pk?host=/run/postgresql&password=x",
            "",
            "holds a password",
        ),
        ("mysql://db/pk", "", "does not know"),
        (
            "/x.db",
            "store-password-file = \"/etc/pw\"\n",
            "only with a PostgreSQL store",
        ),
        ("postgres:///pk", "node = \"a b\"\n", "daemon.node"),
    ] {
        let e = at(store, extra).unwrap_err().to_string();
        assert!(e.contains(words), "{store}: {e}");
        assert!(!e.contains("hunter2"), "{e}");
    }
}

#[test]
fn firewall_shards_are_auto_or_a_power_of_two_up_to_64() {
    use crate::config::Shards;
    assert_eq!(Config::parse(MINIMAL, "t").unwrap().firewall.shards, Shards::Auto);
    for (v, want) in [
        ("\"auto\"", Shards::Auto),
        ("1", Shards::Fixed(1)),
        ("16", Shards::Fixed(16)),
    ] {
        let c = Config::parse(&format!("{MINIMAL}[firewall]\nshards = {v}\n"), "t").unwrap();
        assert_eq!(c.firewall.shards, want, "{v}");
    }
    for bad in ["3", "0", "128", "-4", "\"many\""] {
        let e = Config::parse(&format!("{MINIMAL}[firewall]\nshards = {bad}\n"), "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("shards") && e.contains("power of two"), "{bad}: {e}");
    }
    // auto: one set up to 8,192 elements, then enough to keep each within it, at most 64.
    let picks: Vec<u8> = [0, 8192, 8193, 100_000, 200_000, 10_000_000]
        .map(Shards::for_elements)
        .to_vec();
    assert_eq!(picks, [1, 1, 2, 16, 32, 64]);
}
