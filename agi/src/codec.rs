//! The AGI wire format, with no IO.
//!
//! # Format
//!
//! Asterisk opens with an environment block, `agi_name: value` lines ended by an empty line. Each
//! command we send is one line; each reply is `200 result=VALUE [(DATA)] [endpos=N]`, or
//! `510 …` (unknown command), `511 …` (dead channel), or a `520-` block of usage lines closed by
//! `520 …`. When the caller hangs up, FastAGI sends a bare `HANGUP` line, ahead of any reply.
//! `result` is kept as text: a passcode's leading zeros are part of it.

use std::fmt;

/// Longest line accepted from Asterisk.
pub const MAX_LINE: usize = 4096;
/// Most `agi_*` variables in an environment block.
pub const MAX_ENV: usize = 128;
/// Most lines in a `520` usage block.
pub const MAX_USAGE_LINES: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("a line from Asterisk is longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("the AGI environment has more than {MAX_ENV} variables")]
    TooManyVariables,
    #[error("a usage block from Asterisk has more than {MAX_USAGE_LINES} lines")]
    UsageTooLong,
    #[error("not an AGI environment line: {0:?}")]
    BadEnvLine(String),
    #[error("not an AGI reply: {0:?}")]
    BadReply(String),
}

/// The `agi_*` variables Asterisk sends first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Env {
    vars: Vec<(String, String)>,
}

impl Env {
    /// A variable by its name without the `agi_` prefix (`"callerid"`, `"channel"`).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k.strip_prefix("agi_") == Some(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn len(&self) -> usize {
        self.vars.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// The script part of `agi_network_script` / the request URL: `disa` for `agi://host/disa`.
    pub fn script(&self) -> Option<&str> {
        self.get("network_script")
    }
}

/// A reply to one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `200 result=…`.
    Success {
        result: String,
        data: Option<String>,
        endpos: Option<u64>,
    },
    /// `510`: Asterisk does not know the command.
    InvalidCommand,
    /// `511`: the channel is dead.
    DeadChannel,
    /// `520`: bad syntax, with Asterisk's usage text.
    Usage(Vec<String>),
    /// Any other code.
    Other { code: u16, text: String },
}

impl Reply {
    /// `result=` of a success, if that is what this is.
    pub fn result(&self) -> Option<&str> {
        match self {
            Reply::Success { result, .. } => Some(result),
            _ => None,
        }
    }
}

/// What the decoder found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Env(Env),
    Reply(Reply),
    /// The caller hung up.
    Hangup,
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Env,
    Replies,
}

