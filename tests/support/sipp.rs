//! SIPp from the test chroot, run in a road namespace: REGISTER with digest auth, and calls that
//! send RFC 4733 DTMF. Scenarios live in `tests/harness/sipp/`.
//!
//! Functions return `Err` with SIPp's logs; the caller adds the PBX's side and panics.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::chroot;
use super::netns::Road;

/// Where the sip-tester package puts its DTMF captures, inside the chroot.
const PCAP_DIR: &str = "/usr/share/sip-tester";
/// Time from the start of one digit to the next; each shipped capture lasts about 140 ms.
const DIGIT_GAP: Duration = Duration::from_millis(300);
/// What a `w` in a DTMF string waits.
const PAUSE_W: Duration = Duration::from_millis(1000);
/// SIP port of the test PBX.
const PBX_SIP_PORT: u16 = 5060;

static RUN: AtomicU32 = AtomicU32::new(0);

/// The host SIPp runs on: a road namespace and its addresses. Plain data, so a call can run on
/// another thread.
#[derive(Clone, Debug)]
pub struct Peer {
    pub ns: String,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}

impl From<&Road> for Peer {
    fn from(road: &Road) -> Peer {
        Peer {
            ns: road.ns.name.clone(),
            v4: road.v4,
            v6: road.v6,
        }
    }
}

/// How a REGISTER ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registration {
    Registered,
    /// The PBX refused the credentials with this status (401 again, or 403).
    Rejected(u16),
}

/// Who ended a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hangup {
    /// The PBX sent BYE.
    Remote,
    /// The PBX kept the call up for the whole hold time; SIPp sent BYE.
    Local,
}

/// A finished SIPp run.
#[derive(Clone, Debug)]
pub struct Run {
    /// The SIP address SIPp used (the road host's address and a port unique to this run).
    pub local: SocketAddr,
    /// SIPp's outcome log (`OUTCOME …` lines).
    pub log: String,
    /// The directory with the scenario, captures and SIPp's logs, inside the chroot.
    pub dir: PathBuf,
}

/// A call to make: builder with defaults that suit the DISA tests.
#[derive(Clone, Debug)]
pub struct Call {
    pub exten: String,
    pub endpoint: String,
    /// `None`: the endpoint's right password.
    pub password: Option<String>,
    /// Digits to send after answer: `0-9`, `*`, `#`; `w` pauses a second.
    pub dtmf: String,
    /// Wait after answer before the first digit, so the far end is listening.
    pub dtmf_delay: Duration,
    /// How long to wait for the PBX to hang up before hanging up ourselves.
    pub hold: Duration,
    /// Call over IPv6.
    pub v6: bool,
    /// The caller id in From, when it is not the endpoint (a trunk carrying PSTN callers).
    pub number: Option<String>,
}

impl Call {
    pub fn to(exten: &str) -> Call {
        Call {
            exten: exten.to_string(),
            endpoint: "701".to_string(),
            password: None,
            dtmf: String::new(),
            dtmf_delay: Duration::from_millis(2000),
            hold: Duration::from_secs(10),
            v6: false,
            number: None,
        }
    }
    /// A PSTN caller's number through the trunk endpoint (road 3 in an env with three roads).
    pub fn via_trunk(mut self, number: &str) -> Call {
        self.endpoint = "trunk".to_string();
        self.number = Some(number.to_string());
        self
    }
    pub fn caller(mut self, endpoint: &str) -> Call {
        self.endpoint = endpoint.to_string();
        self
    }
    pub fn password(mut self, password: &str) -> Call {
        self.password = Some(password.to_string());
        self
    }
    pub fn dtmf(mut self, digits: &str) -> Call {
        self.dtmf = digits.to_string();
        self
    }
    pub fn dtmf_delay(mut self, delay: Duration) -> Call {
        self.dtmf_delay = delay;
        self
    }
    pub fn hold(mut self, hold: Duration) -> Call {
        self.hold = hold;
        self
    }
    pub fn v6(mut self) -> Call {
        self.v6 = true;
        self
    }
}

