//! The firewall's two element paths against the real kernel, in a network namespace of their own
//! (root only; skipped with a note otherwise): netlink and `nft` read the same table back, and a
//! netlink path the kernel refuses falls back to `nft`, says so, and loses no change.

use std::net::IpAddr;
use std::path::Path;

use super::*;
use crate::base::clock::now_ms;
use crate::config::PortRange;

const HOUR: i64 = 3_600_000;

/// Runs `f` on a thread in a fresh network namespace, handing it a netlink socket opened in the
/// namespace the test started in (one that has no such table); `None` when not root.
fn in_netns<T: Send + 'static>(f: impl FnOnce(Netlink) -> T + Send + 'static) -> Option<T> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the firewall path tests need root (a network namespace and nftables)");
        return None;
    }
    let t = std::thread::spawn(move || {
        let outside = Netlink::open().unwrap();
        // SAFETY: unshare of the network namespace affects only this thread.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
        f(outside)
    });
    Some(t.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
}

fn firewall(path: ElementPath, netlink: Option<Netlink>) -> Firewall {
    Firewall {
        nft: Nft::new(Path::new("nft")),
        layout: Layout::new(
            "pk_paths",
            vec![
                (
                    "rtp".into(),
                    vec!["udp/10000-20000".parse::<PortRange>().unwrap()],
                ),
                ("sip".into(), vec!["udp/5060".parse::<PortRange>().unwrap()]),
            ],
            &["192.0.2.0/24".parse().unwrap()],
        ),
        path,
        netlink,
        fallback: None,
        shards: crate::config::Shards::Auto,
    }
}

fn elements(n: u32, now: UnixMs) -> Elements {
    (0..n)
        .flat_map(|i| {
            let ip = IpAddr::from([100, 64, (i >> 8) as u8, i as u8]);
            [allow_set("sip", Family::V4), ban_set(Family::V4)]
                .map(|set| (ElemKey { set, addr: ip }, now + HOUR))
        })
        .collect()
}

#[test]
fn netlink_and_nft_read_the_same_table_and_a_rebuild_over_netlink_is_in_sync() {
    in_netns(|_| {
        let now = now_ms();
        let want = elements(2000, now);
        let mut nl = firewall(ElementPath::Netlink, Some(Netlink::open().unwrap()));
        nl.rebuild(&want, now).unwrap();
        assert_eq!(nl.compare(&want, now).unwrap().1, TableState::InSync);
        // Changes over netlink: one more, one fewer.
        let extra = ElemKey {
            set: allow_set("rtp", Family::V4),
            addr: "203.0.113.7".parse().unwrap(),
        };
        let gone = want.keys().next().unwrap().clone();
        nl.change(
            &Changes {
                set: vec![(extra.clone(), now + HOUR)],
                remove: vec![gone.clone()],
            },
            now,
        )
        .unwrap();
        let mut now_wants = want.clone();
        now_wants.remove(&gone);
        now_wants.insert(extra, now + HOUR);
        let (seen_nl, v) = nl.compare(&now_wants, now).unwrap();
        assert_eq!(v, TableState::InSync);
        let mut spawn = firewall(ElementPath::Nft, None);
        let (seen_nft, v) = spawn.compare(&now_wants, now).unwrap();
        assert_eq!(v, TableState::InSync);
        let (a, b) = (seen_nl.unwrap(), seen_nft.unwrap());
        assert_eq!(
            a.sets.keys().collect::<Vec<_>>(),
            b.sets.keys().collect::<Vec<_>>()
        );
        for (name, set) in &a.sets {
            let other = &b.sets[name];
            assert_eq!(
                set.elems.keys().collect::<Vec<_>>(),
                other.elems.keys().collect::<Vec<_>>(),
                "{name}"
            );
            assert_eq!(set.prefixes, other.prefixes, "{name}");
        }
        assert_eq!(nl.path(), "netlink");
    });
}

