//! A short, blocking AMI conversation for the doctor: log in as the daemon does, ask, leave. The
//! wire format is the listener's own codec, so the doctor reads Asterisk exactly as the daemon
//! does.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use ami_listener::client::md5_key;
use ami_listener::codec::{Action, Decoder, DecoderCaps, Frame, Message, GREETING_PREFIX};
use ami_listener::AmiSecret;

use crate::config::AmiLogin;

pub struct Ami {
    stream: TcpStream,
    buf: Vec<u8>,
    decoder: Decoder,
    timeout: Duration,
    next_id: u32,
}

impl Ami {
    /// Connects and reads the greeting.
    pub fn connect(address: &str, timeout: Duration) -> Result<Ami, String> {
        let addrs: Vec<_> = address
            .to_socket_addrs()
            .map_err(|e| format!("`{address}` does not resolve: {e}"))?
            .collect();
        let mut last = format!("`{address}` has no address");
        for a in addrs {
            match TcpStream::connect_timeout(&a, timeout) {
                Ok(stream) => {
                    let mut ami = Ami {
                        stream,
                        buf: Vec::new(),
                        decoder: Decoder::new(DecoderCaps::default()),
                        timeout,
                        next_id: 0,
                    };
                    return match ami.frame(Instant::now() + timeout)? {
                        Frame::Greeting(g) if g.starts_with(GREETING_PREFIX) => Ok(ami),
                        Frame::Greeting(g) => Err(format!("{address} is not AMI (it says {g:?})")),
                        _ => Err(format!("{address} is not AMI")),
                    };
                }
                Err(e) => last = format!("cannot connect to {a}: {e}"),
            }
        }
        Err(last)
    }

    fn frame(&mut self, deadline: Instant) -> Result<Frame, String> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some(f) = self.decoder.decode(&mut self.buf) {
                return Ok(f);
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or("Asterisk did not answer in time")?;
            self.stream
                .set_read_timeout(Some(left))
                .map_err(|e| e.to_string())?;
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err("Asterisk closed the connection".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err("Asterisk did not answer in time".into())
                }
                Err(e) => return Err(format!("reading from AMI: {e}")),
            }
        }
    }

    /// Sends `action` and returns its response and, for a list, the events that came with it.
    pub fn request(
        &mut self,
        name: &'static str,
        headers: &[(&'static str, &str)],
    ) -> Result<(Message, Vec<Message>), String> {
        self.next_id += 1;
        let id = format!("doctor-{}", self.next_id);
        let mut action = Action::new(name, id.clone());
        for (k, v) in headers {
            action = action.header(k, *v);
        }
        self.stream
            .write_all(&action.encode())
            .map_err(|e| format!("writing to AMI: {e}"))?;
        let deadline = Instant::now() + self.timeout;
        let mut response = None;
        let mut events = Vec::new();
        loop {
            let Frame::Message(m) = self.frame(deadline)? else {
                continue;
            };
            if m.action_id() != Some(id.as_str()) {
                continue; // an event for everyone
            }
            if m.response().is_some() {
                let list = m.is("EventList", "start");
                response = Some(m);
                if !list {
                    break;
                }
            } else if m.is("EventList", "Complete") {
                break;
            } else {
                events.push(m);
            }
        }
        Ok((response.expect("set before the loop ends"), events))
    }

    /// Logs in as the daemon does; `Err` carries Asterisk's reason.
    pub fn login(&mut self, user: &str, secret: &AmiSecret, method: AmiLogin) -> Result<(), String> {
        let reply = match method {
            AmiLogin::Md5 => {
                let (ch, _) = self.request("Challenge", &[("AuthType", "MD5")])?;
                let challenge = ch
                    .get("Challenge")
                    .filter(|_| ch.is("Response", "Success"))
                    .ok_or_else(|| format!("no MD5 challenge: {}", ch.get("Message").unwrap_or("")))?
                    .to_string();
                let key = md5_key(&challenge, secret);
                self.request(
                    "Login",
                    &[
                        ("AuthType", "MD5"),
                        ("Username", user),
                        ("Key", &key),
                        ("Events", "off"),
                    ],
                )?
                .0
            }
            AmiLogin::Plain => {
                self.request(
                    "Login",
                    &[("Username", user), ("Secret", secret.expose()), ("Events", "off")],
                )?
                .0
            }
        };
        if reply.is("Response", "Success") {
            Ok(())
        } else {
            Err(reply.get("Message").unwrap_or("no reason given").to_string())
        }
    }

    pub fn logoff(mut self) {
        let _ = self
            .stream
            .write_all(&Action::new("Logoff", "doctor-bye").encode());
    }
}
