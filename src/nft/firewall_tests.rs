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
        netlink_aux: None,
        fallback: None,
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