#[test]
fn a_netlink_path_the_kernel_refuses_falls_back_to_nft_and_says_so() {
    in_netns(|outside| {
        let now = now_ms();
        // A socket of another namespace: the kernel there has no such table, nft here has.
        let mut f = firewall(ElementPath::Netlink, Some(outside));
        let json = f.layout.render_table_json(&Elements::new(), now).unwrap();
        f.nft.apply_json(&json).unwrap();
        let k = ElemKey {
            set: allow_set("sip", Family::V4),
            addr: "203.0.113.9".parse().unwrap(),
        };
        f.change(
            &Changes {
                set: vec![(k.clone(), now + HOUR)],
                remove: vec![],
            },
            now,
        )
        .unwrap();
        assert!(f.path().starts_with("nft (netlink refused: "), "{}", f.path());
        assert!(f.netlink.is_none());
        let want: Elements = [(k, now + HOUR)].into_iter().collect();
        assert_eq!(
            f.compare(&want, now).unwrap().1,
            TableState::InSync,
            "the change landed"
        );
        // Refused by nft as well (the set is gone): that is nft's error, in its words.
        f.nft.delete_table("pk_paths").unwrap();
        let e = f
            .change(
                &Changes {
                    set: want.into_iter().collect(),
                    remove: vec![],
                },
                now,
            )
            .unwrap_err();
        assert!(e.to_string().contains("No such file or directory"), "{e}");
    });
}

