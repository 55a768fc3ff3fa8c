//! One SIP request datagram, as the table logs it when it drops it, parsed into the few fields
//! that say who is trying to register from where — a pure function over untrusted bytes that
//! borrows from them, caps every length and refuses anything odd with a typed error.
//!
//! # Format
//!
//! RFC 3261, section 7: a request line `METHOD SP Request-URI SP SIP/2.0`, header lines
//! `Name: value` (names case-insensitive, `f`/`t`/`m` the compact forms of
//! From/To/Contact), a blank line, a body. Lines end in CRLF; a bare LF is taken too. Leading
//! CRLFs (keep-alives) are skipped. A line is read only when its end is seen, so a capture cut
//! mid-line never yields half a header: the headers end at the blank line or at a cut line.
//! Folded lines (starting with SP or HT) are skipped when they continue a header we do not read,
//! and refused when they continue one we do.

use std::str;

use thiserror::Error;

/// Largest datagram parsed: SIP over UDP must fit in a path MTU (RFC 3261, 18.1.1), so anything
/// larger did not come from a softphone.
pub const PAYLOAD_MAX: usize = 4096;
/// Most header lines (folded continuations included) before the blank line.
pub const HEADERS_MAX: usize = 64;
/// Longest line, line ending excluded.
pub const LINE_MAX: usize = 1024;
/// Longest user part kept: far above any extension or endpoint name, small enough that a
/// memory of attempts keyed by it stays small.
pub const USER_MAX: usize = 64;
/// Longest method token: the longest registered method (`SUBSCRIBE`) with room to spare.
const METHOD_MAX: usize = 32;

