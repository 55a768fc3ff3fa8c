//! IPv4/IPv6 + TCP/UDP headers parsed from the raw bytes NFLOG hands over — pure functions over
//! untrusted buffers: every length is checked before a field is read. Builders for the same
//! packets serve the tests and the flood bench.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::{Port, Proto};

/// Bytes of each logged packet handed to the daemon (the table's `log snaplen` and the NFLOG
/// copy range): an IPv6 header with an extension header, UDP and an SPA datagram, no more.
pub const CAPTURE_LEN: u32 = 192;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// IPv6 extension headers that may sit before TCP/UDP and are skipped.
const IPV6_SKIPPABLE: [u8; 3] = [0, 43, 60];
const IPV6_FRAGMENT: u8 = 44;
/// Most IPv6 extension headers walked before giving up on a packet.
const IPV6_MAX_EXT: usize = 4;

/// One knock packet as the gate sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Knock<'a> {
    pub source: IpAddr,
    /// The sender's port: where an SPA answer goes back to.
    pub source_port: u16,
    pub dest: IpAddr,
    pub port: Port,
    /// TCP flags; 0 for UDP.
    pub tcp_flags: u8,
    /// The UDP payload as captured (cut short if the capture was); empty for TCP.
    pub payload: &'a [u8],
}

impl Knock<'_> {
    /// A TCP SYN that opens a connection (no ACK, RST or FIN): what knockd counts as a TCP knock.
    pub fn is_syn(&self) -> bool {
        self.tcp_flags & (TCP_FIN | TCP_SYN | TCP_RST | TCP_ACK) == TCP_SYN
    }
}

/// Parses an IP packet (network header first). `None` for anything that is not a whole-enough,
/// unfragmented TCP or UDP packet.
pub fn parse(l3: &[u8]) -> Option<Knock<'_>> {
    match l3.first()? >> 4 {
        4 => parse_v4(l3),
        6 => parse_v6(l3),
        _ => None,
    }
}

fn parse_v4(b: &[u8]) -> Option<Knock<'_>> {
    let ihl = ((b[0] & 0x0f) as usize) * 4;
    if ihl < 20 || b.len() < ihl {
        return None;
    }
    let frag = u16::from_be_bytes([b[6], b[7]]);
    // More-fragments set or a non-zero offset: a fragment is never a knock.
    if frag & 0x3fff != 0 {
        return None;
    }
    let total = u16::from_be_bytes([b[2], b[3]]) as usize;
    let end = total.clamp(ihl, b.len());
    let src = Ipv4Addr::new(b[12], b[13], b[14], b[15]);
    let dst = Ipv4Addr::new(b[16], b[17], b[18], b[19]);
    l4(b[9], &b[ihl..end], IpAddr::V4(src), IpAddr::V4(dst))
}

fn parse_v6(b: &[u8]) -> Option<Knock<'_>> {
    if b.len() < 40 {
        return None;
    }
    let payload_len = u16::from_be_bytes([b[4], b[5]]) as usize;
    let end = (40 + payload_len).min(b.len());
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&b[8..24]).ok()?);
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&b[24..40]).ok()?);
    let mut next = b[6];
    let mut at = 40;
    for _ in 0..=IPV6_MAX_EXT {
        if next == IPPROTO_TCP || next == IPPROTO_UDP {
            return l4(next, b.get(at..end)?, IpAddr::V6(src), IpAddr::V6(dst));
        }
        if next == IPV6_FRAGMENT || !IPV6_SKIPPABLE.contains(&next) {
            return None;
        }
        let h = b.get(at..at + 2)?;
        next = h[0];
        at += (h[1] as usize + 1) * 8;
    }
    None
}

fn l4(proto: u8, b: &[u8], source: IpAddr, dest: IpAddr) -> Option<Knock<'_>> {
    match proto {
        IPPROTO_TCP if b.len() >= 14 => Some(Knock {
            source,
            source_port: u16::from_be_bytes([b[0], b[1]]),
            dest,
            port: Port::tcp(u16::from_be_bytes([b[2], b[3]])),
            tcp_flags: b[13],
            payload: &[],
        }),
        IPPROTO_UDP if b.len() >= 8 => {
            let udp_len = u16::from_be_bytes([b[4], b[5]]) as usize;
            let end = udp_len.clamp(8, b.len());
            Some(Knock {
                source,
                source_port: u16::from_be_bytes([b[0], b[1]]),
                dest,
                port: Port::udp(u16::from_be_bytes([b[2], b[3]])),
                tcp_flags: 0,
                payload: &b[8..end],
            })
        }
        _ => None,
    }
    .filter(|k| k.port.port != 0)
}

