//! Several PBX nodes sharing one PostgreSQL store: each node its own network namespace, passknockd
//! and `inet passknock` table (Asterisk where a test asks for it), every road host wired to every
//! node.
//!
//! Node `i` (from 1, named a, b, c) is 198.51.100.i (2001:db8:100::i); road host `j` keeps its
//! address 203.0.113.(10·j) on a veth of its own into each node, so each node tells road hosts
//! apart by source address as the single PBX does. The nodes reach the store over its Unix socket
//! directory, which every namespace sees. Grants open the DISA tests' probe port; "may road `j`
//! reach node `i`" is a datagram to that port.
//!
//! ```ignore
//! let c = Cluster::start(ClusterConfig { asterisk: vec![0], ..ClusterConfig::default() });
//! c.node(0).call(c.road(1), &Call::to("3472").dtmf("…#"));
//! assert!(eventually(WAIT, || c.reaches(1, 1)));
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::asterisk::{self, Asterisk, AsteriskConfig};
use super::chroot::{self, TestDir};
use super::daemon::{write_secret, Daemon};
use super::disa_daemon::{self, PROBE};
use super::netns::{self, Netns, Road};
use super::pg::Pg;
use super::sipp::{self, Call, Hangup, Peer, Registration};

/// Node names, in order: what each node's `[daemon] node` says.
pub const NAMES: [&str; 3] = ["a", "b", "c"];
/// The SPA profile's port on every node.
pub const SPA_PORT: u16 = 62201;
/// The static knock profile's sequence on every node.
pub const STATIC: [&str; 3] = ["tcp/7001", "udp/7002", "tcp/7003"];
/// The nft set a grant of the probe service fills.
pub const ALLOW_SET: &str = "allow_probe_v4";

/// What a test wants from its cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// How many nodes (2 or 3).
    pub nodes: usize,
    /// Road hosts (road 3 is the trunk in the Asterisk config).
    pub roads: usize,
    /// Which nodes (0 = a) run an Asterisk of their own; their daemon logs in to its AMI.
    pub asterisk: Vec<usize>,
    /// More `[disa]` lines for every node.
    pub disa: String,
    /// More `[ami]` lines for the nodes that run Asterisk.
    pub ami: String,
    /// `[daemon] reconcile-interval`: benches set it long, so that no background reconcile runs
    /// into what they measure.
    pub reconcile: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            nodes: 3,
            roads: 2,
            asterisk: Vec::new(),
            disa: "lockout-failures = 4".into(),
            ami: String::new(),
            reconcile: "1s".into(),
        }
    }
}

/// One PBX node. Fields drop in order: the daemon, Asterisk, the namespace, the directory.
pub struct Node {
    pub name: &'static str,
    pub daemon: Option<Daemon>,
    pub asterisk: Option<Asterisk>,
    pub ns: Netns,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
    pub dir: TestDir,
}

impl Node {
    /// The node's passknockd; panics while it is down.
    pub fn d(&self) -> &Daemon {
        self.daemon.as_ref().expect("the node's daemon is running")
    }

    pub fn d_mut(&mut self) -> &mut Daemon {
        self.daemon.as_mut().expect("the node's daemon is running")
    }

    /// Where passknockd keeps its config, keys and log (on the host).
    pub fn daemon_dir(&self) -> PathBuf {
        chroot::on_host(&self.dir.inside.join("daemon"))
    }

    /// Places `call` from `road` to this node's Asterisk; panics (with SIPp's and Asterisk's
    /// logs) unless it is answered and ends cleanly.
    pub fn call(&self, road: &Road, call: &Call) -> Hangup {
        match sipp::call(&self.dir.inside, &road.into(), IpAddr::V4(self.v4), call) {
            Ok((hangup, _)) => hangup,
            Err(e) => panic!(
                "call {} at node {}: {e}\n{}",
                call.exten,
                self.name,
                self.asterisk_log()
            ),
        }
    }

    /// Registers `endpoint` from `road` at this node's Asterisk with `password`.
    pub fn register_with(&self, road: &Road, endpoint: &str, password: &str) -> Registration {
        sipp::register(
            &self.dir.inside,
            &Peer::from(road),
            IpAddr::V4(self.v4),
            endpoint,
            password,
            300,
        )
        .map(|(r, _)| r)
        .unwrap_or_else(|e| panic!("register {endpoint} at node {}: {e}", self.name))
    }

    /// The live grants this node lists.
    pub fn grants(&self) -> Vec<serde_json::Value> {
        disa_daemon::grants(self.d())
    }

    /// The addresses in one of this node's nft sets (`allow_probe_v4`, `ban_v4`).
    pub fn set_elements(&self, set: &str) -> Vec<String> {
        elements(&self.d().nft_set(set))
    }

