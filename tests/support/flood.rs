//! A flood of TCP SYNs from spoofed sources, sent with a raw socket from inside a test namespace
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
        // SAFETY: a raw IPv4 socket (IPPROTO_RAW implies IP_HDRINCL); closed below.
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
        let mut to: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        to.sin_family = libc::AF_INET as libc::sa_family_t;
        to.sin_addr.s_addr = u32::from(spec.dst).to_be();
        let start = Instant::now();
        let mut sent = 0u64;
        // Batches of packets go out with one sendmmsg(2) each: the sender must not be the limit.
        const BATCH: usize = 64;
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
        let mut iov: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; BATCH];
        let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
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
            for j in 0..n as usize {
                let k = sent + j as u64;
                let dport = spec.ports[(k % spec.ports.len() as u64) as usize];
                rewrite(
                    &mut pkts[j],
                    source(k),
                    spec.dst,
                    (k % 28000) as u16 + 32768,
                    dport,
                    k as u32,
                );
                iov[j] = libc::iovec {
                    iov_base: pkts[j].as_mut_ptr() as *mut libc::c_void,
                    iov_len: pkts[j].len(),
                };
                msgs[j].msg_hdr.msg_name = &mut to as *mut libc::sockaddr_in as *mut libc::c_void;
                msgs[j].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                msgs[j].msg_hdr.msg_iov = &mut iov[j];
                msgs[j].msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: `n` initialised message headers pointing at live buffers.
            let done = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as libc::c_uint, 0) };
            if done > 0 {
                sent += done as u64;
            } else {
                // The queue is full: give the receiver a moment.
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        // SAFETY: closing the socket we opened.
        unsafe { libc::close(fd) };
        Flood {
            sent,
            elapsed: start.elapsed(),
        }
    })
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
