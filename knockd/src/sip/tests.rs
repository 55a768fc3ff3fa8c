//! The parser's unit tests: real requests, each header form, and every refusal.

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
