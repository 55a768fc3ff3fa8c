//! Floods from spoofed sources (TCP SYNs, or any prebuilt packets), sent with a raw socket from inside a test namespace
//! to the PBX namespace only. Bounded in count and time; optionally paced to a rate.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use knockd::packet::{build, TCP_SYN};

use super::netns::Netns;

/// What a flood did.
#[derive(Clone, Copy, Debug)]
pub struct Flood {
    pub sent: u64,
    pub elapsed: Duration,
}

impl Flood {
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// What to send.
#[derive(Clone, Debug)]
pub struct FloodSpec {
    pub dst: Ipv4Addr,
    /// Destination ports, taken in turn.
    pub ports: Vec<u16>,
    /// Packets per second; `None` for as fast as the socket takes them.
    pub rate: Option<u64>,
    pub max_packets: u64,
    pub max_time: Duration,
}

/// Spoofed sources walk 100.64.0.0/10 (shared address space: never a real peer here), so each
/// packet seems to come from a new host until 4M packets have gone.
fn source(i: u64) -> Ipv4Addr {
    let n = (i % (1 << 22)) as u32;
    Ipv4Addr::from(0x6440_0000u32 | n)
}

/// Floods from namespace `ns` until the spec's bounds or `stop`.
pub fn syn_flood(ns: &Netns, spec: FloodSpec, stop: Arc<AtomicBool>) -> Flood {
    ns.within(move || {
        let mut sender = RawSender::open(spec.dst);
        let start = Instant::now();
        let mut sent = 0u64;
        let mut pkts: Vec<Vec<u8>> = (0..BATCH)
            .map(|_| {
                build::tcp(
                    source(0).into(),
                    spec.dst.into(),
                    40000,
                    spec.ports[0],
                    TCP_SYN,
                    1,
                )
            })
            .collect();
        while sent < spec.max_packets && start.elapsed() < spec.max_time && !stop.load(Ordering::Relaxed) {
            let mut n = (BATCH as u64).min(spec.max_packets - sent);
            if let Some(rate) = spec.rate {
                let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
                if sent >= due {
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                }
                n = n.min(due - sent);
            }
            for (j, p) in pkts[..n as usize].iter_mut().enumerate() {
                let k = sent + j as u64;
                let dport = spec.ports[(k % spec.ports.len() as u64) as usize];
                rewrite(
                    p,
                    source(k),
                    spec.dst,
                    (k % 28000) as u16 + 32768,
                    dport,
                    k as u32,
                );
            }
            sent += sender.send(pkts[..n as usize].iter().map(Vec::as_slice));
        }
        Flood {
            sent,
            elapsed: start.elapsed(),
        }
    })
}

/// Packets sent at most per sendmmsg(2).
pub const BATCH: usize = 64;

/// A raw IPv4 socket (the packets carry their own IP header, spoofed source and all) that sends
/// a batch of packets with one sendmmsg(2), so the sender is never what limits a flood. Open it
/// on a thread inside the sending namespace.
pub struct RawSender {
    fd: libc::c_int,
    to: libc::sockaddr_in,
    iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

impl RawSender {
    pub fn open(dst: Ipv4Addr) -> RawSender {
        // SAFETY: a raw IPv4 socket (IPPROTO_RAW implies IP_HDRINCL); closed on drop.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        let sndbuf: libc::c_int = 4 << 20;
        // SAFETY: setsockopt with a c_int on our socket.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                &sndbuf as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        // SAFETY: all-zero is a valid sockaddr_in, iovec and mmsghdr.
        let mut to: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        to.sin_family = libc::AF_INET as libc::sa_family_t;
        to.sin_addr.s_addr = u32::from(dst).to_be();
        RawSender {
            fd,
            to,
            iov: vec![unsafe { std::mem::zeroed() }; BATCH],
            msgs: vec![unsafe { std::mem::zeroed() }; BATCH],
        }
    }

    /// Sends up to [`BATCH`] whole IPv4 packets; answers how many went. When the queue is full
    /// none go, and the receiver gets a moment before the caller tries again.
    pub fn send<'a>(&mut self, packets: impl IntoIterator<Item = &'a [u8]>) -> u64 {
        let mut n = 0;
        for p in packets.into_iter().take(BATCH) {
            self.iov[n] = libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            };
            let h = &mut self.msgs[n].msg_hdr;
            h.msg_name = &mut self.to as *mut libc::sockaddr_in as *mut libc::c_void;
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_iov = &mut self.iov[n];
            h.msg_iovlen = 1;
            n += 1;
        }
        if n == 0 {
            return 0;
        }
        // SAFETY: `n` initialised message headers pointing at buffers the caller keeps alive for
        // this call; the kernel only reads them.
        let done = unsafe { libc::sendmmsg(self.fd, self.msgs.as_mut_ptr(), n as libc::c_uint, 0) };
        if done > 0 {
            done as u64
        } else {
            std::thread::sleep(Duration::from_micros(50));
            0
        }
    }
}

impl Drop for RawSender {
    fn drop(&mut self) {
        // SAFETY: closing the socket we opened.
        unsafe { libc::close(self.fd) };
    }
}

/// Rewrites a 40-byte IPv4+TCP SYN in place with new addresses, ports and sequence number, and
/// fixes both checksums.
fn rewrite(p: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, seq: u32) {
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p[10..12].copy_from_slice(&[0, 0]);
    let h = build::checksum(&p[..20]);
    p[10..12].copy_from_slice(&h.to_be_bytes());
    let t = &mut p[20..40];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[16..18].copy_from_slice(&[0, 0]);
    // Pseudo-header (source, destination, zero, protocol, TCP length), then the header.
    let mut sum = [0u8; 32];
    sum[0..4].copy_from_slice(&src.octets());
    sum[4..8].copy_from_slice(&dst.octets());
    sum[9] = 6;
    sum[10..12].copy_from_slice(&20u16.to_be_bytes());
    sum[12..32].copy_from_slice(&p[20..40]);
    let c = build::checksum(&sum);
    p[36..38].copy_from_slice(&c.to_be_bytes());
}

/// Lets spoofed sources in: reverse-path filtering off in the PBX namespace.
pub fn allow_spoofed(pbx: &Netns) {
    let out = pbx.exec("sysctl", &["-a", "-N"]);
    let names = String::from_utf8_lossy(&out.stdout);
    for name in names
        .lines()
        .filter(|n| n.ends_with(".rp_filter") && n.starts_with("net.ipv4.conf."))
    {
        pbx.exec("sysctl", &["-qw", &format!("{name}=0")]);
    }
}

/// Resident and peak memory of a process, in KiB.
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let get = |key: &str| {
        s.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (get("VmRSS:"), get("VmHWM:"))
}

/// CPU time (user + system) a process has used.
pub fn cpu_time(pid: u32) -> Duration {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}
