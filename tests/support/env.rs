//! One end-to-end test environment: fresh namespaces, a booted Asterisk in the pbx namespace, and
//! the helpers tests drive it with. Everything is torn down on drop, also when the test panics.
//!
//! ```ignore
//! let env = Env::new();
//! let mut ami = env.ami();
//! assert_eq!(env.register(1, "701"), Registration::Registered);
//! ami.expect_event("ContactStatus", WAIT, |e| e.is("ContactStatus"));
//! ```

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::ami::{Ami, Message};
use super::asterisk::{self, Asterisk, AsteriskConfig};
use super::chroot::{self, TestDir};
use super::daemon::Daemon;
use super::fastagi::FastAgiStub;
use super::netns::{self, Netns, Road, Topology};
use super::sipp::{self, Call, Hangup, Peer, Registration};

/// Default bound for waiting on something a test caused.
pub const WAIT: Duration = Duration::from_secs(10);

/// What a test wants from its environment.
#[derive(Clone, Debug)]
pub struct EnvConfig {
    /// Road hosts (203.0.113.10, .20, …), each on its own veth into the pbx namespace.
    pub roads: usize,
    pub asterisk: AsteriskConfig,
}

impl Default for EnvConfig {
    fn default() -> Self {
        EnvConfig {
            roads: 2,
            asterisk: AsteriskConfig::default(),
        }
    }
}

/// A running test environment. Fields drop in order: the daemon, Asterisk, the namespaces (with
/// any process left in them), then the per-test directory.
pub struct Env {
    /// The daemon hook: a test that needs passknockd starts it in the pbx namespace, next to
    /// Asterisk, and parks it here so it stops before Asterisk and the namespaces go:
    /// `env.daemon = Some(Daemon::start(env.pbx(), &env.daemon_dir(), &config))`.
    /// Tests of the harness alone leave it `None`.
    pub daemon: Option<Daemon>,
    pub asterisk: Asterisk,
    pub topo: Topology,
    pub dir: TestDir,
    /// How long the start took (topology, Asterisk fully booted).
    pub started_in: Duration,
}

impl Env {
    /// Two road hosts and the stock test PBX.
    pub fn new() -> Env {
        Env::with(EnvConfig::default())
    }

    pub fn with(config: EnvConfig) -> Env {
        // Builds the chroot on first use, before the clock starts.
        chroot::root();
        let start = Instant::now();
        let dir = TestDir::new(&test_label());
        let topo = Topology::new(config.roads);
        let asterisk = Asterisk::start(&topo.pbx.name, &dir, topo.pbx_v4, topo.pbx_v6, &config.asterisk);
        Env {
            daemon: None,
            asterisk,
            topo,
            dir,
            started_in: start.elapsed(),
        }
    }

    /// The pbx namespace: Asterisk runs here, and so will passknockd and its nftables table.
    pub fn pbx(&self) -> &Netns {
        &self.topo.pbx
    }

    /// A fresh directory for passknockd's config, store and log, removed with the environment.
    pub fn daemon_dir(&self) -> std::path::PathBuf {
        chroot::on_host(&chroot::subdir(&self.dir.inside, "daemon"))
    }

    /// Starts passknockd next to Asterisk with AMI on, logging in as the daemon's AMI user;
    /// `sections` is more TOML before `[ami]`, `ami_keys` more keys under it. Does not wait for
    /// the login.
    pub fn start_ami_daemon(&mut self, sections: &str, ami_keys: &str) -> &Daemon {
        self.start_ami_daemon_edited(sections, ami_keys, |c| c)
    }

    /// [`Env::start_ami_daemon`] with the whole config text passed through `edit` first: e.g. to
    /// take the SIP service out of the test config, so SIP is reachable without a grant.
    pub fn start_ami_daemon_edited(
        &mut self,
        sections: &str,
        ami_keys: &str,
        edit: impl FnOnce(String) -> String,
    ) -> &Daemon {
        let dir = self.daemon_dir();
        let secret = dir.join("ami.secret");
        super::daemon::write_secret(&secret, &format!("{}\n", asterisk::AMI_SECRET));
        let extra = format!(
            "{sections}\n[ami]\nenabled = true\nusername = \"{}\"\nsecret-file = \"{}\"\n{ami_keys}\n",
            asterisk::AMI_USER,
            secret.display()
        );
        // The per-test directory is deep in the chroot: the socket goes where its path fits.
        let config = super::daemon::test_config(&dir, &extra).replace(
            &format!("{}/control.sock", dir.display()),
            &super::daemon::short_socket().display().to_string(),
        );
        self.daemon = Some(Daemon::start(self.pbx(), &dir, &edit(config)));
        self.daemon.as_ref().unwrap()
    }

