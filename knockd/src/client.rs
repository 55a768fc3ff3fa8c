//! The laptop side: profiles from a client config file, what to send for each mode, sending it,
//! and probing whether access opened. Only portable code (std, socket2): the same client builds
//! for Linux, macOS and Windows.
//!
//! The client config file is read in `client/config.rs`.

mod addresses;
mod answer;
mod config;
pub mod keep;
mod keep_loop;

use std::fmt::Write as _;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What `--help` adds below the options: the client profile keys `--keep` and dual stack use.
const KNOCK_AFTER_HELP: &str = "\
Client profile keys for these (in the client config, [profiles.NAME]):
  ttl = \"8h\"                   the daemon profile's grant TTL; --keep knocks again after 2/3 of it
                               (default 2h, the daemon's default)
  renew = \"5h\"                 or when --keep knocks again, outright
  dual-stack = true            spa: carry this laptop's global address of the other family, so
                               one knock opens IPv4 and IPv6; the daemon's profile must say
                               dual-stack = true too, or the knock opens nothing at all
  other-host = \"2001:db8::1\"   the PBX's address of the other family, to find ours towards it
  answer-wait = \"15s\"          how long --wait-phone waits for the daemon's answer";

/// The knock client's command line, shared by `passknock knock` and `passknock-knock`.
#[derive(Debug, clap::Args)]
#[command(after_help = KNOCK_AFTER_HELP)]
pub struct KnockArgs {
    /// The PBX: a name or an address.
    pub host: String,
    /// The profile in the client config.
    #[arg(long)]
    pub profile: String,
    /// The client config [default: ~/.config/passknock/client.toml].
    #[arg(long, env = "PASSKNOCK_CLIENT_CONFIG")]
    pub client_config: Option<PathBuf>,
    /// Print what would be sent, and send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Use HOST's IPv4 address.
    #[arg(short = '4', conflicts_with = "ipv6")]
    pub ipv4: bool,
    /// Use HOST's IPv6 address.
    #[arg(short = '6')]
    pub ipv6: bool,
    /// SPA only: open this address rather than the one the packet comes from.
    #[arg(long)]
    pub address: Option<IpAddr>,
    /// Do not probe for access afterwards.
    #[arg(long)]
    pub no_probe: bool,
    /// Stay running: knock again before the grant ends (after 2/3 of the profile's `ttl`, or
    /// at its `renew`), and at once when this laptop's addresses change or the probe stops
    /// answering; back off after failures. Ctrl-C (or SIGTERM) stops; access stays open until
    /// the grant ends.
    #[arg(long, conflicts_with_all = ["dry_run", "address"])]
    pub keep: bool,
    /// SPA only: ask the daemon for one answer and wait for it: "your phone is connected" once
    /// the PBX sees the profile's phone (its `endpoint` in the daemon's config) register from
    /// the opened address, or "not yet" after the daemon's wait (access is open anyway).
    #[arg(long)]
    pub wait_phone: bool,
}

impl KnockArgs {
    pub fn request(self) -> KnockRequest {
        KnockRequest {
            host: self.host,
            profile: self.profile,
            config: self.client_config,
            dry_run: self.dry_run,
            family: if self.ipv4 {
                Some(4)
            } else if self.ipv6 {
                Some(6)
            } else {
                None
            },
            address: self.address,
            no_probe: self.no_probe,
            keep: self.keep,
            wait_phone: self.wait_phone,
        }
    }
}

/// `passknock-knock`'s command line: [`KnockArgs`] under the client's own name. It lives here, not
/// in the binary, so the manual page is generated from the very definition the binary parses.
#[derive(Debug, clap::Parser)]
#[command(
    name = "passknock-knock",
    version,
    about = "Knock on a passknock PBX with a profile from the client config, then check access opened",
    after_help = KNOCK_AFTER_HELP
)]
pub struct KnockCli {
    #[command(flatten)]
    pub knock: KnockArgs,
}

use crate::profile::ProfileKind;
use crate::spa::{self, Requested, Spa, SpaKey};
use crate::{rotating, Mode, Port, Proto};

