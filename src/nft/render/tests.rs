//! The table rendering's unit tests.

use super::*;

fn layout() -> Layout {
    let p = |s: &str| s.parse::<PortRange>().unwrap();
    Layout::new(
        "passknock",
        vec![
            ("rtp".into(), vec![p("udp/10000-20000")]),
            ("sip".into(), vec![p("udp/5060"), p("tcp/5060"), p("udp/5061")]),
        ],
        &[
            "10.0.0.0/8".parse().unwrap(),
            "10.1.0.0/16".parse().unwrap(),
            "::1".parse().unwrap(),
        ],
    )
}

#[test]
fn merges_ports_and_nested_trusted() {
    let l = layout();
    assert_eq!(l.protected(Proto::Udp), vec![(5060, 5061), (10000, 20000)]);
    assert_eq!(l.protected(Proto::Tcp), vec![(5060, 5060)]);
    assert_eq!(l.trusted.len(), 2, "10.1/16 sits inside 10/8");
}

#[test]
fn table_has_every_set_and_rules_in_order() {
    let l = layout();
    let mut e = Elements::new();
    e.insert(
        ElemKey {
            set: "allow_sip_v4".into(),
            addr: "203.0.113.7".parse().unwrap(),
        },
        10_500,
    );
    let json = serde_json::to_string(&l.render_table(&e, 1_000)).unwrap();
    for set in [
        "trusted_v4",
        "trusted_v6",
        "ban_v4",
        "ban_v6",
        "allow_sip_v4",
        "allow_sip_v6",
        "allow_rtp_v4",
        "allow_rtp_v6",
    ] {
        assert!(json.contains(&format!("\"name\":\"{set}\"")), "{set} in {json}");
    }
    // 9.5 s remaining rounds up to 10 s.
    assert!(json.contains("\"val\":\"203.0.113.7\",\"timeout\":10"), "{json}");
    let lo = json.find("\"lo\"").unwrap();
    let trusted = json.find("@trusted_v4").unwrap();
    let ban = json.find("@ban_v4").unwrap();
    let reply = json.find("\"reply\"").unwrap();
    let allow = json.find("@allow_sip_v4").unwrap();
    assert!(
        lo < trusted && trusted < ban && ban < reply && reply < allow,
        "{json}"
    );
    assert!(json.rfind("\"drop\"").unwrap() > allow);
}

#[test]
fn json_fast_path_matches_schema_rendering() {
    let l = layout();
    let mut e = Elements::new();
    for (set, a) in [
        ("allow_sip_v4", "203.0.113.7"),
        ("allow_sip_v4", "203.0.113.8"),
        ("ban_v6", "2001:db8::6"),
    ] {
        e.insert(
            ElemKey {
                set: set.into(),
                addr: a.parse().unwrap(),
            },
            10_500,
        );
    }
    let fast: serde_json::Value = serde_json::from_slice(&l.render_table_json(&e, 1_000).unwrap()).unwrap();
    let slow = without_nulls(serde_json::to_value(l.render_table(&e, 1_000)).unwrap());
    assert!(
        fast == slow,
        "the JSON fast path differs from the schema rendering"
    );
    let empty: serde_json::Value =
        serde_json::from_slice(&l.render_table_json(&Elements::new(), 0).unwrap()).unwrap();
    assert!(empty == without_nulls(serde_json::to_value(l.render_table(&Elements::new(), 0)).unwrap()));
}

/// The schema writes absent element options as `null`; nft reads that as absent.
fn without_nulls(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            let absent = |k: &str, v: &serde_json::Value| {
                v.is_null() && matches!(k, "comment" | "counter" | "expires")
            };
            m.into_iter()
                .filter(|(k, v)| !absent(k, v))
                .map(|(k, v)| (k, without_nulls(v)))
                .collect()
        }
        serde_json::Value::Array(a) => a.into_iter().map(without_nulls).collect(),
        v => v,
    }
}

#[test]
fn fingerprint_follows_layout() {
    let a = layout();
    let mut b = layout();
    assert_eq!(a.fingerprint(), b.fingerprint());
    b.trusted.push("192.0.2.0/24".parse().unwrap());
    assert_ne!(a.fingerprint(), b.fingerprint());
    let k = |ports: &[&str], group| {
        layout().with_knock(ports.iter().map(|p| p.parse().unwrap()).collect(), group)
    };
    let base = k(&["tcp/7000", "udp/8000"], 7);
    assert_ne!(base.fingerprint(), a.fingerprint());
    assert_ne!(base.fingerprint(), k(&["tcp/7000", "udp/8001"], 7).fingerprint());
    assert_ne!(base.fingerprint(), k(&["tcp/7000", "udp/8000"], 8).fingerprint());
    assert_eq!(base.fingerprint(), k(&["tcp/7000", "udp/8000"], 7).fingerprint());
}