/// Registers `endpoint` from `peer` with `password`; `expires` 0 unregisters.
pub fn register(
    dir: &Path,
    peer: &Peer,
    pbx: IpAddr,
    endpoint: &str,
    password: &str,
    expires: u32,
) -> Result<(Registration, Run), String> {
    let scenario = fs::read_to_string(scenario_path("register.xml")).expect("read register.xml");
    let local = if pbx.is_ipv6() {
        IpAddr::V6(peer.v6)
    } else {
        IpAddr::V4(peer.v4)
    };
    let expires = expires.to_string();
    let run = run(
        dir,
        peer,
        local,
        pbx,
        &scenario,
        &[
            "-key", "user", endpoint, "-key", "expires", &expires, "-au", endpoint, "-ap", password,
        ],
        Duration::from_secs(20),
    )?;
    let outcome = if run.log.contains("OUTCOME registered") {
        Registration::Registered
    } else if let Some(code) = run.log.lines().find_map(|l| l.split("OUTCOME rejected ").nth(1)) {
        Registration::Rejected(code.trim().parse().unwrap_or(0))
    } else {
        return Err(format!(
            "SIPp REGISTER ended without an outcome\n{}",
            logs(&run.dir)
        ));
    };
    Ok((outcome, run))
}

/// A softphone on `peer` that sends a REGISTER as `endpoint` every second until the PBX answers,
/// then registers with `password`; gives up after `timeout`. `Ok(None)`: never answered.
pub fn keep_registering(
    dir: &Path,
    peer: &Peer,
    pbx: IpAddr,
    endpoint: &str,
    password: &str,
    timeout: Duration,
) -> Result<Option<Registration>, String> {
    let scenario = fs::read_to_string(scenario_path("phone.xml")).expect("read phone.xml");
    registration(dir, peer, pbx, &scenario, endpoint, password, timeout)
}

/// Registers like [`register`], but to the request URI `sip:<domain>` (a secret SIP domain), and
/// waits at most `wait` for an answer: `Ok(None)` when none came (the table dropped it).
pub fn register_to_domain(
    dir: &Path,
    peer: &Peer,
    pbx: IpAddr,
    domain: &str,
    endpoint: &str,
    password: &str,
    wait: Duration,
) -> Result<Option<Registration>, String> {
    let scenario = fs::read_to_string(scenario_path("register.xml"))
        .expect("read register.xml")
        .replace(
            "REGISTER sip:[remote_ip]:[remote_port] SIP/2.0",
            &format!("REGISTER sip:{domain} SIP/2.0"),
        );
    registration(dir, peer, pbx, &scenario, endpoint, password, wait)
}

/// Runs a registering `scenario` as `endpoint` with `password` for at most `wait`: the outcome
/// it logged, `None` when the PBX never answered.
fn registration(
    dir: &Path,
    peer: &Peer,
    pbx: IpAddr,
    scenario: &str,
    endpoint: &str,
    password: &str,
    wait: Duration,
) -> Result<Option<Registration>, String> {
    let local = if pbx.is_ipv6() {
        IpAddr::V6(peer.v6)
    } else {
        IpAddr::V4(peer.v4)
    };
    let (_, inside) = run_raw(
        dir,
        peer,
        local,
        pbx,
        scenario,
        &[
            "-key", "user", endpoint, "-key", "expires", "300", "-au", endpoint, "-ap", password,
        ],
        wait,
    )?;
    let log = fs::read_to_string(chroot::on_host(&inside.join("outcome.log"))).unwrap_or_default();
    Ok(if log.contains("OUTCOME registered") {
        Some(Registration::Registered)
    } else {
        log.lines()
            .find_map(|l| l.split("OUTCOME rejected ").nth(1))
            .map(|code| Registration::Rejected(code.trim().parse().unwrap_or(0)))
    })
}

/// What a REGISTER flood got: how many it sent and how many the PBX answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FloodAnswers {
    pub sent: u32,
    pub answered: u32,
}

/// A scanner on `peer`: `count` unauthenticated REGISTERs as `endpoint`, `per_second` of them a
/// second, each waiting up to 3 s for the PBX's challenge (`flood.xml`).
pub fn register_flood(
    dir: &Path,
    peer: &Peer,
    pbx: IpAddr,
    endpoint: &str,
    count: u32,
    per_second: u32,
) -> Result<FloodAnswers, String> {
    flood(
        dir,
        peer,
        pbx,
        "flood.xml",
        &["-key", "user", endpoint],
        count,
        per_second,
    )
}

