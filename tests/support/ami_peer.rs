//! A local AMI peer for benches: a TCP server in a namespace that speaks enough of Asterisk's
//! manager protocol for the daemon's listener to log in (plain), re-sync and stay connected, so a
//! bench can write security events at the instants it chooses. Real Asterisk stamps and sends its
//! events on its own schedule; this peer lets the send time be known to the microsecond.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::netns::Netns;

/// What Asterisk 22 writes first on a manager connection.
const GREETING: &str = "Asterisk Call Manager/11.0.0\r\n";

#[derive(Default)]
struct Shared {
    /// The write half of the daemon's current connection (replaced when it reconnects).
    writer: Mutex<Option<TcpStream>>,
    /// Re-syncs answered (the `CoreShowChannels` list sent), woken on each.
    synced: Mutex<u64>,
    synced_cv: Condvar,
    username: String,
    secret: String,
}

/// The peer: listening on `addr` inside its namespace until the process ends. Clones share it.
#[derive(Clone)]
pub struct AmiPeer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl AmiPeer {
    /// Listens on a free loopback port in `ns`; logins must give `username` and `secret`.
    pub fn start(ns: &Netns, username: &str, secret: &str) -> AmiPeer {
        let listener = ns.within(|| TcpListener::bind("127.0.0.1:0").expect("bind the AMI peer"));
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            username: username.to_string(),
            secret: secret.to_string(),
            ..Shared::default()
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let _ = conn.set_nodelay(true);
                let Ok(mut w) = conn.try_clone() else { continue };
                if w.write_all(GREETING.as_bytes()).is_err() {
                    continue;
                }
                *s.writer.lock().unwrap() = Some(w);
                let s = s.clone();
                std::thread::spawn(move || serve(conn, &s));
            }
        });
        AmiPeer { addr, shared }
    }

    /// Waits until the daemon has logged in and been answered its re-sync; false after `within`.
    pub fn wait_synced(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut n = self.shared.synced.lock().unwrap();
        while *n == 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            n = self.shared.synced_cv.wait_timeout(n, left).unwrap().0;
        }
        true
    }

    /// Writes `bytes` (whole events) to the daemon; returns the instant just before the write.
    /// Blocks while the daemon does not read (as a socket to it would); an error once it is gone.
    pub fn send(&self, bytes: &[u8]) -> std::io::Result<Instant> {
        let mut w = self.shared.writer.lock().unwrap();
        let w = w
            .as_mut()
            .ok_or_else(|| std::io::Error::other("the daemon is not connected to the AMI peer"))?;
        let t = Instant::now();
        w.write_all(bytes)?;
        Ok(t)
    }

    /// Writes `blocks` spread evenly over `over` from `start`: block k is due at
    /// `start + over·k/len`, and each write carries every block due by then. A write the daemon
    /// does not take in time delays the blocks after it, which then go together.
    pub fn send_paced(&self, start: Instant, blocks: &[String], over: Duration) -> std::io::Result<()> {
        let due = |k: usize| start + over.mul_f64(k as f64 / blocks.len() as f64);
        let (mut k, mut buf) = (0, Vec::new());
        while k < blocks.len() {
            let now = Instant::now();
            buf.clear();
            while k < blocks.len() && due(k) <= now {
                buf.extend_from_slice(blocks[k].as_bytes());
                k += 1;
            }
            if buf.is_empty() {
                std::thread::sleep(due(k).saturating_duration_since(now));
            } else {
                self.send(&buf)?;
            }
        }
        Ok(())
    }
}

/// Answers the daemon's actions, as Asterisk would, until it hangs up.
fn serve(conn: TcpStream, s: &Shared) {
    let mut r = BufReader::new(conn);
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if !l.is_empty() {
            if let Some((k, v)) = l.split_once(':') {
                fields.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
            continue;
        }
        if fields.is_empty() {
            continue;
        }
        let get = |k: &str| {
            fields
                .iter()
                .find(|(f, _)| f == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        let (action, id) = (get("action").to_ascii_lowercase(), get("actionid").to_string());
        let reply = match action.as_str() {
            "login" if get("username") == s.username && get("secret") == s.secret => {
                format!("Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\n")
            }
            "login" | "challenge" => {
                format!("Response: Error\r\nActionID: {id}\r\nMessage: Authentication failed\r\n\r\n")
            }
            // What Asterisk answers when nothing is registered.
            "pjsipshowcontacts" => {
                format!("Response: Error\r\nActionID: {id}\r\nMessage: No Contacts found\r\n\r\n")
            }
            "coreshowchannels" => format!(
                "Response: Success\r\nActionID: {id}\r\nEventList: start\r\nMessage: Channels will follow\r\n\r\n\
                 Event: CoreShowChannelsComplete\r\nActionID: {id}\r\nEventList: Complete\r\nListItems: 0\r\n\r\n"
            ),
            "ping" => format!("Response: Success\r\nActionID: {id}\r\nPing: Pong\r\n\r\n"),
            "logoff" => format!("Response: Goodbye\r\nActionID: {id}\r\nMessage: Thanks for all the fish.\r\n\r\n"),
            _ => format!("Response: Success\r\nActionID: {id}\r\n\r\n"),
        };
        fields.clear();
        {
            let mut w = s.writer.lock().unwrap();
            if let Some(w) = w.as_mut() {
                if w.write_all(reply.as_bytes()).is_err() {
                    return;
                }
            }
        }
        if action == "coreshowchannels" {
            *s.synced.lock().unwrap() += 1;
            s.synced_cv.notify_all();
        }
        if action == "logoff" {
            return;
        }
    }
}

/// A wrong-password security event for `ip`, as Asterisk 22's PJSIP writes it for a REGISTER
/// whose digest does not match (`ChallengeResponseFailed`) or names no such secret
/// (`InvalidPassword`); `n` makes its session id unique.
pub fn security_event(kind: &str, ip: IpAddr, n: u64) -> String {
    let fam = if ip.is_ipv4() { "IPV4" } else { "IPV6" };
    format!(
        "Event: {kind}\r\nPrivilege: security,all\r\nEventTV: 2026-11-21T08:31:31.674+0000\r\n\
         Severity: Error\r\nService: PJSIP\r\nEventVersion: 1\r\nAccountID: 701\r\n\
         SessionID: 1-{n}@{ip}\r\nLocalAddress: IPV4/UDP/198.51.100.1/5060\r\n\
         RemoteAddress: {fam}/UDP/{ip}/5102\r\nChallenge: 1795249891/66fb36fbaa260f1609ae19d9b7300a50\r\n\
         Response: 8d24e45c72f3d8e8478cc4c51d79036f\r\nExpectedResponse: \r\n\r\n"
    )
}