#[test]
fn knock_ports_log_and_drop_right_after_the_bans() {
    let l = layout().with_knock(
        vec![
            "tcp/7000".parse().unwrap(),
            "udp/8000".parse().unwrap(),
            "udp/40000-40999".parse().unwrap(),
        ],
        7,
    );
    let json = serde_json::to_string(&l.render_table(&Elements::new(), 0)).unwrap();
    let ban = json.rfind("@ban_v6").unwrap();
    let log = json.find("\"log\":{\"group\":7").unwrap();
    let reply = json.find("\"reply\"").unwrap();
    assert!(ban < log && log < reply, "{json}");
    assert!(json.contains("\"original\""), "{json}");
    assert!(
        json.contains("[\"fin\",\"syn\",\"rst\",\"ack\"]"),
        "TCP knocks are SYNs only: {json}"
    );
    // A banned source's knocks drop before they are logged.
    assert_eq!(l.banned_ports(Proto::Tcp), vec![(5060, 5060), (7000, 7000)]);
    assert_eq!(
        l.banned_ports(Proto::Udp),
        vec![(5060, 5061), (8000, 8000), (10000, 20000), (40000, 40999)]
    );
    // udp log+drop, tcp SYN log+drop, tcp drop.
    assert_eq!(l.rules().len(), layout().rules().len() + 3);
}

