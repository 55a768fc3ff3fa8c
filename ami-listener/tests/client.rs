//! The client against scripted AMI peers on loopback: login both ways, re-sync, and peers that are
//! broken or hostile — huge blocks, garbage, missing fields, a half-closed or silent socket, no
//! greeting. None may crash or stall the client; each ends in a reconnect or is skipped.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ami_listener::client::md5_key;
use ami_listener::{run, AmiSecret, AmiSettings, DecoderCaps, LoginMethod, Stats, Update};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "s3cret";
const WAIT: Duration = Duration::from_secs(5);

/// One side of a scripted AMI server connection.
struct Peer {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

impl Peer {
    /// Reads one action block; its fields.
    async fn action(&mut self) -> Vec<(String, String)> {
        let mut fields = Vec::new();
        loop {
            let mut line = String::new();
            if self.r.read_line(&mut line).await.unwrap_or(0) == 0 {
                return fields;
            }
            let line = line.trim_end();
            if line.is_empty() {
                if fields.is_empty() {
                    continue;
                }
                return fields;
            }
            if let Some((k, v)) = line.split_once(": ") {
                fields.push((k.to_string(), v.to_string()));
            } else if let Some(k) = line.strip_suffix(':') {
                fields.push((k.to_string(), String::new()));
            }
        }
    }

    async fn send(&mut self, text: &str) {
        let _ = self.w.write_all(text.replace('\n', "\r\n").as_bytes()).await;
    }

    /// Greets, answers the challenge and checks the MD5 key (or the plain secret).
    async fn accept_login(&mut self) {
        self.send("Asterisk Call Manager/11.0.0\n").await;
        let mut a = self.action().await;
        let get = |a: &Vec<(String, String)>, k: &str| {
            a.iter()
                .find(|(kk, _)| kk == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        if get(&a, "Action") == "Challenge" {
            let id = get(&a, "ActionID");
            self.send(&format!(
                "Response: Success\nActionID: {id}\nChallenge: 424242\n\n"
            ))
            .await;
            a = self.action().await;
            assert_eq!(get(&a, "Action"), "Login");
            assert_eq!(get(&a, "AuthType"), "MD5");
            assert_eq!(get(&a, "Key"), md5_key("424242", &AmiSecret::new(SECRET)));
            assert!(get(&a, "Secret").is_empty(), "the secret must not cross the wire");
        } else {
            assert_eq!(get(&a, "Secret"), SECRET);
        }
        let id = get(&a, "ActionID");
        self.send(&format!(
            "Response: Success\nActionID: {id}\nMessage: Authentication accepted\n\n"
        ))
        .await;
    }

    /// Answers the re-sync with the given ContactList items and no channels.
    async fn answer_resync(&mut self, contacts: &[(&str, &str)]) {
        for _ in 0..2 {
            let a = self.action().await;
            let name = a.iter().find(|(k, _)| k == "Action").map(|(_, v)| v.clone());
            let id = a
                .iter()
                .find(|(k, _)| k == "ActionID")
                .map(|(_, v)| v.clone())
                .unwrap();
            self.send(&format!(
                "Response: Success\nActionID: {id}\nEventList: start\n\n"
            ))
            .await;
            if name.as_deref() == Some("PJSIPShowContacts") {
                for (ep, uri) in contacts {
                    self.send(&format!(
                        "Event: ContactList\nActionID: {id}\nEndpoint: {ep}\nUri: {uri}\n\n"
                    ))
                    .await;
                }
                self.send(&format!(
                    "Event: ContactListComplete\nActionID: {id}\nEventList: Complete\n\n"
                ))
                .await;
            } else {
                self.send(&format!(
                    "Event: CoreShowChannelsComplete\nActionID: {id}\nEventList: Complete\n\n"
                ))
                .await;
            }
        }
    }
}

/// A scripted AMI server: connection `n` (from 0) runs `script(n, peer)`.
async fn server<F, Fut>(script: F) -> (String, Arc<AtomicUsize>)
where
    F: Fn(usize, Peer) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let script = Arc::new(script);
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let n = c.fetch_add(1, Ordering::SeqCst);
            let (r, w) = s.into_split();
            let script = script.clone();
            tokio::spawn(async move {
                script(
                    n,
                    Peer {
                        r: BufReader::new(r),
                        w,
                    },
                )
                .await
            });
        }
    });
    (addr, count)
}