use addresses::requested_for;
pub use addresses::{is_global, other_family_source, source_towards};
pub use answer::{answer_line, wait_answer};
pub use config::{default_config_path, ClientConfig, ClientProfile};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read the client config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("client config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("client config {path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("no profile `{name}` in {path}; it has: {known}")]
    NoProfile {
        name: String,
        path: PathBuf,
        known: String,
    },
    #[error("cannot resolve {host}: {message}")]
    Resolve { host: String, message: String },
    #[error("cannot send the knock to {to}: {source}")]
    Send {
        to: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Usage(String),
    #[error("access did not open: {0}")]
    NotOpened(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// One packet the client sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Send {
    /// A TCP SYN (a connection attempt dropped at once).
    Syn(SocketAddr),
    Datagram(SocketAddr, Vec<u8>),
}

/// What a knock sends, in order, with a pause between packets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub sends: Vec<Send>,
    pub delay: Duration,
}

/// The packets for `profile` at `now_ms` (Unix ms) towards `target`.
pub fn plan(profile: &ClientProfile, target: IpAddr, now_ms: i64, requested: Requested) -> io::Result<Plan> {
    let at = |p: Port| match p.proto {
        Proto::Tcp => Send::Syn(SocketAddr::new(target, p.port)),
        Proto::Udp => Send::Datagram(SocketAddr::new(target, p.port), Vec::new()),
    };
    let sends = match &profile.kind {
        ProfileKind::Static(s) => s.ports.iter().map(|p| at(*p)).collect(),
        ProfileKind::Rotating(r) => {
            let step = rotating::step_at(now_ms, r.step);
            rotating::sequence(&r.secret, r.range, r.length, step)
                .into_iter()
                .map(at)
                .collect()
        }
        ProfileKind::Spa(s) => {
            let key = SpaKey::derive(&s.secret);
            let spa = Spa::new(&key, (now_ms.max(0) / 1000) as u64, requested)?;
            vec![Send::Datagram(
                SocketAddr::new(target, s.port),
                spa::seal(&key, &spa).to_vec(),
            )]
        }
    };
    Ok(Plan {
        sends,
        delay: profile.delay,
    })
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, s) in self.sends.iter().enumerate() {
            if i > 0 && !self.delay.is_zero() {
                writeln!(f, "  wait {}ms", self.delay.as_millis())?;
            }
            match s {
                Send::Syn(to) => writeln!(f, "  tcp SYN  -> {to}")?,
                Send::Datagram(to, d) if d.is_empty() => writeln!(f, "  udp      -> {to} (empty datagram)")?,
                Send::Datagram(to, d) => {
                    let mut hex = String::new();
                    for b in d {
                        let _ = write!(hex, "{b:02x}");
                    }
                    writeln!(f, "  udp      -> {to} ({} bytes: {hex})", d.len())?
                }
            }
        }
        Ok(())
    }
}

/// Sends the plan's packets in order.
pub fn send(plan: &Plan) -> Result<(), ClientError> {
    send_keeping(plan).map(drop)
}

/// Sends the plan's packets in order; returns the socket the last datagram went from, where
/// an SPA answer comes back to.
fn send_keeping(plan: &Plan) -> Result<Option<UdpSocket>, ClientError> {
    let mut last = None;
    for (i, s) in plan.sends.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(plan.delay);
        }
        match s {
            Send::Syn(to) => syn(*to).map_err(|source| ClientError::Send { to: *to, source })?,
            Send::Datagram(to, d) => {
                let local: SocketAddr = if to.is_ipv4() {
                    (Ipv4Addr::UNSPECIFIED, 0).into()
                } else {
                    (Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let sock = UdpSocket::bind(local).map_err(|source| ClientError::Send { to: *to, source })?;
                sock.send_to(d, to)
                    .map_err(|source| ClientError::Send { to: *to, source })?;
                last = Some(sock);
            }
        }
    }
    Ok(last)
}

