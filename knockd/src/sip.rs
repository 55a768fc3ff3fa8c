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
pub(crate) mod examples {
    //! Requests as real softphones, Asterisk and SIPp send them (written for these tests, with
    //! documentation addresses), shared by the unit tests and the property tests.

    /// (who sends it, the datagram, the To user, the From user).
    pub const REQUESTS: [(&str, &str, &str, &str); 6] = [
        ("Linphone", LINPHONE, "alice", "alice"),
        ("Zoiper", ZOIPER, "2001", "2001"),
        ("Bria", BRIA, "bob", "bob"),
        ("Asterisk", ASTERISK_INVITE, "+15551234567", "1000"),
        ("SIPp", SIPP_COMPACT, "carol", "carol"),
        ("MicroSIP", MICROSIP_V6, "dave", "dave"),
    ];

    pub const LINPHONE: &str = "REGISTER sip:pbx.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.168.1.23:5060;branch=z9hG4bK.Xq3~b2Qkw;rport\r\n\
From: <sip:alice@pbx.example.com>;tag=aR2bnZ9qH\r\n\
To: sip:alice@pbx.example.com\r\n\
CSeq: 20 REGISTER\r\n\
Call-ID: 7Hh4S2e6Vx\r\n\
Max-Forwards: 70\r\n\
Supported: replaces, outbound, gruu, path\r\n\
Accept: application/sdp\r\n\
Accept: text/plain\r\n\
Contact: <sip:alice@192.168.1.23;transport=udp>;expires=3600;+sip.instance=\"<urn:uuid:3b1c5b8e-7a6d-4c1e-9f00-0a1b2c3d4e5f>\"\r\n\
Expires: 3600\r\n\
User-Agent: Linphone-Desktop/5.2.4 (debian) Debian GNU/Linux 12, Qt 5.15.8 LinphoneCore/5.3.0\r\n\
Content-Length: 0\r\n\
\r\n";

    pub const ZOIPER: &str = "REGISTER sip:198.51.100.1;transport=UDP SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.7:48123;branch=z9hG4bK-524287-1---1f8c3d6e0a5b9c21;rport\r\n\
Max-Forwards: 70\r\n\
Contact: <sip:2001@10.0.0.7:48123;rinstance=9f8e7d6c5b4a3921;transport=UDP>\r\n\
To: <sip:2001@198.51.100.1;transport=UDP>\r\n\
From: <sip:2001@198.51.100.1;transport=UDP>;tag=0b1c2d3e\r\n\
Call-ID: ZjQ1MmM3ZDUxNDQ5NWY1YjE0ZmM0ZjA0Yzg3NzM4ZDU\r\n\
CSeq: 1 REGISTER\r\n\
Expires: 60\r\n\
Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE\r\n\
Supported: replaces, norefersub, extended-refer, timer, outbound, path\r\n\
User-Agent: Z 5.6.1 v2.10.20.3\r\n\
Allow-Events: presence, kpml, talk\r\n\
Content-Length: 0\r\n\
\r\n";

    pub const BRIA: &str = "REGISTER sip:voip.example.org SIP/2.0\r\n\
Via: SIP/2.0/UDP 172.16.4.20:51234;branch=z9hG4bK-d8754z-6b2c1a0f9e8d7c6b-1---d8754z-;rport\r\n\
Max-Forwards: 70\r\n\
Contact: \"Bob Smith\" <sip:bob@172.16.4.20:51234;rinstance=e1f2a3b4c5d6e7f8>\r\n\
To: \"Bob Smith\"<sip:bob@voip.example.org>\r\n\
From: \"Bob Smith\"<sip:bob@voip.example.org>;tag=4a5b6c7d\r\n\
Call-ID: NmQ2ZTdmODlhYmNkZWYwMTIzNDU2Nzg5\r\n\
CSeq: 1 REGISTER\r\n\
Expires: 3600\r\n\
User-Agent: Bria 6 release 6.5.3 stamp 112233\r\n\
Content-Length: 0\r\n\
\r\n";

