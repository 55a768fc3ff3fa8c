//! The AMI wire format, with no IO: bytes in, greeting and messages out, every length capped.
//!
//! # Format
//!
//! Asterisk opens with one greeting line, `Asterisk Call Manager/11.0.0`. After that every
//! message — a response to an action, or an event — is a block of `Key: Value` lines ended by an
//! empty line. Lines end with CRLF; a bare LF is accepted too. Keys are case-insensitive and may
//! repeat.
//!
//! The peer is untrusted: a line longer than [`DecoderCaps::max_line`], a block longer than
//! [`DecoderCaps::max_block`] or with more than [`DecoderCaps::max_fields`] fields, or a line that is not
//! `Key: Value`, makes the decoder drop that block — without buffering it — and say so with a
//! [`Frame::Skipped`]; decoding goes on at the next block. "Not enough bytes yet" is `None`, not an
//! error.

use std::fmt;

/// Caps on what one peer may make us hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecoderCaps {
    /// Longest line, terminator excluded.
    pub max_line: usize,
    /// Longest block: the sum of its lines.
    pub max_block: usize,
    /// Most `Key: Value` lines in a block.
    pub max_fields: usize,
}

impl Default for DecoderCaps {
    /// Asterisk's own events are a few hundred bytes and a few dozen fields; a `ContactList` item
    /// is under 1 KiB. These leave room for long channel variables and nothing like a flood.
    fn default() -> Self {
        DecoderCaps {
            max_line: 8 * 1024,
            max_block: 64 * 1024,
            max_fields: 256,
        }
    }
}

/// One AMI message: its fields in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    pub fields: Vec<(String, String)>,
}

impl Message {
    /// The first value of `key` (AMI keys are case-insensitive).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// The event name, if this is an event.
    pub fn event(&self) -> Option<&str> {
        self.get("Event")
    }

    /// `Success`, `Error`, `Goodbye`, … if this is a response.
    pub fn response(&self) -> Option<&str> {
        self.get("Response")
    }

    pub fn action_id(&self) -> Option<&str> {
        self.get("ActionID")
    }

    /// Whether `key` is `value`, ignoring ASCII case.
    pub fn is(&self, key: &str, value: &str) -> bool {
        self.get(key).is_some_and(|v| v.eq_ignore_ascii_case(value))
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.fields.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{k}: {v}")?;
        }
        Ok(())
    }
}

/// Why a block was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    LineTooLong,
    BlockTooLong,
    TooManyFields,
    /// A line that is not `Key: Value`.
    Garbage,
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Skip::LineTooLong => "a line over the line cap",
            Skip::BlockTooLong => "a block over the block cap",
            Skip::TooManyFields => "a block with too many fields",
            Skip::Garbage => "a line that is not `Key: Value`",
        })
    }
}

/// What the decoder found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// The first line of a connection.
    Greeting(String),
    Message(Message),
    /// A block was dropped; decoding goes on with the next one.
    Skipped(Skip),
}

/// The greeting every AMI server sends first.
pub const GREETING_PREFIX: &str = "Asterisk Call Manager/";

/// A streaming decoder for one connection.
#[derive(Debug)]
pub struct Decoder {
    limits: DecoderCaps,
    greeted: bool,
    fields: Vec<(String, String)>,
    block_len: usize,
    /// Dropping the rest of the current block, up to its empty line.
    discarding: bool,
    /// The front of `buf` is the tail of a line already dropped for its length.
    mid_line: bool,
    /// Bytes of `buf` already searched for a line end.
    scanned: usize,
}

impl Decoder {
    pub fn new(limits: DecoderCaps) -> Decoder {
        Decoder {
            limits,
            greeted: false,
            fields: Vec::new(),
            block_len: 0,
            discarding: false,
            mid_line: false,
            scanned: 0,
        }
    }

    /// A decoder for a stream that has no greeting (tests, benches).
    pub fn without_greeting(limits: DecoderCaps) -> Decoder {
        Decoder {
            greeted: true,
            ..Decoder::new(limits)
        }
    }

