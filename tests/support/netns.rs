//! Network namespaces for tests: a `pbx` host and road hosts joined by veth pairs, torn down on drop.
//!
//! Addresses follow DESIGN.md: the PBX is 198.51.100.1 (2001:db8:100::1), road host `i` (from 1) is
//! 203.0.113.(10·i) (2001:db8:113::(10·i)). Each road host has its own veth into the pbx namespace,
//! so the PBX tells them apart by source address.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Runs a command and panics with its output if it fails: test setup must not fail silently.
pub fn run(cmd: &str, args: &[&str]) -> Output {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd} {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// One network namespace, deleted (with everything in it) on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(role: &str) -> Netns {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("pk{}-{}-{}", std::process::id(), n, role);
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// A command prepared to run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `program args` in the namespace; panics on failure.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", self.name.as_str(), program];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Runs `f` on a thread that has entered this namespace. Sockets made there stay in it, so a
    /// test can hold sockets of several namespaces at once.
    pub fn within<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            // SAFETY: setns on a valid namespace fd only changes this thread's namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("thread in namespace panicked")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes left in the namespace would keep it alive; kill them first.
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &self.name]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    // SAFETY: plain kill(2) on a pid that lives in our test namespace.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// A road host: its namespace and addresses.
pub struct Road {
    pub ns: Netns,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}

/// The PBX namespace and road hosts wired to it.
pub struct Topology {
    pub pbx: Netns,
    pub pbx_v4: Ipv4Addr,
    pub pbx_v6: Ipv6Addr,
    pub roads: Vec<Road>,
}

impl Topology {
    /// A pbx namespace and `roads` road namespaces, each joined to the pbx by its own veth pair.
    pub fn new(roads: usize) -> Topology {
        let pbx = Netns::new("pbx");
        let pbx_v4 = Ipv4Addr::new(198, 51, 100, 1);
        let pbx_v6: Ipv6Addr = "2001:db8:100::1".parse().unwrap();
        if roads == 0 {
            pbx.ip(&["addr", "add", "198.51.100.1/32", "dev", "lo"]);
            pbx.ip(&["-6", "addr", "add", "2001:db8:100::1/128", "dev", "lo"]);
        }
        let mut list = Vec::new();
        for i in 1..=roads {
            let ns = Netns::new(&format!("road{i}"));
            let v4 = Ipv4Addr::new(203, 0, 113, (10 * i) as u8);
            let v6: Ipv6Addr = format!("2001:db8:113::{}", 10 * i).parse().unwrap();
            let (a, b) = (format!("pkr{i}"), format!("pkp{i}"));
            // Create the pair inside the road namespace, then move one end into the pbx.
            ns.ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
            ns.ip(&["link", "set", &b, "netns", &pbx.name]);
            ns.ip(&["link", "set", &a, "up"]);
            pbx.ip(&["link", "set", &b, "up"]);
            // The PBX's addresses sit on every link to a road host: IPv6 neighbour discovery
            // answers only for addresses on the asking link (and this kernel has no dummy links).
            pbx.ip(&["addr", "add", "198.51.100.1/32", "dev", &b]);
            pbx.ip(&["-6", "addr", "add", "2001:db8:100::1/128", "dev", &b, "nodad"]);
            ns.ip(&["addr", "add", &format!("{v4}/32"), "dev", &a]);
            ns.ip(&["-6", "addr", "add", &format!("{v6}/128"), "dev", &a, "nodad"]);
            ns.ip(&["route", "add", "198.51.100.1/32", "dev", &a]);
            ns.ip(&["-6", "route", "add", "2001:db8:100::1/128", "dev", &a]);
            pbx.ip(&["route", "add", &format!("{v4}/32"), "dev", &b]);
            pbx.ip(&["-6", "route", "add", &format!("{v6}/128"), "dev", &b]);
            list.push(Road { ns, v4, v6 });
        }
        Topology {
            pbx,
            pbx_v4,
            pbx_v6,
            roads: list,
        }
    }

    pub fn road(&self, i: usize) -> &Road {
        &self.roads[i - 1]
    }

    pub fn pbx_addr(&self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(self.pbx_v6)
        } else {
            IpAddr::V4(self.pbx_v4)
        }
    }
}

/// Binds a port a check just released. Another test thread that spawns a process at that moment
/// holds a copy of every descriptor until its child execs, so for a few milliseconds the port can
/// still be taken: try again for up to two seconds before calling it a failure.
fn bind_again<S>(bind: impl Fn() -> std::io::Result<S>, what: &str) -> S {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        match bind() {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            r => return r.unwrap_or_else(|e| panic!("{what}: {e}")),
        }
    }
}

/// A UDP receiver bound in a namespace; `received()` drains what has arrived.
pub struct UdpSink {
    sock: UdpSocket,
}

impl UdpSink {
    pub fn bind(ns: &Netns, addr: SocketAddr) -> UdpSink {
        let sock = ns.within(move || bind_again(|| UdpSocket::bind(addr), "bind udp sink"));
        sock.set_nonblocking(true).unwrap();
        UdpSink { sock }
    }

    /// Datagrams that arrived so far, with their sources.
    pub fn received(&self) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = self.sock.recv_from(&mut buf) {
            out.push((from, buf[..n].to_vec()));
        }
        out
    }
}

/// A UDP socket in a namespace, for sending.
pub fn udp_socket(ns: &Netns, local: SocketAddr) -> UdpSocket {
    ns.within(move || UdpSocket::bind(local).expect("bind udp sender"))
}

/// Sends one datagram from `from` (in namespace `ns`) to `to` and says whether `sink` received it
/// within `wait`.
pub fn udp_reaches(ns: &Netns, from: IpAddr, to: SocketAddr, sink: &UdpSink, wait: Duration) -> bool {
    sink.received();
    let sock = udp_socket(ns, SocketAddr::new(from, 0));
    let token: [u8; 8] = rand_token();
    sock.send_to(&token, to).expect("send udp");
    let deadline = std::time::Instant::now() + wait;
    while std::time::Instant::now() < deadline {
        if sink.received().iter().any(|(_, d)| d[..] == token[..]) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// A TCP listener in a namespace that accepts and answers "ok" on a thread of its own.
pub fn tcp_server(ns: &Netns, addr: SocketAddr) -> TcpListener {
    let listener = ns.within(move || bind_again(|| TcpListener::bind(addr), "bind tcp"));
    let l2 = listener.try_clone().unwrap();
    std::thread::spawn(move || {
        for mut s in l2.incoming().flatten() {
            let _ = s.write_all(b"ok");
        }
    });
    listener
}

/// Whether a TCP connection from namespace `ns` to `to` completes and reads the server's "ok".
pub fn tcp_reaches(ns: &Netns, to: SocketAddr, wait: Duration) -> bool {
    ns.within(move || match TcpStream::connect_timeout(&to, wait) {
        Ok(mut s) => {
            s.set_read_timeout(Some(wait)).unwrap();
            let mut buf = [0u8; 2];
            s.read_exact(&mut buf).is_ok() && &buf == b"ok"
        }
        Err(_) => false,
    })
}

fn rand_token() -> [u8; 8] {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        ^ (COUNTER.fetch_add(1, Ordering::SeqCst) as u64) << 48;
    n.to_le_bytes()
}