    /// Whether `addr` is an element of this node's nft set `set`.
    pub fn in_set(&self, set: &str, addr: &str) -> bool {
        self.set_elements(set).iter().any(|e| e == addr)
    }

    /// The tail of Asterisk's log, or a note that this node runs none.
    pub fn asterisk_log(&self) -> String {
        self.asterisk
            .as_ref()
            .map(|a| a.log_tail(30))
            .unwrap_or_else(|| "(no Asterisk on this node)".into())
    }

    /// A line of the node's state for failure messages: its daemon's log.
    pub fn log(&self) -> String {
        match &self.daemon {
            Some(d) => format!("--- node {} ---\n{}", self.name, d.log_text()),
            None => format!("--- node {}: daemon not running ---", self.name),
        }
    }
}

/// A running cluster: its nodes, road hosts and store. Fields drop in order: the nodes (daemons
/// before the store they write to), the road hosts, the store.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub roads: Vec<Road>,
    pub pg: Pg,
    /// The database every node names.
    pub db: String,
    /// The config every node was started with, before its own paths and name went in.
    pub config: ClusterConfig,
    /// The DISA key and SPA secret every node holds a copy of, as an admin copies them.
    pub disa_key: String,
    pub spa_secret: knockd::KnockSecret,
}

impl Cluster {
    /// Makes the store, the namespaces and the Asterisks, then starts every node's daemon at once;
    /// returns when each answers on its control socket.
    pub fn start(config: ClusterConfig) -> Cluster {
        assert!((1..=NAMES.len()).contains(&config.nodes));
        chroot::root();
        let pg = Pg::start();
        let db = "passknock".to_string();
        pg.create_db(&db);
        let label = test_label();
        let mut nodes: Vec<Node> = (0..config.nodes)
            .map(|i| {
                let ns = Netns::new(&format!("node{}", NAMES[i]));
                let v4 = Ipv4Addr::new(198, 51, 100, i as u8 + 1);
                let v6: Ipv6Addr = format!("2001:db8:100::{}", i + 1).parse().unwrap();
                if config.roads == 0 {
                    ns.ip(&["addr", "add", &format!("{v4}/32"), "dev", "lo"]);
                    ns.ip(&["-6", "addr", "add", &format!("{v6}/128"), "dev", "lo"]);
                }
                let dir = TestDir::new(&format!("{label}-{}", NAMES[i]));
                dir.subdir("daemon");
                Node {
                    name: NAMES[i],
                    daemon: None,
                    asterisk: None,
                    ns,
                    v4,
                    v6,
                    dir,
                }
            })
            .collect();
        let roads = (1..=config.roads).map(|j| wire_road(j, &nodes)).collect();
        for &i in &config.asterisk {
            let n = &mut nodes[i];
            n.asterisk = Some(Asterisk::start(
                &n.ns.name,
                &n.dir,
                n.v4,
                n.v6,
                &AsteriskConfig::default(),
            ));
        }
        let mut key = [0u8; 32];
        getrandom(&mut key);
        let mut c = Cluster {
            nodes,
            roads,
            pg,
            db,
            config,
            disa_key: key.iter().map(|b| format!("{b:02x}")).collect(),
            spa_secret: knockd::KnockSecret::generate().unwrap(),
        };
        let texts: Vec<String> = (0..c.nodes.len()).map(|i| c.node_config(i)).collect();
        std::thread::scope(|s| {
            for (node, text) in c.nodes.iter_mut().zip(&texts) {
                s.spawn(move || {
                    let dir = node.daemon_dir();
                    node.daemon = Some(Daemon::start(&node.ns, &dir, text));
                });
            }
        });
        c
    }

    /// The store URL every node names (no password: the cluster trusts its socket).
    pub fn url(&self) -> String {
        self.pg.url(&self.db)
    }

    /// Node `i` (0 = a).
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    pub fn node_mut(&mut self, i: usize) -> &mut Node {
        &mut self.nodes[i]
    }

    /// Road host `j` (from 1).
    pub fn road(&self, j: usize) -> &Road {
        &self.roads[j - 1]
    }