/// A scanner on `peer` guessing: `count` REGISTERs as `endpoint` that answer the challenge with
/// `password` (a wrong one), `per_second` of them a second (`guess.xml`). `answered`: the guesses
/// Asterisk refused, so saw.
pub fn guess_flood(
    dir: &Path,
    peer: &Peer,
    pbx: IpAddr,
    endpoint: &str,
    password: &str,
    count: u32,
    per_second: u32,
) -> Result<FloodAnswers, String> {
    let keys = ["-key", "user", endpoint, "-au", endpoint, "-ap", password];
    flood(dir, peer, pbx, "guess.xml", &keys, count, per_second)
}

/// Runs `scenario` `count` times at `per_second`, each logging "OUTCOME answered" or "OUTCOME
/// lost", and counts them.
fn flood(
    dir: &Path,
    peer: &Peer,
    pbx: IpAddr,
    scenario: &str,
    keys: &[&str],
    count: u32,
    per_second: u32,
) -> Result<FloodAnswers, String> {
    let scenario = fs::read_to_string(scenario_path(scenario)).expect("read the flood scenario");
    let local = if pbx.is_ipv6() {
        IpAddr::V6(peer.v6)
    } else {
        IpAddr::V4(peer.v4)
    };
    let (count_s, rate_s) = (count.to_string(), per_second.to_string());
    // The later -m overrides run_raw's `-m 1`.
    let mut extra = keys.to_vec();
    extra.extend(["-m", &count_s, "-r", &rate_s, "-l", &count_s]);
    let (status, inside) = run_raw(
        dir,
        peer,
        local,
        pbx,
        &scenario,
        &extra,
        Duration::from_secs(u64::from(count / per_second.max(1)) + 15),
    )?;
    if status.is_none() {
        return Err(format!("SIPp flood hung\n{}", logs(&inside)));
    }
    let log = fs::read_to_string(chroot::on_host(&inside.join("outcome.log"))).unwrap_or_default();
    let n = |what: &str| log.lines().filter(|l| l.contains(what)).count() as u32;
    let answers = FloodAnswers {
        sent: n("OUTCOME answered") + n("OUTCOME lost"),
        answered: n("OUTCOME answered"),
    };
    if answers.sent != count {
        return Err(format!(
            "SIPp flood logged {} of {count} REGISTERs\n{}",
            answers.sent,
            logs(&inside)
        ));
    }
    Ok(answers)
}

/// Places `call` from `peer`: INVITE with digest auth, DTMF after answer, then waits for the PBX
/// to hang up (or hangs up after `call.hold`). A call the PBX does not answer is an error.
pub fn call(dir: &Path, peer: &Peer, pbx: IpAddr, call: &Call) -> Result<(Hangup, Run), String> {
    let local = if call.v6 {
        IpAddr::V6(peer.v6)
    } else {
        IpAddr::V4(peer.v4)
    };
    let n = RUN.fetch_add(1, Ordering::SeqCst);
    let pcaps = chroot::subdir(dir, &format!("dtmf-{n}"));
    let mut dtmf = String::new();
    for (i, digit) in call.dtmf.chars().enumerate() {
        if digit == 'w' {
            // A pause between entries, so the far end is reading again (as SendDTMF's `w`).
            let _ = writeln!(dtmf, "  <pause milliseconds=\"{}\"/>", PAUSE_W.as_millis());
            continue;
        }
        let inside = pcaps.join(format!("{i}-{}.pcap", pcap_name(digit)));
        fs::write(chroot::on_host(&inside), rewrite_dtmf_pcap(digit, i)).expect("write pcap");
        let _ = write!(
            dtmf,
            "  <nop><action><exec play_pcap_audio=\"{}\"/></action></nop>\n  <pause milliseconds=\"{}\"/>\n",
            inside.display(),
            DIGIT_GAP.as_millis()
        );
    }
    let scenario = fs::read_to_string(scenario_path("call.xml"))
        .expect("read call.xml")
        .replace("{{DTMF_DELAY_MS}}", &call.dtmf_delay.as_millis().to_string())
        .replace("{{HOLD_MS}}", &call.hold.as_millis().to_string())
        .replace("{{DTMF}}", &dtmf);
    let password = call
        .password
        .clone()
        .unwrap_or_else(|| super::asterisk::password(&call.endpoint).to_string());
    let budget = call.dtmf_delay + PAUSE_W * call.dtmf.len() as u32 + call.hold;
    let run = run(
        dir,
        peer,
        local,
        pbx,
        &scenario,
        &[
            "-s",
            &call.exten,
            "-key",
            "user",
            call.number.as_deref().unwrap_or(&call.endpoint),
            "-au",
            &call.endpoint,
            "-ap",
            &password,
        ],
        budget + Duration::from_secs(20),
    )?;
    if !run.log.contains("OUTCOME answered") {
        return Err(format!("the call was not answered\n{}", logs(&run.dir)));
    }
    let hangup = if run.log.contains("OUTCOME remote-hangup") {
        Hangup::Remote
    } else if run.log.contains("OUTCOME local-hangup") {
        Hangup::Local
    } else {
        return Err(format!("SIPp call ended without an outcome\n{}", logs(&run.dir)));
    };
    Ok((hangup, run))
}