/// Why a datagram is not a SIP request we read. Every one is a clean refusal of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SipError {
    #[error("the datagram is {len} bytes; a SIP request over UDP is at most {PAYLOAD_MAX}")]
    TooLong { len: usize },
    #[error("the datagram holds no request (empty, or only a keep-alive)")]
    Empty,
    #[error("line {line} has no line ending; the capture may be cut short")]
    Truncated { line: usize },
    #[error("line {line} is longer than {LINE_MAX} bytes")]
    LineTooLong { line: usize },
    #[error("the request has more than {HEADERS_MAX} header lines")]
    TooManyHeaders,
    #[error("the first line is not METHOD SP URI SP SIP/2.0")]
    NotRequest,
    #[error("the request speaks a SIP version other than 2.0")]
    Version,
    #[error("the method is not a SIP token")]
    Method,
    #[error("the request URI is empty or holds characters a URI cannot")]
    RequestUri,
    #[error("line {line} is not a header (`Name: value`)")]
    HeaderLine { line: usize },
    #[error("the {header} header is folded over several lines")]
    Folded { header: &'static str },
    #[error("the {header} header appears more than once")]
    Duplicate { header: &'static str },
    #[error("the request has no {header} header")]
    Missing { header: &'static str },
    #[error("the {header} header is not valid UTF-8 text")]
    Text { header: &'static str },
    #[error("the {header} header is not a SIP address")]
    Address { header: &'static str },
    #[error("the {header} header's URI is neither sip: nor sips:")]
    Scheme { header: &'static str },
    #[error("the user part of the {header} header is not a SIP user of at most {USER_MAX} bytes")]
    User { header: &'static str },
}

/// The request's method; the two we act on are typed, the rest are kept as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method<'a> {
    Register,
    Invite,
    Other(&'a str),
}

impl<'a> Method<'a> {
    /// Methods are case-sensitive (RFC 3261, 7.1): `register` is not REGISTER.
    fn parse(token: &'a str) -> Method<'a> {
        match token {
            "REGISTER" => Method::Register,
            "INVITE" => Method::Invite,
            other => Method::Other(other),
        }
    }

    pub fn as_str(&self) -> &'a str {
        match self {
            Method::Register => "REGISTER",
            Method::Invite => "INVITE",
            Method::Other(s) => s,
        }
    }
}

/// A From or To header: its `sip:`/`sips:` URI and the user part of it, if it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Party<'a> {
    /// The URI as written, without angle brackets or header parameters.
    pub uri: &'a str,
    /// As written: percent escapes are left as they are, so `%61lice` is not `alice`.
    pub user: Option<&'a str>,
}

/// The first Contact of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contact<'a> {
    /// A URI as written, without angle brackets or header parameters.
    Uri(&'a str),
    /// `Contact: *`: a REGISTER that removes every binding rather than adding one.
    All,
}

/// What we read from one SIP request; everything borrows from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: Method<'a>,
    pub uri: &'a str,
    pub from: Party<'a>,
    pub to: Party<'a>,
    pub contact: Option<Contact<'a>>,
    pub user_agent: Option<&'a str>,
}

impl<'a> Request<'a> {
    /// The user this request tries to register as: the To user of a REGISTER that adds a
    /// binding. To names the address of record being registered (RFC 3261, 10.2); From differs
    /// only for a third party registering on someone's behalf, which a road warrior is not.
    pub fn registering_user(&self) -> Option<&'a str> {
        match (self.method, self.contact) {
            (Method::Register, Some(Contact::All)) => None,
            (Method::Register, _) => self.to.user,
            _ => None,
        }
    }
}

/// The headers we read, by canonical name.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Known {
    From,
    To,
    Contact,
    UserAgent,
}

impl Known {
    fn name(self) -> &'static str {
        match self {
            Known::From => "From",
            Known::To => "To",
            Known::Contact => "Contact",
            Known::UserAgent => "User-Agent",
        }
    }

    /// Header names are case-insensitive; From, To and Contact have one-letter compact forms.
    fn of(name: &[u8]) -> Option<Known> {
        let is = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
        if is("from") || is("f") {
            Some(Known::From)
        } else if is("to") || is("t") {
            Some(Known::To)
        } else if is("contact") || is("m") {
            Some(Known::Contact)
        } else if is("user-agent") {
            Some(Known::UserAgent)
        } else {
            None
        }
    }
}

/// Parses one SIP request datagram (the UDP payload). Allocates nothing.
pub fn parse_request(payload: &[u8]) -> Result<Request<'_>, SipError> {
    if payload.len() > PAYLOAD_MAX {
        return Err(SipError::TooLong { len: payload.len() });
    }
    let start = payload
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .ok_or(SipError::Empty)?;
    let mut lines = Lines {
        rest: &payload[start..],
        number: 0,
    };
    let first = lines.next_line()?.ok_or(SipError::Truncated { line: 1 })?;
    let (method, uri) = request_line(first)?;

    let mut from = None;
    let mut to = None;
    let mut contact = None;
    let mut user_agent = None;
    // A folded line continues the header before it; the first header line has none.
    let mut continues_header = false;
    let mut headers = 0;
    while let Some(line) = lines.next_line()? {
        if line.is_empty() {
            break;
        }
        headers += 1;
        if headers > HEADERS_MAX {
            return Err(SipError::TooManyHeaders);
        }
        if is_fold(line) {
            if !continues_header {
                return Err(SipError::HeaderLine { line: lines.number });
            }
            continue;
        }
        let colon = line
            .iter()
            .position(|b| *b == b':')
            .ok_or(SipError::HeaderLine { line: lines.number })?;
        // HCOLON allows blanks between the name and the colon.
        let name = trim_blanks(&line[..colon]);
        if name.is_empty() || !name.iter().all(|b| is_token(*b)) {
            return Err(SipError::HeaderLine { line: lines.number });
        }
        continues_header = true;
        let Some(known) = Known::of(name) else {
            continue;
        };
        let header = known.name();
        // Unfolding would need a copy; no softphone folds the headers we read.
        if is_fold(lines.rest) {
            return Err(SipError::Folded { header });
        }
        let value = text(&line[colon + 1..], header)?;
        match known {
            Known::From | Known::To => {
                let slot = if known == Known::From { &mut from } else { &mut to };
                // Two Froms or two Tos would let a sender show one user to us and another to
                // the PBX; a request with either is malformed anyway (RFC 3261, 7.3).
                if slot.is_some() {
                    return Err(SipError::Duplicate { header });
                }
                *slot = Some(party(value, header)?);
            }
            // Several Contact lines are allowed; the first binding is the one we report.
            Known::Contact if contact.is_none() => contact = Some(first_contact(value)?),
            Known::Contact => {}
            Known::UserAgent if user_agent.is_none() => user_agent = Some(value).filter(|v| !v.is_empty()),
            Known::UserAgent => {}
        }
    }
    Ok(Request {
        method,
        uri,
        from: from.ok_or(SipError::Missing { header: "From" })?,
        to: to.ok_or(SipError::Missing { header: "To" })?,
        contact,
        user_agent,
    })
}

/// Splits a datagram into lines, each under the cap; a line counts only once its end is seen.
struct Lines<'a> {
    rest: &'a [u8],
    /// 1-based number of the line last returned, for error messages.
    number: usize,
}

impl<'a> Lines<'a> {
    fn next_line(&mut self) -> Result<Option<&'a [u8]>, SipError> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        self.number += 1;
        let window = &self.rest[..self.rest.len().min(LINE_MAX + 2)];
        let Some(lf) = window.iter().position(|b| *b == b'\n') else {
            if window.len() > LINE_MAX + 1 {
                return Err(SipError::LineTooLong { line: self.number });
            }
            // The capture ends mid-line: what is there may be cut anywhere, so it is not read.
            self.rest = &[];
            return Ok(None);
        };
        let line = &self.rest[..lf];
        self.rest = &self.rest[lf + 1..];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > LINE_MAX {
            return Err(SipError::LineTooLong { line: self.number });
        }
        Ok(Some(line))
    }
}

