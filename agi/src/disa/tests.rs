//! The DISA call flow's unit tests, over an in-memory backend.

use super::*;
use std::sync::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[test]
fn keyed_addresses() {
    assert_eq!(parse_keyed("203*0*113*7"), Some(Ipv4Addr::new(203, 0, 113, 7)));
    assert_eq!(parse_keyed("010*0*0*1"), Some(Ipv4Addr::new(10, 0, 0, 1)));
    for bad in [
        "203*0*113",
        "203*0*113*7*1",
        "256*0*0*1",
        "1**2*3",
        "",
        "1234*0*0*1",
        "1#2*3*4",
    ] {
        assert_eq!(parse_keyed(bad), None, "{bad}");
    }
}

#[test]
fn passcode_hides_itself() {
    let p = Passcode::new("000123456789".into());
    assert_eq!(format!("{p:?}"), "Passcode(hidden)");
    assert_eq!(p.expose(), "000123456789");
}

/// A policy that accepts one passcode and records what it was asked.
struct TestBackend {
    grants: Mutex<Vec<IpAddr>>,
    /// The mode each grant was found by.
    modes: Mutex<Vec<AddressMode>>,
    tries: Mutex<u32>,
    account: Account,
    /// What `attempted` answers.
    attempted: Option<IpAddr>,
    /// What `wait_connected` answers.
    connected: Option<bool>,
}

impl Default for TestBackend {
    fn default() -> Self {
        TestBackend {
            grants: Mutex::default(),
            modes: Mutex::default(),
            tries: Mutex::new(0),
            account: Account {
                name: "ann".into(),
                endpoint: None,
                modes: vec![AddressMode::Source, AddressMode::Keyed],
            },
            attempted: None,
            connected: None,
        }
    }
}

impl Backend for TestBackend {
    async fn verify(&self, _call: &Call, passcode: Passcode) -> PasscodeVerdict {
        *self.tries.lock().unwrap() += 1;
        if passcode.expose() == "000123456789" {
            PasscodeVerdict::Accepted(self.account.clone())
        } else {
            PasscodeVerdict::Rejected
        }
    }
    async fn registered(&self, _: &str) -> Vec<IpAddr> {
        vec![]
    }
    async fn attempted(&self, _: &str) -> Option<IpAddr> {
        self.attempted
    }
    fn check_address(&self, ip: IpAddr) -> Result<(), String> {
        if ip.is_loopback() {
            Err("loopback".into())
        } else {
            Ok(())
        }
    }
    async fn grant(&self, _: &Account, ip: IpAddr, mode: AddressMode, _: &Call) -> Result<Duration, String> {
        self.grants.lock().unwrap().push(ip);
        self.modes.lock().unwrap().push(mode);
        Ok(Duration::from_secs(7200))
    }
    async fn wait_connected(&self, _: &str, _: IpAddr) -> Option<bool> {
        self.connected
    }
}

/// Plays Asterisk: answers each command from a script keyed by the command's start.
async fn scripted(
    env: &str,
    answers: Vec<(&'static str, &'static str)>,
) -> (Outcome, Vec<String>, TestBackend) {
    scripted_with(env, answers, TestBackend::default()).await
}

/// [`scripted`] over a backend the test set up.
async fn scripted_with(
    env: &str,
    answers: Vec<(&'static str, &'static str)>,
    backend: TestBackend,
) -> (Outcome, Vec<String>, TestBackend) {
    let (ours, theirs) = tokio::io::duplex(4096);
    let env = env.to_string();
    let peer = tokio::spawn(async move {
        let (r, mut w) = tokio::io::split(theirs);
        w.write_all(env.as_bytes()).await.unwrap();
        let mut lines = BufReader::new(r).lines();
        let mut seen = Vec::new();
        let mut answers = answers.into_iter();
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push(line.clone());
            if line == "HANGUP" {
                let _ = w.write_all(b"200 result=1\n").await;
                break;
            }
            let reply = match answers.next() {
                Some((prefix, reply)) => {
                    assert!(line.starts_with(prefix), "expected {prefix}…, got {line}");
                    reply
                }
                None => "200 result=0",
            };
            w.write_all(format!("{reply}\n").as_bytes()).await.unwrap();
        }
        seen
    });
    let mut s = Session::start(ours, Duration::from_secs(5)).await.unwrap();
    let out = run(&mut s, &backend, &CallFlowSettings::default()).await;
    drop(s);
    (out, peer.await.unwrap(), backend)
}