/// Bytes in, events out. "Incomplete" is not an error: `next` returns `None` until a whole
/// line (or block) is there.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    state: State,
    env: Vec<(String, String)>,
    usage: Option<Vec<String>>,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Appends bytes read from the socket.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Whether more input is buffered than any one line may hold (the caller should give up).
    pub fn overfull(&self) -> bool {
        !self.buf.contains(&b'\n') && self.buf.len() > MAX_LINE
    }

    fn line(&mut self) -> Result<Option<String>, DecodeError> {
        let Some(pos) = self.buf.iter().position(|b| *b == b'\n') else {
            if self.buf.len() > MAX_LINE {
                return Err(DecodeError::LineTooLong);
            }
            return Ok(None);
        };
        if pos > MAX_LINE {
            return Err(DecodeError::LineTooLong);
        }
        let raw: Vec<u8> = self.buf.drain(..=pos).collect();
        let mut s = String::from_utf8_lossy(&raw[..pos]).into_owned();
        if s.ends_with('\r') {
            s.pop();
        }
        Ok(Some(s))
    }

    /// The next whole event, if one is buffered.
    pub fn decode(&mut self) -> Result<Option<Event>, DecodeError> {
        loop {
            let Some(line) = self.line()? else {
                return Ok(None);
            };
            match self.state {
                State::Env => {
                    if line.is_empty() {
                        self.state = State::Replies;
                        return Ok(Some(Event::Env(Env {
                            vars: std::mem::take(&mut self.env),
                        })));
                    }
                    if line == "HANGUP" {
                        return Ok(Some(Event::Hangup));
                    }
                    let Some((k, v)) = line.split_once(':') else {
                        return Err(DecodeError::BadEnvLine(truncate(&line)));
                    };
                    if !k.starts_with("agi_") {
                        return Err(DecodeError::BadEnvLine(truncate(&line)));
                    }
                    if self.env.len() >= MAX_ENV {
                        return Err(DecodeError::TooManyVariables);
                    }
                    self.env.push((k.to_string(), v.trim_start().to_string()));
                }
                State::Replies => {
                    if let Some(usage) = self.usage.as_mut() {
                        if line.starts_with("520 ") || line == "520" {
                            let lines = self.usage.take().unwrap_or_default();
                            return Ok(Some(Event::Reply(Reply::Usage(lines))));
                        }
                        if usage.len() >= MAX_USAGE_LINES {
                            return Err(DecodeError::UsageTooLong);
                        }
                        usage.push(line);
                        continue;
                    }
                    if line == "HANGUP" {
                        return Ok(Some(Event::Hangup));
                    }
                    if line.is_empty() {
                        continue;
                    }
                    if let Some(rest) = line.strip_prefix("520-") {
                        self.usage = Some(vec![rest.to_string()]);
                        continue;
                    }
                    return parse_reply(&line).map(|r| Some(Event::Reply(r)));
                }
            }
        }
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Parses one reply line (not the `520-` block).
pub fn parse_reply(line: &str) -> Result<Reply, DecodeError> {
    let bad = || DecodeError::BadReply(truncate(line));
    let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).ok_or_else(bad)?;
    let rest = line[3..].trim_start();
    match code {
        200 => {
            let rest = rest.strip_prefix("result=").ok_or_else(bad)?;
            // result is up to the first space; then an optional (data) — which may itself hold
            // spaces and parentheses — and an optional endpos=N.
            let (result, mut tail) = match rest.find(' ') {
                Some(i) => (&rest[..i], rest[i + 1..].trim_start()),
                None => (rest, ""),
            };
            let mut data = None;
            let mut endpos = None;
            if tail.starts_with('(') {
                let close = tail.rfind(')').ok_or_else(bad)?;
                data = Some(tail[1..close].to_string());
                tail = tail[close + 1..].trim_start();
            }
            if let Some(n) = tail.strip_prefix("endpos=") {
                endpos = Some(n.trim().parse().map_err(|_| bad())?);
            }
            Ok(Reply::Success {
                result: result.to_string(),
                data,
                endpos,
            })
        }
        510 => Ok(Reply::InvalidCommand),
        511 => Ok(Reply::DeadChannel),
        _ => Ok(Reply::Other {
            code,
            text: rest.to_string(),
        }),
    }
}

/// A command we send. Arguments are quoted so spaces and quotes survive Asterisk's parser.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Answer,
    /// Plays `file` and collects digits until `#`, `max_digits`, or `timeout_ms` of silence.
    GetData {
        file: String,
        timeout_ms: u32,
        max_digits: u32,
    },
    /// Plays `file`; a digit in `escape` stops it.
    StreamFile {
        file: String,
        escape: String,
    },
    SayNumber {
        number: i64,
        escape: String,
    },
    SayDigits {
        digits: String,
        escape: String,
    },
    /// `${name}` — a variable or a dialplan function such as `CHANNEL(pjsip,remote_addr)`.
    GetVariable {
        name: String,
    },
    /// An expression with `${…}` substitutions.
    GetFullVariable {
        expression: String,
    },
    SetVariable {
        name: String,
        value: String,
    },
    Verbose {
        message: String,
        level: u8,
    },
    Hangup,
}