fn request_line(line: &[u8]) -> Result<(Method<'_>, &str), SipError> {
    let mut parts = line.split(|b| *b == b' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SipError::NotRequest);
    };
    // A response (`SIP/2.0 200 OK`) starts with the version; it is not a request.
    if method.len() >= 4 && method[..4].eq_ignore_ascii_case(b"SIP/") {
        return Err(SipError::NotRequest);
    }
    if !(version.len() == 7 && version[..4].eq_ignore_ascii_case(b"SIP/")) {
        return Err(SipError::NotRequest);
    }
    if &version[4..] != b"2.0" {
        return Err(SipError::Version);
    }
    if method.is_empty() || method.len() > METHOD_MAX || !method.iter().all(|b| is_token(*b)) {
        return Err(SipError::Method);
    }
    if uri.is_empty() || !uri.iter().all(|b| b.is_ascii_graphic()) {
        return Err(SipError::RequestUri);
    }
    // Both are ASCII, checked just above.
    let method = str::from_utf8(method).map_err(|_| SipError::Method)?;
    let uri = str::from_utf8(uri).map_err(|_| SipError::RequestUri)?;
    Ok((Method::parse(method), uri))
}

/// A header value we read: UTF-8, no control characters but tabs, blanks trimmed.
fn text<'a>(value: &'a [u8], header: &'static str) -> Result<&'a str, SipError> {
    let value = trim_blanks(value);
    let s = str::from_utf8(value).map_err(|_| SipError::Text { header })?;
    if s.chars().any(|c| c.is_control() && c != '\t') {
        return Err(SipError::Text { header });
    }
    Ok(s)
}

fn party<'a>(value: &'a str, header: &'static str) -> Result<Party<'a>, SipError> {
    let uri = address(value).ok_or(SipError::Address { header })?;
    let scheme_end = uri.find(':').ok_or(SipError::Scheme { header })?;
    let scheme = &uri[..scheme_end];
    if !scheme.eq_ignore_ascii_case("sip") && !scheme.eq_ignore_ascii_case("sips") {
        return Err(SipError::Scheme { header });
    }
    let rest = &uri[scheme_end + 1..];
    // Neither a password, host, parameter nor URI header may hold a raw `@` (RFC 3261, 25.1),
    // so the first one ends the userinfo, and a user never holds a `:`.
    let user = match rest.find('@') {
        None => None,
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split(':').next().unwrap_or(userinfo);
            if !is_user(user) {
                return Err(SipError::User { header });
            }
            Some(user)
        }
    };
    Ok(Party { uri, user })
}

fn first_contact(value: &str) -> Result<Contact<'_>, SipError> {
    let header = "Contact";
    if value == "*" {
        return Ok(Contact::All);
    }
    address(value)
        .map(Contact::Uri)
        .ok_or(SipError::Address { header })
}

/// The URI of a `name-addr` (`"Name" <uri>;params`, `Name <uri>`, `<uri>`) or an `addr-spec`
/// (`uri;params`), the first one if a list follows.
fn address(value: &str) -> Option<&str> {
    let v = value.trim_matches(is_blank);
    let inside = if let Some(quoted) = v.strip_prefix('"') {
        let end = closing_quote(quoted)?;
        quoted[end + 1..].trim_start_matches(is_blank).strip_prefix('<')?
    } else if let Some(open) = v.find('<') {
        // An unquoted display name is tokens by the grammar; softphones put UTF-8 names there
        // too, so take any text that cannot be mistaken for the start of something else.
        if v[..open].contains(['"', '>']) {
            return None;
        }
        &v[open + 1..]
    } else {
        // Without brackets, a `;` starts header parameters and a `,` the next address
        // (RFC 3261, 20.10); such a URI cannot hold either.
        let end = v.find([';', ',', ' ', '\t']).unwrap_or(v.len());
        return Some(&v[..end]).filter(|u| is_uri(u));
    };
    let end = inside.find('>')?;
    Some(&inside[..end]).filter(|u| is_uri(u))
}

/// Index of the `"` closing a quoted string whose opening quote is already consumed.
fn closing_quote(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// A URI as we keep one: a scheme and something after it, all visible ASCII.
fn is_uri(u: &str) -> bool {
    u.len() > 1 && u.bytes().all(|b| b.is_ascii_graphic()) && u.find(':').is_some_and(|i| i > 0)
}

/// RFC 3261's `user`: unreserved, user-unreserved or `%HH` escapes, none of them a control
/// character — and bounded, since it becomes a key in memory.
fn is_user(user: &str) -> bool {
    let b = user.as_bytes();
    if b.is_empty() || b.len() > USER_MAX {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let Some(&[hi, lo]) = b.get(i + 1..i + 3) else {
                return false;
            };
            let (Some(hi), Some(lo)) = (hex(hi), hex(lo)) else {
                return false;
            };
            let byte = hi << 4 | lo;
            if byte < 0x20 || byte == 0x7f {
                return false;
            }
            i += 3;
            continue;
        }
        if !(c.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/".contains(&c)) {
            return false;
        }
        i += 1;
    }
    true
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// RFC 3261's `token` characters: what a method and a header name are made of.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// A line starting with a blank continues the header line before it (RFC 3261, 7.3.1).
fn is_fold(line: &[u8]) -> bool {
    matches!(line.first(), Some(b' ' | b'\t'))
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn trim_blanks(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

#[cfg(test)]
pub(crate) mod examples;
#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