#[test]
fn changes_add_delete_add() {
    let l = layout();
    let k = ElemKey {
        set: "allow_sip_v4".into(),
        addr: "203.0.113.7".parse().unwrap(),
    };
    let gone = ElemKey {
        set: "ban_v6".into(),
        addr: "2001:db8::6".parse().unwrap(),
    };
    let c = Changes {
        set: vec![(k, 61_000)],
        remove: vec![gone],
    };
    let json = serde_json::to_value(render_changes(&l, &c, 1_000)).unwrap();
    let verbs: Vec<String> = json["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_object().unwrap().keys().next().unwrap().clone())
        .collect();
    assert_eq!(verbs, ["add", "add", "delete", "delete", "add"]);
    assert_eq!(timeout_secs(61_000, 1_000), 60);
    assert_eq!(timeout_secs(1_001, 1_000), 1);
    assert_eq!(timeout_secs(500, 1_000), 1);
}

fn capture() -> SipCapture {
    SipCapture {
        ports: vec!["udp/5060".parse().unwrap(), "udp/5061".parse().unwrap()],
        group: 7448,
        per_source_rate: 5,
        per_source_burst: 10,
        rate: 500,
        burst: 1000,
    }
}

#[test]
fn dropped_sip_is_logged_under_limits_just_before_the_drops() {
    let l = layout().with_sip_capture(Some(capture()));
    assert_eq!(l.rules().len(), layout().rules().len() + 2, "one rule per family");
    let json = serde_json::to_string(&l.render_table(&Elements::new(), 0)).unwrap();
    let allow = json.rfind("@allow_sip_v6").unwrap();
    let meter4 = json.find("\"name\":\"sip_attempt_v4\"").unwrap();
    let meter6 = json.find("\"name\":\"sip_attempt_v6\"").unwrap();
    let last_drop = json.rfind("\"drop\"").unwrap();
    assert!(allow < meter4 && meter4 < meter6 && meter6 < last_drop, "{json}");
    // Per source, then overall, then the log with the payload, then the drop.
    for part in [
        "\"rate\":5,\"per\":\"second\",\"burst\":10",
        "\"rate\":500,\"per\":\"second\",\"burst\":1000",
        "\"log\":{\"group\":7448,\"snaplen\":1500}",
        "\"timeout\":10",
    ] {
        assert!(json.contains(part), "{part} in {json}");
    }
    // Only UDP: tcp/5060 of the service is not captured.
    let rule = &json[json[..meter4].rfind("{\"add\":{\"rule\"").unwrap()..meter4];
    assert!(
        rule.contains("{\"range\":[5060,5061]}") && !rule.contains("tcp"),
        "{rule}"
    );
    // Banned sources drop before: the ban rules cover the SIP ports.
    assert!(json.find("@ban_v4").unwrap() < meter4);
}

#[test]
fn fingerprint_follows_the_capture() {
    let off = layout();
    let on = layout().with_sip_capture(Some(capture()));
    assert_ne!(off.fingerprint(), on.fingerprint());
    let mut other = capture();
    other.rate = 100;
    assert_ne!(
        on.fingerprint(),
        layout().with_sip_capture(Some(other)).fingerprint()
    );
    assert_eq!(off.rules(), layout().with_sip_capture(None).rules());
}

/// The table as it was before the SIP doors: with both off, not a byte of it changes. (Pinned
/// again when the timeout sets got their `gc-interval`.)
#[test]
fn the_doors_off_change_nothing() {
    let l = layout()
        .with_knock(vec!["tcp/7000".parse().unwrap()], 7)
        .with_sip_capture(Some(capture()));
    let json = l.render_table_json(&Elements::new(), 0).unwrap();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in &json {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    assert_eq!(l.fingerprint(), "6f0f5011e070068f");
    assert_eq!(
        (format!("{h:016x}"), json.len()),
        ("c1b60515f4454c9a".into(), 11708)
    );
    assert_eq!(l, l.clone().with_sip_door(None, None));
}

fn secret() -> SecretDomain {
    SecretDomain {
        names: vec!["k7q2x.pbx.example.com".into()],
        ports: vec!["udp/5060".parse().unwrap(), "tcp/5060".parse().unwrap()],
    }
}

fn responsive() -> Responsive {
    Responsive {
        ports: vec![
            "udp/5060".parse().unwrap(),
            "tcp/5060".parse().unwrap(),
            "udp/5061".parse().unwrap(),
        ],
        rate: 30,
        burst: 10,
    }
}

#[test]
fn a_secret_register_is_matched_on_the_payload_in_16_byte_compares() {
    let l = layout().with_sip_door(Some(secret()), None);
    assert_eq!(l.rules().len(), layout().rules().len() + 1, "one rule per name");
    let json = serde_json::to_string(&l.render_table(&Elements::new(), 0)).unwrap();
    // "REGISTER sip:k7q2x.pbx.example.com" is 34 bytes: 16 + 16 + 2, then the byte after it.
    for part in [
        "{\"payload\":{\"base\":\"ih\",\"offset\":0,\"len\":128}},\"right\":\"0x5245474953544552207369703a6b3771\"",
        "{\"payload\":{\"base\":\"ih\",\"offset\":128,\"len\":128}},\"right\":\"0x32782e7062782e6578616d706c652e63\"",
        "{\"payload\":{\"base\":\"ih\",\"offset\":256,\"len\":16}},\"right\":\"0x6f6d\"",
        "{\"payload\":{\"base\":\"ih\",\"offset\":272,\"len\":8}},\"right\":{\"set\":[32,58,59,62]}",
    ] {
        assert!(json.contains(part), "{part} in {json}");
    }
    // UDP only, after the grants and the bans, before the protected ports drop.
    let at = json.find("\"base\":\"ih\"").unwrap();
    let rule = &json[json[..at].rfind("{\"add\":{\"rule\"").unwrap()..at];
    assert!(rule.contains("\"udp\"") && !rule.contains("\"tcp\""), "{rule}");
    assert!(json.find("@ban_v6").unwrap() < at && json.rfind("@allow_sip_v6").unwrap() < at);
    assert!(json.rfind("\"drop\"").unwrap() > at);
    // A longest name still fits: every compare at most 16 bytes.
    let long = "a".repeat(crate::config::SECRET_NAME_MAX);
    let stmts = sip_door::register_prefix(&long);
    assert_eq!(stmts.len(), (13 + long.len()).div_ceil(16) + 1);
    assert!(!serde_json::to_string(&stmts).unwrap().contains("\"len\":136"));
}

#[test]
fn responsive_sip_accepts_within_each_sources_rate_and_counts_the_drops() {
    let l = layout().with_sip_door(None, Some(responsive()));
    // Per family a UDP and a TCP meter; established TCP; a counted drop per protocol.
    assert_eq!(l.rules().len(), layout().rules().len() + 7);
    let json = serde_json::to_string(&l.render_table(&Elements::new(), 0)).unwrap();
    assert!(
        json.contains(
            "{\"add\":{\"counter\":{\"family\":\"inet\",\"table\":\"passknock\",\"name\":\"sip_rate_drops\""
        ),
        "{json}"
    );
    for meter in [
        "sip_rate_udp_v4",
        "sip_rate_tcp_v4",
        "sip_rate_udp_v6",
        "sip_rate_tcp_v6",
    ] {
        assert!(
            json.contains(&format!("\"name\":\"{meter}\"")),
            "{meter} in {json}"
        );
    }
    for part in [
        "\"limit\":{\"rate\":30,\"per\":\"minute\",\"burst\":10}",
        "\"timeout\":60",
        "{\"counter\":\"sip_rate_drops\"},{\"drop\":null}",
        "\"right\":{\"set\":[{\"range\":[5060,5061]}]},\"op\":\"==\"}},{\"meter\"",
    ] {
        assert!(json.contains(part), "{part} in {json}");
    }
    let first = json.find("sip_rate_udp_v4").unwrap();
    assert!(json.rfind("@allow_sip_v6").unwrap() < first);
    // RTP's ports are no part of it: the last rule still drops every protected port.
    let counted = json.rfind("sip_rate_drops").unwrap();
    assert!(json[counted..].contains("{\"range\":[10000,20000]}"));
}

#[test]
fn fingerprint_follows_the_doors() {
    let off = layout();
    let secret_on = layout().with_sip_door(Some(secret()), None);
    let both = layout().with_sip_door(Some(secret()), Some(responsive()));
    assert_ne!(off.fingerprint(), secret_on.fingerprint());
    assert_ne!(secret_on.fingerprint(), both.fingerprint());
    let mut other = secret();
    other.names = vec!["other.pbx.example.com".into()];
    assert_ne!(
        secret_on.fingerprint(),
        layout().with_sip_door(Some(other), None).fingerprint()
    );
    let mut slower = responsive();
    slower.rate = 20;
    assert_ne!(
        both.fingerprint(),
        layout().with_sip_door(Some(secret()), Some(slower)).fingerprint()
    );
    assert_eq!(
        both.fingerprint(),
        layout()
            .with_sip_door(Some(secret()), Some(responsive()))
            .fingerprint()
    );
}

#[test]
fn the_doors_come_from_the_config_and_say_what_they_do() {
    let services = "[services.sip]\nports = [\"udp/5060\", \"tcp/5061\"]\n";
    let off = Layout::from_config(&Config::parse(services, "t").unwrap());
    assert_eq!(
        (off.sip_door_summary(), &off.secret_domain, &off.responsive),
        (None, &None, &None)
    );
    let on = Layout::from_config(
        &Config::parse(
            &format!(
                "{services}[sip-secret-domain]\nnames = [\"a.example.com\", \"b.example.com\"]\n\
                 [sip-responsive]\nenabled = true\nrate = 20\nburst = 5\n"
            ),
            "t",
        )
        .unwrap(),
    );
    assert_eq!(
        on.sip_door_summary().as_deref(),
        Some("secret domain on for 2 names; responsive 20/min burst 5")
    );
    assert_eq!(
        on.secret_domain.as_ref().unwrap().ports,
        ["udp/5060".parse::<PortRange>().unwrap()]
    );
    assert_eq!(on.responsive.as_ref().unwrap().ports.len(), 2, "UDP and TCP");
    assert!(
        !format!("{on:?}").contains("example"),
        "the names stay out of `{{:?}}`"
    );
}

/// Only the timeout sets are swept, and not every second: a sweep walks the whole set.
#[test]
fn timeout_sets_are_swept_once_a_minute() {
    let l = layout();
    let json: serde_json::Value =
        serde_json::from_slice(&l.render_table_json(&Elements::new(), 0).unwrap()).unwrap();
    let sets: Vec<&serde_json::Value> = json["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["add"]["set"].as_object().map(|_| &c["add"]["set"]))
        .collect();
    let mut timed = 0;
    for set in &sets {
        let timeout = set["flags"].as_array().unwrap().iter().any(|f| f == "timeout");
        if timeout {
            timed += 1;
            assert_eq!(set["gc-interval"], GC_INTERVAL_SECS, "{set}");
        } else {
            assert!(set.get("gc-interval").is_none(), "{set}");
        }
    }
    assert_eq!(timed, l.kernel_sets().len(), "{sets:?}");
    const { assert!(GC_INTERVAL_SECS >= 60) };
}
