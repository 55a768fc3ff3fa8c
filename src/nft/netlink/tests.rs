//! The netlink path against the real kernel, each test in a network namespace of its own (root
//! only; skipped with a note otherwise), cross-checked against what `nft` lists.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use super::*;
use crate::base::clock::now_ms;
use crate::config::PortRange;
use crate::nft::render::{ElemKey, Elements, Layout};
use crate::nft::{Nft, Observed};

const TABLE: &str = "passknock";
const HOUR: i64 = 3_600_000;

/// Runs `f` on a thread in a fresh network namespace (the `nft` it spawns lands there too);
/// `None` when not root.
fn in_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the netlink tests need root (a network namespace and nftables)");
        return None;
    }
    let t = std::thread::spawn(move || {
        // SAFETY: unshare of the network namespace affects only this thread.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare(CLONE_NEWNET): {}", io::Error::last_os_error());
        f()
    });
    Some(t.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
}

fn nft() -> Nft {
    Nft::new(Path::new("nft"))
}

/// Creates the table (sets allow_sip_v4/v6, ban_v4/v6, trusted_v4/v6) through `nft`, as the
/// daemon does.
fn make_table() -> Layout {
    let layout = Layout::new(
        TABLE,
        vec![("sip".into(), vec!["udp/5060".parse::<PortRange>().unwrap()])],
        &[],
    );
    let json = layout.render_table_json(&Elements::new(), now_ms()).unwrap();
    nft().apply_json(&json).unwrap();
    layout
}

fn key(set: &str, addr: IpAddr) -> ElemKey {
    ElemKey {
        set: set.into(),
        addr,
    }
}

fn v4(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
}

fn v6(i: u32) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from((0x2001_0db8u128 << 96) | i as u128))
}

fn listed(nl: &mut Netlink, set: &str) -> BTreeMap<IpAddr, Option<u64>> {
    nl.list_set(TABLE, set)
        .unwrap()
        .expect("the set exists")
        .into_iter()
        .collect()
}

/// Whether `left` ms is what an element ending `given` ms after it was set has left a moment
/// later (timeouts are rounded up to whole seconds).
fn close(left: Option<u64>, given: i64) -> bool {
    matches!(left, Some(l) if l as i64 <= given + 1000 && l as i64 >= given - 10_000)
}

