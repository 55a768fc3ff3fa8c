//! A small blocking AMI client for tests: log in, send actions, wait for events with a timeout.
//!
//! Deliberately independent of `ami-listener/`: the tests check the daemon's AMI view against what
//! Asterisk really says, so they must not share its parser.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::netns::Netns;

/// A message longer than this is a broken peer, not a big event.
const MAX_PENDING: usize = 4 << 20;
/// Default bound on waiting for an action's response.
const ACTION_TIMEOUT: Duration = Duration::from_secs(10);

/// One AMI message (response or event): its `Key: Value` lines in order. Keys may repeat
/// (`Output:` lines of a `Command` response).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    pub fields: Vec<(String, String)>,
}

impl Message {
    /// The first value of `key` (case-insensitive, as AMI keys are).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The event name, if this is an event.
    pub fn event(&self) -> Option<&str> {
        self.get("Event")
    }

    /// Whether this is the event `name`.
    pub fn is(&self, name: &str) -> bool {
        self.event().is_some_and(|e| e.eq_ignore_ascii_case(name))
    }

    /// Whether `key` has exactly `value`.
    pub fn has(&self, key: &str, value: &str) -> bool {
        self.get(key) == Some(value)
    }

    /// Parses one message block (lines without the terminating blank line).
    pub fn parse(block: &str) -> Message {
        let fields = block
            .split("\r\n")
            .flat_map(|l| l.split('\n'))
            .filter(|l| !l.is_empty())
            .map(|line| match line.split_once(':') {
                Some((k, v)) => (k.trim().to_string(), v.trim_start().to_string()),
                None => (String::new(), line.to_string()),
            })
            .collect();
        Message { fields }
    }
}

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (k, v)) in self.fields.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{k}: {v}")?;
        }
        Ok(())
    }
}

/// Splits the first complete message (ended by a blank line) off `buf`.
fn take_message(buf: &mut Vec<u8>) -> Option<Message> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let block = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end + 4);
    Some(Message::parse(&block))
}

/// A logged-in (or about to be) AMI connection.
pub struct Ami {
    stream: TcpStream,
    pending: Vec<u8>,
    /// Events received and not yet taken by [`Ami::wait_event`].
    backlog: VecDeque<Message>,
    /// Names of every event seen, for failure messages.
    seen: Vec<String>,
    next_id: u64,
    /// The greeting line, e.g. `Asterisk Call Manager/11.0.0`.
    pub banner: String,
}

impl Ami {
    /// Connects to `addr` from inside namespace `ns` and reads the greeting.
    pub fn connect(ns: &Netns, addr: SocketAddr, timeout: Duration) -> Result<Ami, String> {
        let stream = ns
            .within(move || TcpStream::connect_timeout(&addr, timeout))
            .map_err(|e| format!("AMI connect to {addr} in {}: {e}", ns.name))?;
        let mut ami = Ami {
            stream,
            pending: Vec::new(),
            backlog: VecDeque::new(),
            seen: Vec::new(),
            next_id: 1,
            banner: String::new(),
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(end) = ami.pending.windows(2).position(|w| w == b"\r\n") {
                ami.banner = String::from_utf8_lossy(&ami.pending[..end]).into_owned();
                ami.pending.drain(..end + 2);
                break;
            }
            ami.fill(deadline)?;
        }
        if !ami.banner.starts_with("Asterisk Call Manager") {
            return Err(format!("not an AMI greeting: {:?}", ami.banner));
        }
        Ok(ami)
    }