fn settings(address: &str, login: LoginMethod) -> AmiSettings {
    AmiSettings {
        address: address.to_string(),
        username: "passknock".into(),
        secret: AmiSecret::new(SECRET),
        login,
        backoff_first: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        keepalive: Duration::from_millis(300),
        timeout: Duration::from_millis(500),
        limits: DecoderCaps::default(),
    }
}

struct Running {
    rx: mpsc::Receiver<Update>,
    stats: Arc<Stats>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn start(s: AmiSettings) -> Running {
    let (tx, rx) = mpsc::channel(64);
    let stats = Arc::new(Stats::default());
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(s, tx, stats.clone(), stop.clone()));
    Running {
        rx,
        stats,
        stop,
        task,
    }
}

impl Running {
    async fn next(&mut self) -> Update {
        timeout(WAIT, self.rx.recv())
            .await
            .expect("an update in time")
            .expect("client running")
    }

    /// Skips updates until one matches.
    async fn until(&mut self, what: &str, f: impl Fn(&Update) -> bool) -> Update {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let u = timeout(deadline - tokio::time::Instant::now(), self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no {what} in time"))
                .expect("client running");
            if f(&u) {
                return u;
            }
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        timeout(WAIT, self.task)
            .await
            .expect("client stops promptly on shutdown")
            .unwrap();
    }
}

#[tokio::test]
async fn md5_login_resync_and_events() {
    let (addr, _) = server(|_, mut p| async move {
        p.accept_login().await;
        p.answer_resync(&[("701", "sip:701@203.0.113.10:5100")]).await;
        p.send(
            "Event: InvalidPassword\nService: PJSIP\nAccountID: 701\nRemoteAddress: IPV6/UDP/2001:db8::66/5060\n\n",
        )
        .await;
        // Keep answering pings.
        loop {
            let a = p.action().await;
            if a.is_empty() {
                return;
            }
            let id = a.iter().find(|(k, _)| k == "ActionID").map(|(_, v)| v.clone()).unwrap_or_default();
            p.send(&format!("Response: Success\nActionID: {id}\nPing: Pong\n\n")).await;
        }
    })
    .await;
    let mut c = start(settings(&addr, LoginMethod::Md5));
    assert!(matches!(c.next().await, Update::LoggedIn { .. }));
    let Update::Contacts(list) = c.next().await else {
        panic!("contacts first")
    };
    assert_eq!(list[0].address, Some("203.0.113.10".parse().unwrap()));
    assert!(matches!(c.next().await, Update::CallsPresent(ids) if ids.is_empty()));
    let Update::Security(s) = c.next().await else {
        panic!()
    };
    assert_eq!(s.remote.unwrap().addr.ip().to_string(), "2001:db8::66");
    // Outlives several keep-alive periods while the peer answers pings.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(c.stats.logins.load(Ordering::Relaxed), 1);
    assert!(c.stats.connected.load(Ordering::Relaxed));
    c.stop().await;
}

#[tokio::test]
async fn plain_login_and_refused_login_backs_off() {
    let (addr, count) = server(|n, mut p| async move {
        if n < 2 {
            p.send("Asterisk Call Manager/11.0.0\n").await;
            let a = p.action().await;
            let id = a
                .iter()
                .find(|(k, _)| k == "ActionID")
                .map(|(_, v)| v.clone())
                .unwrap();
            p.send(&format!(
                "Response: Error\nActionID: {id}\nMessage: Authentication failed\n\n"
            ))
            .await;
            return;
        }
        p.accept_login().await;
        p.answer_resync(&[]).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await;
    let mut c = start(settings(&addr, LoginMethod::Plain));
    c.until("login", |u| matches!(u, Update::LoggedIn { .. })).await;
    assert_eq!(count.load(Ordering::SeqCst), 3);
    c.stop().await;
}

#[tokio::test]
async fn hostile_blocks_are_skipped_and_the_stream_goes_on() {
    let (addr, _) = server(|_, mut p| async move {
        p.accept_login().await;
        p.answer_resync(&[]).await;
        // 4 MiB without a line end, then a huge block of short lines, garbage, missing fields.
        let big = vec![b'x'; 4 << 20];
        let _ = p.w.write_all(b"Event: Big\r\nValue: ").await;
        let _ = p.w.write_all(&big).await;
        let _ = p.w.write_all(b"\r\n\r\n").await;
        let mut many = String::new();
        for i in 0..20_000 {
            many.push_str(&format!("Key{i}: v\r\n"));
        }
        many.push_str("\r\n");
        let _ = p.w.write_all(many.as_bytes()).await;
        let _ = p.w.write_all(b"\x00\x01\x02\xff\xfe binary\r\n\r\n").await;
        p.send("Event: ContactStatus\nURI: sip:1@1.2.3.4\n\n").await;
        p.send("Event: Hangup\n\n").await;
        p.send(
            "Event: ChallengeResponseFailed\nService: PJSIP\nRemoteAddress: IPV4/UDP/203.0.113.66/5060\n\n",
        )
        .await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await;
    let mut c = start(settings(&addr, LoginMethod::Md5));
    let u = c
        .until("the event after the junk", |u| matches!(u, Update::Security(_)))
        .await;
    let Update::Security(s) = u else { unreachable!() };
    assert_eq!(s.remote.unwrap().addr.ip().to_string(), "203.0.113.66");
    assert!(c.stats.skipped.load(Ordering::Relaxed) >= 3);
    assert!(c.stats.problems.load(Ordering::Relaxed) >= 2);
    assert_eq!(
        c.stats.logins.load(Ordering::Relaxed),
        1,
        "junk is skipped, not a reconnect"
    );
    c.stop().await;
}

#[tokio::test]
async fn half_closed_silent_and_mute_peers_lead_to_reconnects() {
    let (addr, count) = server(|n, mut p| async move {
        match n {
            // Logs in, then half-closes: our reads see EOF.
            0 => {
                p.accept_login().await;
                let _ = p.w.shutdown().await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            // Logs in, then never says a word again, not even to a Ping.
            1 => {
                p.accept_login().await;
                let mut sink = Vec::new();
                let _ = p.r.read_to_end(&mut sink).await;
            }
            // Never greets.
            2 => tokio::time::sleep(Duration::from_secs(30)).await,
            // A greeting from something else.
            3 => p.send("SSH-2.0-OpenSSH_9.2\n").await,
            _ => {
                p.accept_login().await;
                p.answer_resync(&[]).await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        }
    })
    .await;
    let mut c = start(settings(&addr, LoginMethod::Md5));
    let mut reasons = Vec::new();
    let mut logins = 0;
    while logins < 3 {
        match c.next().await {
            Update::LoggedIn { .. } => logins += 1,
            Update::Disconnected { reason } => reasons.push(reason),
            _ => {}
        }
    }
    assert_eq!(count.load(Ordering::SeqCst), 5);
    assert!(reasons[0].contains("closed"), "{reasons:?}");
    assert!(reasons[1].contains("keep-alive"), "{reasons:?}");
    // The mute and the foreign peer never logged us in, so they are in the error, not updates.
    assert!(c.stats.last_error().is_none());
    c.stop().await;
}

#[tokio::test]
async fn shutdown_is_prompt_even_when_nobody_reads_updates() {
    let (addr, _) = server(|_, mut p| async move {
        p.accept_login().await;
        p.answer_resync(&[]).await;
        for _ in 0..10_000 {
            p.send("Event: InvalidAccountID\nRemoteAddress: IPV4/UDP/203.0.113.9/5060\n\n")
                .await;
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await;
    let (tx, _rx) = mpsc::channel(4); // never read
    let stats = Arc::new(Stats::default());
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(
        settings(&addr, LoginMethod::Md5),
        tx,
        stats.clone(),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    timeout(Duration::from_secs(1), task)
        .await
        .expect("stops within a second")
        .unwrap();
}
