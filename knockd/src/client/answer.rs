//! The daemon's one answer to an SPA knock that asked for it: waited for on the knock's own
//! socket, and put in words for the person at the laptop.

use std::io;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use crate::spa::{self, SpaKey};

/// Waits on the knock's socket for the daemon's answer to the request with `nonce`; anything
/// else arriving there is ignored.
pub fn wait_answer(sock: &UdpSocket, key: &SpaKey, nonce: &[u8; 16], wait: Duration) -> Option<spa::Answer> {
    let start = Instant::now();
    let mut buf = [0u8; 2 * spa::LEN];
    loop {
        let left = wait.saturating_sub(start.elapsed());
        if left.is_zero() {
            return None;
        }
        sock.set_read_timeout(Some(left)).ok()?;
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                if let Ok(a) = spa::open_answer(key, nonce, &buf[..n]) {
                    return Some(a);
                }
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => return None,
            // An ICMP error from an earlier send, say: keep listening.
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// What the answer says, for the person at the laptop.
pub fn answer_line(a: &spa::Answer) -> String {
    let left = a.left_secs / 60;
    match a.said {
        spa::Said::PhoneConnected => format!(
            "your phone is connected: the PBX sees it registered from {} ({left} min of access left)",
            a.address
        ),
        spa::Said::PhoneNotYet => format!(
            "not yet: the PBX has not seen your phone register from {}; access is open anyway \
             ({left} min left)",
            a.address
        ),
        spa::Said::Open => format!(
            "access open from {} ({left} min left); the PBX's profile names no phone to wait for",
            a.address
        ),
    }
}
