//! The daemon's listeners under abuse: idle FastAGI connections must not keep a real DISA call
//! (real Asterisk, real SIPp) from being served, and the control socket must neither delete a
//! file that is not its own nor let idle connections pile up.

mod support;

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use passknock::base::defaults;
use support::asterisk::{DISA_EXTEN, FASTAGI_PORT};
use support::daemon::{eventually, proc_kib, start_refused, test_config, Daemon};
use support::disa_daemon::{add_account, config, grants, PROBE};
use support::env::Env;
use support::netns::Netns;
use support::sipp::Call;

/// Whether the far end has closed `s` (a non-blocking socket the test never writes to).
fn closed_tcp(s: &TcpStream) -> bool {
    !matches!(s.peek(&mut [0u8; 1]), Err(e) if e.kind() == ErrorKind::WouldBlock)
}

fn closed_unix(mut s: &UnixStream) -> bool {
    !matches!(s.read(&mut [0u8; 1]), Err(e) if e.kind() == ErrorKind::WouldBlock)
}

/// Descriptors the process holds.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Keeps `count` FastAGI connections open that never send a byte, reconnecting each one the
/// daemon closes, until `stop`: what a local attacker holding the call slots does. Returns how many
/// connections it opened in all. Runs on a thread inside the pbx namespace.
fn hold_idle_fastagi(count: usize, stop: Arc<AtomicBool>, filled: Arc<AtomicBool>) -> usize {
    let agi = SocketAddr::from(([127, 0, 0, 1], FASTAGI_PORT));
    let mut open: Vec<TcpStream> = Vec::new();
    let mut opened = 0;
    while !stop.load(Ordering::Relaxed) {
        open.retain(|s| !closed_tcp(s));
        while open.len() < count {
            let Ok(s) = TcpStream::connect_timeout(&agi, Duration::from_millis(500)) else {
                break;
            };
            s.set_nonblocking(true).unwrap();
            open.push(s);
            opened += 1;
        }
        if open.len() == count {
            filled.store(true, Ordering::Relaxed);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    opened
}

#[test]
fn idle_fastagi_connections_do_not_stop_a_disa_call() {
    // More idle connections than `agi.max-sessions` (64): before, each took a call slot for the
    // whole session deadline and every DISA call heard "not in service".
    const IDLE: usize = 100;
    let mut env = Env::new();
    let dir = env.daemon_dir();
    env.daemon = Some(Daemon::start(env.pbx(), &dir, &config(&dir, "")));
    let d = env.daemon.as_ref().unwrap();
    let passcode = add_account(d, &["ann", "--services", "probe", "--address-modes", "source"]);
    assert!(!env.udp_reaches(1, PROBE, false), "closed before the call");

    let stop = Arc::new(AtomicBool::new(false));
    let filled = Arc::new(AtomicBool::new(false));
    let opened = std::thread::scope(|scope| {
        let flood = {
            let (stop, filled) = (stop.clone(), filled.clone());
            let pbx = env.pbx();
            scope.spawn(move || pbx.within(move || hold_idle_fastagi(IDLE, stop, filled)))
        };
        assert!(
            eventually(Duration::from_secs(10), || filled.load(Ordering::Relaxed)),
            "the idle connections are in place"
        );
        let call = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            env.call(
                1,
                &Call::to(DISA_EXTEN)
                    .dtmf(&format!("{passcode}#"))
                    .hold(Duration::from_secs(20)),
            )
        }));
        stop.store(true, Ordering::Relaxed);
        let opened = flood.join().unwrap();
        if let Err(e) = call {
            std::panic::resume_unwind(e);
        }
        opened
    });
    let d = env.daemon.as_ref().unwrap();
    let g = grants(d);
    assert_eq!(
        g.len(),
        1,
        "the call got through {IDLE} idle FastAGI connections: {g:?}\n{}",
        d.log_text()
    );
    assert_eq!(g[0]["address"], "203.0.113.10");
    assert!(
        env.udp_reaches(1, PROBE, false),
        "the grant is in nft: the caller's address is open"
    );
    // The daemon kept closing the silent ones, and the flood kept reconnecting all the while.
    assert!(opened > IDLE, "idle connections were closed: {opened} opened");
    eprintln!("{opened} idle FastAGI connections opened during the call");
}

#[test]
fn a_regular_file_at_the_control_socket_path_is_kept_and_refused() {
    let ns = Netns::new("ctlfile");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("passknock.toml");
    std::fs::write(&cfg, test_config(dir.path(), "")).unwrap();
    let path = dir.path().join("control.sock");
    std::fs::write(&path, "not a socket: someone's notes\n").unwrap();

    let out = start_refused(&ns, &cfg);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&path.display().to_string()),
        "names the path:\n{err}"
    );
    assert!(err.contains("not a socket"), "says why:\n{err}");
    assert!(!err.contains("Os {"), "no debug output:\n{err}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "not a socket: someone's notes\n",
        "the file is untouched"
    );

    // A socket left by a daemon that died is still replaced.
    std::fs::remove_file(&path).unwrap();
    drop(UnixListener::bind(&path).unwrap());
    assert!(UnixStream::connect(&path).is_err(), "stale: nobody answers");
    let d = Daemon::start(&ns, dir.path(), &test_config(dir.path(), ""));
    d.ok(&["list"]);
}

#[test]
fn idle_control_connections_are_capped_and_the_cli_still_answers() {
    // PASSKNOCK_IDLE_CONNECTIONS=10000 for the figures in the report; the default keeps it quick.
    let n: usize = std::env::var("PASSKNOCK_IDLE_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let ns = Netns::new("ctlidle");
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&ns, dir.path(), &test_config(dir.path(), ""));
    let pid = d.pid();
    let (fds_before, rss_before) = (fds(pid), proc_kib(pid, "VmRSS:"));

    let idle: Vec<UnixStream> = (0..n)
        .map(|_| {
            let s = UnixStream::connect(&d.socket).expect("connect");
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    // Let the daemon accept all of them.
    std::thread::sleep(Duration::from_secs(1));
    let (fds_during, rss_during) = (fds(pid), proc_kib(pid, "VmRSS:"));
    eprintln!(
        "daemon with {n} idle control connections: {fds_during} fds, {rss_during} KiB RSS \
         (before them: {fds_before} fds, {rss_before} KiB)"
    );
    d.ok(&["list"]);
    let cap = defaults::CONTROL_MAX_CONNECTIONS;
    assert!(
        fds_during <= fds_before + cap + 8,
        "{fds_during} descriptors with {n} idle connections (cap {cap}, {fds_before} before)"
    );
    let closed = idle.iter().filter(|s| closed_unix(s)).count();
    assert!(closed >= n - cap, "{closed} of {n} idle connections closed");
}

#[test]
fn an_idle_control_connection_is_closed_after_the_timeout() {
    let ns = Netns::new("ctltime");
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&ns, dir.path(), &test_config(dir.path(), ""));
    let mut s = UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(defaults::CONTROL_IDLE_TIMEOUT + Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!(
            "the daemon sent {:?} to a silent client",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) => panic!("still open after the idle timeout: {e}"),
    }
    d.ok(&["list"]);
}