/// Sends one SYN: a non-blocking connect that is abandoned at once, as the `knock` client does.
fn syn(to: SocketAddr) -> io::Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_nonblocking(true)?;
    match sock.connect(&to.into()) {
        Ok(()) => Ok(()),
        Err(e) if in_progress(&e) => Ok(()),
        // Something answered with a reset at once: the knock was still sent.
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(()),
        Err(e) => Err(e),
    }
}

/// A non-blocking connect that has sent its SYN and is waiting for an answer.
fn in_progress(e: &io::Error) -> bool {
    #[cfg(target_os = "linux")]
    const EINPROGRESS: i32 = 115;
    #[cfg(all(unix, not(target_os = "linux")))]
    const EINPROGRESS: i32 = 36;
    #[cfg(not(unix))]
    const EINPROGRESS: i32 = 10036;
    e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(EINPROGRESS)
}

/// What a probe of a granted service's port found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// A connection was accepted.
    Open(Duration),
    /// Refused at once: nothing listens there, but the firewall let the SYN through.
    Reached(Duration),
    /// Still silent (dropped) when the wait ran out.
    Closed,
}

/// Tries to connect to `to` until it answers or `wait` passes.
pub fn probe(to: SocketAddr, wait: Duration) -> Probe {
    let start = Instant::now();
    loop {
        let left = wait.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Probe::Closed;
        }
        let t0 = Instant::now();
        match TcpStream::connect_timeout(&to, left.min(Duration::from_millis(700))) {
            Ok(_) => return Probe::Open(start.elapsed()),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Probe::Reached(start.elapsed()),
            Err(_) => {
                // Unreachable or timed out: try again, but never spin.
                let spent = t0.elapsed();
                if spent < Duration::from_millis(100) {
                    std::thread::sleep(Duration::from_millis(100) - spent);
                }
            }
        }
    }
}

/// Finds the address to knock on; `family` 4 or 6 picks one when a name has both.
pub fn resolve(host: &str, family: Option<u8>) -> Result<IpAddr, ClientError> {
    let bad = |message: String| ClientError::Resolve {
        host: host.to_string(),
        message,
    };
    let bare = host.trim().trim_start_matches('[').trim_end_matches(']');
    let candidates: Vec<IpAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => (bare, 0u16)
            .to_socket_addrs()
            .map_err(|e| bad(e.to_string()))?
            .map(|s| s.ip())
            .collect(),
    };
    candidates
        .into_iter()
        .find(|ip| match family {
            Some(4) => ip.is_ipv4(),
            Some(6) => ip.is_ipv6(),
            _ => true,
        })
        .ok_or_else(|| bad(format!("it has no IPv{} address", family.unwrap_or(4))))
}

/// What `passknock knock` was asked to do.
#[derive(Clone, Debug, Default)]
pub struct KnockRequest {
    pub host: String,
    pub profile: String,
    pub config: Option<PathBuf>,
    pub dry_run: bool,
    /// 4 or 6 to pick an address family.
    pub family: Option<u8>,
    /// SPA only: open this address instead of the one the packet comes from.
    pub address: Option<IpAddr>,
    /// Do not probe afterwards.
    pub no_probe: bool,
    /// Stay running and keep access open (`--keep`).
    pub keep: bool,
    /// Ask for the daemon's answer and wait for it (`--wait-phone`).
    pub wait_phone: bool,
}