#[tokio::test]
async fn right_passcode_grants_the_sip_source() {
    let env = "agi_channel: PJSIP/701-00000001\nagi_callerid: 701\nagi_uniqueid: 1.1\n\n";
    let (out, seen, b) = scripted(
        env,
        vec![
            ("ANSWER", "200 result=0"),
            (
                "GET VARIABLE \"CHANNEL(pjsip,remote_addr)\"",
                "200 result=1 (203.0.113.10:5060)",
            ),
            ("GET VARIABLE \"CHANNEL(endpoint)\"", "200 result=1 (701)"),
            ("GET DATA \"agent-pass\"", "200 result=1234"),
            ("GET DATA \"auth-incorrect\"", "200 result=000123456789"),
            ("STREAM FILE \"auth-thankyou\"", "200 result=0 endpos=100"),
            ("SAY NUMBER 2", "200 result=0"),
            ("STREAM FILE \"hours\"", "200 result=0 endpos=100"),
        ],
    )
    .await;
    assert_eq!(
        out,
        Outcome::Granted {
            account: "ann".into(),
            address: "203.0.113.10".parse().unwrap(),
            ttl: Duration::from_secs(7200)
        }
    );
    assert_eq!(*b.tries.lock().unwrap(), 2);
    assert_eq!(seen.last().unwrap(), "HANGUP");
    assert!(
        !seen.iter().any(|l| l.contains("000123456789")),
        "the passcode is never sent back"
    );
}

#[tokio::test]
async fn keyed_address_is_read_back_and_confirmed() {
    // A Local channel: no SIP source, so the keyed address is asked for.
    let env = "agi_channel: Local/3472@passknock-00000001;2\nagi_callerid: 5551234\n\n";
    let (out, seen, b) = scripted(
        env,
        vec![
            ("ANSWER", "200 result=0"),
            ("GET DATA \"agent-pass\"", "200 result=000123456789"),
            ("STREAM FILE \"your\"", "200 result=0"),
            ("STREAM FILE \"letters/i\"", "200 result=0"),
            ("STREAM FILE \"letters/p\"", "200 result=0"),
            ("STREAM FILE \"vm-press\"", "200 result=0"),
            ("STREAM FILE \"digits/star\"", "200 result=0"),
            ("STREAM FILE \"vm-for\"", "200 result=0"),
            ("STREAM FILE \"letters/dot\"", "200 result=0"),
            ("GET DATA \"vm-then-pound\"", "200 result=127*0*0*1"),
            ("STREAM FILE \"invalid\"", "200 result=0"),
            // A caller who knows the prompt keys at once: "2" cuts it short.
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
            // "1" during "if this is correct, press": the answer, without waiting.
            ("STREAM FILE \"if-correct-press\"", "200 result=49 endpos=400"),
        ],
    )
    .await;
    assert!(matches!(out, Outcome::Granted { .. }), "{out:?} {seen:?}");
    assert_eq!(
        *b.grants.lock().unwrap(),
        vec!["203.0.113.77".parse::<IpAddr>().unwrap()]
    );
}

#[tokio::test]
async fn wrong_passcodes_end_the_call_and_hangup_mid_entry_is_clean() {
    let env = "agi_channel: PJSIP/702-00000002\n\n";
    let (out, seen, b) = scripted(
        env,
        vec![
            ("ANSWER", "200 result=0"),
            ("GET VARIABLE", "200 result=0"),
            ("GET VARIABLE", "200 result=0"),
            ("GET DATA", "200 result=1"),
            ("GET DATA", "200 result=22"),
            ("GET DATA", "200 result= (timeout)"),
            ("STREAM FILE \"vm-goodbye\"", "200 result=0"),
        ],
    )
    .await;
    assert_eq!(out, Outcome::Rejected, "{seen:?}");
    assert_eq!(*b.tries.lock().unwrap(), 3);
    assert!(b.grants.lock().unwrap().is_empty());

    let (out, _, b) = scripted(
        env,
        vec![
            ("ANSWER", "200 result=0"),
            ("GET VARIABLE", "200 result=0"),
            ("GET VARIABLE", "200 result=0"),
            ("GET DATA", "HANGUP\n200 result=-1"),
        ],
    )
    .await;
    assert_eq!(out, Outcome::HungUp);
    assert_eq!(*b.tries.lock().unwrap(), 0, "a hang-up is not an attempt");
}

#[path = "attempted_tests.rs"]
mod attempted_tests;