    pub const ASTERISK_INVITE: &str = "INVITE sip:+15551234567@192.0.2.10:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.1:5060;rport;branch=z9hG4bKPj5a6b7c8d-1e2f-4a3b-9c8d-7e6f5a4b3c2d\r\n\
From: \"PBX\" <sip:1000@198.51.100.1>;tag=1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d\r\n\
To: <sip:+15551234567@192.0.2.10>\r\n\
Contact: <sip:asterisk@198.51.100.1:5060>\r\n\
Call-ID: 9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a\r\n\
CSeq: 4711 INVITE\r\n\
Allow: OPTIONS, REGISTER, SUBSCRIBE, NOTIFY, PUBLISH, INVITE, ACK, BYE, CANCEL, UPDATE, PRACK, MESSAGE, REFER\r\n\
Supported: 100rel, timer, replaces, norefersub\r\n\
Session-Expires: 1800\r\n\
Min-SE: 90\r\n\
Max-Forwards: 70\r\n\
User-Agent: Asterisk PBX 22.2.0\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 67\r\n\
\r\n\
v=0\r\n\
o=- 1 3 IN IP4 198.51.100.1\r\n\
s=Asterisk\r\n\
c=IN IP4 198.51.100.1\r\n";

    /// Compact header forms and bare-LF line endings, as SIPp scenarios are often written.
    pub const SIPP_COMPACT: &str = "REGISTER sip:198.51.100.1 SIP/2.0\n\
v: SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bK-1-0\n\
f: sipp <sip:carol@198.51.100.1>;tag=1\n\
t: sipp <sip:carol@198.51.100.1>\n\
i: 1-1234@203.0.113.10\n\
CSeq: 1 REGISTER\n\
m: sip:carol@203.0.113.10:5060;expires=120\n\
l: 0\n\
\n";

    pub const MICROSIP_V6: &str = "REGISTER sip:[2001:db8::1] SIP/2.0\r\n\
Via: SIP/2.0/UDP [2001:db8:1::10]:5060;rport;branch=z9hG4bKPj0f1e2d3c4b5a\r\n\
Max-Forwards: 70\r\n\
From: <sip:dave@[2001:db8::1]>;tag=5a4b3c2d1e0f\r\n\
To: <sip:dave@[2001:db8::1]>\r\n\
Call-ID: 0a1b2c3d4e5f60718293a4b5c6d7e8f9\r\n\
CSeq: 11807 REGISTER\r\n\
User-Agent: MicroSIP/3.21.3\r\n\
Contact: <sip:dave@[2001:db8:1::10]:5060;ob>\r\n\
Expires: 300\r\n\
Allow: PRACK, INVITE, ACK, BYE, CANCEL, UPDATE, INFO, SUBSCRIBE, NOTIFY, REFER, MESSAGE, OPTIONS\r\n\
Content-Length:  0\r\n\
\r\n";
}

#[cfg(test)]
mod tests {
    use super::examples::*;
    use super::*;

