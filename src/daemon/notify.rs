//! systemd's notify protocol (`Type=notify`): one datagram to `$NOTIFY_SOCKET` saying `READY=1`
//! once the table is applied, `RELOADING=1` and `STOPPING=1` as they happen, and `WATCHDOG=1`
//! from the engine's loop while it makes progress. No-op outside systemd.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// Sends `state` (e.g. `READY=1\nSTATUS=…`) to the service manager, if there is one.
pub fn notify(state: &str) -> std::io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        // An abstract socket: the name after '@', with a leading NUL.
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
            return Ok(true);
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = name;
            return Ok(false);
        }
    }
    sock.send_to(state.as_bytes(), std::path::Path::new(&path))?;
    Ok(true)
}

/// The service manager's watchdog (`WatchdogSec=`): pinged from the loop it guards, so a loop
/// that stops turning stops the pings, and systemd restarts the daemon.
#[derive(Debug)]
pub struct Watchdog {
    every: Duration,
    next: Instant,
}

impl Watchdog {
    /// The watchdog systemd asked for (`WATCHDOG_USEC`, for this process if `WATCHDOG_PID` says
    /// whom), pinged every half of its timeout as sd_watchdog_enabled(3) advises; `None` without.
    pub fn from_env() -> Option<Watchdog> {
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        let every = interval(usec.as_deref(), pid.as_deref(), std::process::id())?;
        Some(Watchdog {
            every,
            next: Instant::now(),
        })
    }

    /// How long until the next ping is due.
    pub fn until_due(&self, now: Instant) -> Duration {
        self.next.saturating_duration_since(now)
    }

    /// Pings if one is due. A failed send is not retried before the next period: systemd then
    /// restarts a daemon it cannot hear, which is the point.
    pub fn tick(&mut self, now: Instant) {
        if now >= self.next {
            let _ = notify("WATCHDOG=1");
            self.next = now + self.every;
        }
    }
}

/// The ping interval for `WATCHDOG_USEC`/`WATCHDOG_PID`, read by process `me`: half the timeout.
fn interval(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    if let Some(pid) = pid {
        // Meant for another process (ours was inherited from a parent): not ours to feed.
        if pid.trim().parse::<u32>().ok() != Some(me) {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_interval_is_half_the_timeout_and_only_for_us() {
        assert_eq!(interval(Some("30000000"), None, 7), Some(Duration::from_secs(15)));
        assert_eq!(
            interval(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(interval(Some("30000000"), Some("8"), 7), None);
        assert_eq!(interval(None, Some("7"), 7), None);
        assert_eq!(interval(Some("0"), None, 7), None);
        assert_eq!(interval(Some("soon"), None, 7), None);
    }

    #[test]
    fn sends_to_the_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        // The one test touching NOTIFY_SOCKET in this process.
        std::env::set_var("NOTIFY_SOCKET", &path);
        assert!(notify("READY=1\nSTATUS=test").unwrap());
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=test");
        assert!(!notify("READY=1").unwrap(), "no socket, no message");
    }
}