/// Builds whole packets with correct checksums: what a raw socket sends in the flood bench, and
/// what the parser tests read.
pub mod build {
    use super::*;

    /// An IP packet carrying a TCP segment with `flags` (20-byte header, no options).
    pub fn tcp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, flags: u8, seq: u32) -> Vec<u8> {
        let mut seg = vec![0u8; 20];
        seg[0..2].copy_from_slice(&sport.to_be_bytes());
        seg[2..4].copy_from_slice(&dport.to_be_bytes());
        seg[4..8].copy_from_slice(&seq.to_be_bytes());
        seg[12] = 5 << 4;
        seg[13] = flags;
        seg[14..16].copy_from_slice(&64240u16.to_be_bytes());
        ip(src, dst, IPPROTO_TCP, seg, 16)
    }

    /// An IP packet carrying a UDP datagram.
    pub fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut d = vec![0u8; 8];
        d[0..2].copy_from_slice(&sport.to_be_bytes());
        d[2..4].copy_from_slice(&dport.to_be_bytes());
        d[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        d.extend_from_slice(payload);
        ip(src, dst, IPPROTO_UDP, d, 6)
    }

    fn ip(src: IpAddr, dst: IpAddr, proto: u8, mut l4: Vec<u8>, csum_at: usize) -> Vec<u8> {
        let len = l4.len();
        let mut pseudo = Vec::with_capacity(40 + len);
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                pseudo.extend_from_slice(&s.octets());
                pseudo.extend_from_slice(&d.octets());
                pseudo.extend_from_slice(&[0, proto]);
                pseudo.extend_from_slice(&(len as u16).to_be_bytes());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                pseudo.extend_from_slice(&s.octets());
                pseudo.extend_from_slice(&d.octets());
                pseudo.extend_from_slice(&(len as u32).to_be_bytes());
                pseudo.extend_from_slice(&[0, 0, 0, proto]);
            }
            _ => panic!("source and destination of one family"),
        }
        pseudo.extend_from_slice(&l4);
        let mut c = checksum(&pseudo);
        if c == 0 && proto == IPPROTO_UDP {
            c = 0xffff;
        }
        l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
        let mut out = Vec::with_capacity(40 + len);
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                out.extend_from_slice(&[0x45, 0]);
                out.extend_from_slice(&((20 + len) as u16).to_be_bytes());
                out.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
                out.extend_from_slice(&s.octets());
                out.extend_from_slice(&d.octets());
                let h = checksum(&out);
                out[10..12].copy_from_slice(&h.to_be_bytes());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                out.extend_from_slice(&[0x60, 0, 0, 0]);
                out.extend_from_slice(&(len as u16).to_be_bytes());
                out.extend_from_slice(&[proto, 64]);
                out.extend_from_slice(&s.octets());
                out.extend_from_slice(&d.octets());
            }
            _ => unreachable!(),
        }
        out.extend_from_slice(&l4);
        out
    }

    /// The Internet checksum (RFC 1071).
    pub fn checksum(b: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for c in b.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            sum += w as u32;
        }
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }
}

impl Proto {
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => IPPROTO_TCP,
            Proto::Udp => IPPROTO_UDP,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn tcp_and_udp_over_v4_and_v6() {
        let p = build::tcp(a("203.0.113.10"), a("198.51.100.1"), 40000, 7000, TCP_SYN, 1);
        let k = parse(&p).unwrap();
        assert_eq!(
            (k.source, k.port, k.is_syn()),
            (a("203.0.113.10"), Port::tcp(7000), true)
        );
        let p = build::tcp(
            a("2001:db8::10"),
            a("2001:db8::1"),
            40000,
            7000,
            TCP_SYN | TCP_ACK,
            1,
        );
        let k = parse(&p).unwrap();
        assert_eq!((k.source, k.is_syn()), (a("2001:db8::10"), false));
        let p = build::udp(a("2001:db8::10"), a("2001:db8::1"), 1234, 62201, b"hello");
        let k = parse(&p).unwrap();
        assert_eq!((k.port, k.payload), (Port::udp(62201), &b"hello"[..]));
        let p = build::udp(a("203.0.113.10"), a("198.51.100.1"), 1234, 8000, &[]);
        assert_eq!(parse(&p).unwrap().payload, b"");
        // A valid IPv4 header checksums to zero.
        assert_eq!(build::checksum(&p[..20]), 0);
    }

