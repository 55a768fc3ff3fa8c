//! AMI bench (run as root: `cargo bench --bench ami`).
//!
//! 1. Parsing: AMI events per second through the codec, the event types and the session, from a
//!    buffer (no IO), with a realistic mix of security, contact and channel events.
//! 2. The client: events per second from a local AMI peer over TCP to the daemon's channel.
//! 3. Event to ban on real Asterisk 22 with the real daemon and nft, for a wrong-password
//!    REGISTER: from the event's own stamp (EventTV) to the ban found in nft by pollers running
//!    during the REGISTER; and inside the daemon, from receiving the event to nft applied. When
//!    fail2ban is installed, it watches Asterisk's security log in the same namespace with its
//!    stock `asterisk` filter, banning into an nft set of its own, timed from the same stamp.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ami_listener::codec::{Decoder, DecoderCaps, Frame};
use ami_listener::session::{Session, Update};
use ami_listener::{AmiSecret, AmiSettings, LoginMethod, Stats};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use support::env::{Env, WAIT};
use support::sipp::Registration;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(name: &str, mut v: Vec<f64>) {
    if v.is_empty() {
        println!("{name}: no samples");
        return;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "{name}: n={} median={:.1} ms p90={:.1} ms max={:.1} ms",
        v.len(),
        p(0.5),
        p(0.9),
        v[v.len() - 1]
    );
}

/// A realistic stream: per call, a ChallengeSent/SuccessfulAuth pair, Newchannel, Newstate,
/// a few VarSets, Hangup; plus contact refreshes and failed logins.
fn stream(n_events: usize) -> Vec<u8> {
    let mut out = String::new();
    let mut i = 0;
    while i < n_events {
        let ip = format!("203.0.{}.{}", (i / 250) % 250, i % 250 + 1);
        out.push_str(&format!(
            "Event: ChallengeResponseFailed\r\nPrivilege: security,all\r\nEventTV: 2026-11-21T08:31:31.674+0000\r\nSeverity: Error\r\nService: PJSIP\r\nEventVersion: 1\r\nAccountID: 702\r\nSessionID: 1-{i}@{ip}\r\nLocalAddress: IPV4/UDP/198.51.100.1/5060\r\nRemoteAddress: IPV4/UDP/{ip}/5102\r\nChallenge: 1795249891/66fb36fbaa260f1609ae19d9b7300a50\r\nResponse: 8d24e45c72f3d8e8478cc4c51d79036f\r\nExpectedResponse: \r\n\r\n\
             Event: ContactStatus\r\nPrivilege: system,all\r\nURI: sip:701@{ip}:5100\r\nContactStatus: Reachable\r\nAOR: 701\r\nEndpointName: 701\r\nRoundtripUsec: 1234\r\n\r\n\
             Event: Newchannel\r\nPrivilege: call,all\r\nChannel: PJSIP/701-{i:08x}\r\nChannelState: 4\r\nChannelStateDesc: Ring\r\nCallerIDNum: 701\r\nCallerIDName: Road 701\r\nConnectedLineNum: <unknown>\r\nConnectedLineName: <unknown>\r\nLanguage: en\r\nAccountCode: \r\nContext: from-road\r\nExten: 600\r\nPriority: 1\r\nUniqueid: 1795249892.{i}\r\nLinkedid: 1795249892.{i}\r\n\r\n\
             Event: VarSet\r\nPrivilege: dialplan,all\r\nChannel: PJSIP/701-{i:08x}\r\nVariable: RTPAUDIOQOS\r\nValue: ssrc=1;themssrc=2;lp=0;rxjitter=0.000000\r\nUniqueid: 1795249892.{i}\r\n\r\n\
             Event: Hangup\r\nPrivilege: call,all\r\nChannel: PJSIP/701-{i:08x}\r\nChannelState: 6\r\nChannelStateDesc: Up\r\nCallerIDNum: 701\r\nUniqueid: 1795249892.{i}\r\nLinkedid: 1795249892.{i}\r\nCause: 16\r\nCause-txt: Normal Clearing\r\n\r\n"
        ));
        i += 5;
    }
    out.into_bytes()
}

fn parse_throughput() {
    let n = 500_000;
    let data = stream(n);
    let t0 = Instant::now();
    let mut dec = Decoder::without_greeting(DecoderCaps::default());
    let (mut session, _) = Session::start();
    let (mut events, mut updates) = (0usize, 0usize);
    // Fed in 16 KiB reads, as the client reads the socket.
    let mut buf = Vec::new();
    for chunk in data.chunks(16 * 1024) {
        buf.extend_from_slice(chunk);
        while let Some(f) = dec.decode(&mut buf) {
            if let Frame::Message(m) = f {
                events += 1;
                updates += session.on_message(&m).updates.len();
            }
        }
    }
    let took = t0.elapsed();
    assert_eq!(events, n);
    println!("== 1. parsing, no IO ==");
    println!(
        "{events} events ({:.1} MB) decoded, typed and run through the session in {:.0} ms: \
         {:.0} events/s, {:.0} MB/s ({updates} updates)",
        data.len() as f64 / 1e6,
        ms(took),
        events as f64 / took.as_secs_f64(),
        data.len() as f64 / 1e6 / took.as_secs_f64()
    );
}