    /// Road host `i` (from 1).
    pub fn road(&self, i: usize) -> &Road {
        self.topo.road(i)
    }

    /// AMI, 127.0.0.1:5038 in the pbx namespace.
    pub fn ami_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], asterisk::AMI_PORT))
    }

    /// An AMI connection logged in as the daemon's user (`read = system,security,call`).
    pub fn ami(&self) -> Ami {
        Ami::login_as(
            self.pbx(),
            self.ami_addr(),
            asterisk::AMI_USER,
            asterisk::AMI_SECRET,
        )
    }

    /// An AMI connection logged in as the tests' all-powerful user (Originate, Command).
    pub fn ami_admin(&self) -> Ami {
        Ami::login_as(
            self.pbx(),
            self.ami_addr(),
            asterisk::ADMIN_USER,
            asterisk::ADMIN_SECRET,
        )
    }

    /// An Asterisk CLI command's output.
    pub fn cli(&self, command: &str) -> String {
        self.asterisk.cli(command)
    }

    /// Registers `endpoint` from road `i` with its right password.
    pub fn register(&self, road: usize, endpoint: &str) -> Registration {
        self.register_with(road, endpoint, asterisk::password(endpoint))
    }

    /// Registers `endpoint` from road `i` with `password` (right or wrong).
    pub fn register_with(&self, road: usize, endpoint: &str, password: &str) -> Registration {
        self.register_over(road, endpoint, password, false)
    }

    /// Registers `endpoint` from road `i` over IPv6 (`v6`) or IPv4.
    pub fn register_over(&self, road: usize, endpoint: &str, password: &str, v6: bool) -> Registration {
        let pbx = self.topo.pbx_addr(v6);
        match sipp::register(
            &self.dir.inside,
            &self.road(road).into(),
            pbx,
            endpoint,
            password,
            300,
        ) {
            Ok((outcome, _)) => outcome,
            Err(e) => panic!(
                "register {endpoint} from road {road}: {e}\n{}",
                self.asterisk.log_tail(30)
            ),
        }
    }

    /// Places `call` from road `i`; panics (with SIPp's and Asterisk's logs) unless it is answered
    /// and ends cleanly.
    pub fn call(&self, road: usize, call: &Call) -> Hangup {
        let pbx = self.topo.pbx_addr(call.v6);
        match sipp::call(&self.dir.inside, &self.road(road).into(), pbx, call) {
            Ok((hangup, _)) => hangup,
            Err(e) => panic!(
                "call {} from road {road}: {e}\n{}",
                call.exten,
                self.asterisk.log_tail(30)
            ),
        }
    }

    /// Like [`Env::call`], on a thread, for tests that act while the call is up.
    pub fn call_in_background(
        &self,
        road: usize,
        call: Call,
    ) -> std::thread::JoinHandle<Result<Hangup, String>> {
        let pbx = self.topo.pbx_addr(call.v6);
        let peer = Peer::from(self.road(road));
        let dir = self.dir.inside.clone();
        std::thread::spawn(move || sipp::call(&dir, &peer, pbx, &call).map(|(h, _)| h))
    }

    /// A softphone on road `i` that keeps trying to register as `endpoint` with `password` (see
    /// `sipp::keep_registering`), on a thread; gives up after `timeout`.
    pub fn phone_in_background(
        &self,
        road: usize,
        endpoint: &str,
        password: &str,
        timeout: Duration,
    ) -> std::thread::JoinHandle<Result<Option<Registration>, String>> {
        let pbx = self.topo.pbx_addr(false);
        let peer = Peer::from(self.road(road));
        let dir = self.dir.inside.clone();
        let (endpoint, password) = (endpoint.to_string(), password.to_string());
        std::thread::spawn(move || sipp::keep_registering(&dir, &peer, pbx, &endpoint, &password, timeout))
    }

    /// Originates a `Local/<exten>@<context>` channel whose other half runs `SendDTMF(<digits>)`:
    /// the dialplan at `exten` gets the digits without any SIP. `w` in `digits` waits 0.5 s.
    pub fn originate_local_dtmf(&self, exten: &str, context: &str, digits: &str) -> Message {
        let mut ami = self.ami_admin();
        let channel = format!("Local/{exten}@{context}");
        let resp = ami
            .action(
                "Originate",
                &[
                    ("Channel", &channel),
                    ("Application", "SendDTMF"),
                    ("Data", digits),
                    ("Async", "true"),
                    ("Timeout", "10000"),
                    ("CallerID", "\"passknock test\" <0000>"),
                ],
            )
            .unwrap_or_else(|e| panic!("Originate {channel}: {e}"));
        assert!(
            resp.has("Response", "Success"),
            "Originate {channel} refused: {resp}\n{}",
            self.asterisk.log_tail(20)
        );
        resp
    }

    /// Asterisk's whole `messages` log so far.
    pub fn asterisk_log(&self) -> String {
        self.asterisk.log_tail(usize::MAX)
    }

    /// A FastAGI stub listening where passknockd would (127.0.0.1:4573 in the pbx namespace).
    pub fn fastagi_stub(&self) -> FastAgiStub {
        FastAgiStub::bind(
            self.pbx(),
            SocketAddr::from(([127, 0, 0, 1], asterisk::FASTAGI_PORT)),
        )
    }

    /// Whether SIP from road `i` reaches Asterisk on the PBX address: an OPTIONS request gets any
    /// answer within `wait`. Unlike [`Env::udp_reaches`] this works on Asterisk's own port, so
    /// firewall tests can ask "may this phone talk to the PBX now?".
    pub fn sip_reaches(&self, road: usize, v6: bool, wait: Duration) -> bool {
        let r = self.road(road);
        let local = if v6 { IpAddr::V6(r.v6) } else { IpAddr::V4(r.v4) };
        let pbx = self.topo.pbx_addr(v6);
        sipp::options_reach(&self.dir.inside, &r.into(), local, pbx, wait)
            .unwrap_or_else(|e| panic!("SIP probe from road {road}: {e}"))
    }

    /// 701 on road `road` registers to the request URI `sip:<domain>` (a secret SIP domain), over
    /// IPv6 (`v6`) or IPv4: the outcome, `None` when nothing answered within `wait`.
    pub fn register_to(&self, road: usize, domain: &str, v6: bool, wait: Duration) -> Option<Registration> {
        sipp::register_to_domain(
            &self.dir.inside,
            &self.road(road).into(),
            self.topo.pbx_addr(v6),
            domain,
            "701",
            asterisk::password("701"),
            wait,
        )
        .unwrap_or_else(|e| panic!("REGISTER to {domain} from road {road}: {e}"))
    }

    /// Whether a UDP datagram from road `i` reaches `port` on the PBX address (a sink is bound
    /// there for the check, so the port must be free).
    pub fn udp_reaches(&self, road: usize, port: u16, v6: bool) -> bool {
        let r = self.road(road);
        let to = SocketAddr::new(self.topo.pbx_addr(v6), port);
        let from = if v6 { IpAddr::V6(r.v6) } else { IpAddr::V4(r.v4) };
        let sink = netns::UdpSink::bind(self.pbx(), to);
        netns::udp_reaches(&r.ns, from, to, &sink, Duration::from_millis(500))
    }

    /// Whether a TCP connection from road `i` reaches `port` on the PBX address (a server is bound
    /// there for the check, so the port must be free).
    pub fn tcp_reaches(&self, road: usize, port: u16, v6: bool) -> bool {
        let to = SocketAddr::new(self.topo.pbx_addr(v6), port);
        let _server = netns::tcp_server(self.pbx(), to);
        netns::tcp_reaches(&self.road(road).ns, to, Duration::from_millis(500))
    }
}

impl Default for Env {
    fn default() -> Self {
        Env::new()
    }
}

/// The running test's name (libtest names each test's thread after it), for directory names.
fn test_label() -> String {
    std::thread::current()
        .name()
        .unwrap_or("test")
        .rsplit("::")
        .next()
        .unwrap_or("test")
        .to_string()
}