    #[test]
    fn short_fragmented_and_odd_packets_are_not_knocks() {
        let p = build::udp(a("203.0.113.10"), a("198.51.100.1"), 1234, 8000, b"0123456789");
        for n in 0..28 {
            assert!(parse(&p[..n]).is_none(), "cut at {n}");
        }
        // A capture cut inside the payload keeps what is there; the UDP length says what is not.
        assert_eq!(parse(&p[..30]).unwrap().payload, b"01");
        let mut frag = p.clone();
        frag[6] = 0x20; // more fragments
        assert!(parse(&frag).is_none());
        let mut icmp = p.clone();
        icmp[9] = 1;
        assert!(parse(&icmp).is_none());
        assert!(parse(&[0x50; 60]).is_none(), "IP version 5");
        let mut v6 = build::udp(a("2001:db8::10"), a("2001:db8::1"), 1, 8000, b"x");
        v6[6] = IPV6_FRAGMENT;
        assert!(parse(&v6).is_none());
        // A bad IHL never reads past the buffer.
        let mut bad = p.clone();
        bad[0] = 0x4f;
        assert!(parse(&bad).is_none());
    }

    #[test]
    fn ipv6_extension_headers_are_walked() {
        let mut p = build::udp(a("2001:db8::10"), a("2001:db8::1"), 1, 8000, b"x");
        // Insert an 8-byte destination-options header before UDP.
        let udp = p.split_off(40);
        p[6] = 60;
        let plen = (udp.len() + 8) as u16;
        p[4..6].copy_from_slice(&plen.to_be_bytes());
        p.extend_from_slice(&[IPPROTO_UDP, 0, 1, 4, 0, 0, 0, 0]);
        p.extend_from_slice(&udp);
        let k = parse(&p).unwrap();
        assert_eq!((k.port, k.payload), (Port::udp(8000), &b"x"[..]));
    }
}

#[cfg(test)]
mod fuzz {
    //! Property tests: any bytes parse or are refused without a panic, a parsed knock only points
    //! into the bytes it came from, and built packets parse back — whole or cut short.
    use super::*;
    use proptest::prelude::*;

    fn addr_pair() -> impl Strategy<Value = (IpAddr, IpAddr)> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<[u8; 4]>()).prop_map(|(a, b)| (IpAddr::from(a), IpAddr::from(b))),
            (any::<[u8; 16]>(), any::<[u8; 16]>()).prop_map(|(a, b)| (IpAddr::from(a), IpAddr::from(b))),
        ]
    }

    /// Bytes that look like an IP header (right version nibble) more often than chance would.
    fn ip_ish() -> impl Strategy<Value = Vec<u8>> {
        (
            prop_oneof![Just(0x45u8), Just(0x46), Just(0x60), any::<u8>()],
            proptest::collection::vec(any::<u8>(), 0..CAPTURE_LEN as usize),
        )
            .prop_map(|(first, mut rest)| {
                rest.insert(0, first);
                rest
            })
    }

    fn within(outer: &[u8], inner: &[u8]) -> bool {
        let o = outer.as_ptr_range();
        let i = inner.as_ptr_range();
        inner.is_empty() || (o.start <= i.start && i.end <= o.end)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_bytes_parse_or_are_refused(b in ip_ish()) {
            if let Some(k) = parse(&b) {
                prop_assert!(k.port.port != 0);
                prop_assert!(within(&b, k.payload));
            }
        }

        #[test]
        fn built_packets_parse_back_even_cut_short(
            (src, dst) in addr_pair(),
            sport in any::<u16>(),
            dport in 1..=u16::MAX,
            payload in proptest::collection::vec(any::<u8>(), 0..100),
            tcp in any::<bool>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let p = if tcp {
                build::tcp(src, dst, sport, dport, TCP_SYN, 1)
            } else {
                build::udp(src, dst, sport, dport, &payload)
            };
            let k = parse(&p).expect("a built packet parses");
            prop_assert_eq!((k.source, k.dest, k.port.port), (src, dst, dport));
            if tcp {
                prop_assert!(k.is_syn());
            } else {
                prop_assert_eq!(k.payload, payload.as_slice());
            }
            // A capture cut anywhere: refused, or the same knock with less payload.
            let short = &p[..cut.index(p.len())];
            if let Some(s) = parse(short) {
                prop_assert_eq!((s.source, s.dest, s.port), (k.source, k.dest, k.port));
                prop_assert!(payload.starts_with(s.payload));
            }
        }
    }
}