fn client_throughput() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let n = 200_000;
        let data = Arc::new(stream(n));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let d = data.clone();
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut r = BufReader::new(r);
            w.write_all(b"Asterisk Call Manager/11.0.0\r\n").await.unwrap();
            // Login (plain) and the two re-sync actions: answer each.
            for i in 0..3 {
                let mut id = String::new();
                loop {
                    let mut line = String::new();
                    r.read_line(&mut line).await.unwrap();
                    if line.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = line.trim().strip_prefix("ActionID: ") {
                        id = v.to_string();
                    }
                }
                let reply = if i == 0 {
                    format!("Response: Success\r\nActionID: {id}\r\n\r\n")
                } else {
                    format!("Response: Success\r\nActionID: {id}\r\n\r\nEvent: ListComplete\r\nActionID: {id}\r\nEventList: Complete\r\n\r\n")
                };
                w.write_all(reply.as_bytes()).await.unwrap();
            }
            // Keep reading what the client sends (a Getvar per new channel), as Asterisk does.
            tokio::spawn(async move {
                let mut sink = Vec::new();
                let _ = tokio::io::AsyncReadExt::read_to_end(&mut r, &mut sink).await;
            });
            w.write_all(&d).await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let (tx, mut rx) = mpsc::channel(1024);
        let stats = Arc::new(Stats::default());
        let stop = CancellationToken::new();
        let settings = AmiSettings {
            address: addr,
            username: "bench".into(),
            secret: AmiSecret::new("x"),
            login: LoginMethod::Plain,
            backoff_first: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            keepalive: Duration::from_secs(20),
            timeout: Duration::from_secs(5),
            limits: DecoderCaps::default(),
        };
        let task = tokio::spawn(ami_listener::run(settings, tx, stats.clone(), stop.clone()));
        let mut security = 0;
        let mut t0 = None;
        while security < n / 5 {
            let u = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .expect("updates keep coming")
                .expect("client running");
            match u {
                Update::CallsPresent(_) => t0 = Some(Instant::now()),
                Update::Security(_) => security += 1,
                _ => {}
            }
        }
        let took = t0.unwrap().elapsed();
        let events = stats.events.load(std::sync::atomic::Ordering::Relaxed);
        println!("== 2. the client over loopback TCP, into the daemon's channel ==");
        println!(
            "{events} events in {:.0} ms: {:.0} events/s ({security} security events delivered)",
            ms(took),
            events as f64 / took.as_secs_f64()
        );
        stop.cancel();
        let _ = task.await;
    });
}

/// fail2ban watching `log` in namespace `ns`, banning into `inet f2b ban` there.
struct Fail2ban {
    child: Child,
    conf: std::path::PathBuf,
    ns: String,
}