/// The SIP doors load into the real kernel as rendered: the secret name in 16-byte payload
/// compares, the meters and the named counter; a read-back of that table is in sync.
#[test]
fn the_sip_doors_load_into_the_kernel_and_read_back_in_sync() {
    in_netns(|_| {
        let now = now_ms();
        let mut f = firewall(ElementPath::Nft, None);
        let udp = "udp/5060".parse::<PortRange>().unwrap();
        let tcp = "tcp/5061".parse::<PortRange>().unwrap();
        f.layout.services[1].1.push(tcp);
        f.layout = f.layout.clone().with_sip_door(
            Some(crate::config::SecretDomain {
                names: vec!["k7q2x.pbx.example.com".into()],
                ports: vec![udp],
            }),
            Some(crate::config::Responsive {
                ports: vec![udp, tcp],
                rate: 30,
                burst: 10,
            }),
        );
        let want = elements(3, now);
        f.rebuild(&want, now).unwrap();
        assert_eq!(f.compare(&want, now).unwrap().1, TableState::InSync);
        let mut nl = firewall(ElementPath::Netlink, Some(Netlink::open().unwrap()));
        nl.layout = f.layout.clone();
        assert_eq!(nl.compare(&want, now).unwrap().1, TableState::InSync);
        // The named counter, read by nft and by netlink alike.
        assert_eq!(f.sip_rate_drops(), Some(0));
        assert_eq!(nl.sip_rate_drops(), Some(0));
        let out = std::process::Command::new("nft")
            .args(["list", "table", "inet", "pk_paths"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        for part in [
            "udp dport 5060 @ih,0,128 0x5245474953544552207369703a6b3771 @ih,128,128 0x32782e7062782e6578616d706c652e63 @ih,256,16 0x6f6d @ih,272,8 { 0x20, 0x3a, 0x3b, 0x3e } accept",
            "udp dport 5060 meter sip_rate_udp_v4 size 65535 { ip saddr timeout 1m limit rate 30/minute burst 10 packets } accept",
            "tcp dport 5061 ct state new meter sip_rate_tcp_v6 size 65535 { ip6 saddr & ffff:ffff:ffff:ffff:: timeout 1m limit rate 30/minute burst 10 packets } accept",
            "udp dport 5060 counter name \"sip_rate_drops\" drop",
            "counter sip_rate_drops {",
        ] {
            assert!(text.contains(part), "{part} in {text}");
        }
    });
}

/// A table split in four shards loads as rendered, both paths read it back in sync, changes
/// land in each address's own shard, and a shard's chain or set tampered with is a rebuild.
#[test]
fn a_sharded_table_reads_back_in_sync_and_a_tampered_shard_is_rebuilt() {
    in_netns(|_| {
        let now = now_ms();
        let want = elements(1000, now);
        let mut nl = firewall(ElementPath::Netlink, Some(Netlink::open().unwrap()));
        nl.layout.shards = 4;
        nl.rebuild(&want, now).unwrap();
        assert_eq!(nl.compare(&want, now).unwrap().1, TableState::InSync);
        let mut spawn = firewall(ElementPath::Nft, None);
        spawn.layout.shards = 4;
        assert_eq!(spawn.compare(&want, now).unwrap().1, TableState::InSync);
        let nft = |args: &[&str]| {
            let out = std::process::Command::new("nft").args(args).output().unwrap();
            assert!(
                out.status.success(),
                "nft {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let text = nft(&["list", "table", "inet", "pk_paths"]);
        for part in [
            "ip saddr & 0.0.0.3 vmap { 0.0.0.0 : jump bans_v4_0, 0.0.0.1 : jump bans_v4_1, 0.0.0.2 : jump bans_v4_2, 0.0.0.3 : jump bans_v4_3 }",
            "ip6 saddr & ::3 vmap { ::",
            "chain grants_v4_2 {",
            "ip saddr @allow_sip_v4_2 udp dport 5060 accept",
            "ip saddr @ban_v4_1 udp dport { 5060, 10000-20000 } drop",
        ] {
            assert!(text.contains(part), "{part} in {text}");
        }
        // 100.64.0.6 is in shard 2 (6 & 3), and only there.
        let k = ElemKey {
            set: allow_set("rtp", Family::V4),
            addr: "100.64.0.6".parse().unwrap(),
        };
        spawn
            .change(
                &Changes {
                    set: vec![(k.clone(), now + HOUR)],
                    remove: vec![],
                },
                now,
            )
            .unwrap();
        nl.change(
            &Changes {
                set: vec![],
                remove: vec![ElemKey {
                    set: ban_set(Family::V4),
                    addr: k.addr,
                }],
            },
            now,
        )
        .unwrap();
        assert!(nft(&["list", "set", "inet", "pk_paths", "allow_rtp_v4_2"]).contains("100.64.0.6"));
        assert!(!nft(&["list", "set", "inet", "pk_paths", "ban_v4_2"]).contains("100.64.0.6 "));
        let mut now_wants = want.clone();
        now_wants.insert(k.clone(), now + HOUR);
        now_wants.remove(&ElemKey {
            set: ban_set(Family::V4),
            addr: k.addr,
        });
        assert_eq!(nl.compare(&now_wants, now).unwrap().1, TableState::InSync);
        // One wanted element gone from shard 1 and an unknown one in shard 3: each shard is
        // walked beside its own listing, and the fix is those two and nothing else.
        nft(&[
            "delete",
            "element",
            "inet",
            "pk_paths",
            "allow_sip_v4_1",
            "{ 100.64.1.5 }",
        ]);
        nft(&[
            "add",
            "element",
            "inet",
            "pk_paths",
            "ban_v4_3",
            "{ 100.64.200.7 }",
        ]);
        let sip = |a: &str| ElemKey {
            set: allow_set("sip", Family::V4),
            addr: a.parse().unwrap(),
        };
        match nl.compare(&now_wants, now).unwrap().1 {
            TableState::Fix(c) => {
                assert_eq!(c.set, vec![(sip("100.64.1.5"), now_wants[&sip("100.64.1.5")])]);
                assert_eq!(
                    c.remove,
                    vec![ElemKey {
                        set: ban_set(Family::V4),
                        addr: "100.64.200.7".parse().unwrap(),
                    }]
                );
                nl.change(&c, now).unwrap();
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(nl.compare(&now_wants, now).unwrap().1, TableState::InSync);
        // An address in a shard not its own reaches nothing there and no change can reach it.
        nft(&[
            "add",
            "element",
            "inet",
            "pk_paths",
            "allow_sip_v4_0",
            "{ 100.64.0.7 }",
        ]);
        match nl.compare(&now_wants, now).unwrap().1 {
            TableState::Rebuild(why) => assert!(why.contains("another shard"), "{why}"),
            other => panic!("{other:?}"),
        }
        nl.rebuild(&now_wants, now).unwrap();
        assert_eq!(nl.compare(&now_wants, now).unwrap().1, TableState::InSync);
        // A shard's chain emptied.
        nft(&["flush", "chain", "inet", "pk_paths", "grants_v6_1"]);
        match nl.compare(&now_wants, now).unwrap().1 {
            TableState::Rebuild(why) => assert!(why.contains("chain grants_v6_1 has 0 rules"), "{why}"),
            other => panic!("{other:?}"),
        }
        // The same table read with one shard is not the one built.
        nl.rebuild(&now_wants, now).unwrap();
        spawn.layout.shards = 1;
        assert!(matches!(
            spawn.compare(&now_wants, now).unwrap().1,
            TableState::Rebuild(_)
        ));
    });
}

/// The structure the read-back takes from netlink dumps is what `nft -t` lists: every set with
/// its type and flags (meters left out), the input chain with its hook, priority and policy,
/// and each chain's rules' comments in order; a missing table is none.
#[test]
fn netlink_reads_the_structure_nft_lists() {
    in_netns(|_| {
        let now = now_ms();
        let mut f = firewall(ElementPath::Nft, None);
        let udp = "udp/5060".parse::<PortRange>().unwrap();
        f.layout = f.layout.clone().with_sip_door(
            None,
            Some(crate::config::Responsive {
                ports: vec![udp],
                rate: 30,
                burst: 10,
            }),
        );
        f.layout.shards = 2;
        let mut nl = Netlink::open().unwrap();
        assert!(nl.structure("pk_paths").unwrap().is_none(), "no table yet");
        f.rebuild(&elements(10, now), now).unwrap();
        let json = f.nft.list_table_terse("pk_paths").unwrap().unwrap();
        let by_nft = Observed::parse(&json).unwrap();
        let by_netlink = Observed::from_structure(nl.structure("pk_paths").unwrap().unwrap());
        let shape = |o: &Observed| {
            o.sets
                .iter()
                .map(|(n, s)| (n.clone(), s.type_name.clone(), s.flags.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(shape(&by_netlink), shape(&by_nft));
        assert!(by_netlink.sets.contains_key("allow_sip_v6_1"));
        assert!(
            !by_netlink.sets.keys().any(|n| n.starts_with("sip_rate")),
            "meters left out"
        );
        assert_eq!(by_netlink.chain, by_nft.chain);
        assert!(by_netlink.chain.is_some());
        assert_eq!(by_netlink.rule_comments, by_nft.rule_comments);
        assert_eq!(by_netlink.other_chains, by_nft.other_chains);
        assert_eq!(
            by_netlink.other_chains.len(),
            8,
            "bans and grants, v4 and v6, two shards"
        );
    });
}

/// Interval sets listed over netlink give the networks nft lists: prefixes, hosts, adjacent
/// networks, IPv6, and the whole address space.
#[test]
fn netlink_lists_interval_sets_as_nft_does() {
    in_netns(|_| {
        let script = "table inet pk_iv {
            set a { type ipv4_addr; flags interval; elements = { 10.0.0.0/9, 10.128.0.0/9, 192.168.1.1, 172.16.0.0/12 } }
            set b { type ipv6_addr; flags interval; elements = { 2001:db8::/32, ::1/128 } }
            set c { type ipv4_addr; flags interval; elements = { 0.0.0.0/0 } }
            set d { type ipv6_addr; flags interval; }
        }";
        let mut child = std::process::Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success());
        let nft = Nft::new(Path::new("nft"));
        let mut nl = Netlink::open().unwrap();
        for set in ["a", "b", "c", "d"] {
            let json = nft.list_set("pk_iv", set).unwrap().unwrap();
            let by_nft = Observed::parse(&json).unwrap().sets.remove(set).unwrap().nets();
            let by_netlink = nl.list_intervals("pk_iv", set).unwrap().unwrap();
            assert_eq!(by_netlink, by_nft, "set {set}");
        }
        assert_eq!(nl.list_intervals("pk_iv", "e").unwrap(), None);
    });
}