    /// Node `i`'s config: the DISA tests' config (probe service, DISA on) with the shared store,
    /// its name, and an SPA and a static knock profile; AMI where it runs Asterisk. Writes the
    /// node's copies of the DISA key and the SPA secret.
    pub fn node_config(&self, i: usize) -> String {
        let n = &self.nodes[i];
        let dir = n.daemon_dir();
        write_secret(&dir.join("disa.key"), &format!("{}\n", self.disa_key));
        write_secret(
            &dir.join("office.secret"),
            &format!("{}\n", self.spa_secret.to_hex()),
        );
        let ami = if n.asterisk.is_some() {
            write_secret(&dir.join("ami.secret"), &format!("{}\n", asterisk::AMI_SECRET));
            format!(
                "\n[ami]\nenabled = true\nusername = \"{}\"\nsecret-file = \"{}/ami.secret\"\n{}\n",
                asterisk::AMI_USER,
                dir.display(),
                self.config.ami
            )
        } else {
            String::new()
        };
        let knock = format!(
            r#"
[knock]

[knock.profiles.office]
mode = "spa"
secret-file = "{dir}/office.secret"
port = {SPA_PORT}
services = ["probe"]
ttl = "30m"

[knock.profiles.laptop]
mode = "static"
ports = [{ports}]
timeout = "2s"
services = ["probe"]
ttl = "1h"
"#,
            dir = dir.display(),
            ports = STATIC.map(|p| format!("\"{p}\"")).join(", "),
        );
        let extra = format!("{}\n{knock}{ami}", self.config.disa);
        with_store(&disa_daemon::config(&dir, &extra), &dir, &self.url(), n.name).replace(
            "reconcile-interval = \"1s\"",
            &format!("reconcile-interval = \"{}\"", self.config.reconcile),
        )
    }

    /// Whether a datagram from road `j` reaches node `i`'s probe port: what a grant opens.
    pub fn reaches(&self, road: usize, node: usize) -> bool {
        let r = self.road(road);
        let n = self.node(node);
        let to = SocketAddr::new(IpAddr::V4(n.v4), PROBE);
        let sink = netns::UdpSink::bind(&n.ns, to);
        netns::udp_reaches(&r.ns, IpAddr::V4(r.v4), to, &sink, Duration::from_millis(500))
    }

    /// Every node's daemon log, for failure messages.
    pub fn logs(&self) -> String {
        let mut s: Vec<String> = self.nodes.iter().map(Node::log).collect();
        s.push(format!("--- PostgreSQL ---\n{}", tail(&self.pg.log(), 40)));
        s.join("\n")
    }
}

/// `config` (a test config naming a SQLite file in `dir`) with the shared store and the node's
/// name in its place.
pub fn with_store(config: &str, dir: &std::path::Path, url: &str, node: &str) -> String {
    let file = format!("store = \"{}/store.db\"", dir.display());
    assert!(config.contains(&file), "the test config names {file}");
    config.replace(&file, &format!("store = \"{url}\"\nnode = \"{node}\""))
}

/// The addresses listed in `nft list set` output: every element before its `timeout`/`expires`.
pub fn elements(listing: &str) -> Vec<String> {
    let Some(start) = listing.find("elements = {") else {
        return Vec::new();
    };
    let body = &listing[start + "elements = {".len()..];
    let body = &body[..body.find('}').unwrap_or(body.len())];
    body.split(',')
        .filter_map(|e| e.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Road host `j`, wired to every node by a veth pair of its own.
fn wire_road(j: usize, nodes: &[Node]) -> Road {
    let ns = Netns::new(&format!("road{j}"));
    let v4 = Ipv4Addr::new(203, 0, 113, (10 * j) as u8);
    let v6: Ipv6Addr = format!("2001:db8:113::{}", 10 * j).parse().unwrap();
    for (i, n) in nodes.iter().enumerate() {
        let (a, b) = (format!("pkr{j}n{i}"), format!("pkn{i}r{j}"));
        ns.ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
        ns.ip(&["link", "set", &b, "netns", &n.ns.name]);
        ns.ip(&["link", "set", &a, "up"]);
        n.ns.ip(&["link", "set", &b, "up"]);
        // Addresses on every link, as netns.rs does: neighbour discovery answers only for
        // addresses on the asking link.
        n.ns.ip(&["addr", "add", &format!("{}/32", n.v4), "dev", &b]);
        n.ns.ip(&["-6", "addr", "add", &format!("{}/128", n.v6), "dev", &b, "nodad"]);
        ns.ip(&["addr", "add", &format!("{v4}/32"), "dev", &a]);
        ns.ip(&["-6", "addr", "add", &format!("{v6}/128"), "dev", &a, "nodad"]);
        ns.ip(&[
            "route",
            "add",
            &format!("{}/32", n.v4),
            "dev",
            &a,
            "src",
            &v4.to_string(),
        ]);
        ns.ip(&["-6", "route", "add", &format!("{}/128", n.v6), "dev", &a]);
        n.ns.ip(&["route", "add", &format!("{v4}/32"), "dev", &b]);
        n.ns.ip(&["-6", "route", "add", &format!("{v6}/128"), "dev", &b]);
    }
    Road { ns, v4, v6 }
}

fn getrandom(buf: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .expect("read /dev/urandom");
}

/// The running test's name (libtest names each test's thread after it), for directory names.
fn test_label() -> String {
    let name = std::thread::current().name().unwrap_or("cluster").to_string();
    let last = name.rsplit("::").next().unwrap_or("cluster");
    last.chars().take(20).collect()
}