/// Whether SIP from `peer` reaches the PBX: sends one OPTIONS (retransmitted) and says whether
/// any answer came back within `wait`. For firewall tests, where Asterisk itself holds the port.
pub fn options_reach(
    dir: &Path,
    peer: &Peer,
    local: IpAddr,
    pbx: IpAddr,
    wait: Duration,
) -> Result<bool, String> {
    let scenario = fs::read_to_string(scenario_path("options.xml")).expect("read options.xml");
    let (result, inside) = run_raw(dir, peer, local, pbx, &scenario, &[], wait)?;
    let trace = fs::read_to_string(chroot::on_host(&inside.join("messages.log"))).unwrap_or_default();
    let answered = trace.contains("message received");
    match result {
        // SIPp still running after its own timeout means it is wedged, not a verdict.
        None => Err(format!("SIPp OPTIONS probe hung\n{}", logs(&inside))),
        Some(_) => Ok(answered),
    }
}

fn scenario_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/harness/sipp")
        .join(name)
}

/// Runs SIPp once (`-m 1`) in `peer`'s namespace with `scenario`; an error carries its logs.
fn run(
    dir: &Path,
    peer: &Peer,
    local: IpAddr,
    pbx: IpAddr,
    scenario: &str,
    extra: &[&str],
    timeout: Duration,
) -> Result<Run, String> {
    let (status, inside) = run_raw(dir, peer, local, pbx, scenario, extra, timeout)?;
    let log = fs::read_to_string(chroot::on_host(&inside.join("outcome.log"))).unwrap_or_default();
    let sip_port = status.map(|(_, port)| port).unwrap_or_default();
    match status {
        Some((s, _)) if s.success() => Ok(Run {
            local: SocketAddr::new(local, sip_port),
            log,
            dir: inside,
        }),
        Some((s, _)) => Err(format!("SIPp failed ({s})\n{}", logs(&inside))),
        None => Err(format!(
            "SIPp still running after {timeout:?}, killed\n{}",
            logs(&inside)
        )),
    }
}

/// Runs SIPp once and returns its exit status and SIP port (`None` if it had to be killed) and
/// the run's directory inside the chroot.
fn run_raw(
    dir: &Path,
    peer: &Peer,
    local: IpAddr,
    pbx: IpAddr,
    scenario: &str,
    extra: &[&str],
    timeout: Duration,
) -> Result<(Option<(std::process::ExitStatus, u16)>, PathBuf), String> {
    let n = RUN.fetch_add(1, Ordering::SeqCst);
    let inside = chroot::subdir(dir, &format!("sipp-{n}"));
    let host = chroot::on_host(&inside);
    fs::write(host.join("scenario.xml"), scenario).expect("write scenario");
    // Ports unique per run, so runs from one road host may overlap.
    let sip_port = 5100 + (n % 400) as u16 * 2;
    let media_port = 20000 + (n % 400) as u16 * 4;
    let remote = SocketAddr::new(pbx, PBX_SIP_PORT).to_string();
    let file = |name: &str| inside.join(name).display().to_string();
    let out = File::create(host.join("sipp.out")).expect("create sipp.out");
    let mut cmd = chroot::command(Some(&peer.ns), "/usr/bin/sipp");
    cmd.arg(&remote)
        .args(["-sf", &file("scenario.xml")])
        .args([
            "-i",
            &local.to_string(),
            "-p",
            &sip_port.to_string(),
            "-bind_local",
        ])
        .args(["-mi", &local.to_string(), "-mp", &media_port.to_string()])
        .args(["-m", "1", "-nostdin"])
        .args([
            "-timeout",
            &format!("{}ms", timeout.as_millis()),
            "-timeout_error",
        ])
        .args(["-trace_err", "-error_file", &file("errors.log")])
        .args(["-trace_msg", "-message_file", &file("messages.log")])
        .args(["-trace_logs", "-log_file", &file("outcome.log")])
        .args(extra)
        .stdout(out.try_clone().expect("dup sipp.out"))
        .stderr(out);
    let mut child = cmd.spawn().map_err(|e| format!("cannot run sipp: {e}"))?;
    // SIPp stops itself at -timeout; the margin only catches a wedged SIPp.
    let status = chroot::wait_bounded(&mut child, timeout + Duration::from_secs(10));
    Ok((status.map(|s| (s, sip_port)), inside))
}