impl Command {
    /// The command line, newline included.
    pub fn encode(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        match self {
            Command::Answer => parts.push("ANSWER".into()),
            Command::GetData {
                file,
                timeout_ms,
                max_digits,
            } => parts.extend([
                "GET DATA".into(),
                quote(file),
                timeout_ms.to_string(),
                max_digits.to_string(),
            ]),
            Command::StreamFile { file, escape } => {
                parts.extend(["STREAM FILE".into(), quote(file), quote(escape)])
            }
            Command::SayNumber { number, escape } => {
                parts.extend(["SAY NUMBER".into(), number.to_string(), quote(escape)])
            }
            Command::SayDigits { digits, escape } => {
                parts.extend(["SAY DIGITS".into(), quote(digits), quote(escape)])
            }
            Command::GetVariable { name } => parts.extend(["GET VARIABLE".into(), quote(name)]),
            Command::GetFullVariable { expression } => {
                parts.extend(["GET FULL VARIABLE".into(), quote(expression)])
            }
            Command::SetVariable { name, value } => {
                parts.extend(["SET VARIABLE".into(), quote(name), quote(value)])
            }
            Command::Verbose { message, level } => {
                parts.extend(["VERBOSE".into(), quote(message), level.to_string()])
            }
            Command::Hangup => parts.push("HANGUP".into()),
        }
        let mut line = parts.join(" ");
        line.push('\n');
        line
    }
}

/// Quotes one argument the way Asterisk's AGI parser reads it back: in double quotes, with `\`
/// and `"` escaped. A line break cannot be sent at all, so it becomes a space.
pub fn quote(arg: &str) -> String {
    let mut out = String::with_capacity(arg.len() + 2);
    out.push('"');
    for c in arg.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.encode().trim_end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<Vec<Event>, DecodeError> {
        let mut d = Decoder::new();
        d.feed(input);
        let mut out = Vec::new();
        while let Some(e) = d.decode()? {
            out.push(e);
        }
        Ok(out)
    }

    #[test]
    fn env_then_replies_keep_leading_zeros() {
        let input = b"agi_network: yes\nagi_network_script: disa\nagi_request: agi://127.0.0.1:4573/disa\nagi_callerid: 0123\nagi_arg_1: \n\n200 result=000123456789 (timeout)\n200 result=1 (203.0.113.10:5060)\n200 result=0 endpos=1234\n200 result=-1\n";
        let ev = decode_all(input).unwrap();
        let Event::Env(env) = &ev[0] else { panic!() };
        assert_eq!(env.script(), Some("disa"));
        assert_eq!(env.get("callerid"), Some("0123"));
        assert_eq!(env.get("arg_1"), Some(""));
        assert_eq!(
            ev[1],
            Event::Reply(Reply::Success {
                result: "000123456789".into(),
                data: Some("timeout".into()),
                endpos: None
            })
        );
        assert_eq!(
            ev[2],
            Event::Reply(Reply::Success {
                result: "1".into(),
                data: Some("203.0.113.10:5060".into()),
                endpos: None
            })
        );
        assert_eq!(
            ev[3],
            Event::Reply(Reply::Success {
                result: "0".into(),
                data: None,
                endpos: Some(1234)
            })
        );
        assert_eq!(
            ev[4].clone(),
            Event::Reply(Reply::Success {
                result: "-1".into(),
                data: None,
                endpos: None
            })
        );
    }

    #[test]
    fn error_codes_usage_blocks_and_hangup() {
        let input = b"agi_channel: PJSIP/701-0001\n\n510 Invalid or unknown command\n511 Command Not Permitted on a dead channel or intercept routine\n520-Invalid command syntax.  Proper usage follows:\n Usage: GET DATA <file to be streamed> [timeout] [max digits]\n520 End of proper usage.\nHANGUP\n200 result=-1\n";
        let ev = decode_all(input).unwrap();
        assert_eq!(ev[1], Event::Reply(Reply::InvalidCommand));
        assert_eq!(ev[2], Event::Reply(Reply::DeadChannel));
        let Event::Reply(Reply::Usage(lines)) = &ev[3] else {
            panic!("{:?}", ev[3])
        };
        assert_eq!(lines.len(), 2);
        assert_eq!(ev[4], Event::Hangup);
    }

    #[test]
    fn incomplete_is_not_an_error() {
        let mut d = Decoder::new();
        d.feed(b"agi_chan");
        assert_eq!(d.decode(), Ok(None));
        d.feed(b"nel: x\n\n200 res");
        assert!(matches!(d.decode(), Ok(Some(Event::Env(_)))));
        assert_eq!(d.decode(), Ok(None));
        d.feed(b"ult=5\r\n");
        assert_eq!(
            d.decode().unwrap().unwrap(),
            Event::Reply(Reply::Success {
                result: "5".into(),
                data: None,
                endpos: None
            })
        );
    }

    #[test]
    fn hostile_input_is_refused_not_buffered_forever() {
        assert_eq!(decode_all(&[b'a'; MAX_LINE + 2]), Err(DecodeError::LineTooLong));
        let mut many = Vec::new();
        for i in 0..=MAX_ENV {
            many.extend_from_slice(format!("agi_v{i}: x\n").as_bytes());
        }
        assert_eq!(decode_all(&many), Err(DecodeError::TooManyVariables));
        assert!(matches!(
            decode_all(b"garbage\n"),
            Err(DecodeError::BadEnvLine(_))
        ));
        assert!(matches!(
            decode_all(b"\nnot a reply\n"),
            Err(DecodeError::BadReply(_))
        ));
        assert!(matches!(
            decode_all(b"\n200 result=1 (unclosed\n"),
            Err(DecodeError::BadReply(_))
        ));
        let mut usage = b"\n520-x\n".to_vec();
        for _ in 0..MAX_USAGE_LINES {
            usage.extend_from_slice(b"line\n");
        }
        assert_eq!(decode_all(&usage), Err(DecodeError::UsageTooLong));
    }

    #[test]
    fn commands_are_quoted() {
        assert_eq!(
            Command::GetData {
                file: "agent-pass".into(),
                timeout_ms: 10000,
                max_digits: 20
            }
            .encode(),
            "GET DATA \"agent-pass\" 10000 20\n"
        );
        assert_eq!(
            Command::GetVariable {
                name: "CHANNEL(pjsip,remote_addr)".into()
            }
            .encode(),
            "GET VARIABLE \"CHANNEL(pjsip,remote_addr)\"\n"
        );
        assert_eq!(
            Command::Verbose {
                message: "say \"hi\"\\\nnow".into(),
                level: 1
            }
            .encode(),
            "VERBOSE \"say \\\"hi\\\"\\\\ now\" 1\n"
        );
        assert_eq!(
            Command::StreamFile {
                file: "beep".into(),
                escape: "".into()
            }
            .encode(),
            "STREAM FILE \"beep\" \"\"\n"
        );
    }
}

