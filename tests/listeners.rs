//! The daemon's listeners under abuse: idle FastAGI connections must not keep a real DISA call
//! (real Asterisk, real SIPp) from being served.

mod support;

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::asterisk::{DISA_EXTEN, FASTAGI_PORT};
use support::daemon::{eventually, Daemon};
use support::disa_daemon::{add_account, config, grants, PROBE};
use support::env::Env;
use support::sipp::Call;

/// Whether the far end has closed `s` (a non-blocking socket the test never writes to).
fn closed_tcp(s: &TcpStream) -> bool {
    !matches!(s.peek(&mut [0u8; 1]), Err(e) if e.kind() == ErrorKind::WouldBlock)
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