    /// Takes the next frame off the front of `buf`, or `None` if `buf` holds no whole one yet.
    /// Whatever it consumes is removed from `buf`; `buf` never has to grow past
    /// `max_line + 1` (a line and its CR) plus one read, because a line over the cap is dropped
    /// as it arrives.
    pub fn decode(&mut self, buf: &mut Vec<u8>) -> Option<Frame> {
        let mut start = 0;
        let frame = loop {
            let Some(nl) = memchr(b'\n', &buf[start + self.scanned..]) else {
                let pending = buf.len() - start;
                // One byte of slack: a line of exactly `max_line` whose read ended between its CR
                // and its LF is not too long, and must not be judged so before the LF arrives.
                if pending > self.limits.max_line + 1 {
                    // A line over the cap: drop what we have of it and the rest of its block.
                    start = buf.len();
                    self.scanned = 0;
                    self.mid_line = true;
                    if !self.discarding {
                        self.begin_discard();
                        break Some(Frame::Skipped(Skip::LineTooLong));
                    }
                } else {
                    self.scanned = pending;
                }
                break None;
            };
            let end = start + self.scanned + nl;
            self.scanned = 0;
            let mut line = &buf[start..end];
            start = end + 1;
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            if std::mem::take(&mut self.mid_line) {
                continue; // the rest of a line too long to keep; even if empty, it ends no block
            }
            if line.len() > self.limits.max_line {
                if !self.discarding {
                    self.begin_discard();
                    break Some(Frame::Skipped(Skip::LineTooLong));
                }
                continue;
            }
            if !self.greeted {
                self.greeted = true;
                break Some(Frame::Greeting(String::from_utf8_lossy(line).into_owned()));
            }
            if line.is_empty() {
                if self.discarding {
                    self.discarding = false;
                    continue;
                }
                if self.fields.is_empty() {
                    continue; // stray blank line between blocks
                }
                self.block_len = 0;
                break Some(Frame::Message(Message {
                    fields: std::mem::take(&mut self.fields),
                }));
            }
            if self.discarding {
                continue;
            }
            self.block_len += line.len();
            if self.block_len > self.limits.max_block {
                self.begin_discard();
                break Some(Frame::Skipped(Skip::BlockTooLong));
            }
            if self.fields.len() >= self.limits.max_fields {
                self.begin_discard();
                break Some(Frame::Skipped(Skip::TooManyFields));
            }
            match split_field(line) {
                Some(kv) => self.fields.push(kv),
                None => {
                    self.begin_discard();
                    break Some(Frame::Skipped(Skip::Garbage));
                }
            }
        };
        buf.drain(..start);
        frame
    }

    fn begin_discard(&mut self) {
        self.discarding = true;
        self.fields.clear();
        self.block_len = 0;
    }
}

/// `Key: Value` → (key, value). The key is printable ASCII without spaces; the value is taken as
/// sent (lossy UTF-8), less the one space after the colon.
fn split_field(line: &[u8]) -> Option<(String, String)> {
    let colon = memchr(b':', line)?;
    let key = &line[..colon];
    if key.is_empty() || !key.iter().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let mut value = &line[colon + 1..];
    if value.first() == Some(&b' ') {
        value = &value[1..];
    }
    Some((
        String::from_utf8_lossy(key).into_owned(),
        String::from_utf8_lossy(value).into_owned(),
    ))
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|b| *b == needle)
}

/// An action to send: `Action: NAME`, then its headers, then an empty line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Action {
    pub name: &'static str,
    pub id: String,
    pub headers: Vec<(&'static str, String)>,
}

impl Action {
    pub fn new(name: &'static str, id: impl Into<String>) -> Action {
        Action {
            name,
            id: id.into(),
            headers: Vec::new(),
        }
    }

    pub fn header(mut self, key: &'static str, value: impl Into<String>) -> Action {
        self.headers.push((key, value.into()));
        self
    }

