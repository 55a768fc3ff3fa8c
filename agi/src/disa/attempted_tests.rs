//! The `attempted` address mode and "your phone is connected", over the in-memory backend.

use super::*;

/// A Local channel: no SIP source to look up, so the script starts at the passcode.
const ENV: &str = "agi_channel: Local/3472@passknock-00000001;2\nagi_callerid: 5551234\n\n";

fn backend(attempted: Option<&str>, connected: Option<bool>) -> TestBackend {
    TestBackend {
        account: Account {
            name: "ann".into(),
            endpoint: Some("701".into()),
            modes: vec![AddressMode::Attempted, AddressMode::Keyed],
        },
        attempted: attempted.map(|a| a.parse().unwrap()),
        connected,
        ..TestBackend::default()
    }
}

#[tokio::test]
async fn the_one_address_trying_to_register_is_read_back_confirmed_and_connected() {
    let (out, seen, b) = scripted_with(
        ENV,
        vec![
            ("ANSWER", "200 result=0"),
            ("GET DATA \"agent-pass\"", "200 result=000123456789"),
            ("STREAM FILE \"your\"", "200 result=0"),
            ("STREAM FILE \"letters/i\"", "200 result=0"),
            ("STREAM FILE \"letters/p\"", "200 result=0"),
            ("STREAM FILE \"is\"", "200 result=0"),
            ("SAY DIGITS \"203\"", "200 result=0"),
            ("STREAM FILE \"letters/dot\"", "200 result=0"),
            ("SAY DIGITS \"0\"", "200 result=0"),
            ("STREAM FILE \"letters/dot\"", "200 result=0"),
            ("SAY DIGITS \"113\"", "200 result=0"),
            ("STREAM FILE \"letters/dot\"", "200 result=0"),
            ("SAY DIGITS \"10\"", "200 result=0"),
            ("STREAM FILE \"if-correct-press\"", "200 result=0"),
            ("GET DATA \"digits/1\"", "200 result=1"),
            ("STREAM FILE \"auth-thankyou\"", "200 result=0"),
            ("SAY NUMBER 2", "200 result=0"),
            ("STREAM FILE \"hours\"", "200 result=0"),
            ("STREAM FILE \"your\"", "200 result=0"),
            ("STREAM FILE \"telephone-number\"", "200 result=0"),
            ("STREAM FILE \"is\"", "200 result=0"),
            ("STREAM FILE \"activated\"", "200 result=0"),
            ("STREAM FILE \"vm-goodbye\"", "200 result=0"),
        ],
        backend(Some("203.0.113.10"), Some(true)),
    )
    .await;
    assert!(matches!(out, Outcome::Granted { .. }), "{out:?} {seen:?}");
    assert_eq!(
        *b.grants.lock().unwrap(),
        vec!["203.0.113.10".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(*b.modes.lock().unwrap(), vec![AddressMode::Attempted]);
    assert_eq!(seen.last().unwrap(), "HANGUP");
}

#[tokio::test]
async fn no_single_address_says_so_and_falls_through_to_the_next_mode() {
    let (out, seen, b) = scripted_with(
        ENV,
        vec![
            ("ANSWER", "200 result=0"),
            ("GET DATA \"agent-pass\"", "200 result=000123456789"),
            ("STREAM FILE \"your\"", "200 result=0"),
            ("STREAM FILE \"letters/i\"", "200 result=0"),
            ("STREAM FILE \"letters/p\"", "200 result=0"),
            ("STREAM FILE \"vm-isunavail\"", "200 result=0"),
            // Keyed, next: "2" cuts the prompt short and the rest is read.
            ("STREAM FILE \"your\"", "200 result=50 endpos=800"),
            ("GET DATA \"silence/1\"", "200 result=03*0*113*77"),
            ("STREAM FILE \"you-entered\"", "200 result=0"),
            ("SAY DIGITS \"203\"", "200 result=0"),
            ("STREAM FILE \"letters/dot\"", "200 result=0"),
            ("SAY DIGITS \"0\"", "200 result=0"),
            ("STREAM FILE \"letters/dot\"", "200 result=0"),
            ("SAY DIGITS \"113\"", "200 result=0"),
            ("STREAM FILE \"letters/dot\"", "200 result=0"),
            ("SAY DIGITS \"77\"", "200 result=0"),
            ("STREAM FILE \"if-correct-press\"", "200 result=49 endpos=400"),
            ("STREAM FILE \"auth-thankyou\"", "200 result=0"),
            ("SAY NUMBER 2", "200 result=0"),
            ("STREAM FILE \"hours\"", "200 result=0"),
            ("STREAM FILE \"your\"", "200 result=0"),
            ("STREAM FILE \"telephone-number\"", "200 result=0"),
            ("STREAM FILE \"vm-isunavail\"", "200 result=0"),
            ("STREAM FILE \"vm-goodbye\"", "200 result=0"),
        ],
        backend(None, Some(false)),
    )
    .await;
    assert!(matches!(out, Outcome::Granted { .. }), "{out:?} {seen:?}");
    assert_eq!(
        *b.grants.lock().unwrap(),
        vec!["203.0.113.77".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(*b.modes.lock().unwrap(), vec![AddressMode::Keyed]);
}

#[tokio::test]
async fn an_ungrantable_attempt_is_never_offered() {
    // Whatever the backend found, an address its own check refuses is not read back.
    let (out, seen, b) = scripted_with(
        ENV,
        vec![
            ("ANSWER", "200 result=0"),
            ("GET DATA \"agent-pass\"", "200 result=000123456789"),
            ("STREAM FILE \"your\"", "200 result=0"),
            ("STREAM FILE \"letters/i\"", "200 result=0"),
            ("STREAM FILE \"letters/p\"", "200 result=0"),
            ("STREAM FILE \"vm-isunavail\"", "200 result=0"),
            ("STREAM FILE \"your\"", "HANGUP\n200 result=-1"),
        ],
        backend(Some("127.0.0.1"), None),
    )
    .await;
    assert_eq!(out, Outcome::HungUp, "{seen:?}");
    assert!(b.grants.lock().unwrap().is_empty());
    assert!(!seen.iter().any(|l| l.contains("SAY DIGITS")), "{seen:?}");
}

#[tokio::test]
async fn a_read_back_not_confirmed_moves_on_and_grants_nothing_by_itself() {
    let mut b = backend(Some("203.0.113.10"), None);
    b.account.modes = vec![AddressMode::Attempted];
    let (out, seen, b) = scripted_with(
        ENV,
        vec![
            ("ANSWER", "200 result=0"),
            ("GET DATA \"agent-pass\"", "200 result=000123456789"),
            ("STREAM FILE \"your\"", "200 result=0"),
            ("STREAM FILE \"letters/i\"", "200 result=0"),
            ("STREAM FILE \"letters/p\"", "200 result=0"),
            ("STREAM FILE \"is\"", "200 result=0"),
            ("SAY DIGITS \"203\"", "200 result=0"),
            ("STREAM FILE \"letters/dot\"", "200 result=0"),
            ("SAY DIGITS \"0\"", "200 result=0"),
            ("STREAM FILE \"letters/dot\"", "200 result=0"),
            ("SAY DIGITS \"113\"", "200 result=0"),
            ("STREAM FILE \"letters/dot\"", "200 result=0"),
            ("SAY DIGITS \"10\"", "200 result=0"),
            ("STREAM FILE \"if-correct-press\"", "200 result=0"),
            ("GET DATA \"digits/1\"", "200 result=2"),
            ("STREAM FILE \"cannot-complete-as-dialed\"", "200 result=0"),
            ("STREAM FILE \"vm-goodbye\"", "200 result=0"),
        ],
        b,
    )
    .await;
    assert_eq!(
        out,
        Outcome::NoAddress {
            account: "ann".into()
        },
        "{seen:?}"
    );
    assert!(b.grants.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_ipv6_attempt_is_read_group_by_group() {
    let mut b = backend(Some("2001:db8::a1"), None);
    b.account.modes = vec![AddressMode::Attempted];
    let (_, seen, _) = scripted_with(
        ENV,
        vec![
            ("ANSWER", "200 result=0"),
            ("GET DATA \"agent-pass\"", "200 result=000123456789"),
        ],
        b,
    )
    .await;
    let said: Vec<&str> = seen
        .iter()
        .filter(|l| l.starts_with("SAY DIGITS") || l.contains("letters/"))
        .map(String::as_str)
        .collect();
    assert_eq!(
        said[2..8],
        [
            "SAY DIGITS \"2\" \"\"",
            "SAY DIGITS \"0\" \"\"",
            "SAY DIGITS \"0\" \"\"",
            "SAY DIGITS \"1\" \"\"",
            "STREAM FILE \"letters/ascii58\" \"\"",
            "STREAM FILE \"letters/d\" \"\"",
        ],
        "{seen:?}"
    );
}