/// Elements go in with their timeouts and come back with the time left; setting again replaces
/// the timeout; removing takes out what is there and passes over what is not; `nft` sees the
/// same elements and timeouts.
#[test]
fn sets_replaces_and_removes_elements_as_nft_sees_them() {
    in_netns(|| {
        make_table();
        let mut nl = Netlink::open().unwrap();
        let now = now_ms();
        let a = v4(7);
        let b = v4(8);
        let c = v6(9);
        let changes = Changes {
            set: vec![
                (key("allow_sip_v4", a), now + HOUR),
                (key("allow_sip_v4", b), now + 90_500),
                (key("allow_sip_v6", c), now + 2 * HOUR),
            ],
            remove: vec![],
        };
        nl.apply(TABLE, &changes, now).unwrap();
        let got4 = listed(&mut nl, "allow_sip_v4");
        let got6 = listed(&mut nl, "allow_sip_v6");
        assert_eq!(got4.len(), 2, "{got4:?}");
        assert!(close(got4[&a], HOUR), "{got4:?}");
        assert!(close(got4[&b], 90_500), "{got4:?}");
        assert!(close(got6[&c], 2 * HOUR), "{got6:?}");

        // nft lists the same elements, timeouts in whole seconds.
        let json = nft().list_table(TABLE).unwrap().unwrap();
        let obs = Observed::parse(&json).unwrap();
        for (set, got) in [("allow_sip_v4", &got4), ("allow_sip_v6", &got6)] {
            let seen = &obs.sets[set].elems;
            assert_eq!(seen.keys().collect::<Vec<_>>(), got.keys().collect::<Vec<_>>());
            for (ip, left) in got {
                let secs = seen[ip].expect("nft lists an expiry") * 1000;
                let ms = left.unwrap() as i64;
                assert!(
                    (secs - ms).abs() <= 2000,
                    "{set} {ip}: nft {secs} ms, netlink {ms} ms"
                );
            }
        }
        let out = std::process::Command::new("nft")
            .args(["-j", "list", "set", "inet", TABLE, "allow_sip_v4"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let timeouts: BTreeMap<String, u64> = v["nftables"][1]["set"]["elem"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let e = &e["elem"];
                (
                    e["val"].as_str().unwrap().to_string(),
                    e["timeout"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(timeouts.get(&a.to_string()), Some(&3600), "{v}");
        assert_eq!(timeouts.get(&b.to_string()), Some(&91), "90.5 s rounds up: {v}");

        // Set again, shorter: the new timeout replaces the old.
        let now = now_ms();
        let again = Changes {
            set: vec![(key("allow_sip_v4", a), now + 600_000)],
            remove: vec![],
        };
        nl.apply(TABLE, &again, now).unwrap();
        let got4 = listed(&mut nl, "allow_sip_v4");
        assert!(close(got4[&a], 600_000), "{got4:?}");
        assert!(
            close(got4[&b], 90_500),
            "the other element is untouched: {got4:?}"
        );

        // Remove one present and one absent element, in one batch.
        let gone = Changes {
            set: vec![],
            remove: vec![key("allow_sip_v4", b), key("allow_sip_v4", v4(99))],
        };
        nl.apply(TABLE, &gone, now_ms()).unwrap();
        let got4 = listed(&mut nl, "allow_sip_v4");
        assert_eq!(got4.keys().collect::<Vec<_>>(), vec![&a]);
        let obs = Observed::parse(&nft().list_table(TABLE).unwrap().unwrap()).unwrap();
        assert_eq!(
            obs.sets["allow_sip_v4"].elems.keys().collect::<Vec<_>>(),
            vec![&a]
        );
    });
}

/// One bad part refuses the whole batch, in words, and nothing of it is applied.
#[test]
fn a_batch_with_a_missing_set_is_refused_whole() {
    in_netns(|| {
        make_table();
        let mut nl = Netlink::open().unwrap();
        let now = now_ms();
        let mut changes = Changes::default();
        changes.set.push((key("allow_sip_v4", v4(1)), now + HOUR));
        changes.set.push((key("allow_sip_v4", v4(2)), now + HOUR));
        for i in 0..3 {
            changes.set.push((key("allow_nope_v4", v4(10 + i)), now + HOUR));
        }
        changes.remove.push(key("ban_v4", v4(50)));
        let err = nl.apply(TABLE, &changes, now).unwrap_err().to_string();
        eprintln!("{err}");
        assert!(
            err.starts_with(
                "the kernel refused adding 3 element(s) to set allow_nope_v4 of table inet passknock: \
                 No such file or directory (os error 2)"
            ),
            "{err}"
        );
        assert!(!err.contains("allow_sip_v4") && !err.contains("ban_v4"), "{err}");
        assert!(listed(&mut nl, "allow_sip_v4").is_empty());
        // The socket is fine after a refusal.
        changes.set.retain(|(k, _)| k.set == "allow_sip_v4");
        nl.apply(TABLE, &changes, now).unwrap();
        assert_eq!(listed(&mut nl, "allow_sip_v4").len(), 2);
    });
}

/// A table or set that is not there lists as `None`; changing it is refused in words.
#[test]
fn a_missing_table_or_set_lists_as_none() {
    in_netns(|| {
        let mut nl = Netlink::open().unwrap();
        assert_eq!(nl.list_set(TABLE, "allow_sip_v4").unwrap(), None);
        let err = nl.flush(TABLE, "allow_sip_v4").unwrap_err().to_string();
        assert_eq!(
            err,
            "the kernel refused flushing set allow_sip_v4 of table inet passknock: \
             No such file or directory (os error 2)"
        );
        make_table();
        assert_eq!(nl.list_set(TABLE, "allow_rtp_v4").unwrap(), None);
        assert_eq!(nl.list_set(TABLE, "ban_v6").unwrap(), Some(vec![]));
    });
}

/// 100,000 elements (both families) in one apply, read back whole; a flush empties one set
/// and leaves the other.
#[test]
fn a_hundred_thousand_elements_in_one_batch_then_a_flush() {
    in_netns(|| {
        make_table();
        let mut nl = Netlink::open().unwrap();
        let now = now_ms();
        let mut changes = Changes::default();
        for i in 0..60_000 {
            changes.set.push((key("ban_v4", v4(i)), now + HOUR + i as i64));
        }
        for i in 0..40_000 {
            changes.set.push((key("ban_v6", v6(i)), now + 2 * HOUR));
        }
        nl.apply(TABLE, &changes, now).unwrap();
        let got4 = listed(&mut nl, "ban_v4");
        let got6 = listed(&mut nl, "ban_v6");
        assert_eq!((got4.len(), got6.len()), (60_000, 40_000));
        assert!((0..60_000).all(|i| close(got4[&v4(i)], HOUR + i as i64)));
        assert!((0..40_000).all(|i| close(got6[&v6(i)], 2 * HOUR)));
        let obs = Observed::parse(&nft().list_table(TABLE).unwrap().unwrap()).unwrap();
        assert_eq!(obs.element_count(), 100_000);

        // Remove them all again in one batch (each element added short, then deleted).
        let remove = Changes {
            set: vec![],
            remove: changes.set.iter().map(|(k, _)| k.clone()).collect(),
        };
        nl.apply(TABLE, &remove, now_ms()).unwrap();
        assert!(listed(&mut nl, "ban_v4").is_empty());
        nl.apply(TABLE, &changes, now).unwrap();

        nl.flush(TABLE, "ban_v4").unwrap();
        assert!(listed(&mut nl, "ban_v4").is_empty());
        assert_eq!(listed(&mut nl, "ban_v6").len(), 40_000);

        // A fill (plain adds into the emptied set) puts them back with their timeouts.
        let now = now_ms();
        let elements: Elements = (0..60_000).map(|i| (key("ban_v4", v4(i)), now + HOUR)).collect();
        nl.fill(TABLE, &elements, now).unwrap();
        let got4 = listed(&mut nl, "ban_v4");
        assert_eq!(got4.len(), 60_000);
        assert!(got4.values().all(|left| close(*left, HOUR)));
    });
}

/// Without CAP_NET_ADMIN the socket cannot be set up, and the error says what is missing (the
/// daemon falls back to spawning nft). Run on a thread that drops root by the raw syscall,
/// which changes only that thread's credentials.
#[test]
fn without_cap_net_admin_open_says_why() {
    in_netns(|| {
        // SAFETY: setresuid on this thread only (the raw syscall, not libc's process-wide one).
        let rc = unsafe { libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534) };
        assert_eq!(rc, 0, "setresuid: {}", io::Error::last_os_error());
        let err = Netlink::open().err().expect("open refused").to_string();
        assert!(
            err.contains("Operation not permitted") && err.contains("needs CAP_NET_ADMIN"),
            "{err}"
        );
        eprintln!("{err}");
    });
}