impl Fail2ban {
    fn start(ns: &str, dir: &Path, log: &Path) -> Option<Fail2ban> {
        let server = which("fail2ban-server")?;
        let conf = dir.join("f2b");
        std::fs::create_dir_all(conf.join("filter.d")).unwrap();
        std::fs::create_dir_all(conf.join("action.d")).unwrap();
        for f in ["asterisk.conf", "common.conf"] {
            std::fs::copy(
                Path::new("/etc/fail2ban/filter.d").join(f),
                conf.join("filter.d").join(f),
            )
            .ok()?;
        }
        let d = conf.display();
        std::fs::write(
            conf.join("fail2ban.conf"),
            format!(
                "[Definition]\nloglevel = INFO\nlogtarget = {d}/f2b.log\nsocket = {d}/f2b.sock\n\
                 pidfile = {d}/f2b.pid\ndbfile = :memory:\n"
            ),
        )
        .unwrap();
        std::fs::write(
            conf.join("action.d/pk-nft.conf"),
            "[Definition]\nactionstart =\nactionstop =\nactioncheck =\n\
             actionban = nft add element inet f2b ban { <ip> }\n\
             actionunban = nft delete element inet f2b ban { <ip> }\n",
        )
        .unwrap();
        // The stock filter and the default backend (auto: the poller unless pyinotify is there).
        std::fs::write(
            conf.join("jail.conf"),
            format!(
                "[DEFAULT]\nbackend = auto\n\n[asterisk]\nenabled = true\nfilter = asterisk\n\
                 logpath = {}\nmaxretry = 1\nfindtime = 600\nbantime = 600\naction = pk-nft\n",
                log.display()
            ),
        )
        .unwrap();
        run_in(ns, "nft", &["add table inet f2b"]);
        run_in(ns, "nft", &["add set inet f2b ban { type ipv4_addr; }"]);
        let child = Command::new("ip")
            .args(["netns", "exec", ns, &server, "-f", "-x", "-c"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let f = Fail2ban {
            child,
            conf,
            ns: ns.to_string(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if f.client(&["status", "asterisk"]).is_some() {
                let log = std::fs::read_to_string(f.conf.join("f2b.log")).unwrap_or_default();
                let backend = log
                    .lines()
                    .find(|l| l.contains("uses"))
                    .map(|l| l.trim().to_string())
                    .unwrap_or_default();
                println!("fail2ban up: {backend}");
                return Some(f);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    fn client(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "fail2ban-client", "-c"])
            .arg(&self.conf)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Fail2ban {
    fn drop(&mut self) {
        let _ = self.client(&["stop"]);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(prog: &str) -> Option<String> {
    ["/usr/bin", "/usr/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| format!("{d}/{prog}"))
        .find(|p| Path::new(p).exists())
}

fn run_in(ns: &str, prog: &str, args: &[&str]) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, prog])
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn set_has(ns: &str, table: &str, set: &str, ip: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, "nft", "list", "set", "inet", table, set])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(ip))
        .unwrap_or(false)
}

fn event_to_ban() {
    println!("== 3. security event on AMI to ban in nft: real Asterisk 22, real daemon ==");
    assert_eq!(event_ms("2026-11-21T08:31:31.674+0000"), 1_795_249_891_674);
    let mut env = Env::new();
    let dir = env.daemon_dir();
    env.start_ami_daemon("", "ban-threshold = 1\nban-ttl = \"10m\"\n");
    let ns = env.pbx().name.clone();
    let bad = env.road(1).v4.to_string();
    let f2b = Fail2ban::start(&ns, &dir, &env.asterisk.security_log());
    if f2b.is_none() {
        println!("fail2ban not installed or did not start: measuring passknock alone");
    }
    let d = env.daemon.as_ref().unwrap();
    d.ok(&["grant", &bad, "--services", "sip", "--ttl", "1h"]);
    std::thread::sleep(Duration::from_millis(500));
    let mut ami = env.ami();
    let (mut ours, mut inside, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
    let rounds = 20;
    for _ in 0..rounds {
        ami.clear();
        // One poller per set, running while SIPp fails to register: each notes the wall-clock
        // time it first finds the address.
        let watch = |table: &'static str, set: &'static str| {
            let (ns, ip) = (ns.clone(), bad.clone());
            std::thread::spawn(move || {
                let t0 = Instant::now();
                while t0.elapsed() < Duration::from_secs(5) {
                    if set_has(&ns, table, set, &ip) {
                        return Some(wall_ms());
                    }
                }
                None
            })
        };
        let ours_w = watch("passknock", "ban_v4");
        let theirs_w = f2b.as_ref().map(|_| watch("f2b", "ban"));
        let r = env.register_with(1, "701", "wrong-password");
        assert!(matches!(r, Registration::Rejected(_)));
        let e = ami.expect_event("ChallengeResponseFailed", WAIT, |e| {
            e.is("ChallengeResponseFailed") && e.get("RemoteAddress").is_some_and(|a| a.contains(&bad))
        });
        // Asterisk stamps the event (EventTV, ms) from the same clock the pollers read.
        let at = event_ms(e.get("EventTV").expect("EventTV"));
        let found = ours_w.join().unwrap().expect("passknock banned");
        ours.push((found - at) as f64);
        if let Some(w) = theirs_w {
            if let Some(t) = w.join().unwrap() {
                theirs.push((t - at) as f64);
            }
        }
        let us = d.json(&["contacts"])["ami"]["last_ban_us"].as_u64().unwrap_or(0);
        inside.push(us as f64 / 1000.0);
        d.ok(&["unban", &bad]);
        if let Some(f) = &f2b {
            let _ = f.client(&["set", "asterisk", "unbanip", &bad]);
            let _ = run_in(&ns, "nft", &["flush set inet f2b ban"]);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    summary("passknock: event time (EventTV) → ban found in nft", ours);
    summary(
        "passknock: inside the daemon, event received → nft batch applied",
        inside,
    );
    if f2b.is_some() {
        summary(
            "fail2ban (stock asterisk filter, security.log): event time (EventTV) → its ban in nft",
            theirs,
        );
    }
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `2026-11-21T08:31:31.674+0000` (UTC, as Asterisk writes EventTV here) to Unix ms.
fn event_ms(tv: &str) -> i64 {
    let n = |r: std::ops::Range<usize>| tv[r].parse::<i64>().expect("EventTV");
    let (y, mo, d) = (n(0..4), n(5..7), n(8..10));
    let (h, mi, s, ms) = (n(11..13), n(14..16), n(17..19), n(20..23));
    assert!(tv.ends_with("+0000"), "EventTV not in UTC: {tv}");
    // Days from civil (Howard Hinnant).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 86_400 + h * 3600 + mi * 60 + s) * 1000) + ms
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    parse_throughput();
    client_throughput();
    event_to_ban();
}