    /// The wire form. CR and LF in values are dropped: a value must not end the block or start
    /// a header of its own.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = format!("Action: {}\r\nActionID: {}\r\n", self.name, clean(&self.id));
        for (k, v) in &self.headers {
            out.push_str(k);
            out.push_str(": ");
            out.push_str(&clean(v));
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

fn clean(v: &str) -> String {
    v.chars().filter(|c| *c != '\r' && *c != '\n').collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(dec: &mut Decoder, buf: &mut Vec<u8>) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Some(f) = dec.decode(buf) {
            out.push(f);
        }
        out
    }

    fn msg(pairs: &[(&str, &str)]) -> Frame {
        Frame::Message(Message {
            fields: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
    }

    #[test]
    fn greeting_then_blocks_split_anywhere() {
        let stream = b"Asterisk Call Manager/11.0.0\r\nResponse: Success\r\nMessage: ok\r\n\r\n\
                       Event: FullyBooted\nStatus: Fully Booted\n\n";
        // Every split point gives the same frames.
        for cut in 0..stream.len() {
            let mut dec = Decoder::new(DecoderCaps::default());
            let mut buf = stream[..cut].to_vec();
            let mut got = all(&mut dec, &mut buf);
            buf.extend_from_slice(&stream[cut..]);
            got.extend(all(&mut dec, &mut buf));
            assert_eq!(
                got,
                vec![
                    Frame::Greeting("Asterisk Call Manager/11.0.0".into()),
                    msg(&[("Response", "Success"), ("Message", "ok")]),
                    msg(&[("Event", "FullyBooted"), ("Status", "Fully Booted")]),
                ],
                "cut at {cut}"
            );
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn values_keep_colons_and_empty_values() {
        let mut dec = Decoder::without_greeting(DecoderCaps::default());
        let mut buf = b"Event: X\r\nURI: sip:701@[2001:db8::1]:5060\r\nRegServer: \r\nPath:\r\n\r\n".to_vec();
        let Some(Frame::Message(m)) = dec.decode(&mut buf) else {
            panic!()
        };
        assert_eq!(m.get("uri"), Some("sip:701@[2001:db8::1]:5060"));
        assert_eq!(m.get("RegServer"), Some(""));
        assert_eq!(m.get("Path"), Some(""));
    }

    #[test]
    fn huge_line_is_dropped_without_buffering_and_decoding_resumes() {
        let limits = DecoderCaps {
            max_line: 64,
            max_block: 256,
            max_fields: 8,
        };
        let mut dec = Decoder::without_greeting(limits);
        let mut buf = b"Event: Big\r\nValue: ".to_vec();
        let mut skipped = Vec::new();
        for _ in 0..1000 {
            buf.extend_from_slice(&[b'x'; 1000]);
            skipped.extend(all(&mut dec, &mut buf));
            assert!(buf.len() <= 1000 + 64, "buffer held {} bytes", buf.len());
        }
        buf.extend_from_slice(b"\r\nMore: y\r\n\r\nEvent: Next\r\n\r\n");
        skipped.extend(all(&mut dec, &mut buf));
        assert_eq!(
            skipped,
            vec![Frame::Skipped(Skip::LineTooLong), msg(&[("Event", "Next")])]
        );
    }

    #[test]
    fn long_blocks_many_fields_and_garbage_are_skipped() {
        let limits = DecoderCaps {
            max_line: 64,
            max_block: 100,
            max_fields: 3,
        };
        let mut dec = Decoder::without_greeting(limits);
        let mut buf = Vec::new();
        for _ in 0..5 {
            buf.extend_from_slice(b"Key: 0123456789012345678901234567890123456789\r\n");
        }
        buf.extend_from_slice(b"\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n");
        buf.extend_from_slice(b"Event: X\r\n\x00\xff garbage\r\nK: v\r\n\r\n");
        buf.extend_from_slice(b": novalue\r\n\r\nEvent: Ok\r\n\r\n");
        assert_eq!(
            all(&mut dec, &mut buf),
            vec![
                Frame::Skipped(Skip::BlockTooLong),
                Frame::Skipped(Skip::TooManyFields),
                Frame::Skipped(Skip::Garbage),
                Frame::Skipped(Skip::Garbage),
                msg(&[("Event", "Ok")]),
            ]
        );
    }

    #[test]
    fn actions_cannot_inject_headers() {
        let a = Action::new("Getvar", "7")
            .header("Channel", "PJSIP/1\r\nAction: Originate")
            .encode();
        assert_eq!(
            a,
            b"Action: Getvar\r\nActionID: 7\r\nChannel: PJSIP/1Action: Originate\r\n\r\n".to_vec()
        );
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any bytes, cut anywhere: no panic, the buffer stays within the line cap plus one chunk,
        /// and every message that comes out is within the caps.
        #[test]
        fn arbitrary_input_is_bounded(
            chunks in proptest::collection::vec(
                prop_oneof![
                    proptest::collection::vec(any::<u8>(), 0..200),
                    // Bytes that matter to the framing, drawn as indexes: far cheaper than a
                    // `prop_oneof!` per byte.
                    proptest::collection::vec(0..5usize, 0..200)
                        .prop_map(|v| v.into_iter().map(|i| b"\r\n: a"[i]).collect()),
                ],
                0..40,
            )
        ) {
            let limits = DecoderCaps { max_line: 50, max_block: 120, max_fields: 4 };
            let mut dec = Decoder::new(limits);
            let mut buf = Vec::new();
            for c in chunks {
                let len = c.len();
                buf.extend_from_slice(&c);
                while let Some(f) = dec.decode(&mut buf) {
                    if let Frame::Message(m) = f {
                        prop_assert!(!m.fields.is_empty() && m.fields.len() <= 4);
                        // Lossy UTF-8 may widen a bad byte to U+FFFD; count characters.
                        let size: usize = m.fields.iter().map(|(k, v)| k.chars().count() + v.chars().count()).sum();
                        prop_assert!(size <= 120);
                    }
                }
                prop_assert!(buf.len() <= 50 + len + 1, "held {} bytes", buf.len());
            }
        }

        /// AMI-like text cut at arbitrary points decodes to the same frames as in one piece:
        /// where a read happens to end never changes what a block says or whether it is kept.
        #[test]
        fn splits_do_not_change_frames(
            lines in proptest::collection::vec(ami_line(), 0..30),
            crlf in any::<bool>(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let limits = DecoderCaps { max_line: 24, max_block: 60, max_fields: 3 };
            let sep = if crlf { "\r\n" } else { "\n" };
            let stream = format!("Asterisk Call Manager/11.0.0{sep}{}{sep}", lines.join(sep)).into_bytes();
            let whole = frames(limits, [stream.as_slice()]);
            let mut at: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            at.sort_unstable();
            let mut pieces = Vec::new();
            let mut from = 0;
            for cut in at {
                pieces.push(&stream[from..cut]);
                from = cut;
            }
            pieces.push(&stream[from..]);
            prop_assert_eq!(frames(limits, pieces), whole);
        }
    }

    /// Lines of every kind a block can hold, some near the caps used above.
    fn ami_line() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "Event: [A-Za-z]{1,12}",
            "[A-Za-z]{1,8}: [ -~]{0,20}",
            "[A-Za-z]{1,4}: [a-z]{15,25}",
            "[ -~]{0,30}",
            "[:\r a-z]{0,26}",
        ]
    }

    fn frames<'a>(limits: DecoderCaps, pieces: impl IntoIterator<Item = &'a [u8]>) -> Vec<Frame> {
        let mut dec = Decoder::new(limits);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for p in pieces {
            buf.extend_from_slice(p);
            while let Some(f) = dec.decode(&mut buf) {
                out.push(f);
            }
        }
        out
    }
}