    /// A REGISTER with the given header lines between a fixed request line and the blank line,
    /// leaked so that what it parses to can outlive the call (tests only).
    fn register(headers: &[&str]) -> &'static [u8] {
        let mut s = String::from("REGISTER sip:pbx.example.com SIP/2.0\r\n");
        for h in headers {
            s.push_str(h);
            s.push_str("\r\n");
        }
        s.push_str("\r\n");
        leak(s.into_bytes())
    }

    fn leak(b: Vec<u8>) -> &'static [u8] {
        Box::leak(b.into_boxed_slice())
    }

    fn users(headers: &[&str]) -> Result<(Option<String>, Option<String>), SipError> {
        let b = register(headers);
        let r = parse_request(b)?;
        Ok((r.from.user.map(String::from), r.to.user.map(String::from)))
    }

    #[test]
    fn what_softphones_asterisk_and_sipp_send_parses() {
        for (who, datagram, to, from) in REQUESTS {
            let r = parse_request(datagram.as_bytes()).unwrap_or_else(|e| panic!("{who}: {e}"));
            assert_eq!(r.to.user, Some(to), "{who}");
            assert_eq!(r.from.user, Some(from), "{who}");
        }
        let r = parse_request(LINPHONE.as_bytes()).unwrap();
        assert_eq!(r.method, Method::Register);
        assert_eq!(r.uri, "sip:pbx.example.com");
        assert_eq!(r.from.uri, "sip:alice@pbx.example.com");
        assert_eq!(
            r.contact,
            Some(Contact::Uri("sip:alice@192.168.1.23;transport=udp"))
        );
        assert_eq!(
            r.user_agent,
            Some("Linphone-Desktop/5.2.4 (debian) Debian GNU/Linux 12, Qt 5.15.8 LinphoneCore/5.3.0")
        );
        assert_eq!(r.registering_user(), Some("alice"));

        let r = parse_request(ZOIPER.as_bytes()).unwrap();
        assert_eq!(r.uri, "sip:198.51.100.1;transport=UDP");
        assert_eq!(r.to.uri, "sip:2001@198.51.100.1;transport=UDP");
        assert_eq!(r.user_agent, Some("Z 5.6.1 v2.10.20.3"));

        let r = parse_request(BRIA.as_bytes()).unwrap();
        assert_eq!(
            r.contact,
            Some(Contact::Uri(
                "sip:bob@172.16.4.20:51234;rinstance=e1f2a3b4c5d6e7f8"
            ))
        );

        let r = parse_request(ASTERISK_INVITE.as_bytes()).unwrap();
        assert_eq!(r.method, Method::Invite);
        assert_eq!(r.registering_user(), None, "an INVITE registers nobody");
        assert_eq!(r.user_agent, Some("Asterisk PBX 22.2.0"));

        let r = parse_request(SIPP_COMPACT.as_bytes()).unwrap();
        assert_eq!(r.contact, Some(Contact::Uri("sip:carol@203.0.113.10:5060")));
        assert_eq!(r.user_agent, None);

        let r = parse_request(MICROSIP_V6.as_bytes()).unwrap();
        assert_eq!(r.to.uri, "sip:dave@[2001:db8::1]");
        assert_eq!(r.contact, Some(Contact::Uri("sip:dave@[2001:db8:1::10]:5060;ob")));
    }

    #[test]
    fn addresses_in_every_form() {
        let to = |v: &str| users(&[&format!("To: {v}"), "From: <sip:x@h>"]).map(|u| u.1);
        let some = |s: &str| Ok(Some(s.to_string()));
        assert_eq!(to("<sip:alice@h>"), some("alice"));
        assert_eq!(to("sip:alice@h"), some("alice"));
        assert_eq!(to("sip:alice@h;tag=1"), some("alice"));
        assert_eq!(to("SIP:alice@h"), some("alice"), "the scheme is case-insensitive");
        assert_eq!(to("sips:alice@h:5061"), some("alice"));
        assert_eq!(
            to("<sip:alice:secret@h>"),
            some("alice"),
            "a password is not the user"
        );
        assert_eq!(to("\"Alice\" <sip:alice@h>;tag=9"), some("alice"));
        assert_eq!(to("\"Alice\"<sip:alice@h>"), some("alice"));
        assert_eq!(to("Alice Liddell <sip:alice@h>"), some("alice"));
        assert_eq!(
            to("Jöhn Dœ <sip:john@h>"),
            some("john"),
            "UTF-8 names in the wild"
        );
        assert_eq!(to("\"A \\\"<sip:mallory@h>\\\" B\" <sip:alice@h>"), some("alice"));
        assert_eq!(to("\"<sip:mallory@h>\" <sip:alice@h>"), some("alice"));
        assert_eq!(
            to("<sip:+15551234567;phone-context=example.com@h;user=phone>"),
            some("+15551234567;phone-context=example.com")
        );
        assert_eq!(
            to("<sip:al%69ce@h>"),
            some("al%69ce"),
            "escapes are kept as written"
        );
        assert_eq!(to("\t <sip:alice@h> \t"), some("alice"));
        assert_eq!(to("<sip:pbx.example.com>"), Ok(None), "a URI with no user");
        // The first of a list.
        let r = parse_request(register(&[
            "To: <sip:a@h>",
            "From: <sip:a@h>",
            "Contact: <sip:a@192.0.2.1>, <sip:a@192.0.2.2>",
            "Contact: <sip:a@192.0.2.3>",
        ]))
        .unwrap();
        assert_eq!(r.contact, Some(Contact::Uri("sip:a@192.0.2.1")));
        let r = parse_request(register(&[
            "To: <sip:a@h>",
            "From: <sip:a@h>",
            "m: sip:a@192.0.2.1, sip:a@192.0.2.2",
        ]))
        .unwrap();
        assert_eq!(r.contact, Some(Contact::Uri("sip:a@192.0.2.1")));
    }

    #[test]
    fn header_names_are_case_insensitive_and_compact() {
        let r = parse_request(register(&[
            "FROM: <sip:alice@h>",
            "tO : <sip:alice@h>",
            "CONTACT:<sip:alice@192.0.2.1>",
            "user-AGENT:   Zoiper rv2.10  ",
        ]))
        .unwrap();
        assert_eq!((r.from.user, r.to.user), (Some("alice"), Some("alice")));
        assert_eq!(r.contact, Some(Contact::Uri("sip:alice@192.0.2.1")));
        assert_eq!(r.user_agent, Some("Zoiper rv2.10"));
        let r = parse_request(register(&["F: <sip:a@h>", "T: <sip:b@h>", "M: *"])).unwrap();
        assert_eq!((r.from.user, r.to.user), (Some("a"), Some("b")));
        assert_eq!(r.contact, Some(Contact::All));
        assert_eq!(r.registering_user(), None, "Contact: * removes bindings");
        // Names that merely start like ours are someone else's.
        let r = parse_request(register(&[
            "F: <sip:a@h>",
            "T: <sip:b@h>",
            "Tof: <sip:c@h>",
            "From-X: 1",
        ]))
        .unwrap();
        assert_eq!(r.to.user, Some("b"));
    }

    #[test]
    fn methods_and_request_lines() {
        let with = |line: &str| {
            let mut b = line.as_bytes().to_vec();
            b.extend_from_slice(b"\r\nFrom: <sip:a@h>\r\nTo: <sip:a@h>\r\n\r\n");
            parse_request(leak(b)).map(|r| r.method)
        };
        assert_eq!(with("OPTIONS sip:h SIP/2.0"), Ok(Method::Other("OPTIONS")));
        assert_eq!(with("register sip:h SIP/2.0"), Ok(Method::Other("register")));
        assert_eq!(with("REGISTER sip:h sip/2.0"), Ok(Method::Register));
        assert_eq!(with("SIP/2.0 200 OK"), Err(SipError::NotRequest));
        assert_eq!(with("SIP/2.0 401 Unauthorized"), Err(SipError::NotRequest));
        assert_eq!(with("REGISTER sip:h SIP/3.0"), Err(SipError::Version));
        assert_eq!(with("REGISTER sip:h HTTP/1.1"), Err(SipError::NotRequest));
        assert_eq!(with("GET / HTTP/1.1"), Err(SipError::NotRequest));
        assert_eq!(with("REGISTER  sip:h SIP/2.0"), Err(SipError::NotRequest));
        assert_eq!(with("REGISTER sip:h SIP/2.0 "), Err(SipError::NotRequest));
        assert_eq!(with("REGISTER sip:h"), Err(SipError::NotRequest));
        assert_eq!(with("REG<ISTER sip:h SIP/2.0"), Err(SipError::Method));
        assert_eq!(with("REGISTER sip:h\x01 SIP/2.0"), Err(SipError::RequestUri));
        assert_eq!(with("REGISTER sip:hé SIP/2.0"), Err(SipError::RequestUri));
        let long = format!("{} sip:h SIP/2.0", "A".repeat(METHOD_MAX + 1));
        assert_eq!(with(&long), Err(SipError::Method));
        assert_eq!(Method::Register.as_str(), "REGISTER");
    }

    #[test]
    fn odd_requests_are_refused_cleanly() {
        let to = |v: &[u8]| {
            let mut b = b"REGISTER sip:h SIP/2.0\r\nFrom: <sip:a@h>\r\nTo: ".to_vec();
            b.extend_from_slice(v);
            b.extend_from_slice(b"\r\n\r\n");
            parse_request(leak(b)).map(|r| r.to.user)
        };
        let address = Err(SipError::Address { header: "To" });
        let user = Err(SipError::User { header: "To" });
        assert_eq!(to(b"<sip:alice@h"), address, "no closing bracket");
        assert_eq!(to(b"\"Alice <sip:alice@h>"), address, "no closing quote");
        assert_eq!(to(b"Alice"), address);
        assert_eq!(to(b""), address);
        assert_eq!(to(b"<>"), address);
        assert_eq!(to(b"<sip:al ice@h>"), address);
        assert_eq!(to(b"A\"B <sip:a@h>"), address);
        assert_eq!(to(b"<tel:+15551234567>"), Err(SipError::Scheme { header: "To" }));
        assert_eq!(to(b"<http://h/>"), Err(SipError::Scheme { header: "To" }));
        assert_eq!(to(b"<sip:@h>"), user);
        assert_eq!(to(b"<sip:al\"ice@h>"), user);
        assert_eq!(to(b"<sip:al<ice@h>"), user);
        assert_eq!(to(b"<sip:al%0aice@h>"), user, "an escaped control character");
        assert_eq!(to(b"<sip:al%7Fice@h>"), user);
        assert_eq!(to(b"<sip:al%zzice@h>"), user);
        assert_eq!(to(b"<sip:alice%4@h>"), user);
        assert_eq!(to(b"<sip:al%+1ice@h>"), user);
        assert_eq!(to(b"<sip:\xc3\xa9@h>"), address, "a URI is ASCII");
        assert_eq!(to(b"\xff <sip:a@h>"), Err(SipError::Text { header: "To" }));
        assert_eq!(to(b"<sip:a@h>\x00"), Err(SipError::Text { header: "To" }));
        assert_eq!(to(b"<sip:a\rb@h>"), Err(SipError::Text { header: "To" }));
        let max = "u".repeat(USER_MAX);
        assert_eq!(to(format!("<sip:{max}@h>").as_bytes()), Ok(Some(max.as_str())));
        assert_eq!(to(format!("<sip:{max}u@h>").as_bytes()), user);

        assert_eq!(
            users(&["From: <sip:a@h>"]),
            Err(SipError::Missing { header: "To" })
        );
        assert_eq!(
            users(&["To: <sip:a@h>"]),
            Err(SipError::Missing { header: "From" })
        );
        assert_eq!(
            users(&["From: <sip:a@h>", "To: <sip:a@h>", "t: <sip:b@h>"]),
            Err(SipError::Duplicate { header: "To" }),
            "one user for us and another for the PBX"
        );
        assert_eq!(
            users(&["From: <sip:a@h>", "To: <sip:a@h>", "Contact: <sip:a@h"]),
            Err(SipError::Address { header: "Contact" })
        );
        assert_eq!(
            users(&["From: <sip:a@h>", "To: <sip:a@h>", "User-Agent: x\x7fy"]),
            Err(SipError::Text { header: "User-Agent" })
        );
        assert_eq!(
            users(&["From: <sip:a@h>", "To <sip:a@h>"]),
            Err(SipError::HeaderLine { line: 3 })
        );
        assert_eq!(
            users(&["From: <sip:a@h>", "To: <sip:a@h>", "X Y: z"]),
            Err(SipError::HeaderLine { line: 4 })
        );
        assert_eq!(users(&[": x"]), Err(SipError::HeaderLine { line: 2 }));
        assert_eq!(parse_request(b""), Err(SipError::Empty));
        assert_eq!(parse_request(b"\r\n\r\n"), Err(SipError::Empty), "a keep-alive");
        assert_eq!(
            parse_request(b"REGISTER sip:h SIP/2.0"),
            Err(SipError::Truncated { line: 1 })
        );
        // Keep-alive CRLFs before a request are skipped (RFC 3261, 7.5).
        let mut b = b"\r\n\r\n".to_vec();
        b.extend_from_slice(BRIA.as_bytes());
        assert_eq!(parse_request(&b).unwrap().to.user, Some("bob"));
        // Headers we do not read may be any bytes.
        let mut b = b"REGISTER sip:h SIP/2.0\r\nFrom: <sip:a@h>\r\nTo: <sip:a@h>\r\n".to_vec();
        b.extend_from_slice(b"X-Junk: \xff\x00\x01\r\n\r\n");
        assert!(parse_request(&b).is_ok());
        // Every error message is plain words.
        for e in [SipError::TooLong { len: 5000 }, SipError::Folded { header: "To" }] {
            assert!(!e.to_string().contains('{'));
        }
    }

    #[test]
    fn folded_lines_are_skipped_or_refused() {
        let r = parse_request(register(&[
            "Via: SIP/2.0/UDP 192.0.2.1:5060",
            " ;branch=z9hG4bK776asdhds",
            "From: <sip:a@h>",
            "To: <sip:a@h>",
        ]))
        .unwrap();
        assert_eq!(r.to.user, Some("a"));
        assert_eq!(
            users(&["From: <sip:a@h>", "To: \"Alice\"", "\t<sip:alice@h>"]),
            Err(SipError::Folded { header: "To" })
        );
        assert_eq!(
            users(&[" From: <sip:a@h>", "To: <sip:a@h>"]),
            Err(SipError::HeaderLine { line: 2 }),
            "a continuation of nothing"
        );
    }

    #[test]
    fn caps_hold() {
        let mut big = LINPHONE.as_bytes().to_vec();
        big.resize(PAYLOAD_MAX + 1, b' ');
        assert_eq!(
            parse_request(&big),
            Err(SipError::TooLong { len: PAYLOAD_MAX + 1 })
        );
        // Exactly the line cap passes; one more byte does not, with or without an ending.
        let line = |n: usize| format!("X-Pad: {}", "p".repeat(n - 7));
        assert!(parse_request(register(&["From: <sip:a@h>", "To: <sip:a@h>", &line(LINE_MAX)])).is_ok());
        assert_eq!(
            parse_request(register(&[
                "From: <sip:a@h>",
                "To: <sip:a@h>",
                &line(LINE_MAX + 1)
            ])),
            Err(SipError::LineTooLong { line: 4 })
        );
        let mut unended = register(&["From: <sip:a@h>", "To: <sip:a@h>"]).to_vec();
        unended.extend_from_slice(line(LINE_MAX + 2).as_bytes());
        assert!(
            parse_request(&unended).is_ok(),
            "after the blank line is the body"
        );
        unended.truncate(unended.len() - LINE_MAX - 2 - 2);
        unended.extend_from_slice(line(LINE_MAX + 2).as_bytes());
        assert_eq!(parse_request(&unended), Err(SipError::LineTooLong { line: 4 }));
        // Exactly the header cap passes.
        let pad: Vec<String> = (0..HEADERS_MAX - 2).map(|i| format!("X-{i}: y")).collect();
        let mut headers = vec!["From: <sip:a@h>", "To: <sip:a@h>"];
        headers.extend(pad.iter().map(String::as_str));
        assert!(parse_request(register(&headers)).is_ok());
        headers.push("X-One-More: y");
        assert_eq!(parse_request(register(&headers)), Err(SipError::TooManyHeaders));
    }

    #[test]
    fn a_cut_capture_never_yields_half_a_user() {
        for (who, datagram, to, from) in REQUESTS {
            let b = datagram.as_bytes();
            for n in 0..=b.len() {
                if let Ok(r) = parse_request(&b[..n]) {
                    assert!(
                        r.to.user == Some(to) && r.from.user == Some(from),
                        "{who} cut at {n}"
                    );
                    if let Some(ua) = r.user_agent {
                        assert!(datagram.contains(&format!("{ua}\r\n")), "{who} cut at {n}");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod fuzz {
    //! Property tests: no bytes panic the parser; junk headers up to the caps do not change
    //! what a valid request says; mutated requests never panic and never yield a user outside
    //! the grammar.
    use super::examples::REQUESTS;
    use super::*;
    use proptest::prelude::*;

    /// Header lines of a datagram before its blank line.
    fn header_count(d: &str) -> usize {
        d.lines()
            .skip(1)
            .take_while(|l| !l.trim_end_matches('\r').is_empty())
            .count()
    }

    fn junk_header() -> impl Strategy<Value = Vec<u8>> {
        (
            "X-[A-Za-z0-9-]{1,24}",
            " ?",
            proptest::collection::vec(any::<u8>(), 0..120),
        )
            .prop_map(|(name, blank, value)| {
                let mut line = format!("{name}{blank}:").into_bytes();
                // Any bytes but a line ending, which would make it two lines.
                line.extend(
                    value
                        .into_iter()
                        .map(|b| if b == b'\n' || b == b'\r' { b'~' } else { b }),
                );
                line
            })
    }

    fn checked(r: &Request<'_>) {
        for user in [r.from.user, r.to.user].into_iter().flatten() {
            assert!(!user.is_empty() && user.len() <= USER_MAX);
            assert!(user.bytes().all(|b| b.is_ascii_graphic()));
        }
        if let Some(ua) = r.user_agent {
            assert!(ua.len() <= LINE_MAX && !ua.chars().any(|c| c.is_control() && c != '\t'));
        }
    }

    #[derive(Clone, Debug)]
    enum Mutation {
        Flip(usize, u8),
        Insert(usize, u8),
        Delete(usize, usize),
        Truncate(usize),
        RepeatLine(usize),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
            (
                any::<usize>(),
                prop::sample::select(b" \t\r\n:<>\"@;,%\\\x00\xff".to_vec())
            )
                .prop_map(|(i, b)| Mutation::Insert(i, b)),
            (any::<usize>(), 0usize..40).prop_map(|(i, n)| Mutation::Delete(i, n)),
            any::<usize>().prop_map(Mutation::Truncate),
            any::<usize>().prop_map(Mutation::RepeatLine),
        ]
    }

    fn apply(b: &mut Vec<u8>, m: &Mutation) {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
        match *m {
            Mutation::Flip(i, x) if !b.is_empty() => {
                let i = at(i, b.len());
                b[i] ^= x
            }
            Mutation::Flip(..) => {}
            Mutation::Insert(i, x) => b.insert(at(i, b.len() + 1), x),
            Mutation::Delete(i, n) => {
                let i = at(i, b.len() + 1);
                let end = (i + n).min(b.len());
                b.drain(i..end);
            }
            Mutation::Truncate(i) => b.truncate(at(i, b.len() + 1)),
            Mutation::RepeatLine(i) => {
                let starts: Vec<usize> = std::iter::once(0)
                    .chain(
                        b.iter()
                            .enumerate()
                            .filter(|(_, c)| **c == b'\n')
                            .map(|(j, _)| j + 1),
                    )
                    .filter(|j| *j < b.len())
                    .collect();
                if starts.is_empty() {
                    return;
                }
                let s = starts[at(i, starts.len())];
                let e = b[s..]
                    .iter()
                    .position(|c| *c == b'\n')
                    .map_or(b.len(), |p| s + p + 1);
                let line = b[s..e].to_vec();
                b.splice(s..s, line);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..PAYLOAD_MAX + 64)) {
            if let Ok(r) = parse_request(&b) {
                checked(&r);
            }
        }

        #[test]
        fn mutated_requests_never_panic(
            which in 0..REQUESTS.len(),
            mutations in proptest::collection::vec(mutation(), 1..8),
        ) {
            let mut b = REQUESTS[which].1.as_bytes().to_vec();
            for m in &mutations {
                apply(&mut b, m);
            }
            if let Ok(r) = parse_request(&b) {
                checked(&r);
            }
        }
    }

    proptest! {
        // Text from regular expressions is slow to make in a debug build; fewer cases suffice.
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn sip_like_text_never_panics(lines in proptest::collection::vec(
            "(REGISTER|INVITE|SIP/2.0) (sip:|sips:)?[a-z@:;<>\"]{0,12} SIP/2.0|(f|t|m|From|To|Contact|User-Agent) ?: ?[ \"a-z<>@:;,%0-9\\\\]{0,24}|[ \t][a-z:]{0,8}|",
            0..40,
        )) {
            let text = lines.join("\r\n");
            if let Ok(r) = parse_request(text.as_bytes()) {
                checked(&r);
            }
        }

        #[test]
        fn junk_headers_up_to_the_caps_change_nothing(
            which in 0..REQUESTS.len(),
            junk in proptest::collection::vec(junk_header(), 0..HEADERS_MAX),
            spots in proptest::collection::vec(any::<usize>(), HEADERS_MAX),
        ) {
            let (who, datagram, _, _) = REQUESTS[which];
            let want = parse_request(datagram.as_bytes()).unwrap();
            let ending: &[u8] = if datagram.contains("\r\n") { b"\r\n" } else { b"\n" };
            let mut lines: Vec<Vec<u8>> = datagram.as_bytes()
                .split_inclusive(|b| *b == b'\n')
                .map(<[u8]>::to_vec)
                .collect();
            let room = HEADERS_MAX - header_count(datagram);
            let mut size = datagram.len();
            let header_lines = 1 + header_count(datagram);
            for (added, mut line) in junk.into_iter().take(room).enumerate() {
                line.extend_from_slice(ending);
                if size + line.len() > PAYLOAD_MAX {
                    break;
                }
                size += line.len();
                // Anywhere among the headers: after the request line, up to the blank line.
                let at = 1 + spots[added] % (header_lines + added);
                lines.insert(at, line);
            }
            let b = lines.concat();
            prop_assert!(b.len() <= PAYLOAD_MAX);
            let got = parse_request(&b);
            prop_assert_eq!(got, Ok(want), "{}", who);
        }
    }
}
