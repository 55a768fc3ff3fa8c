//! A scripted FastAGI peer for tests: listens where passknockd would, takes Asterisk's
//! `agi_*` environment, and sends the commands the test asks for one at a time.
//!
//! Independent of `agi/` on purpose: it checks what Asterisk sends, not what our codec parses.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use super::netns::Netns;

/// A listening FastAGI stub.
pub struct FastAgiStub {
    listener: TcpListener,
}

impl FastAgiStub {
    /// Listens on `addr` inside namespace `ns` (Asterisk there dials `agi://127.0.0.1:4573/…`).
    pub fn bind(ns: &Netns, addr: SocketAddr) -> FastAgiStub {
        let listener = ns
            .within(move || TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("bind FastAGI stub on {addr}: {e}"));
        listener.set_nonblocking(true).expect("nonblocking listener");
        FastAgiStub { listener }
    }

    /// Waits up to `timeout` for Asterisk to connect, and reads the environment block.
    pub fn accept(&self, timeout: Duration) -> Result<AgiSession, String> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match self.listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return Err(format!("no FastAGI connection within {timeout:?}"));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(format!("FastAGI accept: {e}")),
            }
        };
        stream.set_nonblocking(false).map_err(|e| e.to_string())?;
        let mut session = AgiSession {
            stream,
            pending: Vec::new(),
            env: Vec::new(),
            hangup_seen: false,
        };
        loop {
            let line = session.read_line(deadline)?;
            if line.is_empty() {
                break;
            }
            match line.split_once(": ") {
                Some((k, v)) => session.env.push((k.to_string(), v.to_string())),
                None => return Err(format!("not an AGI environment line: {line:?}")),
            }
        }
        Ok(session)
    }
}

/// One AGI conversation with a channel.
pub struct AgiSession {
    stream: TcpStream,
    pending: Vec<u8>,
    /// The `agi_*` variables Asterisk sent, in order.
    pub env: Vec<(String, String)>,
    /// Asterisk said `HANGUP`: the channel is gone.
    pub hangup_seen: bool,
}

/// A parsed AGI reply: `200 result=1 (203.0.113.10:5060)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgiReply {
    pub code: u16,
    /// The `result=` value, as text (a passcode keeps its leading zeros).
    pub result: String,
    /// The parenthesised data, if any (a variable's value; `timeout` after GET DATA).
    pub data: Option<String>,
    pub line: String,
}

impl AgiReply {
    pub fn parse(line: &str) -> Option<AgiReply> {
        let code = line.get(..3)?.parse().ok()?;
        let rest = line.get(3..)?.trim_start();
        let (result, data) = match rest.strip_prefix("result=") {
            Some(r) => {
                let (value, tail) = r.split_once(' ').unwrap_or((r, ""));
                let data = tail
                    .trim()
                    .strip_prefix('(')
                    .and_then(|t| t.strip_suffix(')'))
                    .map(str::to_string);
                (value.to_string(), data)
            }
            None => (String::new(), None),
        };
        Some(AgiReply {
            code,
            result,
            data,
            line: line.to_string(),
        })
    }
}

impl AgiSession {
    /// The value of an environment variable (`agi_network_script`, `agi_callerid`, …).
    pub fn var(&self, key: &str) -> Option<&str> {
        self.env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Sends one command and waits up to `timeout` for its reply.
    pub fn command(&mut self, cmd: &str, timeout: Duration) -> Result<AgiReply, String> {
        self.stream
            .write_all(format!("{cmd}\n").as_bytes())
            .map_err(|e| format!("FastAGI send {cmd:?}: {e}"))?;
        let deadline = Instant::now() + timeout;
        loop {
            let line = self.read_line(deadline)?;
            if line == "HANGUP" {
                // Asynchronous notice; the reply to our command still follows.
                self.hangup_seen = true;
                continue;
            }
            if line.starts_with("520-") {
                // Multi-line usage text ends with "520 End of proper usage.".
                let mut text = line;
                loop {
                    let more = self.read_line(deadline)?;
                    text.push('\n');
                    text.push_str(&more);
                    if more.starts_with("520 ") {
                        break;
                    }
                }
                return Err(format!("{cmd:?} was refused: {text}"));
            }
            return AgiReply::parse(&line).ok_or_else(|| format!("bad AGI reply {line:?}"));
        }
    }

    /// `GET VARIABLE name` and its value; `None` if the variable is unset.
    pub fn get_variable(&mut self, name: &str, timeout: Duration) -> Result<Option<String>, String> {
        let reply = self.command(&format!("GET VARIABLE \"{name}\""), timeout)?;
        if reply.code != 200 {
            return Err(format!("GET VARIABLE {name}: {}", reply.line));
        }
        Ok(if reply.result == "1" { reply.data } else { None })
    }

    /// Closes the conversation: Asterisk continues the dialplan with AGISTATUS=SUCCESS.
    pub fn close(self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    fn read_line(&mut self, deadline: Instant) -> Result<String, String> {
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line = String::from_utf8_lossy(&self.pending[..end])
                    .trim_end_matches('\r')
                    .to_string();
                self.pending.drain(..=end);
                return Ok(line);
            }
            if self.pending.len() > 64 * 1024 {
                return Err("AGI line too long".into());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("timed out waiting for Asterisk's AGI line".into());
            }
            self.stream
                .set_read_timeout(Some(left))
                .map_err(|e| e.to_string())?;
            let mut buf = [0u8; 4096];
            match self.stream.read(&mut buf) {
                Ok(0) => return Err("Asterisk closed the AGI connection".into()),
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => return Err(format!("AGI read: {e}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    // Imports go inside the tests: benches include this file and drop #[test] fns.
    #[test]
    fn replies_keep_result_text_and_data() {
        use super::*;
        let r = AgiReply::parse("200 result=0123 (timeout)").unwrap();
        assert_eq!(
            (r.code, r.result.as_str(), r.data.as_deref()),
            (200, "0123", Some("timeout"))
        );
        let r = AgiReply::parse("200 result=1 (203.0.113.10:5100)").unwrap();
        assert_eq!(r.data.as_deref(), Some("203.0.113.10:5100"));
        let r = AgiReply::parse("510 Invalid or unknown command").unwrap();
        assert_eq!((r.code, r.result.as_str()), (510, ""));
        assert!(AgiReply::parse("HANGUP").is_none());
    }
}