    /// Connects and logs in; panics on failure.
    pub fn login_as(ns: &Netns, addr: SocketAddr, user: &str, secret: &str) -> Ami {
        let mut ami = Ami::connect(ns, addr, ACTION_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
        ami.login(user, secret).unwrap_or_else(|e| panic!("{e}"));
        ami
    }

    /// `Action: Login`; an error says what Asterisk answered.
    pub fn login(&mut self, user: &str, secret: &str) -> Result<(), String> {
        let resp = self.action("Login", &[("Username", user), ("Secret", secret)])?;
        if resp.has("Response", "Success") {
            Ok(())
        } else {
            Err(format!("AMI login as {user} refused: {resp}"))
        }
    }

    /// Sends an action and returns its response (events that arrive meanwhile go to the backlog).
    pub fn action(&mut self, action: &str, headers: &[(&str, &str)]) -> Result<Message, String> {
        let id = self.send(action, headers)?;
        let deadline = Instant::now() + ACTION_TIMEOUT;
        loop {
            let msg = self.read_message(deadline)?;
            if msg.get("Response").is_some() && msg.has("ActionID", &id) {
                return Ok(msg);
            }
            self.keep(msg);
        }
    }

    /// Sends a list action (`PJSIPShowContacts`, `CoreShowChannels` …) and returns its response and
    /// the events of the list, up to the `EventList: Complete` event.
    pub fn action_list(
        &mut self,
        action: &str,
        headers: &[(&str, &str)],
    ) -> Result<(Message, Vec<Message>), String> {
        let id = self.send(action, headers)?;
        let deadline = Instant::now() + ACTION_TIMEOUT;
        let mut response = None;
        let mut items = Vec::new();
        loop {
            let msg = self.read_message(deadline)?;
            if !msg.has("ActionID", &id) {
                self.keep(msg);
                continue;
            }
            if msg.get("Response").is_some() {
                if !msg.has("Response", "Success") {
                    return Err(format!("{action} failed: {msg}"));
                }
                response = Some(msg);
            } else if msg.has("EventList", "Complete") {
                let response = response.ok_or_else(|| format!("{action}: list without response"))?;
                return Ok((response, items));
            } else {
                items.push(msg);
            }
        }
    }

    /// Waits up to `timeout` for an event matching `pred`, taking it from the backlog (events that
    /// arrived earlier count). The error lists the events seen, to say what happened instead.
    pub fn wait_event(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&Message) -> bool,
    ) -> Result<Message, String> {
        if let Some(i) = self.backlog.iter().position(&pred) {
            return Ok(self.backlog.remove(i).unwrap());
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.read_message(deadline) {
                Ok(msg) if msg.event().is_some() && pred(&msg) => {
                    self.seen.push(msg.event().unwrap_or_default().to_string());
                    return Ok(msg);
                }
                Ok(msg) => self.keep(msg),
                Err(e) => {
                    let recent = &self.seen[self.seen.len().saturating_sub(40)..];
                    return Err(format!(
                        "no matching AMI event within {timeout:?} ({e}); events seen: {}",
                        recent.join(" ")
                    ));
                }
            }
        }
    }

    /// Like [`Ami::wait_event`], panicking with `what` and the events seen on timeout.
    pub fn expect_event(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Message) -> bool,
    ) -> Message {
        self.wait_event(timeout, pred)
            .unwrap_or_else(|e| panic!("waiting for {what}: {e}"))
    }

    /// Events received and not yet taken.
    pub fn backlog(&self) -> impl Iterator<Item = &Message> {
        self.backlog.iter()
    }

    /// Forgets every event received so far (after reading what is already buffered).
    pub fn clear(&mut self) {
        let _ = self.fill(Instant::now() + Duration::from_millis(10));
        while let Some(msg) = take_message(&mut self.pending) {
            self.keep(msg);
        }
        self.backlog.clear();
    }

    fn keep(&mut self, msg: Message) {
        if let Some(name) = msg.event() {
            self.seen.push(name.to_string());
            self.backlog.push_back(msg);
        }
    }

    fn send(&mut self, action: &str, headers: &[(&str, &str)]) -> Result<String, String> {
        let id = format!("pk-test-{}", self.next_id);
        self.next_id += 1;
        let mut text = format!("Action: {action}\r\nActionID: {id}\r\n");
        for (k, v) in headers {
            text.push_str(&format!("{k}: {v}\r\n"));
        }
        text.push_str("\r\n");
        self.stream
            .write_all(text.as_bytes())
            .map_err(|e| format!("AMI send {action}: {e}"))?;
        Ok(id)
    }

    fn read_message(&mut self, deadline: Instant) -> Result<Message, String> {
        loop {
            if let Some(msg) = take_message(&mut self.pending) {
                return Ok(msg);
            }
            self.fill(deadline)?;
        }
    }

    /// Reads what is available into `pending`, waiting at most until `deadline`.
    fn fill(&mut self, deadline: Instant) -> Result<(), String> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("timed out".into());
        }
        self.stream
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 8192];
        match self.stream.read(&mut buf) {
            Ok(0) => Err("AMI connection closed by Asterisk".into()),
            Ok(n) => {
                self.pending.extend_from_slice(&buf[..n]);
                if self.pending.len() > MAX_PENDING {
                    return Err("AMI message too long".into());
                }
                Ok(())
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Err("timed out".into())
            }
            Err(e) => Err(format!("AMI read: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    // Imports go inside the tests: benches include this file and drop #[test] fns.
    #[test]
    fn messages_split_on_blank_lines_and_keep_repeated_keys() {
        use super::*;
        let mut buf =
            b"Event: A\r\nK: v: w\r\n\r\nResponse: Success\r\nOutput: 1\r\nOutput: 2\r\n\r\nEv".to_vec();
        let a = take_message(&mut buf).unwrap();
        assert!(a.is("a"));
        assert_eq!(a.get("k"), Some("v: w"));
        let b = take_message(&mut buf).unwrap();
        assert_eq!(b.all("Output"), vec!["1", "2"]);
        assert!(take_message(&mut buf).is_none());
        assert_eq!(buf, b"Ev");
    }
}
