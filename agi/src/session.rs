//! One FastAGI connection: sends commands, reads replies through the codec, under a deadline.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::codec::{Command, DecodeError, Decoder, Env, Event, Reply};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("the caller hung up")]
    Hangup,
    #[error("the session ran past its deadline")]
    Deadline,
    #[error("AGI connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("AGI protocol: {0}")]
    Decode(#[from] DecodeError),
    #[error("Asterisk refused `{command}`: {reply:?}")]
    Refused { command: String, reply: Reply },
    #[error("Asterisk closed the AGI connection")]
    Closed,
}

/// Every key of a phone's keypad.
pub const KEYS: &str = "0123456789*#";

/// A FastAGI session over any byte stream (a TCP socket, or an in-memory pipe in tests).
pub struct Session<S> {
    io: S,
    decoder: Decoder,
    env: Env,
    deadline: Instant,
    hung_up: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// Reads the environment block; the whole session must end by `now + limit`.
    pub async fn start(io: S, limit: Duration) -> Result<Session<S>, SessionError> {
        let mut s = Session {
            io,
            decoder: Decoder::new(),
            env: Env::default(),
            deadline: Instant::now() + limit,
            hung_up: false,
        };
        loop {
            match s.event().await? {
                Event::Env(env) => {
                    s.env = env;
                    return Ok(s);
                }
                Event::Hangup => s.hung_up = true,
                Event::Reply(_) => unreachable!("the decoder gives the environment first"),
            }
        }
    }

    pub fn env(&self) -> &Env {
        &self.env
    }

    pub fn hung_up(&self) -> bool {
        self.hung_up
    }

    async fn event(&mut self) -> Result<Event, SessionError> {
        let mut buf = [0u8; 1024];
        loop {
            if let Some(e) = self.decoder.decode()? {
                return Ok(e);
            }
            let read = tokio::time::timeout_at(self.deadline, self.io.read(&mut buf));
            match read.await {
                Err(_) => return Err(SessionError::Deadline),
                Ok(Ok(0)) => {
                    return Err(if self.hung_up {
                        SessionError::Hangup
                    } else {
                        SessionError::Closed
                    })
                }
                Ok(Ok(n)) => self.decoder.feed(&buf[..n]),
                Ok(Err(e)) => return Err(e.into()),
            }
        }
    }

    /// Sends one command and returns its reply. A `HANGUP` seen on the way makes a `-1` result
    /// (and any later command) a [`SessionError::Hangup`].
    pub async fn send(&mut self, command: &Command) -> Result<Reply, SessionError> {
        if self.hung_up && !matches!(command, Command::Hangup) {
            return Err(SessionError::Hangup);
        }
        let line = command.encode();
        tokio::time::timeout_at(self.deadline, self.io.write_all(line.as_bytes()))
            .await
            .map_err(|_| SessionError::Deadline)??;
        loop {
            match self.event().await? {
                Event::Hangup => self.hung_up = true,
                Event::Env(_) => unreachable!("one environment per session"),
                Event::Reply(r) => {
                    return match &r {
                        Reply::Success { result, .. } if result == "-1" && self.hung_up => {
                            Err(SessionError::Hangup)
                        }
                        Reply::Success { .. } => Ok(r),
                        Reply::DeadChannel => {
                            self.hung_up = true;
                            Err(SessionError::Hangup)
                        }
                        _ => Err(SessionError::Refused {
                            command: command
                                .to_string()
                                .split(' ')
                                .take(3)
                                .collect::<Vec<_>>()
                                .join(" "),
                            reply: r,
                        }),
                    };
                }
            }
        }
    }

    pub async fn answer(&mut self) -> Result<(), SessionError> {
        self.send(&Command::Answer).await.map(|_| ())
    }

    /// Plays `file` and collects digits ended by `#`. Returns the digits as keyed (leading zeros
    /// kept) and whether input timed out.
    pub async fn get_data(
        &mut self,
        file: &str,
        timeout_ms: u32,
        max_digits: u32,
    ) -> Result<(String, bool), SessionError> {
        let r = self
            .send(&Command::GetData {
                file: file.into(),
                timeout_ms,
                max_digits,
            })
            .await?;
        match r {
            Reply::Success { result, data, .. } if result == "-1" => {
                let _ = data;
                Err(SessionError::Hangup)
            }
            Reply::Success { result, data, .. } => Ok((result, data.as_deref() == Some("timeout"))),
            _ => unreachable!("send returns only successes"),
        }
    }

    /// Plays `file` to the end. A `-1` result means the file is missing or the channel is gone.
    pub async fn stream_file(&mut self, file: &str) -> Result<bool, SessionError> {
        let r = self
            .send(&Command::StreamFile {
                file: file.into(),
                escape: String::new(),
            })
            .await?;
        Ok(r.result() != Some("-1"))
    }

    /// Plays `file` until the caller presses a key; returns that key, or `None` when the file
    /// played to its end (or is missing).
    pub async fn stream_file_until_key(&mut self, file: &str) -> Result<Option<char>, SessionError> {
        let r = self
            .send(&Command::StreamFile {
                file: file.into(),
                escape: KEYS.into(),
            })
            .await?;
        // The result is the key's character code, 0 when none was pressed.
        Ok(r.result()
            .and_then(|code| code.parse::<u32>().ok())
            .and_then(char::from_u32)
            .filter(|c| KEYS.contains(*c)))
    }

    pub async fn say_number(&mut self, number: i64) -> Result<(), SessionError> {
        self.send(&Command::SayNumber {
            number,
            escape: String::new(),
        })
        .await
        .map(|_| ())
    }

    pub async fn say_digits(&mut self, digits: &str) -> Result<(), SessionError> {
        self.send(&Command::SayDigits {
            digits: digits.into(),
            escape: String::new(),
        })
        .await
        .map(|_| ())
    }

    /// `${name}`, or `None` when it is not set.
    pub async fn get_variable(&mut self, name: &str) -> Result<Option<String>, SessionError> {
        let r = self.send(&Command::GetVariable { name: name.into() }).await?;
        Ok(match r {
            Reply::Success { result, data, .. } if result == "1" => data,
            _ => None,
        })
    }

    /// An expression with `${…}` substitutions, or `None` when it comes out empty.
    pub async fn get_full_variable(&mut self, expression: &str) -> Result<Option<String>, SessionError> {
        let r = self
            .send(&Command::GetFullVariable {
                expression: expression.into(),
            })
            .await?;
        Ok(match r {
            Reply::Success { result, data, .. } if result == "1" => data.filter(|d| !d.is_empty()),
            _ => None,
        })
    }

    pub async fn set_variable(&mut self, name: &str, value: &str) -> Result<(), SessionError> {
        self.send(&Command::SetVariable {
            name: name.into(),
            value: value.into(),
        })
        .await
        .map(|_| ())
    }

    /// Ends the call. Errors are ignored: the caller may already be gone.
    pub async fn hangup(&mut self) {
        let _ = self.send(&Command::Hangup).await;
        let _ = self.io.shutdown().await;
    }
}
