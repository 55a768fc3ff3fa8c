//! An interval set's listing turned back into networks: the kernel keeps each interval as its
//! first address and, flagged as an end, the first address after it; the prefixes that cover
//! each interval exactly are what nft would list and what the layout asked for.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::base::addr::Net;

/// The networks of a set from its listed bounds `(address, ends an interval)`, in order. A start
/// with no end runs to the top of the address space; an end with no start is ignored.
pub fn prefixes(mut bounds: Vec<(IpAddr, bool)>) -> Vec<Net> {
    // At one address, an interval's end comes before the next one's start.
    bounds.sort_by_key(|(a, end)| (*a, !*end));
    let mut out = Vec::new();
    let mut open: Option<IpAddr> = None;
    for (a, end) in bounds {
        match (open.take(), end) {
            (Some(first), true) => {
                if let Some(last) = before(a) {
                    cover(first, last, &mut out);
                }
            }
            // A start while one is open: the open one ends just before it.
            (Some(first), false) => {
                if let Some(last) = before(a) {
                    cover(first, last, &mut out);
                }
                open = Some(a);
            }
            (None, false) => open = Some(a),
            (None, true) => {}
        }
    }
    if let Some(first) = open {
        let top = match first {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(u32::MAX)),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(u128::MAX)),
        };
        cover(first, top, &mut out);
    }
    out.sort();
    out
}

/// The address before `a`, in its family; none before the first.
fn before(a: IpAddr) -> Option<IpAddr> {
    match a {
        IpAddr::V4(v) => u32::from(v).checked_sub(1).map(|n| IpAddr::V4(n.into())),
        IpAddr::V6(v) => u128::from(v).checked_sub(1).map(|n| IpAddr::V6(n.into())),
    }
}

/// The fewest prefixes covering `first..=last` exactly.
fn cover(first: IpAddr, last: IpAddr, out: &mut Vec<Net>) {
    let (width, mut lo, hi) = match (first, last) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (32u32, u128::from(u32::from(a)), u128::from(u32::from(b))),
        (IpAddr::V6(a), IpAddr::V6(b)) => (128u32, u128::from(a), u128::from(b)),
        _ => return,
    };
    if lo > hi {
        return;
    }
    loop {
        let span = hi - lo;
        // The largest block aligned at `lo` that stays within `hi`.
        let mut bits = if lo == 0 {
            width
        } else {
            lo.trailing_zeros().min(width)
        };
        while bits > 0 && (bits == 128 && span != u128::MAX || bits < 128 && (1u128 << bits) - 1 > span) {
            bits -= 1;
        }
        let addr = match width {
            32 => IpAddr::V4(Ipv4Addr::from(lo as u32)),
            _ => IpAddr::V6(Ipv6Addr::from(lo)),
        };
        out.push(Net {
            addr,
            prefix: (width - bits) as u8,
        });
        if bits == 128 {
            return;
        }
        let block_last = lo + ((1u128 << bits) - 1);
        if block_last >= hi {
            return;
        }
        lo = block_last + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<Net> {
        let mut v: Vec<Net> = list.iter().map(|s| s.parse().unwrap()).collect();
        v.sort();
        v
    }

    #[test]
    fn prefixes_and_hosts_come_back_as_they_went_in() {
        let got = prefixes(vec![
            (ip("192.168.1.2"), true),
            (ip("11.0.0.0"), true),
            (ip("10.0.0.0"), false),
            (ip("192.168.1.1"), false),
        ]);
        assert_eq!(got, nets(&["10.0.0.0/8", "192.168.1.1/32"]));
        let got = prefixes(vec![(ip("2001:db8::"), false), (ip("2001:db9::"), true)]);
        assert_eq!(got, nets(&["2001:db8::/32"]));
    }

    #[test]
    fn adjacent_networks_stay_apart_whether_or_not_the_first_has_an_end() {
        let with_end = prefixes(vec![
            (ip("10.0.0.0"), false),
            (ip("10.128.0.0"), true),
            (ip("10.128.0.0"), false),
            (ip("11.0.0.0"), true),
        ]);
        assert_eq!(with_end, nets(&["10.0.0.0/9", "10.128.0.0/9"]));
        let without = prefixes(vec![
            (ip("10.0.0.0"), false),
            (ip("10.128.0.0"), false),
            (ip("11.0.0.0"), true),
        ]);
        assert_eq!(without, nets(&["10.0.0.0/9", "10.128.0.0/9"]));
    }

    #[test]
    fn an_interval_to_the_top_has_no_end_and_odd_ranges_split_into_prefixes() {
        assert_eq!(prefixes(vec![(ip("0.0.0.0"), false)]), nets(&["0.0.0.0/0"]));
        assert_eq!(prefixes(vec![(ip("::"), false)]), nets(&["::/0"]));
        assert_eq!(
            prefixes(vec![(ip("255.255.255.255"), false)]),
            nets(&["255.255.255.255/32"])
        );
        // 10.0.0.1 – 10.0.0.6: /32, /31, /31, /32.
        let got = prefixes(vec![(ip("10.0.0.1"), false), (ip("10.0.0.7"), true)]);
        assert_eq!(
            got,
            nets(&["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"])
        );
        assert!(prefixes(vec![(ip("10.0.0.9"), true)]).is_empty(), "a stray end");
    }
}
