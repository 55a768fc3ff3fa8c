//! The NFLOG listener: the table logs knock ports to a netlink group (and drops them, so they look
//! closed); this socket receives those packets and feeds them to the gate. No listening socket is
//! ever open on a knock port. The same socket, bound to another group with a larger copy range,
//! hands dropped UDP datagrams (source and payload) to any reader ([`Nflog::run_udp`]).
//!
//! The group is configured with `netlink-packet-netfilter`; packets are read by a zero-copy walk
//! over the received datagram ([`for_each_packet`]), so a flood costs no allocation per packet.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::nflog::{config_request, ConfigCmd, ConfigMode, ConfigNla, Timeout};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterProtoFamily};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};

use crate::gate::{Gate, KnockOutcome};
use crate::packet::{self, CAPTURE_LEN};

/// The kernel hands packets over in batches of up to this many...
pub const QUEUE_THRESHOLD: u32 = 32;
/// ...or after this long, whichever comes first: a lone knock waits at most this.
pub const FLUSH_TIMEOUT: Duration = Duration::from_millis(10);
/// Socket receive buffer: room for a burst while the gate catches up.
pub const RCVBUF: usize = 8 << 20;
/// How often the loop wakes with no packets, to move time on and to notice shutdown.
pub const WAKE: Duration = Duration::from_millis(200);

const NLMSG_HDR: usize = 16;
const NFGEN_HDR: usize = 4;
const NLMSG_ERROR: u16 = 2;
const ULOG_PACKET: u16 = ((libc::NFNL_SUBSYS_ULOG as u16) << 8) | libc::NFULNL_MSG_PACKET as u16;
const NFULA_PAYLOAD: u16 = libc::NFULA_PAYLOAD as u16;
const NFULA_TIMESTAMP: u16 = libc::NFULA_TIMESTAMP as u16;
const NLA_TYPE_MASK: u16 = 0x3fff;