#[cfg(test)]
mod fuzz {
    //! Property tests: any bytes, split anywhere, never panic the decoder; every command line
    //! is one line.
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn decoder_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20)) {
            let mut d = Decoder::new();
            for c in chunks {
                d.feed(&c);
                while let Ok(Some(_)) = d.decode() {}
            }
        }

        #[test]
        fn decoder_never_panics_on_agi_like_text(lines in proptest::collection::vec("(agi_[a-z]{0,5}: .{0,20}|200 result=[-0-9a-z]{0,6}( \\(.{0,10}\\)?)?( endpos=[0-9a-z]{0,4})?|5[12][0-9][- ].{0,10}|HANGUP|)", 0..40)) {
            let mut d = Decoder::new();
            d.feed(lines.join("\n").as_bytes());
            while let Ok(Some(_)) = d.decode() {}
        }

        #[test]
        fn commands_are_one_line(s in ".{0,64}") {
            for c in [
                Command::GetVariable { name: s.clone() },
                Command::Verbose { message: s.clone(), level: 1 },
                Command::StreamFile { file: s.clone(), escape: s.clone() },
            ] {
                let line = c.encode();
                prop_assert_eq!(line.matches('\n').count(), 1);
                prop_assert!(line.ends_with('\n'));
            }
        }
    }
}