/// Knocks, then probes; an error says why access did not open. With `keep`, stays running.
pub fn knock(req: &KnockRequest, out: &mut impl Write) -> Result<(), ClientError> {
    let path = req.config.clone().unwrap_or_else(default_config_path);
    let config = ClientConfig::load(&path)?;
    let profile = config.profile(&req.profile)?;
    let target = resolve(&req.host, req.family)?;
    let mode = profile.kind.mode();
    if req.wait_phone && mode != Mode::Spa {
        return Err(ClientError::Usage(format!(
            "--wait-phone is for spa profiles; {} is {}",
            profile.name,
            mode.name()
        )));
    }
    if req.keep {
        return keep_loop::run(req, profile, target, out);
    }
    let requested = match (req.address, mode) {
        (None, _) => requested_for(profile, target, out)?,
        (Some(a), Mode::Spa) => Requested::Address(a),
        (Some(_), m) => {
            return Err(ClientError::Usage(format!(
                "--address is for spa profiles; {} is {}",
                profile.name,
                m.name()
            )))
        }
    };
    let now = unix_ms();
    let (plan, nonce) = plan_request(profile, target, now, requested, req.wait_phone)?;
    if req.dry_run {
        writeln!(
            out,
            "would knock on {target} with profile {} ({}), sending:",
            profile.name,
            mode.name()
        )?;
        write!(out, "{plan}")?;
        match profile.probe {
            Some(p) if !req.no_probe => {
                writeln!(out, "then probe {p} for up to {}s", profile.wait.as_secs_f32())?
            }
            _ => writeln!(out, "then not probe (no probe port in the profile)")?,
        }
        return Ok(());
    }
    let socket = send_keeping(&plan)?;
    let probe_port = match profile.probe {
        Some(p) if !req.no_probe && req.address.is_none() => Some(p),
        _ => None,
    };
    match probe_port {
        None => writeln!(
            out,
            "knocked on {target} with profile {}; not verified (no probe port in the profile)",
            profile.name
        )?,
        Some(p) => {
            let line = probe_line(p, target, profile.wait)?;
            writeln!(out, "{line}")?;
        }
    }
    if let (Some(sock), Some(nonce)) = (socket, nonce) {
        writeln!(out, "waiting for the PBX to see your phone register…")?;
        let key = spa_key(profile).expect("an answer is asked for spa profiles only");
        match wait_answer(&sock, &key, &nonce, profile.answer_wait) {
            Some(a) => writeln!(out, "{}", answer_line(&a))?,
            None => writeln!(
                out,
                "no answer from the PBX within {}s (it may be older than --wait-phone, or the \
                 answer was lost); access is open anyway",
                profile.answer_wait.as_secs()
            )?,
        }
    }
    Ok(())
}

/// The time now, Unix ms.
fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The packets for `profile`, and the SPA nonce when an answer is asked for.
pub fn plan_request(
    profile: &ClientProfile,
    target: IpAddr,
    now_ms: i64,
    requested: Requested,
    answer: bool,
) -> io::Result<(Plan, Option<[u8; 16]>)> {
    let ProfileKind::Spa(s) = &profile.kind else {
        return Ok((plan(profile, target, now_ms, requested)?, None));
    };
    let key = SpaKey::derive(&s.secret);
    let spa = Spa {
        answer,
        ..Spa::new(&key, (now_ms.max(0) / 1000) as u64, requested)?
    };
    let plan = Plan {
        sends: vec![Send::Datagram(
            SocketAddr::new(target, s.port),
            spa::seal(&key, &spa).to_vec(),
        )],
        delay: profile.delay,
    };
    Ok((plan, answer.then_some(spa.nonce)))
}

fn spa_key(profile: &ClientProfile) -> Option<SpaKey> {
    match &profile.kind {
        ProfileKind::Spa(s) => Some(SpaKey::derive(&s.secret)),
        _ => None,
    }
}

/// Probes `port` on `target` for up to `wait`: the line to print, or why access did not open.
fn probe_line(port: Port, target: IpAddr, wait: Duration) -> Result<String, ClientError> {
    if port.proto != Proto::Tcp {
        return Err(ClientError::Usage(format!(
            "probe {port}: only TCP ports can be probed"
        )));
    }
    match probe(SocketAddr::new(target, port.port), wait) {
        Probe::Open(t) => Ok(format!(
            "access open: {port} on {target} answered {:.2}s after the knock",
            t.as_secs_f32()
        )),
        Probe::Reached(t) => Ok(format!(
            "access open: {port} on {target} let the connection through {:.2}s after the knock \
             (refused: nothing listens there)",
            t.as_secs_f32()
        )),
        Probe::Closed => Err(ClientError::NotOpened(format!(
            "{port} on {target} still drops {}s after the knock (wrong profile or secret, \
             a clock more than the SPA window off, or this address is banned)",
            wait.as_secs()
        ))),
    }
}

#[cfg(test)]
mod tests;