/// SIPp's logs of one run, for an error message.
pub fn logs(inside: &Path) -> String {
    let host = chroot::on_host(inside);
    let mut s = String::new();
    for (name, lines) in [
        ("sipp.out", 15),
        ("errors.log", 20),
        ("outcome.log", 10),
        ("messages.log", 80),
    ] {
        let _ = write!(
            s,
            "--- sipp {name} ---\n{}\n",
            chroot::tail(&host.join(name), lines)
        );
    }
    s
}

/// The file-name part of SIPp's capture for `digit`.
fn pcap_name(digit: char) -> String {
    match digit {
        '0'..='9' => digit.to_string(),
        '*' => "star".into(),
        '#' => "pound".into(),
        _ => panic!("SIPp ships no RFC 4733 capture for DTMF {digit:?}"),
    }
}

/// SIPp's capture for `digit`, rewritten to be the `index`-th digit of a call: every capture
/// ships with its own fixed sequence numbers and timestamp, and Asterisk takes a repeated
/// timestamp for a retransmission of the last event, so "11" would arrive as "1".
fn rewrite_dtmf_pcap(digit: char, index: usize) -> Vec<u8> {
    let path = chroot::on_host(Path::new(&format!(
        "{PCAP_DIR}/dtmf_2833_{}.pcap",
        pcap_name(digit)
    )));
    let mut data = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    rewrite_rtp(&mut data, 1000 + 32 * index as u16, 8000 + 8000 * index as u32)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    data
}

/// Rewrites, in a classic little-endian Ethernet/IPv4/UDP pcap of one RTP stream, each packet's
/// sequence number to `seq_base` plus its offset from the first, and every timestamp to `ts`.
fn rewrite_rtp(data: &mut [u8], seq_base: u16, ts: u32) -> Result<(), String> {
    if data.len() < 24 || data[..4] != [0xd4, 0xc3, 0xb2, 0xa1] {
        return Err("not a little-endian pcap".into());
    }
    if u32::from_le_bytes(data[20..24].try_into().unwrap()) != 1 {
        return Err("not an Ethernet capture".into());
    }
    let mut off = 24;
    let mut first_seq = None;
    while off + 16 <= data.len() {
        let incl = u32::from_le_bytes(data[off + 8..off + 12].try_into().unwrap()) as usize;
        let pkt = off + 16;
        if pkt + incl > data.len() {
            return Err("truncated packet".into());
        }
        let ihl = ((data.get(pkt + 14).copied().unwrap_or(0) & 0x0f) as usize) * 4;
        let rtp = pkt + 14 + ihl + 8;
        if ihl < 20 || rtp + 12 > pkt + incl {
            return Err("packet too short for IPv4/UDP/RTP".into());
        }
        let seq = u16::from_be_bytes([data[rtp + 2], data[rtp + 3]]);
        let first = *first_seq.get_or_insert(seq);
        let new_seq = seq_base.wrapping_add(seq.wrapping_sub(first));
        data[rtp + 2..rtp + 4].copy_from_slice(&new_seq.to_be_bytes());
        data[rtp + 4..rtp + 8].copy_from_slice(&ts.to_be_bytes());
        off = pkt + incl;
    }
    if first_seq.is_none() {
        return Err("no packets".into());
    }
    Ok(())
}