#[derive(Debug, thiserror::Error)]
pub enum NflogError {
    #[error("cannot open a netfilter netlink socket: {0}")]
    Socket(#[source] io::Error),
    #[error("cannot bind NFLOG group {group}: {message}")]
    Bind { group: u16, message: String },
    #[error("NFLOG socket: {0}")]
    Io(#[source] io::Error),
}

/// A netlink socket bound to one NFLOG group.
pub struct Nflog {
    sock: Socket,
    group: u16,
    setting: &'static str,
    buf: Vec<u8>,
    /// Times the kernel dropped packets because the socket buffer was full.
    pub overruns: u64,
}

impl Nflog {
    /// Binds `group`: packets copied up to [`CAPTURE_LEN`] bytes, batched.
    pub fn bind(group: u16) -> Result<Nflog, NflogError> {
        Nflog::bind_with(group, CAPTURE_LEN, "knock.nflog-group")
    }

    /// Binds `group`, packets copied up to `copy_len` bytes (network header included);
    /// `setting` names the config key that picks the group, for the error when it is taken.
    pub fn bind_with(group: u16, copy_len: u32, setting: &'static str) -> Result<Nflog, NflogError> {
        let mut sock = Socket::new(NETLINK_NETFILTER).map_err(NflogError::Socket)?;
        sock.bind_auto().map_err(NflogError::Socket)?;
        set_rcvbuf(&sock, RCVBUF);
        let mut n = Nflog {
            sock,
            group,
            setting,
            buf: vec![0u8; 256 * 1024],
            overruns: 0,
        };
        n.configure(vec![ConfigCmd::Bind.into()])?;
        n.configure(vec![
            ConfigMode::new_packet(copy_len).into(),
            ConfigNla::QThresh(QUEUE_THRESHOLD),
            Timeout::from(FLUSH_TIMEOUT).into(),
        ])?;
        // Without it the reader only wakes for packets; it still works, idle ticks come late.
        let _ = set_recv_timeout(&n.sock, WAKE);
        Ok(n)
    }

    pub fn group(&self) -> u16 {
        self.group
    }

    /// Sends one config request and waits for its acknowledgement.
    fn configure(&mut self, nlas: Vec<ConfigNla>) -> Result<(), NflogError> {
        let bind_err = |message: String| NflogError::Bind {
            group: self.group,
            message,
        };
        let req = config_request(NetfilterProtoFamily::Unspec, self.group, nlas);
        let mut out = vec![0u8; req.buffer_len()];
        req.serialize(&mut out);
        self.sock.send(&out, 0).map_err(|e| bind_err(e.to_string()))?;
        // Packets may already be queued ahead of the ack when re-configuring; skip them.
        for _ in 0..64 {
            let n = self
                .sock
                .recv(&mut &mut self.buf[..], 0)
                .map_err(|e| bind_err(e.to_string()))?;
            let msg = match NetlinkMessage::<NetfilterMessage>::deserialize(&self.buf[..n]) {
                Ok(m) => m,
                Err(_) => continue,
            };
            if let NetlinkPayload::Error(e) = msg.payload {
                return match e.code {
                    None => Ok(()),
                    Some(code) => {
                        let err = io::Error::from_raw_os_error(-code.get());
                        Err(bind_err(if err.raw_os_error() == Some(libc::EBUSY) {
                            format!(
                                "another process (a second passknockd, or ulogd) holds it; pick another {}",
                                self.setting
                            )
                        } else {
                            err.to_string()
                        }))
                    }
                };
            }
        }
        Err(bind_err("the kernel did not acknowledge".into()))
    }

    /// Waits up to [`WAKE`] for one datagram and calls `each(ip_packet, timestamp_ms)` for every
    /// packet in it. Returns the number of packets.
    pub fn recv(&mut self, each: impl FnMut(&[u8], Option<i64>)) -> Result<usize, NflogError> {
        match self.sock.recv(&mut &mut self.buf[..], 0) {
            Ok(n) => {
                let n = n.min(self.buf.len());
                Ok(for_each_packet(&self.buf[..n], each))
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                self.overruns += 1;
                Ok(0)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(0)
            }
            Err(e) => Err(NflogError::Io(e)),
        }
    }

    /// Feeds every logged packet to `gate` until `stop` is set; hands each outcome to `on`.
    pub fn run(
        &mut self,
        gate: &mut Gate,
        stop: &AtomicBool,
        mut on: impl FnMut(KnockOutcome),
    ) -> Result<(), NflogError> {
        while !stop.load(Ordering::Relaxed) {
            let now = now_ms();
            let got = self.recv(|pkt, ts| {
                let Some(k) = packet::parse(pkt) else {
                    return;
                };
                // The kernel's arrival time, when it gives one that is sane: a backlog under a
                // flood must not make a real knock look slow.
                let at = ts.filter(|t| (t - now).abs() < 5_000).unwrap_or(now);
                if let Some(o) = gate.on_packet(&k, at) {
                    on(o);
                }
            })?;
            if got == 0 {
                gate.tick(now_ms());
            }
        }
        Ok(())
    }
}

impl Nflog {
    /// Hands every logged packet to `each(Some((source, udp_payload)), at_ms)` — or
    /// `each(None, at_ms)` when it is not a whole-enough UDP datagram — until `stop` is set,
    /// and calls `idle(now_ms, overruns)` when a wait brings nothing. The walk is the knock
    /// path's: no allocation per packet.
    pub fn run_udp(
        &mut self,
        stop: &AtomicBool,
        mut each: impl FnMut(Option<(std::net::IpAddr, &[u8])>, i64),
        mut idle: impl FnMut(i64, u64),
    ) -> Result<(), NflogError> {
        while !stop.load(Ordering::Relaxed) {
            let now = now_ms();
            let got = self.recv(|pkt, ts| {
                let at = ts.filter(|t| (t - now).abs() < 5_000).unwrap_or(now);
                match packet::parse(pkt) {
                    Some(k) if k.port.proto == crate::Proto::Udp => each(Some((k.source, k.payload)), at),
                    _ => each(None, at),
                }
            })?;
            if got == 0 {
                idle(now_ms(), self.overruns);
            }
        }
        Ok(())
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn set_rcvbuf(sock: &Socket, bytes: usize) {
    let v = bytes as libc::c_int;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: setsockopt with a c_int value on a socket we own.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                &v as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        // FORCE needs CAP_NET_ADMIN; without it the plain option is capped by rmem_max.
        if rc == 0 {
            return;
        }
    }
}

/// Sets a socket's receive timeout (SO_RCVTIMEO).
pub fn set_recv_timeout(sock: &Socket, d: Duration) -> std::io::Result<()> {
    let tv = libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: d.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: setsockopt with a timeval on a socket we own.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Walks the netlink messages in one datagram and calls `each(payload, timestamp_ms)` for every
/// NFLOG packet message that carries a payload. Lengths are checked before every read; a
/// malformed message ends the walk. Returns how many packets were handed on.
pub fn for_each_packet(buf: &[u8], mut each: impl FnMut(&[u8], Option<i64>)) -> usize {
    let mut n = 0;
    let mut off = 0;
    while off + NLMSG_HDR <= buf.len() {
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
        let kind = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap());
        if len < NLMSG_HDR || off + len > buf.len() {
            break;
        }
        if kind == ULOG_PACKET && len >= NLMSG_HDR + NFGEN_HDR {
            let mut payload = None;
            let mut ts = None;
            let attrs = &buf[off + NLMSG_HDR + NFGEN_HDR..off + len];
            let mut a = 0;
            while a + 4 <= attrs.len() {
                let alen = u16::from_ne_bytes([attrs[a], attrs[a + 1]]) as usize;
                let atype = u16::from_ne_bytes([attrs[a + 2], attrs[a + 3]]) & NLA_TYPE_MASK;
                if alen < 4 || a + alen > attrs.len() {
                    break;
                }
                let value = &attrs[a + 4..a + alen];
                match atype {
                    NFULA_PAYLOAD => payload = Some(value),
                    NFULA_TIMESTAMP if value.len() >= 16 => {
                        let sec = u64::from_be_bytes(value[0..8].try_into().unwrap());
                        let usec = u64::from_be_bytes(value[8..16].try_into().unwrap());
                        ts = i64::try_from(sec.saturating_mul(1000).saturating_add(usec / 1000)).ok();
                    }
                    _ => {}
                }
                a += (alen + 3) & !3;
            }
            if let Some(p) = payload {
                each(p, ts);
                n += 1;
            }
        } else if kind == NLMSG_ERROR {
            // An ack or error for a config request sent earlier; nothing to hand on.
        }
        off += (len + 3) & !3;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::NetlinkHeader;
    use netlink_packet_netfilter::nflog::{PacketNla, TimeStamp, ULogMessage};
    use netlink_packet_netfilter::NetfilterHeader;

    /// What the kernel sends, as the crate writes it.
    fn message(payload: &[u8], ts: Option<(u64, u64)>) -> Vec<u8> {
        let mut nlas = vec![PacketNla::Mark(7)];
        if let Some((s, us)) = ts {
            let mut raw = [0u8; 16];
            raw[..8].copy_from_slice(&s.to_be_bytes());
            raw[8..].copy_from_slice(&us.to_be_bytes());
            nlas.push(PacketNla::Timestamp(TimeStamp::parse(&raw).unwrap()));
        }
        nlas.push(PacketNla::Payload(payload.to_vec()));
        let mut m = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::from(NetfilterMessage::new(
                NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 5),
                ULogMessage::Packet(nlas),
            )),
        );
        m.finalize();
        let mut b = vec![0u8; m.buffer_len()];
        m.serialize(&mut b);
        b
    }

    #[test]
    fn walks_what_the_crate_writes() {
        let p1 = packet::build::tcp(
            "203.0.113.10".parse().unwrap(),
            "198.51.100.1".parse().unwrap(),
            1,
            7000,
            packet::TCP_SYN,
            1,
        );
        let p2 = packet::build::udp(
            "203.0.113.10".parse().unwrap(),
            "198.51.100.1".parse().unwrap(),
            1,
            8000,
            b"odd",
        );
        let mut batch = message(&p1, Some((1_800_000_000, 250_000)));
        batch.extend(message(&p2, None));
        let mut seen = Vec::new();
        let n = for_each_packet(&batch, |p, ts| seen.push((p.to_vec(), ts)));
        assert_eq!(n, 2);
        assert_eq!(seen[0], (p1, Some(1_800_000_000_250)));
        assert_eq!(seen[1], (p2, None));
        // Cut anywhere, the walk stops cleanly and hands on only whole messages.
        for cut in 0..batch.len() {
            let n = for_each_packet(&batch[..cut], |_, _| {});
            assert!(n <= 1, "cut at {cut}");
        }
    }
}

#[cfg(test)]
mod fuzz {
    //! Property tests: the walk takes any datagram without a panic, hands on only slices of it,
    //! and a garbled tail never costs the whole messages before it.
    use super::*;
    use proptest::prelude::*;

    /// One NFLOG packet message as the kernel lays it out: header, nfgenmsg, a payload attribute.
    fn message(payload: &[u8]) -> Vec<u8> {
        let alen = 4 + payload.len();
        let len = NLMSG_HDR + NFGEN_HDR + ((alen + 3) & !3);
        let mut b = vec![0u8; len];
        b[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
        b[4..6].copy_from_slice(&ULOG_PACKET.to_ne_bytes());
        let a = NLMSG_HDR + NFGEN_HDR;
        b[a..a + 2].copy_from_slice(&(alen as u16).to_ne_bytes());
        b[a + 2..a + 4].copy_from_slice(&NFULA_PAYLOAD.to_ne_bytes());
        b[a + 4..a + alen].copy_from_slice(payload);
        b
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_datagram_is_walked_safely(b in proptest::collection::vec(any::<u8>(), 0..600)) {
            let range = b.as_ptr_range();
            let n = for_each_packet(&b, |p, _| {
                let r = p.as_ptr_range();
                assert!(p.is_empty() || (range.start <= r.start && r.end <= range.end));
            });
            // Each packet costs at least a header, a nfgenmsg and an attribute header.
            prop_assert!(n <= b.len() / (NLMSG_HDR + NFGEN_HDR + 4));
        }

        #[test]
        fn whole_messages_survive_a_garbled_tail(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..60), 0..6),
            tail in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            let mut b: Vec<u8> = payloads.iter().flat_map(|p| message(p)).collect();
            b.extend_from_slice(&tail);
            let mut seen = Vec::new();
            for_each_packet(&b, |p, _| seen.push(p.to_vec()));
            prop_assert!(seen.len() >= payloads.len());
            prop_assert_eq!(&seen[..payloads.len()], payloads.as_slice());
        }
    }
}
