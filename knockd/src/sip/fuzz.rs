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
